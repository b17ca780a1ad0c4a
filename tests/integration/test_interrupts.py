"""Ctrl-C in a long command: one line (what was interrupted, what is kept, how to go on),
exit status 130, no traceback, and nothing left that looks complete but is not."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from workbench.models.checkpoints import list_checkpoints
from workbench.training.trainer import TrainResult


def _default_sigint() -> None:
    """In the child: Ctrl-C as a terminal delivers it, even when the tests run as a background
    job (a non-interactive shell starts those with SIGINT ignored, and children inherit it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "workbench.cli.core", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


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


# SIGINT to `workbench app` alone (`kill -INT PID`, a supervisor) ----------------------------

# What a shell does to a command it starts in the background (`workbench app &`): SIGINT
# ignored, inherited across exec, so Python raises no KeyboardInterrupt unless it sets a handler.
_IGNORE_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                  "os.execv(sys.executable, [sys.executable, '-m', 'workbench.cli.core', "
                  "*sys.argv[1:]])")


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not reaped yet, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_sigint_to_the_app_alone_stops_the_server(tmp_path: Path, sigint: str) -> None:
    from app.serve import free_port

    runs = tmp_path / "runs"
    runs.mkdir()
    port = free_port()
    args = ["app", "--runs", str(runs), "--port", str(port)]
    head = ["-m", "workbench.cli.core"] if sigint == "default" else ["-c", _IGNORE_SIGINT]
    log = tmp_path / "app.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *head, *args], stdout=out, stderr=out,
                                env={**os.environ, "OMP_NUM_THREADS": "1"},
                                start_new_session=True)  # its own group: only it is signalled
    servers: list[int] = []
    try:
        t0 = time.time()
        while not (servers and _listening(port)):
            assert proc.poll() is None, log.read_text()
            assert time.time() - t0 < 90, f"no server on port {port}: {log.read_text()}"
            time.sleep(0.2)
            servers = _children(proc.pid)
        proc.send_signal(signal.SIGINT)  # the parent alone, not its group
        assert proc.wait(timeout=60) == 130, log.read_text()
        t0 = time.time()
        while any(_alive(p) for p in servers) and time.time() - t0 < 10:
            time.sleep(0.1)
        assert not any(_alive(p) for p in servers), "the Streamlit server outlived the app"
        assert not _listening(port)
        assert "interrupted; the dashboard is stopped" in log.read_text()
    finally:
        for pid in [*servers, proc.pid]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
