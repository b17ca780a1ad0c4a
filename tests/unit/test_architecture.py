"""The rooms of the house: the import contract (`[tool.importlinter]` in pyproject.toml), no
package importing another's private names, subcommands registered by the packages that own
them, and every analysis with the same shape."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli.registry import Command, build_parser, command_argv, commands

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("workbench", "circuits", "probe", "beliefs", "icl", "sweep", "app", "attribution",
            "features")
HELP_ORDER = ["world", "train", "eval", "cache", "induction", "circuit", "probe", "beliefs", "icl",
              "sae", "attribute", "sweep", "info", "export", "app"]


def _sources(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _private_imports(path: Path, own: str) -> list[str]:
    """`from other.module import _name` and `import other._module` in `path` (a module of
    the package `own`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top in PACKAGES and top != own:
                parts = node.module.split(".")[1:] + [a.name for a in node.names]
                found += [f"{node.module}.{a.name}" for a in node.names
                          if any(p.startswith("_") and not p.startswith("__") for p in parts)]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] in PACKAGES and parts[0] != own and any(
                        p.startswith("_") and not p.startswith("__") for p in parts[1:]):
                    found.append(a.name)
    return found


def test_import_contract_is_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_package_imports_another_packages_private_names() -> None:
    bad = [f"{path.relative_to(ROOT)}: {name}" for pkg in PACKAGES for path in _sources(pkg)
           for name in _private_imports(path, pkg)]
    assert bad == []


def test_private_import_check_finds_one(tmp_path: Path) -> None:  # the check can fail
    (tmp_path / "x.py").write_text("from workbench.evaluate import _secret\nimport probe._m\n"
                                   "from workbench.prompts import encode\n"
                                   "from circuits.scores import _own\n")
    assert _private_imports(tmp_path / "x.py", "circuits") == ["workbench.evaluate._secret",
                                                               "probe._m"]


def test_commands_are_registered_by_their_packages_in_help_order() -> None:
    found = commands()
    assert [c.name for c in found] == HELP_ORDER
    owner = {c.name: getattr(c.run, "module_name", c.run.__module__).split(".")[0]
             for c in found}
    assert owner == {"world": "workbench", "train": "workbench", "eval": "workbench",
                     "cache": "workbench", "info": "workbench", "export": "workbench",
                     "induction": "circuits", "circuit": "circuits",
                     "probe": "probe", "beliefs": "beliefs", "icl": "icl", "sweep": "sweep",
                     "attribute": "attribution", "app": "app", "sae": "features"}
    cli = (ROOT / "workbench/cli/core.py").read_text()
    for package in ("circuits", "probe", "beliefs", "icl", "sweep", "attribution", "app",
                    "features"):
        assert f"from {package}" not in cli and f"import {package}" not in cli


def test_command_argv_reads_the_commands_own_options() -> None:
    parser = build_parser()
    assert command_argv("induction", {"model": "runs/demo", "n_seqs": 8, "overwrite": True,
                                      "corpus": None}, parser=parser) == [
        "induction", "--model", "runs/demo", "--n-seqs", "8", "--overwrite"]
    assert command_argv("train", {"run": "runs/x"}, parser=parser) == ["train", "--run",
                                                                       "runs/x"]
    with pytest.raises(ValueError, match="has no option 'n_seq'; its options"):
        command_argv("induction", {"n_seq": 8}, parser=parser)
    with pytest.raises(ValueError, match="`workbench nope` is not a registered command"):
        command_argv("nope", {}, parser=parser)


def test_duplicate_or_foreign_entries_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.cli.registry as registry

    class Entry:
        def __init__(self, name: str, value: object) -> None:
            self.name, self.value, self._obj = name, f"x:{name}", value

        def load(self) -> object:
            return self._obj

    cmd = Command("echo", "echo", lambda p: None, lambda a: None)
    monkeypatch.setattr(registry, "entry_points", lambda group: [Entry("a", cmd),
                                                                 Entry("b", cmd)])
    with pytest.raises(ValueError, match="two packages register `workbench echo`"):
        registry.commands()
    monkeypatch.setattr(registry, "entry_points", lambda group: [Entry("a", object())])
    with pytest.raises(ValueError, match="is not a workbench.cli.registry.Command"):
        registry.commands()
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    with pytest.raises(ValueError, match="pip install -e"):
        registry.commands()


def test_every_analysis_keeps_the_whole_protocol() -> None:
    from workbench.analysis import analyses, protocol_problems

    found = analyses()
    assert sorted(found) == ["attribute", "beliefs", "circuit", "icl", "induction", "probe"]
    for kind, module in found.items():
        assert protocol_problems(module) == [], kind
        assert module.KIND == kind


