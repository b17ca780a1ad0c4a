"""Training dynamics: induction scores and the in-context-learning score over checkpoints.

The in-context-learning (ICL) score of Olsson et al. (2022) is the loss at the 500th token of
a 512-token context minus the loss at the 50th; we scale both positions to the model's
context (`round(n_ctx * 500 / 512) - 1` and `round(n_ctx * 50 / 512)`) and average the loss
over the 5 tokens centred on each, on fixed windows of the corpus. It turns sharply negative
when induction heads form (the phase change).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from circuits.inputs import repeated_tokens_for
from circuits.scores import head_scores
from workbench.evaluate import token_nll
from workbench.layout import step_of

if TYPE_CHECKING:
    from workbench.models import Model


def icl_positions(n_ctx: int) -> tuple[int, int]:
    """(early, late) token index for a context of `n_ctx` tokens.

    >>> icl_positions(512), icl_positions(128)
    ((50, 499), (12, 124))
    """
    early = max(2, round(n_ctx * 50 / 512))
    late = min(n_ctx - 3, round(n_ctx * 500 / 512) - 1)
    return early, late


def icl_losses(nll: Float[Tensor, "batch pos"]
               ) -> tuple[Float[Tensor, "batch 5"], Float[Tensor, "batch 5"]]:
    """The losses of the 5 tokens centred on the early and on the late position
    (`icl_positions` of the windows' length) of every window.

    Args:
        nll: per-token losses of the windows, `workbench.evaluate.token_nll` (position `p`
            holds the loss of token `p`).

    Returns:
        `(early, late)`, each `[batch, 5]`.

    >>> early, late = icl_losses(torch.arange(128.0).expand(2, 128))
    >>> early[0].tolist(), late[0].tolist()
    ([10.0, 11.0, 12.0, 13.0, 14.0], [122.0, 123.0, 124.0, 125.0, 126.0])
    """
    early, late = icl_positions(nll.shape[1])
    return nll[:, early - 2:early + 3], nll[:, late - 2:late + 3]


@torch.no_grad()
def icl_score(model: Model, windows: Int[Tensor, "batch pos"]) -> dict[str, float]:
    """Loss late in the context minus loss early in it (nats; negative = in-context learning)."""
    early, late = icl_positions(windows.shape[1])
    device = next(model.parameters()).device
    nll = token_nll(model(windows.to(device)), windows).cpu()
    lo, hi = (float(span.mean()) for span in icl_losses(nll))
    return {"icl": hi - lo, "loss_early": lo, "loss_late": hi, "early": early, "late": late}


def checkpoint_dynamics(
    checkpoints: Iterable[tuple[Any, Model]],
    windows: Tensor | None = None,
    n_seqs: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Per loaded checkpoint (`(where, model)` pairs, e.g. `ModelRef.load_checkpoints`: a
    `CheckpointRef` or a directory path, and its model): its step (from the directory name;
    the list index when a name has none), every head's induction / prefix-matching /
    previous-token score on repeated random tokens, and the ICL score on `windows` (when
    given)."""
    records = []
    for where, model in tqdm(checkpoints, desc="checkpoints", disable=not progress):
        path = Path(getattr(where, "path", where))
        rep = repeated_tokens_for(model, n_seqs, seed=seed)
        scores = head_scores(model, rep, kinds=("induction", "prefix_matching", "prev_token"))
        step = step_of(path)
        rec: dict[str, Any] = {"step": -1 if step is None else step, "checkpoint": str(path)}
        rec.update({k: v.tolist() for k, v in scores.items()})
        if windows is not None:
            rec.update(icl_score(model, windows[:, :model.cfg.n_ctx]))
        records.append(rec)
    if any(r["step"] < 0 for r in records):  # names without steps: keep the given order
        for i, r in enumerate(records):
            r["step"] = i
        return records
    return sorted(records, key=lambda r: r["step"])


def phase_change(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the best later-layer induction score rises most, and where the ICL score drops
    most, between consecutive checkpoints (as `[step_before, step_after]`)."""
    if len(records) < 2:
        return {}
    steps = [r["step"] for r in records]
    best = [max(max(row) for row in r["induction"][1:]) if len(r["induction"]) > 1
            else max(r["induction"][0]) for r in records]
    out: dict[str, Any] = {"steps": steps, "max_induction": best}
    rise = int(np.argmax(np.diff(best)))
    out["induction_rise"] = [steps[rise], steps[rise + 1]]
    out["induction_rise_size"] = float(best[rise + 1] - best[rise])
    if all("icl" in r for r in records):
        icl = [r["icl"] for r in records]
        drop = int(np.argmin(np.diff(icl)))
        out["icl"] = icl
        out["icl_drop"] = [steps[drop], steps[drop + 1]]
        out["icl_drop_size"] = float(icl[drop + 1] - icl[drop])
        out["coincide"] = abs(drop - rise) <= 1
    return out
