"""A member of a sweep: its size (`Size`), its configs, the corpus it trains on (its world,
or a subset of it without the documents a drop rule names) and the numbers scaling laws read
(non-embedding parameters N, tokens D, compute C = 6ND).

>>> Size.parse("2x64x2").label
'L2-d64-h2'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from workbench.models.config import ModelConfig, TrainConfig
from workbench.world import WorldConfig
from workbench.world.subset import Drop

_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*$")
NO_DROP = "none"  # the drop axis's value for the whole corpus


def fmt_value(value: float) -> str:
    """A knob value in a name: `0.05`, `1e-05`, `3`."""
    return f"{value:g}"


def member_name(size: Size, steps: int, knobs: tuple[tuple[str, float], ...], seed: int,
                drop: str = NO_DROP) -> str:
    """`L2-d64-h2_steps400_seed0`; mixture knobs, then a drop rule, before the seed
    (`..._repeat_words0.1_seed0`, `..._drop-tenth_seed0`; no drop: no part).

    >>> member_name(Size(2, 64, 2), 400, (("update", 0.05),), 1)
    'L2-d64-h2_steps400_update0.05_seed1'
    >>> member_name(Size(2, 64, 2), 400, (), 0, drop="tenth")
    'L2-d64-h2_steps400_drop-tenth_seed0'
    """
    knob_part = "".join(f"_{k}{fmt_value(v)}" for k, v in knobs)
    drop_part = "" if drop == NO_DROP else f"_drop-{drop}"
    return f"{size.label}_steps{steps}{knob_part}{drop_part}_seed{seed}"


def corpus_id(world_id: str, drop: str = NO_DROP) -> str:
    """The corpus a member trains on: its world (`world`), or the subset of it without what
    the drop rule names (`world_drop-tenth`), under the plan's `worlds/`.

    >>> corpus_id("world_update0.05", "tenth")
    'world_update0.05_drop-tenth'
    """
    return world_id if drop == NO_DROP else f"{world_id}_drop-{drop}"


def non_embedding_params(cfg: ModelConfig) -> int:
    """Parameters outside the token and position embeddings and the unembedding (Kaplan et
    al. 2020's N): attention, MLPs, LayerNorms.

    >>> non_embedding_params(ModelConfig(n_layers=1, d_model=64, n_heads=2, d_head=32,
    ...                                  d_mlp=256, n_ctx=64))
    50112
    """
    return cfg.replace(d_vocab=-1).n_params - cfg.n_ctx * cfg.d_model


@dataclass(frozen=True)
class Size:
    """A model size: `n_layers` x `d_model` x `n_heads` (each head `d_model / n_heads` wide)."""

    n_layers: int
    d_model: int
    n_heads: int

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"size {self.text}: {name}={value!r}; it must be a positive "
                                 "integer")
        if self.d_model % self.n_heads:
            raise ValueError(f"size {self.text}: d_model {self.d_model} is not divisible by "
                             f"n_heads {self.n_heads}; choose n_heads dividing d_model")

    @property
    def text(self) -> str:
        return f"{self.n_layers}x{self.d_model}x{self.n_heads}"

    @property
    def label(self) -> str:
        return f"L{self.n_layers}-d{self.d_model}-h{self.n_heads}"

    @classmethod
    def parse(cls, value: Any) -> Size:
        """`"2x64x2"` or `{n_layers = 2, d_model = 64, n_heads = 2}`."""
        if isinstance(value, str):
            m = _SIZE.match(value)
            if not m:
                raise ValueError(f"size {value!r} is not n_layers x d_model x n_heads; write "
                                 "it as e.g. \"2x64x2\"")
            return cls(*(int(g) for g in m.groups()))
        if isinstance(value, Mapping):
            keys = ("n_layers", "d_model", "n_heads")
            if set(value) != set(keys):
                raise ValueError(f"size {dict(value)}: give exactly the keys {', '.join(keys)} "
                                 "(or a string such as \"2x64x2\")")
            return cls(*(value[k] for k in keys))
        raise ValueError(f"size {value!r}: write it as \"2x64x2\" (n_layers x d_model x "
                         "n_heads)")


@dataclass(frozen=True)
class Member:
    """One model of a sweep: its name, axis values, configs and the corpus it trains on: its
    world, or (`drop` other than `none`) the subset of it without what `drop_rule` names."""

    name: str
    size: Size
    steps: int
    seed: int
    knobs: tuple[tuple[str, float], ...]
    model: ModelConfig
    train: TrainConfig
    world_id: str
    world: WorldConfig
    world_tokens: int
    drop: str = NO_DROP
    drop_rule: Drop | None = None

    @property
    def corpus_id(self) -> str:
        """The directory under the plan's `worlds/` that it trains on."""
        return corpus_id(self.world_id, self.drop)

    @property
    def n_params(self) -> int:
        """N: non-embedding parameters."""
        return non_embedding_params(self.model)

    @property
    def tokens(self) -> int:
        """D: training tokens (steps x batch_size x n_ctx)."""
        return self.steps * self.train.batch_size * self.model.n_ctx

    @property
    def compute(self) -> float:
        """C = 6 N D: training FLOPs, forward and backward (Kaplan et al. 2020)."""
        return 6.0 * self.n_params * self.tokens

    def to_dict(self) -> dict[str, Any]:
        """What `member.json` holds (besides its schema); a drop other than `none` adds
        `axes.drop` and `world.drop` (its name, rule and corpus)."""
        axes: dict[str, Any] = {"size": self.size.text, "steps": self.steps, "seed": self.seed,
                                **dict(self.knobs)}
        world: dict[str, Any] = {"id": self.world_id, "config": self.world.to_dict(),
                                 "tokens": self.world_tokens}
        if self.drop != NO_DROP:
            axes["drop"] = self.drop
            world["drop"] = {"name": self.drop, "corpus": self.corpus_id,
                             "rule": None if self.drop_rule is None else self.drop_rule.to_dict()}
        return {
            "name": self.name,
            "axes": axes,
            "model": self.model.to_dict(),
            "train": asdict(self.train),
            "world": world,
            "n_params": self.n_params,
            "tokens": self.tokens,
            "compute": self.compute,
        }


