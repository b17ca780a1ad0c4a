"""Sparse dictionaries (autoencoders, transcoders) of a model's activations, scored against
the features the world planted: `workbench sae train` and `workbench sae eval`.

Modules: `dictionary` (the architectures, SAELens' parameters), `stream` (shuffled rows from
an activation file), `train` (resumable training), `io` (SAELens' on-disk layout),
`collect` (one pass of the model with the dictionary spliced in), `truth` (best single latent
per planted label, against single neurons), `evaluate` (the `sae` analysis), `figures`.
"""