def test_every_analysis_command_is_the_generic_one() -> None:
    from workbench.analysis import analyses
    from workbench.cli.analyses import AnalysisRunner

    by_name = {c.name: c for c in commands()}
    for kind, module in analyses().items():
        runner = by_name[kind].run
        assert isinstance(runner, AnalysisRunner) and runner.module_name == module.__name__
    for package in ("circuits", "probe", "beliefs", "icl", "attribution", "features"):  # flags
        source = (ROOT / package / "cli.py").read_text()
        assert "write_report" not in source and "from_ref" not in source, package


def test_the_protocol_check_finds_what_is_missing(tmp_path: Path) -> None:
    import types

    from workbench.analysis import protocol_problems

    m = types.ModuleType("fake")
    assert protocol_problems(m)[0] == "fake has no KIND"
    m.KIND, m.SCHEMA, m.FIGURES = "fake", "workbench.other/1", {".fig.json": print}
    m.Config = dict
    m.run = lambda model, corpus, cfg=None, *, ref=None, progress=True: {}
    m.from_ref = lambda ref, cfg, *, corpus=None, device="cpu": {}
    m.summary = lambda report: ""
    problems = protocol_problems(m)
    assert "fake.SCHEMA 'workbench.other/1' is not 'workbench.KIND/N'" in problems
    assert "fake.Config is not a dataclass" in problems
    assert "fake.from_ref's cfg does not default to None (the Config's defaults)" in problems
    assert "fake.from_ref has no keyword-only 'progress'" in problems


def test_app_keeps_no_list_of_analyses() -> None:
    source = "\n".join(p.read_text() for p in _sources("app"))
    for module in ("circuits.induction", "probe.layers", "beliefs.suite", "icl.measure"):
        assert f"from {module.split('.')[0]} import {module.split('.')[1]}" not in source
    assert "_argv(entry" not in source.replace("cache_argv(entry", "").replace(
        "eval_argv(entry", "")


def test_step_names_and_run_files_are_spelled_in_one_module() -> None:
    import re

    spelled = re.compile(r'/ "(run\.json|metrics\.jsonl|checkpoints|eval\.json)"'
                         r'|removeprefix\("step_"\)|split\("_"\)\[-1\]')
    bad = [f"{path.relative_to(ROOT)}:{i}" for pkg in PACKAGES for path in _sources(pkg)
           if path.name != "layout.py"
           for i, line in enumerate(path.read_text().splitlines(), 1)
           if spelled.search(line)]
    assert bad == []


def test_the_command_line_parser_does_not_load_models() -> None:
    """Building `workbench`'s parser (every command's flags) imports no TransformerLens or
    kronfluence: they are imported when a command runs (3-4 s that every command, `--help`
    and Ctrl-C timing would otherwise pay)."""
    import subprocess
    import sys

    code = ("import sys; from workbench.cli.registry import build_parser; build_parser(); "
            "print(sorted(m for m in ('transformer_lens', 'transformers', 'kronfluence', "
            "'bm25s', 'submitit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out


def test_library_warnings_are_held_until_the_command_succeeds(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A refusal is one line: another library's warning logged before it is dropped; after a
    command that succeeds it is printed."""
    import argparse
    import logging
    import warnings

    from workbench.cli import core

    def noisy(fail: bool) -> None:
        logging.getLogger("somelib").warning("a library's advice")
        warnings.warn("a deprecation", DeprecationWarning, stacklevel=1)
        logging.getLogger("workbench.x").warning("our own warning")
        if fail:
            raise ValueError("the one line")

    def parser() -> argparse.ArgumentParser:
        p = argparse.ArgumentParser()
        p.add_argument("--fail", action="store_true")
        p.add_argument("-v", "--verbose", action="store_true")
        p.set_defaults(func=lambda a: noisy(a.fail), command="noisy", on_interrupt="")
        return p

    saved = core.build_parser
    core.build_parser = parser  # type: ignore[assignment]
    root = logging.getLogger()
    handler = logging.StreamHandler()  # stands in for basicConfig's (stderr, as captured)
    root.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            assert core.main(["--fail"]) == 2
            err = capsys.readouterr().err
            assert "the one line" in err and "advice" not in err and "deprecation" not in err
            assert core.main([]) == 0
            err = capsys.readouterr().err
            assert "a library's advice" in err and "a deprecation" in err
        assert handler.filters == []  # nothing left attached between commands
    finally:
        core.build_parser = saved  # type: ignore[assignment]
        root.removeHandler(handler)


def test_unknown_arguments_are_refused_by_their_subcommand(
        capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.cli.core import main

    assert main(["info", "--model", "runs/x", "--step", "3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "workbench info: error: unrecognized arguments: --step 3; see `workbench info --help`")
    assert main(["sweep", "status", "PLAN", "--bogus"]) == 2
    assert "workbench sweep status: error: unrecognized arguments: --bogus; see `workbench " \
        "sweep status --help`" in capsys.readouterr().err
