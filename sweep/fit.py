"""Scaling laws: power laws of loss against non-embedding parameters N, tokens D or compute C,
and the joint law of N and D (Kaplan et al. 2020; Hoffmann et al. 2022).

- `fit_power_law(x, y)`: L = a * x^(-alpha), or with `irreducible=True` L = E + a * x^(-alpha);
- `fit_joint_law(n, d, y)`: L(N, D) = E + A / N^alpha + B / D^beta;
- `fit_loss_laws(n, d, y)`: the three power laws and, when both N and D vary, the joint law.

How: for fixed exponents the law is linear in its coefficients, which are fitted by weighted
least squares with weights 1 / L² (relative errors, close to errors of log L) under
E, a, A, B >= 0 (every sign pattern of the two or three coefficients is solved and the best
feasible one kept, which is the exact non-negative solution). The exponents are found on a
grid that is zoomed around its best point. Without E the law is a straight line in log-log
space, fitted in closed form. R² is computed on log L. The 95 % intervals are percentiles of
the parameters refitted on points resampled with replacement (`FitConfig.n_boot`).
Pure numpy: no scipy.

>>> n = np.array([1e4, 1e5, 1e6, 1e7])
>>> law = fit_power_law(n, 5.0 * n ** -0.1, cfg=FitConfig(n_boot=0))
>>> round(law.a, 6), round(law.alpha, 6), round(law.r2, 6)
(5.0, 0.1, 1.0)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True)
class FitConfig:
    """Settings of every fit.

    Args:
        n_boot: bootstrap resamples for the intervals (0: no intervals).
        ci: coverage of the intervals.
        seed: resampling seed.
        exponent_range: where the exponents (alpha, beta) are searched.
        grid: grid points per exponent in the first search.
        zoom_rounds: refinements of the grid around its best point (each ~10x finer).
    """

    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    exponent_range: tuple[float, float] = (1e-3, 4.0)
    grid: int = 81
    zoom_rounds: int = 7

    def __post_init__(self) -> None:
        if self.n_boot < 0:
            raise ValueError(f"FitConfig.n_boot={self.n_boot}; pass 0 or more resamples")
        if not 0 < self.ci < 1:
            raise ValueError(f"FitConfig.ci={self.ci}; pass a coverage in (0, 1), e.g. 0.95")
        lo, hi = self.exponent_range
        if not 0 < lo < hi:
            raise ValueError(f"FitConfig.exponent_range={self.exponent_range}; pass 0 < low "
                             "< high")
        if self.grid < 5 or self.zoom_rounds < 0:
            raise ValueError(f"FitConfig.grid={self.grid}, zoom_rounds={self.zoom_rounds}; "
                             "pass grid >= 5 and zoom_rounds >= 0")


@dataclass(frozen=True)
class PowerLaw:
    """L = e + a * x^(-alpha) (e = 0 without an irreducible term), fitted to `n` points.

    Attributes:
        x_name: what x is (`N`, `D`, `C`).
        ci: 95 % (or `FitConfig.ci`) interval per parameter (`a`, `alpha`, and `e`).
        n_boot: resamples that gave a fit (degenerate ones are skipped).
    """

    x_name: str
    a: float
    alpha: float
    e: float
    irreducible: bool
    r2: float
    n: int
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_boot: int = 0

    def predict(self, x: ArrayLike) -> Array:
        return self.e + self.a * np.asarray(x, dtype=float) ** -self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x_name, "law": "E + a * x^-alpha" if self.irreducible
                else "a * x^-alpha", "a": self.a, "alpha": self.alpha, "e": self.e,
                "r2": self.r2, "n": self.n, "ci": {k: list(v) for k, v in self.ci.items()},
                "n_boot": self.n_boot}


@dataclass(frozen=True)
class JointLaw:
    """L(N, D) = e + a / N^alpha + b / D^beta, fitted to `n` points."""

    e: float
    a: float
    alpha: float
    b: float
    beta: float
    r2: float
    n: int
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_boot: int = 0

    def predict(self, n_params: ArrayLike, tokens: ArrayLike) -> Array:
        n_params, tokens = np.asarray(n_params, float), np.asarray(tokens, float)
        return self.e + self.a * n_params ** -self.alpha + self.b * tokens ** -self.beta

    def to_dict(self) -> dict[str, Any]:
        return {"law": "E + A / N^alpha + B / D^beta", "e": self.e, "a": self.a,
                "alpha": self.alpha, "b": self.b, "beta": self.beta, "r2": self.r2,
                "n": self.n, "ci": {k: list(v) for k, v in self.ci.items()},
                "n_boot": self.n_boot}


def _points(name: str, *arrays: ArrayLike) -> list[Array]:
    out = [np.asarray(a, dtype=float).ravel() for a in arrays]
    if len({len(a) for a in out}) != 1:
        raise ValueError(f"{name}: the arrays have different lengths {[len(a) for a in out]}; "
                         "pass one value per point in each")
    for a in out:
        if not (np.all(np.isfinite(a)) and np.all(a > 0)):
            raise ValueError(f"{name}: every x and loss must be finite and > 0 (got "
                             f"{a.tolist()[:6]}); drop the points without a loss")
    return out


def r2_log(y: Array, pred: Array) -> float:
    """R² of log y explained by log pred (1 = exact; can be negative for a bad fit)."""
    ly, lp = np.log(y), np.log(np.maximum(pred, 1e-300))
    total = float(np.sum((ly - ly.mean()) ** 2))
    return 1.0 - float(np.sum((ly - lp) ** 2)) / total if total > 0 else float("nan")


def _nnls_batch(cols: Array, y: Array) -> tuple[Array, Array]:
    """Non-negative weighted least squares of y on `cols` [G, n, k] for G designs at once
    (weights 1/y²). Returns costs [G] and coefficients [G, k]."""
    g, _, k = cols.shape
    xw = cols / y[None, :, None]
    yw = np.ones_like(y)
    best_cost = np.full(g, np.inf)
    best_coef = np.zeros((g, k))
    for support in itertools.chain.from_iterable(
            itertools.combinations(range(k), r) for r in range(1, k + 1)):
        sub = xw[:, :, list(support)]
        gram = np.einsum("gni,gnj->gij", sub, sub) + 1e-12 * np.eye(len(support))
        rhs = np.einsum("gni,n->gi", sub, yw)
        coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
        resid = np.einsum("gni,gi->gn", sub, coef) - yw
        cost = np.where(np.all(coef >= 0, axis=1), np.sum(resid ** 2, axis=1), np.inf)
        better = cost < best_cost
        best_cost = np.where(better, cost, best_cost)
        full = np.zeros((g, k))
        full[:, list(support)] = coef
        best_coef = np.where(better[:, None], full, best_coef)
    return best_cost, best_coef


def _search(design: Any, y: Array, dims: int, cfg: FitConfig) -> tuple[Array, Array]:
    """Exponents (in `dims` dimensions) minimising the NNLS cost of `design(exps [G, dims])`
    on a log grid zoomed around its best point; returns the exponents and coefficients."""
    lo, hi = np.log(cfg.exponent_range[0]), np.log(cfg.exponent_range[1])
    n = cfg.grid if dims == 1 else max(5, int(round(cfg.grid ** 0.5 * 4.5)))
    axes = [np.linspace(lo, hi, n)] * dims
    step = (hi - lo) / (n - 1)
    best = None
    for _ in range(cfg.zoom_rounds + 1):
        grid = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)
        cost, coef = _nnls_batch(design(np.exp(grid)), y)
        i = int(np.argmin(cost))
        best = (np.exp(grid[i]), coef[i])
        m = 21 if dims == 1 else 11
        axes = [np.linspace(c - 2 * step, c + 2 * step, m) for c in grid[i]]
        step = 4 * step / (m - 1)
    assert best is not None
    return best


def _power_once(x: Array, y: Array, irreducible: bool, cfg: FitConfig) -> tuple[float, ...]:
    """(a, alpha, e) of one fit."""
    if not irreducible:
        slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
        return float(np.exp(intercept)), float(-slope), 0.0

    def design(exps: Array) -> Array:
        return np.stack([np.ones((len(exps), len(x))), x[None, :] ** -exps[:, :1]], axis=2)

    exps, coef = _search(design, y, 1, cfg)
    return float(coef[1]), float(exps[0]), float(coef[0])


def _intervals(samples: list[Sequence[float]], names: Sequence[str],
               cfg: FitConfig) -> dict[str, tuple[float, float]]:
    if not samples:
        return {}
    arr = np.asarray(samples, dtype=float)
    q = [(1 - cfg.ci) / 2 * 100, (1 + cfg.ci) / 2 * 100]
    return {name: (float(np.percentile(arr[:, i], q[0])), float(np.percentile(arr[:, i], q[1])))
            for i, name in enumerate(names)}


def fit_power_law(x: ArrayLike, y: ArrayLike, *, irreducible: bool = False,
                  cfg: FitConfig = FitConfig(), x_name: str = "x") -> PowerLaw:
    """Fit L = a * x^(-alpha) (+ E with `irreducible`) with bootstrap intervals and R².

    Raises:
        ValueError: non-positive or non-finite values, or fewer distinct x than parameters.
    """
    xs, ys = _points("fit_power_law", x, y)
    need = 3 if irreducible else 2
    if len(np.unique(xs)) < need:
        raise ValueError(f"fit_power_law: {len(np.unique(xs))} distinct {x_name} values; a law "
                         f"with {need} parameters needs at least {need}")
    a, alpha, e = _power_once(xs, ys, irreducible, cfg)
    rng = np.random.default_rng(cfg.seed)
    samples = []
    for _ in range(cfg.n_boot):
        idx = rng.integers(0, len(xs), len(xs))
        if len(np.unique(xs[idx])) >= need:
            samples.append(_power_once(xs[idx], ys[idx], irreducible, cfg))
    names = ("a", "alpha", "e") if irreducible else ("a", "alpha")
    law = PowerLaw(x_name, a, alpha, e, irreducible, float("nan"), len(xs),
                   _intervals([s[:len(names)] for s in samples], names, cfg), len(samples))
    return replace(law, r2=r2_log(ys, law.predict(xs)))


def _joint_once(n: Array, d: Array, y: Array, cfg: FitConfig) -> tuple[float, ...]:
    def design(exps: Array) -> Array:
        return np.stack([np.ones((len(exps), len(n))), n[None, :] ** -exps[:, :1],
                         d[None, :] ** -exps[:, 1:2]], axis=2)

    exps, coef = _search(design, y, 2, cfg)
    return float(coef[0]), float(coef[1]), float(exps[0]), float(coef[2]), float(exps[1])


def fit_joint_law(n_params: ArrayLike, tokens: ArrayLike, y: ArrayLike, *,
                  cfg: FitConfig = FitConfig()) -> JointLaw:
    """Fit L(N, D) = E + A / N^alpha + B / D^beta with bootstrap intervals and R².

    Raises:
        ValueError: bad values, fewer than 5 points, or N or D with one value only.
    """
    ns, ds, ys = _points("fit_joint_law", n_params, tokens, y)
    if len(ys) < 5 or len(np.unique(ns)) < 2 or len(np.unique(ds)) < 2:
        raise ValueError(f"fit_joint_law: {len(ys)} points with {len(np.unique(ns))} distinct "
                         f"N and {len(np.unique(ds))} distinct D; the joint law needs >= 5 "
                         "points and >= 2 values of each (a sweep with both axes)")
    e, a, alpha, b, beta = _joint_once(ns, ds, ys, cfg)
    rng = np.random.default_rng(cfg.seed)
    samples = []
    for _ in range(cfg.n_boot):
        idx = rng.integers(0, len(ys), len(ys))
        if len(np.unique(ns[idx])) >= 2 and len(np.unique(ds[idx])) >= 2 and len(
                set(zip(ns[idx], ds[idx]))) >= 5:
            samples.append(_joint_once(ns[idx], ds[idx], ys[idx], cfg))
    law = JointLaw(e, a, alpha, b, beta, float("nan"), len(ys),
                   _intervals(samples, ("e", "a", "alpha", "b", "beta"), cfg), len(samples))
    return replace(law, r2=r2_log(ys, law.predict(ns, ds)))


def fit_loss_laws(n_params: ArrayLike, tokens: ArrayLike, loss: ArrayLike, *,
                  irreducible: bool = False,
                  cfg: FitConfig = FitConfig()) -> dict[str, PowerLaw | JointLaw]:
    """Power laws of loss against N, D and C = 6ND over the points where that variable
    takes enough distinct values, and the joint law when both N and D vary (>= 5 points)."""
    ns, ds, ys = _points("fit_loss_laws", n_params, tokens, loss)
    need = 3 if irreducible else 2
    out: dict[str, PowerLaw | JointLaw] = {}
    for name, xs in (("N", ns), ("D", ds), ("C", 6 * ns * ds)):
        if len(np.unique(xs)) >= need:
            out[name] = fit_power_law(xs, ys, irreducible=irreducible, cfg=cfg, x_name=name)
    if len(ys) >= 5 and len(np.unique(ns)) >= 2 and len(np.unique(ds)) >= 2:
        out["joint"] = fit_joint_law(ns, ds, ys, cfg=cfg)
    return out
