"""A sweep is data: a spec file (TOML or JSON) names a family of models and how to train them.

```toml
name = "micro"
preset = "tiny"                 # base ModelConfig and TrainConfig (workbench/models/config.py)

[axes]                          # members = the cartesian product of the axes
size = ["1x32x2", "2x64x2"]     # n_layers x d_model x n_heads (d_head = d_model / n_heads)
steps = [300]                   # or tokens = [...] (steps = ceil(tokens / (batch_size * n_ctx)))
seed = [0, 1]                   # training seed (initialisation and batch order)
repeat_words = [0.1, 0.4]       # a world-mixture knob: that document kind's share of tokens

[model]                         # shared by every member: n_ctx, mlp_ratio, act_fn, attn_only
n_ctx = 64

[train]                         # any TrainConfig field (batch_size, lr, warmup_steps, ...)
batch_size = 16

[world]                         # the corpus: seed, tokens, and WorldConfig fields (mix, ...)
tokens = 300000
```

A `drop` axis trains members on subsets of their world: each value names a `[drop.NAME]`
rule (`workbench.world.subset.Drop`), or is `none` for the whole corpus:

```toml
[axes]
drop = ["none", "bruno", "tenth"]

[drop.bruno]                    # every training document stating one of these facts goes
facts = ["bruno moreau:city", "3:job"]   # SUBJECT:RELATION, SUBJECT a name or a person id
[drop.tenth]                    # a random tenth of the training documents goes
fraction = 0.1
seed = 1
# [drop.top] docs = [12, 40]    # or these training documents (indices of the train split)
```

Members with a drop are named `..._drop-NAME_seed0` and train on `worlds/WORLD_drop-NAME`,
the world without those documents (val, test and the eval sets are the world's, so results
compare); members with `none` keep the names and configs they have without the axis. An
unknown rule, an empty one, a fraction outside (0, 1) or a fact the world lacks is one error
when the spec is read.

A mixture knob is a key of `WorldConfig.mix` (a document kind); its value is the share of
training tokens that kind gets, the other kinds keeping their proportions in the rest.
Unless `[train]` sets them, checkpoints are log-spaced (steps 0, 1, 2, 4, ... and the last:
`ckpt_interval` = the member's steps), validation runs every tenth of the steps
(`eval_interval`), and warmup is the preset's, capped at a tenth of the steps. Members sharing
a mixture share one world corpus.

>>> spec = SweepSpec.from_dict({"preset": "tiny", "axes": {"size": ["2x64x2"], "seed": [0, 1]},
...                             "train": {"steps": 400}})
>>> [m.name for m in spec.members()]
['L2-d64-h2_steps400_seed0', 'L2-d64-h2_steps400_seed1']
>>> spec.members()[0].n_params   # non-embedding parameters: 12 * n_layers * d_model**2 + ...
100096
>>> spec = SweepSpec.from_dict({"axes": {"size": ["1x32x2"], "steps": [20],
...                                      "drop": ["none", "tenth"]},
...                             "drop": {"tenth": {"fraction": 0.1}}})
>>> [m.name for m in spec.members()], spec.members()[1].corpus_id
(['L1-d32-h2_steps20_seed0', 'L1-d32-h2_steps20_drop-tenth_seed0'], 'world_drop-tenth')
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sweep.member import NO_DROP, Member, Size, fmt_value, member_name
from workbench.hints import did_you_mean
from workbench.models.config import PRESETS, TRAIN_PRESETS, ModelConfig, TrainConfig
from workbench.world import WorldConfig, build_world
from workbench.world.labels import DOC_KINDS
from workbench.world.subset import Drop

PRESETS_DIR = Path(__file__).resolve().parents[1] / "datasets" / "sweeps"
TOP_KEYS = ("name", "description", "preset", "axes", "model", "train", "world", "drop")
CORE_AXES = ("size", "steps", "tokens", "seed", "drop")
MIX_AXES = DOC_KINDS
MODEL_KEYS = ("n_ctx", "mlp_ratio", "act_fn", "attn_only")  # the rest come from the axes
WORLD_KEYS = tuple(f.name for f in fields(WorldConfig)) + ("tokens",)
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))
DEFAULT_WORLD_TOKENS = 1_000_000
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # it is part of directory names


def _unknown(where: str, key: str, known: Sequence[str], what: str) -> ValueError:
    return ValueError(f"{where}: unknown {what} {key!r}{did_you_mean(key, known)}; use one of "
                      f"{', '.join(known)}")


def _values(where: str, axis: str, raw: Any) -> list[Any]:
    values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if not values:
        raise ValueError(f"{where}: axis {axis!r} is empty; give at least one value")
    return values


def _share(value: Any) -> Any:
    """A number as a float (TOML's `1` and `1.0` name the same share); anything else as it
    is, for the check to name it."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


MAX_STEPS = 10**8  # `workbench train --steps`
MAX_WORLD_TOKENS = 10**9  # `workbench world build --tokens`
MAX_STEP_BYTES = 2**41  # 2 TiB for one training step: a typo on any machine


def _ints(where: str, axis: str, raw: Any, low: int) -> tuple[int, ...]:
    values = _values(where, axis, raw)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{where}: axis {axis!r} has {v!r}; its values must be integers "
                             f">= {low}")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: axis {axis!r} repeats a value ({values}); list each once")
    return tuple(values)


