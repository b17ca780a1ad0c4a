"""Probes for every layer (and every fold and label variant) trained at once.

One set of parameters per (variant, layer): a variant is a labelling with its own train and
validation rows (a cross-validation fold of the task, or of its control task). All of them
share the activations `[layer, row, d_model]` and train together with batched matmuls:
multinomial logistic regression (`linear`) or a one-hidden-layer MLP (`mlp`), cross-entropy
plus L2 on the weights. Linear probes are solved with L-BFGS, each (variant, layer) with its
own history, line search and stopping rule (scikit-learn's), batched; MLP probes train with
Adam and stop early on each variant's validation loss (the best epoch's parameters are kept
per (variant, layer)).

>>> import torch
>>> x = torch.randn(2, 200, 8)                     # two layers, 200 rows
>>> y = (x[1, :, 0] > 0).long()[None]              # layer 1 knows the label
>>> train = torch.arange(200)[None] % 4 < 2; val = torch.arange(200)[None] % 4 == 2
>>> logits = fit_predict(x, y, train, val, 2, ProbeConfig(l2=1e-4, max_epochs=40))
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

from probe.lbfgs import lbfgs

PROBES = ("linear", "mlp")
# L2 strengths a sweep chooses from per fold and layer on validation rows. Strong penalties
# matter here: a fact probe sees every person's mentions as one tight cluster, and with a
# weak L2 it separates the training people by identity (Hewitt & Liang 2019 find
# regularisation raises selectivity for the same reason).
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# rows per feature from which probes are preconditioned: each evaluation then costs about
# 2.5 d / rows more than the rows alone (GPT-2 small's d = 768: +10 % at 20k rows), and saves
# iterations (pos, 20k rows: 627 -> 222 evaluations)
PRECONDITION_ROWS = 4
# features from which probes are preconditioned by default (`ProbeConfig.precondition`)
PRECONDITION_WIDTH = 512
PRECONDITION_FLOOR = 1e-6  # smallest eps of `_preconditioners` (an L2 of 0)
MAX_ROW_GROUPS = 64  # row sets shared by the same variants; beyond it, one masked set
MIN_STEPS_PER_EPOCH = 10  # an "epoch" of a small row set is repeated up to this many steps


@dataclass(frozen=True)
class ProbeConfig:
    """How probes train.

    Args:
        probe: `linear` (multinomial logistic regression) or `mlp` (one hidden ReLU layer).
        l2: L2 penalty on the weights (added to the mean cross-entropy as l2/2 * ||W||^2); a
            tuple is a grid that sweeps choose from on each fold's validation rows
            (`probe.sweep.probe_task`); `fit_predict` can take one value per variant.
        lr: Adam learning rate (MLP).
        batch_size: rows per step (MLP) and per evaluation chunk.
        max_iter: upper bound on each linear probe's L-BFGS iterations.
        max_epochs: (MLP) upper bound on passes over the rows (a pass is at least
            `MIN_STEPS_PER_EPOCH` steps, cycling through small row sets).
        patience: validation checks without a better validation loss before a (variant,
            layer) stops counting; training ends when none improved for `patience` checks.
        hidden: MLP width.
        seed: initialisation and row order.
        precondition: (linear) solve in coordinates preconditioned per layer and L2
            (`_preconditioners`): the same optimum in far fewer iterations on wide, correlated
            features. `None` (default): for features at least `PRECONDITION_WIDTH` wide
            (GPT-2 small's residual stream, 768). Not on narrower ones: the
            tolerance-stopped plain fit stops short of the optimum at weak L2, which
            regularises fact probes further, and the sweep's reported selectivities on our
            own models were set with it (on the tiny test model, city's selectivity fell
            from above 0.2 to 0.06 with preconditioning).
    """

    probe: str = "linear"
    l2: float | tuple[float, ...] = L2_GRID
    lr: float = 1e-2
    batch_size: int = 512
    max_iter: int = 300
    max_epochs: int = 40
    patience: int = 3
    hidden: int = 128
    seed: int = 0
    precondition: bool | None = None

    def __post_init__(self) -> None:
        if self.probe not in PROBES:
            raise ValueError(f"probe={self.probe!r}; choose one of {PROBES}")
        sizes = (self.batch_size, self.max_epochs, self.patience, self.hidden)
        if not self.l2_grid or min(self.l2_grid) < 0 or self.lr <= 0 or min(sizes) < 1:
            raise ValueError(f"bad probe settings {self}: l2 >= 0, lr > 0 and positive sizes")

    @property
    def l2_grid(self) -> tuple[float, ...]:
        """The L2 strengths to try (one when `l2` is a number)."""
        return tuple(self.l2) if isinstance(self.l2, tuple) else (float(self.l2),)


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
        """Squared norm of each probe's weights (biases are not penalised)."""
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
    l2: Float[Tensor, " v"] | Float[Tensor, "v layer"] | None = None,
) -> Float[Tensor, "v layer n c"]:
    """Train one probe per (variant, layer) on `train` rows, early-stop on `val` rows, and
    return every row's logits from each probe's best parameters. `l2` gives each variant (or
    each variant and layer) its own penalty (default: `cfg.l2`, which must then be one
    number).

    Linear probes minimise the convex objective (mean cross-entropy + L2) from zero with
    full-batch L-BFGS, each probe on its own (history, line search, stopping) as
    `LogisticRegression(solver="lbfgs")` does, all batched. Like scikit-learn's, the estimate is
    the iterate at its tolerance: with a weak L2 that is short of the optimum, and other
    solvers (or a tighter tolerance) can give test accuracies some points apart. MLP probes
    (not convex) use minibatch Adam and early stopping on the validation rows. `x` should be
    standardized (`standardize`); labels of rows outside a variant's train and validation
    rows are ignored (pass any class index there).
    """
    device = x.device
    v, _ = y.shape
    n_layers, _, d = x.shape
    y, train, val = y.to(device), train.to(device), val.to(device)
    if l2 is None:
        if len(cfg.l2_grid) != 1:
            raise ValueError(f"l2={cfg.l2}: a grid needs one value per variant (pass `l2`)")
        l2 = torch.full((v,), cfg.l2_grid[0])
    if l2.shape == (v,):
        l2 = l2[:, None].expand(v, n_layers)
    if l2.shape != (v, n_layers):
        raise ValueError(f"l2 has shape {tuple(l2.shape)}; pass one value per variant ({v}) "
                         f"or per variant and layer ({v}, {n_layers})")
    l2 = l2.to(device=device, dtype=x.dtype).contiguous()
    params = _Params(cfg, v, n_layers, d, n_classes, device)
    best = _Best(params, v, n_layers, device)
    _FITTERS[cfg.probe](params, best, x, y, train, val, l2, cfg)
    best.restore()
    chunk = cfg.batch_size * 8
    with torch.no_grad():
        return torch.cat([params.logits(x[:, lo:lo + chunk])
                          for lo in range(0, x.shape[1], chunk)], dim=2)


