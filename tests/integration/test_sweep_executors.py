"""`workbench sweep run|analyze --executor local|debug|slurm` on the shipped `micro` family:
the three executors train byte-identical members, and the Slurm path (a stub `sbatch`,
`srun`, `sacct`, `scancel`, `scontrol` from tests/fixtures/slurm that runs each array task
here) submits one array, survives a job killed in the middle of a member (the member is
submitted again, resumes from its newest checkpoint and ends with the same weights) and a
job preempted there (`USR2`: submitit requeues it, `scontrol requeue`, and it resumes), and
reports its jobs in `sweep status`; the command itself, killed and run again, follows the
jobs still running instead of submitting others. The sbatch script it generated is checked.
Bad executor settings are refused in one line before anything is submitted. About 2 min on
2 cores.

Every computation uses one thread, so weights compare bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep.jobs import read_jobs
from sweep.plan import BATTERY_FILE, load_plan
from workbench.cli.core import main
from workbench.models.checkpoints import list_checkpoints

STUB = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


def weights(root: Path) -> dict[str, list[str]]:
    """Every member's checkpoints' weights sha256 (from their config.json)."""
    plan = load_plan(root)
    return {m.name: [json.loads((p / "config.json").read_text())["sha256"]["model.safetensors"]
                     for p in list_checkpoints(plan.run_dir(m))] for m in plan.members()}


def battery_records(root: Path, name: str) -> list[dict]:
    data = json.loads((root / name / BATTERY_FILE).read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in data["checkpoints"]]


def plan_sharing_world(tmp_path: Path, name: str, world_of: Path) -> Path:
    root = tmp_path / name
    assert main(["sweep", "plan", "micro", "--out", str(root)]) == 0
    os.symlink(world_of / "worlds", root / "worlds")
    return root


def test_executors_agree_and_slurm_survives_a_kill(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    local = tmp_path / "local"
    assert main(["sweep", "plan", "micro", "--out", str(local)]) == 0
    assert main(["sweep", "run", str(local), "--executor", "local", "--jobs", "2",
                 "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("submitted 2 job(s) (local)") == 1 and "3 of 3 member(s) finished" in out
    reference = weights(local)
    assert all(len(v) == 11 for v in reference.values())  # log-spaced 0, 1, ..., 256, 300
    status = read_jobs(local)
    assert status["executor"] == "local" and {r["state"] for r in
                                              status["members"].values()} == {"done"}

    debug = plan_sharing_world(tmp_path, "debug", local)
    assert main(["sweep", "run", str(debug), "--executor", "debug", "--device", "cpu",
                 "--no-progress"]) == 0
    assert "3 of 3 member(s) finished" in capsys.readouterr().out
    assert weights(debug) == reference

    # Slurm, stubbed: an array of 3, at most 2 at once; the largest member is killed
    slurm = plan_sharing_world(tmp_path, "slurm", local)
    victim = max(load_plan(slurm).members(), key=lambda m: m.compute)
    state = tmp_path / "slurm-state"
    env = {**os.environ, "PATH": f"{STUB}:{os.environ['PATH']}", "FAKE_SLURM_DIR": str(state),
           "FAKE_SLURM_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "workbench.cli.core", "sweep", "run", str(slurm),
               "--executor", "slurm", "--partition", "debug", "--time", "30",
               "--array-parallelism", "2", "--slurm-arg", "qos=low", "--device", "cpu",
               "--no-progress"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120  # the command is killed once the array is submitted
    while read_jobs(slurm)["members"].get(victim.name, {}).get("state") != "running":
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    first.kill()
    first.wait()
    # run again: it follows the jobs still running instead of submitting others
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    # the costliest member (the array's first task) is killed and the second preempted (USR2
    # as Slurm sends it before preemption) once each has written its step-16 checkpoint
    preempted = sorted(load_plan(slurm).members(), key=lambda m: -m.compute)[1]
    marks = {m.name: load_plan(slurm).run_dir(m) / "checkpoints" / "step_000016"
             for m in (victim, preempted)}
    actions = {victim.name: ("1_0", signal.SIGKILL), preempted.name: ("1_1", signal.SIGUSR2)}
    deadline = time.monotonic() + 240
    while actions and time.monotonic() < deadline and driver.poll() is None:
        for name in [n for n in actions if marks[n].is_dir()]:
            job, sig = actions.pop(name)
            for pid in (state / f"{job}.pid").read_text().split():
                os.kill(int(pid), sig)
        time.sleep(0.05)
    assert not actions, driver.communicate()[0][-3000:]
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output[-3000:]
    assert "submitted" not in output.split("attempt 1 failed")[0]
    assert f"{victim.name}: following its running job 1_0" in output
    assert f"{victim.name}: attempt 1 failed (job 1_0 ended without a result" in output
    assert f"{victim.name}: resumed to step 300" in output
    assert weights(slurm) == reference  # resumed from its newest checkpoint: same weights
    record = read_jobs(slurm)["members"][victim.name]
    assert record["state"] == "done" and record["attempts"] == 1 and record["jobs"] == [
        "1_0", "2"]
    record = read_jobs(slurm)["members"][preempted.name]  # requeued by submitit itself
    assert record["attempts"] == 0 and record["jobs"] == ["1_1"]
    assert record["result"]["status"] == "resumed"
    assert "REQUEUED" not in (state / "1_1.state").read_text()

    script = (slurm / "jobs" / "1" / "1_submission.sh").read_text()
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=debug", "#SBATCH --time=30",
                 "#SBATCH --qos=low", "#SBATCH --signal=USR2@120", "#SBATCH --ntasks-per-node=1",
                 f"#SBATCH --output={slurm}/jobs/%A_%a/%A_%a_0_log.out"):
        assert line in script, script
    assert "srun --unbuffered" in script and "-m submitit.core._submit" in script

    capsys.readouterr()
    assert main(["sweep", "status", str(slurm)]) == 0
    table = capsys.readouterr().out
    assert "micro: 3 done (last: sweep run on slurm)" in table
    row = next(ln for ln in table.splitlines() if ln.startswith(victim.name))
    assert row.split()[1:3] == ["done", "300/300"] and row.endswith("1_0,2")


@pytest.mark.slow
def test_local_and_debug_write_the_same_sweep_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    """The whole family trained and analyzed in two local jobs at once and in-process: the
    same weights and the same `sweep.json` (but for the seconds each checkpoint took). About
    6 min on 2 cores."""
    local = tmp_path / "local"
    assert main(["sweep", "plan", "micro", "--out", str(local)]) == 0
    debug = plan_sharing_world(tmp_path, "debug", local)
    for root, extra in ((local, ["--executor", "local", "--jobs", "2"]),
                        (debug, ["--executor", "debug"])):
        for command in ("run", "analyze"):
            assert main(["sweep", command, str(root), *extra, "--device", "cpu",
                         "--no-progress"]) == 0
    capsys.readouterr()
    assert weights(local) == weights(debug)

    def report(root: Path) -> dict:
        data = json.loads((root / "sweep.json").read_text())
        for m in data["members"]:
            for ck in m["checkpoints"]:
                ck.pop("seconds", None)
        return data

    assert report(local) == report(debug)
    assert battery_records(local, "L1-d32-h2_steps300_seed0")  # measured, in a local job


def test_bad_executor_settings_are_refused_first(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "micro"
    assert main(["sweep", "plan", "micro", "--out", str(root)]) == 0
    capsys.readouterr()
    cases = [
        (["--executor", "pbs"], "argument --executor: invalid choice: 'pbs'"),
        (["--partition", "gpu"], "--partition is a Slurm option; pass --executor slurm"),
        (["--executor", "local", "--time", "10"], "--time is a Slurm option"),
        (["--executor", "slurm", "--jobs", "2"], "use --array-parallelism"),
        (["--executor", "slurm"], "sbatch, srun, sacct not found on PATH"),
        (["--jobs", "0"], "--jobs 0; pass 1 or more"),
        (["--slurm-arg", "qos"], "pass KEY=VALUE"),
        (["--executor", "debug", "--jobs", "2"], "--executor debug runs one member after"),
    ]
    for extra, message in cases:
        assert main(["sweep", "run", str(root), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, (extra, err)
    assert not (root / "worlds").exists() and not (root / "jobs").exists()  # nothing ran

    (root / "jobs").write_text("")  # where job files go, a path no job can write under
    assert main(["sweep", "run", str(root)]) == 2
    err = capsys.readouterr().err
    assert "cannot write job files under" in err and not (root / "worlds").exists()


@pytest.mark.slow
def test_a_member_trains_data_parallel_in_one_job(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    """`--tasks-per-job 2`: one local job of two processes (submitit's tasks) trains a member
    with the trainer's DDP path, as `torchrun --nproc-per-node 2` would; the global batch is
    the same, so it ends near the one-process run (not bit for bit: gradients are averaged
    over the ranks in another order). About 40 s."""
    one = tmp_path / "one"
    assert main(["sweep", "plan", "micro", "--out", str(one)]) == 0
    two = plan_sharing_world(tmp_path, "two", one)
    name = load_plan(one).members()[0].name
    assert main(["sweep", "run", str(one), "--member", name, "--executor", "debug",
                 "--device", "cpu", "--no-progress"]) == 0
    assert main(["sweep", "run", str(two), "--member", name, "--tasks-per-job", "2",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "1 of 1 member(s) finished" in capsys.readouterr().out
    record = read_jobs(two)["members"][name]
    job = record["jobs"][0]
    logs = sorted(p.name for p in (two / "jobs" / job).glob("*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]  # two ranks
    assert "global_rank=1(2)" in (two / "jobs" / job / f"{job}_1_log.out").read_text()
    loss = [record["result"]["val_loss"],
            read_jobs(one)["members"][name]["result"]["val_loss"]]
    assert abs(loss[0] - loss[1]) < 0.02, loss
    assert weights(two)[name] != weights(one)[name]
