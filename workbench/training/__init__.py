"""Training native models: `trainer` (the training loop, `workbench train`), `fastgpt` (the
training model), `batches` (its data), `run_dir` (the run directory and resume) and
`distributed` (torchrun DDP)."""
