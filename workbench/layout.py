"""The run directory's layout: every file name a run holds and the names of its checkpoints.

A run directory (`workbench train --run DIR`) holds:

```
DIR/run.json             model, train and corpus configs (`RUN_JSON`)
DIR/tokenizer.json       the corpus tokenizer (`TOKENIZER_JSON`)
DIR/metrics.jsonl        one JSON record per logged step (`METRICS`)
DIR/training.fig.json    the loss curves (`TRAINING_FIGURE`)
DIR/eval.json            `workbench eval` (`EVAL_JSON`, `EVAL_FIGURE`)
DIR/checkpoints/step_000123/  config.json, model.safetensors, tokenizer.json,
                              train_state.pt (`CHECKPOINTS_DIR`, `step_dir_name`)
DIR/analyses/KIND.json   every analysis' report (`ANALYSES_DIR`)
```

This module is the one place these names are spelled and checkpoint steps are parsed.

>>> step_dir_name(512)
'step_000512'
>>> step_of("runs/demo/checkpoints/step_000512"), step_of("step512"), step_of("final")
(512, 512, None)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

RUN_JSON = "run.json"
TOKENIZER_JSON = "tokenizer.json"
METRICS = "metrics.jsonl"
TRAINING_FIGURE = "training.fig.json"
EVAL_JSON = "eval.json"
EVAL_FIGURE = "eval.fig.json"
CHECKPOINTS_DIR = "checkpoints"
ANALYSES_DIR = "analyses"
CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"
TRAIN_STATE = "train_state.pt"
STEP_PREFIX = "step_"

_STEP = re.compile(r"step_?(\d+)$")


def step_dir_name(step: int) -> str:
    """`step_000123`: the directory name of the checkpoint at `step`."""
    if step < 0:
        raise ValueError(f"step {step} is negative; a checkpoint step counts from 0")
    return f"{STEP_PREFIX}{step:06d}"


def step_of(path: str | os.PathLike[str]) -> int | None:
    """The training step in a checkpoint directory's name (`step_000512`, `step512`), or
    None when the name holds none."""
    found = _STEP.search(Path(path).name)
    return int(found.group(1)) if found else None


def read_run_json(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's `run.json`: a JSON object with its `model` and `train` tables.

    Raises:
        FileNotFoundError: there is none.
        ValueError: it is damaged (unreadable, truncated, not an object, a table missing),
            naming the file and the fix.
    """
    path = Path(run_dir) / RUN_JSON
    fix = ("restore it from a copy, or train the run again (`workbench train --run "
           f"{Path(run_dir)} --overwrite` and its settings)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"run config {path} is damaged ({type(exc).__name__}: {exc}); {fix}"
                         ) from None
    if not isinstance(data, dict):
        raise ValueError(f"run config {path} is not a JSON object (it holds a "
                         f"{type(data).__name__}); {fix}")
    bad = [k for k in ("model", "train") if not isinstance(data.get(k), dict)]
    if bad:
        raise ValueError(f"run config {path} lacks its {' and '.join(bad)} table; {fix}")
    return data


def scheduled_steps(steps: int, ckpt_interval: int) -> set[int]:
    """The steps a run of `steps` keeps a checkpoint at (`workbench train`): log-spaced
    (0, 1, 2, 4, ...), every `ckpt_interval`, and the last.

    >>> sorted(scheduled_steps(20, 10))
    [0, 1, 2, 4, 8, 10, 16, 20]
    """
    out = {0, steps}
    power = 1
    while power <= steps:
        out.add(power)
        power *= 2
    out.update(range(ckpt_interval, steps + 1, max(ckpt_interval, 1)))
    return out


def checkpoint_dirs(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint directories of a run (`checkpoints/step_*`), sorted by step."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and p.name.startswith(STEP_PREFIX) and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def is_run_dir(path: str | os.PathLike[str]) -> bool:
    """A directory with `run.json` (made by `workbench train`)."""
    return (Path(path) / RUN_JSON).is_file()
