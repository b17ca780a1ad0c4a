"""circuits/tracing.py: causal tracing batched vs the one-run-per-restoration baseline, the
sanity limits (last layer, zero noise, untouched positions), subject spans, errors, results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from circuits.tracing import (
    TraceConfig,
    TraceResult,
    causal_trace,
    causal_trace_loop,
    find_subject,
    trace_figure,
)
from workbench.models.config import get_preset
from workbench.models.loader import build_bridge, load
from workbench.world.tokenizer import build_world_tokenizer
from workbench.world.tokenizer_files import load_hf_tokenizer

PROMPT, SUBJECT = "did you know ? anna berg lives in", "anna berg"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A random 3-layer bridge with the world tokenizer and a sharpened unembedding, so that
    p(target) ranges widely between clean (0.64), corrupted (0.93) and restored runs."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    build_world_tokenizer().save(str(path))
    tok = load_hf_tokenizer(path)
    cfg = get_preset("tiny").replace(d_vocab=len(tok), n_ctx=32, n_layers=3, n_heads=4)
    torch.manual_seed(0)
    m = build_bridge(cfg, tokenizer=tok)
    with torch.no_grad():
        for w in m.unembed.parameters():
            w.mul_(5.0)
    return m


def _argmax_word(model, prompt: str) -> str:  # noqa: ANN001
    with torch.no_grad():
        logits = model(model.to_tokens(prompt))[0, -1]
    return model.tokenizer.decode([int(logits.argmax())]).strip()


@pytest.fixture(scope="module")
def target(model) -> str:  # noqa: ANN001
    return _argmax_word(model, PROMPT)


@pytest.mark.parametrize("cfg", [TraceConfig(n_samples=3),
                                 TraceConfig(n_samples=2, window=3, layers=(0, 2),
                                             kinds=("mlp", "attn"), batch_size=7)],
                         ids=["window1", "window3-layers-chunked"])
def test_batched_equals_loop(model, target: str, cfg: TraceConfig) -> None:  # noqa: ANN001
    fast = causal_trace(model, PROMPT, SUBJECT, target, cfg)
    slow = causal_trace_loop(model, PROMPT, SUBJECT, target, cfg)
    assert fast.clean_prob == pytest.approx(slow.clean_prob, abs=1e-6)
    assert fast.corrupt_prob == pytest.approx(slow.corrupt_prob, abs=1e-6)
    assert abs(fast.clean_prob - fast.corrupt_prob) > 0.05  # the noise matters: a real comparison
    for kind in cfg.kinds:
        np.testing.assert_allclose(fast.scores[kind], slow.scores[kind], atol=1e-4, rtol=0)
        assert np.nanmax(fast.scores[kind]) - np.nanmin(fast.scores[kind]) > 0.05
    if cfg.layers is not None:
        assert np.isnan(fast.scores["mlp"][1]).all() and not np.isnan(fast.scores["mlp"][0]).any()


def test_restored_states_that_cannot_matter_give_the_corrupted_probability(
        model, target: str) -> None:  # noqa: ANN001
    """Measured by the loop, which runs every restoration (the batched trace skips these)."""
    r = causal_trace_loop(model, PROMPT, SUBJECT, target, TraceConfig(n_samples=2))
    start = r.subject[0]
    for kind, s in r.scores.items():
        np.testing.assert_allclose(s[:, :start], r.corrupt_prob, atol=1e-6, err_msg=kind)
        np.testing.assert_allclose(s[-1, :-1], r.corrupt_prob, atol=1e-6, err_msg=kind)


def test_last_layer_resid_at_last_position_restores_the_clean_probability(
        model, target: str) -> None:  # noqa: ANN001
    for trace in (causal_trace, causal_trace_loop):
        r = trace(model, PROMPT, SUBJECT, target, TraceConfig(n_samples=2, kinds=("resid",)))
        assert r.scores["resid"][-1, -1] == pytest.approx(r.clean_prob, abs=1e-6)
        assert abs(r.corrupt_prob - r.clean_prob) > 0.05


def test_zero_noise_restores_the_clean_probability_everywhere(model, target: str) -> None:  # noqa: ANN001
    r = causal_trace(model, PROMPT, SUBJECT, target, TraceConfig(noise=0.0, n_samples=2))
    assert r.corrupt_prob == pytest.approx(r.clean_prob, abs=1e-6)
    for s in r.scores.values():
        np.testing.assert_allclose(s, r.clean_prob, atol=1e-5)


def test_default_noise_is_three_embedding_stds(model, target: str) -> None:  # noqa: ANN001
    r = causal_trace(model, PROMPT, SUBJECT, target, TraceConfig(n_samples=1, kinds=("attn",)))
    assert r.noise == pytest.approx(3 * float(model.W_E.detach().std()), rel=1e-5)


def test_find_subject_with_the_world_tokenizer(model) -> None:  # noqa: ANN001
    assert find_subject(model, PROMPT, SUBJECT) == (5, 7)  # <bos> did you know ? anna berg
    assert find_subject(model, "anna berg lives in", " anna berg ") == (1, 3)
    assert find_subject(model, "as for anna berg , anna lives in", "anna") == (3, 4)


def test_find_subject_with_a_bpe_tokenizer(hf_gpt2_dir: Path) -> None:
    gpt2 = load(hf_gpt2_dir)
    for prompt, subject in [("anna berg lives in", "anna berg"),
                            ("the cat sat on the mat", "cat sat"),
                            ("the dogs that the cat sees run", "the cat")]:
        start, end = find_subject(gpt2, prompt, subject)
        toks = gpt2.to_str_tokens(prompt)
        assert toks[0] == "<|endoftext|>" and start >= 1
        assert "".join(toks[start:end]).strip() == subject, (prompt, toks, start, end)
    assert find_subject(gpt2, "the dogs that the cat sees run", "the cat") == \
        find_subject(gpt2, "the dogs that the cat sees run", "the cat ")


def test_trace_on_a_hugging_face_bridge_matches_the_loop(hf_gpt2_dir: Path) -> None:
    gpt2 = load(hf_gpt2_dir)
    cfg = TraceConfig(n_samples=2, noise=1.0)
    fast = causal_trace(gpt2, "the dogs that the cat sees", "the cat", "run", cfg)
    slow = causal_trace_loop(gpt2, "the dogs that the cat sees", "the cat", "run", cfg)
    for kind in cfg.kinds:  # p(run) ~ 1 / d_vocab in a random model: compare relative errors
        np.testing.assert_allclose(fast.scores[kind], slow.scores[kind], rtol=1e-4, atol=0)
    assert np.ptp(fast.scores["resid"]) > 1e-3 * fast.corrupt_prob  # well above rtol


def test_subject_not_in_prompt_is_refused(model, target: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"subject 'emil berg' is not in the prompt 'did you "
                                         r"know \? anna berg lives in'; pass a subject that"):
        causal_trace(model, PROMPT, "emil berg", target)


def test_multi_token_target_is_refused(hf_gpt2_dir: Path) -> None:
    gpt2 = load(hf_gpt2_dir)
    with pytest.raises(ValueError, match=r"target 'zebrafish' is \d+ tokens .* pass a "
                                         "single-token target"):
        causal_trace(gpt2, "anna berg lives in", "anna berg", "zebrafish")


def test_target_outside_the_vocabulary_is_refused(model) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="target 'paris' is not in the tokenizer's vocabulary"):
        causal_trace(model, PROMPT, SUBJECT, "paris")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match=r"TraceConfig.kinds=\('mlp', 'heads'\); pass distinct "
                                         "kinds from"):
        TraceConfig(kinds=("mlp", "heads"))


@pytest.mark.parametrize("kwargs, match", [
    ({"n_samples": 0}, r"TraceConfig.n_samples=0; it must be an integer >= 1"),
    ({"noise": -1.0}, r"TraceConfig.noise=-1.0; pass a finite std >= 0"),
    ({"window": 0}, r"TraceConfig.window=0"),
    ({"layers": (1, 1)}, r"TraceConfig.layers=\(1, 1\); pass distinct layer indices"),
])
def test_bad_config_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TraceConfig(**kwargs)


def test_layer_out_of_range_is_refused(model, target: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"TraceConfig.layers has \[3\], out of range for a "
                                         r"model with n_layers=3; pass layers in \[0, 2\]"):
        causal_trace(model, PROMPT, SUBJECT, target, TraceConfig(layers=(0, 3)))


def test_kinds_as_a_string_means_one_kind() -> None:
    assert TraceConfig(kinds="mlp").kinds == ("mlp",)


def _result() -> TraceResult:
    mlp = np.array([[0.1, 0.2, 0.9, 0.3], [0.1, 0.6, 0.4, 0.8]])
    return TraceResult(prompt="a b c", tokens=["<bos>", "a", "b", "c"], subject=(1, 3),
                       target="d", target_id=7, clean_prob=0.9, corrupt_prob=0.1,
                       scores={"mlp": mlp, "resid": np.full((2, 4), np.nan)},
                       config=TraceConfig(kinds=("mlp", "resid")))


def test_peak_and_indirect_effect() -> None:
    r = _result()
    assert r.peak("mlp") == (0, 2)            # the last subject token is position 2
    assert r.peak("mlp", "any") == (0, 2)
    assert r.peak("mlp", -1) == (1, 3)
    assert r.peak("mlp", 1) == (1, 1)
    np.testing.assert_allclose(r.indirect_effect("mlp"), r.scores["mlp"] - 0.1)
    with pytest.raises(ValueError, match=r"kind 'attn' was not traced; traced kinds: \('mlp', "
                                         r"'resid'\)"):
        r.peak("attn")
    with pytest.raises(ValueError, match="position='first'; pass 'last_subject', 'any'"):
        r.peak("mlp", "first")
    with pytest.raises(ValueError, match="no traced layer"):
        r.peak("resid")


def test_to_dict_is_json_and_round_trips(model, target: str) -> None:  # noqa: ANN001
    r = causal_trace(model, PROMPT, SUBJECT, target,
                     TraceConfig(n_samples=2, layers=(1,), kinds=("mlp", "resid")))
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["schema"] == "workbench.trace/1" and d["subject"] == [5, 7]
    assert d["scores"]["mlp"][0][0] is None and d["peaks"]["mlp"]["last_subject"][0] == 1
    back = TraceResult.from_dict(d)
    assert back.config == r.config and back.subject == r.subject
    np.testing.assert_array_equal(back.scores["mlp"], r.scores["mlp"])


def test_trace_figure_has_one_heatmap_per_kind(model, target: str) -> None:  # noqa: ANN001
    r = causal_trace(model, PROMPT, SUBJECT, target, TraceConfig(n_samples=2))
    fig = trace_figure(r)
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    assert list(fig.data[0].x)[5:7] == ["5:anna*", "6:berg*"]
    assert len(fig.data[1].z) == 3 and len(fig.data[1].z[0]) == len(r.tokens)
