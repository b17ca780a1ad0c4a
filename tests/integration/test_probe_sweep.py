"""Probe sweeps on the tiny trained model: report and figure, memory and activation file give
the same numbers, no leakage, a local GPT-2 directory through a re-tokenized world, CLI errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from probe.layers import FIGURES, SCHEMA, LayersConfig, run, select_examples
from probe.rows import fill_memory, plan_rows, store_config, store_rows
from probe.stats import assign_folds
from probe.tasks import resolve_tasks
from workbench.analysis import write_report
from workbench.cache.store import cache_activations
from workbench.cli.core import main
from workbench.models.loader import load
from workbench.training.trainer import TrainResult
from workbench.world import build_text_corpus, load_corpus
from workbench.world.retokenize import retokenize_corpus

# small and quick: a few thousand rows per task
CFG = LayersConfig(tasks="syntax,semantics,facts", split="train", max_tokens=30_000,
                  max_examples=3000, min_per_class=5, n_boot=200)


@pytest.fixture(scope="module")
def report(tiny_run: TrainResult, world_corpus: Path) -> dict:
    return run(load(tiny_run.run_dir), load_corpus(world_corpus), CFG,
                       ref="tiny", progress=False)


def test_report_schema_and_content(report: dict, tmp_path: Path) -> None:
    assert report["schema"] == SCHEMA and report["layers"] == [0, 1, 2]
    assert set(report["tasks"]) == {t.name for t in resolve_tasks("syntax,semantics,facts")}
    for name, t in report["tasks"].items():
        assert t["kind"] in ("syntax", "semantics", "facts")
        assert [r["layer"] for r in t["layers"]] == [0, 1, 2]
        for r in t["layers"]:
            assert r["ci"][0] <= r["accuracy"] <= r["ci"][1], name
            assert r["selectivity"] == pytest.approx(r["accuracy"] - r["control_accuracy"],
                                                     abs=2e-4)
        assert t["best_layer"] in (0, 1, 2) and 0 <= t["center_of_gravity"] <= 2
        assert 0 <= t["majority_baseline"] < 1  # 0 when no test fold holds its train majority
    # what the tiny model must show: syntax is readable well above its controls
    assert report["tasks"]["pos"]["selectivity_at_best"] > 0.3
    # ... and so are sentiment (coordinated adjectives) and facts at the name (index lists)
    for task in ("agreement", "sentiment", "city", "food"):
        assert report["tasks"][task]["selectivity_at_best"] > 0.2, task
    assert "syntax" in report["summary"]["text"]
    paths = write_report(report, tmp_path / "probe.json", FIGURES)
    assert json.loads(paths[0].read_text())["tasks"]["pos"]["n"] == report["tasks"]["pos"]["n"]
    # per task: accuracy, control, selectivity, majority class, centre of gravity
    assert len(json.loads(paths[1].read_text())["data"]) == 5 * len(report["tasks"])
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_report(report, tmp_path / "probe.json", FIGURES)


def test_same_numbers_from_memory_and_from_an_activation_file(
        tiny_run: TrainResult, world_corpus: Path, report: dict, tmp_path: Path) -> None:
    model, corpus = load(tiny_run.run_dir), load_corpus(world_corpus)
    acts = tmp_path / "acts.h5"
    cache_activations(model, corpus, store_config(CFG.split, CFG.max_tokens), acts,
                      progress=False)
    # the same rows; the same activations up to float rounding (memory batches sequences of
    # similar length, the file's writer consecutive ones, so the matmuls have other widths)
    rows = plan_rows(model, corpus, CFG.split, CFG.max_tokens)
    needed = np.arange(0, len(rows), 7)
    fill_memory(rows, model, needed, [0, 1, 2], progress=False)
    stored = store_rows(acts, 2, [0, 1, 2], model=model, corpus=corpus, split=CFG.split)
    assert np.array_equal(stored.meta["offset"], rows.meta["offset"])
    torch.testing.assert_close(rows.acts(needed, [0, 1, 2]), stored.acts(needed, [0, 1, 2]),
                               rtol=1e-5, atol=1e-4)
    stored.store.close()
    with pytest.raises(ValueError, match=r"was cached with --max-tokens 30000 \(\d+ tokens\), "
                                         r"not --max-tokens 20000; pass --max-tokens 30000"):
        run(model, corpus, replace(CFG, max_tokens=20_000), acts=acts, progress=False)
    from_store = run(model, corpus, CFG, ref="tiny", acts=acts, progress=False)
    assert from_store["source"] == f"store:{acts}"
    assert from_store["tasks"].keys() == report["tasks"].keys()
    for name, task in report["tasks"].items():
        other = from_store["tasks"][name]
        assert other["n"] == task["n"], name
        for a, b in zip(task["layers"], other["layers"], strict=True):
            assert a["accuracy"] == pytest.approx(b["accuracy"], abs=0.03), name
            assert a["selectivity"] == pytest.approx(b["selectivity"], abs=0.03), name


def test_streams_through_a_file_when_too_large(tiny_run: TrainResult, world_corpus: Path,
                                               tmp_path: Path) -> None:
    model, corpus = load(tiny_run.run_dir), load_corpus(world_corpus)
    small = LayersConfig(tasks="agreement", split="train", max_tokens=20_000, memory_gib=1e-6,
                        n_boot=50, min_per_class=5)
    with pytest.raises(ValueError, match="--acts FILE.h5"):
        run(model, corpus, small, progress=False)
    rep = run(model, corpus, small, acts=tmp_path / "a.h5", progress=False)
    assert rep["source"].startswith("store:") and (tmp_path / "a.h5").exists()


def test_no_group_leaks_across_folds(tiny_run: TrainResult, world_corpus: Path) -> None:
    model, corpus = load(tiny_run.run_dir), load_corpus(world_corpus)
    rows = plan_rows(model, corpus, "train", 30_000)
    for task in resolve_tasks("pos,sentiment,city"):
        ex, _ = select_examples(task, rows, corpus.world(), CFG)
        folds = assign_folds(ex.y, ex.groups, CFG.folds, "group", CFG.seed)
        for g in np.unique(ex.groups):
            assert len(np.unique(folds[ex.groups == g])) == 1, (task.name, g)
        if task.kind == "facts":  # a person's rows share their label
            assert all(len(np.unique(ex.y[ex.groups == g])) == 1 for g in np.unique(ex.groups))


def test_hf_gpt2_through_a_retokenized_world(hf_gpt2_dir: Path, world_corpus: Path,
                                             tmp_path: Path) -> None:
    out = retokenize_corpus(world_corpus, hf_gpt2_dir, tmp_path / "world-gpt2", ("train",),
                            progress=False)
    corpus = load_corpus(out)
    words = np.asarray(load_corpus(world_corpus).labels("train")["pos"])
    # every labelled word keeps its label, on its last sub-token
    assert (np.asarray(corpus.labels("train")["pos"]) >= 0).sum() == (words >= 0).sum()
    model = load(str(hf_gpt2_dir))
    cfg = LayersConfig(tasks="pos,animacy,city", split="train", max_tokens=20_000, n_boot=50,
                      min_per_class=5)
    rep = run(model, corpus, cfg, ref=str(hf_gpt2_dir), progress=False)
    assert rep["layers"] == [0, 1, 2] and rep["tasks"]["pos"]["n"] > 1000
    with pytest.raises(ValueError, match="workbench world retokenize"):
        run(model, load_corpus(world_corpus), CFG, progress=False)


def test_cli_probe_and_errors(tiny_run: TrainResult, world_corpus: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    base = ["probe", "--model", str(tiny_run.run_dir), "--corpus", str(world_corpus),
            "--split", "train", "--max-tokens", "20000", "--max-examples", "2000",
            "--min-per-class", "5",
            "--no-progress"]
    assert main([*base, "--tasks", "agreement,animacy", "--probe", "mlp", "--layers", "0,2",
                 "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["probe"] == "mlp" and rep["layers"] == [0, 2] and out.with_suffix(
        ".fig.json").exists()
    assert "agreement" in capsys.readouterr().out
    cases = [
        (["--tasks", "colour"], "unknown probe task 'colour'"),
        (["--layers", "0,9"], "out of range"),
        (["--tasks", "sentiment", "--max-tokens", "3000", "--min-per-class", "50"],
         "fewer than 50 examples"),
        (["--tasks", "sentiment", "--max-tokens", "10"], "no example in split"),
        (["--out", str(out)], "exists; pass --overwrite"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    text_dir = tmp_path / "text"
    (tmp_path / "a.txt").write_text("some plain text.\n\nanother paragraph here.\n" * 20)
    build_text_corpus([tmp_path / "a.txt"], text_dir, vocab_size=300, progress=False)
    assert main(["probe", "--model", str(tiny_run.run_dir), "--corpus", str(text_dir)]) == 2
    assert "real-text corpus" in capsys.readouterr().err
