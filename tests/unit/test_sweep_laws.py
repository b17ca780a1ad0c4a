"""`sweep.json` assembled from synthetic member results: the loss law that made the points is
recovered, every ability gets a verdict for both metrics, an ability sudden by accuracy but
smooth by log-probability is named among those whose verdicts differ, mixture knobs give the
step at which induction heads form, and the schema check catches a broken report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.fit import FitConfig
from sweep.laws import SCHEMA, build_report, differing, induction_step, validate_report

N = [5e4, 1e5, 2e5, 4e5, 8e5]
JUMPY = [0.01, 0.02, 0.03, 0.9, 0.95]  # accuracy: near chance, then well above it at once
LOGP = [-6.0, -4.5, -3.0, -1.5, -0.5]  # its log-probability rises steadily


def metric(name: str, value: float, chance: float, ceiling: float) -> dict:
    return {"name": name, "value": value, "chance": chance, "ceiling": ceiling}


def abilities(i: int, induction: float = 0.0) -> dict:
    steady = (i + 1) / 5
    return {
        "jumpy": {"discrete": metric("accuracy", JUMPY[i], 0.0, 1.0),
                  "continuous": metric("log-probability", LOGP[i], -7.0, 0.0)},
        "steady": {"discrete": metric("accuracy", steady, 0.0, 1.0),
                   "continuous": metric("log-probability", -7 * (1 - steady), -7.0, 0.0)},
        "induction_heads": {"discrete": metric("a head", float(induction >= 0.4), 0.0, 1.0),
                            "continuous": metric("score", induction, 0.0, 1.0)},
    }


def member(i: int, n: float, knobs: dict | None = None, form_at: int | None = None) -> dict:
    loss = 12.0 * n ** -0.1
    steps = [0, 10, 100]
    cks = [{"step": s, "val_loss": loss + 1.0 / (s + 1),
            "abilities": abilities(i, 0.5 if form_at is not None and s >= form_at else 0.1)}
           for s in steps]
    cks[-1]["val_loss"] = loss
    return {"name": f"m{i}_{knobs}", "n_params": int(n), "tokens": 100_000,
            "compute": 6.0 * int(n) * 100_000, "steps": 100, "seed": 0, "knobs": knobs or {},
            "finished": True, "final_loss": loss,
            "curve": {"step": steps, "loss": [loss] * 3, "val_step": steps,
                      "val_loss": [c["val_loss"] for c in cks]}, "checkpoints": cks}


def test_laws_verdicts_and_the_differing_list() -> None:
    members = [member(i, n) for i, n in enumerate(N)]
    report = build_report("synthetic", {}, members, {}, fit=FitConfig(n_boot=50))
    validate_report(report)
    assert report["schema"] == SCHEMA
    law = report["laws"]["N"]
    assert math.isclose(law["alpha"], 0.1, rel_tol=1e-3) and law["r2"] == pytest.approx(1.0)
    assert math.isclose(law["a"], 12.0, rel_tol=1e-3) and "alpha" in law["ci"]
    assert "joint" not in report["laws"]  # one data size
    jumpy, steady = report["abilities"]["jumpy"], report["abilities"]["steady"]
    assert jumpy["discrete"]["N"]["verdict"] == "emergent"
    assert jumpy["discrete"]["N"]["scale"] == 4e5
    assert jumpy["continuous"]["N"]["verdict"] == "smooth"
    assert jumpy["continuous"]["name"] == "log-probability"
    assert steady["discrete"]["N"]["verdict"] == steady["continuous"]["N"]["verdict"] == "smooth"
    assert report["differ"]["N"] == ["jumpy"] and report["differ"]["C"] == ["jumpy"]
    assert "jumpy (emergent by accuracy, smooth by log-probability" in \
        report["differ"]["statement"]
    assert report["abilities"]["jumpy"]["discrete"]["C"]["x"] == [m["compute"] for m in members]


def test_no_differing_verdict_is_said_so() -> None:
    abilities_ = {"a": {m: {s: {"verdict": "smooth"} for s in ("N", "C")}
                        for m in ("discrete", "continuous")}}
    assert differing(abilities_)["statement"].startswith("on this sweep no ability's verdict")


def test_too_few_scales_and_the_joint_law() -> None:
    two = build_report("two", {}, [member(0, N[0]), member(1, N[1])], {},
                       fit=FitConfig(n_boot=10))
    assert two["abilities"]["jumpy"]["discrete"]["N"]["verdict"] == "too few scales"
    assert two["differ"]["N"] == []
    grid = []
    for d in (1e5, 4e5):
        for i, n in enumerate(N[:3]):
            m = member(i, n)
            m.update(tokens=int(d), steps=int(d // 1000), name=f"{m['name']}_{d}",
                     compute=6.0 * int(n) * d,
                     final_loss=1.5 + 400 / n ** 0.34 + 400 / d ** 0.28)
            grid.append(m)
    report = build_report("grid", {}, grid, {}, fit=FitConfig(n_boot=10))
    assert report["laws"]["joint"]["r2"] > 0.99
    assert report["abilities"]["jumpy"]["discrete"]["N"]["x"] == N[:3]  # the largest D only


def test_knob_curves_give_the_induction_step() -> None:
    members = [member(0, N[0], {"repeat_words": 0.1}), member(1, N[1], {"repeat_words": 0.1},
                                                                 form_at=100),
               member(1, N[1], {"repeat_words": 0.4}, form_at=10)]
    assert induction_step(members[2]) == 10 and induction_step(members[0]) is None
    report = build_report("knobs", {}, members, {}, fit=FitConfig(n_boot=10))
    knob = report["knobs"]["repeat_words"]
    assert knob["x"] == [0.1, 0.4] and knob["induction_step"] == [100, 10]
    assert np.allclose(knob["abilities"]["jumpy"]["discrete"], [JUMPY[1]] * 2)


def test_a_broken_report_is_named() -> None:
    report = build_report("s", {}, [member(i, n) for i, n in enumerate(N)], {},
                          fit=FitConfig(n_boot=10))
    del report["abilities"]["jumpy"]["continuous"]["C"]
    with pytest.raises(ValueError, match=r"abilities.jumpy.continuous has no 'C'"):
        validate_report(report)
    with pytest.raises(ValueError, match="schema"):
        validate_report({"schema": "workbench.other/1"})
