"""Sweep specs and plans: members from the axes, names, N / D / C, worlds shared between
members with one mixture, the shipped presets, the plan directory, and one clear error for
each bad input."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest

from sweep.member import Size, non_embedding_params
from sweep.plan import (
    COMMANDS_FILE,
    MEMBER_FILE,
    SPEC_FILE,
    check_member_dir,
    load_plan,
    member_state,
    plan_sweep,
)
from sweep.run import SweepRunConfig, run_sweep, train_member
from sweep.spec import PRESETS_DIR, SweepSpec, load_spec
from workbench.models.config import ModelConfig
from workbench.world.facts import DEFAULT_MIX


def spec(**changes: Any) -> SweepSpec:
    data: dict[str, Any] = {"preset": "tiny", "axes": {"size": ["1x32x2", "2x64x2"],
                                                       "steps": [40]},
                            "model": {"n_ctx": 32}, "train": {"batch_size": 4},
                            "world": {"tokens": 5000, "n_people": 4}}
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return SweepSpec.from_dict(data, source="test.toml")


def test_members_are_the_product_of_the_axes_in_order() -> None:
    s = spec(axes={"seed": [0, 1], "repeat_words": [0.1, 0.5]})
    names = [m.name for m in s.members()]
    assert len(names) == 2 * 2 * 2
    assert names[:3] == ["L1-d32-h2_steps40_repeat_words0.1_seed0",
                         "L1-d32-h2_steps40_repeat_words0.1_seed1",
                         "L1-d32-h2_steps40_repeat_words0.5_seed0"]
    m = s.members()[1]
    assert (m.model.n_layers, m.model.d_model, m.model.n_heads, m.model.d_head) == (1, 32, 2, 16)
    assert m.model.d_mlp == 128 and m.model.n_ctx == 32  # the preset's 4 x d_model
    assert m.model.seed == m.train.seed == 1
    assert m.train.steps == 40 and m.train.batch_size == 4


def test_n_d_and_c_of_a_member() -> None:
    m = spec().members()[1]
    # per block: 2 LayerNorms, fused QKV with bias, W_O with bias, MLP with biases
    d = 64
    block = 4 * d + 3 * (d * d + d) + d * d + d + d * 4 * d + 4 * d + 4 * d * d + d
    assert m.n_params == 2 * block + 2 * d
    assert m.n_params == non_embedding_params(m.model)
    assert m.tokens == 40 * 4 * 32
    assert m.compute == 6 * m.n_params * m.tokens
    # N does not depend on the vocabulary or the context length
    cfg = ModelConfig(n_layers=2, d_model=64, n_heads=2, d_head=32, d_mlp=256)
    assert non_embedding_params(cfg.replace(d_vocab=500, n_ctx=99)) == non_embedding_params(cfg)


def test_a_tokens_axis_becomes_steps() -> None:
    data = spec().to_dict()
    data["axes"].pop("steps")
    data["axes"]["tokens"] = [1280, 2000]
    s = SweepSpec.from_dict(data)
    assert s.steps == (10, 16)  # ceil(tokens / (4 * 32))


def test_mixture_knobs_set_a_share_and_share_worlds() -> None:
    s = spec(axes={"seed": [0, 1], "update": [0.0, 0.3]})
    worlds = s.worlds()
    assert list(worlds) == ["world_update0", "world_update0.3"]
    mix = worlds["world_update0.3"][0].mix_normalised
    assert mix["update"] == pytest.approx(0.3)
    others = {k: v for k, v in DEFAULT_MIX.items() if k != "update"}
    for kind, share in others.items():  # the rest keep their proportions
        assert mix[kind] == pytest.approx(0.7 * share / sum(others.values()))
    assert {m.world_id for m in s.members() if m.seed == 0} == set(worlds)
    assert spec().worlds().keys() == {"world"}


def test_the_resolved_spec_reads_back_the_same() -> None:
    s = spec(axes={"seed": [3], "update": [0.2]}, train={"lr": 1e-3})
    again = SweepSpec.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s and again.members() == s.members()


def test_shipped_presets() -> None:
    assert {p.stem for p in PRESETS_DIR.glob("*.toml")} >= {"micro", "cpu", "gpu"}
    micro = load_spec("micro")
    assert micro.name == "micro" and len(micro.members()) == 3
    assert all(m.steps <= 400 for m in micro.members())
    cpu = load_spec("cpu")
    ns = sorted({m.n_params for m in cpu.members()})
    assert len(ns) >= 5 and 30_000 <= ns[0] <= 80_000 and 1_000_000 <= ns[-1] <= 10_000_000
    gpu = load_spec("gpu")
    assert 15_000_000 <= max(m.n_params for m in gpu.members()) <= 30_000_000


def test_a_json_spec_and_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(spec().to_dict() | {"name": "mine"}))
    assert load_spec(path).members() == spec().members()
    assert load_spec(str(path)).name == "mine"


@pytest.mark.parametrize("changes, match", [
    ({"axes": {"layers": [2]}}, r"unknown axis 'layers'.*use one of size, steps"),
    ({"axes": {"sede": [2]}}, r"unknown axis 'sede' \(did you mean 'seed'\?\)"),
    ({"preset": "huge"}, r"unknown preset 'huge'; use one of tiny, attn2, default, small"),
    ({"train": {"warmup": 5}}, r"\[train\]: unknown key 'warmup' \(did you mean "
                               r"'warmup_steps'\?\)"),
    ({"model": {"d_mlp": 5}}, r"\[model\]: unknown key 'd_mlp'.*n_ctx, mlp_ratio"),
    ({"world": {"people": 5}}, r"\[world\]: unknown key 'people'"),
    ({"axez": {}}, r"unknown key 'axez' \(did you mean 'axes'\?\)"),
    ({"axes": {"size": []}}, r"axis 'size' is empty"),
    ({"axes": {"seed": []}}, r"axis 'seed' is empty"),
    ({"axes": {"size": ["2x60x7"]}}, r"size 2x60x7: d_model 60 is not divisible by n_heads 7"),
    ({"axes": {"size": ["2-64-2"]}}, r"size '2-64-2' is not n_layers x d_model x n_heads"),
    ({"axes": {"steps": [40, 40]}}, r"axis 'steps' repeats a value"),
    ({"train": {"steps": 10}}, r"steps is both an axis and a \[train\] key"),
    ({"axes": {"update": [0.7], "bio": [0.6]}}, r"shares of the mixture knobs.*more than 1"),
    ({"axes": {"update": [1.5]}}, r"axis 'update' = \[1.5\]"),
    ({"train": {"lr": 5.0}}, r"TrainConfig.lr=5.0"),
    ({"axes": {"steps": [10**12]}}, r"trains 1,000,000,000,000 steps; at most 100,000,000"),
    ({"world": {"tokens": 10**12}}, r"\[world\] tokens = 1000000000000; pass a whole number"),
    ({"world": {"tokens": 0}}, r"\[world\] tokens = 0; pass a whole number of training "),
    ({"world": {"tokens": 1e12}}, r"\[world\] tokens = 1000000000000.0; pass"),
    ({"train": {"batch_size": 10**8}}, r"needs about [\d.]+ TiB|needs about [\d.,]+ GiB of "
                                       r"memory per training step \(\[train\] batch_size = "
                                       r"100,000,000"),
    ({"axes": {"size": ["2x1048576x2"]}}, r"needs about .* of memory per training step .*size "
                                          r"2x1048576x2"),
])
def test_bad_specs_are_one_clear_error(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        spec(**changes)


def test_no_size_axis_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no size axis; add \[axes\] size"):
        SweepSpec.from_dict({"axes": {"steps": [5]}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[axes\nsize = 1")
    with pytest.raises(ValueError, match=r"bad.toml does not parse"):
        load_spec(bad)
    with pytest.raises(FileNotFoundError, match=r"neither a file nor a preset.*micro"):
        load_spec("nope")
    assert Size.parse({"n_layers": 1, "d_model": 8, "n_heads": 2}) == Size(1, 8, 2)


# -- plans -------------------------------------------------------------------------------

def test_plan_writes_one_directory_and_one_command_per_member(tmp_path: Path) -> None:
    s = spec(axes={"update": [0.1, 0.2]})
    out = plan_sweep(s, tmp_path / "p")
    assert out.status == "new"
    root = out.plan.root
    record = json.loads((root / SPEC_FILE).read_text())
    assert record["schema"] == "workbench.sweep_spec/1" and len(record["members"]) == 4
    member = s.members()[0]
    data = json.loads((root / member.name / MEMBER_FILE).read_text())
    assert data["n_params"] == member.n_params and data["tokens"] == member.tokens
    assert data["compute"] == member.compute and data["world"]["id"] == "world_update0.1"
    lines = (root / COMMANDS_FILE).read_text().splitlines()
    assert len(lines) == 2 + 4
    assert lines[0] == f"workbench sweep world {root.resolve()} --world world_update0.1"
    assert lines[2] == f"workbench sweep run {root.resolve()} --member {member.name}"
    assert member_state(out.plan, member) == "new"
    assert load_plan(root).spec == s


def test_replanning_the_same_spec_changes_nothing(tmp_path: Path) -> None:
    plan_sweep(spec(), tmp_path / "p")
    files = sorted(p for p in (tmp_path / "p").rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    named = spec(name="other", description="same members")
    assert plan_sweep(named, tmp_path / "p").status == "unchanged"
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_another_spec_is_refused_unless_overwrite(tmp_path: Path) -> None:
    first = plan_sweep(spec(), tmp_path / "p").plan
    kept, gone = first.members()
    run = first.run_dir(kept)  # a trained member: its run must survive the overwrite
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"model": kept.model.to_dict(),
                                              "train": kept.to_dict()["train"]}))
    new = spec(axes={"size": ["1x32x2", "1x64x2"]})
    with pytest.raises(FileExistsError, match=r"holds the plan of another spec \(axes.size: "
                                              r".*pass --overwrite"):
        plan_sweep(new, tmp_path / "p")
    out = plan_sweep(new, tmp_path / "p", overwrite=True)
    assert out.status == "replaced" and out.kept == (kept.name,)
    assert out.removed == (gone.name,)
    assert (run / "run.json").is_file() and not first.member_dir(gone).exists()
    assert [m.name for m in load_plan(tmp_path / "p").members()][1] == "L1-d64-h2_steps40_seed0"


def test_plans_refuse_what_is_not_theirs(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty and is not a sweep plan"):
        plan_sweep(spec(), tmp_path / "full")
    with pytest.raises(ValueError, match=r"is not a sweep plan \(it has no sweep_spec.json\); "
                                         r"make one with `workbench sweep plan SPEC"):
        load_plan(tmp_path / "full")
    with pytest.raises(FileNotFoundError, match=r"does not exist; plan it first"):
        load_plan(tmp_path / "missing")
    plan_sweep(spec(), tmp_path / "p")
    (tmp_path / "p" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"it holds notes.txt, which no sweep plan writes"):
        plan_sweep(spec(axes={"steps": [50]}), tmp_path / "p", overwrite=True)
    assert (tmp_path / "p" / "notes.txt").read_text() == "mine"
    (tmp_path / "p" / "notes.txt").unlink()
    plan = load_plan(tmp_path / "p")
    member = plan.members()[0]
    run = plan.run_dir(member)
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": member.model.to_dict(),
                                              "train": member.to_dict()["train"]}))
    (run / "checkpoints" / "note.txt").write_text("mine")  # a note inside a member's run
    with pytest.raises(ValueError, match=r"holds checkpoints/note.txt; move them out"):
        plan_sweep(spec(axes={"steps": [50]}), tmp_path / "p", overwrite=True)
    assert (run / "checkpoints" / "note.txt").read_text() == "mine"


def test_overwrite_replaces_the_files_a_plan_gathers(tmp_path: Path) -> None:
    """What the engine and the checks built on it write into a plan (job records, the
    retraining reports) is the plan's own: replaced, not refused."""
    plan_sweep(spec(), tmp_path / "p")
    (tmp_path / "p" / "jobs").mkdir()
    (tmp_path / "p" / "jobs" / "jobs.json").write_text("{}")
    for name in ("verify.json", "verify.fig.json", "verify_plan.json", "lds.json"):
        (tmp_path / "p" / name).write_text("{}")
    assert plan_sweep(spec(axes={"steps": [50]}), tmp_path / "p",
                      overwrite=True).status == "replaced"


