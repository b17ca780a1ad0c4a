"""`sweep.json`: the laws and the emergence verdicts of a sweep (schema `workbench.sweep/1`).

```
{"schema": "workbench.sweep/1", "name", "spec", "battery" (its settings),
 "members": [{"name", "n_params" (N), "tokens" (D), "compute" (C = 6ND), "steps", "seed",
              "knobs" {kind: share}, "drop" (its drop rule's name, `none` for the whole
              world), "run" (its run directory, relative to the sweep's),
              "finished", "final_loss" (the trainer's validation loss at
              the last step), "curve" {"step", "loss", "val_step", "val_loss"} (metrics.jsonl),
              "checkpoints": [{"step", "val_loss", "abilities"}] (the battery)}],
 "left_out": [members without a checkpoint],
 "laws": {"N"|"D"|"C": PowerLaw.to_dict() (a, alpha, e, r2, ci, n), "joint":
          JointLaw.to_dict() when N and D each take >= 2 values; "note" when none fits},
 "abilities": {name: {"discrete"|"continuous": {"name", "chance", "ceiling",
               "N": {"x", "y", "verdict", "scale", "reason"}, "C": {...}}}},
 "differ": {"N": [abilities whose two verdicts differ against N], "C": [...],
            "statement": one sentence (names them, or says that none does)},
 "knobs": {kind: {"x": shares, "members", "abilities": {name: {"discrete", "continuous"}},
           "induction_step": [first step with an induction head, or None, per share]}},
 "drops": {name: [{"member", "baseline" (the member alike but for the drop, at the drop
           axis's first value), "final_loss", "baseline_loss"}]} (a spec with a drop axis)}
```

Curves against N use the finished members at the largest `steps` (mixture knobs at their
first value; seeds averaged); against C every finished member (knobs at their first value,
seeds averaged). Laws, curves and knob curves read the members at the drop axis's first
value (`none` when a spec has no drop axis); `drops` pairs each other member with its
baseline. A verdict needs `EmergenceConfig.min_points` scales; fewer, or an ability
not measured, gives the verdict `too few scales` / `not measured` with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from sweep.emergence import EmergenceConfig, emergence
from sweep.fit import FitConfig, fit_loss_laws
from sweep.member import NO_DROP, Member
from sweep.plan import RUN_DIR

SCHEMA = "workbench.sweep/1"
REPORT_FILE = "sweep.json"
METRICS = ("discrete", "continuous")
SCALES = ("N", "C")
INDUCTION = "induction_heads"
DEFAULT_FIT = FitConfig()
DEFAULT_EMERGENCE = EmergenceConfig()


def member_entry(member: Member, checkpoints: list[dict[str, Any]],
                 curve: dict[str, list[float]], finished: bool) -> dict[str, Any]:
    """One member's record in `sweep.json` (see the module docstring)."""
    last = checkpoints[-1] if checkpoints else {}
    final = None
    if finished and curve.get("val_step") and curve["val_step"][-1] == member.steps:
        final = curve["val_loss"][-1]  # the trainer's validation loss
    elif finished:
        final = last.get("val_loss")  # the battery's (fewer windows)
    return {"name": member.name, "n_params": member.n_params, "tokens": member.tokens,
            "compute": member.compute, "steps": member.steps, "seed": member.seed,
            "knobs": dict(member.knobs), "drop": member.drop,
            "run": f"{member.name}/{RUN_DIR}",
            "finished": finished,
            "final_loss": final, "curve": curve,
            "checkpoints": checkpoints}


def _final(m: dict[str, Any]) -> dict[str, Any]:
    return m["checkpoints"][-1]["abilities"] if m["checkpoints"] else {}


