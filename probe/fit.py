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
# rows per feature (all of a task's training rows) from which probes are preconditioned. An
# evaluation costs no more preconditioned (`Eigenbasis`); what it changes is the number of
# iterations. From here on far fewer (pos, 20k rows at d = 768: 627 -> 222 evaluations; the
# fact tasks of a Pythia-160M-shaped model, 1,280 rows: 22-46 s -> 12-32 s each); with fewer
# rows each fold trains on fewer rows than features, the plain fit stops early at weak L2 and
# preconditioning takes more iterations (agreement, 1,038 rows: 1.3 -> 4.3 s)
PRECONDITION_ROWS = 1.5
# features from which probes are preconditioned by default (`ProbeConfig.precondition`)
PRECONDITION_WIDTH = 512
PRECONDITION_FLOOR = 1e-6  # smallest eps of `Eigenbasis.scale` (an L2 of 0)
MAX_ROW_GROUPS = 64  # row sets shared by the same variants; beyond it, one masked set
MIN_STEPS_PER_EPOCH = 10  # an "epoch" of a small row set is repeated up to this many steps


@dataclass(frozen=True)
class ProbeConfig:
    """How probes train.

    Args:
        probe: `linear` (multinomial logistic regression) or `mlp` (one hidden ReLU layer).
        l2: L2 penalty on the weights (added to the mean cross-entropy as l2/2 * ||W||^2); a
            tuple is a grid that sweeps choose from on each fold's validation rows
            (`probe.layers.probe_task`); `fit_predict` can take one value per variant.
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
            (`Eigenbasis`): the same optimum in far fewer iterations on wide, correlated
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
    basis: Eigenbasis | None = None,
) -> Float[Tensor, "v layer n c"]:
    """Train one probe per (variant, layer) on `train` rows, early-stop on `val` rows, and
    return every row's logits from each probe's best parameters. `l2` gives each variant (or
    each variant and layer) its own penalty (default: `cfg.l2`, which must then be one
    number). `basis` is `eigenbasis(x)` if the caller has it (linear probes preconditioned,
    `preconditioned`), computed here otherwise.

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
    if cfg.probe == "linear":
        _fit_lbfgs(params, best, x, y, train, val, l2, cfg, basis)
    else:
        _fit_adam(params, best, x, y, train, val, l2, cfg)
    best.restore()
    chunk = cfg.batch_size * 8
    with torch.no_grad():
        return torch.cat([params.logits(x[:, lo:lo + chunk])
                          for lo in range(0, x.shape[1], chunk)], dim=2)


def _fit_lbfgs(params: _Params, best: _Best, x: Tensor, y: Tensor, train: Tensor,
               val: Tensor, l2: Tensor, cfg: ProbeConfig, basis: Eigenbasis | None = None
               ) -> None:
    """Every (variant, layer) probe by one batched L-BFGS, each in coordinates
    preconditioned for its layer and L2 strength (`Eigenbasis`) when `cfg.precondition`
    (by default: features at least `PRECONDITION_WIDTH` wide) and there are at least
    `PRECONDITION_ROWS` rows per feature: the optimum is the same, reached in far fewer
    iterations. `basis` is `eigenbasis(x)` when the caller has it (a sweep's task and
    control probes share their activations)."""
    v, n_layers, d, c = params.tensors[0].shape
    n_probes = v * n_layers
    if not preconditioned(cfg, d, int(train.any(0).sum())):
        theta = lbfgs(_Objective(x, y, train, c, l2), n_probes, d, c, cfg.max_iter)
    else:
        basis = basis if basis is not None else eigenbasis(x)
        layer = torch.arange(n_probes, device=x.device) % n_layers
        scale = basis.scale(l2.flatten(), layer)  # [probe, d]
        got = lbfgs(_Objective(basis.rotate(x), y, train, c, l2, (basis.u, scale)),
                    n_probes, d, c, cfg.max_iter)
        # back to the original coordinates: W = U (s V), biases unchanged
        w = _per_layer(basis.u, got[:, :d] * scale[:, :, None], layer)
        theta = torch.cat([w, got[:, d:]], 1)
    theta = theta.view(v, n_layers, d + 1, c)
    with torch.no_grad():  # the convex optimum is the estimate; record its validation loss
        params.tensors[0].copy_(theta[:, :, :d])
        params.tensors[1].copy_(theta[:, :, d:])
        best.update(_chunked_losses(params, x, y, val, cfg.batch_size * 8))


