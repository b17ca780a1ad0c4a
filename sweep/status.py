"""`workbench sweep status PLAN`: where every member stands, readable while jobs run.

Read from the member directories (the truth: checkpoints, `metrics.jsonl`, `battery.json`),
the training locks (a live process holds a member's `.train.lock`) and `jobs/jobs.json` (the
job ids, attempts and errors `sweep.jobs` records). Nothing is written.

A member's state: `done` (trained; `measured` once the battery has every checkpoint),
`running` (its training lock is held, or its newest job still runs), `failed` (its job failed every
attempt: the error and the log's last lines are shown), `pending` (not started, or stopped
part way: `sweep run` resumes it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sweep.jobs import read_jobs
from sweep.member import Member
from sweep.plan import BATTERY_FILE, Plan, member_state
from sweep.run import TRAIN_LOCK, is_locked
from workbench.layout import METRICS, step_of
from workbench.models.checkpoints import list_checkpoints
from workbench.training.run_dir import metric_lines

STATUS_SCHEMA = "workbench.sweep_status/1"


def _last_step(run_dir: Path) -> int | None:
    lines = metric_lines(run_dir / METRICS)
    return max((rec["step"] for _, rec in lines), default=None)


def measured(plan: Plan, member: Member) -> int:
    """Checkpoints of the member that its `battery.json` holds (0 when none or unreadable)."""
    try:
        data = json.loads((plan.member_dir(member) / BATTERY_FILE).read_text())
        return len(data.get("checkpoints", []))
    except (OSError, ValueError, AttributeError):
        return 0


def _job_alive(rec: dict[str, Any], executor: str) -> bool:
    """Whether the member's newest job, recorded as running, still runs: a local job's id is
    its controller's process id; a Slurm job's state this machine cannot see, so it is
    believed (`sacct` knows; `sweep run` asks it)."""
    if rec.get("state") != "running" or not rec.get("jobs"):
        return False
    if executor == "slurm":
        return True
    if executor == "local" and str(rec["jobs"][-1]).isdigit():
        try:
            os.kill(int(rec["jobs"][-1]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True
    return False


def member_status(plan: Plan, member: Member, rec: dict[str, Any], *, executor: str = ""
                  ) -> dict[str, Any]:
    """One row of the table (see the module docstring); `rec` is the member's record in
    `jobs.json` and `executor` the one that recorded it."""
    run_dir = plan.run_dir(member)
    trained = member_state(plan, member)
    ckpts = list_checkpoints(run_dir)
    job_state = rec.get("state", "")
    running = is_locked(plan.member_dir(member) / TRAIN_LOCK) or _job_alive(rec, executor)
    if running:
        state = "running"
    elif job_state == "failed":
        state = "failed"
    elif trained == "done":
        state = "measured" if ckpts and measured(plan, member) >= len(ckpts) else "done"
    else:
        state = "pending"
    newest = step_of(ckpts[-1]) if ckpts else None
    return {"name": member.name, "state": state, "trained": trained,
            "step": _last_step(run_dir) or 0, "steps": member.steps,
            "checkpoints": len(ckpts), "newest_checkpoint": newest,
            "measured": measured(plan, member), "phase": rec.get("phase", ""),
            "attempts": rec.get("attempts", 0), "jobs": list(rec.get("jobs", [])),
            "log": rec.get("log", ""), "error": rec.get("error", "")}


def plan_status(plan: Plan) -> dict[str, Any]:
    """Every member's row, with the executor and phase of the newest `sweep run|analyze`."""
    record = read_jobs(plan.root)
    jobs, executor = record["members"], str(record.get("executor", ""))
    rows = [member_status(plan, m, r if isinstance(r := jobs.get(m.name), dict) else {},
                          executor=executor) for m in plan.members()]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return {"schema": STATUS_SCHEMA, "plan": str(plan.root), "name": plan.spec.name,
            "executor": record.get("executor", ""), "phase": record.get("phase", ""),
            "counts": counts, "members": rows}


def format_status(status: dict[str, Any]) -> str:
    """The table `workbench sweep status` prints."""
    lines = [f"{status['name']}: " + ", ".join(f"{n} {s}" for s, n in
                                               sorted(status["counts"].items()))
             + (f" (last: sweep {status['phase']} on {status['executor']})"
                if status["executor"] else ""),
             f"{'member':34s} {'state':9s} {'step':>11s} {'ckpts':>5s} {'battery':>7s} "
             f"{'tries':>5s}  jobs"]
    for r in status["members"]:
        step = f"{r['step']}/{r['steps']}"
        lines.append(f"{r['name']:34s} {r['state']:9s} {step:>11s} {r['checkpoints']:5d} "
                     f"{r['measured']:3d}/{r['checkpoints']:<3d} {r['attempts']:5d}  "
                     f"{','.join(r['jobs'][-3:]) or '-'}")
        if r["state"] == "failed":
            lines += [f"    {ln}" for ln in r["error"].splitlines()]
            if r["log"]:
                lines.append(f"    log: {r['log']}")
    return "\n".join(lines)


def progress_line(plan: Plan, names: list[str], phase: str) -> str:
    """The running members' progress: training step, or checkpoints measured."""
    parts = []
    for name in names:
        member = plan.member(name)
        if phase == "run":
            parts.append(f"{name} step {_last_step(plan.run_dir(member)) or 0}/{member.steps}")
        else:
            parts.append(f"{name} battery {measured(plan, member)}/"
                         f"{len(list_checkpoints(plan.run_dir(member)))}")
    return "; ".join(parts)
