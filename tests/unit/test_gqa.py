"""Grouped-query attention (Llama, Qwen2, Mistral, Gemma): a model whose key/value heads are
shared by groups of query heads must score exactly like the same model with every key/value
head written out once per query head (plain multi-head attention)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.paths import k_path_patching
from circuits.scores import composition_scores, head_scores, ov_copying_scores, per_query_head
from workbench.models.loader import load
from workbench.repeats import repeated_tokens

N_HEADS, N_KV, D_HEAD = 4, 2, 8


def _save_llama(path: Path, n_kv: int, state: dict[str, torch.Tensor] | None) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    cfg = LlamaConfig(vocab_size=48, hidden_size=N_HEADS * D_HEAD, intermediate_size=64,
                      num_hidden_layers=3, num_attention_heads=N_HEADS,
                      num_key_value_heads=n_kv, max_position_embeddings=64)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    if state is not None:
        model.load_state_dict(state)
    with torch.no_grad():  # sharper attention than the default init, so scores differ
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
    model.save_pretrained(path)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(48)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1",
                            eos_token="w2").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """(GQA model, the same model with its key/value heads repeated per query head)."""
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("gqa")
    gqa_dir = _save_llama(root / "gqa", N_KV, None)
    state = LlamaForCausalLM.from_pretrained(gqa_dir).state_dict()
    for name in list(state):  # kv head i serves query heads i*g .. i*g+g-1 (repeat_kv)
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            w = state[name].view(N_KV, D_HEAD, -1)
            state[name] = w.repeat_interleave(N_HEADS // N_KV, dim=0).reshape(N_HEADS * D_HEAD, -1)
        elif name.endswith("q_proj.weight"):
            state[name] = state[name] / 8  # _save_llama scales it again
    mha_dir = _save_llama(root / "mha", N_HEADS, state)
    return load(gqa_dir), load(mha_dir)


def test_the_pair_is_one_function(pair) -> None:  # noqa: ANN001
    gqa, mha = pair
    tokens = torch.randint(3, 48, (2, 16), generator=torch.Generator().manual_seed(0))
    assert gqa.W_K.shape[1] == N_KV and mha.W_K.shape[1] == N_HEADS
    torch.testing.assert_close(gqa(tokens), mha(tokens), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_query_head(gqa, "W_K"), mha.W_K)


def test_every_head_analysis_reads_a_query_heads_own_key_value_head(pair) -> None:  # noqa: ANN001
    gqa, mha = pair
    rep = repeated_tokens(48, 8, 24, seed=0, bos_id=1)
    for a, b in zip(head_scores(gqa, rep).values(), head_scores(mha, rep).values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ov_copying_scores(gqa), ov_copying_scores(mha), atol=1e-5,
                               rtol=1e-4)
    for mode in ("Q", "K", "V"):
        torch.testing.assert_close(composition_scores(gqa, mode), composition_scores(mha, mode),
                                   atol=1e-5, rtol=1e-4)
    # patching a shared key head moves every query head of its group; the written-out model
    # moves each copy alike (and a bias-free key projection needs no b_K)
    drop = k_path_patching(gqa, rep, kind="prev_token")
    torch.testing.assert_close(drop, k_path_patching(mha, rep, kind="prev_token"), atol=1e-5,
                               rtol=1e-4)
    assert drop.abs().sum() > 0
