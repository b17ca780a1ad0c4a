"""Induction heads on the tiny model trained in the session fixture: the reproducible helper,
the pytest plugin, TransformerLens cross-checks, the CLI and its JSON, the phase change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformer_lens.head_detector import detect_head

from circuits.inputs import repeated_tokens_for
from circuits.paths import k_path_patching, keys_from_residual
from circuits.scores import head_scores
from circuits.testing import InductionHeadsMissing, assert_induction_heads
from workbench.cli.core import main
from workbench.models.loader import load
from workbench.training.trainer import TrainResult


@pytest.fixture(scope="module")
def tiny_model(tiny_run: TrainResult):  # noqa: ANN201
    return load(tiny_run.run_dir)


def test_the_same_induction_heads_come_out_every_run(tiny_model) -> None:  # noqa: ANN001
    first = assert_induction_heads(tiny_model, min_score=0.4, min_ablation=0.5, seed=0)
    again = assert_induction_heads(tiny_model, min_score=0.4, min_ablation=0.5, seed=0)
    assert first == again and len(first) >= 1
    assert all(name.startswith("L1") for name in first)  # tiny has 2 layers


def test_the_plugin_fixture_checks_a_model(induction_heads, tiny_model) -> None:  # noqa: ANN001
    assert induction_heads(tiny_model) == assert_induction_heads(tiny_model)


def test_the_circuit_check_names_the_head_the_keys_read_from(tiny_model) -> None:  # noqa: ANN001
    """`tiny`'s induction heads read their keys from a layer-0 head that attends to the
    previous token (score about 0.3, varying with the run): the circuit check passes with a
    bar just below that head's score and fails, naming it and its score, just above."""
    with pytest.raises(InductionHeadsMissing, match=r"keys read most from L0H\d") as info:
        assert_induction_heads(tiny_model, circuit=True, min_prev_token=0.99)
    report = info.value.report
    prev = {h["name"]: h["prev_token"] for h in report["heads"]}
    heads = assert_induction_heads(tiny_model)
    sources = {p["k_path_source"] for p in report["pairs"] if p["induction_head"] in heads}
    lowest = min(prev[s] for s in sources)
    assert lowest > 0.2  # a head that attends to the previous token far above chance
    assert assert_induction_heads(tiny_model, circuit=True, min_prev_token=lowest - 0.01) == heads
    with pytest.raises(InductionHeadsMissing, match=r"keys read most from L0H\d") as info:
        assert_induction_heads(tiny_model, circuit=True, min_prev_token=lowest + 0.01)
    assert f"previous-token score is {lowest:.3f}" in str(info.value)


def test_a_model_without_induction_heads_fails_with_a_table(tiny_run: TrainResult) -> None:
    untrained = load(tiny_run.run_dir, step=0)
    with pytest.raises(InductionHeadsMissing, match=r"found 0 \(none\)") as info:
        assert_induction_heads(untrained)
    message = str(info.value)
    assert "head" in message and "ablation_nats" in message and "L1H0" in message
    assert len(info.value.report["heads"]) == untrained.cfg.n_layers * untrained.cfg.n_heads


def test_scores_equal_detect_head_on_the_same_strings(tiny_model) -> None:  # noqa: ANN001
    rep = repeated_tokens_for(tiny_model, n_seqs=4, seed=0)
    texts = [tiny_model.tokenizer.decode(row[1:].tolist()) for row in rep.tokens]
    tokens = torch.cat([tiny_model.to_tokens(t) for t in texts])
    assert torch.equal(tokens, rep.tokens)  # the strings are exactly these tokens
    ours = head_scores(tiny_model, tokens, kinds=("prev_token", "duplicate", "induction"),
                       normalize="tl")
    for kind, tl_name in [("prev_token", "previous_token_head"),
                          ("duplicate", "duplicate_token_head"), ("induction", "induction_head")]:
        tl = detect_head(tiny_model, texts, tl_name)
        torch.testing.assert_close(ours[kind], tl.float(), atol=1e-4, rtol=0)


