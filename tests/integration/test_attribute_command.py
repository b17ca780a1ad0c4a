"""`workbench attribute` on the tiny run: the report and figures of EK-FAC, TracIn and the
baselines, scores read back from the cache, and the refusals of bad input (one line, exit 2,
before the model is loaded where the flags alone say it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from workbench.cli.core import main
from workbench.figcheck import figure_problems
from workbench.training.trainer import TrainResult


def _argv(run: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    """The command on the session's run; factors and scores cached beside `out` unless
    `extra` names a cache (the run itself stays as it was)."""
    cache = [] if "--cache" in extra else ["--cache", str(out.parent / "attribution-cache")]
    return ["attribute", "--model", str(run), "--corpus", str(corpus), "--facts", "2",
            "--bucket", "low", "--candidates", "60", "--fit-documents", "300", "--dim", "256",
            "--out", str(out), "--no-progress", *cache, *extra]


def test_attribute_report_figures_and_cache(tiny_run: TrainResult, world_corpus: Path,
                                            tmp_path: Path, one_thread: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from attribution.figures import FIGURES
    from workbench.models.refs import ModelRef

    run = tiny_run.run_dir
    steps = [c.step for c in ModelRef.of(str(run)).checkpoints][-2:]
    cache, out = tmp_path / "cache", tmp_path / "attribute.json"
    argv = _argv(run, world_corpus, out, "--method", "ekfac,tracin", "--cache", str(cache),
                 "--checkpoints", ",".join(map(str, steps)))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "AUPRC" in printed and "random expectation" in printed
    report = json.loads(out.read_text())
    assert report["schema"] == "workbench.attribute/1"
    assert list(report["methods"]) == ["ekfac", "tracin", "bm25", "random"]
    assert len(report["queries"]) == 2
    stating = {q["fact"]: None for q in report["queries"]}
    for name, m in report["methods"].items():
        assert set(m["facts"]) == set(stating), name
        for fact, r in m["facts"].items():
            assert 0 <= r["ap"] <= 1 and 0 <= r["p@10"] <= 1 and r["stating"] > 0
            assert 0 < r["base_rate"] < 1
            top = m["top"][fact]
            assert len(top) == 10 and all(d["text"] for d in top)
            assert [d["score"] for d in top] == sorted((d["score"] for d in top), reverse=True)
    stated = [r["stating"] for r in report["methods"]["bm25"]["facts"].values()]
    assert 60 + max(stated) <= report["documents"]["scored"] <= 60 + sum(stated)
    # TracIn: the last checkpoint weighs nothing, shares of a fact sum to one
    tr = report["tracin"]
    assert tr["steps"] == steps and tr["weights"][-1] == 0.0
    for f in tr["facts"].values():
        assert len(f["share"]) == 2 and (sum(f["share"]) == pytest.approx(1.0)
                                         or sum(f["share"]) == 0)
    for suffix, make in FIGURES.items():
        fig = make(report)
        assert fig is not None, suffix
        assert figure_problems(fig) == [], suffix
        assert out.with_suffix(suffix.removesuffix(".fig.json") + ".fig.json").is_file()
    # factors (safetensors, with the weights they belong to) and scores are cached
    # (one folder per weights: the model's, and TracIn's checkpoints, the last being the model)
    folders = [p for p in cache.iterdir() if p.is_dir()]
    assert len(folders) == 2
    (model_dir,) = [p for p in folders if (p / "ekfac").is_dir()]
    meta = json.loads((model_dir / "ekfac" / "meta.json").read_text())
    assert meta["schema"] == "workbench.attribution_factors/1" and len(meta["weights"]) == 64
    assert list((model_dir / "ekfac").rglob("*.safetensors"))
    assert not list(cache.rglob("*.pt")) and not list(cache.rglob("*.pkl"))
    ekfac_cached = list((model_dir / "scores").glob("ekfac-*.npy"))
    assert len(ekfac_cached) == 1
    np.save(ekfac_cached[0], np.load(ekfac_cached[0]) * 0 + 7.0)  # a read cache shows itself
    again = tmp_path / "again.json"
    assert main(_argv(run, world_corpus, again, "--method", "ekfac", "--cache",
                      str(cache))) == 0
    assert all(d["score"] == 7.0 for top in json.loads(again.read_text())["methods"]["ekfac"][
        "top"].values() for d in top)


def test_attribute_refuses_bad_input(tiny_run: TrainResult, world_corpus: Path,
                                     tmp_path: Path, one_thread: None,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.models.refs import ModelRef

    run = tiny_run.run_dir
    out = tmp_path / "a.json"

    def refused(*extra: str) -> str:
        assert main(_argv(run, world_corpus, out, *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        assert not out.exists()
        return err

    assert "not in the world" in refused("--facts", "nobody known:city", "--method", "bm25")
    from workbench.world import load_corpus

    subject = load_corpus(world_corpus).fact_table()[0]["subject"]
    assert f"did you mean '{subject}'" in refused("--facts", f"{subject[:-1]}:city",
                                                 "--method", "bm25")
    assert "not in the model's vocabulary" in refused("--prompt", "anna lives in", "--target",
                                                      "velmorax", "--method", "bm25")
    assert "one word" in refused("--prompt", "anna lives in", "--target", "two words",
                                 "--method", "bm25")
    # a target of several tokens (a sub-word tokenizer's case; the world's is word-level)
    import types

    from attribution.attribute import AttributeConfig, select_queries

    class SubWords:
        unk_token_id = None

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return list(range(len(text.split("-"))))

    with pytest.raises(ValueError, match="'velmor-ax' is 2 tokens for this model"):
        select_queries(types.SimpleNamespace(tokenizer=SubWords()), None,  # type: ignore
                       AttributeConfig(prompt="anna lives in", target="velmor-ax"))
    assert "go together" in refused("--prompt", "anna lives in", "--method", "bm25")
    assert "influence not among" in refused("--method", "ekfac,influence")
    # factors made for other weights: fitted on one checkpoint, offered to another
    first = ModelRef.of(str(run)).checkpoints[0].path
    factors = tmp_path / "factors"
    assert main(_argv(first, world_corpus, tmp_path / "first.json", "--method", "ekfac",
                      "--factors", str(factors))) == 0
    capsys.readouterr()
    err = refused("--method", "ekfac", "--factors", str(factors))
    assert "made for other weights" in err and "--factors" in err
    shutil.rmtree(factors)
