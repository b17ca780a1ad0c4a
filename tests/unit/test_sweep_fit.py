"""Scaling-law fits and emergence verdicts on known synthetic points: laws that generated the
points are recovered within 1 %, noisy points give intervals that cover the truth, and each
verdict comes out where it should."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.emergence import EmergenceConfig, emergence
from sweep.fit import FitConfig, fit_joint_law, fit_loss_laws, fit_power_law, r2_log

N = np.array([5e4, 1e5, 2.2e5, 6e5, 1.8e6, 3.2e6])
FAST = FitConfig(n_boot=100)


def close(value: float, truth: float, rel: float = 0.01) -> bool:
    return math.isclose(value, truth, rel_tol=rel)


def test_a_pure_power_law_is_recovered() -> None:
    law = fit_power_law(N, 12.0 * N ** -0.076, cfg=FAST, x_name="N")
    assert close(law.a, 12.0) and close(law.alpha, 0.076) and law.e == 0.0
    assert law.r2 == pytest.approx(1.0)
    lo, hi = law.ci["alpha"]
    assert lo == pytest.approx(0.076) and hi == pytest.approx(0.076)
    assert law.to_dict()["law"] == "a * x^-alpha" and law.to_dict()["x"] == "N"


def test_a_power_law_with_an_irreducible_loss_is_recovered() -> None:
    y = 1.69 + 406.4 * N ** -0.34
    law = fit_power_law(N, y, irreducible=True, cfg=FAST)
    assert close(law.e, 1.69) and close(law.a, 406.4) and close(law.alpha, 0.34)
    assert law.r2 == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(law.predict(N), y, rtol=1e-6)
    # without E the same points are a worse (but still decent) straight line in log-log
    plain = fit_power_law(N, y, cfg=FAST)
    assert plain.r2 < law.r2


def test_the_joint_law_is_recovered() -> None:
    n, d = (a.ravel() for a in np.meshgrid([1e5, 4e5, 1.6e6, 6.4e6], [2e6, 8e6, 3.2e7]))
    y = 1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28
    law = fit_joint_law(n, d, y, cfg=FitConfig(n_boot=20))
    assert close(law.e, 1.69) and close(law.a, 406.4) and close(law.alpha, 0.34)
    assert close(law.b, 410.7) and close(law.beta, 0.28)
    assert law.r2 == pytest.approx(1.0, abs=1e-6) and law.n_boot == 20
    assert set(law.ci) == {"e", "a", "alpha", "b", "beta"}


def test_noisy_points_give_intervals_that_cover_the_truth() -> None:
    rng = np.random.default_rng(0)
    x = np.geomspace(5e4, 5e6, 12)
    y = 8.0 * x ** -0.1 * np.exp(rng.normal(0, 0.01, len(x)))
    law = fit_power_law(x, y, cfg=FitConfig(n_boot=400, seed=1))
    lo, hi = law.ci["alpha"]
    assert lo < 0.1 < hi and hi - lo < 0.03
    assert 0.9 < law.r2 < 1.0 and law.n_boot == 400


def test_fit_loss_laws_fits_what_the_axes_allow() -> None:
    laws = fit_loss_laws(N, np.full(len(N), 1.5e6), 6.0 * N ** -0.08, cfg=FAST)
    assert set(laws) == {"N", "C"}  # D has one value: no law against D, no joint law
    assert close(laws["N"].alpha, 0.08) and close(laws["C"].alpha, 0.08)
    n, d = (a.ravel() for a in np.meshgrid([1e5, 1e6, 1e7], [1e6, 1e7]))
    laws = fit_loss_laws(n, d, 2 + 50 / n ** 0.3 + 80 / d ** 0.3, cfg=FitConfig(n_boot=0))
    assert set(laws) == {"N", "D", "C", "joint"}


@pytest.mark.parametrize("args, kwargs, match", [
    (([1e4, 1e5], [1.0, -1.0]), {}, r"must be finite and > 0"),
    (([1e4, 1e5, 1e6], [1.0, 0.9]), {}, r"different lengths \[3, 2\]"),
    (([1e4, 1e4], [1.0, 0.9]), {}, r"1 distinct x values; a law with 2 parameters"),
    (([1e4, 1e5], [1.0, 0.9]), {"irreducible": True}, r"needs at least 3"),
])
def test_bad_points_are_refused(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_power_law(*args, **kwargs, cfg=FAST)


def test_bad_joint_inputs_and_configs() -> None:
    with pytest.raises(ValueError, match=r"needs >= 5 points and >= 2 values of each"):
        fit_joint_law(N, np.full(len(N), 1e6), N ** -0.1)
    with pytest.raises(ValueError, match=r"FitConfig.ci=1.5"):
        FitConfig(ci=1.5)
    with pytest.raises(ValueError, match=r"exponent_range"):
        FitConfig(exponent_range=(1.0, 0.5))
    assert r2_log(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 1.0


# -- emergence ---------------------------------------------------------------------------

SCALES = [1e4, 3e4, 1e5, 3e5, 1e6, 3e6]


def test_a_step_is_emergent_at_its_scale() -> None:
    acc = [0.25, 0.26, 0.24, 0.92, 0.95, 0.97]
    e = emergence(SCALES, acc, chance=0.25)
    assert e.verdict == "emergent" and e.scale == 3e5 and e.below == 1e5
    assert "near chance" in e.reason and e.to_dict()["scale"] == 3e5
    shuffled = emergence(SCALES[::-1], acc[::-1], chance=0.25)  # order does not matter
    assert (shuffled.verdict, shuffled.scale) == ("emergent", 3e5)


def test_a_linear_rise_is_smooth() -> None:
    acc = list(np.linspace(0.25, 1.0, len(SCALES)))
    assert emergence(SCALES, acc, chance=0.25).verdict == "smooth"


def test_flat_at_chance_is_not_reached() -> None:
    e = emergence(SCALES, [0.25, 0.27, 0.24, 0.26, 0.28, 0.25], chance=0.25)
    assert e.verdict == "not reached" and e.scale is None


def test_a_continuous_metric_of_the_same_step_can_be_smooth() -> None:
    # log p(answer) with 4 candidates: chance log(1/4), ceiling 0; rising steadily while
    # accuracy (above) jumps at one scale: the suddenness belongs to the metric
    logp = [-1.386, -1.2, -0.95, -0.7, -0.45, -0.2]
    assert emergence(SCALES, logp, chance=math.log(0.25), ceiling=0.0).verdict == "smooth"


def test_the_criteria_are_config_fields() -> None:
    acc = [0.25, 0.40, 0.9, 0.95]  # the scale before the jump is 0.2 of the way up
    assert emergence(SCALES[:4], acc, chance=0.25).verdict == "smooth"
    loose = EmergenceConfig(near_chance=0.25)
    assert emergence(SCALES[:4], acc, chance=0.25, cfg=loose).scale == 1e5


@pytest.mark.parametrize("x, y, chance, match", [
    ([1, 2], [0.1, 0.2], 0.0, r"2 scales; a verdict needs at least 3"),
    ([1, 2, 3], [0.1, 0.2], 0.0, r"3 scales but 2 values"),
    ([1, 1, 3], [0.1, 0.2, 0.3], 0.0, r"a scale is repeated"),
    ([1, 2, 3], [0.1, 0.2, 0.3], 1.0, r"chance equals the ceiling"),
    ([1, 2, 3], [0.1, float("nan"), 0.3], 0.0, r"must be finite"),
])
def test_bad_curves_are_refused(x: list, y: list, chance: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        emergence(x, y, chance)
    with pytest.raises(ValueError, match=r"near_chance=0.5, well_above=0.4"):
        EmergenceConfig(near_chance=0.5)
