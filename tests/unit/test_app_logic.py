"""The dashboard's logic without Streamlit: the runs folder and what is in it, path checks,
commands and their progress, windows of long inputs, the induction stripe, PCA, figures."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from app import compute
from app import runs as folder
from app.figures import (
    composition_figure,
    head_figure,
    head_grid_figure,
    probe_task_figure,
)
from app.serve import check_port, streamlit_command


def _run(root: Path, name: str, steps: tuple[int, ...], corpus: str | None = None) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    for s in steps:
        (run / "checkpoints" / f"step_{s:06d}").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"corpus": corpus}))
    return run


def _hf(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return path


def _corpus(path: Path, kind: str = "world") -> Path:
    path.mkdir(parents=True)
    (path / "corpus.json").write_text(json.dumps({"kind": kind}))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _run(root, "demo", (0, 10, 2), corpus=str(tmp_path / "elsewhere" / "world"))
    _run(root, "group/b", (5,))
    _run(root, "empty", ())
    _hf(root / "hf" / "gpt2")
    _corpus(root / "text", "text")
    _corpus(root / "world")
    (root / "demo" / "acts_val.h5").write_bytes(b"")
    (root / "world" / "x.h5").write_bytes(b"")
    (root / ".hidden" / "checkpoints" / "step_000001").mkdir(parents=True)
    outside = _run(tmp_path, "outside", (1,))
    os.symlink(outside, root / "link")
    return root


def test_inside_refuses_escapes(runs: Path) -> None:
    assert folder.inside(runs, "demo/analyses") == runs.resolve() / "demo/analyses"
    assert folder.inside(runs, runs / "demo") == runs.resolve() / "demo"
    for bad in ("../outside", "/etc/passwd", "link/run.json"):
        with pytest.raises(ValueError, match="outside the runs folder"):
            folder.inside(runs, bad)


def test_runs_root(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(folder.RUNS_ENV, str(runs))
    assert folder.runs_root() == runs.resolve()
    with pytest.raises(FileNotFoundError, match="runs folder .*nope does not exist; create"):
        folder.runs_root(str(tmp_path / "nope"))


def test_list_models_runs_and_hf_dirs(runs: Path) -> None:
    models = folder.list_models(runs)
    assert [(m.name, m.kind, m.steps) for m in models] == [
        ("demo", "run", (0, 2, 10)), ("group/b", "run", (5,)), ("hf/gpt2", "hf", ())]
    demo = models[0]
    assert demo.checkpoint().name == "step_000010"
    assert demo.checkpoint(2).name == "step_000002"
    with pytest.raises(ValueError, match=r"demo has no checkpoint at step 3; it has \[0, 2, 10\]"):
        demo.checkpoint(3)
    assert models[2].checkpoint() == runs.resolve() / "hf/gpt2"
    assert demo.analysis("probe") == runs.resolve() / "demo/analyses/probe.json"


def test_corpora_files_and_the_corpus_of_a_run(runs: Path) -> None:
    assert [c.name for c in folder.list_corpora(runs)] == ["text", "world"]
    files = folder.list_activation_files(runs, first=runs.resolve() / "world")
    assert [f.relative_to(runs.resolve()).as_posix() for f in files] == [
        "world/x.h5", "demo/acts_val.h5"]
    demo, b, hf = folder.list_models(runs)
    assert folder.corpus_for(demo, runs).name == "world"  # same name as the recorded one
    assert folder.corpus_for(hf, runs).name == "world"  # the first world corpus, not text


def test_read_report(tmp_path: Path) -> None:
    path = tmp_path / "induction.json"
    assert folder.read_report(path, "induction") is None
    path.write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        folder.read_report(path, "induction")
    path.write_text(json.dumps({"schema": "workbench.probe/1"}))
    with pytest.raises(ValueError, match="expected 'workbench.induction/1'"):
        folder.read_report(path, "induction")
    path.write_text(json.dumps({"schema": "workbench.induction/1", "heads": []}))
    assert folder.read_report(path, "induction")["heads"] == []
    path.write_text(json.dumps({"schema": "workbench.beliefs/1"}))
    assert folder.read_report(path, "beliefs") == {"schema": "workbench.beliefs/1"}
    with pytest.raises(ValueError, match="expected 'workbench.probe/1'"):
        folder.read_report(path, "probe")
    path.write_text(json.dumps({"schema": "workbench.eval/1"}))  # a kind without a schema
    assert folder.read_report(path, "eval") == {"schema": "workbench.eval/1"}
    path.write_text(json.dumps({"schema": "other/1"}))
    with pytest.raises(ValueError, match="expected 'workbench.\\*'"):
        folder.read_report(path, "eval")


def test_commands(runs: Path) -> None:
    demo, _, hf = folder.list_models(runs)
    world = runs.resolve() / "world"
    line = folder.display_command(folder.analysis_argv("induction", demo, world))
    assert line.startswith(f"workbench induction --model {demo.path} --corpus {world} "
                           f"--checkpoints all --out {demo.path}/analyses/induction.json")
    assert "--checkpoints" not in folder.analysis_argv("induction", hf, world)
    assert "--corpus" not in folder.analysis_argv("induction", hf, world)
    assert folder.analysis_argv("induction", hf, None, overwrite=True)[-1] == "--overwrite"
    probe = folder.analysis_argv("probe", demo, world, tasks="pos,city", probe="mlp",
                                 max_tokens=5000)
    assert probe[probe.index("--tasks") + 1] == "pos,city"
    assert probe[probe.index("--max-tokens") + 1] == "5000"
    with pytest.raises(ValueError, match="needs a corpus"):
        folder.analysis_argv("icl", hf, None)
    with pytest.raises(ValueError, match="not a registered analysis"):
        folder.analysis_argv("eval", demo, world)
    assert "'blocks.*.hook_resid_post'" in folder.display_command(folder.cache_argv(demo, world))
    assert "--max-tokens" not in folder.cache_argv(demo, world)  # the whole split, as make demo
    assert folder.eval_argv(demo, world)[-2:] == ["--out", f"{demo.path}/eval.json"]
    beliefs = folder.display_command(folder.analysis_argv("beliefs", demo, world))
    assert beliefs == (f"workbench beliefs --model {demo.path} --corpus {world} --out "
                       f"{demo.path}/analyses/beliefs.json")
    # no corpus: no ROME, a fixed layer
    real = folder.analysis_argv("beliefs", hf, None, overwrite=True)
    assert real[real.index("--method") + 1] == "icl,ft" and real[-1] == "--overwrite"


# What a dashboard command line sets away from the command's defaults, besides the model, the
# corpus, --out and --overwrite, per (analysis, model kind, corpus present): each is justified
# in the analysis' `AnalysisFlags.dashboard` and in docs/guides/dashboard.md ("Commands the
# buttons run"); a new difference must be added here, and there, on purpose.
DASHBOARD_OVERRIDES = {
    # the page's "phase change over checkpoints" needs every checkpoint scored
    ("induction", "run", True): {"checkpoints": "all"},
    ("induction", "run", False): {"checkpoints": "all"},
    ("induction", "hf", True): {}, ("induction", "hf", False): {},
    ("probe", "run", True): {}, ("probe", "hf", True): {},
    # the page's "8-shot accuracy over training" needs every checkpoint measured
    ("icl", "run", True): {"checkpoints": "all"}, ("icl", "hf", True): {},
    # a Hugging Face model is far larger than our runs: 20 beliefs, a preview
    ("beliefs", "run", True): {}, ("beliefs", "hf", True): {"n": 20},
    # no corpus: no ROME (its key covariance reads one) and a fixed layer (the real facts a
    # Hugging Face model states may leave no causal trace to pick one)
    ("beliefs", "run", False): {"method": "icl,ft", "layer": 0},
    ("beliefs", "hf", False): {"n": 20, "method": "icl,ft", "layer": 0},
    ("attribute", "run", True): {}, ("attribute", "hf", True): {},
    # circuits: without a corpus, only the task that needs none
    ("circuit", "run", True): {}, ("circuit", "hf", True): {},
    ("circuit", "run", False): {"task": "induction"},
    ("circuit", "hf", False): {"task": "induction"},
}


def test_dashboard_commands_parse_and_keep_the_command_defaults(runs: Path) -> None:
    """Every analysis' dashboard command line, for each kind of model with and without a
    corpus, parses with `workbench`'s own parser (only declared options, valid values) and
    differs from the command's defaults only where `DASHBOARD_OVERRIDES` says why."""
    from workbench.cli.registry import build_parser

    parser = build_parser()
    demo, _, hf = folder.list_models(runs)
    world = runs.resolve() / "world"
    seen = set()
    for kind in folder.SCHEMAS.keys() - {"scaling"}:
        defaults = folder.analysis_defaults(kind)
        for entry in (demo, hf):
            for corpus in (world, None):
                case = (kind, entry.kind, corpus is not None)
                try:
                    argv = folder.analysis_argv(kind, entry, corpus)
                except ValueError as exc:  # the analysis needs a corpus: no button without
                    assert corpus is None and "needs a corpus" in str(exc), case
                    continue
                args = vars(parser.parse_args(argv))
                changed = {k: args[k] for k in defaults if args[k] != defaults[k]}
                assert changed == DASHBOARD_OVERRIDES[case], case
                assert args["model"] and args["out"] == str(entry.analysis(kind)), case
                # a Hugging Face model reads no world corpus of ours for induction
                wants_corpus = corpus is not None and case[:2] != ("induction", "hf")
                assert (args["corpus"] is not None) == wants_corpus, case
                seen.add(case)
    assert seen == set(DASHBOARD_OVERRIDES)


