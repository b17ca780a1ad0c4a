"""`workbench app`: serve the dashboard (registered under the `workbench.commands` entry
points; `app.serve` starts Streamlit)."""

from __future__ import annotations

import argparse

from workbench.cli.argtypes import bounded_int
from workbench.cli.registry import Command


def app_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default="runs", help="folder of runs, corpora and analyses; "
                   "the only place the app reads (runs)")
    p.add_argument("--port", type=bounded_int(0, 65535), default=8501,
                   help="0 picks a free port (8501)")


def app_command(args: argparse.Namespace) -> None:
    from app.serve import serve

    serve(args.runs, args.port)


APP = Command("app", "the dashboard (Streamlit on 127.0.0.1; blocks while serving)",
              app_arguments, app_command, order=90,
              on_interrupt="the dashboard is stopped; nothing was changed")
