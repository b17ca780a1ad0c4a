"""Is an ability's rise with scale smooth or sudden? (Wei et al. 2022; Schaeffer et al. 2023)

An ability is measured at each scale x (N or C of a sweep's members) as y(x), beside its
chance level and its ceiling (1 for accuracy; 0 for the log-probability of the right answer,
whose chance is log(1 / n_candidates)). `emergence` reads the progress
p = (y - chance) / (ceiling - chance) at each scale, in order of x, and gives one verdict:

- `not reached`: p stays below `EmergenceConfig.reached` at every scale;
- `emergent`: there is a scale x_k with every smaller scale near chance (p <= `near_chance`,
  at least `min_below` of them), x_k and every larger scale well above it
  (p >= `well_above`), and the step from the scale before x_k to x_k making at least
  `jump_share` of the whole rise (max p - min p); `scale` names x_k (`below` the scale before);
- `smooth`: the ability is reached, but not in one such step.

Giving the verdict for a discontinuous metric (accuracy) and a continuous one (log-probability)
of the same ability shows when the suddenness belongs to the metric (Schaeffer et al.).

>>> emergence([1e4, 1e5, 1e6, 1e7], [0.25, 0.26, 0.9, 0.95], chance=0.25).verdict
'emergent'
>>> emergence([1e4, 1e5, 1e6, 1e7], [0.25, 0.5, 0.75, 1.0], chance=0.25).verdict
'smooth'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

VERDICTS = ("smooth", "emergent", "not reached")


@dataclass(frozen=True)
class EmergenceConfig:
    """The criteria of the verdicts, in units of progress from chance (0) to ceiling (1).

    Args:
        near_chance: a scale is near chance when its progress is at most this.
        well_above: a scale is well above chance when its progress is at least this.
        reached: the ability is reached when some scale's progress is at least this.
        jump_share: an emergent rise makes at least this share of the whole rise in the
            one step between two neighbouring scales.
        min_below: near-chance scales needed below the emergence scale.
        min_points: scales needed for any verdict.
    """

    near_chance: float = 0.1
    well_above: float = 0.4
    reached: float = 0.2
    jump_share: float = 0.5
    min_below: int = 1
    min_points: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.near_chance < self.well_above <= 1:
            raise ValueError(f"EmergenceConfig: near_chance={self.near_chance}, well_above="
                             f"{self.well_above}; pass 0 <= near_chance < well_above <= 1")
        if not 0 < self.reached <= 1 or not 0 < self.jump_share <= 1:
            raise ValueError(f"EmergenceConfig: reached={self.reached}, jump_share="
                             f"{self.jump_share}; pass values in (0, 1]")
        if self.min_below < 1 or self.min_points < 2:
            raise ValueError(f"EmergenceConfig: min_below={self.min_below}, min_points="
                             f"{self.min_points}; pass min_below >= 1 and min_points >= 2")


@dataclass(frozen=True)
class Emergence:
    """A verdict on one ability curve.

    Attributes:
        verdict: `smooth`, `emergent` or `not reached`.
        scale: for `emergent`, the first scale well above chance; else None.
        below: for `emergent`, the largest scale near chance; else None.
        x: the scales, ascending; progress: (y - chance) / (ceiling - chance) at each.
        reason: the numbers behind the verdict, in words.
    """

    verdict: str
    scale: float | None
    below: float | None
    x: list[float] = field(default_factory=list)
    progress: list[float] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "scale": self.scale, "below": self.below,
                "x": self.x, "progress": self.progress, "reason": self.reason}


def emergence(x: Sequence[float], y: Sequence[float], chance: float, *, ceiling: float = 1.0,
              cfg: EmergenceConfig = EmergenceConfig()) -> Emergence:
    """The verdict on an ability curve y(x) with its chance level and ceiling.

    Args:
        x: scales (N, C, ...), positive; any order.
        y: the ability at each scale (accuracy, log-probability, ...).
        chance: y of a model that guesses.
        ceiling: y of a perfect model (1 for accuracy, 0 for a log-probability).
        cfg: the criteria.

    Raises:
        ValueError: lengths differ, fewer than `cfg.min_points` scales, a repeated scale,
            non-finite values, or chance equal to the ceiling.
    """
    if len(x) != len(y):
        raise ValueError(f"emergence: {len(x)} scales but {len(y)} values; pass one per scale")
    if len(x) < cfg.min_points:
        raise ValueError(f"emergence: {len(x)} scales; a verdict needs at least "
                         f"{cfg.min_points} (a sweep with more members)")
    values = [float(v) for v in (*x, *y, chance, ceiling)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("emergence: scales, values, chance and ceiling must be finite")
    if len(set(x)) != len(x):
        raise ValueError("emergence: a scale is repeated; average the members of one scale "
                         "(e.g. over seeds) first")
    if chance == ceiling:
        raise ValueError(f"emergence: chance equals the ceiling ({chance}); nothing can rise")
    pairs = sorted(zip(map(float, x), map(float, y)))
    xs = [p[0] for p in pairs]
    prog = [(p[1] - chance) / (ceiling - chance) for p in pairs]
    top, rise = max(prog), max(prog) - min(prog)
    if top < cfg.reached:
        return Emergence("not reached", None, None, xs, prog,
                         f"progress at most {top:.2f} of the way from chance to the ceiling "
                         f"(< {cfg.reached})")
    for k in range(cfg.min_below, len(xs)):
        below, after = prog[:k], prog[k:]
        jump = prog[k] - prog[k - 1]
        if (max(below) <= cfg.near_chance and min(after) >= cfg.well_above
                and jump >= cfg.jump_share * rise):
            return Emergence("emergent", xs[k], xs[k - 1], xs, prog,
                             f"near chance (progress <= {max(below):.2f}) up to {xs[k - 1]:.3g}, "
                             f">= {min(after):.2f} from {xs[k]:.3g}; that step is "
                             f"{jump / rise:.0%} of the rise")
    return Emergence("smooth", None, None, xs, prog,
                     f"reached (progress up to {top:.2f}) without one step from near chance "
                     f"to well above it")