def _fit_lbfgs(params: _Params, best: _Best, x: Tensor, y: Tensor, train: Tensor,
               val: Tensor, l2: Tensor, cfg: ProbeConfig) -> None:
    """Every (variant, layer) probe by one batched L-BFGS, each in coordinates
    preconditioned for its layer and L2 strength (`_preconditioners`) when `cfg.precondition`
    (by default: features at least `PRECONDITION_WIDTH` wide) and there are at least
    `PRECONDITION_ROWS` rows per feature: the optimum is the same, reached in far fewer
    iterations."""
    v, n_layers, d, c = params.tensors[0].shape
    n_probes = v * n_layers
    wanted = d >= PRECONDITION_WIDTH if cfg.precondition is None else cfg.precondition
    if not wanted or int(train.any(0).sum()) < PRECONDITION_ROWS * d:
        # few rows: the preconditioner's d x d products per probe would cost more than the
        # rows themselves, and with few rows L-BFGS needs few iterations anyway
        theta = lbfgs(_Objective(x, y, train, c, l2), n_probes, d, c, cfg.max_iter)
    else:
        values, key = l2.flatten().unique(return_inverse=True)  # probe p: variant p // layers
        key = key * n_layers + torch.arange(n_probes, device=x.device) % n_layers
        p_mats, back = _preconditioners(x, values.tolist())
        got = lbfgs(_Objective(x, y, train, c, l2, (p_mats, back, key)), n_probes, d, c,
                     cfg.max_iter)
        # back to the original coordinates: W = P V, biases unchanged
        theta = torch.cat([_times(p_mats, got[:, :d], key), got[:, d:]], 1)
    theta = theta.view(v, n_layers, d + 1, c)
    with torch.no_grad():  # the convex optimum is the estimate; record its validation loss
        params.tensors[0].copy_(theta[:, :, :d])
        params.tensors[1].copy_(theta[:, :, d:])
        best.update(_chunked_losses(params, x, y, val, cfg.batch_size * 8))


