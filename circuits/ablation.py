"""Causal check of heads: ablate each head and measure the loss on the repeated half.

A head's output is removed at `blocks.L.attn.hook_z` (its per-head mix of values, before
`W_O`): zero ablation sets it to 0, mean ablation to its mean over the batch and positions
of the clean run. All heads of one layer are ablated in a single forward pass: the batch is
repeated once per head and copy `h` has head `h` ablated.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.inputs import RepeatedTokens

ABLATIONS = ("zero", "mean")


def token_nll(logits: Float[Tensor, "batch pos vocab"],
              tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """Negative log-likelihood of each token given the ones before it (position 0: nan)."""
    logp = F.log_softmax(logits[:, :-1].float(), -1)
    nll = -logp.gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0]
    return torch.cat([torch.full_like(nll[:, :1], float("nan")), nll], 1)


def masked_mean(values: Float[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]) -> float:
    return float(values[mask.to(values.device)].mean())


@torch.no_grad()
def repeated_half_loss(model: Any, rep: RepeatedTokens) -> dict[str, float]:
    """Mean loss on the first and on the second copy (both without their first token)."""
    device = next(model.parameters()).device
    nll = token_nll(model(rep.tokens.to(device)), rep.tokens).cpu()
    second = rep.second_copy_mask()
    pos = torch.arange(rep.tokens.shape[1])
    first = (pos >= (rep.start + 1)[:, None]) & (pos < (rep.start + rep.period)[:, None])
    return {"first": masked_mean(nll, first), "second": masked_mean(nll, second)}


@torch.no_grad()
def head_ablation_effects(
    model: Any, rep: RepeatedTokens, method: str = "zero", batch_heads: int | None = None
) -> tuple[Float[Tensor, "layer head"], float]:
    """Increase of the repeated-half loss (nats) when each head is ablated, and the clean loss.

    Args:
        model: a hooked model.
        rep: repeated random tokens (`circuits.inputs`).
        method: `zero` or `mean`.
        batch_heads: heads ablated per forward pass (default: all heads of a layer).
    """
    if method not in ABLATIONS:
        raise ValueError(f"ablation method={method!r}; choose one of {ABLATIONS}")
    cfg = model.cfg
    device = next(model.parameters()).device
    tokens = rep.tokens.to(device)
    mask = rep.second_copy_mask()
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)]
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in z_names)
    clean = masked_mean(token_nll(logits, tokens).cpu(), mask)
    means = {n: cache[n].float().mean((0, 1)) for n in z_names}  # [H, d_head]
    del cache
    n_heads, b = cfg.n_heads, tokens.shape[0]
    step = batch_heads or n_heads
    effects = torch.zeros(cfg.n_layers, n_heads)
    for layer in range(cfg.n_layers):
        for h0 in range(0, n_heads, step):
            heads = list(range(h0, min(h0 + step, n_heads)))

            def ablate(z: Tensor, hook: Any, heads: list[int] = heads,
                       name: str = z_names[layer]) -> Tensor:
                z = z.clone()
                for i, h in enumerate(heads):
                    rows = slice(i * b, (i + 1) * b)
                    z[rows, :, h] = 0.0 if method == "zero" else means[name][h].to(z.dtype)
                return z

            out = model.run_with_hooks(tokens.repeat(len(heads), 1),
                                       fwd_hooks=[(z_names[layer], ablate)])
            nll = token_nll(out, tokens.repeat(len(heads), 1)).cpu()
            for i, h in enumerate(heads):
                effects[layer, h] = masked_mean(nll[i * b:(i + 1) * b], mask) - clean
    return effects, clean
