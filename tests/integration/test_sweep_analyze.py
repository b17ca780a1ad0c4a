"""`workbench sweep analyze` on the shipped `micro` family: refused before any member has a
checkpoint; then planned, trained and analyzed with a small battery on every checkpoint of
every member; `sweep.json` passes its schema check, names a verdict for both metrics of every
ability, and a second analyze measures nothing (the per-member `battery.json` caches it).
The full default battery runs once, on the largest member's last checkpoint. About a minute
on one thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep.analyze import AnalyzeConfig, analyze_sweep
from sweep.battery import ABILITIES, BatteryConfig, run_battery, world_inputs
from sweep.laws import REPORT_FILE, validate_report
from sweep.plan import BATTERY_FILE, load_plan
from sweep.run import SweepRunConfig, run_sweep
from workbench.cli.core import main
from workbench.models.checkpoints import list_checkpoints
from workbench.models.loader import load
from workbench.world import load_corpus

SMALL = BatteryConfig(windows=8, fact_items=32, agreement_items=32, fewshot_items=4,
                      repeat_seqs=8, skip=("probes", "update", "rome", "rome_specificity"))


def test_plan_run_analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                          one_thread: None) -> None:
    root = tmp_path / "micro"
    assert main(["sweep", "plan", "micro", "--out", str(root)]) == 0
    capsys.readouterr()
    assert main(["sweep", "analyze", str(root), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has a checkpoint yet" in err and f"workbench sweep run {root}" in err
    assert "\n" not in err

    plan = load_plan(root)
    run_sweep(plan, SweepRunConfig(device="cpu", progress=False))
    lines: list[str] = []
    report = analyze_sweep(plan, AnalyzeConfig(battery=SMALL, progress=False),
                           log=lines.append)
    validate_report(report)
    assert report == json.loads((root / REPORT_FILE).read_text())
    for suffix in ("loss", "curves", "abilities_N", "abilities_C"):
        assert (root / f"sweep.{suffix}.fig.json").is_file()
    assert len(report["members"]) == 3 and all(m["finished"] for m in report["members"])
    for m, member in zip(report["members"], plan.members()):
        steps = [int(p.name.removeprefix("step_"))
                 for p in list_checkpoints(plan.run_dir(member))]
        assert [c["step"] for c in m["checkpoints"]] == steps  # every checkpoint, 0 .. 300
        assert m["final_loss"] == m["curve"]["val_loss"][-1]  # the trainer's
    assert report["laws"]["N"]["alpha"] > 0 and report["laws"]["N"]["n"] == 3
    assert "joint" not in report["laws"]  # one data size
    wanted = [a for a in ABILITIES if a not in SMALL.skip and not a.startswith("probe_")]
    assert set(report["abilities"]) == set(wanted)
    verdicts = {"smooth", "emergent", "not reached"}
    for name, a in report["abilities"].items():
        for metric in ("discrete", "continuous"):
            assert a[metric]["N"]["verdict"] in verdicts, (name, metric, a[metric]["N"])
            assert a[metric]["C"]["verdict"] in verdicts
    differ = report["differ"]
    named = sorted(set(differ["N"]) | set(differ["C"]))
    assert all(n in differ["statement"] for n in named)
    assert named or "no ability" in differ["statement"]

    # resumable: nothing is measured again, and sweep.json comes out the same
    cached = {m.name: (plan.member_dir(m) / BATTERY_FILE).stat().st_mtime_ns
              for m in plan.members()}
    lines.clear()
    again = analyze_sweep(plan, AnalyzeConfig(battery=SMALL, progress=False),
                          log=lines.append)
    assert again == report and all("measured already" in line for line in lines)
    assert cached == {m.name: (plan.member_dir(m) / BATTERY_FILE).stat().st_mtime_ns
                      for m in plan.members()}
    with pytest.raises(ValueError, match="other battery settings; pass --overwrite"):
        analyze_sweep(plan, AnalyzeConfig(battery=BatteryConfig(windows=4), progress=False))

    # the whole default battery on one checkpoint: every ability, both metrics
    member = plan.members()[-1]
    model = load(list_checkpoints(plan.run_dir(member))[-1])
    result = run_battery(model, world_inputs(model, load_corpus(plan.world_dir("world")),
                                             BatteryConfig()))
    assert list(result["abilities"]) == list(ABILITIES), result["notes"]
    # on the trainer's validation windows (micro: 16) the battery's loss is the trainer's
    assert result["val_loss"] == pytest.approx(report["members"][-1]["final_loss"], rel=1e-4)
    for a in result["abilities"].values():
        assert {"discrete", "continuous"} <= set(a)
        assert a["discrete"]["value"] is not None and a["continuous"]["value"] is not None