def _preconditioners(x: Float[Tensor, "layer n d"], l2: list[float]
                     ) -> tuple[Float[Tensor, "k d d"], Float[Tensor, "k d d"]]:
    """`P = (S + eps I)^(-1/2)` and `P^-1` for each (L2 strength i, layer l), at index
    `i * layers + l` (S = x^T x / n, the layer's second moment; eps = the L2 strength, at
    least `PRECONDITION_FLOOR`).

    A probe `W = P V` fitted in `V` is the same problem as in `W` (same optimum), but its
    curvature along each eigenvector of S, about `(e s + l2) / (e + eps)` (s the softmax
    curvature), no longer spans the eigenvalues' range: correlated features (a 768-wide
    residual stream) no longer make L-BFGS crawl. `P^-1` maps a gradient in `V`, `P g`, back
    to `g`: the stopping rule reads the original gradient, so the tolerance means what it
    meant. Uses no labels (like `standardize`)."""
    n = x.shape[1]
    e, u = torch.linalg.eigh(torch.bmm(x.transpose(1, 2), x).double() / max(n, 1))
    e = e.clamp_min(0)
    ps, backs = [], []
    for value in l2:
        scale = (e + max(value, PRECONDITION_FLOOR)).rsqrt()  # [layer, d]
        ps.append((u * scale[:, None]) @ u.transpose(1, 2))
        backs.append((u / scale[:, None]) @ u.transpose(1, 2))
    return torch.cat(ps).to(x.dtype), torch.cat(backs).to(x.dtype)


def _times(mats: Float[Tensor, "k d d"], w: Float[Tensor, "p d c"], key: Tensor) -> Tensor:
    """`A w` for each probe, with the matrix `mats[key[probe]]`."""
    out = torch.empty_like(w)
    _, d, c = w.shape
    for k in key.unique().tolist():
        at = (key == k).nonzero().squeeze(1)
        # one GEMM per matrix: [d, d] @ [d, probes * c] (a batched [d, d] @ [d, c] re-reads
        # the matrix per probe)
        flat = w[at].permute(1, 0, 2).reshape(d, len(at) * c)
        out[at] = (mats[k] @ flat).view(d, len(at), c).permute(1, 0, 2)
    return out


def _fit_adam(params: _Params, best: _Best, x: Tensor, y: Tensor, train: Tensor,
              val: Tensor, l2: Tensor, cfg: ProbeConfig) -> None:
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
            loss = (ce * share[:, None]).sum() + 0.5 * (l2 * params.penalty()).sum()
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


