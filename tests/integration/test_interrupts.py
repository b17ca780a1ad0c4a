"""Ctrl-C in a long command: one line (what was interrupted, what is kept, how to go on),
exit status 130, no traceback, and nothing left that looks complete but is not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from workbench.models.checkpoints import list_checkpoints
from workbench.training.trainer import TrainResult


def _start(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "workbench.cli.core", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt(proc: subprocess.Popen[str], when: Callable[[str], bool],
               timeout: float = 120) -> tuple[int, str]:
    """SIGINT `proc` once `when(stderr so far)` is true; its exit status and whole stderr."""
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")),
                              daemon=True)
    reader.start()
    t0 = time.time()
    while not when("".join(err)):
        assert proc.poll() is None, "".join(err)
        assert time.time() - t0 < timeout, "the command never reached the point to interrupt"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    return proc.returncode, "".join(err)


def _lines(err: str) -> list[str]:
    return [x for x in err.splitlines() if x.strip()]


def test_ctrl_c_in_training_keeps_checkpoints_and_resume_finishes(world_corpus: Path,
                                                                  tmp_path: Path) -> None:
    run = tmp_path / "r"
    argv = ("train", "--preset", "tiny", "--corpus", str(world_corpus), "--run", str(run),
            "--steps", "200", "--no-progress")
    proc = _start(*argv)
    code, err = _interrupt(proc, lambda _: (run / "checkpoints" / "step_000016").is_dir())
    assert code == 130 and "Traceback" not in err, err
    assert _lines(err) == [_lines(err)[0]] and "interrupted; the checkpoints written so far " \
        "are kept; continue with the same command and --resume" in _lines(err)[0]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]  # no half-written checkpoint
    done = subprocess.run([sys.executable, "-m", "workbench.cli.core", *argv, "--resume"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert list_checkpoints(run)[-1].name == "step_000200"


def test_ctrl_c_in_a_probe_sweep_writes_no_report(tiny_run: TrainResult, world_corpus: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    proc = _start("probe", "--model", str(tiny_run.run_dir), "--corpus", str(world_corpus),
                  "--tasks", "syntax,semantics", "--min-per-class", "2", "--out", str(out))
    code, err = _interrupt(proc, lambda err: "probe tasks" in err)  # while probes are fitted
    assert code == 130 and "Traceback" not in err, err
    last = _lines(err)[-1]
    assert "interrupted" in last, err
    assert [x for x in _lines(err) if "%|" not in x] == [last]  # progress bars aside
    assert not out.exists() and not list(tmp_path.glob("*.fig.json"))
