"""The optimisation recipe a run follows: the learning rate at each step (linear warmup, then
cosine down to `min_lr_ratio`), the steps that keep a checkpoint, and the optimizer (AdamW
with weight decay on matrices only)."""

from __future__ import annotations

import math

import torch

from workbench.layout import scheduled_steps
from workbench.models.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def checkpoint_steps(cfg: TrainConfig) -> set[int]:
    """Log-spaced steps (0, 1, 2, 4, ...), every `ckpt_interval`, and the last step.

    >>> sorted(checkpoint_steps(TrainConfig(steps=20, ckpt_interval=10)))
    [0, 1, 2, 4, 8, 10, 16, 20]
    """
    return scheduled_steps(cfg.steps, cfg.ckpt_interval)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, LayerNorm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8)
