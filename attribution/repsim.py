"""Representation similarity (Hanawa et al. 2021; the `repsim` baseline of data attribution
benchmarks): a document is scored by the cosine between its mean residual stream at a layer
and the query's residual at the last prompt token (averaged over the query's prompts). No
gradients: one forward pass per document.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from attribution.documents import Documents, Query
from workbench.hooks import hook_name
from workbench.models import Model
from workbench.prompts import encode_prompt


@torch.no_grad()
def _resid(model: Model, ids: torch.Tensor, hook: str) -> torch.Tensor:
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(ids.to(device), names_filter=lambda name: name == hook)
    return cache[hook][0].float().cpu()  # [pos, d_model]


def repsim_scores(model: Model, queries: Sequence[Query], docs: Documents, *,
                  layer: int | None = None, progress: bool = False) -> np.ndarray:
    """float32 [n_queries, n_documents]: cosine of the query's and each document's residual
    stream after block `layer` (default: the last).

    Raises:
        ValueError: a layer outside the model.
    """
    n_layers = model.cfg.n_layers
    layer = n_layers - 1 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer={layer}; the model has layers 0..{n_layers - 1}")
    hook = hook_name(layer, "hook_resid_post")
    q = torch.stack([
        torch.stack([_resid(model, torch.tensor(encode_prompt(model, p))[None], hook)[-1]
                     for p in query.prompts]).mean(0) for query in queries])
    d = torch.zeros(len(docs), q.shape[1])
    for i in tqdm(range(len(docs)), desc="document representations", disable=not progress,
                  leave=False):
        ids = torch.tensor(np.asarray(docs.tokens(i)[: model.cfg.n_ctx]), dtype=torch.long)
        d[i] = _resid(model, ids[None], hook).mean(0)
    return (F.normalize(q, dim=1) @ F.normalize(d, dim=1).T).numpy()
