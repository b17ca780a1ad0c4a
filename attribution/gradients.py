"""Gradient similarity between a query and training documents (Pruthi et al. 2020, TracIn at
one checkpoint; TrackStar's unit-normalised variant, Chang et al. 2024).

A document's gradient is that of its mean next-token loss (its first `n_ctx` tokens); a
query's is that of the answer's negative log-probability after each held-out prompt
(`<bos>` + prompt), averaged over its prompts. Gradients are taken over a chosen set of
parameters (`mlp`: the weight matrices of every MLP, where facts are recalled; `all`) and
sketched to `dim` numbers with a seeded CountSketch (each coordinate added, with a random
sign, to one of `dim` buckets: inner products are kept in expectation, at O(parameters) a
gradient, so that every training document's sketch fits in memory). `grad-dot` scores a
document by the inner product with the query's gradient; `grad-cos` by the cosine, which
does not favour documents with large gradients.

>>> import torch
>>> sketch = CountSketch(n=1000, dim=64, seed=0)
>>> g = torch.randn(1000)
>>> sketch(g).shape, bool(torch.allclose(sketch(g), sketch(g)))
(torch.Size([64]), True)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from attribution.documents import Documents, Query
from workbench.models import Model
from workbench.prompts import encode_prompt, object_ids

PARAMS = ("mlp", "all")
METHODS = ("grad-dot", "grad-cos")


@dataclass(frozen=True)
class GradientConfig:
    """How gradients are taken and sketched.

    Args:
        params: `mlp` (the MLPs' weight matrices) or `all` (every parameter).
        dim: numbers a gradient is sketched to.
        seed: the sketch's buckets and signs.
    """

    params: str = "mlp"
    dim: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if self.params not in PARAMS:
            raise ValueError(f"params={self.params!r}; choose one of {', '.join(PARAMS)}")
        if self.dim < 1:
            raise ValueError(f"dim={self.dim}; pass 1 or more")


class CountSketch:
    """A seeded linear map from `n` numbers to `dim` (bucket and sign per coordinate)."""

    def __init__(self, n: int, dim: int, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.bucket = torch.randint(0, dim, (n,), generator=gen)
        self.sign = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.dim, dtype=torch.float32)
        return out.index_add_(0, self.bucket, g.float() * self.sign)


def selected_parameters(model: Model, params: str = "mlp") -> list[torch.nn.Parameter]:
    """The parameters gradients are taken over (in a fixed order).

    Raises:
        ValueError: `mlp` on a model whose parameter names have no MLP.
    """
    named = list(model.named_parameters())
    if params == "all":
        return [p for _, p in named]
    chosen = [p for name, p in named if ".mlp." in f".{name}." and p.ndim == 2]
    if not chosen:
        raise ValueError("the model has no parameter named like '*.mlp.*'; use params='all'")
    return chosen


def _flat_grad(loss: torch.Tensor, params: Sequence[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1).float()
                      for g, p in zip(grads, params)]).cpu()


def document_loss(model: Model, tokens: np.ndarray) -> torch.Tensor:
    """Mean next-token loss of a document's first `n_ctx` tokens (as training saw windows)."""
    ids = torch.tensor(np.asarray(tokens[: model.cfg.n_ctx]), dtype=torch.long)[None]
    if ids.shape[1] < 2:
        raise ValueError("a document of fewer than 2 tokens has no next-token loss")
    device = next(model.parameters()).device
    logits = model(ids.to(device))
    return F.cross_entropy(logits[0, :-1].float(), ids[0, 1:].to(device))


def query_loss(model: Model, query: Query) -> torch.Tensor:
    """Mean over the query's prompts of -log p(the answer's first token | prompt)."""
    target = object_ids(model, query.answer)[0]
    device = next(model.parameters()).device
    losses = []
    for prompt in query.prompts:
        ids = torch.tensor(encode_prompt(model, prompt))[None].to(device)
        logp = F.log_softmax(model(ids)[0, -1].float(), -1)
        losses.append(-logp[target])
    return torch.stack(losses).mean()


def sketches(model: Model, losses: Iterable[torch.Tensor], cfg: GradientConfig,
             params: Sequence[torch.nn.Parameter], n: int) -> torch.Tensor:
    """float32 [n, dim]: the sketched gradient of each loss."""
    sketch = CountSketch(sum(p.numel() for p in params), cfg.dim, cfg.seed)
    out = torch.zeros(n, cfg.dim)
    for i, loss in enumerate(losses):
        out[i] = sketch(_flat_grad(loss, params))
    return out


def gradient_scores(model: Model, queries: Sequence[Query], docs: Documents,
                    cfg: GradientConfig = GradientConfig(), *, progress: bool = False
                    ) -> dict[str, np.ndarray]:
    """`{method: float32 [n_queries, n_documents]}` for `grad-dot` and `grad-cos`."""
    was_training = model.training
    model.train(False)  # inference mode (no dropout); gradients still flow
    params = selected_parameters(model, cfg.params)
    try:
        q = sketches(model, (query_loss(model, x) for x in queries), cfg, params, len(queries))
        bar = tqdm(range(len(docs)), desc="document gradients", disable=not progress,
                   leave=False)
        d = sketches(model, (document_loss(model, docs.tokens(i)) for i in bar), cfg, params,
                     len(docs))
    finally:
        model.train(was_training)
    dot = q @ d.T
    cos = F.normalize(q, dim=1) @ F.normalize(d, dim=1).T
    return {"grad-dot": dot.numpy(), "grad-cos": cos.numpy()}
