"""MkDocs hooks of the documentation site (`hooks:` in mkdocs.yml).

- `cli.md` holds the markers `<!-- workbench-help -->` ... `<!-- /workbench-help -->`; at build
  time what lies between them (a note for readers on GitHub) is replaced by the `--help` of
  every `workbench` subcommand, printed by `docs/gen_cli.py` in a subprocess (so
  the build does not import torch itself). Nothing is written into `docs/`: the git tree stays
  clean.
- Every module of the packages must appear on an API page (`::: package.module` in
  `docs/api/*.md`), so a new module cannot go undocumented.

A failure is a warning, so `mkdocs build --strict` (`make docs`, `make test`) fails on it.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.docs")
MARKERS = re.compile(r"<!-- workbench-help -->.*?<!-- /workbench-help -->", re.DOTALL)
SCRIPT = Path(__file__).with_name("gen_cli.py")
PACKAGES = ("workbench", "circuits", "probe", "beliefs", "icl", "sweep", "attribution",
            "features")
IDENTIFIER = re.compile(r"^:::\s+([\w.]+)", re.MULTILINE)
_documented: set[str] = set()


def _cli_reference() -> str:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        log.warning("the command-line reference could not be generated: %s (run `%s %s`)",
                    done.stderr.strip()[-2000:], sys.executable, SCRIPT)
        return "!!! failure\n    The command-line reference could not be generated.\n"
    return done.stdout


def modules(root: Path) -> set[str]:
    """Every module of `PACKAGES` under `root` (packages by their `__init__`; private
    `_name` modules and `__main__` left out)."""
    found = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            if not all((d / "__init__.py").is_file()
                       for d in path.parents if d.is_relative_to(root / package)):
                continue  # not inside a package
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(p.startswith("_") for p in parts):
                continue
            found.add(".".join(parts))
    return found


def on_pre_build(config) -> None:  # noqa: ANN001 (mkdocs API)
    _documented.clear()


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (mkdocs API)
    if page.file.src_uri.startswith("api/"):
        _documented.update(IDENTIFIER.findall(markdown))
    if MARKERS.search(markdown):
        reference = _cli_reference()
        return MARKERS.sub(lambda _: reference, markdown)
    return markdown


def on_post_build(config) -> None:  # noqa: ANN001 (mkdocs API)
    root = Path(config.config_file_path).parent
    for name in sorted(modules(root) - _documented):
        log.warning("module %s is on no API page: add `::: %s` to docs/api/ (the page of its "
                    "package)", name, name)
