"""Belief tests on the tiny trained model: the whole report (elicit, trace, ladder, ROME, FT),
the model left exactly as it was, the CLI with its figures and errors, a local GPT-2 dir."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from beliefs.editing import key_covariance
from beliefs.elicit import elicit
from beliefs.factbase import load_facts, world_facts
from beliefs.figures import regimes_figure
from beliefs.ladder import LadderConfig
from beliefs.memit import TARGET, MemitConfig
from beliefs.regimes import RegimeConfig
from beliefs.rome import RomeConfig
from beliefs.steering import SteerConfig
from beliefs.suite import SCHEMA, BeliefsConfig, run
from beliefs.summary import summary
from circuits.tracing import TraceConfig
from workbench.cli.core import main
from workbench.models.loader import load
from workbench.training.trainer import TrainResult
from workbench.world import load_corpus

CFG = BeliefsConfig(n=8, n_trace=3, cov_tokens=4000,
                    trace=TraceConfig(n_samples=4), rome=RomeConfig(n_prefixes=3),
                    memit=MemitConfig(z=replace(TARGET, steps=100)),
                    regime=RegimeConfig(regimes=("single", "batch", "sequential"),
                                        batch_sizes=(3, 0), sequential=4, every=2))


@pytest.fixture(scope="module")
def report_and_model(tiny_run: TrainResult, world_corpus: Path) -> tuple[dict, dict, dict]:
    model = load(tiny_run.run_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    corpus = load_corpus(world_corpus)
    report = run(model, corpus, CFG, facts=world_facts(corpus.world(), corpus.fact_table()),
                 ref="tiny", progress=False)
    return report, before, model.state_dict()


def test_report_content(report_and_model: tuple[dict, dict, dict]) -> None:
    report, before, after = report_and_model
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is unchanged
    assert report["schema"] == SCHEMA and report["n_beliefs"] == 8
    assert report["elicit"]["accuracy"] >= 0.5  # the tiny model knows most of its facts
    trace = report["trace"]
    assert 0 <= trace["peak_layer"] < 2 and report["layer"] == trace["peak_layer"]
    assert len(trace["indirect_effect"]["mlp"]) == 2 and len(trace["roles"]) == 5
    assert set(report["methods"]) == {"icl", "rome", "memit", "ft", "steer", "unedited"}
    rome, ft, steer, none = (report["methods"][m] for m in ("rome", "ft", "steer", "unedited"))
    memit = report["methods"]["memit"]
    assert rome["n"] == ft["n"] == steer["n"] == none["n"] == memit["n"] == 8
    assert memit["layer"] == report["memit_layers"] and memit["efficacy"] > none["efficacy"]
    assert none["ripple_kept"] == none["kept_paraphrase"] == 1.0
    assert set(rome["easyedit"]) == {"reliability", "generalization", "locality", "portability"}
    assert rome["efficacy"] >= 0.75 > none["efficacy"]  # ROME states the new object
    assert rome["paraphrase"] > none["paraphrase"]
    # steering's layer and scale come from held-out facts; it moves the stated answer
    chosen = report["steering"]
    assert not {f"{r['subject']} / {r['relation']}" for r in steer["edits"]} & set(
        chosen["calibration"])
    assert steer["layer"] == chosen["layer"] and steer["efficacy"] > none["efficacy"]
    tried = {(t["layer"], t["alpha"]) for t in chosen["tried"]}
    assert tried >= {(la, a) for la in (0, 1) for a in SteerConfig().alphas}  # every pair
    assert all(0 <= t["firm"] <= t["efficacy"] <= 1 for t in chosen["tried"])
    for m in (rome, ft, steer):
        for key in ("efficacy", "paraphrase", "specificity", "ripple_kept", "fluency_delta"):
            lo, hi = m["ci"][key]
            assert lo <= m[key] <= hi
    assert none["fluency_delta"] == 0.0 and none["specificity"] == 1.0
    icl = report["methods"]["icl"]
    assert sum(icl["flip_level"].values()) == 8 and icl["levels"][0] == "none"
    assert set(icl["p_new"]) == set(icl["levels"])
    assert all(p is None or 0 <= p <= 1 for p in icl["p_new"].values())
    flipped = [icl["flipped_by"][level] for level in icl["levels"]]
    assert flipped == sorted(flipped)  # a belief flipped at one level counts at every later
    # every row carries the planted exposure and its strength; the report correlates them
    for row in report["elicit"]["beliefs"] + icl["beliefs"] + rome["edits"]:
        assert row["bucket"] in ("low", "mid", "high") and row["mentions"] >= 0
        assert isinstance(row["margin"], float)
    strength = report["strength"]
    assert strength["n_with_exposure"] == 8
    assert -1 <= strength["rho_exposure_margin"]["value"] <= 1
    assert sum(b["n"] for b in strength["by_bucket"].values()) == 8
    assert all("rome" in b and "steer" in b and "flipped_by" in b
               for b in strength["by_bucket"].values())


def test_batch_and_sequential_regimes(report_and_model: tuple[dict, dict, dict]) -> None:
    report = report_and_model[0]
    regimes = report["regimes"]
    assert regimes["relation"] == "city" and regimes["layers"] == report["memit_layers"]
    small, every = regimes["batch"]
    assert small["size"] == 3 and every["requested"] == 0 and every["size"] > 3
    assert every["specificity"] is None  # everyone's city edited: no neighbour left
    assert small["efficacy"] > report["methods"]["unedited"]["efficacy"]
    assert len(every["edits"]) == every["size"] and every["seconds"] > 0
    fig = regimes_figure(report)  # five metrics by batch size; three lines per sequential run
    assert len(fig.data) == 5 + 3 * 3
    assert "MEMIT batch of 3 city facts" in summary(report)
    seq = regimes["sequential"]
    assert set(seq["runs"]) == {"projected", "held", "plain"} and seq["n"] == 4
    for run_ in seq["runs"].values():
        assert [p["edits_so_far"] for p in run_["points"]] == [2, 4]
        assert 0 <= run_["first_stated_end"] <= run_["first_efficacy_end"] <= 1


def test_cli_writes_report_and_figures(tiny_run: TrainResult, world_corpus: Path,
                                       tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "beliefs.json"
    args = ["beliefs", "--model", str(tiny_run.run_dir), "--corpus", str(world_corpus),
            "--n", "3", "--method", "rome,icl", "--layer", "0", "--n-trace", "2",
            "--trace-samples", "3", "--cov-tokens", "2000", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "edits at layer 0" in text and "pressure ladder" in text
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"icl", "rome", "unedited"}
    assert "strength: Spearman rho(exposure, margin)" in text
    for suffix in ("trace", "trace_example", "ladder", "metrics", "strength"):
        fig = json.loads((tmp_path / f"beliefs.{suffix}.fig.json").read_text())
        assert fig["data"], suffix
    assert main(args) == 2  # refuses to overwrite
    assert "pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--layer", "7"], "--layer 7 is out of range; model"),
    (["--relations", "planet"], "unknown relation 'planet'"),
    (["--method", "rome,magic"], "--method: magic not among icl, rome, memit, ft, steer"),
    (["--regimes", "batch", "--regime-relation", "planet"], "unknown relation 'planet'"),
    (["--memit-layers", "0,1"], "--memit-layers 0,1: layer 1 is out of range"),
    (["--memit-keys", "all"], "--memit-keys: invalid choice: 'all'"),
    (["--sequential-runs", "projected,fast"], "--sequential-runs: fast not among projected"),
    (["--memit-lambda", "0"], "--memit-lambda: 0.0 is out of range; pass a number > 0.0"),
])
def test_cli_errors(tiny_run: TrainResult, world_corpus: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    args = ["beliefs", "--model", str(tiny_run.run_dir), "--corpus", str(world_corpus),
            "--n", "2", "--out", str(tmp_path / "b.json"), "--no-progress", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_key_covariance_through_activation_store(tiny_run: TrainResult, world_corpus: Path,
                                                 tmp_path: Path) -> None:
    model, corpus = load(tiny_run.run_dir), load_corpus(world_corpus)
    acts = tmp_path / "keys.h5"
    cov = key_covariance(model, corpus, 1, n_tokens=1000, split="val", acts=acts)
    assert acts.exists() and cov.shape == (model.cfg.d_mlp, model.cfg.d_mlp)
    assert torch.allclose(cov, cov.T, atol=1e-6) and torch.linalg.eigvalsh(cov).min() > -1e-5
    again = key_covariance(model, corpus, 1, n_tokens=1000, split="val", acts=acts)  # reused
    assert torch.equal(cov, again)
    direct = key_covariance(model, corpus, 1, n_tokens=1000, split="val")  # no file
    torch.testing.assert_close(direct, cov, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="holds no 'blocks.0.mlp.hook_post'"):
        key_covariance(model, corpus, 0, n_tokens=1000, split="val", acts=acts)


def test_real_facts_on_a_local_gpt2_dir(hf_gpt2_dir: Path) -> None:
    model, real = load(hf_gpt2_dir), load_facts()
    e = elicit(model, real.belief("France", "capital"))
    assert e.stated in real.relations["capital"].candidates  # multi-token candidates scored
    # n_ctx is 64 and English words are several tokens each here: ask at once (between=0)
    report = run(model, None, BeliefsConfig(methods=("icl", "ft"), n=2, layer=0, n_trace=0,
                                            ladder=LadderConfig(between=0)),
                 facts=real, progress=False)
    assert report["methods"]["ft"]["n"] == 2  # multi-token objects edited and read
    levels = report["methods"]["icl"]["beliefs"][0]["levels"]
    assert "hearsay" in levels and levels["none"]["p_new"] is not None
    ctx = report["methods"]["icl"]["beliefs"][0]["levels"]["news"]["context"]
    assert ctx.startswith("Breaking news:")
    assert report["strength"]["n_with_exposure"] == 0  # real facts: no exposure planted
