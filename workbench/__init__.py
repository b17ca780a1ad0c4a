"""Interpretability Workbench: look inside GPT-style language models.

The names a session starts with (imported on first use, so `import workbench` stays cheap):

>>> import workbench
>>> workbench.__all__[:4]
['Model', 'ModelRef', 'TrainConfig', 'WorldConfig']
>>> workbench.ModelRef.of("gpt2").kind
'hub'

- `load(ref)`: a run, checkpoint, Hugging Face directory or hub name as a hooked `Model`
  (a TransformerLens 4 `TransformerBridge`); `ModelRef.of(ref)`: the reference resolved once;
- `load_corpus`, `build_corpus`, `WorldConfig`: the synthetic world and its corpus files;
- `train`, `TrainConfig`: training a native model; `cache_activations`: activations to HDF5;
- `hook_name`: TransformerLens hook names; `analyses()`: every registered analysis.

The core is in rooms; each imports only rooms below it, and none imports an analysis package:

- `workbench.world`: the synthetic world, its grammar and labels, tokenizers, corpus files;
- `workbench.models`: model references (`refs`), loading (`loader`) and formats
  (`checkpoints`, `config`, `layout`, `export`), devices and the checks made before work;
- `workbench.training`: the trainer, its model, data, run directory and torchrun;
- `workbench.cache`: activations streamed to HDF5;
- `workbench.cli`: the command line (the subcommand registry, flag types, the core's commands);
- primitives at the top: `hooks` (hook names), `prompts` (text to tokens and logits),
  `repeats` (repeated random tokens and the copy loss),
  `evaluate` (fact recall, agreement, induction), `analysis` (the analysis protocol and report
  files), `outputs` (what may be written and deleted), `plots`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load": "workbench.models.loader",
    "Model": "workbench.models",
    "ModelRef": "workbench.models.refs",
    "load_corpus": "workbench.world",
    "build_corpus": "workbench.world",
    "WorldConfig": "workbench.world",
    "train": "workbench.training.trainer",
    "TrainConfig": "workbench.models.config",
    "cache_activations": "workbench.cache.store",
    "hook_name": "workbench.hooks",
    "analyses": "workbench.analysis",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
