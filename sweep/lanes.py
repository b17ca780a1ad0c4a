"""Members in parallel on one machine: `workbench sweep run|analyze PLAN --jobs N` splits the
members into N lanes and runs each lane as its own `workbench sweep ... --member ...` process
with `cores // N` torch threads.

Small members do not use a second thread well (a 1 x 64 model trains about as fast on one
thread as on two), so on 2 cores two one-thread lanes finish a family far sooner than one
two-thread process. Lanes are balanced greedily (the costliest member first, each to the lane
with the least work so far): by compute for training, by checkpoints (`battery_cost`) for the
battery, whose time per checkpoint varies little with size. The per-member locks of
`sweep.run` and the per-member `battery.json` caches of `sweep.analyze` make lanes safe to
interrupt and to run again.

>>> from types import SimpleNamespace as M
>>> [[m.name for m in lane] for lane in split([M(name=n, compute=c) for n, c in
...                                             [("a", 1), ("b", 2), ("c", 8), ("d", 4)]], 2)]
[['c'], ['d', 'b', 'a']]
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any


def split(members: Sequence[Any], jobs: int,
          cost: Callable[[Any], float] = lambda m: m.compute) -> list[list[Any]]:
    """`members` in `jobs` lanes of about equal `cost` (default: their compute, for
    training); empty lanes are dropped."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}; pass 1 or more")
    lanes: list[list[Any]] = [[] for _ in range(jobs)]
    work = [0.0] * jobs
    for m in sorted(members, key=lambda m: -cost(m)):
        i = work.index(min(work))
        lanes[i].append(m)
        work[i] += cost(m)
    return [lane for lane in lanes if lane]


def battery_cost(n_checkpoints: int, compute: float, largest: float) -> float:
    """About what the battery costs on a member: per checkpoint, a fixed part (probe fits,
    ROME steps) and a part growing with the model. On the `cpu` family, one thread per lane:
    about 8 s per checkpoint at 0.2M non-embedding parameters, 12 s at 0.6M, 17 s at 1.8M,
    23 s at 3.2M (the largest), close to `1 + 2 C / C_largest` times the fixed part.

    >>> battery_cost(12, 1.0, 4.0), battery_cost(12, 4.0, 4.0)
    (18.0, 36.0)
    """
    return n_checkpoints * (1.0 + 2.0 * compute / largest)


def threads_per_lane(jobs: int) -> int:
    """Torch threads for each of `jobs` lanes on this machine's cores (at least one)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def run_lanes(command: Sequence[str], lanes: list[list[Any]]) -> None:
    """Run `workbench <command> --member <names of the lane>` once per lane, all at once, and
    wait for every one.

    Raises:
        ValueError: a lane failed (the others are waited for first; run the command again
            to continue: finished work is kept).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_lane(len(lanes)))}
    procs = [subprocess.Popen([sys.executable, "-m", "workbench.cli.core", *command, "--member",
                               *[m.name for m in lane]], env=env) for lane in lanes]
    try:
        codes = [p.wait() for p in procs]
    except BaseException:  # Ctrl-C: stop every lane (their work so far is kept)
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if failed:
        raise ValueError("lane(s) " + ", ".join(f"{i + 1} (exit {c})" for i, c in failed)
                           + f" of `workbench {' '.join(command)}` failed (see above); run it "
                           "again to continue: finished members and measured checkpoints are "
                           "kept")
