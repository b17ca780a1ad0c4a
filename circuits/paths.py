"""K-composition measured causally: path patching from each earlier head into a head's keys.

The weight-based composition score (`circuits.scores.composition_scores`) asks how much of
head A's output space a later head B's `W_QK` reads. In a model with MLPs and several
layers that is a weak signal: it ignores what A actually writes on real inputs, and the
layer norm and the other heads between them. Path patching asks the causal question
(Wang et al. 2022; Olsson et al. 2022 ablate the key path the same way): replace A's output
by its mean (over the clean batch and positions) *only where B's keys read it*, keep B's
queries, values and everything else clean, and measure how much B's induction score drops.

Two sets of paths (`paths`):

- `direct` (default; the circuit meaning of K-composition): B's key input is the clean
  residual stream minus A's output plus A's mean output, then B's layer norm and `W_K`;
- `all`: a run with A mean-ablated everywhere supplies B's keys, so A's effect also counts
  when it reaches B's keys through the heads and MLPs in between (a layer-0 head that the
  previous-token heads read scores high here, not under `direct`).

Heads of B's layer do not interact, so one patched run per (source head, target layer)
scores every head of that layer; it stops after B's layer. Under `all`, one run with A
ablated supplies the keys of every target layer after A (it stops after the last one).

>>> from workbench.repeats import repeated_tokens
>>> from workbench.models.config import get_preset
>>> from workbench.models.loader import build_bridge
>>> model = build_bridge(get_preset("attn2").replace(d_vocab=30, n_ctx=24))
>>> rep = repeated_tokens(30, n_seqs=2, seq_len=20, seed=0, bos_id=0)
>>> drop = k_path_patching(model, rep)   # [source layer, head, target layer, head]
>>> tuple(drop.shape), float(drop[1].abs().sum())   # layer 1 feeds no later layer
((2, 8, 2, 8), 0.0)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.patching import patch_hook
from circuits.scores import DETECTORS, target_mass
from workbench.hooks import hook_name, layer_of
from workbench.repeats import RepeatedTokens

if TYPE_CHECKING:
    from workbench.models import Model

PATHS = ("direct", "all")
MAX_BATCH = 512  # sequences per patched forward pass (source heads x sequences)
PASS_BYTES = 2**30  # and no more rows than keep a pass' attention pattern and keys under this

z_name = partial(hook_name, point="attn.hook_z")
k_name = partial(hook_name, point="attn.hook_k")
p_name = partial(hook_name, point="attn.hook_pattern")
resid_name = partial(hook_name, point="hook_resid_pre")
Source = tuple[int, int]


def _score(pattern: Tensor, mask: Tensor, has_target: Tensor, copies: int
           ) -> Float[Tensor, "copy head"]:
    """`target_mass` (the `targets` score of `head_scores`) of each copy of the batch."""
    p = pattern.detach().float()
    return target_mass(p.view(copies, mask.shape[0], *p.shape[1:]), mask, has_target)


def keys_from_residual(model: Model, layer: int, resid: Float[Tensor, "batch pos d_model"]
                       ) -> Float[Tensor, "batch pos head d_head"]:
    """The keys `layer` computes from the residual stream `resid` (its `hook_resid_pre`):
    its first layer norm, then `W_K` and `b_K` (what `hook_k` holds in a forward pass)."""
    ln = model.blocks[layer].ln1(resid)
    keys = torch.einsum("btd,hde->bthe", ln, model.W_K[layer].to(ln.dtype))
    try:
        return keys + model.b_K[layer].to(ln.dtype)
    except AttributeError:  # a bias-free key projection (Llama, Mistral, Gemma)
        return keys


def _direct_keys(model: Model, cache: Any, means: dict[int, Tensor], target: int,
                 chunk: list[Source]) -> Tensor:
    """Keys of the target layer when each chunk head's output is swapped for its mean in the
    target's key input only: `[len(chunk) * batch, pos, head, d_head]`."""
    w_o = model.W_O.detach()
    resid = cache[resid_name(target)]
    x = torch.cat([resid + ((means[la][h] - cache[z_name(la)][:, :, h]) @ w_o[la, h])
                   for la, h in chunk])
    return keys_from_residual(model, target, x)


def _all_path_keys(model: Model, cache: Any, means: dict[int, Tensor], targets: list[int],
                   chunk: list[Source]) -> dict[int, Tensor]:
    """Keys of every target layer from one run with each chunk head mean-ablated everywhere
    (copy `i` of the batch ablates `chunk[i]`), stopped after the last target layer:
    `{target: [len(chunk) * batch, pos, head, d_head]}`."""
    b = cache[z_name(0)].shape[0]
    kept: dict[int, Tensor] = {}

    def ablate(z: Tensor, hook: Any) -> Tensor:
        layer = layer_of(hook.name)
        z = z.clone()
        for i, (la, h) in enumerate(chunk):
            if la == layer:
                z[i * b:(i + 1) * b, :, h] = means[la][h].to(z.dtype)
        return z

    def keep(k: Tensor, hook: Any) -> None:
        kept[layer_of(hook.name)] = k.clone()

    layers = sorted({la for la, _ in chunk})
    model.run_with_hooks(cache["tokens"].repeat(len(chunk), 1), return_type=None,
                         stop_at_layer=max(targets) + 1,
                         fwd_hooks=[(z_name(la), ablate) for la in layers]
                         + [(k_name(t), keep) for t in targets])
    return kept


