"""Sparse dictionaries: sparse autoencoders and transcoders with SAELens' parameters.

A dictionary reads an activation `x` (`[..., d_in]`) and writes latents `f` (`[..., d_sae]`)
and a reconstruction `x_hat` (`[..., d_out]`; `d_out = d_in` for an autoencoder, the MLP
output's width for a transcoder):

    pre   = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc
    f     = act(pre)            # relu | topk | batchtopk | matryoshka | jumprelu
    x_hat = f @ W_dec + b_dec

The parameter names and shapes are SAELens' (`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_out]`,
`b_enc [d_sae]`, `b_dec [d_out]`, `threshold [d_sae]` for JumpReLU), so the saved
`sae_weights.safetensors` loads there (`features.io`). Activations:

- `relu` (SAELens `standard`): `relu(pre)`;
- `topk`: the k largest of `relu(pre)` per row (Gao et al. 2024);
- `batchtopk`: in training the `k * rows` largest over the whole batch (Bussmann et al.
  2024); in use a JumpReLU at the threshold learned in training (as SAELens saves it);
- `matryoshka`: BatchTopK whose latents are nested groups, each prefix trained to
  reconstruct on its own (Bussmann et al. 2025; Nabeshima 2024), so the first latents learn
  general features and later ones refine them instead of splitting a general one (the loss:
  `features.train`); in use a BatchTopK;
- `jumprelu`: `pre * (pre > threshold)`, the threshold trained through a straight-through
  estimator (Rajamanoharan et al. 2024).

>>> d = Dictionary(DictionaryConfig(arch="topk", d_in=8, d_sae=32, k=4))
>>> f, x_hat = d(torch.randn(5, 8))
>>> tuple(f.shape), tuple(x_hat.shape), int((f > 0).sum(-1).max()) <= 4
((5, 32), (5, 8), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

ARCHS = ("topk", "batchtopk", "matryoshka", "relu", "jumprelu")
BATCH_TOPK = ("batchtopk", "matryoshka")
"""The architectures selecting `k * rows` latents over a batch in training and thresholding
in use."""
SAELENS_ARCH = {"topk": "topk", "batchtopk": "jumprelu", "matryoshka": "jumprelu",
                "relu": "standard", "jumprelu": "jumprelu"}
"""How each architecture is saved for SAELens (BatchTopK and Matryoshka are used as a
JumpReLU, as SAELens saves them)."""
JUMP_BANDWIDTH = 0.05
"""The straight-through estimator's kernel width, in normalised units (|x| ~ sqrt(d_in))."""


@dataclass(frozen=True)
class DictionaryConfig:
    """A dictionary's shape.

    Args:
        arch: `topk`, `batchtopk`, `matryoshka`, `relu` or `jumprelu`.
        d_in: width of the activation read.
        d_sae: number of latents.
        k: active latents per row (`topk`, `batchtopk`, `matryoshka`).
        d_out: width written (default `d_in`; another width makes a transcoder).
        transcoder: the output is another hook's activation (no `b_dec` taken from the input).
    """

    arch: str = "topk"
    d_in: int = 128
    d_sae: int = 2048
    k: int = 32
    d_out: int | None = None
    transcoder: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"architecture {self.arch!r} is not one of {', '.join(ARCHS)}")
        if self.d_in < 1 or self.d_sae < 1:
            raise ValueError(f"d_in {self.d_in} and d_sae {self.d_sae} must be positive")
        if self.arch in ("topk", *BATCH_TOPK) and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"k {self.k} is out of range: pass 1 <= k <= {self.d_sae} "
                             "(the number of latents)")

    @property
    def width_out(self) -> int:
        return self.d_out or self.d_in


class _JumpStep(torch.autograd.Function):
    """Heaviside step `pre > threshold` whose gradient reaches the threshold through a
    rectangle kernel of width `JUMP_BANDWIDTH` (pseudo-derivative; none to `pre`)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, threshold)
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        near = ((pre - threshold).abs() < JUMP_BANDWIDTH / 2).to(pre.dtype)
        g = -(1.0 / JUMP_BANDWIDTH) * near * grad
        return None, g.reshape(-1, g.shape[-1]).sum(0)


class _JumpReLU(torch.autograd.Function):
    """`pre * (pre > threshold)`: the gradient reaches `pre` where it is kept and the
    threshold through the rectangle kernel."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(pre, threshold)
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        pre, threshold = ctx.saved_tensors
        kept = (pre > threshold).to(pre.dtype)
        near = ((pre - threshold).abs() < JUMP_BANDWIDTH / 2).to(pre.dtype)
        g = -(threshold / JUMP_BANDWIDTH) * near * grad
        return grad * kept, g.reshape(-1, g.shape[-1]).sum(0)