def test_a_member_directory_made_by_another_spec_is_refused(tmp_path: Path) -> None:
    plan = plan_sweep(spec(), tmp_path / "p").plan
    other = plan_sweep(spec(train={"lr": 1e-3}), tmp_path / "q").plan
    member = plan.members()[0]
    path = plan.member_dir(member) / MEMBER_FILE
    path.write_text((other.member_dir(member) / MEMBER_FILE).read_text())
    with pytest.raises(ValueError, match=r"was made by another spec \(train.lr: 0.001 -> "
                                         r"0.003\); plan again with --overwrite"):
        check_member_dir(plan, member)
    with pytest.raises(ValueError, match=r"was made by another spec"):
        plan_sweep(spec(), tmp_path / "p")  # re-planning does not paper over it
    os.remove(path)
    with pytest.raises(ValueError, match=r"has no member.json; plan the sweep again"):
        check_member_dir(plan, member)
    assert plan_sweep(spec(), tmp_path / "p").status == "unchanged"  # writes it back
    check_member_dir(plan, member)


def test_run_refuses_a_foreign_run_dir_and_skips_a_busy_member(tmp_path: Path) -> None:
    plan = plan_sweep(spec(), tmp_path / "p").plan
    member = plan.members()[0]
    plan.run_dir(member).mkdir()
    (plan.run_dir(member) / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds notes.txt but no run.json, so it is not a "
                                         r"run of ours"):
        train_member(plan, member, device="cpu", progress=False)
    lines: list[str] = []
    with open(plan.member_dir(member) / ".train.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process training it
        results = run_sweep(plan, SweepRunConfig(device="cpu", members=(member.name,),
                                                 progress=False), log=lines.append)
    assert [r.status for r in results] == ["busy"]
    assert lines[-1].endswith("another process is training it; skipped")
    assert (plan.run_dir(member) / "notes.txt").read_text() == "mine"


def test_a_damaged_plan_is_refused_and_replaced_with_overwrite(tmp_path: Path) -> None:
    plan_sweep(spec(), tmp_path / "p")
    (tmp_path / "p" / SPEC_FILE).write_text('{"schema": "workbench.sweep_sp')
    with pytest.raises(ValueError, match=r"sweep_spec.json is damaged"):
        plan_sweep(spec(), tmp_path / "p")
    with pytest.raises(ValueError, match=r"sweep_spec.json is damaged"):
        load_plan(tmp_path / "p")
    assert plan_sweep(spec(), tmp_path / "p", overwrite=True).status == "replaced"
    assert load_plan(tmp_path / "p").spec == spec()


def test_a_world_replaced_by_hand_is_refused_for_training_and_analysis(tmp_path: Path) -> None:
    """`sweep run` and `sweep analyze` measure on the plan's world only: one rebuilt with other
    settings (`world build --overwrite`, as an error message once suggested) is refused, with
    a fix that works (the plan's world is built again by `sweep world`)."""
    from sweep.run import check_world

    plan = plan_sweep(spec(), tmp_path / "p").plan
    cfg, _ = plan.spec.worlds()["world"]
    world = plan.world_dir("world")
    world.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"cannot be read \(FileNotFoundError\); move .* away "
                                         r"and run `workbench sweep world .*p`"):
        check_world(plan, "world")
    (world / "corpus.json").write_text(json.dumps({"world_config": cfg.to_dict()}))
    assert check_world(plan, "world") == world
    other = {**cfg.to_dict(), "n_people": cfg.to_dict()["n_people"] + 1}
    (world / "corpus.json").write_text(json.dumps({"world_config": other}))
    with pytest.raises(ValueError, match=r"is not the one the plan's members train on"):
        check_world(plan, "world")
    world.rename(tmp_path / "mine")  # the fix the message gives: move it away, build again
    from workbench.cli.core import main

    assert main(["sweep", "world", str(plan.root), "--no-progress"]) == 0
    assert check_world(plan, "world") == world


def test_run_refuses_members_that_do_not_fit_this_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.cli.core import main

    plan = plan_sweep(spec(), tmp_path / "p").plan
    monkeypatch.setattr("workbench.models.checks.available_memory", lambda: 2**20)
    assert main(["sweep", "run", str(plan.root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "needs about" in err and "more than the 1.0 MiB available here; lower [train] " \
        "batch_size or the size axis" in err
    assert not plan.world_dir("world").exists()  # refused before any world is built


def test_ctrl_c_names_the_subcommand_to_run_again() -> None:
    from workbench.cli.registry import build_parser

    parser = build_parser()
    for sub in ("run", "analyze", "world"):
        said = parser.parse_args(["sweep", sub, "PLAN"]).on_interrupt
        assert f"`workbench sweep {sub} PLAN` again" in said, (sub, said)


def test_run_refuses_members_whose_checkpoints_do_not_fit_the_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil
    from collections import namedtuple

    from workbench.cli.core import main

    plan = plan_sweep(spec(), tmp_path / "p").plan
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**20, 2**20 - 4096, 4096))
    assert main(["sweep", "run", str(plan.root), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "on disk, more than the 4.0 KiB free" in err and "plan fewer or smaller" in err
    assert not plan.world_dir("world").exists()