def _patched_scores(model: Model, tokens: Tensor, keys: Tensor, target: int, mask: Tensor,
                    has_target: Tensor) -> Float[Tensor, "copy head"]:
    """The target layer's scores in a run of `tokens` repeated once per copy of `keys`, with
    those keys patched in; the run stops after the target layer."""
    copies = keys.shape[0] // tokens.shape[0]
    scored: list[Tensor] = []

    def score(pattern: Tensor, hook: Any) -> None:
        scored.append(_score(pattern, mask, has_target, copies).cpu())

    model.run_with_hooks(tokens.repeat(copies, 1), return_type=None, stop_at_layer=target + 1,
                         fwd_hooks=[(k_name(target), patch_hook(keys)), (p_name(target), score)])
    return scored[0]


@torch.no_grad()
def k_path_patching(
    model: Model,
    rep: RepeatedTokens,
    target_layers: Sequence[int] | None = None,
    kind: str = "induction",
    paths: str = "direct",
    sources: Collection[tuple[int, int]] | None = None,
) -> Float[Tensor, "layer head layer head"]:
    """How much each earlier head's output, reaching a head only through its keys, raises
    that head's `kind` score: `drop[a_layer, a_head, b_layer, b_head]` is B's clean score
    minus its score when A's output is replaced by its mean on the `paths` into B's keys
    (see the module doc). Zero where A is not in an earlier layer, and for target layers
    not in `target_layers` (default: every layer >= 1). With `sources` (`(layer, head)`
    pairs), only those heads are patched: the others' drops into the target layers are nan.
    Each source costs one run up to the target layer per target (`direct`) or one run in
    all (`all`), so on a large model `sources` is what keeps this affordable."""
    if kind not in DETECTORS:
        raise ValueError(f"kind={kind!r}; choose one of {sorted(DETECTORS)}")
    if paths not in PATHS:
        raise ValueError(f"paths={paths!r}; choose one of {PATHS}")
    cfg = model.cfg
    n_layers, n_heads = cfg.n_layers, cfg.n_heads
    targets = sorted(set(range(1, n_layers) if target_layers is None else target_layers))
    bad = [t for t in targets if not 0 <= t < n_layers]
    if bad:
        raise ValueError(f"target layer(s) {bad} out of range; the model has layers "
                         f"0..{n_layers - 1}")
    drop = torch.zeros(n_layers, n_heads, n_layers, n_heads)
    targets = [t for t in targets if t >= 1]
    if not targets:
        return drop
    allowed = None if sources is None else {(int(la), int(h)) for la, h in sources}
    if allowed is not None:
        for t in targets:
            drop[:t, :, t] = float("nan")
    device = next(model.parameters()).device
    tokens = rep.tokens.to(device)
    b = tokens.shape[0]
    mask = DETECTORS[kind](rep.tokens, rep).float().to(device)
    has_target = mask.sum(-1) > 0
    names = ({z_name(la) for la in range(max(targets))} | {resid_name(t) for t in targets}
             | {p_name(t) for t in targets})
    _, run = model.run_with_cache(tokens, names_filter=lambda n: n in names,
                                  stop_at_layer=max(targets) + 1)
    clean = {t: _score(run[p_name(t)], mask, has_target, 1)[0].cpu() for t in targets}
    cache = {n: run[n] for n in names if "pattern" not in n} | {"tokens": tokens}
    del run
    means = {la: cache[z_name(la)].mean((0, 1)) for la in range(max(targets))}  # [H, d_head]
    t_len = tokens.shape[1]
    # a pass holds one layer's pattern and, for `all`, every target layer's keys per copy
    row_bytes = 4 * t_len * (n_heads * t_len + len(targets) * cfg.d_model)
    per_pass = max(1, min(MAX_BATCH, PASS_BYTES // row_bytes) // b)
    if paths == "all":  # one ablated run per source head feeds the keys of every target
        heads = [(la, h) for la in range(max(targets)) for h in range(n_heads)
                 if allowed is None or (la, h) in allowed]
        for lo in range(0, len(heads), per_pass):
            chunk = heads[lo:lo + per_pass]
            later = [t for t in targets if t > chunk[0][0]]
            for t, keys in _all_path_keys(model, cache, means, later, chunk).items():
                rows = [i for i, (la, _) in enumerate(chunk) if la < t]
                keys = keys.view(len(chunk), b, *keys.shape[1:])[rows].flatten(0, 1)
                scores = _patched_scores(model, tokens, keys, t, mask, has_target)
                for i, s in zip(rows, scores):
                    drop[chunk[i][0], chunk[i][1], t] = clean[t] - s
        return drop
    for t in targets:
        heads = [(la, h) for la in range(t) for h in range(n_heads)
                 if allowed is None or (la, h) in allowed]
        for lo in range(0, len(heads), per_pass):
            chunk = heads[lo:lo + per_pass]
            keys = _direct_keys(model, cache, means, t, chunk)
            for (la, h), s in zip(chunk, _patched_scores(model, tokens, keys, t, mask,
                                                         has_target)):
                drop[la, h, t] = clean[t] - s
    return drop