def test_a_form_at_its_defaults_runs_the_command_defaults(runs: Path) -> None:
    """The probe form starts at `workbench probe`'s defaults (`analysis_defaults`); values at
    the defaults are left out of the command line, others are passed."""
    demo = folder.list_models(runs)[0]
    world = runs.resolve() / "world"
    cli = folder.analysis_defaults("probe")
    assert (cli["tasks"], cli["probe"], cli["max_tokens"]) == ("syntax,semantics,facts",
                                                                "linear", None)
    form = {"tasks": cli["tasks"], "probe": cli["probe"], "max_tokens": cli["max_tokens"]}
    assert folder.analysis_argv("probe", demo, world, **form) == [
        "probe", "--model", str(demo.path), "--corpus", str(world), "--out",
        str(demo.analysis("probe"))]
    # a form value back at the command's default also overrides a dashboard option
    hf = folder.list_models(runs)[2]
    assert "--n" not in folder.analysis_argv("beliefs", hf, world, n=50)
    assert "--checkpoints" not in folder.analysis_argv("icl", demo, world, checkpoints=None)


def test_parse_progress() -> None:
    assert folder.parse_progress("probe tasks:  40%|####      | 4/10 [00:01<00:02]") == (
        "probe tasks", 0.4)
    assert folder.parse_progress(" 100%|##########| 3/3") == ("", 1.0)
    assert folder.parse_progress("written: runs/demo/analyses/probe.json") is None


