"""Members in parallel on one machine: `workbench sweep run|analyze PLAN --jobs N` splits the
members into N lanes and runs each lane as its own `workbench sweep ... --member ...` process
with `cores // N` torch threads.

Small members do not use a second thread well (a 1 x 64 model trains about as fast on one
thread as on two), so on 2 cores two one-thread lanes finish a family far sooner than one
two-thread process. Lanes are balanced greedily by compute (the largest member first, each to
the lane with the least work so far). The per-member locks of `sweep.run` and the per-member
`battery.json` caches of `sweep.analyze` make lanes safe to interrupt and to run again.

>>> from types import SimpleNamespace as M
>>> [[m.name for m in lane] for lane in split([M(name=n, compute=c) for n, c in
...                                             [("a", 1), ("b", 2), ("c", 8), ("d", 4)]], 2)]
[['c'], ['d', 'b', 'a']]
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any


def split(members: Sequence[Any], jobs: int) -> list[list[Any]]:
    """`members` (anything with `compute`) in `jobs` lanes of about equal compute; empty lanes
    are dropped."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}; pass 1 or more")
    lanes: list[list[Any]] = [[] for _ in range(jobs)]
    work = [0.0] * jobs
    for m in sorted(members, key=lambda m: -m.compute):
        i = work.index(min(work))
        lanes[i].append(m)
        work[i] += m.compute
    return [lane for lane in lanes if lane]


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
    procs = [subprocess.Popen([sys.executable, "-m", "workbench.cli", *command, "--member",
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
