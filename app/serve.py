"""`workbench app`: start the dashboard with Streamlit, bound to 127.0.0.1, headless, reading
only under the runs folder (passed to the app as `$WORKBENCH_RUNS`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from app.runs import RUNS_ENV, runs_root

SCRIPT = Path(__file__).with_name("streamlit_app.py")
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port(port: int, host: str = HOST) -> int:
    """`port` when it can be bound (0: a free one).

    Raises:
        ValueError: out of range, or in use.
    """
    if port == 0:
        return free_port(host)
    if not 0 < port < 65536:
        raise ValueError(f"--port {port} is not a TCP port; pass 1-65535 (or 0 for a free one)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise ValueError(f"port {port} on {host} is in use (another dashboard?); pass "
                             "--port N with a free port, or --port 0 to pick one") from None
    return port


def streamlit_command(port: int, python: str = sys.executable) -> list[str]:
    """The `streamlit run` command line of the dashboard (through `streamlit_main`)."""
    return [python, "-m", "app.serve", "run", str(SCRIPT),
            "--server.address", HOST, "--server.port", str(port), "--server.headless", "true",
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]


def url(port: int) -> str:
    return f"http://{HOST}:{port}"


def start(runs: str | Path, port: int, quiet: bool = False) -> tuple[subprocess.Popen, str]:
    """Start the dashboard in the background; the process and its URL (tests, benchmarks)."""
    root = runs_root(str(runs))
    port = check_port(port)
    env = {**os.environ, RUNS_ENV: str(root), "HF_HUB_OFFLINE": os.environ.get(
        "HF_HUB_OFFLINE", "1")}
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(streamlit_command(port), env=env, stdout=out, stderr=out)
    return proc, url(port)


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate the server (SIGTERM) and wait for it; kill it when it is not gone after
    `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve(runs: str | Path, port: int = 8501) -> None:
    """Serve the dashboard until interrupted; prints its URL first. SIGTERM or SIGINT sent
    to this process alone (`kill`, `kill -INT`, a supervisor) stops the server too.

    Raises:
        FileNotFoundError: no runs folder.
        ValueError: a bad or busy port.
        OSError: Streamlit stopped with an error.
        KeyboardInterrupt: SIGINT or Ctrl-C (the server is stopped first).
    """
    procs: list[subprocess.Popen] = []

    def stop(signum: int, frame: object) -> None:  # the server is stopped in `finally`
        for s in stops:  # a second signal must not cut the stopping short
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(0)

    # Both handlers set explicitly: a process started in the background by a shell or a
    # supervisor inherits SIGINT ignored, and Python then raises no KeyboardInterrupt.
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, stop) for s in stops}
    try:
        proc, address = start(runs, port)
        procs.append(proc)
        print(f"Interpretability Workbench dashboard: {address}  (runs folder "
              f"{runs_root(str(runs))}; Ctrl-C stops it)", flush=True)
        rc = proc.wait()
    finally:
        for proc in procs:
            stop_server(proc)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if rc not in (0, -2, 130):
        raise OSError(f"streamlit exited with status {rc}; see its output above")


def streamlit_main() -> None:
    """`streamlit ...` (its own command line, from `sys.argv`) with Streamlit's legacy
    `pages/` folder mode off. The pages live in `app/pages/` beside the router, which makes
    Streamlit run a page's file alone, without the router, when a new server's first request
    is a page's URL; `st.navigation` turns that mode off, but only once the router has run."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web.cli import main

    PagesManager.uses_pages_directory = False
    main()


if __name__ == "__main__":
    streamlit_main()
