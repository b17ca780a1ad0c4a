"""One job per member, on a submitit executor (`sweep.executor`), watched until each ends.

`run_member_jobs` submits a job per member (a job array on Slurm; at most `--jobs` at once
locally), polls them, and records every job in `PLAN/jobs/jobs.json` (schema
`workbench.sweep_jobs/1`, rewritten atomically after each event, read by `workbench sweep
status`):

```
{"schema": ..., "executor": "local", "phase": "run",
 "members": {NAME: {"phase", "state": pending|running|done|failed|busy, "attempts",
                    "jobs": [job ids], "log": path of the newest job's stderr,
                    "error": the last lines of the failed job's log, "result": {...}}}}
```

Failure is expected and cheap: a job that is killed, preempted or fails is submitted again
and its member resumes from its newest checkpoint (`sweep.run.train_member`); the battery
from its newest measured checkpoint (`battery.json`). A member whose job fails
`max_attempts` times is marked failed with its log's last lines, and the other members go on.
On Slurm, a job that is preempted or runs out of time is requeued by submitit itself
(`MemberJob` is a `submitit.helpers.Checkpointable`) before any of this.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from sweep.executor import JOBS_DIR, ExecutorConfig, check_jobs_dir, make_executor
from sweep.member import Member
from sweep.plan import Plan
from workbench.models.checkpoints import write_json_atomic

logger = logging.getLogger(__name__)
JOBS_FILE = "jobs.json"
JOBS_SCHEMA = "workbench.sweep_jobs/1"
PHASES = ("run", "analyze")
LOG_TAIL = 8  # lines of a failed job's log kept in jobs.json


class MemberJob(submitit.helpers.Checkpointable):
    """Train (`phase="run"`) or measure (`"analyze"`) one member of the plan at `root`.

    Returns a dict: `status` (`trained`, `resumed`, `finished`, `measured` or `busy`) and
    the member's numbers, or `error` with the exception's last line (its traceback goes to
    the job's stderr): a failing member never raises out of the job, so every executor
    (the in-process `debug` one too) sees it the same way.
    """

    def __call__(self, root: str, name: str, phase: str, options: dict[str, Any]
                 ) -> dict[str, Any]:
        import torch

        from sweep.plan import load_plan
        from sweep.run import Busy

        if options.get("threads"):
            torch.set_num_threads(int(options["threads"]))
        rank = 0
        if int(os.environ.get("SUBMITIT_LOCAL_NTASKS", os.environ.get("SLURM_NTASKS", "1"))) > 1:
            env = submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False)  # the trainer picks cuda:LOCAL_RANK itself
            rank = env.rank
        try:
            plan = load_plan(root)
            member = plan.member(name)
            if phase == "run":
                return _train(plan, member, options, lock=rank == 0)
            return _measure(plan, member, options)
        except Busy:
            return {"status": "busy"}
        except Exception as exc:  # reported to the driver, which retries the member
            traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500]}


def _train(plan: Plan, member: Member, options: dict[str, Any], *, lock: bool
           ) -> dict[str, Any]:
    from sweep.run import train_member

    result = train_member(plan, member, device=options.get("device", "auto"),
                          progress=False, lock=lock)
    speed = result.tokens_per_s
    return {"status": result.status, "steps": result.steps, "val_loss": result.val_loss,
            "seconds": round(result.seconds, 1),
            "tokens_per_s": round(speed) if math.isfinite(speed) else None}


def _job_log(line: str) -> None:
    """One line into the job's log (its stdout)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _measure(plan: Plan, member: Member, options: dict[str, Any]) -> dict[str, Any]:
    from sweep.analyze import AnalyzeConfig, analyze_member_set

    cfg = AnalyzeConfig(overwrite=bool(options.get("overwrite")),
                        device=options.get("device", "cpu"), progress=False)
    t0 = time.perf_counter()
    analyze_member_set(plan, [member], cfg, log=_job_log)
    return {"status": "measured", "seconds": round(time.perf_counter() - t0, 1)}


@dataclass
class MemberJobs:
    """What `jobs.json` says of one member."""

    phase: str = "run"
    state: str = "pending"
    attempts: int = 0
    jobs: list[str] = field(default_factory=list)
    log: str = ""
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "state": self.state, "attempts": self.attempts,
                "jobs": self.jobs, "log": self.log, "error": self.error, "result": self.result}


def read_jobs(root: Path) -> dict[str, Any]:
    """`PLAN/jobs/jobs.json` (an empty record when no job was ever submitted, or when the
    file is unreadable: it only reports, the member directories are the truth)."""
    path = root / JOBS_DIR / JOBS_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"schema": JOBS_SCHEMA, "members": {}}
    if not isinstance(record, dict) or not isinstance(record.get("members"), dict):
        return {"schema": JOBS_SCHEMA, "members": {}}
    return record


def _log_tail(path: Path, n: int = LOG_TAIL) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _rank0(job: Any) -> Any:
    """The job's first task (rank 0: it writes the result and the log shown)."""
    return job.task(0) if job.num_tasks > 1 else job


