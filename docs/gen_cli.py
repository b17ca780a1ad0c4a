"""Print the command-line reference as Markdown: `workbench --help` and the `--help` of every
subcommand (and of their own subcommands, such as `workbench world build`).

Run by the docs hook (`docs/hooks.py`) at every build, so `docs/cli.md` always shows the help
of the installed `workbench`. It finds the command through its console-script entry point,
so it does not depend on where the command-line code lives:

    .venv/bin/python docs/gen_cli.py > /tmp/cli.md
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from importlib.metadata import entry_points

os.environ["COLUMNS"] = "80"  # argparse wraps help to the terminal: make it the same everywhere
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# the choices of a subcommand positional, as argparse lists them: "  {build,retokenize}"
CHOICES = re.compile(r"^\s+\{([\w,-]+)\}", re.MULTILINE)


def workbench_main():
    """The function behind the `workbench` console script."""
    found = [ep for ep in entry_points(group="console_scripts") if ep.name == "workbench"]
    if not found:
        raise SystemExit("no `workbench` console script is installed; run `make install`")
    return found[0].load()


def help_of(main, words: list[str]) -> str:
    """What `workbench WORDS --help` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            status = main([*words, "--help"])
        except SystemExit as exc:
            status = exc.code
    if status not in (0, None) or not out.getvalue():
        raise SystemExit(f"`workbench {' '.join(words)} --help` exited with {status}: "
                         f"{err.getvalue().strip()}")
    return out.getvalue()


def walk(main, words: list[str]) -> list[tuple[list[str], str]]:
    """`(words, help)` of `workbench WORDS` and of every subcommand below it, in help order."""
    text = help_of(main, words)
    found = [(words, text)]
    match = CHOICES.search(text.split("positional arguments:", 1)[-1])
    for name in match.group(1).split(",") if match else ():
        found += walk(main, [*words, name])
    return found


def markdown() -> str:
    main = workbench_main()
    parts = []
    for words, text in walk(main, []):
        name = " ".join(["workbench", *words])
        level = "#" * min(2 + max(len(words) - 1, 0), 4)
        parts.append(f"{level} `{name}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(markdown())
