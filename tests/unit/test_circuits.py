"""circuits/: detection masks and head scores against TransformerLens, composition and copying
scores, ablation, repeated tokens, attention API, logit lens, patching, phase change."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import head_detector as hd

from circuits.ablation import head_ablation_effects, token_nll
from circuits.attention import attention_patterns, batch_attention_patterns, logit_lens
from circuits.dynamics import phase_change
from circuits.patching import patch_positions
from circuits.paths import k_path_patching
from circuits.scores import (
    DETECTORS,
    composition_scores,
    head_scores,
    induction_mask,
    ov_copying_scores,
)
from workbench.models.config import get_preset
from workbench.models.loader import build_bridge
from workbench.repeats import repeated_tokens

CFG = get_preset("tiny").replace(d_vocab=40, n_ctx=32, n_layers=3, n_heads=4)


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    torch.manual_seed(0)
    m = build_bridge(CFG)
    with torch.no_grad():  # sharper attention than the init's near-uniform patterns
        for block in m.blocks:
            for p in (block.attn.q, block.attn.k):
                for w in p.parameters():
                    w.mul_(4.0)
    return m


@pytest.fixture(scope="module")
def rep():  # noqa: ANN201
    return repeated_tokens(CFG.d_vocab, n_seqs=6, seq_len=29, seed=1, bos_id=0,
                           ids=torch.arange(1, CFG.d_vocab))


TL_PATTERNS = {"prev_token": hd.get_previous_token_head_detection_pattern,
               "duplicate": hd.get_duplicate_token_head_detection_pattern,
               "induction": hd.get_induction_head_detection_pattern}


def test_masks_equal_transformer_lens_detection_patterns(rep) -> None:  # noqa: ANN001
    for kind, tl_fn in TL_PATTERNS.items():
        ours = DETECTORS[kind](rep.tokens, rep)
        for i in range(len(rep.tokens)):
            assert torch.equal(ours[i].float(), tl_fn(rep.tokens[i:i + 1])), kind


def test_tl_normalised_scores_equal_detect_head_internals(model, rep) -> None:  # noqa: ANN001
    ours = head_scores(model, rep, kinds=tuple(TL_PATTERNS), normalize="tl")
    expected = torch.zeros(len(TL_PATTERNS), CFG.n_layers, CFG.n_heads)
    for i in range(len(rep.tokens)):  # what detect_head does for each string of a list
        _, cache = model.run_with_cache(rep.tokens[i:i + 1], remove_batch_dim=True)
        for k, tl_fn in enumerate(TL_PATTERNS.values()):
            det = tl_fn(rep.tokens[i:i + 1])
            for layer in range(CFG.n_layers):
                for h in range(CFG.n_heads):
                    expected[k, layer, h] += hd.compute_head_attention_similarity_score(
                        cache["pattern", layer, "attn"][h], det, exclude_bos=False,
                        exclude_current_token=False, error_measure="mul") / len(rep.tokens)
    for k, kind in enumerate(TL_PATTERNS):
        torch.testing.assert_close(ours[kind], expected[k], atol=1e-5, rtol=0)


def test_targets_normalisation_averages_over_queries_with_targets(model, rep) -> None:  # noqa: ANN001
    _, cache = model.run_with_cache(rep.tokens)
    pattern = cache["blocks.1.attn.hook_pattern"][:, 2]  # [B, Q, K]
    mask = induction_mask(rep.tokens)
    rows = mask.any(-1)
    expected = (pattern * mask).sum(-1)[rows].mean()
    got = head_scores(model, rep, kinds=("induction",))["induction"][1, 2]
    assert abs(float(got) - float(expected)) < 1e-5


def test_a_fixed_offset_head_does_not_look_like_an_induction_head(rep) -> None:  # noqa: ANN001
    # The periods differ between sequences, so no single look-back distance hits the stripe.
    assert len(set(rep.period.tolist())) > 1
    stripe = rep.stripe_mask()
    best = 0.0
    t = rep.tokens.shape[1]
    for offset in range(1, t):
        fixed = torch.zeros(t, t, dtype=torch.bool)
        fixed[offset:, :-offset] = torch.eye(t - offset, dtype=torch.bool)
        rows = stripe.any(-1)
        best = max(best, float((stripe & fixed).any(-1)[rows].float().mean()))
    assert best < 0.5


def test_repeated_tokens_are_seeded() -> None:
    a = repeated_tokens(50, 4, 30, seed=3, bos_id=2)
    b = repeated_tokens(50, 4, 30, seed=3, bos_id=2)
    c = repeated_tokens(50, 4, 30, seed=4, bos_id=2)
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    with pytest.raises(ValueError, match="seq_len=5 is too short"):
        repeated_tokens(50, 4, 5)


def test_composition_scores_equal_transformer_lens(model) -> None:  # noqa: ANN001
    for mode in ("Q", "K", "V"):
        torch.testing.assert_close(composition_scores(model, mode),
                                   model.all_composition_scores(mode).scores, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="mode='X'; choose one of"):
        composition_scores(model, "X")


def test_copying_score_is_that_of_the_full_ov_circuit(model) -> None:  # noqa: ANN001
    got = ov_copying_scores(model)
    w_e, w_u = model.W_E.detach().double(), model.W_U.detach().double()
    for layer, h in [(0, 0), (2, 3)]:
        full = (w_e @ model.W_V[layer, h].double() @ model.W_O[layer, h].double() @ w_u).detach()
        eig = torch.linalg.eigvals(full)
        expected = eig.real.sum() / eig.abs().sum()
        assert abs(float(got[layer, h]) - float(expected)) < 1e-4


def test_zero_ablation_equals_zeroing_the_heads_output_weights(model, rep) -> None:  # noqa: ANN001
    effects, clean = head_ablation_effects(model, rep, "zero")
    layer, h = 1, 2
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():
            w = next(p for n, p in model.blocks[layer].attn.o.named_parameters()
                     if n.endswith("weight"))
            d_head = CFG.d_head
            w[:, h * d_head:(h + 1) * d_head] = 0  # nn.Linear weight: [d_model, n_heads*d_head]
            nll = token_nll(model(rep.tokens), rep.tokens)
        expected = float(nll[rep.second_copy_mask()].mean()) - clean
    finally:
        model.load_state_dict(state)
    assert abs(float(effects[layer, h]) - expected) < 1e-4
    mean_effects, _ = head_ablation_effects(model, rep, "mean", batch_heads=1)
    assert mean_effects.shape == (CFG.n_layers, CFG.n_heads)
    with pytest.raises(ValueError, match="ablation method='half'"):
        head_ablation_effects(model, rep, "half")


def test_k_path_patching_equals_two_hooked_runs(model, rep, monkeypatch) -> None:  # noqa: ANN001
    """`all` paths: keys from a run with the source mean-ablated, patched into a clean run."""
    drop = k_path_patching(model, rep, paths="all")
    src, tgt = (0, 1), 2
    z_name, k_name = f"blocks.{src[0]}.attn.hook_z", f"blocks.{tgt}.attn.hook_k"
    _, cache = model.run_with_cache(rep.tokens, names_filter=[z_name])
    mean = cache[z_name][:, :, src[1]].mean((0, 1))

    def ablate(z, hook):  # noqa: ANN001, ANN202
        z = z.clone()
        z[:, :, src[1]] = mean
        return z

    kept = {}

    def keep(t, hook):  # noqa: ANN001, ANN202
        kept["t"] = t.clone()

    model.run_with_hooks(rep.tokens, fwd_hooks=[(z_name, ablate), (k_name, keep)])
    patched_k = kept.pop("t")
    p_name = f"blocks.{tgt}.attn.hook_pattern"
    pats = {}
    for name, hooks in (("clean", []), ("patched", [(k_name, lambda k, hook: patched_k)])):
        model.run_with_hooks(rep.tokens, fwd_hooks=[*hooks, (p_name, keep)])
        pats[name] = kept.pop("t")
    mask = induction_mask(rep.tokens).float()
    has = mask.sum(-1) > 0
    w = has.float()[:, None, :]
    score = {n: (torch.einsum("bhqk,bqk->bhq", p, mask) * w).sum((0, 2)) / w.sum((0, 2))
             for n, p in pats.items()}
    torch.testing.assert_close(drop[src[0], src[1], tgt], score["clean"] - score["patched"],
                               atol=1e-5, rtol=0)
    assert drop[:, :, 0].abs().sum() == 0 and drop[2].abs().sum() == 0  # only earlier sources
    assert drop[0, :, 1:].abs().sum() > 0
    import circuits.paths as paths  # chunks of source heads give the same numbers
    monkeypatch.setattr(paths, "MAX_BATCH", len(rep.tokens) * 3)
    chunked = k_path_patching(model, rep, target_layers=[2], paths="all")
    torch.testing.assert_close(chunked[:, :, 2], drop[:, :, 2], atol=1e-6, rtol=0)
    assert chunked[:, :, 1].abs().sum() == 0


def test_direct_k_paths_are_all_paths_where_nothing_lies_between(rep, monkeypatch) -> None:  # noqa: ANN001
    """In an attention-only model a head in the layer just before the target reaches the
    target's keys only directly, so `direct` equals `all` there (an independent check of the
    direct path's layer norm and W_K); from two layers back the paths through the middle
    layer's heads make them differ."""
    torch.manual_seed(1)
    m = build_bridge(CFG.replace(attn_only=True))
    with torch.no_grad():
        for block in m.blocks:
            for p in (block.attn.q, block.attn.k):
                for w in p.parameters():
                    w.mul_(4.0)
    direct = k_path_patching(m, rep)
    import circuits.paths as paths
    monkeypatch.setattr(paths, "MAX_BATCH", len(rep.tokens) * 3)  # chunks as well
    every = k_path_patching(m, rep, paths="all")
    for t in (1, 2):
        torch.testing.assert_close(direct[t - 1, :, t], every[t - 1, :, t], atol=2e-5, rtol=0)
    assert (direct[0, :, 2] - every[0, :, 2]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"target layer\(s\) \[3\] out of range"):
        k_path_patching(m, rep, target_layers=[3])
    with pytest.raises(ValueError, match="paths='some'"):
        k_path_patching(m, rep, paths="some")


