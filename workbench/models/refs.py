"""A model reference resolved once: what it names, where its run, checkpoints, corpus and
outputs are, read from the small files beside the weights (never the weights themselves).

Every command, analysis, the sweep and the dashboard take a `ModelRef`; the weights are read
once, by `ModelRef.load` (or `load_checkpoints` for a run's history).

Kinds:

- `run`: a run directory of ours (`checkpoints/`; `run.json` when `workbench train` made it);
- `checkpoint`: one checkpoint directory of ours (`config.json` + `model.safetensors`);
- `hf`: a local Hugging Face directory (`config.json` with a `model_type`);
- `hub`: a hub name (`gpt2`): loads when online;
- `missing`: a path that does not exist or holds no model (loading it says why).

>>> ref = ModelRef.of("gpt2")
>>> ref.kind, ref.output_dir.as_posix(), ref.report_path("probe").as_posix()
('hub', 'runs/gpt2', 'runs/gpt2/analyses/probe.json')
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from workbench import layout
from workbench.models.checkpoints import (
    is_checkpoint_dir,
    is_hf_dir,
    looks_like_path,
    read_checkpoint_config,
)
from workbench.models.checks import check_model_memory, hub_error, offline, too_big_for_memory

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.models.devices import Placement
    from workbench.world.loader import Corpus

Kind = Literal["run", "checkpoint", "hf", "hub", "missing"]


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint of a run: its directory and training step."""

    path: Path
    step: int

    def load(self, device: str | Placement = "cpu") -> Model:
        """The checkpoint as a hooked model (its weights read here)."""
        from workbench.models.loader import load

        return load(self.path, device)


