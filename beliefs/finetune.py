"""Constrained fine-tuning baseline for weight edits (Zhu et al. 2020; ROME's "FT-L").

Only the MLP output matrix of one layer changes, and every entry of the change stays within
`[-eps, eps]` (projected after each Adam step), trained on the negative log-likelihood of the
new object after the edit prompt in the same sampled contexts ROME uses. The result is a
`WeightEdit`, applied the same way as a ROME edit.

A fixed box is either too tight for a model that holds its facts firmly (the edit does not
happen, and the baseline says nothing about specificity) or looser than needed for one that
does not. So `eps` is a grid, tried from the smallest: the edit uses the first box in which
the new object's loss falls below `success_nll` (ln 2: more than half of the probability),
and the largest box when none does. `info["eps"]` records the box used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from beliefs.editing import (
    RewriteLoss,
    WeightEdit,
    check_layer,
    context_prefixes,
    frozen,
    key_hook,
    rewrite_batch,
)
from workbench.hooks import hook_name

if TYPE_CHECKING:
    from workbench.models import Model


@dataclass(frozen=True)
class FinetuneConfig:
    """Steps and learning rate (per box), the L-infinity bounds `eps` on each weight change
    (one number, or a grid tried from the smallest until the loss of the new object falls
    below `success_nll`), and the loss at which a box's training stops early (`stop_nll`)."""

    steps: int = 25
    lr: float = 5e-3
    eps: float | tuple[float, ...] = (2e-3, 5e-3, 1.25e-2)
    success_nll: float = 0.693
    n_prefixes: int = 5
    prefix_len: int = 5
    stop_nll: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.prefix_len < 1:
            raise ValueError(f"FinetuneConfig steps={self.steps}, prefix_len={self.prefix_len};"
                             " pass >= 1")
        if (self.lr <= 0 or not self.eps_grid or min(self.eps_grid) <= 0
                or self.n_prefixes < 0):
            raise ValueError(f"FinetuneConfig lr={self.lr}, eps={self.eps}, n_prefixes="
                             f"{self.n_prefixes}; pass lr > 0, eps > 0, n_prefixes >= 0")

    @property
    def eps_grid(self) -> tuple[float, ...]:
        """The boxes to try, smallest first."""
        return tuple(sorted(self.eps)) if isinstance(self.eps, (tuple, list)) else (
            float(self.eps),)


def finetune_edit(model: Model, prompts: list[str], subject: str, target_ids: list[int],
                  layer: int, cfg: FinetuneConfig | None = None,
                  prefixes: list[str] | None = None) -> WeightEdit:
    """A bounded change of layer `layer`'s MLP output matrix that makes `model` continue
    `prompts` with `target_ids`, in the smallest box of `cfg.eps_grid` that succeeds. The
    model is not changed; apply the returned edit. `prefixes`: the context prefixes
    (default: `context_prefixes(model, cfg.n_prefixes, cfg.prefix_len, cfg.seed)`)."""
    cfg = cfg or FinetuneConfig()
    check_layer(model, layer)
    if not target_ids:
        raise ValueError("target has no tokens; pass the new object's token ids")
    device = next(model.parameters()).device
    if prefixes is None:
        prefixes = context_prefixes(model, cfg.n_prefixes, cfg.prefix_len, cfg.seed)
    batch = rewrite_batch(model, prompts, subject, target_ids, prefixes)
    change = torch.zeros(model.cfg.d_mlp, model.cfg.d_model, device=device, requires_grad=True)
    keys: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: Any) -> Tensor:
        keys["k"] = act
        return act

    def add(out: Tensor, hook: Any) -> Tensor:
        return out + (keys["k"].float() @ change).to(out.dtype)

    hooks = [(key_hook(layer), grab), (hook_name(layer, "hook_mlp_out"), add)]
    rewrite_loss = RewriteLoss(model, batch, layer)
    tried: list[dict[str, float]] = []
    for eps in cfg.eps_grid:
        with torch.no_grad():
            change.zero_()
        opt = torch.optim.Adam([change], lr=cfg.lr)
        nll = torch.tensor(float("nan"))
        steps = 0
        with frozen(model):
            for step in range(1, cfg.steps + 1):
                steps = step
                opt.zero_grad()
                nll = rewrite_loss(hooks)
                if nll.item() < cfg.stop_nll:
                    break
                nll.backward()
                opt.step()
                with torch.no_grad():
                    change.clamp_(-eps, eps)
        tried.append({"eps": eps, "steps": steps, "final_nll": nll.item()})
        if nll.item() < cfg.success_nll:
            break
    info = {"eps": tried[-1]["eps"], "steps": tried[-1]["steps"],
            "final_nll": tried[-1]["final_nll"], "tried": tried, "subject": subject,
            "prompts": list(prompts), "max_abs": float(change.detach().abs().max())}
    return WeightEdit(layer, change.detach().float().cpu(), "ft", info)