def test_run_command_reports_progress(tmp_path: Path) -> None:
    fake = tmp_path / "python"  # stands in for `python -m workbench.cli.core ...`
    fake.write_text("#!/bin/sh\nprintf 'work:  50%%|#  | 1/2\\rwork: 100%%|##| 2/2\\n'\n"
                    "echo \"args: $*\"\necho 'workbench: error: bad value' >&2\nexit 2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    seen: list[tuple[str, float]] = []
    result = folder.run_command(["probe", "--x"], lambda d, f: seen.append((d, f)),
                              python=str(fake))
    assert seen == [("work", 0.5), ("work", 1.0)]
    assert result.returncode == 2
    assert "args: -m workbench.cli.core probe --x" in result.output
    assert result.error == "workbench: error: bad value"


def test_available_pages_lists_beliefs_only_when_present(tmp_path: Path) -> None:
    (tmp_path / "pages").mkdir()
    for name in ("models", "attention"):
        (tmp_path / "pages" / f"{name}.py").write_text("")
    assert [t for _, t, _ in folder.available_pages(tmp_path)] == ["Models", "Attention"]
    (tmp_path / "pages" / "beliefs.py").write_text("")
    assert [t for _, t, _ in folder.available_pages(tmp_path)] == ["Models", "Attention",
                                                                "Beliefs"]
    app_dir = Path(folder.__file__).parent
    assert {p for p, _, _ in folder.PAGES} - {"pages/beliefs.py"} <= {
        p for p, _, _ in folder.available_pages(app_dir)}


def test_plan_window() -> None:
    assert compute.plan_window(20, 64, 64) == compute.Window(0, 20, 0, 20)  # fits: all
    assert compute.plan_window(100, 64, 32, 10) == compute.Window(10, 42, 0, 64)
    w = compute.plan_window(100, 64, 32, 90)  # clipped to the end; context ends there
    assert w == compute.Window(68, 100, 37, 100) and w.context_stop - w.context_start == 63
    assert compute.plan_window(100, 64, 500, 0, has_bos=False) == compute.Window(0, 64, 0, 64)
    with pytest.raises(ValueError, match="a window needs at least one token"):
        compute.plan_window(0, 64, 8)


def test_window_tokens_prepends_bos() -> None:
    ids = torch.arange(100)
    w = compute.plan_window(100, 64, 32, 90)
    ctx, offset = compute.window_tokens(ids, w, bos=0)
    assert len(ctx) == 64 and int(ctx[0]) == 0 and int(ctx[1]) == w.context_start
    assert int(ctx[offset]) == w.start
    ctx, offset = compute.window_tokens(ids, compute.plan_window(100, 64, 8, 3), bos=0)
    assert int(ctx[offset]) == 3 and len(ctx) == 64


def test_repeat_tokens_and_stripe() -> None:
    ids, period = compute.repeat_tokens(torch.tensor([1, 7, 8, 9, 10]), n_ctx=7, bos=1)
    assert ids.tolist() == [1, 7, 8, 9, 7, 8, 9] and period == 3  # body cut to (7-1)//2
    stripe = compute.induction_stripe(len(ids), period)
    assert stripe.tolist() == [[4, 2], [5, 3], [6, 4]]  # 7 -> the 8 after the first 7, ...
    assert compute.induction_stripe(4, 2, start=0).tolist() == [[2, 1], [3, 2]]  # no BOS
    pattern = torch.zeros(2, 3, 7, 7)
    pattern[1, 2, stripe[:, 0], stripe[:, 1]] = 1.0
    scores = compute.stripe_scores(pattern, stripe)
    assert scores[1, 2] == 1 and scores.sum() == 1
    assert compute.stripe_scores(pattern, compute.induction_stripe(3, 3)).sum() == 0  # no cell
    with pytest.raises(ValueError, match="no tokens to repeat"):
        compute.repeat_tokens(torch.tensor([1]), n_ctx=8, bos=1)
    text = torch.tensor([1, 7, 8, 9, 10])
    assert compute.repeat_room(text, n_ctx=7, bos=1) == 3  # (7 - BOS) // 2
    assert compute.repeat_room(text, n_ctx=64, bos=1) == 4  # the whole text
    ids, period = compute.repeat_tokens(text, n_ctx=64, bos=1, length=2)  # the first two
    assert ids.tolist() == [1, 7, 8, 7, 8] and period == 2


def test_pca_2d() -> None:
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(300, 1, generator=gen)
    x = t * torch.tensor([[3.0, -2.0, 1.0, 0.5]]) + 0.05 * torch.randn(300, 4, generator=gen)
    coords, explained = compute.pca_2d(x)
    assert coords.shape == (300, 2) and explained[0] > 0.99
    again, _ = compute.pca_2d(x.flip(0))
    assert torch.allclose(again.flip(0), coords, atol=1e-4)  # same picture, signs fixed
    with pytest.raises(ValueError, match="at least 2 rows"):
        compute.pca_2d(torch.ones(1, 4))
    assert compute.sample_rows(10, 20).tolist() == list(range(10))
    rows = compute.sample_rows(1000, 50, seed=3)
    assert len(set(rows.tolist())) == 50 and (np.diff(rows) > 0).all()


def test_figures() -> None:
    pattern = torch.rand(2, 3, 5, 5)
    grid = head_grid_figure(pattern, torch.ones(2, 3), selected=(1, 2))
    assert len(grid.data) == 1 and grid.data[0].z.shape == (2 * 6 - 1, 3 * 6 - 1)
    assert [a.text for a in grid.layout.annotations][-1] == "L1H2 1.00"
    stripe = torch.tensor([[4, 2], [9, 7]])  # the second cell lies outside the window
    fig = head_figure(pattern[0, 0], list("abcde"), start=2, stripe=stripe)
    assert list(fig.data[0].x) == ["2:a", "3:b", "4:c", "5:d", "6:e"]
    assert fig.data[1].name == "induction stripe" and list(fig.data[1].x) == ["2:a"]
    comp = torch.rand(2, 2, 2, 2).tolist()
    fig = composition_figure({"composition": {"K": comp}}, "K")
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.isnan(z[:2, :2]).all() and not np.isnan(z[:2, 2:]).any()
    fig = composition_figure({"composition": {"K": comp, "K_path": comp}}, "K_path")
    assert "path patching" in fig.layout.title.text and "induction-score drop" in \
        fig.data[0].hovertemplate
    layers = [{"layer": i, "accuracy": 0.5 + 0.1 * i, "control_accuracy": 0.4,
               "selectivity": 0.1 * i, "ci": [0.4, 0.9], "selectivity_ci": [0.0, 0.3]}
              for i in range(3)]
    report = {"tasks": {"pos": {"kind": "syntax", "n": 10, "best_layer": 2,
                                "majority_baseline": 0.3, "layers": layers}}}
    fig = probe_task_figure(report, "pos")
    assert fig.layout.title.text == "pos (syntax, n=10, best layer 2)"
    assert [t.name for t in fig.data][:2] == ["accuracy 95% interval", "accuracy"]


def test_port_checks() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"port {busy} on 127.0.0.1 is in use"):
            check_port(busy)
    with pytest.raises(ValueError, match="--port 70000 is not a TCP port"):
        check_port(70000)
    assert check_port(0) > 0
    cmd = streamlit_command(8600)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"


