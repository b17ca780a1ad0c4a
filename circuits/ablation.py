"""Causal check of heads: ablate each head and measure the loss on the repeated half.

A head's output is removed at `blocks.L.attn.hook_z` (its per-head mix of values, before
`W_O`): zero ablation sets it to 0, mean ablation to its mean over the batch and positions
of the clean run. All heads of one layer are ablated in a single forward pass: the batch is
repeated once per head and copy `h` has head `h` ablated, as many heads per pass as keep
the pass' logits under `MAX_LOGIT_BYTES`. The passes stop at the unembedding's input and
unembed only the positions that predict the second copy (`masked_nll`), when that gives the
clean run's losses (else full logits: a GPT-2-sized vocabulary on 16 sequences of 256 tokens
is then one head per pass, 0.8 GB of logits instead of 9.9 GB for all twelve).

On a large model one pass per head and method is most of an analysis' time (GPT-2 small,
144 heads: 288 passes of 16 x 256 tokens, about 45 minutes on two CPU cores), so
`ablation_estimates` gives every head's effect from one forward and backward pass per
chunk of about 1,024 tokens
(attribution patching, Nanda 2023; Syed et al. 2023: the first-order change of the loss,
`(z_ablated - z) . dL/dz`), and `ablate_each_head(heads=...)` measures exactly only the heads
asked for (`circuits.induction` asks for the candidate induction heads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from workbench.evaluate import token_nll
from workbench.hooks import UNEMBED_IN, hook_name, layer_of, unembed_input, unembedded_nll
from workbench.repeats import RepeatedTokens, copy_losses, masked_mean

if TYPE_CHECKING:
    from workbench.models import Model

ABLATIONS = ("zero", "mean")
MAX_LOGIT_BYTES = 2**30  # logits of one ablation pass (float32), when batch_heads is None
ATTRIBUTION_TOKENS = 1024  # tokens per forward + backward pass of `ablation_estimates`


@torch.no_grad()
def repeated_half_loss(model: Model, rep: RepeatedTokens) -> dict[str, float]:
    """Mean loss on the first and on the second copy (both without their first token)."""
    device = next(model.parameters()).device
    return copy_losses(token_nll(model(rep.tokens.to(device)), rep.tokens).cpu(), rep)


@torch.no_grad()
def masked_nll(model: Model, tokens: Int[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"],
               fwd_hooks: Sequence[tuple[str, Any]] = ()) -> Float[Tensor, "batch pos"]:
    """`token_nll` of `tokens` where `mask` is True (nan elsewhere), from a run with
    `fwd_hooks` that stops at the unembedding's input: the unembedding is applied to the
    positions before the masked ones only (`workbench.hooks.unembedded_nll`)."""
    x = unembed_input(lambda h: model.run_with_hooks(tokens, return_type=None, fwd_hooks=h),
                      fwd_hooks)
    return unembedded_nll(model, x, tokens, mask)


def _masked_nll_works(model: Model, tokens: Tensor, mask: Tensor, full: Tensor) -> bool:
    """Whether `masked_nll` reproduces the full run's `token_nll` on the clean tokens (an
    architecture whose logits are changed after the unembedding, a soft cap, fails)."""
    if UNEMBED_IN not in model.hook_dict or not bool(mask[:, 0].logical_not().all()):
        return False
    try:
        fast = masked_nll(model, tokens, mask)
    except (RuntimeError, AttributeError, TypeError, ValueError):
        return False
    return bool(torch.allclose(fast[mask], full[mask], atol=1e-4, rtol=1e-4))


@torch.no_grad()
def ablate_each_head(
    model: Model,
    rep: RepeatedTokens,
    methods: tuple[str, ...] = ABLATIONS,
    batch_heads: int | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
) -> tuple[dict[str, Float[Tensor, "layer head"]], dict[str, float]]:
    """Every head's ablation effect (repeated-half loss increase, nats) for each method, all
    from one clean pass; and the clean losses on the first and second copy.

    Args:
        model: a hooked model.
        rep: repeated random tokens (`circuits.inputs`).
        methods: any of `zero`, `mean`.
        batch_heads: heads ablated per forward pass (default: as many heads of a layer as
            keep a pass' logits under `MAX_LOGIT_BYTES`, at least one).
        heads: `(layer, head)` pairs to ablate (default: every head); the others' effects
            are nan.
    """
    bad = [m for m in methods if m not in ABLATIONS]
    if bad:
        raise ValueError(f"ablation method={bad[0]!r}; choose one of {ABLATIONS}")
    cfg = model.cfg
    device = next(model.parameters()).device
    tokens = rep.tokens.to(device)
    mask = rep.second_copy_mask()
    z_names = [hook_name(layer, "attn.hook_z") for layer in range(cfg.n_layers)]
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in z_names)
    full = token_nll(logits, tokens).cpu()
    losses = copy_losses(full, rep)
    clean = losses["second"]
    means = {n: cache[n].float().mean((0, 1)) for n in z_names}  # [H, d_head]
    del cache
    n_heads, b = cfg.n_heads, tokens.shape[0]
    # the unembedding at the second copy only, when it gives the clean run's values
    masked = _masked_nll_works(model, tokens, mask, full)
    rows = int(mask.sum()) if masked else tokens.numel()
    per_copy = 4 * rows * logits.shape[-1]  # bytes of one copy's float32 logits
    step = batch_heads or max(1, min(n_heads, MAX_LOGIT_BYTES // per_copy))
    del logits
    chosen = {(la, h) for la in range(cfg.n_layers) for h in range(n_heads)} if heads is None \
        else {(int(la), int(h)) for la, h in heads}
    bad = sorted((la, h) for la, h in chosen if not (0 <= la < cfg.n_layers and 0 <= h < n_heads))
    if bad:
        raise ValueError(f"heads {bad} are not in the model ({cfg.n_layers} layers x "
                         f"{n_heads} heads)")
    effects = {m: torch.full((cfg.n_layers, n_heads), float("nan")) for m in methods}
    for method in methods:
        for layer in range(cfg.n_layers):
            todo = sorted(h for la, h in chosen if la == layer)
            for h0 in range(0, len(todo), step):
                heads_now = todo[h0:h0 + step]

                def ablate(z: Tensor, hook: Any, heads: list[int] = heads_now,
                           name: str = z_names[layer], method: str = method) -> Tensor:
                    z = z.clone()
                    for i, h in enumerate(heads):
                        rows = slice(i * b, (i + 1) * b)
                        z[rows, :, h] = 0.0 if method == "zero" else means[name][h].to(z.dtype)
                    return z

                batch = tokens.repeat(len(heads_now), 1)
                hooks = [(z_names[layer], ablate)]
                if masked:
                    nll = masked_nll(model, batch, mask.repeat(len(heads_now), 1), hooks)
                else:
                    out = model.run_with_hooks(batch, fwd_hooks=hooks)
                    nll = token_nll(out, batch).cpu()
                    del out  # before the next pass makes its own
                for i, h in enumerate(heads_now):
                    effects[method][layer, h] = masked_mean(nll[i * b:(i + 1) * b], mask) - clean
    return effects, losses


def ablation_estimates(
    model: Model, rep: RepeatedTokens, methods: tuple[str, ...] = ABLATIONS,
    chunk_tokens: int = ATTRIBUTION_TOKENS,
) -> dict[str, Float[Tensor, "layer head"]]:
    """Every head's ablation effect on the repeated-half loss (nats), estimated to first
    order from forward and backward passes (attribution patching): for head h of layer L,
    `sum over positions of (z_ablated - z) . dL/dz` at `blocks.L.attn.hook_z`, with
    `z_ablated` 0 (`zero`) or the head's mean over the batch and positions (`mean`).

    The sums are linear in the sequences, so the batch goes through in chunks of about
    `chunk_tokens` tokens (what a backward pass holds grows with the tokens in it: GPT-2
    small on 16 x 256 tokens at once peaked at 8.5 GB); per chunk only `sum g`, `sum z` and
    `sum z . g` per head are kept.

    A screen, not a measurement: it is exact for small changes and can be far off for a
    head whose removal changes the attention of later heads a lot; `ablate_each_head` measures.
    """
    bad = [m for m in methods if m not in ABLATIONS]
    if bad:
        raise ValueError(f"ablation method={bad[0]!r}; choose one of {ABLATIONS}")
    cfg = model.cfg
    device = next(model.parameters()).device
    mask_all = rep.second_copy_mask()
    n_masked = int(mask_all.sum())
    n_layers, n_heads, d_head = cfg.n_layers, cfg.n_heads, cfg.d_head
    sum_g = torch.zeros(n_layers, n_heads, d_head, dtype=torch.float64)
    sum_z = torch.zeros_like(sum_g)
    sum_zg = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    per_chunk = max(1, chunk_tokens // rep.tokens.shape[1])
    deltas: dict[int, Tensor] = {}  # of the chunk in flight
    clean: dict[int, Tensor] = {}

    def add_delta(z: Tensor, hook: Any) -> Tensor:  # z + 0, with a leaf to differentiate
        layer = layer_of(hook.name)
        clean[layer] = z.detach()
        deltas[layer] = torch.zeros_like(z, requires_grad=True)
        return z + deltas[layer]

    hooks = [(hook_name(layer, "attn.hook_z"), add_delta) for layer in range(n_layers)]
    for lo in range(0, len(rep.tokens), per_chunk):
        tokens = rep.tokens[lo:lo + per_chunk].to(device)
        mask = mask_all[lo:lo + per_chunk].to(device)
        deltas.clear()
        clean.clear()
        with torch.enable_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
            rows, pos = mask.nonzero(as_tuple=True)
            logp = torch.log_softmax(logits[rows, pos - 1].float(), -1)
            del logits
            loss = -logp.gather(-1, tokens[rows, pos][:, None]).sum() / n_masked
            layers = sorted(deltas)
            grads = torch.autograd.grad(loss, [deltas[la] for la in layers])
        del logp, loss
        for layer, g in zip(layers, grads):
            z, g = clean[layer].double().cpu(), g.double().cpu()  # [batch, pos, head, d_head]
            sum_g[layer] += g.sum((0, 1))
            sum_z[layer] += z.sum((0, 1))
            sum_zg[layer] += (z * g).sum((0, 1, 3))
    n_pos = rep.tokens.shape[0] * rep.tokens.shape[1]
    out = {}
    for m in methods:  # sum (target - z) . g, target 0 or the mean of z
        target = (sum_z / n_pos * sum_g).sum(-1) if m == "mean" else 0.0
        out[m] = (target - sum_zg).float()
    return out


def head_ablation_effects(
    model: Model, rep: RepeatedTokens, method: str = "zero", batch_heads: int | None = None
) -> tuple[Float[Tensor, "layer head"], float]:
    """Increase of the repeated-half loss (nats) when each head is ablated with `method`
    (`zero` or `mean`), and the clean loss on the repeated half (see `ablate_each_head`)."""
    effects, losses = ablate_each_head(model, rep, (method,), batch_heads)
    return effects[method], losses["second"]
