"""Activation patching: the one hook that writes chosen activations into a forward pass, and
`patch_positions` (restore a clean activation at one position at a time).

Every patching analysis builds its hooks here: activation patching (`patch_positions`),
causal tracing (`circuits.tracing`, restoring clean states into corrupted runs, batched or in
ROME's loop) and path patching (`circuits.paths`, replacing a layer's keys).

    effect = patch_positions(model, clean, corrupt, "blocks.1.hook_resid_pre", metric)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from workbench.models import Model

Hook = Callable[[Tensor, Any], Tensor]
Metric = Callable[[Float[Tensor, "batch pos vocab"]], Float[Tensor, " batch"]]


def patch_hook(values: Tensor | int, rows: Tensor | None = None, pos: Tensor | None = None
               ) -> Hook:
    """A forward hook writing into a copy of the activation `act` (`[batch, pos, ...]`).

    Args:
        values: what is written:
            - a tensor shaped like `act`, with `rows` and `pos` None: it replaces `act`;
            - one clean sequence's activation `[pos, ...]`: `act[rows[i], pos[i]]` becomes
              `values[pos[i]]` (a clean state restored into corrupted rows);
            - an int `r`: `act[rows[i], pos[i]]` becomes `act[r, pos[i]]` (the clean row `r` of
              the same batch, as ROME's `trace_with_patch` does it).
        rows: the batch rows of the entries written (an index tensor or an int).
        pos: their positions (the same length as `rows`, or an int).
    """
    if rows is None and pos is None:
        if not isinstance(values, Tensor):
            raise ValueError("patch_hook: a row index needs `rows` and `pos` to write at")

        def replace(act: Tensor, hook: Any) -> Tensor:
            return values.to(act.dtype)
        return replace
    if rows is None or pos is None:
        raise ValueError("patch_hook: pass both `rows` and `pos`, or neither")

    def write(act: Tensor, hook: Any) -> Tensor:
        src = act[values] if isinstance(values, int) else values
        act = act.clone()
        act.index_put_((torch.as_tensor(rows, device=act.device),
                        torch.as_tensor(pos, device=act.device)),
                       src[pos].to(act.dtype))
        return act
    return write


@torch.no_grad()
def patch_positions(
    model: Model,
    clean: Int[Tensor, "1 pos"],
    corrupt: Int[Tensor, "1 pos"],
    hook: str,
    metric: Metric,
    positions: Sequence[int] | None = None,
) -> Float[Tensor, " n_positions"]:
    """Activation patching: run `corrupt` with `hook`'s clean activation restored at one
    position at a time, and return `metric` of each run (one batched forward pass).

    `positions` defaults to every position; `clean` and `corrupt` must have equal lengths.
    """
    if clean.shape != corrupt.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and corrupt {tuple(corrupt.shape)} "
                         "tokens must have the same shape (pad or pick prompts of equal length)")
    if hook not in model.hook_dict:
        raise ValueError(f"unknown hook {hook!r}; see `workbench.hooks.hook_names(model)`")
    device = next(model.parameters()).device
    positions = list(range(clean.shape[1])) if positions is None else list(positions)
    _, cache = model.run_with_cache(clean.to(device), names_filter=lambda n: n == hook)
    rows = torch.arange(len(positions), device=device)
    pos = torch.tensor(positions, dtype=torch.long, device=device)
    batch = corrupt.to(device).expand(len(positions), -1)
    logits = model.run_with_hooks(batch, fwd_hooks=[(hook, patch_hook(cache[hook][0], rows, pos))])
    return metric(logits).float().cpu()
