"""How a model computes: attention patterns, logit lens, activation patching, head scores,
composition, ablation, training dynamics and induction heads (see `circuits.induction`)."""
