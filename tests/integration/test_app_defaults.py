"""Every dashboard button that runs a command, with its form left at its defaults, succeeds on
the shipped model and world: the command lines are built as the pages build them
(`app.runs.eval_argv`, `analysis_argv` with the form's default values, `cache_argv`) and run
through `workbench.cli.core.main` on a fresh copy (`workbench world build`, then
`python -m workbench.models.shipped install`), in the pages' menu order. Each command's wall
time is printed (`-s`) and attached to the test's report (`record_property`).

Slow (5-6 minutes on 2 CPU cores: the probe sweep of the whole val split and the belief
tests take about 2 each): `make test-slow`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app import runs
from workbench.cli.core import main
from workbench.models.shipped import install


def page_commands(root: Path) -> dict[str, tuple[list[str], Path]]:
    """Per page (menu order), the argv its button runs with the form untouched, and the file
    it must write."""
    (entry,) = runs.list_models(root)
    corpus = runs.corpus_for(entry, root)
    assert corpus is not None
    probe = runs.analysis_defaults("probe")  # what app/pages/probes.py's form starts at
    form = {"tasks": probe["tasks"], "probe": probe["probe"], "max_tokens": probe["max_tokens"]}
    return {
        "models": (runs.eval_argv(entry, corpus), entry.path / "eval.json"),
        "induction": (runs.analysis_argv("induction", entry, corpus),
                      entry.analysis("induction")),
        "probes": (runs.analysis_argv("probe", entry, corpus, **form), entry.analysis("probe")),
        "beliefs": (runs.analysis_argv("beliefs", entry, corpus), entry.analysis("beliefs")),
        "icl": (runs.analysis_argv("icl", entry, corpus), entry.analysis("icl")),
        "activations": (runs.cache_argv(entry, corpus), entry.path / "acts_val.h5"),
    }


@pytest.mark.slow
def test_every_page_default_run_succeeds_on_the_shipped_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], record_property) -> None:
    root = tmp_path / "runs"
    assert main(["world", "build", "--out", str(root / "world")]) == 0
    install(root / "demo")
    capsys.readouterr()
    times = {}
    for page, (argv, written) in page_commands(root).items():
        t0 = time.perf_counter()
        code = main(argv)
        times[page] = round(time.perf_counter() - t0, 1)
        out = capsys.readouterr()
        assert code == 0, f"{page}: {runs.display_command(argv)}\n{out.out}\n{out.err[-2000:]}"
        assert written.is_file(), f"{page}: {written} not written"
        record_property(f"seconds_{page}", times[page])
        with capsys.disabled():
            print(f"\n{page}: {times[page]} s  {runs.display_command(argv)}")
