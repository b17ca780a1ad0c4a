"""The core every analysis stands on; it imports no analysis package (`circuits`, `probe`,
`beliefs`, `app`), which register their own `workbench` subcommands.

Where things live:

- `workbench.world`: the synthetic world (people and their fact table, a grammar with gold
  labels, repetition documents), tokenizers, corpus files (`load_corpus`), re-encoding.
- `workbench.config`: `ModelConfig`, `TrainConfig` and the presets that pair them;
  `workbench.fastgpt`: the training model; `workbench.train`: the trainer (`batches`: its
  data, `run_dir`: its directory and resume, `distributed`: torchrun, `devices`).
- `workbench.checkpoints`: safetensors checkpoints written atomically; `workbench.models`:
  `load(ref)` of a run, checkpoint, Hugging Face directory or hub name, and `Model`;
  `workbench.info`: model cards and where a model's results go.
- `workbench.prompts`: text to tokens (BOS, prompt and word ids, last-position logits);
  `workbench.hooks`: hook names and patterns.
- `workbench.cache` (+ `cache_plan`, `cache_partial`, `cache_join`): activations streamed
  to HDF5.
- `workbench.evaluate`: fact recall, agreement and induction ratio (`workbench eval`).
- `workbench.analysis`: what every analysis shares (`report_path`, `write_report`, the run's
  corpus); `workbench.plots`: training and evaluation figures.
- `workbench.commands`: the subcommand registry; `workbench.cli`: the core's subcommands;
  `workbench.argtypes`: flag values checked when parsed.
- `workbench.outputs`: what may be written and deleted (`--overwrite`, outputs over inputs,
  the umask); `workbench.checks`: inputs checked before work (vocabulary, split, memory).
"""