def test_head_scores_reject_bad_arguments(model, rep) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"unknown head score\(s\) \['induct'\]"):
        head_scores(model, rep, kinds=("induct",))
    with pytest.raises(ValueError, match="normalize='sum'"):
        head_scores(model, rep, normalize="sum")
    plain = head_scores(model, rep.tokens)  # no structure: prefix matching left out
    assert "prefix_matching" not in plain and "induction" in plain


def test_attention_patterns_and_logit_lens(model, rep) -> None:  # noqa: ANN001
    pats = attention_patterns(model, rep.tokens[0])
    assert pats.pattern.shape == (CFG.n_layers, CFG.n_heads, 29, 29)
    torch.testing.assert_close(pats.pattern.sum(-1), torch.ones(CFG.n_layers, CFG.n_heads, 29))
    assert len(pats.tokens) == 29
    batch = batch_attention_patterns(model, rep.tokens)
    assert batch.shape == (6, CFG.n_layers, CFG.n_heads, 29, 29)
    torch.testing.assert_close(batch[0], pats.pattern)
    lens = logit_lens(model, rep.tokens[0], k=3)
    assert lens.layers[0] == "embed" and len(lens.layers) == CFG.n_layers + 1
    final = model(rep.tokens[:1]).log_softmax(-1)[0]
    top = final.exp().topk(3, -1)
    torch.testing.assert_close(lens.top_probs[-1], top.values, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="more than the model's n_ctx=32"):
        attention_patterns(model, torch.zeros(40, dtype=torch.long))


