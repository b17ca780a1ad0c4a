"""Probes for every layer (and every fold and label variant) trained at once.

One set of parameters per (variant, layer): a variant is a labelling with its own train and
validation rows (a cross-validation fold of the task, or of its control task). All of them
share the activations `[layer, row, d_model]` and train together with batched matmuls:
multinomial logistic regression (`linear`) or a one-hidden-layer MLP (`mlp`), cross-entropy
plus L2 on the weights. Linear probes are solved to convergence with L-BFGS (convex: the
optimum is the estimate); MLP probes train with Adam and stop early on each variant's
validation loss (the best epoch's parameters are kept per (variant, layer)).

>>> import torch
>>> x = torch.randn(2, 200, 8)                     # two layers, 200 rows
>>> y = (x[1, :, 0] > 0).long()[None]              # layer 1 knows the label
>>> train = torch.arange(200)[None] % 4 < 2; val = torch.arange(200)[None] % 4 == 2
>>> logits = fit_predict(x, y, train, val, 2, ProbeConfig(max_epochs=40))
>>> acc = (logits.argmax(-1) == y[:, None]).float()[0, :, 150:].mean(-1)
>>> bool(acc[1] > 0.9 and acc[0] < 0.75)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

PROBES = ("linear", "mlp")
LBFGS_CHUNK = 10  # L-BFGS iterations between validation checks
LBFGS_TOL = 1e-4  # converged when no gradient entry exceeds this (scikit-learn's default tol)
MIN_STEPS_PER_EPOCH = 10  # an "epoch" of a small row set is repeated up to this many steps


@dataclass(frozen=True)
class ProbeConfig:
    """How probes train.

    Args:
        probe: `linear` (multinomial logistic regression) or `mlp` (one hidden ReLU layer).
        l2: L2 penalty on the weights (added to the mean cross-entropy as l2/2 * ||W||^2).
        lr: Adam learning rate (MLP).
        batch_size: rows per step (MLP) and per evaluation chunk.
        max_iter: upper bound on L-BFGS iterations (linear).
        max_epochs: (MLP) upper bound on passes over the rows (a pass is at least
            `MIN_STEPS_PER_EPOCH` steps, cycling through small row sets).
        patience: validation checks without a better validation loss before a (variant,
            layer) stops counting; training ends when none improved for `patience` checks.
        hidden: MLP width.
        seed: initialisation and row order.
    """

    probe: str = "linear"
    l2: float = 1e-4
    lr: float = 1e-2
    batch_size: int = 512
    max_iter: int = 300
    max_epochs: int = 40
    patience: int = 3
    hidden: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.probe not in PROBES:
            raise ValueError(f"probe={self.probe!r}; choose one of {PROBES}")
        if self.l2 < 0 or self.lr <= 0 or min(self.batch_size, self.max_epochs,
                                              self.patience, self.hidden) < 1:
            raise ValueError(f"bad probe settings {self}: l2 >= 0, lr > 0 and positive sizes")


def standardize(x: Float[Tensor, "layer n d"]) -> Float[Tensor, "layer n d"]:
    """Zero mean, unit variance per layer and feature (no labels are used)."""
    mean = x.mean(1, keepdim=True)
    std = x.std(1, keepdim=True).clamp_min(1e-6)
    return (x - mean) / std


def _init(shape: tuple[int, ...], fan_in: int, gen: torch.Generator, device: torch.device
          ) -> Tensor:
    bound = 1.0 / math.sqrt(fan_in)
    w = (torch.rand(shape, generator=gen) * 2 - 1) * bound
    return w.to(device).requires_grad_(True)


class _Params:
    """Weights of every (variant, layer) probe; `logits(x)` for a row batch."""

    def __init__(self, cfg: ProbeConfig, v: int, n_layers: int, d: int, c: int,
                 device: torch.device) -> None:
        gen = torch.Generator().manual_seed(cfg.seed)
        self.mlp = cfg.probe == "mlp"
        if self.mlp:
            h = cfg.hidden
            self.tensors = [_init((v, n_layers, d, h), d, gen, device),
                            torch.zeros(v, n_layers, 1, h, device=device, requires_grad=True),
                            _init((v, n_layers, h, c), h, gen, device),
                            torch.zeros(v, n_layers, 1, c, device=device, requires_grad=True)]
            self.weights = [self.tensors[0], self.tensors[2]]
        else:
            self.tensors = [torch.zeros(v, n_layers, d, c, device=device, requires_grad=True),
                            torch.zeros(v, n_layers, 1, c, device=device, requires_grad=True)]
            self.weights = [self.tensors[0]]

    def logits(self, x: Float[Tensor, "layer b d"]) -> Float[Tensor, "v layer b c"]:
        if self.mlp:
            w1, b1, w2, b2 = self.tensors
            return torch.relu(_shared_input_matmul(x, w1) + b1) @ w2 + b2
        w, b = self.tensors
        return _shared_input_matmul(x, w) + b

    def penalty(self) -> Float[Tensor, "v layer"]:
        return sum(w.pow(2).sum((-2, -1)) for w in self.weights)  # type: ignore[return-value]


def _shared_input_matmul(x: Float[Tensor, "layer b d"], w: Float[Tensor, "v layer d k"]
                         ) -> Float[Tensor, "v layer b k"]:
    """`x @ w` for every variant with one bmm per layer (no copy of `x` per variant)."""
    v, n_layers, d, k = w.shape
    out = torch.bmm(x, w.permute(1, 2, 0, 3).reshape(n_layers, d, v * k))
    return out.view(n_layers, x.shape[1], v, k).permute(2, 0, 1, 3)


def _losses(logits: Tensor, y: Tensor, mask: Tensor) -> Float[Tensor, "v layer"]:
    """Mean cross-entropy over the masked rows of each variant, per layer."""
    v, n_layers, b, c = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, c), y[:, None].expand(v, n_layers, b).reshape(-1),
                         reduction="none").view(v, n_layers, b)
    m = mask[:, None].float()
    return (ce * m).sum(-1) / m.sum(-1).clamp_min(1.0)


class _Best:
    """Early stopping per (variant, layer): the parameters at the lowest validation loss."""

    def __init__(self, params: _Params, v: int, n_layers: int, device: torch.device) -> None:
        self.params = params
        self.saved = [t.detach().clone() for t in params.tensors]
        self.loss = torch.full((v, n_layers), float("inf"), device=device)
        self.waiting = torch.zeros(v, n_layers, dtype=torch.long, device=device)

    def update(self, val_loss: Tensor) -> None:
        better = val_loss < self.loss - 1e-6
        self.loss = torch.where(better, val_loss, self.loss)
        self.waiting = torch.where(better, torch.zeros_like(self.waiting), self.waiting + 1)
        for b, t in zip(self.saved, self.params.tensors):
            b[better] = t.detach()[better]

    def done(self, patience: int) -> bool:
        return bool((self.waiting >= patience).all())

    def restore(self) -> None:
        with torch.no_grad():
            for b, t in zip(self.saved, self.params.tensors):
                t.copy_(b)


def fit_predict(
    x: Float[Tensor, "layer n d"],
    y: Int[Tensor, "v n"],
    train: Bool[Tensor, "v n"],
    val: Bool[Tensor, "v n"],
    n_classes: int,
    cfg: ProbeConfig,
) -> Float[Tensor, "v layer n c"]:
    """Train one probe per (variant, layer) on `train` rows, early-stop on `val` rows, and
    return every row's logits from each probe's best parameters.

    Linear probes minimise the convex objective (mean cross-entropy + L2) with full-batch
    L-BFGS over all probes at once (they are independent, so the summed objective has the
    same minimiser) to scikit-learn's tolerance: the L2 optimum is the estimate, as in
    `LogisticRegression`. MLP probes (not convex) use minibatch Adam and early stopping on
    the validation rows. `x` should be standardized
    (`standardize`); labels of rows outside a variant's train and validation rows are
    ignored (pass any class index there).
    """
    device = x.device
    v, _ = y.shape
    n_layers, _, d = x.shape
    y, train, val = y.to(device), train.to(device), val.to(device)
    params = _Params(cfg, v, n_layers, d, n_classes, device)
    best = _Best(params, v, n_layers, device)
    _FITTERS[cfg.probe](params, best, x, y, train, val, cfg)
    best.restore()
    chunk = cfg.batch_size * 8
    with torch.no_grad():
        return torch.cat([params.logits(x[:, lo:lo + chunk])
                          for lo in range(0, x.shape[1], chunk)], dim=2)


def _fit_lbfgs(params: _Params, best: _Best, x: Tensor, y: Tensor, train: Tensor,
               val: Tensor, cfg: ProbeConfig) -> None:
    opt = torch.optim.LBFGS(params.tensors, lr=1.0, max_iter=LBFGS_CHUNK, history_size=20,
                            line_search_fn="strong_wolfe",
                            tolerance_grad=LBFGS_TOL, tolerance_change=1e-9)

    used = train.any(0)  # rows some variant trains on (the others cost nothing here)
    xt, yt, mt = x[:, used], y[:, used], train[:, used]

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = (_losses(params.logits(xt), yt, mt).sum()
                + 0.5 * cfg.l2 * params.penalty().sum())
        loss.backward()
        return loss

    last = float("inf")
    for _ in range(max(1, cfg.max_iter // LBFGS_CHUNK)):
        loss = float(opt.step(closure).detach())
        grad = max(float(t.grad.abs().max()) for t in params.tensors if t.grad is not None)
        if grad <= LBFGS_TOL or abs(last - loss) <= 1e-9:
            break
        last = loss
    with torch.no_grad():  # the convex optimum is the estimate; record its validation loss
        best.update(_chunked_losses(params, x, y, val, cfg.batch_size * 8))


def _fit_adam(params: _Params, best: _Best, x: Tensor, y: Tensor, train: Tensor,
              val: Tensor, cfg: ProbeConfig) -> None:
    n = x.shape[1]
    opt = torch.optim.Adam(params.tensors, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n_train = train.float().sum(-1).clamp_min(1.0)  # rows per variant
    steps = max(math.ceil(n / cfg.batch_size), MIN_STEPS_PER_EPOCH)
    for _ in range(cfg.max_epochs):
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(
            math.ceil(steps * cfg.batch_size / n))]).to(x.device)
        for lo in range(0, steps * cfg.batch_size, cfg.batch_size):
            idx = order[lo:lo + cfg.batch_size]
            m = train[:, idx]
            if not m.any():
                continue
            ce = _losses(params.logits(x[:, idx]), y[:, idx], m)
            # batch CE weighted by the variant's share of rows: every variant sees its own
            # rows at the same rate, whatever its size
            share = m.float().sum(-1) / (n_train * len(idx) / n)
            loss = (ce * share[:, None]).sum() + 0.5 * cfg.l2 * params.penalty().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            best.update(_chunked_losses(params, x, y, val, cfg.batch_size * 8))
        if best.done(cfg.patience):
            break


_FITTERS = {"linear": _fit_lbfgs, "mlp": _fit_adam}


def _chunked_losses(params: _Params, x: Tensor, y: Tensor, mask: Tensor, chunk: int) -> Tensor:
    total = torch.zeros(y.shape[0], x.shape[0], device=x.device)
    count = mask.float().sum(-1).clamp_min(1.0)[:, None]
    for lo in range(0, x.shape[1], chunk):
        sl = slice(lo, lo + chunk)
        m = mask[:, sl]
        total += _losses(params.logits(x[:, sl]), y[:, sl], m) * m.float().sum(-1)[:, None]
    return total / count