class _Driver:
    """Submits, watches and resubmits the jobs of one `run_member_jobs` call."""

    def __init__(self, plan: Plan, phase: str, cfg: ExecutorConfig, options: dict[str, Any],
                 log: Callable[[str], None]) -> None:
        self.plan, self.phase, self.cfg, self.log = plan, phase, cfg, log
        self.folder = check_jobs_dir(plan.root)
        self.options = dict(options)
        if cfg.executor == "local":
            self.options["threads"] = cfg.threads()
        self.executor = make_executor(cfg, self.folder)
        record = read_jobs(plan.root)
        old, self.previous = record["members"], str(record.get("executor", ""))
        self.state: dict[str, MemberJobs] = {}
        for name, rec in old.items():
            if isinstance(rec, dict):
                self.state[name] = MemberJobs(
                    phase=str(rec.get("phase", "run")), state=str(rec.get("state", "pending")),
                    jobs=[str(j) for j in rec.get("jobs", [])], log=str(rec.get("log", "")),
                    error=str(rec.get("error", "")), result=dict(rec.get("result") or {}))
        self.running: dict[str, Any] = {}
        self._last_force = self._last_report = time.monotonic()
        self.report: Callable[[list[str]], str] | None = None
        self.report_s = 30.0

    def save(self) -> None:
        write_json_atomic(self.folder / JOBS_FILE, {
            "schema": JOBS_SCHEMA, "executor": self.cfg.executor, "phase": self.phase,
            "members": {n: s.to_dict() for n, s in self.state.items()}})

    def submit(self, names: list[str]) -> None:
        env_threads = os.environ.get("OMP_NUM_THREADS")
        if self.cfg.executor == "local":  # the job processes inherit it
            os.environ["OMP_NUM_THREADS"] = str(self.options["threads"])
        try:
            fn, root = MemberJob(), str(self.plan.root)
            if len(names) > 1:
                with self.executor.batch():  # one Slurm job array
                    jobs = [self.executor.submit(fn, root, n, self.phase, self.options_of(n))
                            for n in names]
            else:
                jobs = [self.executor.submit(fn, root, names[0], self.phase,
                                             self.options_of(names[0]))]
        finally:
            if self.cfg.executor == "local":
                if env_threads is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = env_threads
        for name, job in zip(names, jobs):
            rec = self.state[name]
            rec.state, rec.error, rec.result = "running", "", {}
            rec.jobs.append(str(job.job_id))
            rec.log = str(_rank0(job).paths.stderr) if self.cfg.executor != "debug" else ""
            self.running[name] = job
        self.save()
        if self.cfg.executor != "debug":
            self.log(f"submitted {len(names)} job(s) ({self.cfg.executor}): " + ", ".join(
                f"{n} [{self.state[n].jobs[-1]}]" for n in names))

    def options_of(self, name: str) -> dict[str, Any]:
        """A retried job continues its member's work (no `overwrite` the second time)."""
        if self.state[name].attempts:
            return {**self.options, "overwrite": False}
        return self.options

    def outcome(self, job: Any) -> dict[str, Any]:
        if self.cfg.executor == "debug":
            return job.result()
        first = _rank0(job)
        if not first.paths.result_pickle.exists():
            tail = _log_tail(first.paths.stderr) or _log_tail(first.paths.stdout)
            return {"error": f"job {job.job_id} ended without a result (killed, or its node "
                             f"failed; state {job.state})", "tail": tail}
        try:
            return job.results()[0]  # rank 0's, when the job has several tasks
        except Exception as exc:  # submitit's FailedJobError: the job itself crashed
            return {"error": str(exc).strip().splitlines()[-1][:500],
                    "tail": _log_tail(first.paths.stderr)}

    def finished(self, name: str, job: Any) -> bool:
        if self.cfg.executor == "debug":
            return True
        force = time.monotonic() - self._last_force > 15 * self.cfg.poll_s
        if force:
            self._last_force = time.monotonic()
        return bool(job.done(force_check=force))

    def settle(self, name: str, out: dict[str, Any], queue: deque[str]) -> None:
        rec = self.state[name]
        if "error" not in out:
            rec.state = "busy" if out.get("status") == "busy" else "done"
            rec.result = out
            self.log(f"{name}: {_describe(out)}")
            return
        rec.attempts += 1
        tail = out.get("tail") or (_log_tail(Path(rec.log)) if rec.log else "")
        if rec.attempts < self.cfg.max_attempts:
            rec.state = "pending"
            self.log(f"{name}: attempt {rec.attempts} failed ({out['error']}); submitting it "
                     f"again (it resumes from its newest checkpoint)")
            queue.appendleft(name)
        else:
            rec.state, rec.error = "failed", f"{out['error']}\n{tail}".strip()
            self.log(f"{name}: failed {rec.attempts} times; last error: {out['error']}"
                     + ("\n    " + "\n    ".join(tail.splitlines()) if tail else ""))

    def cancel_running(self) -> None:
        for name, job in self.running.items():
            try:
                job.cancel(check=False)
            except Exception:  # a job that ended meanwhile
                pass
            self.state[name].state = "pending"  # stopped; its work so far is kept

    def reattach(self, name: str) -> bool:
        """Watch the Slurm job an earlier `sweep run|analyze` of this phase left running
        (the command was stopped; its jobs were not) instead of submitting another."""
        rec = self.state.get(name)
        if (self.cfg.executor != "slurm" or self.previous != "slurm" or rec is None
                or rec.state != "running" or rec.phase != self.phase or not rec.jobs):
            return False
        self.running[name] = submitit.SlurmJob(folder=str(self.folder / "%j"),
                                               job_id=rec.jobs[-1])
        self.log(f"{name}: following its running job {rec.jobs[-1]}")
        return True

    def run(self, names: list[str]) -> dict[str, MemberJobs]:
        queue: deque[str] = deque()
        for name in names:
            if not self.reattach(name):
                self.state[name] = MemberJobs(phase=self.phase, jobs=self.state.get(
                    name, MemberJobs()).jobs)
                queue.append(name)
        self.save()
        limit = self.cfg.jobs if self.cfg.executor == "local" else (
            1 if self.cfg.executor == "debug" else len(names))
        while queue or self.running:
            batch = []
            while queue and len(self.running) + len(batch) < limit:
                batch.append(queue.popleft())
            if batch:
                self.submit(batch)
            if self.cfg.executor != "debug":
                time.sleep(self.cfg.poll_s)
            for name, job in list(self.running.items()):
                if self.finished(name, job):
                    del self.running[name]
                    self.settle(name, self.outcome(job), queue)
                    self.save()
            if (self.report and self.running
                    and time.monotonic() - self._last_report >= self.report_s):
                self._last_report = time.monotonic()
                done = sum(self.state[n].state in ("done", "busy") for n in names)
                self.log(f"[{done}/{len(names)} done, {len(queue)} waiting] "
                         + self.report(list(self.running)))
        return {n: self.state[n] for n in names}


