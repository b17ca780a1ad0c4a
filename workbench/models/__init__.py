"""Model references, loading and formats: everything between a name on disk and a hooked model.

- `loader`: `load(ref)` of a run, checkpoint, Hugging Face directory or hub name;
- `refs`: `ModelRef`, a model reference resolved once (kind, run, checkpoints, corpus, outputs);
- `layout`: the run directory's file names and checkpoint step names;
- `checkpoints`: safetensors checkpoints written atomically; `config`: `ModelConfig`,
  `TrainConfig` and the presets (tokenizer files are the world's: `workbench.world`);
- `arch`: what an architecture supports; `checks`: inputs checked before work (vocabulary,
  split, memory); `devices`: where and in what precision (`Placement`);
- `info`: model cards; `export`: a native run as a Hugging Face GPT-2 checkpoint; `shipped`:
  the model that ships with the project.

`Model` is the hooked model every analysis takes: a TransformerLens 4 `TransformerBridge`, one
of ours or a Hugging Face checkpoint, as `workbench.models.loader.load` returns it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge as Model
else:
    def __getattr__(name: str) -> Any:
        """`Model`, imported on first use (TransformerLens takes seconds to import, and
        `workbench --help` reads this package)."""
        if name == "Model":
            from transformer_lens.model_bridge import TransformerBridge

            return TransformerBridge
        raise AttributeError(f"module 'workbench.models' has no attribute {name!r}")

__all__ = ["Model"]
