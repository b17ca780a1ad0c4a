"""ModelConfig, FastGPT <-> TransformerBridge weight mapping, loading and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.models.config import ModelConfig, get_preset
from workbench.models.devices import resolve_device
from workbench.models.loader import build_bridge, load
from workbench.training.fastgpt import FastGPT, from_bridge_state_dict, to_bridge_state_dict

TINY = get_preset("tiny").replace(d_vocab=50, n_ctx=16)


@pytest.mark.parametrize("attn_only", [False, True])
def test_fastgpt_computes_what_the_bridge_computes(attn_only: bool) -> None:
    cfg = TINY.replace(attn_only=attn_only)
    bridge = build_bridge(cfg)
    fast = FastGPT(cfg)
    fast.load_state_dict(from_bridge_state_dict(bridge.state_dict(), cfg))
    tokens = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(fast(tokens), bridge(tokens), atol=2e-5, rtol=1e-5)


def test_weight_mapping_round_trips_exactly() -> None:
    bridge_sd = build_bridge(TINY).state_dict()
    back = to_bridge_state_dict(from_bridge_state_dict(bridge_sd, TINY), TINY)
    assert back.keys() == bridge_sd.keys()
    assert all(torch.equal(back[k], bridge_sd[k]) for k in bridge_sd)


def test_n_params_matches_the_bridge() -> None:
    for cfg in (TINY, TINY.replace(attn_only=True)):
        assert cfg.n_params == sum(t.numel() for t in build_bridge(cfg).state_dict().values())


def test_presets_have_the_documented_shapes() -> None:
    assert get_preset("attn2").attn_only and get_preset("attn2").n_layers == 2
    assert get_preset("default").n_layers == 4 and get_preset("default").d_model == 128
    assert 6 <= get_preset("small").n_layers <= 8 and get_preset("small").d_model == 512


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; choose one of \['attn2'"):
        get_preset("huge")


def test_bad_model_config_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ModelConfig.n_layers=0; it must be a positive"):
        ModelConfig(n_layers=0)
    with pytest.raises(ValueError, match="act_fn='tanh'"):
        ModelConfig(act_fn="tanh")


def test_prompt_longer_than_n_ctx_is_refused() -> None:
    fast = FastGPT(TINY)
    with pytest.raises(ValueError, match=r"input has 17 tokens; model n_ctx is 16"):
        fast(torch.zeros(1, 17, dtype=torch.long))


def test_cuda_asked_for_but_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda' was asked for but CUDA is not available"
                       r".*pass --device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_unknown_model_reference(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model reference './no-such-run' does not exist"):
        load("./no-such-run")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no model"):
        load(empty)


def test_hub_name_while_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"cannot load 'gpt2' from the Hugging Face hub "
                       r"\(HF_HUB_OFFLINE is set.*Pass a local directory"):
        load("gpt2")


def test_local_hf_directory_loads_as_a_bridge(hf_gpt2_dir: Path) -> None:
    from transformers import GPT2LMHeadModel

    bridge = load(hf_gpt2_dir)
    assert bridge.cfg.n_layers == 2
    tokens = bridge.to_tokens("the cat sat on the mat")
    hf = GPT2LMHeadModel.from_pretrained(hf_gpt2_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens)
        torch.testing.assert_close(logits, hf(tokens).logits, atol=1e-4, rtol=1e-4)
    assert cache["blocks.1.attn.hook_pattern"].shape == (1, 4, tokens.shape[1], tokens.shape[1])
    assert json.loads((hf_gpt2_dir / "config.json").read_text())["model_type"] == "gpt2"


def test_model_too_large_for_memory_is_refused_up_front(
        hf_gpt2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.models import checks

    monkeypatch.delenv(checks.IGNORE_MEMORY_ENV, raising=False)
    n = checks.hf_param_count(hf_gpt2_dir)
    hf = json.loads((hf_gpt2_dir / "config.json").read_text())
    d, v, layers = hf["n_embd"], hf["vocab_size"], hf["n_layer"]
    assert n == v * d + hf["n_positions"] * d + layers * (12 * d * d + 13 * d) + 2 * d
    monkeypatch.setattr(checks, "available_memory", lambda: n * 4)  # less than 2 x weights
    with pytest.raises(ValueError, match=r"model .*tiny-gpt2 has 0M parameters and needs "
                                         r"about .* more than the .* available; use a smaller "
                                         r"model, load it on a GPU .*WORKBENCH_IGNORE_MEMORY=1"):
        load(hf_gpt2_dir)
    monkeypatch.setenv(checks.IGNORE_MEMORY_ENV, "1")
    assert load(hf_gpt2_dir).cfg.n_layers == layers