def _describe(out: dict[str, Any]) -> str:
    status = out.get("status", "done")
    if status == "busy":
        return "another process is working on it; skipped"
    if status == "finished":
        return f"finished already (val loss {out.get('val_loss', float('nan')):.3f})"
    if status in ("trained", "resumed"):
        return (f"{status} to step {out['steps']} in {out['seconds']:.0f} s, val loss "
                f"{out['val_loss']:.3f}, {out['tokens_per_s']:,} tokens/s")
    return f"{status} in {out.get('seconds', 0):.0f} s"


def run_member_jobs(plan: Plan, members: list[Member], phase: str, cfg: ExecutorConfig,
                    options: dict[str, Any], *, log: Callable[[str], None] = logger.info,
                    cost: Callable[[Member], float] | None = None,
                    report: Callable[[list[str]], str] | None = None,
                    report_s: float = 30.0) -> dict[str, MemberJobs]:
    """One job per member of `members` on `cfg`'s executor, each resubmitted until it ends
    well or fails `cfg.max_attempts` times; returns each member's record (as in
    `jobs.json`).

    Args:
        plan: the plan (`sweep.plan.load_plan`).
        members: the members to train or measure (their worlds built already).
        phase: `run` (train) or `analyze` (the battery on every unmeasured checkpoint).
        cfg: the executor and its settings (checked first: nothing is submitted on error).
        options: passed to every job: `device`, and for `analyze` `overwrite`.
        log: receives one line per event.
        cost: the order of submission, costliest first (default: the members' order).
        report: given the running members' names, a line on their progress, logged every
            `report_s` seconds while jobs run (`sweep.status.progress_line`).

    Raises:
        ValueError: a bad setting, or a plan directory a job could not write to.
        KeyboardInterrupt: local and debug jobs are stopped first (their work is kept);
            Slurm jobs go on (`workbench sweep status PLAN` follows them).
    """
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}; pass one of {', '.join(PHASES)}")
    cfg.check()
    if not members:
        return {}
    driver = _Driver(plan, phase, cfg, options, log)
    driver.report, driver.report_s = report, report_s
    order = sorted(members, key=lambda m: -cost(m)) if cost else list(members)
    quiet = _DebugNotice()
    logging.getLogger().addFilter(quiet)
    try:
        return driver.run([m.name for m in order])
    except BaseException:
        if cfg.executor == "local":
            driver.cancel_running()
        raise
    finally:
        logging.getLogger().removeFilter(quiet)
        driver.save()
        stray = driver.folder / "%j"  # made by submitit's local controller, never used
        if stray.is_dir() and not any(stray.iterdir()):
            stray.rmdir()


class _DebugNotice(logging.Filter):
    """Drops the notice submitit's debug executor logs before every job."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Logging is written both" not in record.getMessage()