def test_workbench_app_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.cli.core import main

    assert main(["app", "--runs", str(tmp_path / "nope")]) == 2
    assert "runs folder" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["app", "--runs", str(tmp_path), "--port", str(s.getsockname()[1])]) == 2
    assert "is in use" in capsys.readouterr().err


def test_links_leading_out_of_the_runs_folder_are_not_followed(runs: Path,
                                                                tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere-files"
    elsewhere.mkdir()
    (elsewhere / "secret.json").write_text(json.dumps({"schema": "workbench.induction/1",
                                                       "heads": []}))
    foreign_ckpt = elsewhere / "step_000099"
    foreign_ckpt.mkdir()
    # a checkpoint that is a link out, a weights file that is a link out, a report that is a
    # link out, and an analyses folder that is a link out
    os.symlink(foreign_ckpt, runs / "demo" / "checkpoints" / "step_000099")
    (runs / "demo" / "checkpoints" / "step_000010" / "model.safetensors").symlink_to(
        elsewhere / "secret.json")
    (runs / "demo" / "analyses").mkdir()
    os.symlink(elsewhere / "secret.json", runs / "demo" / "analyses" / "induction.json")
    _run(runs, "linked", (1,))
    os.symlink(elsewhere, runs / "linked" / "analyses")
    hf_out = _hf(runs / "hf" / "leaky")
    (hf_out / "model.safetensors").symlink_to(elsewhere / "secret.json")

    models = {m.name: m for m in folder.list_models(runs)}
    assert models["demo"].steps == (0, 2)  # neither the linked checkpoint nor the leaky one
    assert "hf/leaky" not in models and "hf/gpt2" in models
    assert folder.list_analyses(models["demo"]) == []
    assert folder.list_analyses(models["linked"]) == []
    report = runs / "demo" / "analyses" / "induction.json"
    with pytest.raises(ValueError, match="outside the runs folder"):
        folder.read_report(report, "induction", root=runs)
    assert folder.read_report(report, "induction")["heads"] == []  # without a root: read
    assert folder.contained(runs, runs / "group" / "b")
    assert not folder.contained(runs, runs / "linked")
