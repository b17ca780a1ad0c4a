"""`sweep.executor` settings, `sweep.jobs` records and `sweep.status` rows without running a
job: what is refused, what reaches sbatch, what a damaged `jobs.json` reads as."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep.executor import ExecutorConfig, check_jobs_dir, make_executor, parse_slurm_arg
from sweep.jobs import JOBS_SCHEMA, read_jobs
from sweep.plan import load_plan, plan_sweep
from sweep.spec import SweepSpec
from sweep.status import format_status, plan_status

STUB = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"


@pytest.mark.parametrize("cfg, message", [
    (ExecutorConfig(executor="pbs"), "--executor 'pbs'; choose one of local, slurm, debug"),
    (ExecutorConfig(jobs=0), "--jobs 0; pass 1 or more"),
    (ExecutorConfig(tasks_per_job=0), "--tasks-per-job 0"),
    (ExecutorConfig(gpus_per_job=1), "--gpus-per-job is a Slurm option"),
    (ExecutorConfig(executor="debug", slurm_args=(("qos", "x"),)), "--slurm-arg is a Slurm"),
    (ExecutorConfig(executor="debug", tasks_per_job=2), "--executor debug runs one member"),
])
def test_bad_settings(cfg: ExecutorConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("'", ".")):
        cfg.check()


def test_slurm_settings_reach_sbatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", f"{STUB}:/usr/bin:/bin")
    cfg = ExecutorConfig(executor="slurm", partition="gpu", gpus_per_job=2, cpus_per_job=8,
                         time_min=90, array_parallelism=4, tasks_per_job=2,
                         slurm_args=(parse_slurm_arg("qos=high"), ("account", "lab")))
    cfg.check()
    params = cfg.slurm_parameters()
    assert params == {"ntasks_per_node": 2, "time": 90, "signal_delay_s": 120,
                      "job_name": "workbench-sweep", "partition": "gpu", "gpus_per_node": 2,
                      "cpus_per_task": 8, "array_parallelism": 4,
                      "additional_parameters": {"qos": "high", "account": "lab"}}
    ex = make_executor(cfg, tmp_path)
    script = ex._make_submission_file_text("python -m job", "uid")  # submitit's sbatch text
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --qos=high", "#SBATCH --account=lab"):
        assert line in script
    assert ExecutorConfig(executor="slurm").slurm_parameters()["time"] == 240
    with pytest.raises(ValueError, match="pass KEY=VALUE"):
        parse_slurm_arg("=x")


def test_local_threads_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert ExecutorConfig(jobs=2).threads() == 4
    assert ExecutorConfig(jobs=4, tasks_per_job=4).threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the caller's choice wins
    assert ExecutorConfig(jobs=2).threads() == 1


def test_jobs_dir_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "jobs").write_text("")
    with pytest.raises(ValueError, match="cannot write job files under"):
        check_jobs_dir(tmp_path)
    assert check_jobs_dir(tmp_path / "plan") == tmp_path / "plan" / "jobs"


def test_status_reads_damaged_or_missing_jobs_files(tmp_path: Path) -> None:
    spec = SweepSpec.from_dict({"name": "t", "preset": "tiny",
                                "axes": {"size": ["1x32x2", "2x32x2"], "steps": [20]}})
    root = plan_sweep(spec, tmp_path / "t").plan.root
    assert read_jobs(root)["members"] == {}
    status = plan_status(load_plan(root))
    assert status["counts"] == {"pending": 2} and status["executor"] == ""
    (root / "jobs").mkdir()
    for text in ("{not json", "[1, 2]", '{"members": 3}'):
        (root / "jobs" / "jobs.json").write_text(text)
        assert read_jobs(root) == {"schema": JOBS_SCHEMA, "members": {}}
    name = spec.members()[1].name
    (root / "jobs" / "jobs.json").write_text(json.dumps({
        "schema": JOBS_SCHEMA, "executor": "slurm", "phase": "run",
        "members": {name: {"phase": "run", "state": "failed", "attempts": 3,
                           "jobs": ["7_1", "8", "9"], "log": "/x/9_0_log.err",
                           "error": "RuntimeError: out of memory\nlast line"}}}))
    status = plan_status(load_plan(root))
    assert status["counts"] == {"pending": 1, "failed": 1}
    table = format_status(status)
    assert "t: 1 failed, 1 pending (last: sweep run on slurm)" in table
    row = next(ln for ln in table.splitlines() if ln.startswith(name))
    assert row.split()[1:3] == ["failed", "0/20"] and row.endswith("7_1,8,9")
    assert "    RuntimeError: out of memory" in table and "    log: /x/9_0_log.err" in table


def test_a_failing_member_is_retried_then_marked_failed_and_the_rest_go_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sweep.jobs as jobs

    spec = SweepSpec.from_dict({"name": "t", "preset": "tiny",
                                "axes": {"size": ["1x32x2", "2x32x2"], "steps": [20]}})
    plan = load_plan(plan_sweep(spec, tmp_path / "t").plan.root)
    bad, good = (m.name for m in plan.members())
    calls: list[str] = []

    def fake_train(plan, member, options, *, lock):  # noqa: ANN001, ANN202
        calls.append(member.name)
        if member.name == bad:
            print("step 7: loss is nan")  # what the job's log ends with
            raise RuntimeError("loss became nan at step 7")
        return {"status": "trained", "steps": 20, "val_loss": 3.0, "seconds": 1.0,
                "tokens_per_s": 100}

    monkeypatch.setattr(jobs, "_train", fake_train)
    lines: list[str] = []
    records = jobs.run_member_jobs(plan, plan.members(), "run",
                                   ExecutorConfig(executor="debug"), {"device": "cpu"},
                                   log=lines.append)
    assert calls == [bad, bad, bad, good]  # retried at once, then the next member
    assert records[good].state == "done" and records[good].attempts == 0
    assert records[bad].state == "failed" and records[bad].attempts == 3
    assert records[bad].error.startswith("RuntimeError: loss became nan at step 7")
    assert f"{bad}: attempt 1 failed (RuntimeError: loss became nan at step 7)" in lines[0]
    assert any(ln.startswith(f"{bad}: failed 3 times") for ln in lines)
    saved = read_jobs(plan.root)["members"]
    assert saved[bad]["state"] == "failed" and len(saved[bad]["jobs"]) == 3
    assert saved[good]["result"]["val_loss"] == 3.0
    assert "failed" in format_status(plan_status(plan))
