"""A griffe extension for the API reference (mkdocs.yml: `extensions:` of the python handler).

The packages' docstrings carry doctests (`>>> ...` lines and their output) in free text, as the
test suite runs them with `--doctest-modules`. Markdown has no doctest blocks: their lines
would run together into a paragraph, and output such as `['pos', 'depth']` would be read as
reference links. This extension fences every doctest block (from a `>>>` line to the next
blank line) as a `pycon` code block before the docstring is parsed. The docstrings themselves
are unchanged.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """`text` with each doctest block fenced as ```` ```pycon ````, at its own indentation.

    A block starts at a line whose stripped text starts with `>>>` and ends before the next
    blank line (or a line indented less than its first).

    Examples:
        A module docstring with one doctest block:

        ```python
        fence_doctests("Tasks.\\n\\n>>> sorted(SUITES)\\n['facts', 'semantics']\\n")
        ```
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if not stripped.startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(stripped)]
        block = []
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            block.append(lines[i])
            i += 1
        out += [f"{indent}```pycon", *block, f"{indent}```"]
    return "\n".join(out)


class FenceDoctests(griffe.Extension):
    """Fence the doctest blocks of every docstring (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
