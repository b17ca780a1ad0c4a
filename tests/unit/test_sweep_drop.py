"""The sweep spec's drop axis: members on subsets of their world, named by `[drop.NAME]`
rules; members without a drop unchanged; the subset corpora built beside the worlds; one
clear error per bad rule; `sweep.json`'s laws read the members without a drop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sweep.laws import drop_pairs, loss_laws
from sweep.plan import SPEC_FILE, load_plan, member_record, plan_sweep
from sweep.run import ensure_world
from sweep.spec import SweepSpec
from workbench.world import WorldConfig, build_world, load_corpus
from workbench.world.subset import dropped_docs

WORLD = {"tokens": 5000, "n_people": 4}
PERSON = build_world(WorldConfig(n_people=4)).people[1].name


def spec(axes: dict[str, Any] | None = None, drop: dict[str, Any] | None = None,
         **world: Any) -> SweepSpec:
    data: dict[str, Any] = {"preset": "tiny",
                            "axes": {"size": ["1x32x2", "2x64x2"], "steps": [40], **(axes or {})},
                            "model": {"n_ctx": 32}, "train": {"batch_size": 4},
                            "world": {**WORLD, **world}}
    if drop is not None:
        data["drop"] = drop
    return SweepSpec.from_dict(data, source="test.toml")


RULES = {"who": {"facts": [f"{PERSON}:city"]}, "tenth": {"fraction": 0.1, "seed": 1}}


def test_drop_members_are_named_and_the_rest_unchanged() -> None:
    s = spec({"drop": ["none", "who", "tenth"], "seed": [0, 1]}, RULES)
    names = [m.name for m in s.members()]
    assert names[:6] == ["L1-d32-h2_steps40_seed0", "L1-d32-h2_steps40_seed1",
                         "L1-d32-h2_steps40_drop-who_seed0", "L1-d32-h2_steps40_drop-who_seed1",
                         "L1-d32-h2_steps40_drop-tenth_seed0",
                         "L1-d32-h2_steps40_drop-tenth_seed1"]
    plain = {m.name: member_record(m) for m in spec({"seed": [0, 1]}).members()}
    for m in s.members():
        if m.drop == "none":
            assert member_record(m) == plain[m.name] and m.corpus_id == "world"
        else:
            record = member_record(m)
            assert record["axes"]["drop"] == m.drop
            assert record["world"]["drop"] == {"name": m.drop, "corpus": f"world_drop-{m.drop}",
                                               "rule": RULES[m.drop]}
    assert list(s.worlds()) == ["world"]
    assert list(s.corpora()) == ["world", "world_drop-who", "world_drop-tenth"]
    again = SweepSpec.from_dict(s.to_dict())
    assert [member_record(m) for m in again.members()] == [member_record(m)
                                                           for m in s.members()]
    assert "drop" not in spec().to_dict() and "drop" not in spec().to_dict()["axes"]
    with_knob = spec({"drop": ["who"], "repeat_words": [0.2]}, {"who": RULES["who"]})
    assert with_knob.members()[0].name == "L1-d32-h2_steps40_repeat_words0.2_drop-who_seed0"
    assert with_knob.members()[0].corpus_id == "world_repeat_words0.2_drop-who"


@pytest.mark.parametrize("axes, drop, message", [
    ({"drop": ["none", "whom"]}, RULES, r"axis 'drop' names 'whom' \(did you mean 'who'\?\), "
                                        r"which no \[drop.whom\] table defines"),
    ({"drop": ["none", "who"]}, {"who": {}}, r"\[drop.who\]: drop rule is empty"),
    ({"drop": ["x"]}, {"x": {"fraction": 1.5}}, r"\[drop.x\]: fraction 1.5 is not in \(0, 1\)"),
    ({"drop": ["x"]}, {"x": {"facts": ["nobody here:city"]}},
     r"\[drop.x\]: fact 'nobody here:city': the world has no person 'nobody here'"),
    ({"drop": ["x"]}, {"x": {"facts": ["9:city"]}}, "the world has no person 9 \\(ids 0-3\\)"),
    ({}, {"who": RULES["who"]}, r"\[drop.who\] is defined but there is no drop axis"),
    ({"drop": ["who"]}, RULES, r"\[drop.tenth\] is defined but the drop axis does not list it"),
    ({"drop": ["none", "none"]}, {}, "axis 'drop' repeats a value"),
    ({"drop": [1]}, {}, "axis 'drop' has 1; its values are rule names"),
    ({"drop": ["a b"]}, {"a b": {"fraction": 0.5}}, r"\[drop.a b\]: a rule's name is letters"),
    ({"drop": ["none"]}, {"none": {"fraction": 0.5}}, r"\[drop.none\]: a rule's name"),
    ({"drop": ["x"]}, {"x": {"facts": ["0:city"], "docs": [1]}}, "gives facts and docs"),
])
def test_bad_drop_axes_are_one_clear_error(axes: dict, drop: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(axes, drop)


def test_plan_builds_each_world_with_its_subsets(tmp_path: Path) -> None:
    s = spec({"drop": ["none", "who", "tenth"]}, RULES)
    plan = plan_sweep(s, tmp_path / "p").plan
    record = json.loads((tmp_path / "p" / SPEC_FILE).read_text())
    assert record["subsets"]["world_drop-who"] == {"world": "world", "drop": "who",
                                                   "rule": RULES["who"]}
    assert load_plan(tmp_path / "p").spec.identity() == s.identity()
    who = plan.members()[1]
    path, built = ensure_world(plan, who.corpus_id)
    assert built and path == plan.world_dir("world_drop-who")
    assert not plan.world_dir("world_drop-tenth").exists()  # only what was asked for
    base = load_corpus(plan.world_dir("world"))
    sub = load_corpus(path)
    row = sub.manifest["subset"]["facts"][0]["row"]
    assert np.array_equal(dropped_docs(sub),
                          np.flatnonzero(base.doc_facts("train").mentioning([row])))
    assert not sub.doc_facts("train").mentioning([row]).any()
    assert ensure_world(plan, "world") == (plan.world_dir("world"), True)  # builds tenth
    assert load_corpus(plan.world_dir("world_drop-tenth")).manifest["subset"]["name"] == "tenth"
    assert ensure_world(plan, "world_drop-who") == (path, False)
    with pytest.raises(ValueError, match="has no world 'world_drop-whom'; its worlds: world, "
                                         "world_drop-who, world_drop-tenth"):
        ensure_world(plan, "world_drop-whom")
    # another rule under the same name: the plan's overwrite deletes the stale subset
    changed = spec({"drop": ["none", "who", "tenth"]}, {**RULES, "tenth": {"fraction": 0.2}})
    outcome = plan_sweep(changed, tmp_path / "p", overwrite=True)
    assert "worlds/world_drop-tenth" in outcome.removed
    assert "worlds/world_drop-who" not in outcome.removed and "worlds/world" not in \
        outcome.removed
    assert ensure_world(outcome.plan, "world_drop-tenth")[1]


def test_laws_read_the_members_without_a_drop() -> None:
    def entry(name: str, n: int, loss: float, drop: str = "none") -> dict[str, Any]:
        return {"name": name, "n_params": n, "tokens": 1000, "steps": 10, "seed": 0,
                "knobs": {}, "drop": drop, "finished": True, "final_loss": loss,
                "checkpoints": []}

    members = [entry("a", 1000, 4.0), entry("a-d", 1000, 9.0, "who"),
               entry("b", 4000, 3.0), entry("b-d", 4000, 9.5, "who"),
               entry("c", 16000, 2.25), entry("e-d", 64000, 1.0, "who")]
    laws = loss_laws(members)
    assert laws["N"]["n"] == 3
    assert drop_pairs(members) == {"who": [
        {"member": "a-d", "baseline": "a", "final_loss": 9.0, "baseline_loss": 4.0},
        {"member": "b-d", "baseline": "b", "final_loss": 9.5, "baseline_loss": 3.0},
        {"member": "e-d", "baseline": None, "final_loss": 1.0, "baseline_loss": None}]}
