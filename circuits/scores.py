"""Head scores for every head in one forward pass, the OV copying score, and Q/K/V
composition scores.

Attention scores compare each head's pattern with a *detection mask* `[batch, query, key]`
built from the tokens. The masks are looked up in `DETECTORS` (a dict, no `eval`):

- `prev_token`: key = query - 1;
- `duplicate`: an earlier key holds the query's token;
- `induction`: the key *follows* an earlier occurrence of the query's token
  (TransformerLens' induction pattern, from token identity);
- `prefix_matching`: the exact induction stripe of repeated tokens (key = query - period + 1
  in the second copy), from the sequence structure rather than token identity, so chance
  repeats of random tokens in the prefix earn no credit.

Two normalisations:

- `"targets"` (default): the attention mass a query puts on its targets, averaged over the
  queries that have at least one target (an induction head scores close to 1);
- `"tl"`: TransformerLens `detect_head(..., error_measure="mul")`, the mass on targets over
  the whole pattern's mass, averaged over sequences (all queries count, so an induction head
  on `[BOS] prefix seg seg` scores at most about the second copy's share of the positions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.hooks import hook_name, layer_of, stop_hooks
from workbench.repeats import RepeatedTokens

if TYPE_CHECKING:
    from workbench.models import Model

Mask = Bool[Tensor, "batch query key"]


def per_query_head(model: Model, name: str) -> Tensor:
    """`model.<name>` (`W_Q`, `W_K`, `W_V`, `W_O`, `b_K`, `b_V`, ...) with one entry per
    *query* head along dim 1. Under grouped-query or multi-query attention (Llama, Qwen2,
    Mistral, Gemma) the bridge holds `n_key_value_heads` key/value heads; query head `h` reads
    key/value head `h // (n_heads // n_key_value_heads)` (Hugging Face's `repeat_kv`), so
    each is repeated for its group. Raises `ValueError` for a head count that does not divide.
    """
    w = getattr(model, name)
    n_heads = model.cfg.n_heads
    if w.shape[1] == n_heads:
        return w
    if w.shape[1] < 1 or n_heads % w.shape[1]:
        raise ValueError(f"{name} has {w.shape[1]} heads for {n_heads} query heads; "
                         "grouped-query attention needs n_heads divisible by the key/value "
                         "heads")
    return w.repeat_interleave(n_heads // w.shape[1], dim=1)


def prev_token_mask(tokens: Int[Tensor, "batch pos"], rep: RepeatedTokens | None = None) -> Mask:
    t = tokens.shape[1]
    eye = torch.zeros(t, t, dtype=torch.bool)
    eye[1:, :-1] = torch.eye(t - 1, dtype=torch.bool)
    return eye.expand(tokens.shape[0], t, t)


def duplicate_mask(tokens: Int[Tensor, "batch pos"], rep: RepeatedTokens | None = None) -> Mask:
    t = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]
    return same & torch.ones(t, t, dtype=torch.bool).tril(-1)


def induction_mask(tokens: Int[Tensor, "batch pos"], rep: RepeatedTokens | None = None) -> Mask:
    dup = duplicate_mask(tokens)
    out = torch.zeros_like(dup)
    out[:, :, 1:] = dup[:, :, :-1]  # key k scores when token k-1 repeats the query's token
    return out & torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril()


def prefix_matching_mask(tokens: Int[Tensor, "batch pos"],
                         rep: RepeatedTokens | None = None) -> Mask:
    if rep is None:
        raise ValueError("prefix_matching needs repeated tokens (workbench.repeats."
                         "repeated_tokens); pass `rep=` or leave it out of `kinds`")
    return rep.stripe_mask()


DETECTORS: dict[str, Callable[[Tensor, RepeatedTokens | None], Mask]] = {
    "prev_token": prev_token_mask,
    "duplicate": duplicate_mask,
    "induction": induction_mask,
    "prefix_matching": prefix_matching_mask,
}
NORMALIZE = ("targets", "tl")


def target_mass(pattern: Float[Tensor, "... batch head query key"], mask: Mask,
                has_target: Bool[Tensor, "batch query"]) -> Float[Tensor, "... head"]:
    """The `targets` score of each head: the attention mass its queries put on the mask's
    targets, averaged over the queries that have a target (in all sequences of the batch)."""
    mass = torch.einsum("...bhqk,bqk->...bhq", pattern, mask.to(pattern.dtype))
    w = has_target.to(pattern.dtype)[:, None, :]  # [B, 1, Q]
    return (mass * w).sum((-3, -1)) / w.sum((0, 2)).clamp(min=1)


@torch.no_grad()
def head_scores(
    model: Model,
    tokens: Int[Tensor, "batch pos"] | RepeatedTokens,
    kinds: Sequence[str] = tuple(DETECTORS),
    normalize: str = "targets",
) -> dict[str, Float[Tensor, "layer head"]]:
    """Every head's score for each detector in `kinds`, from one forward pass.

    The patterns are reduced inside the hooks and never kept, and the masks are kept as
    booleans, each made a float one kind at a time, so memory is that of one layer's pattern
    and a float mask of one kind (not `[kinds, batch, pos, pos]` floats). `tokens` must have
    equal lengths (no padding).
    """
    rep = tokens if isinstance(tokens, RepeatedTokens) else None
    toks = rep.tokens if rep is not None else tokens
    unknown = [k for k in kinds if k not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown head score(s) {unknown}; choose from {sorted(DETECTORS)}")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize={normalize!r}; choose one of {NORMALIZE}")
    if rep is None and "prefix_matching" in kinds:
        kinds = [k for k in kinds if k != "prefix_matching"]
    device = next(model.parameters()).device
    # masks live on the model's device: the patterns never leave it, only the scores do
    masks = [DETECTORS[k](toks, rep).to(device) for k in kinds]  # bool [B, Q, K] each
    has_target = [m.any(-1) for m in masks]  # [B, Q]
    cfg = model.cfg
    out = torch.zeros(len(kinds), cfg.n_layers, cfg.n_heads)

    def reduce(pattern: Tensor, hook: Any) -> None:
        layer = layer_of(hook.name)
        p = pattern.detach().float()  # [B, H, Q, K]
        for i, (m, t) in enumerate(zip(masks, has_target)):
            if normalize == "tl":  # attention on targets per query, over the pattern's mass
                mass = torch.einsum("bhqk,bqk->bhq", p, m.float())
                out[i, layer] = (mass.sum(-1) / p.sum((-1, -2))).mean(0).cpu()  # [B, H] -> [H]
            else:
                out[i, layer] = target_mass(p, m, t).cpu()

    last = [hook_name(cfg.n_layers - 1, "attn.hook_pattern")]
    kwargs, stop = stop_hooks(model, last)  # no unembedding: its logits are never read
    model.run_with_hooks(toks.to(device), return_type=None, **kwargs,
                         fwd_hooks=[(lambda name: name.endswith("attn.hook_pattern"), reduce),
                                    *stop])
    return {k: out[i] for i, k in enumerate(kinds)}


@torch.no_grad()
def ov_copying_scores(model: Model) -> Float[Tensor, "layer head"]:
    """Olsson et al. (2022) copying score of each head's full OV circuit
    `W_E W_V W_O W_U` (layer norms ignored): the sum of its eigenvalues' real parts over the
    sum of their magnitudes, in [-1, 1]; close to 1 for a head that copies the attended token.

    The nonzero eigenvalues of the `[d_vocab, d_vocab]` circuit are those of the small
    `[d_head, d_head]` matrix `W_O W_U W_E W_V` (cyclic permutation), which is what we compute.
    """
    w_e = model.W_E.detach().double().cpu()
    w_u = model.W_U.detach().double().cpu()
    w_v = per_query_head(model, "W_V").detach().double().cpu()  # [L, H, d_model, d_head]
    w_o = model.W_O.detach().double().cpu()  # [L, H, d_head, d_model]
    middle = w_u @ w_e  # [d_model, d_model]
    small = w_o @ middle @ w_v  # [L, H, d_head, d_head]
    eig = torch.linalg.eigvals(small)
    return (eig.real.sum(-1) / eig.abs().sum(-1).clamp(min=1e-12)).float()


COMPOSITION = ("Q", "K", "V")


@torch.no_grad()
def composition_scores(model: Model, mode: str) -> Float[Tensor, "layer head layer head"]:
    """`||W_OV^A W^B||_F / (||W_OV^A||_F ||W^B||_F)` for every earlier head A and later head B,
    where `W^B` is B's `W_QK` (Q-composition), `W_QK^T` (K) or `W_OV` (V); zero where A is not
    in an earlier layer. Same values as TransformerLens' `all_composition_scores(mode)`,
    computed from `d_head`-sized Gram matrices instead of `d_model`-sized products.
    """
    if mode not in COMPOSITION:
        raise ValueError(f"mode={mode!r}; choose one of {COMPOSITION}")
    q = model.W_Q.detach().double().cpu()  # [L, H, d, h]
    k = per_query_head(model, "W_K").detach().double().cpu()  # one per query head (GQA)
    v = per_query_head(model, "W_V").detach().double().cpu()
    o = model.W_O.detach().double().cpu()  # [L, H, h, d]
    gram = lambda a: a.transpose(-1, -2) @ a  # noqa: E731  [.., h, h]
    g_v, g_q, g_k = gram(v), gram(q), gram(k)
    g_o = o @ o.transpose(-1, -2)  # [L, H, h, h]
    ov_norm2 = (g_v * g_o).sum((-1, -2))  # ||V O||_F^2
    if mode == "Q":  # V1 (O1 Q2) K2^T
        inner, right_gram, right_norm2 = q, g_k, (g_q * g_k).sum((-1, -2))
    elif mode == "K":  # V1 (O1 K2) Q2^T
        inner, right_gram, right_norm2 = k, g_q, (g_q * g_k).sum((-1, -2))
    else:  # V1 (O1 V2) O2
        inner, right_gram, right_norm2 = v, g_o, ov_norm2
    n, n_heads = o.shape[:2]
    comp2 = torch.zeros(n, n_heads, n, n_heads, dtype=o.dtype)
    for a in range(n - 1):  # one source layer at a time, against the later layers only
        comp2[a, :, a + 1:] = _comp2(o[a], g_v[a], inner[a + 1:], right_gram[a + 1:])
    scores = comp2.clamp(min=0).sqrt() / (ov_norm2.sqrt()[:, :, None, None]
                                          * right_norm2.sqrt()[None, None])
    earlier = torch.arange(n)[:, None, None, None] < torch.arange(n)[None, None, :, None]
    return torch.where(earlier, scores, torch.zeros_like(scores)).float()


def _comp2(o1: Tensor, g_v1: Tensor, inner: Tensor, right_gram: Tensor) -> Tensor:
    """`||V1 (O1 inner2) R2||_F^2` for the heads of one source layer against the heads of the
    layers in `inner`, as `trace(M^T G_V1 M G_R2)` with `M = O1 inner2`."""
    m = torch.einsum("hxd,bgdy->hbgxy", o1, inner)  # [H, later layers, H, h, h]
    left = torch.einsum("hxz,hbgzy->hbgxy", g_v1, m)
    right = torch.einsum("hbgxz,bgzy->hbgxy", m, right_gram)
    return (left * right).sum((-1, -2))


def head_name(layer: int, head: int) -> str:
    """`L1H3` style name.

    >>> head_name(1, 3)
    'L1H3'
    """
    return f"L{layer}H{head}"