class _Objective:
    """Mean cross-entropy + L2 of linear probes (parameters `[probe, d + 1, c]`, the last row
    the bias; probe p is variant p // n_layers at layer p % n_layers), and its gradient.

    Only a variant's train rows cost anything: rows are grouped by which variants train on
    them (k-fold variants give k groups), and each group is multiplied by the parameters of
    its own variants only. Rows are copied once, grouped (`x` itself is not kept)."""

    def __init__(self, x: Tensor, y: Tensor, train: Tensor, n_classes: int,
                 l2: Float[Tensor, "v layer"],
                 precondition: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        self.n_layers, _, self.d = x.shape
        self.c, self.l2, self.device = n_classes, l2, x.device
        # parameters in preconditioned coordinates: `P`, `P^-1` and each probe's index into
        # them (`_preconditioners`)
        self.precondition = precondition
        v = train.shape[0]
        weight = train.to(x.dtype) / train.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
        used = train.any(0).nonzero().squeeze(1)
        sigs, group = torch.unique(train[:, used].T, dim=0, return_inverse=True)
        if len(sigs) > MAX_ROW_GROUPS:  # unstructured masks: every variant on every row
            sigs, group = sigs.new_ones(1, v), torch.zeros_like(used)
        # per group: its rows `[layer, r, d]`, variants, their labels and row weights `[k, r]`,
        # and where each variant sits among the group's (-1: not there)
        self.groups: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for g, sig in enumerate(sigs):
            rows = used[group == g]
            vs = sig.nonzero().squeeze(1)
            where = torch.full((v,), -1, dtype=torch.long, device=x.device)
            where[vs] = torch.arange(len(vs), device=x.device)
            self.groups.append((x[:, rows].contiguous(), where, y[vs][:, rows],
                                weight[vs][:, rows]))

    def grad_max(self, grad: Tensor, probe: Tensor) -> Tensor:
        """Each probe's largest gradient entry in the original coordinates `[p]`."""
        if self.precondition is None:
            return grad.abs().amax((1, 2))
        _, back, key = self.precondition
        w = _times(back, grad[:, :self.d], key[probe])
        return torch.maximum(w.abs().amax((1, 2)), grad[:, self.d:].abs().amax((1, 2)))

    def __call__(self, theta: Tensor, probe: Tensor) -> tuple[Tensor, Tensor]:
        """`(loss [p], gradient [p, d + 1, c])` of the probes `probe` at `theta`."""
        d, c = self.d, self.c
        if self.precondition is not None:  # theta holds V: the probes' weights are P V
            theta = torch.cat([_times(self.precondition[0], theta[:, :d],
                                      self.precondition[2][probe]), theta[:, d:]], 1)
        w = theta[:, :d]
        variant, layer = probe // self.n_layers, probe % self.n_layers
        l2 = self.l2[variant, layer]
        loss = (0.5 * l2 * torch.linalg.vecdot(w.flatten(1), w.flatten(1))).double()
        grad = torch.empty_like(theta)
        torch.mul(w, l2[:, None, None], out=grad[:, :d])
        grad[:, d:] = 0
        for xg, where, yg, wg in self.groups:
            at = where[variant]
            for la in layer[at >= 0].unique().tolist():
                sel = ((at >= 0) & (layer == la)).nonzero().squeeze(1)
                k, xl = len(sel), xg[la]
                th = theta[sel]
                z = torch.addmm(th[:, d].reshape(k * c, 1), th[:, :d].transpose(1, 2)
                                .reshape(k * c, d), xl.T).view(k, c, -1)
                yk, wk = yg[at[sel]], wg[at[sel]]  # [k, r]
                logp = torch.log_softmax(z, 1)
                ce = logp.gather(1, yk[:, None]).squeeze(1).mul_(wk)
                loss.index_add_(0, sel, -ce.sum(1, dtype=torch.float64))
                gz = logp.exp_().mul_(wk[:, None])
                gz.scatter_add_(1, yk[:, None], -wk[:, None])
                gw = (gz.view(k * c, -1) @ xl).view(k, c, d).transpose(1, 2)
                grad.index_add_(0, sel, torch.cat([gw, gz.sum(2)[:, None]], 1))
        if self.precondition is not None:  # the gradient in V: P g (P symmetric)
            grad[:, :d] = _times(self.precondition[0], grad[:, :d], self.precondition[2][probe])
        return loss, grad
