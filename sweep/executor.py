"""Where a sweep's member jobs run: a submitit executor (`local`, `slurm` or `debug`).

The workbench writes no scheduler: `workbench sweep run|analyze PLAN --executor E` hands one
job per member to submitit (https://github.com/facebookincubator/submitit), which runs it

- `local`: as its own process on this machine (`--jobs N` at once, cores / N torch threads
  each);
- `slurm`: as one task of a Slurm job array (`sbatch`; `--partition`, `--gpus-per-job`,
  `--cpus-per-job`, `--time`, `--array-parallelism`, `--slurm-arg KEY=VALUE`);
- `debug`: in this process, one after the other (what a debugger steps through).

Job files and logs go under `PLAN/jobs/` (`<job id>_<task>_log.out|err`, the sbatch script
`<job id>_submission.sh`).

>>> ExecutorConfig(executor="slurm", partition="gpu", gpus_per_job=1, time_min=120,
...                slurm_args=(("qos", "high"),)).slurm_parameters()["additional_parameters"]
{'qos': 'high'}
>>> ExecutorConfig(partition="gpu").check()
Traceback (most recent call last):
...
ValueError: --partition is a Slurm option; pass --executor slurm with it (or drop it)
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXECUTORS = ("local", "slurm", "debug")
JOBS_DIR = "jobs"
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # a local job runs until it ends (submitit's default: 2 min)
SLURM_TIME_MIN = 240  # a job reaching it is requeued by submitit and resumes
SLURM_FLAGS = {"partition": "--partition", "gpus_per_job": "--gpus-per-job",
               "cpus_per_job": "--cpus-per-job", "time_min": "--time",
               "array_parallelism": "--array-parallelism", "slurm_args": "--slurm-arg"}


@dataclass(frozen=True)
class ExecutorConfig:
    """How member jobs are submitted.

    Args:
        executor: `local`, `slurm` or `debug`.
        jobs: members running at once on this machine (`local`; each gets cores / jobs
            torch threads).
        tasks_per_job: processes per job; above 1 a member trains data-parallel (the
            trainer's DDP path, one rank per task: what `torchrun` would start).
        max_attempts: a member whose job fails (or is killed) this many times is marked
            failed; the others go on.
        partition: Slurm's `--partition`.
        gpus_per_job: Slurm's `--gpus-per-node`.
        cpus_per_job: Slurm's `--cpus-per-task`.
        time_min: Slurm's `--time`, in minutes (a job reaching it is requeued and resumes).
        array_parallelism: the job array's `%` limit (jobs running at once).
        slurm_args: any other sbatch option as (key, value) pairs (`--slurm-arg qos=high`).
        poll_s: seconds between two looks at the running jobs.
    """

    executor: str = "local"
    jobs: int = 1
    tasks_per_job: int = 1
    max_attempts: int = 3
    partition: str | None = None
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    time_min: int | None = None
    array_parallelism: int | None = None
    slurm_args: tuple[tuple[str, str], ...] = ()
    poll_s: float = 1.0

    def check(self) -> None:
        """Raises ValueError (one line naming the value and the fix) for a setting that
        cannot work, before any job is submitted."""
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor {self.executor!r}; choose one of "
                             f"{', '.join(EXECUTORS)}")
        for name, value in (("--jobs", self.jobs), ("--tasks-per-job", self.tasks_per_job),
                            ("max_attempts", self.max_attempts)):
            if value < 1:
                raise ValueError(f"{name} {value}; pass 1 or more")
        if self.executor != "slurm":
            for name, flag in SLURM_FLAGS.items():
                if getattr(self, name) not in (None, ()):
                    raise ValueError(f"{flag} is a Slurm option; pass --executor slurm with "
                                     "it (or drop it)")
        if self.executor == "slurm" and self.jobs != 1:
            raise ValueError(f"--jobs {self.jobs} is local parallelism; with --executor slurm "
                             "use --array-parallelism to cap the jobs running at once")
        if self.executor == "debug" and (self.jobs != 1 or self.tasks_per_job != 1):
            raise ValueError("--executor debug runs one member after the other in this "
                             "process; drop --jobs and --tasks-per-job (or use --executor "
                             "local)")
        for name in ("gpus_per_job", "cpus_per_job", "time_min", "array_parallelism"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "gpus_per_job" else 1):
                raise ValueError(f"{SLURM_FLAGS[name]} {value}; pass a positive number")
        if self.executor == "slurm":
            missing = [t for t in ("sbatch", "srun", "sacct") if shutil.which(t) is None]
            if missing:
                raise ValueError(f"--executor slurm: {', '.join(missing)} not found on PATH; "
                                 "run this on a Slurm login node (or use --executor local)")
        for key, _ in self.slurm_args:
            if not key or not key.replace("-", "_").replace("_", "a").isalnum():
                raise ValueError(f"--slurm-arg {key!r}: not an sbatch option name; pass "
                                 "KEY=VALUE, e.g. --slurm-arg qos=high")

    def threads(self) -> int:
        """Torch threads per local job: `OMP_NUM_THREADS` when it is set (the caller's
        choice, e.g. one thread for bit-identical results), else this machine's cores shared
        by `jobs` jobs of `tasks_per_job` processes."""
        try:
            return max(1, int(os.environ["OMP_NUM_THREADS"]))
        except (KeyError, ValueError):
            return max(1, (os.cpu_count() or 1) // (self.jobs * self.tasks_per_job))

    def slurm_parameters(self) -> dict[str, Any]:
        """submitit `SlurmExecutor.update_parameters` keywords."""
        params: dict[str, Any] = {"ntasks_per_node": self.tasks_per_job,
                                  "time": self.time_min or SLURM_TIME_MIN, "signal_delay_s": 120,
                                  "job_name": "workbench-sweep"}
        for name, key in (("partition", "partition"), ("gpus_per_job", "gpus_per_node"),
                          ("cpus_per_job", "cpus_per_task"),
                          ("array_parallelism", "array_parallelism")):
            if getattr(self, name) is not None:
                params[key] = getattr(self, name)
        if self.slurm_args:
            params["additional_parameters"] = dict(self.slurm_args)
        return params


def parse_slurm_arg(text: str) -> tuple[str, str]:
    """`KEY=VALUE` of `--slurm-arg` as a pair (argparse type).

    >>> parse_slurm_arg("qos=high")
    ('qos', 'high')
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--slurm-arg {text!r}; pass KEY=VALUE, e.g. --slurm-arg qos=high")
    return key.strip(), value.strip()


def check_jobs_dir(root: Path) -> Path:
    """`root/jobs`, created; raises ValueError when a job could not write there."""
    folder = root / JOBS_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write job files under {folder} ({exc.strerror or exc}); "
                         "make the plan directory writable or plan the sweep elsewhere") from exc
    return folder


def make_executor(cfg: ExecutorConfig, folder: Path) -> Any:
    """The submitit executor of `cfg` (checked by the caller: `ExecutorConfig.check`), its
    files under `folder`."""
    import submitit

    if cfg.executor == "debug":
        return submitit.DebugExecutor(folder=str(folder / "%j"))
    if cfg.executor == "local":
        ex = submitit.LocalExecutor(folder=str(folder / "%j"))
        ex.update_parameters(timeout_min=cfg.time_min or LOCAL_TIMEOUT_MIN,
                             tasks_per_node=cfg.tasks_per_job)
        return ex
    ex = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=cfg.max_attempts)
    ex.update_parameters(**cfg.slurm_parameters())
    return ex
