"""`workbench.models.arch`: what a loaded model is made of, and the one-line refusals of analyses it
cannot support (the architecture matrix in tests/integration/test_architectures.py runs them on
real Hugging Face classes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from workbench.models.arch import UnsupportedArchitecture, check_causal, describe, require
from workbench.models.config import get_preset
from workbench.models.loader import build_bridge


def test_a_native_model_is_described() -> None:
    arch = describe(build_bridge(get_preset("tiny").replace(d_vocab=50)))
    assert (arch.name, arch.attention, arch.n_kv_heads, arch.positions, arch.norm, arch.mlp,
            arch.parallel) == ("TransformerLensNative", "multi-head", 4, "learned", "LayerNorm",
                               "standard", False)
    assert require(build_bridge(get_preset("tiny").replace(d_vocab=50)), "attention", "x") == arch


def test_an_attention_only_model_cannot_be_edited() -> None:
    model = build_bridge(get_preset("attn2").replace(d_vocab=50))
    assert describe(model).mlp == "none"
    with pytest.raises(UnsupportedArchitecture, match=r"--method rome edits one MLP output "
                       r"matrix per layer; TransformerLensNative cannot be edited that way: "
                       r"it has no MLP\. Use --method icl"):
        require(model, "mlp_edit", "--method rome")
    with pytest.raises(ValueError, match="unknown part 'heads'"):
        require(model, "heads", "x")


@pytest.mark.parametrize(("config", "message"), [
    (SimpleNamespace(architectures=["BertForMaskedLM"], is_encoder_decoder=False),
     r"m is a BertForMaskedLM, not a causal \(left-to-right\) language model"),
    (SimpleNamespace(architectures=["T5ForConditionalGeneration"], is_encoder_decoder=True),
     r"m is a T5ForConditionalGeneration, an encoder-decoder"),
    (SimpleNamespace(architectures=None, model_type="bart", is_encoder_decoder=True),
     r"m is a bart, an encoder-decoder"),
])
def test_models_that_do_not_predict_the_next_token_are_refused(config: object,
                                                               message: str) -> None:
    with pytest.raises(UnsupportedArchitecture, match=message):
        check_causal("m", config)


@pytest.mark.parametrize("classes", [["GPT2LMHeadModel"], ["LlamaForCausalLM"],
                                     ["Gemma3ForConditionalGeneration"], None])
def test_causal_models_pass(classes: list[str] | None) -> None:
    check_causal("m", SimpleNamespace(architectures=classes, is_encoder_decoder=False))
    check_causal("m", None)
