"""Reproducible induction-head checks for your own test suites.

    from circuits.testing import assert_induction_heads

    def test_my_model_has_induction_heads(my_model):
        heads = assert_induction_heads(my_model, min_score=0.4, min_ablation=0.5, seed=0)
        assert "L1H0" in heads

    def test_my_model_has_the_induction_circuit(my_model):
        # and each induction head's keys read most from a previous-token head
        assert_induction_heads(my_model, circuit=True, min_prev_token=0.4)

With the pytest plugin (installed with the package, `-p circuits.pytest_plugin` otherwise)
the fixture `induction_heads` does the same with thresholds from the ini file
(`induction_min_score`, `induction_min_ablation`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circuits.induction import InductionConfig, head_table, run

if TYPE_CHECKING:
    from workbench.models import Model


class InductionHeadsMissing(AssertionError):
    """No head (or too few heads) met the induction thresholds; `report` holds the scores."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def assert_induction_heads(
    model: Model,
    min_score: float = 0.4,
    min_ablation: float = 0.5,
    seed: int = 0,
    n_seqs: int = 32,
    min_heads: int = 1,
    min_layer: int = 1,
    circuit: bool = False,
    min_prev_token: float = 0.4,
) -> list[str]:
    """The names of the model's induction heads (e.g. `["L1H0"]`), sorted by induction score.

    A head counts when it is in layer >= `min_layer`, its induction score on repeated random
    tokens (seeded by `seed`) is >= `min_score`, and zero-ablating it raises the loss on the
    repeated half by >= `min_ablation` nats. Raises `InductionHeadsMissing` (an
    `AssertionError`) with a table of every head's scores when fewer than `min_heads` count.

    With `circuit=True` each of those heads must also complete the two-head circuit: the
    earlier head whose output matters most in its keys (direct-path patching,
    `circuits.paths`) must be a previous-token head (previous-token score >=
    `min_prev_token`); otherwise the error names the head its keys read from instead.
    The result depends only on the model's weights and `seed`.
    """
    cfg = InductionConfig(n_seqs=n_seqs, seed=seed, min_score=min_score,
                          min_ablation=min_ablation, min_prev_token=min_prev_token)
    report = run(model, None, cfg)
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
    if circuit:
        prev = {r["name"]: r["prev_token"] for r in report["heads"]}
        broken = [p for p in report["pairs"]
                  if p["induction_head"] in names and not p["k_path_source_is_prev_token"]]
        if broken:
            lines = [f"  {p['induction_head']}: keys read most from {p['k_path_source']} "
                     f"(induction score drops by {p['k_path']:.3f} when it is mean-ablated "
                     f"there), whose previous-token score is {prev[p['k_path_source']]:.3f}"
                     for p in broken]
            raise InductionHeadsMissing(
                f"induction head(s) {', '.join(p['induction_head'] for p in broken)} do not "
                f"read their keys mainly from a previous-token head (score >= "
                f"{min_prev_token}):\n" + "\n".join(lines) + "\nEvery head:\n"
                + head_table(report), report)
    return names
