"""Reproducible induction-head checks for your own test suites.

    from circuits.testing import assert_induction_heads

    def test_my_model_has_induction_heads(my_model):
        heads = assert_induction_heads(my_model, min_score=0.4, min_ablation=0.5, seed=0)
        assert "L1H0" in heads

With the pytest plugin (installed with the package, `-p circuits.pytest_plugin` otherwise)
the fixture `induction_heads` does the same with thresholds from the ini file
(`induction_min_score`, `induction_min_ablation`).
"""

from __future__ import annotations

from typing import Any

from circuits.induction import InductionConfig, find_induction_heads, head_table


class InductionHeadsMissing(AssertionError):
    """No head (or too few heads) met the induction thresholds; `report` holds the scores."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def assert_induction_heads(
    model: Any,
    min_score: float = 0.4,
    min_ablation: float = 0.5,
    seed: int = 0,
    n_seqs: int = 32,
    min_heads: int = 1,
    min_layer: int = 1,
) -> list[str]:
    """The names of the model's induction heads (e.g. `["L1H0"]`), sorted by induction score.

    A head counts when it is in layer >= `min_layer`, its induction score on repeated random
    tokens (seeded by `seed`) is >= `min_score`, and zero-ablating it raises the loss on the
    repeated half by >= `min_ablation` nats. Raises `InductionHeadsMissing` (an
    `AssertionError`) with a table of every head's scores when fewer than `min_heads` count.
    The result depends only on the model's weights and `seed`.
    """
    cfg = InductionConfig(n_seqs=n_seqs, seed=seed, min_score=min_score,
                          min_ablation=min_ablation)
    report = find_induction_heads(model, cfg)
    found = sorted((r for r in report["heads"]
                    if r["is_induction"] and r["layer"] >= min_layer),
                   key=lambda r: -r["induction"])
    names = [r["name"] for r in found]
    if len(names) < min_heads:
        raise InductionHeadsMissing(
            f"expected at least {min_heads} induction head(s) in layers >= {min_layer} with "
            f"induction score >= {min_score} and ablation effect >= {min_ablation} nats; "
            f"found {len(names)} ({', '.join(names) or 'none'}). Loss on the repeated half: "
            f"{report['loss']['second_copy']:.3f} nats (first copy "
            f"{report['loss']['first_copy']:.3f}). Every head:\n{head_table(report)}",
            report)
    return names
