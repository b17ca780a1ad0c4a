"""FastGPT: the training path of our native models.

The analysed model is a TransformerLens `TransformerBridge` around TL's `NativeModel`,
whose attention is written out (matmul, mask, softmax) so every intermediate can be
hooked. That costs speed in training (the core issue measured 0.59x of a plain model).
`FastGPT` computes the same function with fused QKV and `scaled_dot_product_attention`;
its weights convert exactly (a split of the fused QKV matrix, nothing else) to the
bridge's state dict and back, so we train fast and analyse hooked.

This module does no I/O (nanoGPT's `model.py` habit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from workbench.models.config import ModelConfig

_ACT = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class FastAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_attn)
        self.o = nn.Linear(cfg.d_attn, cfg.d_model)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_heads, self.d_head)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, Dh)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, Dh)
        return self.o(z.transpose(1, 2).reshape(b, t, self.n_heads * self.d_head))


class FastMLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.act = _ACT[cfg.act_fn]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return self.fc_out(self.act(self.fc_in(x)))


class FastBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_only = cfg.attn_only
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.attn = FastAttention(cfg)
        if not cfg.attn_only:
            self.ln2 = nn.LayerNorm(cfg.d_model, eps=1e-5)
            self.mlp = FastMLP(cfg)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x = x + self.attn(self.ln1(x))
        if not self.attn_only:
            x = x + self.mlp(self.ln2(x))
        return x


class FastGPT(nn.Module):
    """Pre-LN GPT computing exactly what the TL-native bridge computes.

    Args:
        cfg: model shape; `cfg.d_vocab` must be set.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.d_vocab < 1:
            raise ValueError("ModelConfig.d_vocab is unset (-1); set it from the tokenizer first")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList([FastBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        t = tokens.shape[1]
        if t > self.cfg.n_ctx:
            raise ValueError(
                f"input has {t} tokens; model n_ctx is {self.cfg.n_ctx}. Shorten or chunk it"
            )
        pos = torch.arange(t, device=tokens.device)
        x = self.embed(tokens) + self.pos_embed(pos)  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))

    def loss(
        self, tokens: Int[Tensor, "batch pos"], targets: Int[Tensor, "batch pos"]
    ) -> Float[Tensor, ""]:
        """Mean next-token cross-entropy in nats."""
        logits = self(tokens)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


# FastGPT name -> bridge name, for every parameter that is not a fused QKV.
_RENAMES = {"mlp.fc_in.": "mlp.in.", "mlp.fc_out.": "mlp.out."}


def to_bridge_state_dict(fast_sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Convert a `FastGPT` state dict to `TransformerBridge` parameter names (exact copy).

    The fused `attn.qkv` weight of shape [3 * n_heads * d_head, d_model] splits into the
    bridge's `attn.q`, `attn.k`, `attn.v` in that order.
    """
    out: dict[str, Tensor] = {}
    for name, tensor in fast_sd.items():
        if ".attn.qkv." in name:
            prefix, kind = name.split(".attn.qkv.")
            for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                out[f"{prefix}.attn.{part}.{kind}"] = chunk.clone()
            continue
        for old, new in _RENAMES.items():
            name = name.replace(old, new)
        out[name] = tensor.clone()
    return out


def from_bridge_state_dict(bridge_sd: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Inverse of `to_bridge_state_dict`."""
    out: dict[str, Tensor] = {}
    for name, tensor in bridge_sd.items():
        if ".attn.q." in name:
            prefix, kind = name.split(".attn.q.")
            parts = [bridge_sd[f"{prefix}.attn.{p}.{kind}"] for p in "qkv"]
            out[f"{prefix}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
            continue
        if ".attn.k." in name or ".attn.v." in name:
            continue
        for new, old in ((v, k) for k, v in _RENAMES.items()):
            name = name.replace(new, old)
        out[name] = tensor.clone()
    return out
