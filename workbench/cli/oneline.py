"""How a command's refusal reaches the user as one line: the exception's text on one line, an
empty path flag caught before anything runs, and other libraries' warnings held back while
a command runs (printed after it succeeds, dropped when it fails)."""

from __future__ import annotations

import argparse
import logging
import os

# Flags that name a file or folder: an empty one (`--run ''`) would mean the current folder.
PATH_FLAGS = ("run", "out", "model", "corpus", "acts", "report", "plan", "text", "tokenizer",
              "facts", "probes", "cache", "factors", "runs")


def empty_path_flag(args: argparse.Namespace) -> str | None:
    """The first path flag given as an empty string (`--run ''`), None when there is none.

    >>> empty_path_flag(argparse.Namespace(run="", out="x"))
    '--run'
    """
    empty = [k for k, v in vars(args).items()
             if k in PATH_FLAGS and isinstance(v, str) and not v.strip()]
    return "--" + empty[0].replace("_", "-") if empty else None


def one_line(exc: BaseException) -> str:
    """An exception as the one line a refusal prints (a raw system error with its fix)."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # a raw system error
        return (f"{exc.filename}: {exc.strerror.lower()}; check the path and its permissions"
                + (f" (and {exc.filename2})" if exc.filename2 else ""))
    return " ".join(str(exc).split()) or type(exc).__name__


OUR_LOGGERS = ("workbench", "sweep", "probe", "icl", "beliefs", "circuits", "attribution", "app")


class HeldWarnings(logging.Filter):
    """Warnings of other libraries (and Python's `warnings`), held on the root logger's
    handlers while a command runs: printed when it succeeds, dropped when it fails, so that
    a refusal is one line."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        super().__init__()
        self.handlers = handlers
        self.records: list[logging.LogRecord] = []
        for h in handlers:
            h.addFilter(self)
        logging.captureWarnings(True)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in OUR_LOGGERS:
            return True
        if not any(r is record for r in self.records):
            self.records.append(record)
        return False

    def release(self, show: bool) -> None:
        """Stop holding; print what was held when `show` (the command succeeded)."""
        for h in self.handlers:
            h.removeFilter(self)
        logging.captureWarnings(False)
        for record in self.records if show else ():
            for h in self.handlers:
                if record.levelno >= h.level:
                    h.handle(record)
        self.records = []


def hold_library_warnings() -> HeldWarnings:
    """Hold library warnings (see `HeldWarnings`); Transformers' own handler prints only errors
    unless TRANSFORMERS_VERBOSITY says otherwise (`-v` shows everything)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return HeldWarnings(list(logging.getLogger().handlers))