def preconditioned(cfg: ProbeConfig, d: int, n_rows: int) -> bool:
    """Whether linear probes on `d` features, trained on `n_rows` rows in all, are solved
    preconditioned (`Eigenbasis`): `cfg.precondition`, by default from
    `PRECONDITION_WIDTH` features on; never below `PRECONDITION_ROWS` rows per feature
    (there the plain fit needs fewer iterations)."""
    wanted = d >= PRECONDITION_WIDTH if cfg.precondition is None else cfg.precondition
    return cfg.probe == "linear" and wanted and n_rows >= PRECONDITION_ROWS * d


@dataclass(frozen=True)
class Eigenbasis:
    """Each layer's second moment `S = x^T x / n = U diag(e) U^T` (no labels are used, like
    `standardize`), from which linear probes are preconditioned.

    A probe `W = P V` with `P = (S + eps I)^(-1/2)` (eps = its L2 strength, at least
    `PRECONDITION_FLOOR`) is the same problem as in `W` (same optimum), but its curvature
    along each eigenvector of S, about `(e s + l2) / (e + eps)` (s the softmax curvature),
    no longer spans the eigenvalues' range: correlated features (a 768-wide residual stream)
    no longer make L-BFGS crawl. It is solved in rotated coordinates, `V' = U^T V`, where
    `P` is diagonal: the rows are rotated once (`x U`), a probe's weights there are
    `diag(s) V'` with `s = (e + eps)^(-1/2)`, and an evaluation costs no more than without
    preconditioning. L-BFGS from zero is invariant to the rotation, so its iterates are
    those of `V` (to rounding); the stopping rule reads the gradient in the original
    coordinates (`U g`), so the tolerance means what it meant.
    """

    u: Float[Tensor, "layer d d"]
    e: Float[Tensor, "layer d"]

    def rotate(self, x: Float[Tensor, "layer n d"]) -> Float[Tensor, "layer n d"]:
        """The rows in each layer's eigenbasis, `x U`."""
        return torch.bmm(x, self.u)

    def scale(self, l2: Float[Tensor, " p"], layer: Int[Tensor, " p"]) -> Float[Tensor, "p d"]:
        """`s = (e + eps)^(-1/2)` of each probe (its L2 strength and layer)."""
        eps = l2.to(self.e.dtype).clamp_min(PRECONDITION_FLOOR)
        return (self.e[layer] + eps[:, None]).rsqrt().to(self.u.dtype)


def eigenbasis(x: Float[Tensor, "layer n d"]) -> Eigenbasis:
    """Each layer's `Eigenbasis` (eigendecomposition of its second moment, in float64)."""
    n = x.shape[1]
    e, u = torch.linalg.eigh(torch.bmm(x.transpose(1, 2), x).double() / max(n, 1))
    return Eigenbasis(u=u.to(x.dtype), e=e.clamp_min(0))


def _per_layer(mats: Float[Tensor, "layer d d"], w: Float[Tensor, "p d c"], layer: Tensor
               ) -> Tensor:
    """`A w` for each probe, with its layer's matrix `mats[layer[probe]]`."""
    out = torch.empty_like(w)
    _, d, c = w.shape
    for k in layer.unique().tolist():
        at = (layer == k).nonzero().squeeze(1)
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
                 precondition: tuple[Tensor, Tensor] | None = None) -> None:
        self.n_layers, _, self.d = x.shape
        self.c, self.l2, self.device = n_classes, l2, x.device
        # preconditioned (`Eigenbasis`): `x` holds the rotated rows, and the parameters are
        # `V'`, each probe's weights there `s V'`; (each layer's U, each probe's s `[p, d]`)
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
        u, scale = self.precondition
        # the gradient in V' is s g' (g' in the rotated coordinates); the original one U g'
        w = _per_layer(u, grad[:, :self.d] / scale[probe, :, None], probe % self.n_layers)
        return torch.maximum(w.abs().amax((1, 2)), grad[:, self.d:].abs().amax((1, 2)))

    def __call__(self, theta: Tensor, probe: Tensor) -> tuple[Tensor, Tensor]:
        """`(loss [p], gradient [p, d + 1, c])` of the probes `probe` at `theta`."""
        d, c = self.d, self.c
        if self.precondition is not None:  # theta holds V': the weights (rotated) are s V'
            scale = self.precondition[1][probe, :, None]
            theta = torch.cat([theta[:, :d] * scale, theta[:, d:]], 1)
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
        if self.precondition is not None:  # the gradient in V': s g'
            grad[:, :d] *= scale
        return loss, grad
