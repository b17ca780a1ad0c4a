"""What a model states and how to change it: the belief tests (`workbench beliefs`).

Where things live:

- `beliefs.factbase`: facts with their prompt templates and held-out paraphrases, from the
  world's fact table (`world_facts`) or a fact list (`load_facts`, schema `workbench.facts/1`);
  `FactBase.beliefs` picks the facts tested, `Belief` holds one.
- `beliefs.elicit`: what the model states about a fact, p(object), strength and consistency.
- `beliefs.ladder`: the in-context pressure ladder (does context change what it states?).
- `beliefs.editing`: weight edits applied on copies or restored exactly, MLP keys and their
  covariance; `beliefs.rome`: ROME (with the retention term); `beliefs.memit`: MEMIT over a
  range of layers and AlphaEdit's null-space projection; `beliefs.regimes`: MEMIT on many
  facts at once and one after another; `beliefs.finetune`: constrained fine-tuning.
- `beliefs.steering`: activation addition where the subject occurs; `beliefs.latent`: a
  sparse dictionary's latents clamped there (`--method sae`), both calibrated on held-out
  facts.
- `beliefs.trace`: causal traces averaged by token role, beside the fact probes.
- `beliefs.metrics`: efficacy, generalisation, specificity, ripple and fluency of an edit,
  and the before/after table of one edit (`before_after`).
- `beliefs.suite`: the analysis end to end (`BeliefsConfig`, `run`, `from_ref`; one edit:
  `edit_belief`), schema `workbench.beliefs/1`; `beliefs.figures`: its plotly figures;
  `beliefs.cli`: `workbench beliefs`.

Causal tracing, which locates where a fact is recalled, explains how the model computes and
lives in `circuits.tracing`.
"""