def test_patching_restores_the_clean_run(model) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1, CFG.d_vocab, (1, 10), generator=g)
    corrupt = clean.clone()
    corrupt[0, 3] = (clean[0, 3] + 1) % CFG.d_vocab
    target = int(clean[0, -1])

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].log_softmax(-1)[:, target]

    out = patch_positions(model, clean, corrupt, "blocks.0.hook_resid_pre", metric)
    with torch.no_grad():
        clean_value = float(metric(model(clean)))
        corrupt_value = float(metric(model(corrupt)))
    assert abs(float(out[3]) - clean_value) < 1e-4  # restoring the changed token = clean
    assert abs(float(out[5]) - corrupt_value) < 1e-4  # elsewhere nothing changes
    with pytest.raises(ValueError, match="unknown hook 'blocks.9.hook_resid_pre'"):
        patch_positions(model, clean, corrupt, "blocks.9.hook_resid_pre", metric)
    with pytest.raises(ValueError, match="same shape"):
        patch_positions(model, clean, corrupt[:, :5], "blocks.0.hook_resid_pre", metric)


def test_phase_change_finds_the_steepest_rise_and_drop() -> None:
    def rec(step: int, ind: float, icl: float) -> dict:
        return {"step": step, "induction": [[0.0, 0.0], [ind, 0.1]], "icl": icl}

    records = [rec(0, 0.0, 0.1), rec(100, 0.05, 0.2), rec(200, 0.6, -0.8), rec(400, 0.7, -0.9)]
    pc = phase_change(records)
    assert pc["induction_rise"] == [100, 200] and pc["icl_drop"] == [100, 200]
    assert pc["coincide"] and abs(pc["induction_rise_size"] - 0.5) < 1e-9


def test_checkpoint_steps_are_read_from_directory_names() -> None:
    from pathlib import Path

    from workbench.layout import step_of

    assert step_of(Path("runs/x/checkpoints/step_000512")) == 512
    assert step_of(Path("pythia-70m/step1000")) == 1000
    assert step_of(Path("gpt2-final")) is None and step_of(Path("tiny-gpt2")) is None


def test_summary_reads_reports_written_before_path_patching() -> None:
    from circuits.induction import findings as summary

    old = {"induction_head": "L1H0", "k_composition_source": "L0H1", "k_composition": 0.2,
           "source_is_prev_token": True, "k_composition_mean_earlier": 0.1}
    new = {**{k: v for k, v in old.items() if k != "source_is_prev_token"},
           "k_composition_source_is_prev_token": False, "induction": 0.7, "k_path": 0.3,
           "k_path_source": "L0H2", "k_path_mean_earlier": 0.05,
           "k_path_source_is_prev_token": True}
    base = {"induction_heads": ["L1H0"], "previous_token_heads": ["L0H1"],
            "loss": {"first_copy": 9.0, "second_copy": 1.0}}
    text = summary({**base, "pairs": [old]})
    assert "by weights from L0H1 (0.200" in text and "previous-token head: yes" in text
    assert "path patching" not in text
    text = summary({**base, "pairs": [new]})
    assert "previous-token head: no); by path patching its keys from L0H2" in text
    assert "drops by 0.300" in text and text.endswith("previous-token head: yes)")