def _at_first_drop(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The members at the first member's drop (entries without one are on the whole world)."""
    first = members[0].get("drop", NO_DROP) if members else NO_DROP
    return [m for m in members if m.get("drop", NO_DROP) == first]


def drop_pairs(members: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per drop rule: each finished member trained without those documents beside its
    baseline, the finished member alike in all but the drop, at the drop axis's first value
    (seeds paired, not averaged)."""
    def alike(m: dict[str, Any]) -> tuple[Any, ...]:
        return m["n_params"], m["steps"], tuple(sorted(m["knobs"].items())), m["seed"]

    done = [m for m in members if m["finished"]]
    base = _at_first_drop(done)
    baselines = {alike(m): m for m in base}
    names = {b["name"] for b in base}
    out: dict[str, list[dict[str, Any]]] = {}
    for m in done:
        if m["name"] in names:
            continue
        b = baselines.get(alike(m))
        out.setdefault(m.get("drop", NO_DROP), []).append(
            {"member": m["name"], "baseline": None if b is None else b["name"],
             "final_loss": m["final_loss"], "baseline_loss": None if b is None
             else b["final_loss"]})
    return out


def _first_knobs(members: list[dict[str, Any]]) -> dict[str, float]:
    return {k: v for k, v in (members[0]["knobs"].items() if members else ())}


def _at_knobs(members: list[dict[str, Any]], knobs: dict[str, float],
              free: str | None = None) -> list[dict[str, Any]]:
    return [m for m in members
            if all(m["knobs"].get(k) == v for k, v in knobs.items() if k != free)]


def _mean_by(members: list[dict[str, Any]], x_key: str, value: Any
             ) -> tuple[list[float], list[float | None]]:
    """x ascending and the mean of `value(member)` over the members sharing an x (None when
    any of them has no value)."""
    groups: dict[float, list[float | None]] = defaultdict(list)
    for m in members:
        groups[float(m[x_key])].append(value(m))
    xs = sorted(groups)
    ys = [None if any(v is None for v in groups[x]) else float(np.mean(groups[x]))
          for x in xs]
    return xs, ys


def _verdict(xs: list[float], ys: list[float | None], chance: float, ceiling: float,
             cfg: EmergenceConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"x": xs, "y": ys}
    if any(y is None for y in ys) or not ys:
        return out | {"verdict": "not measured", "scale": None,
                      "reason": "not measured on every member"}
    if len(xs) < cfg.min_points:
        return out | {"verdict": "too few scales", "scale": None,
                      "reason": f"{len(xs)} scale(s); a verdict needs {cfg.min_points}"}
    e = emergence(xs, [float(y) for y in ys if y is not None], chance, ceiling=ceiling, cfg=cfg)
    return out | {"verdict": e.verdict, "scale": e.scale, "reason": e.reason}


def _metric_info(members: list[dict[str, Any]], name: str, metric: str) -> dict[str, Any]:
    recs = [_final(m)[name][metric] for m in members if name in _final(m)]
    if not recs:
        return {"name": None, "chance": 0.0, "ceiling": 1.0}
    ceiling = float(np.mean([r["ceiling"] for r in recs]))
    chance = float(np.mean([r["chance"] for r in recs]))
    if ceiling == chance:  # a degenerate ceiling (e.g. the ICL score's at step 0)
        ceiling = chance + 1.0
    return {"name": recs[0]["name"], "chance": chance, "ceiling": ceiling}


def _value(name: str, metric: str) -> Any:
    def get(m: dict[str, Any]) -> float | None:
        rec = _final(m).get(name)
        return None if rec is None else rec[metric]["value"]
    return get


def ability_curves(members: list[dict[str, Any]], names: Sequence[str],
                   cfg: EmergenceConfig = DEFAULT_EMERGENCE) -> dict[str, Any]:
    """Every ability's curves against N and C with a verdict per metric."""
    done = _at_first_drop([m for m in members if m["finished"]])
    base = _at_knobs(done, _first_knobs(done))
    most = max((m["steps"] for m in base), default=0)
    by = {"N": ([m for m in base if m["steps"] == most], "n_params"), "C": (base, "compute")}
    out: dict[str, Any] = {}
    for name in names:
        rec: dict[str, Any] = {}
        for metric in METRICS:
            info = _metric_info(done, name, metric)
            for scale, (group, key) in by.items():
                xs, ys = _mean_by(group, key, _value(name, metric))
                info[scale] = _verdict(xs, ys, info["chance"], info["ceiling"], cfg)
            rec[metric] = info
        out[name] = rec
    return out


def differing(abilities: dict[str, Any]) -> dict[str, Any]:
    """The abilities whose discrete and continuous verdicts differ, per scale."""
    out: dict[str, Any] = {}
    for scale in SCALES:
        out[scale] = [name for name, a in abilities.items()
                      if a["discrete"][scale]["verdict"] != a["continuous"][scale]["verdict"]
                      and "not measured" not in (a["discrete"][scale]["verdict"],
                                                 a["continuous"][scale]["verdict"])
                      and a["discrete"][scale]["verdict"] != "too few scales"]
    named = sorted(set(out["N"]) | set(out["C"]))
    if named:
        parts = [f"{n} ({a['discrete']['N']['verdict']} by {a['discrete']['name']}, "
                 f"{a['continuous']['N']['verdict']} by {a['continuous']['name']} against N)"
                 for n in named for a in (abilities[n],)]
        out["statement"] = ("the verdict differs between the discontinuous and the "
                            "continuous metric for: " + "; ".join(parts))
    else:
        out["statement"] = ("on this sweep no ability's verdict differs between its "
                            "discontinuous and its continuous metric")
    return out


def induction_step(member: dict[str, Any], threshold_ability: str = INDUCTION) -> int | None:
    """The first checkpoint step at which the member has an induction head (the discrete
    metric of `induction_heads` is 1), or None."""
    for ck in member["checkpoints"]:
        rec = ck["abilities"].get(threshold_ability)
        if rec is not None and rec["discrete"]["value"] == 1.0:
            return int(ck["step"])
    return None


def knob_curves(members: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Per mixture knob: each ability (final checkpoint) against the knob's share, at the
    largest size and steps and the other knobs' first values (seeds averaged), and the step
    at which induction heads form."""
    done = _at_first_drop([m for m in members if m["finished"]])
    if not done or not done[0]["knobs"]:
        return {}
    out: dict[str, Any] = {}
    first = _first_knobs(done)
    for kind in first:
        group = _at_knobs(done, first, free=kind)
        big = max(m["n_params"] for m in group)
        most = max(m["steps"] for m in group if m["n_params"] == big)
        group = [m for m in group if m["n_params"] == big and m["steps"] == most]
        for m in group:
            m["_knob"] = m["knobs"][kind]
        xs, _ = _mean_by(group, "_knob", lambda m: 0.0)
        rec: dict[str, Any] = {"x": xs, "members": [m["name"] for m in group],
                               "abilities": {}}
        for name in names:
            rec["abilities"][name] = {metric: _mean_by(group, "_knob", _value(name, metric))[1]
                                      for metric in METRICS}
        steps = defaultdict(list)
        for m in group:
            steps[m["_knob"]].append(induction_step(m))
        rec["induction_step"] = [min((s for s in steps[x] if s is not None), default=None)
                                 for x in xs]
        for m in group:
            del m["_knob"]
        out[kind] = rec
    return out


def loss_laws(members: list[dict[str, Any]], cfg: FitConfig = DEFAULT_FIT) -> dict[str, Any]:
    """Power laws of the finished members' final validation loss against N, D and C (and the
    joint law when N and D both vary), at the mixture knobs' first values."""
    done = [m for m in members if m["finished"] and m["final_loss"] is not None]
    done = _at_first_drop(done)
    done = _at_knobs(done, _first_knobs(done))
    if not done:
        return {"note": "no finished member"}
    try:
        laws = fit_loss_laws([m["n_params"] for m in done], [m["tokens"] for m in done],
                             [m["final_loss"] for m in done], cfg=cfg)
    except ValueError as exc:
        return {"note": str(exc)}
    out: dict[str, Any] = {k: v.to_dict() for k, v in laws.items()}
    if not out:
        out["note"] = (f"{len(done)} finished member(s) with "
                       f"{len({m['n_params'] for m in done})} distinct N: too few for a law")
    return out


def build_report(name: str, spec: dict[str, Any], members: list[dict[str, Any]],
                 battery: dict[str, Any], *, left_out: Sequence[str] = (),
                 fit: FitConfig = DEFAULT_FIT,
                 emergence_cfg: EmergenceConfig = DEFAULT_EMERGENCE) -> dict[str, Any]:
    """`sweep.json` from the members' entries (`member_entry`)."""
    names = list(dict.fromkeys(a for m in members for ck in m["checkpoints"]
                               for a in ck["abilities"]))
    abilities = ability_curves(members, names, emergence_cfg)
    return {"schema": SCHEMA, "name": name, "spec": spec, "battery": battery,
            "members": members, "left_out": list(left_out), "laws": loss_laws(members, fit),
            "abilities": abilities, "differ": differing(abilities),
            "knobs": knob_curves(members, names),
            **({"drops": drop_pairs(members)} if any(m.get("drop", NO_DROP) != NO_DROP
                                                     for m in members) else {})}


def validate_report(report: Any) -> None:
    """Check the shape of a `workbench.sweep/1` report.

    Raises:
        ValueError: naming the first key that is missing or of the wrong type.
    """
    def need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise ValueError(f"sweep report: {where} has no {key!r}")
        if not isinstance(obj[key], kind):
            raise ValueError(f"sweep report: {where}.{key} is {type(obj[key]).__name__}")
        return obj[key]

    if need(report, "schema", str, "report") != SCHEMA:
        raise ValueError(f"sweep report: schema {report['schema']!r}, expected {SCHEMA!r}")
    for key in ("members", "left_out"):
        need(report, key, list, "report")
    for m in report["members"]:
        for key, kind in (("name", str), ("n_params", int), ("tokens", int),
                          ("compute", float), ("curve", dict), ("checkpoints", list),
                          ("finished", bool)):
            need(m, key, kind, f"member {m.get('name')}")
        need(m, "final_loss", (float, type(None)), f"member {m['name']}")
    need(report, "laws", dict, "report")
    for key, law in report["laws"].items():
        if key != "note":
            for field in ("r2", "ci", "n"):
                need(law, field, (float, dict, int), f"laws.{key}")
    for name, a in need(report, "abilities", dict, "report").items():
        for metric in METRICS:
            rec = need(a, metric, dict, f"abilities.{name}")
            for scale in SCALES:
                curve = need(rec, scale, dict, f"abilities.{name}.{metric}")
                need(curve, "verdict", str, f"abilities.{name}.{metric}.{scale}")
                need(curve, "x", list, f"abilities.{name}.{metric}.{scale}")
    differ = need(report, "differ", dict, "report")
    need(differ, "statement", str, "differ")
    for scale in SCALES:
        need(differ, scale, list, "differ")
    need(report, "knobs", dict, "report")
