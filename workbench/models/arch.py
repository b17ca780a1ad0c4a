"""What kind of transformer a loaded model is, and which analyses it supports.

Every analysis takes a `TransformerBridge`, ours or a Hugging Face checkpoint's. Most of them
read hooks every architecture has (the residual stream); some need a part that not every
architecture has: head analyses need attention heads, weight edits need one MLP output matrix
per layer. `describe` reads the bridge's config once; `require` turns a missing part into one
clear `UnsupportedArchitecture` error (a `ValueError`, so the CLI prints one line) that names
the architecture, what is missing and what still works.

>>> Architecture("LlamaForCausalLM", "grouped-query", 4, 2, "rotary", "RMSNorm", "gated",
...              False).summary()
'grouped-query attention (4 query heads, 2 key/value heads), rotary positions, RMSNorm, gated MLP'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.models import Model

# Heads of Hugging Face classes whose model does not predict the next token left to right.
NOT_CAUSAL_HEADS = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                    "ForQuestionAnswering", "ForPreTraining", "ForMultipleChoice",
                    "ForNextSentencePrediction")
POSITIONS = {"standard": "learned", "rotary": "rotary", "alibi": "ALiBi", "none": "no",
             "shortformer": "learned (shortformer)"}
NORMS = {"LN": "LayerNorm", "LNPre": "LayerNorm", "RMS": "RMSNorm", "RMSPre": "RMSNorm"}


class UnsupportedArchitecture(ValueError):
    """An analysis was asked of a model that lacks a part it needs."""


@dataclass(frozen=True)
class Architecture:
    """The parts of a loaded model that decide which analyses apply.

    Args:
        name: the Hugging Face class (`LlamaForCausalLM`) or `TransformerLensNative` (ours).
        attention: `multi-head`, `grouped-query`, `multi-query` or `none` (state-space models).
        n_heads: query heads per layer.
        n_kv_heads: key/value heads per layer (`n_heads` for multi-head attention).
        positions: `learned`, `rotary`, `ALiBi` or `no`.
        norm: `LayerNorm` or `RMSNorm` (or `none`).
        mlp: `standard`, `gated` (`down(act(gate) * up)`), `mixture-of-experts` or `none`.
        parallel: attention and MLP read the same residual stream (GPT-NeoX, GPT-J).
    """

    name: str
    attention: str
    n_heads: int
    n_kv_heads: int
    positions: str
    norm: str
    mlp: str
    parallel: bool

    def summary(self) -> str:
        if self.attention == "none":
            parts = ["no attention heads"]
        elif self.attention == "multi-head":
            parts = [f"multi-head attention ({self.n_heads} heads)"]
        else:
            parts = [f"{self.attention} attention ({self.n_heads} query heads, "
                     f"{self.n_kv_heads} key/value head{'s' if self.n_kv_heads > 1 else ''})"]
        parts += [f"{self.positions} positions", self.norm,
                  "no MLP" if self.mlp == "none" else f"{self.mlp} MLP"]
        if self.parallel:
            parts.append("attention and MLP in parallel")
        return ", ".join(parts)


def _has_attention(model: Model) -> bool:
    return len(model.blocks) > 0 and hasattr(model.blocks[0], "attn")


def describe(model: Model) -> Architecture:
    """The `Architecture` of a loaded model, read from its bridge config and blocks."""
    c = model.cfg
    name = str(getattr(c, "original_architecture", None) or getattr(c, "architecture", None)
               or "unknown")
    n_heads = int(c.n_heads)
    if not _has_attention(model):
        attention, n_kv = "none", 0
    else:
        n_kv = int(getattr(c, "n_key_value_heads", None) or n_heads)
        attention = ("multi-head" if n_kv == n_heads else
                     "multi-query" if n_kv == 1 else "grouped-query")
    block = model.blocks[0] if len(model.blocks) else None
    if c.attn_only or block is None or not hasattr(block, "mlp"):
        mlp = "none"
    elif getattr(c, "num_experts", None) or not hasattr(block.mlp, "out"):
        mlp = "mixture-of-experts" if getattr(c, "num_experts", None) else "none"
    else:
        mlp = "gated" if getattr(c, "gated_mlp", False) else "standard"
    norm_type = getattr(c, "normalization_type", None)
    return Architecture(
        name=name, attention=attention, n_heads=n_heads, n_kv_heads=n_kv,
        positions=POSITIONS.get(str(getattr(c, "positional_embedding_type", "standard")),
                                str(getattr(c, "positional_embedding_type", "?"))),
        norm=NORMS.get(str(norm_type), "none" if norm_type is None else str(norm_type)),
        mlp=mlp, parallel=bool(getattr(c, "parallel_attn_mlp", False)))


def require(model: Model, part: str, analysis: str) -> Architecture:
    """Check that `model` has `part` (`attention` or `mlp_edit`) for `analysis`.

    Raises:
        UnsupportedArchitecture: naming the architecture, the missing part and what works.
    """
    arch = describe(model)
    if part == "attention" and arch.attention == "none":
        raise UnsupportedArchitecture(
            f"{analysis} needs attention heads; {arch.name} has none ({arch.summary()}). "
            "The analyses of the residual stream (cache, probe, beliefs --method icl) work on it")
    if part == "mlp_edit" and arch.mlp not in ("standard", "gated"):
        what = ("its MLPs are mixtures of experts, and an edit of one output matrix would "
                "change one expert only" if arch.mlp == "mixture-of-experts" else "it has no MLP")
        raise UnsupportedArchitecture(
            f"{analysis} edits one MLP output matrix per layer; {arch.name} cannot be edited "
            f"that way: {what}. Use --method icl (in-context pressure) on this model")
    if part not in ("attention", "mlp_edit"):
        raise ValueError(f"unknown part {part!r}; choose 'attention' or 'mlp_edit'")
    return arch


def check_causal(name: str, hf_config: Any) -> None:
    """Refuse a Hugging Face model that does not predict the next token left to right
    (an encoder such as BERT, or an encoder-decoder such as T5): every analysis here is
    about a causal language model's next-token prediction.

    Raises:
        UnsupportedArchitecture: naming the class and what to load instead.
    """
    classes = list(getattr(hf_config, "architectures", None) or [])
    bad = [a for a in classes if a.endswith(NOT_CAUSAL_HEADS)]
    if getattr(hf_config, "is_encoder_decoder", False):
        bad = bad or classes or [str(getattr(hf_config, "model_type", "?"))]
        kind = "an encoder-decoder"
    else:
        kind = "not a causal (left-to-right) language model"
    if bad:
        raise UnsupportedArchitecture(
            f"{name} is a {bad[0]}, {kind}; the workbench analyses next-token prediction of "
            "decoder-only models: load a ...ForCausalLM or ...LMHeadModel checkpoint "
            "(GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Mistral, Gemma, ...)")
