"""A sweep with a drop axis end to end: a two-member spec (`drop = ["none", "who"]`, the rule
naming one fact) planned, trained 20 steps each and analyzed with a small battery. The
dropped member trains on `worlds/world_drop-who`, which holds none of the documents stating
the fact; its manifest lists them, and the tokens it lost are theirs. About 7 s on one
thread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sweep.analyze import AnalyzeConfig, analyze_sweep
from sweep.battery import ABILITIES, BatteryConfig
from sweep.laws import validate_report
from sweep.member import Member
from sweep.plan import load_plan, member_state, plan_sweep
from sweep.run import SweepRunConfig, run_sweep
from sweep.spec import load_spec
from workbench.layout import RUN_JSON
from workbench.world import WorldConfig, build_world, load_corpus
from workbench.world.facts import RELATIONS
from workbench.world.subset import dropped_docs

WORLD = WorldConfig(seed=0, n_people=12, exposure_ratio=10.0)
SPEC = """
name = "drop"
preset = "tiny"

[axes]
size = ["1x32x2"]
steps = [20]
drop = ["none", "who"]

[drop.who]
facts = ["{fact}"]

[model]
n_ctx = 32

[train]
batch_size = 8
lr = 3e-3
eval_windows = 4

[world]
seed = 0
tokens = 20000
n_people = 12
exposure_ratio = 10.0
"""
SMALL = BatteryConfig(windows=4, fact_items=16, agreement_items=16, fewshot_items=2,
                      repeat_seqs=4, skip=tuple(a for a in ABILITIES if a not in (
                          "next_token", "facts", "agreement")))


def test_a_member_trained_without_the_documents_stating_a_fact(tmp_path: Path,
                                                               one_thread: None) -> None:
    world = build_world(WORLD)
    most = max(range(len(world.people)), key=lambda i: world.people[i].exposure)
    fact = f"{world.people[most].name}:city"
    (tmp_path / "drop.toml").write_text(SPEC.format(fact=fact))
    plan = plan_sweep(load_spec(tmp_path / "drop.toml"), tmp_path / "plan").plan
    full, dropped = plan.members()
    assert (full.name, dropped.name) == ("L1-d32-h2_steps20_seed0",
                                         "L1-d32-h2_steps20_drop-who_seed0")

    results = run_sweep(load_plan(plan.root), SweepRunConfig(device="cpu", progress=False))
    assert [r.status for r in results] == ["trained", "trained"]
    assert [member_state(plan, m) for m in plan.members()] == ["done", "done"]
    sub_dir = plan.world_dir("world_drop-who")
    def corpus_of(member: Member) -> Path:
        return Path(json.loads((plan.run_dir(member) / RUN_JSON).read_text())["corpus"])

    assert corpus_of(dropped) == sub_dir.resolve()
    assert corpus_of(full) == plan.world_dir("world").resolve()

    base, sub = load_corpus(plan.world_dir("world")), load_corpus(sub_dir)
    row = most * len(RELATIONS) + RELATIONS.index("city")  # the fact table's order
    assert base.fact_table()[row]["subject"] == world.people[most].name
    stating = np.flatnonzero(base.doc_facts("train").mentioning([row]))
    assert stating.size > 0
    assert not sub.doc_facts("train").mentioning([row]).any()
    assert np.array_equal(dropped_docs(sub), stating)
    record = sub.manifest["subset"]
    assert record["facts"] == [{"row": row, "person": most, "subject": world.people[most].name,
                                "relation": "city"}]
    docs = base.docs("train")
    lost = int((docs[stating, 1] - docs[stating, 0]).sum())
    assert record["removed"] == {"n_docs": int(stating.size), "n_tokens": lost}
    assert len(sub.tokens("train")) == len(base.tokens("train")) - lost
    assert record["base"]["n_tokens"] == len(base.tokens("train"))

    report = analyze_sweep(plan, AnalyzeConfig(battery=SMALL, progress=False),
                           log=lambda line: None)
    validate_report(report)
    assert [m["drop"] for m in report["members"]] == ["none", "who"]
    pair = report["drops"]["who"][0]
    assert (pair["member"], pair["baseline"]) == (dropped.name, full.name)
    assert pair["final_loss"] is not None and pair["baseline_loss"] is not None