@dataclass(frozen=True)
class ModelRef:
    """A model reference resolved once (`ModelRef.of(text)`).

    Attributes:
        text: the reference as the user gave it (what reports record).
        kind: `run`, `checkpoint`, `hf`, `hub` or `missing`.
        path: the directory for local kinds (None for a hub name).
        run_dir: the run directory of a run or of a checkpoint inside one (with `run.json`).
        step: the checkpoint step asked for (None: the latest of a run).
    """

    text: str
    kind: Kind
    path: Path | None = None
    run_dir: Path | None = None
    step: int | None = None

    @classmethod
    def of(cls, ref: str | os.PathLike[str] | ModelRef, step: int | None = None) -> ModelRef:
        """Resolve `ref` (a `ModelRef` is returned as it is). Nothing heavy is read: only the
        `config.json` of the checkpoint it names, for its corpus."""
        if isinstance(ref, ModelRef):
            return ref
        text = str(ref)
        path = Path(text).expanduser()
        if not path.exists():
            kind: Kind = "missing" if looks_like_path(text) else "hub"
            return cls(text, kind, None if kind == "hub" else path, step=step)
        if is_checkpoint_dir(path):
            parent = path.parent.parent
            run_dir = parent if layout.is_run_dir(parent) else None
            return cls(text, "checkpoint", path, run_dir, step)
        if (path / layout.CHECKPOINTS_DIR).is_dir():
            return cls(text, "run", path, path if layout.is_run_dir(path) else None, step)
        if is_hf_dir(path):
            return cls(text, "hf", path, step=step)
        return cls(text, "missing", path, step=step)

    def __str__(self) -> str:
        return self.text

    def _config_int(self, ours: str, *hf: str) -> int | None:
        """A size from the model's config without loading it (`ours`: the key of our
        `model` table; `hf`: a Hugging Face config's keys, the first present); None when
        the config does not say."""
        import json

        try:
            if self.is_ours:
                value = self.config.get("model", {}).get(ours)
            elif self.kind == "hf" and self.path is not None:
                cfg = json.loads((self.path / "config.json").read_text())
                value = next((cfg[k] for k in hf if k in cfg), None)
            else:
                return None
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
            else None

    @property
    def vocab_size(self) -> int | None:
        """The embedding's size from the model's config (no weights read)."""
        return self._config_int("d_vocab", "vocab_size")

    @property
    def n_layers(self) -> int | None:
        """The number of blocks from the model's config (no weights read)."""
        return self._config_int("n_layers", "num_hidden_layers", "n_layer", "num_layers")

    def check_exists(self) -> None:
        """Refuse, before anything is imported or loaded, a reference that names nothing
        here: a missing path, or a hub name while offline (what `load` would refuse later).

        Raises:
            FileNotFoundError, OSError: with the fix.
        """
        if self.kind == "missing":
            what = ("does not exist" if not Path(self.text).exists() else
                    "holds no model (no checkpoints/, no config.json with model weights)")
            raise FileNotFoundError(f"model reference {self.text!r} {what}; pass a run "
                                    "directory such as runs/demo (train one with `workbench "
                                    "train`) or a local Hugging Face directory")
        if self.kind == "hub" and offline():
            raise hub_error(self.text, "HF_HUB_OFFLINE is set and no local directory has "
                                        "that name")
        if self.kind == "hf" and self.path is not None:  # a config no machine loads: at once
            rough = too_big_for_memory(self.path)
            if rough is not None:
                check_model_memory(self.text, rough)

    def __fspath__(self) -> str:
        return self.text

    @property
    def is_ours(self) -> bool:
        """A run or checkpoint of ours (trained by `workbench train`)."""
        return self.kind in ("run", "checkpoint")

    @property
    def checkpoints(self) -> list[CheckpointRef]:
        """The run's checkpoints by step (empty for anything but a run of ours)."""
        root = self.run_dir or (self.path if self.kind == "run" else None)
        if root is None:
            return []
        return [CheckpointRef(p, layout.step_of(p) or 0) for p in layout.checkpoint_dirs(root)]

    def select(self, which: str) -> list[CheckpointRef]:
        """`all`, or comma-separated steps (`0,64,512`), of the run's checkpoints; refused
        before anything is loaded when this is not a run of ours or a step is missing."""
        if self.run_dir is None:
            raise ValueError(f"{self.text} is not a run of ours; --checkpoints needs a run "
                             "directory made by `workbench train`")
        found = self.checkpoints
        if not found:
            raise ValueError(f"{self.run_dir} has no checkpoints; --checkpoints needs a run "
                             "directory made by `workbench train`")
        if which == "all":
            return found
        try:
            steps = [int(s) for s in which.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--checkpoints {which!r}: use `all` or steps like 0,64,512"
                             ) from None
        by_step = {c.step: c for c in found}
        missing = [s for s in steps if s not in by_step]
        if missing:
            raise ValueError(f"no checkpoint at step(s) {missing} in {self.run_dir}; "
                             f"available: {sorted(by_step)}")
        return [by_step[s] for s in steps]

    def load_checkpoints(self, which: str, device: str | Placement = "cpu"
                         ) -> Iterator[tuple[CheckpointRef, Model]]:
        """The checkpoints `which` (see `select`), each loaded in turn (one in memory at a
        time): what an analysis over a run's training history iterates."""
        for ckpt in self.select(which):
            yield ckpt, ckpt.load(device)

    @cached_property
    def checkpoint(self) -> Path | None:
        """The checkpoint directory `load` reads (None for Hugging Face models)."""
        if self.kind == "checkpoint" and self.step is None:
            return self.path
        if self.kind in ("run", "checkpoint"):
            from workbench.models.checkpoints import resolve_checkpoint

            assert self.path is not None
            return resolve_checkpoint(self.path, self.step)
        return None

    @cached_property
    def config(self) -> dict:
        """The checkpoint's `config.json` (read once; {} for other kinds)."""
        if not self.is_ours:
            return {}
        assert self.checkpoint is not None
        return read_checkpoint_config(self.checkpoint)

    @property
    def corpus(self) -> Path | None:
        """The corpus a native model was trained on, when recorded (a relative path, as
        the shipped model records `../world`, is relative to the run directory)."""
        recorded = self.config.get("corpus")
        if recorded is None:
            return None
        if Path(recorded).is_absolute():
            return Path(recorded)
        base = self.run_dir or self.checkpoint
        assert base is not None
        return base / recorded

    @property
    def output_dir(self) -> Path:
        """Where results about the model go: its run dir, checkpoint dir, local directory, or
        `runs/NAME` for a hub name."""
        if self.kind == "run":
            return self.run_dir or Path(self.text)
        if self.kind == "checkpoint":
            return self.run_dir or Path(self.text)
        if self.path is None or not self.path.exists():  # a hub name, or a path not there
            return Path("runs") / self.text.replace("/", "__")
        return Path(self.text)

    def report_path(self, kind: str) -> Path:
        """Where the `kind` report goes: `OUTPUT_DIR/analyses/KIND.json`."""
        return self.output_dir / layout.ANALYSES_DIR / f"{kind}.json"

    def corpus_path(self, corpus: str | os.PathLike[str] | None = None,
                    required: str | None = None) -> Path | None:
        """`corpus` when given, else the run's corpus (None when it names none). With
        `required` (what the corpus is for), a missing one is an error with the fix."""
        path = Path(corpus) if corpus is not None else self.corpus
        if path is None and required is not None:
            if self.kind == "missing" and not Path(self.text).exists():
                raise FileNotFoundError(f"model reference {self.text!r} does not exist; pass a "
                                        "run directory (`workbench train`) or a local Hugging "
                                        "Face directory")
            raise ValueError(f"model {self.text!r} names no corpus; pass --corpus PATH "
                             f"({required})")
        return path

    def load_corpus(self, corpus: str | os.PathLike[str] | None = None,
                    required: str | None = None) -> Corpus | None:
        """The loaded corpus of `corpus_path` (None when there is none and none is
        required)."""
        from workbench.world import load_corpus

        path = self.corpus_path(corpus, required)
        return None if path is None else load_corpus(path)

    def load(self, device: str | Placement = "cpu") -> Model:
        """The model as a hooked `TransformerBridge` (`workbench.models.loader.load`): the
        one place its weights are read."""
        from workbench.models.loader import load

        return load(self.text, device, step=self.step)
