"""Sparse dictionaries (autoencoders, transcoders) of a model's activations, scored against
the features the world planted: `workbench sae train`, `sae eval` and `sae compare`.

Modules: `dictionary` (the architectures, SAELens' parameters), `stream` (shuffled rows from
an activation file), `acts` (that file, made when missing), `train` (resumable training),
`io` (SAELens' on-disk layout), `collect` (one pass of the model with the dictionary spliced
in), `truth` (best single latent per planted label, against single neurons), `latents` (a
card per latent), `stability` (two trainings compared), `evaluate` (the `sae` analysis),
`figures`.
"""
