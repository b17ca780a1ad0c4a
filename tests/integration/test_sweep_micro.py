"""`workbench sweep` end to end on the shipped `micro` family: plan it, run it, `kill -9` the
run in the middle of the second member, run it again: the finished member is not touched,
the killed one resumes from its last checkpoint to what an uninterrupted run gives (every
checkpoint's weights and the loss curve, so the same `sweep.json`), the third
is trained, and a third run changes nothing. Then a power law of the members' validation
loss against N, read from their directories as an analyzer would. About a minute on 2 cores.

The kill is deterministic: a helper process runs `run_sweep` with an `on_step` hook that
SIGKILLs its own process at step 150 of the second member (its newest checkpoint is then
step 128). Every computation uses one thread, so weights compare bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.analyze import loss_curve
from sweep.fit import FitConfig, fit_power_law
from sweep.plan import MEMBER_FILE, load_plan, member_state
from workbench.cli.core import main
from workbench.models.checkpoints import list_checkpoints, step_dir_name

KILL_AT = 150
KILLER = r"""
import os, signal, sys
import torch
torch.set_num_threads(1)
from sweep.plan import load_plan
from sweep.run import SweepRunConfig, run_sweep

plan = load_plan(sys.argv[1])
victim, kill_at = plan.members()[1].name, int(sys.argv[2])


def hook(member, step, loss):
    if member.name == victim and step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


run_sweep(plan, SweepRunConfig(device="cpu", progress=False), on_step=hook)
"""


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def weights_sha(run: Path, step: int) -> str:
    config = json.loads((run / "checkpoints" / step_dir_name(step) / "config.json").read_text())
    return config["sha256"]["model.safetensors"]


def test_plan_kill_resume_and_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  one_thread: None) -> None:
    root = tmp_path / "micro"
    assert main(["sweep", "plan", "micro", "--out", str(root)]) == 0
    assert "new plan 'micro': 3 members" in capsys.readouterr().out
    plan = load_plan(root)
    first, second, third = plan.members()

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLER, str(root), str(KILL_AT)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [member_state(plan, m) for m in plan.members()] == ["done", "started", "new"]
    steps = [int(p.name.removeprefix("step_")) for p in list_checkpoints(plan.run_dir(second))]
    assert steps[-1] == 128  # log-spaced: 0, 1, 2, 4, ..., 128; the kill came at 150
    done_before = mtimes(plan.member_dir(first))
    second_before = {p: t for p, t in mtimes(plan.run_dir(second)).items()
                     if p.name == "model.safetensors"}

    assert main(["sweep", "run", str(root), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"[1/3] {first.name}: finished already" in out
    assert f"{second.name}: resumed to step 300" in out
    assert f"{third.name}: trained to step 300" in out and "3 of 3 member(s) finished" in out
    assert mtimes(plan.member_dir(first)) == done_before  # the finished member: untouched
    assert {p: t for p, t in mtimes(plan.run_dir(second)).items()
            if p in second_before} == second_before  # its checkpoints before the kill, too
    assert [member_state(plan, m) for m in plan.members()] == ["done"] * 3

    everything = mtimes(root)
    assert main(["sweep", "run", str(root), "--device", "cpu", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("finished already") == 3
    assert mtimes(root) == everything
    assert main(["sweep", "plan", "micro", "--out", str(root)]) == 0
    assert "already holds this plan; nothing changed" in capsys.readouterr().out
    assert mtimes(root) == everything
    # two local jobs at once (as `make sweep` runs): the finished members stay so
    assert main(["sweep", "run", str(root), "--jobs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "submitted" not in out and out.count("finished already") == 3
    assert mtimes(root) == everything
    assert main(["sweep", "run", str(root), "--jobs", "0"]) == 2
    assert "--jobs 0; pass 1 or more" in capsys.readouterr().err

    # the resumed member equals an uninterrupted run of it (same world, a fresh plan)
    again = tmp_path / "again"
    assert main(["sweep", "plan", "micro", "--out", str(again)]) == 0
    os.symlink(root / "worlds", again / "worlds")
    assert main(["sweep", "run", str(again), "--member", second.name, "--device", "cpu",
                 "--no-progress"]) == 0
    capsys.readouterr()
    resumed, whole = plan.run_dir(second), load_plan(again).run_dir(second)
    steps = [int(p.name.removeprefix("step_")) for p in list_checkpoints(whole)]
    assert [int(p.name.removeprefix("step_")) for p in list_checkpoints(resumed)] == steps
    assert [weights_sha(resumed, s) for s in steps] == [weights_sha(whole, s) for s in steps]
    # and so does what `sweep.json` is made of: the battery reads these checkpoints, the
    # loss curves come from metrics.jsonl (the records logged after the kill were dropped)
    assert loss_curve(plan, second) == loss_curve(load_plan(again), second)

    # an analyzer finds each member's numbers and its run directory's checkpoints
    n, loss = [], []
    for member in plan.members():
        record = json.loads((plan.member_dir(member) / MEMBER_FILE).read_text())
        run = plan.member_dir(member) / record["run"]
        final = json.loads((list_checkpoints(run)[-1] / "config.json").read_text())
        n.append(record["n_params"])
        loss.append(final["val_loss"])
    law = fit_power_law(n, loss, cfg=FitConfig(n_boot=50), x_name="N")
    assert law.alpha > 0 and law.n == 3  # loss falls with N


def test_bad_inputs_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notaplan").mkdir()
    assert main(["sweep", "run", str(tmp_path / "notaplan")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench: error: ") and "is not a sweep plan" in err
    assert "\n" not in err and "Traceback" not in err
    spec = tmp_path / "bad.toml"
    spec.write_text('preset = "tiny"\n[axes]\nsize = ["1x32x2"]\nlayers = [2]\n')
    assert main(["sweep", "plan", str(spec), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown axis 'layers'" in err and "\n" not in err
    assert not (tmp_path / "p").exists()
    spec.write_text('preset = "tiny"\n[axes]\nsize = ["1x32x2"]\n[train]\nlearning_rate = 1\n')
    assert main(["sweep", "plan", str(spec), "--out", str(tmp_path / "p")]) == 2
    assert "[train]: unknown key 'learning_rate'" in capsys.readouterr().err
    spec.write_text('preset = "tiny"\n[axes]\nsize = ["1x32x2"]\nsteps = [5]\n')
    assert main(["sweep", "plan", str(spec), "--out", str(tmp_path / "p")]) == 0
    assert main(["sweep", "run", str(tmp_path / "p"), "--member", "nope"]) == 2
    assert "has no member 'nope'; its members: L1-d32-h2_steps5_seed0" in capsys.readouterr().err