def test_path_patching_rebuilds_the_keys_of_our_models_and_of_gpt2(
        tiny_model, hf_gpt2_dir: Path) -> None:  # noqa: ANN001
    """Direct-path patching recomputes a layer's keys from the residual stream; with nothing
    patched that must give the forward pass's own keys, for our bridge and for GPT-2's."""
    for model in (tiny_model, load(hf_gpt2_dir)):
        rep = repeated_tokens_for(model, n_seqs=3, seed=0)
        layer = model.cfg.n_layers - 1
        names = [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_k"]
        _, cache = model.run_with_cache(rep.tokens, names_filter=names)
        with torch.no_grad():
            keys = keys_from_residual(model, layer, cache[names[0]])
        torch.testing.assert_close(keys, cache[names[1]], atol=1e-5, rtol=1e-5)
        drop = k_path_patching(model, rep, target_layers=[layer])
        assert drop[:layer, :, layer].abs().sum() > 0 and drop[:, :, :layer].abs().sum() == 0


def test_cli_writes_the_report_and_the_phase_change(tiny_run: TrainResult, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "induction.json"
    args = ["induction", "--model", str(tiny_run.run_dir), "--checkpoints", "all", "--out",
            str(out), "--n-seqs", "16", "--no-progress"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "workbench.induction/1"
    head = report["heads"][0]
    for key in ("layer", "head", "induction", "prev_token", "duplicate", "prefix_matching",
                "copying", "ablation_nats", "mean_ablation_nats"):
        assert key in head
    assert report["induction_heads"] and all(h.startswith("L1") for h in report["induction_heads"])
    # the head whose output matters most in the induction head's keys is the earlier head
    # that attends most to the previous token (the weight score does not find it on `tiny`)
    pair = report["pairs"][0]
    layer0 = [h for h in report["heads"] if h["layer"] == 0]
    assert pair["k_path_source"] == max(layer0, key=lambda h: h["prev_token"])["name"], pair
    assert pair["k_path"] > 2 * pair["k_path_mean_earlier"]
    assert torch.tensor(report["composition"]["K_path"]).shape == (2, 4, 2, 4)
    # two layers: nothing lies between, so counting every path names the same head
    assert pair["k_path_all_source"] == pair["k_path_source"], pair
    records = report["dynamics"]["checkpoints"]
    assert records[0]["step"] == 0 and len(records) >= 5
    pc = report["dynamics"]["phase_change"]
    # induction forms during training and in-context learning with it
    assert max(pc["max_induction"]) - pc["max_induction"][0] > 0.3
    assert records[-1]["icl"] < records[0]["icl"] - 0.3
    for suffix in (".heads.fig.json", ".dynamics.fig.json"):
        fig = json.loads(out.with_suffix(suffix).read_text())
        assert fig["data"]
    assert "induction heads:" in capsys.readouterr().out
    assert main(args) == 2  # exists: refused without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err


def test_cli_errors_are_one_line(tiny_run: TrainResult, hf_gpt2_dir: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["induction", "--model", str(hf_gpt2_dir), "--checkpoints", "all",
                 "--out", str(tmp_path / "a.json")]) == 2
    assert "--checkpoints needs a run directory" in capsys.readouterr().err
    assert main(["induction", "--model", str(tiny_run.run_dir), "--checkpoints", "3,7",
                 "--out", str(tmp_path / "b.json")]) == 2
    assert "no checkpoint at step(s) [3, 7]" in capsys.readouterr().err


def test_cli_on_a_local_hf_gpt2_directory(hf_gpt2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpt2.json"
    assert main(["induction", "--model", str(hf_gpt2_dir), "--out", str(out), "--n-seqs", "4",
                 "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["n_layers"] == 2 and len(report["heads"]) == 8
    assert report["inputs"]["seq_len"] == 63  # n_positions 64, minus one


def test_attribution_estimates_do_not_depend_on_the_chunking(tiny_model) -> None:  # noqa: ANN001
    """`ablation_estimates` sums per chunk of sequences: one sequence per backward pass gives
    the numbers of the whole batch in one pass (zero and mean ablation)."""
    from circuits.ablation import ablation_estimates

    rep = repeated_tokens_for(tiny_model, n_seqs=6, seed=0)
    whole = ablation_estimates(tiny_model, rep, chunk_tokens=10**9)
    one_by_one = ablation_estimates(tiny_model, rep, chunk_tokens=1)
    for m in ("zero", "mean"):
        assert whole[m].abs().max() > 1e-3  # heads that matter
        torch.testing.assert_close(one_by_one[m], whole[m], atol=1e-5, rtol=1e-4)


def test_candidates_mode_finds_the_same_heads_with_far_fewer_passes(tiny_model) -> None:  # noqa: ANN001
    """`exact="candidates"` (what `auto` picks for a model of more than 64 heads) ablates
    only heads whose induction score reaches `min_score`: the same induction heads and the
    same exact effects on them as ablating every head; the other heads carry only the
    attribution estimate, which ranks the induction heads first, as exact ablation does."""
    from circuits.induction import InductionConfig, _heads_report

    full = _heads_report(tiny_model, InductionConfig(n_seqs=8, exact="all"), None)
    cand = _heads_report(tiny_model, InductionConfig(n_seqs=8, exact="candidates",
                                                     path_sources=1), None)
    assert full["exact"] == "all" and cand["exact"] == "candidates"
    assert cand["induction_heads"] == full["induction_heads"] != []
    by_name = {r["name"]: r for r in full["heads"]}
    for r in cand["heads"]:
        assert r["ablation_exact"] == (r["induction"] >= 0.4)
        if r["ablation_exact"]:
            assert r["ablation_nats"] == pytest.approx(by_name[r["name"]]["ablation_nats"],
                                                       abs=1e-4)
        else:
            assert r["ablation_nats"] is None and r["mean_ablation_nats"] is None
        assert r["ablation_estimate"] == pytest.approx(
            by_name[r["name"]]["ablation_estimate"], abs=1e-4)
    # the estimates rank an induction head first, as the exact zero ablation does
    best_exact = max(full["heads"], key=lambda r: r["ablation_nats"])["name"]
    best_estimate = max(full["heads"], key=lambda r: r["ablation_estimate"])["name"]
    assert best_exact in full["induction_heads"] and best_estimate in full["induction_heads"]
    # path patching: only the chosen sources are measured (1 by K-composition, 1 by
    # previous-token score per induction head), and the pair names a measured source
    for p in cand["pairs"]:
        assert 1 <= p["k_path_n_sources"] <= 2
        full_pair = next(q for q in full["pairs"] if q["induction_head"] == p["induction_head"])
        layer = int(p["induction_head"][1:].split("H")[0])
        assert full_pair["k_path_n_sources"] == layer * tiny_model.cfg.n_heads
    text = json.dumps(cand)  # no NaN in the JSON: not-measured entries are null
    assert "NaN" not in text