class Dictionary(nn.Module):
    """A sparse autoencoder or transcoder (see the module docstring)."""

    def __init__(self, cfg: DictionaryConfig, *, generator: torch.Generator | None = None
                 ) -> None:
        super().__init__()
        self.cfg = cfg
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.width_out
        w_dec = torch.randn(d_sae, d_out, generator=generator)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # tied initialisation (encoder = decoder transposed) where shapes allow it
        w_enc = w_dec.T.clone() if d_out == d_in else (
            torch.randn(d_in, d_sae, generator=generator) / math.sqrt(d_in))
        self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        # JumpReLU's (and, once trained, BatchTopK's) threshold per latent
        self.threshold = nn.Parameter(torch.full((d_sae,), 1e-3),
                                      requires_grad=cfg.arch == "jumprelu")
        self.register_buffer("batch_threshold", torch.tensor(-1.0))  # BatchTopK's running one

    @property
    def apply_b_dec_to_input(self) -> bool:
        return not self.cfg.transcoder

    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre: Float[Tensor, "rows d_sae"], *, train: bool = False
                 ) -> Float[Tensor, "rows d_sae"]:
        """The latents from pre-activations; `train` uses BatchTopK's batch-wide selection
        (else its learned threshold)."""
        arch = self.cfg.arch
        if arch == "relu":
            return F.relu(pre)
        if arch == "topk":
            top = pre.topk(self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
        if arch in BATCH_TOPK:
            if not train:
                if float(self.batch_threshold) < 0:  # untrained: per-row top-k instead
                    top = pre.topk(self.cfg.k, dim=-1)
                    return torch.zeros_like(pre).scatter(-1, top.indices, F.relu(top.values))
                return pre * (pre > self.batch_threshold).to(pre.dtype)
            flat = F.relu(pre).flatten()
            n = min(flat.numel(), self.cfg.k * pre.reshape(-1, pre.shape[-1]).shape[0])
            top = flat.topk(n)
            return torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(pre)
        threshold = self.threshold.clamp_min(1e-6)
        return _JumpReLU.apply(pre, threshold)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """The latents of `x` (as in use: BatchTopK by its threshold)."""
        shape = x.shape[:-1]
        f = self.activate(self.pre_acts(x).reshape(-1, self.cfg.d_sae))
        return f.reshape(*shape, self.cfg.d_sae)

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_out"]:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> tuple[Tensor, Tensor]:
        """`(latents, reconstruction)` of `x`."""
        f = self.encode(x)
        return f, self.decode(f)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Decoder rows to unit norm (each latent's direction; its scale lives in `f`)."""
        self.W_dec.data /= self.W_dec.data.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Project out the decoder gradient along each row (keeps unit norm to first order)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec.data
        self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w

    @torch.no_grad()
    def folded(self, scale_in: float, scale_out: float) -> Dictionary:
        """This dictionary, trained on activations multiplied by `scale_in` (input) and
        `scale_out` (target), rewritten to read and write raw activations (what SAELens calls
        folding the normalisation scaling factor). Thresholds and latents are unchanged."""
        out = Dictionary(self.cfg)
        out.load_state_dict(self.state_dict())
        out.W_enc.data *= scale_in
        out.W_dec.data /= scale_out
        out.b_dec.data /= scale_out
        if self.apply_b_dec_to_input and not math.isclose(scale_in, scale_out):
            raise ValueError("an autoencoder reads and writes one activation: one scale")
        return out

    def sparse_threshold(self) -> Tensor:
        """The per-latent threshold SAELens' JumpReLU applies (BatchTopK's learned one)."""
        if self.cfg.arch in BATCH_TOPK:
            return torch.full((self.cfg.d_sae,), max(float(self.batch_threshold), 0.0))
        return self.threshold.detach().clamp_min(0.0)
