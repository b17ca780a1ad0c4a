"""How a model computes.

- `circuits.attention`: attention patterns with their tokens, the logit lens.
- `circuits.patching`: activation patching, and the one hook every patching analysis uses.
- `circuits.inputs`: repeated random tokens; `circuits.scores`: head scores in one pass
  (induction, previous-token, duplicate, prefix matching), OV copying, Q/K/V composition.
- `circuits.paths`: K-composition by path patching; `circuits.ablation`: head ablation.
- `circuits.dynamics`: scores and the ICL score over a run's checkpoints, the phase change.
- `circuits.induction`: the induction analysis (`InductionConfig`, `run`, `from_ref`;
  `workbench induction` in `circuits.cli`); `circuits.testing` + the pytest plugin:
  `assert_induction_heads`.
- `circuits.tracing`: causal tracing (where a fact is recalled), batched.
- Circuit discovery (`workbench circuit`): `circuits.graph` (writers, readers, edges),
  `circuits.edges` (patching and attribution over edges), `circuits.tasks` (clean/corrupted
  pairs as data), `circuits.discovery` (exact, attribution, EAP, EAP-IG, faithfulness,
  ACDC) and the analysis `circuits.circuit`.

Changing what a model states (ROME, fine-tuning) is in `beliefs`.
"""