@dataclass(frozen=True)
class SweepSpec:
    """A family of models: axes (their cartesian product is the members) and shared settings.

    Args:
        name: the sweep's name.
        preset: base model and training settings (`workbench.models.config` preset).
        sizes: model sizes.
        steps: training steps of each member (an axis).
        seeds: training seeds (an axis).
        knobs: world-mixture axes, `(document kind, shares)` in order.
        model: shared `ModelConfig` settings (`n_ctx`, `mlp_ratio`, `act_fn`, `attn_only`).
        train: shared `TrainConfig` settings (not `steps` or `seed`: those are axes).
        world: shared world settings: `WorldConfig` fields and `tokens` (training tokens).
        description: free text.
        drops: the drop axis: rule names or `none` (empty: no axis, every member on its world).
        drop_rules: the rules the drop axis names (`[drop.NAME]` tables).
    """

    name: str
    preset: str
    sizes: tuple[Size, ...]
    steps: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    knobs: tuple[tuple[str, tuple[float, ...]], ...] = ()
    model: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)
    world: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    drops: tuple[str, ...] = ()
    drop_rules: Mapping[str, Drop] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"sweep {self.name!r}"
        if self.preset not in PRESETS:
            raise _unknown(where, self.preset, list(PRESETS), "preset")
        for key in self.model:
            if key not in MODEL_KEYS:
                raise _unknown(f"{where} [model]", key, MODEL_KEYS, "key")
        for key in self.train:
            if key not in TRAIN_KEYS:
                raise _unknown(f"{where} [train]", key, TRAIN_KEYS, "key")
            if key in ("steps", "seed"):
                raise ValueError(f"{where}: [train] {key} is an axis; give it under [axes] "
                                 f"({key} = [...])")
        for key in self.world:
            if key not in WORLD_KEYS:
                raise _unknown(f"{where} [world]", key, WORLD_KEYS, "key")
        if not self.sizes or not self.steps or not self.seeds:
            raise ValueError(f"{where}: the size, steps and seed axes need a value each")
        kinds = [k for k, _ in self.knobs]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"{where}: a mixture knob is given twice ({kinds})")
        for kind, shares in self.knobs:
            if kind not in MIX_AXES:
                raise _unknown(where, kind, CORE_AXES + MIX_AXES, "axis")
            if not shares:
                raise ValueError(f"{where}: axis {kind!r} is empty; give at least one value")
            bad = [s for s in shares if isinstance(s, bool) or not (
                isinstance(s, (int, float)) and 0 <= s <= 1)]
            if bad or len(set(shares)) != len(shares):
                raise ValueError(f"{where}: axis {kind!r} = {list(shares)}; its values are "
                                 "distinct shares of training tokens in [0, 1]")
        if sum(max(s) for _, s in self.knobs) > 1:
            raise ValueError(f"{where}: the largest shares of the mixture knobs {kinds} sum to "
                             "more than 1; lower them")
        self._check_drops(where)
        try:
            members = self.members()  # every config is built (and validated) here
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        self._check_drop_facts(where, members)
        self._check_sizes(where, members)
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{where}: two members would be named {dup[0]} (two tokens values "
                             "give the same steps?); make the axis values distinct")

    def _check_sizes(self, where: str, members: list[Member]) -> None:
        """The caps `workbench world build` and `workbench train` put on the same values, and
        a step's memory under a ceiling no machine has (a typo, refused when planned; the
        memory of the machine that trains is checked by `sweep run`)."""
        from workbench.models.checks import fmt_bytes, train_bytes

        tokens = self.world.get("tokens", DEFAULT_WORLD_TOKENS)
        if isinstance(tokens, bool) or not isinstance(tokens, (int, float)) or not (
                1 <= tokens <= MAX_WORLD_TOKENS) or tokens != int(tokens):
            raise ValueError(f"{where}: [world] tokens = {tokens!r}; pass a whole number of "
                             f"training tokens from 1 to {MAX_WORLD_TOKENS:,} (what `workbench "
                             "world build --tokens` takes)")
        for m in members:
            if m.steps > MAX_STEPS:
                raise ValueError(f"{where}: member {m.name} trains {m.steps:,} steps; at most "
                                 f"{MAX_STEPS:,} (what `workbench train --steps` takes): lower "
                                 "the steps or tokens axis")
            need = train_bytes(m.model, m.train.batch_size)
            if need > MAX_STEP_BYTES:
                raise ValueError(f"{where}: member {m.name} needs about {fmt_bytes(need)} of "
                                 f"memory per training step ([train] batch_size = "
                                 f"{m.train.batch_size:,}, size {m.size.text}); lower "
                                 "[train] batch_size or the size axis")

    def _check_drops(self, where: str) -> None:
        names = list(self.drop_rules)
        for name, rule in self.drop_rules.items():
            if name == NO_DROP or not _RULE_NAME.match(name):
                raise ValueError(f"{where}: [drop.{name}]: a rule's name is letters, digits, "
                                 "'_', '-' or '.' (and not 'none'); rename it")
            if not isinstance(rule, Drop):
                raise ValueError(f"{where}: [drop.{name}] is not a drop rule")
        if names and not self.drops:
            raise ValueError(f"{where}: [drop.{names[0]}] is defined but there is no drop "
                             f"axis; add [axes] drop = [\"none\", \"{names[0]}\"]")
        for value in self.drops:
            if value != NO_DROP and value not in self.drop_rules:
                hint = did_you_mean(str(value), names)
                raise ValueError(f"{where}: axis 'drop' names {value!r}{hint}, which no "
                                 f"[drop.{value}] table defines; define it or use one of "
                                 f"{', '.join([NO_DROP, *names])}")
        if len(set(self.drops)) != len(self.drops):
            raise ValueError(f"{where}: axis 'drop' repeats a value ({list(self.drops)}); list "
                             "each once")
        unused = [n for n in names if n not in self.drops]
        if unused:
            raise ValueError(f"{where}: [drop.{unused[0]}] is defined but the drop axis does "
                             "not list it; add it to [axes] drop or remove the table")

    def _check_drop_facts(self, where: str, members: list[Member]) -> None:
        """Every fact of a facts rule names a stated fact of the member's world (the world's
        people are built, not its corpus: instant)."""
        seen: set[tuple[str, str]] = set()
        worlds: dict[str, Any] = {}  # one build per world, however many rules read it
        for m in members:
            rule = m.drop_rule
            if rule is None or rule.kind != "facts" or (m.world_id, m.drop) in seen:
                continue
            seen.add((m.world_id, m.drop))
            if m.world_id not in worlds:
                worlds[m.world_id] = build_world(m.world)
            try:
                rule.resolve_facts(worlds[m.world_id])
            except ValueError as exc:
                raise ValueError(f"{where}: [drop.{m.drop}]: "
                                 f"{str(exc).removeprefix('drop rule: ')}") from exc

    # -- resolution -----------------------------------------------------------------------
    def base_world(self) -> WorldConfig:
        """The world config every member starts from (before its mixture knobs)."""
        return WorldConfig(**{k: v for k, v in self.world.items() if k != "tokens"})

    @property
    def world_tokens(self) -> int:
        return int(self.world.get("tokens", DEFAULT_WORLD_TOKENS))

    def _model(self, size: Size, seed: int) -> ModelConfig:
        base = PRESETS[self.preset]
        shared = {k: v for k, v in self.model.items() if k != "mlp_ratio"}
        ratio = self.model.get("mlp_ratio", base.d_mlp / base.d_model)
        return base.replace(n_layers=size.n_layers, d_model=size.d_model, n_heads=size.n_heads,
                            d_head=size.d_model // size.n_heads,
                            d_mlp=max(1, round(ratio * size.d_model)), seed=seed, **shared)

    def _train(self, steps: int, seed: int) -> TrainConfig:
        shared = dict(self.train)
        shared.setdefault("ckpt_interval", steps)  # log-spaced checkpoints and the last
        shared.setdefault("eval_interval", max(1, steps // 10))
        shared.setdefault("warmup_steps", min(TRAIN_PRESETS[self.preset].warmup_steps,
                                              max(0, steps // 10)))
        fields_ = {**asdict(TRAIN_PRESETS[self.preset]), **shared, "steps": steps, "seed": seed}
        return TrainConfig(**fields_)

    def _world(self, knobs: tuple[tuple[str, float], ...]) -> tuple[str, WorldConfig]:
        base = self.base_world()
        if not knobs:
            return "world", base
        mix = base.mix_normalised
        fixed = dict(knobs)
        rest = sum(v for k, v in mix.items() if k not in fixed)
        left = 1.0 - sum(fixed.values())
        new = {k: (v * left / rest if rest > 0 else 0.0) for k, v in mix.items()
               if k not in fixed}
        new.update(fixed)
        world_id = "world" + "".join(f"_{k}{fmt_value(v)}" for k, v in knobs)
        return world_id, WorldConfig(**{**base.to_dict(), "mix": new})

    def members(self) -> list[Member]:
        """The members in run order: sizes, then steps, knobs, drops and seeds, as listed."""
        out = []
        knob_axes = [[(k, v) for v in shares] for k, shares in self.knobs]
        for size, steps, *knobs, drop, seed in itertools.product(
                self.sizes, self.steps, *knob_axes, self.drops or (NO_DROP,), self.seeds):
            knobs_t = tuple(knobs)
            world_id, world = self._world(knobs_t)
            name = member_name(size, steps, knobs_t, seed, drop)
            out.append(Member(name, size, steps, seed, knobs_t, self._model(size, seed),
                              self._train(steps, seed), world_id, world, self.world_tokens,
                              drop, self.drop_rules.get(drop)))
        return out

    def worlds(self) -> dict[str, tuple[WorldConfig, int]]:
        """The distinct worlds of the members: id -> (config, training tokens)."""
        return {m.world_id: (m.world, m.world_tokens) for m in self.members()}

    def corpora(self) -> dict[str, tuple[str, str, Drop | None]]:
        """Every corpus the plan builds: id -> (its world, drop name, rule); a world is its own
        corpus (`none`, None), a subset follows its world (`world_drop-NAME`)."""
        out: dict[str, tuple[str, str, Drop | None]] = {}
        for m in self.members():
            out.setdefault(m.world_id, (m.world_id, NO_DROP, None))
            out.setdefault(m.corpus_id, (m.world_id, m.drop, m.drop_rule))
        return out

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The resolved spec (what `sweep_spec.json` holds); `from_dict` reads it back. The
        drop axis and its rules appear only when the spec has them."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "preset": self.preset,
            "axes": {"size": [s.text for s in self.sizes], "steps": list(self.steps),
                     "seed": list(self.seeds), **{k: list(v) for k, v in self.knobs}},
            "model": dict(self.model),
            "train": dict(self.train),
            "world": dict(self.world),
        }
        if self.drops:
            out["axes"]["drop"] = list(self.drops)
            out["drop"] = {name: rule.to_dict() for name, rule in self.drop_rules.items()}
        return out

    def identity(self) -> dict[str, Any]:
        """What makes two plans the same: everything but the name and description."""
        return {k: v for k, v in self.to_dict().items() if k not in ("name", "description")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "spec") -> SweepSpec:
        """A spec from the tables of a spec file.

        Raises:
            ValueError: an unknown key, axis or preset, an empty axis, a bad size (one error,
                naming the value and the fix).
        """
        where = f"{source}"
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: a spec is a table of {', '.join(TOP_KEYS)}")
        for key in data:
            if key not in TOP_KEYS:
                raise _unknown(where, key, TOP_KEYS, "key")
        tables = {}
        for key in ("axes", "model", "train", "world"):
            table = data.get(key, {})
            if not isinstance(table, Mapping):
                raise ValueError(f"{where}: {key} must be a table ([{key}] in TOML)")
            tables[key] = dict(table)
        axes, train = tables["axes"], tables["train"]
        for key in axes:
            if key not in CORE_AXES + MIX_AXES:
                raise _unknown(where, key, CORE_AXES + MIX_AXES, "axis")
        drops, rules = _drop_axis(where, axes.get("drop"), data.get("drop", {}))
        preset = data.get("preset", "tiny")
        if not isinstance(preset, str) or preset not in PRESETS:
            raise _unknown(where, str(preset), list(PRESETS), "preset")
        if "size" not in axes:
            raise ValueError(f"{where}: no size axis; add [axes] size = [\"2x64x2\", ...] "
                             "(n_layers x d_model x n_heads)")
        sizes = tuple(Size.parse(v) for v in _values(where, "size", axes["size"]))
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"{where}: axis 'size' repeats a value; list each size once")
        for key in ("steps", "seed"):
            if key in axes and key in train:
                raise ValueError(f"{where}: {key} is both an axis and a [train] key; give it "
                                 "in one place")
        if "steps" in axes and "tokens" in axes:
            raise ValueError(f"{where}: give the steps axis or the tokens axis, not both")
        try:
            base = TrainConfig(**{**asdict(TRAIN_PRESETS[preset]),
                                  **{k: v for k, v in train.items() if k in TRAIN_KEYS}})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where} [train]: {exc}") from exc
        if "tokens" in axes:
            n_ctx = tables["model"].get("n_ctx", PRESETS[preset].n_ctx)
            per_step = base.batch_size * n_ctx
            tokens = _ints(where, "tokens", axes["tokens"], 1)
            steps = tuple(math.ceil(t / per_step) for t in tokens)
        else:
            steps = _ints(where, "steps", axes.get("steps", train.pop("steps", base.steps)), 1)
        seeds = _ints(where, "seed", axes.get("seed", train.pop("seed", 0)), 0)
        knobs = tuple((k, tuple(_share(x) for x in _values(where, k, v)))
                      for k, v in axes.items() if k in MIX_AXES)
        name = data.get("name", Path(source).stem if source != "spec" else "sweep")
        return cls(name=str(name), preset=preset, sizes=sizes, steps=steps, seeds=seeds,
                   knobs=knobs, model=tables["model"], train=train, world=tables["world"],
                   description=str(data.get("description", "")), drops=drops,
                   drop_rules=rules)


def _drop_axis(where: str, axis: Any, tables: Any) -> tuple[tuple[str, ...], dict[str, Drop]]:
    """The drop axis's values and the `[drop.NAME]` rules (checked against each other in
    `SweepSpec`)."""
    if not isinstance(tables, Mapping):
        raise ValueError(f"{where}: drop must be tables of rules ([drop.NAME] in TOML)")
    rules = {str(name): Drop.from_dict(table, where=f"{where} [drop.{name}]")
             for name, table in tables.items()}
    if axis is None:
        return (), rules
    values = _values(where, "drop", axis)
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"{where}: axis 'drop' has {v!r}; its values are rule names "
                             f"([drop.NAME] tables) or \"{NO_DROP}\"")
    return tuple(values), rules


def resolve_spec_path(spec: str) -> Path:
    """A spec file: `spec` itself when it is a file, else the preset `datasets/sweeps/SPEC.toml`.

    Raises:
        FileNotFoundError: neither exists (naming the presets).
    """
    path = Path(spec)
    if path.is_file():
        return path
    for ext in (".toml", ".json"):
        preset = PRESETS_DIR / f"{spec}{ext}"
        if preset.is_file() and "/" not in spec:
            return preset
    names = sorted(p.stem for p in PRESETS_DIR.glob("*.toml")) if PRESETS_DIR.is_dir() else []
    raise FileNotFoundError(f"sweep spec {spec!r} is neither a file nor a preset; pass a .toml "
                            f"or .json file or one of the presets {', '.join(names)}")


def load_spec(spec: str | Path) -> SweepSpec:
    """Read a spec file (TOML or JSON) or a preset name (`micro`, `cpu`, `emergence`, `gpu`).

    Raises:
        FileNotFoundError: no such file or preset.
        ValueError: the file does not parse, or the spec is invalid (see `SweepSpec.from_dict`).
    """
    path = resolve_spec_path(str(spec))
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = _toml(path, text)
    except ValueError as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"sweep spec {path} does not parse: {exc}; fix the file") from exc
    if isinstance(data, Mapping) and "spec" in data and "schema" in data:
        data = data["spec"]  # a plan's sweep_spec.json
    return SweepSpec.from_dict(data, source=str(path))


def _toml(path: Path, text: str) -> Any:
    try:
        import tomllib
    except ImportError as exc:  # Python 3.10
        raise ValueError(f"sweep spec {path}: reading TOML needs Python >= 3.11; use Python "
                         "3.11 or write the spec as JSON (the same tables)") from exc
    return tomllib.loads(text)
