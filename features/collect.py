"""One pass of a model over a corpus split with a dictionary spliced in: what the evaluation
reads (`features.evaluate`).

Each batch of sequences runs clean (the hook's input, the MLP neurons of its block and the
loss), with the reconstruction in place of the hook's activation (a transcoder's target), and
with that activation zeroed. Every real token counts toward the reconstruction numbers; the
word-final rows (those probes read) keep their latents (sparse), their input activation and
their block's MLP neurons (float16) and their labels, for `features.truth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from features.dictionary import Dictionary
from features.truth import SparseCodes
from workbench.cache.plan import iter_batches
from workbench.cache.store import CacheConfig, plan_for
from workbench.evaluate import token_nll
from workbench.hooks import layer_of

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus


@dataclass
class Collected:
    """What one pass gathered (see the module docstring)."""

    n_tokens: int = 0
    sq_err: float = 0.0
    y_sum: Tensor | None = None
    y_sq: Tensor | None = None
    l0_sum: float = 0.0
    fired: Tensor | None = None
    nll: dict[str, float] = field(default_factory=lambda: {"clean": 0.0, "spliced": 0.0,
                                                           "zero": 0.0})
    n_nll: int = 0
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    codes: SparseCodes | None = None
    residual: np.ndarray | None = None
    neurons: np.ndarray | None = None

    def reconstruction(self, dense: float) -> dict[str, Any]:
        """L0, FVU, cross-entropy clean / spliced / zero and the share recovered, dead and
        dense latents."""
        assert self.y_sum is not None and self.y_sq is not None and self.fired is not None
        n = max(self.n_tokens, 1)
        var = float((self.y_sq - self.y_sum.pow(2) / n).sum())
        ce = {k: v / max(self.n_nll, 1) for k, v in self.nll.items()}
        gap = ce["zero"] - ce["clean"]
        freq = self.fired / n
        return {
            "l0": round(self.l0_sum / n, 3), "fvu": round(self.sq_err / max(var, 1e-12), 4),
            "ce_clean": round(ce["clean"], 4), "ce_spliced": round(ce["spliced"], 4),
            "ce_zero": round(ce["zero"], 4),
            "ce_recovered": round((ce["zero"] - ce["spliced"]) / gap, 4) if gap > 0 else None,
            "dead": int((self.fired == 0).sum()), "dense": int((freq > dense).sum()),
            "dead_share": round(float((self.fired == 0).float().mean()), 4),
            "dense_share": round(float((freq > dense).float().mean()), 4),
            "dense_threshold": dense, "n_tokens": self.n_tokens,
            "fire_rate": [round(float(x), 6) for x in freq],
        }


def neuron_hook(model: Model, hook: str) -> str | None:
    """The MLP neurons of the hook's block (`blocks.L.mlp.hook_post`), when the model has
    them (for a residual hook before block L, those of block L-1)."""
    layer = layer_of(hook)
    if layer is None:
        return None
    if hook.endswith("hook_resid_pre"):
        layer -= 1
    name = f"blocks.{layer}.mlp.hook_post"
    return name if layer >= 0 and name in model.hook_dict else None


def _grab(into: dict[str, Tensor], name: str) -> Any:
    def fn(x: Tensor, hook: Any) -> None:
        into[name] = x.detach()
    return fn


def _put(value: Tensor | None) -> Any:
    """A hook replacing the activation by `value` (None: zeros)."""
    def fn(act: Tensor, hook: Any) -> Tensor:
        return torch.zeros_like(act) if value is None else value.to(act.dtype)
    return fn


@torch.no_grad()
def collect(model: Model, corpus: Corpus, d: Dictionary, meta: dict[str, Any], *,
            split: str, max_tokens: int | None, batch_size: int, progress: bool = True
            ) -> Collected:
    """Run the model over `split` with the dictionary `d` (hooks from `meta`)."""
    hook, target = meta["hook"], meta.get("target")
    for name in (hook, target):
        if name is not None and name not in model.hook_dict:
            raise ValueError(f"the dictionary reads hook {name!r}, which this model lacks; "
                             "pass the model it was trained for")
    write_at = target or hook
    neurons = neuron_hook(model, hook)
    device = next(model.parameters()).device
    d = d.to(device)
    cfg = CacheConfig(split=split, positions="all", max_tokens=max_tokens, chunk=True)
    plan = plan_for(model, corpus, cfg)
    words = plan_for(model, corpus, CacheConfig(split=split, positions="word-final",
                                                max_tokens=max_tokens, chunk=True))
    tokens_all, labels_all = corpus.tokens(split), corpus.labels(split)
    out = Collected(fired=torch.zeros(d.cfg.d_sae), y_sum=torch.zeros(d.cfg.width_out),
                    y_sq=torch.zeros(d.cfg.width_out))
    parts: dict[str, list[np.ndarray]] = {"row": [], "latent": [], "value": [], "resid": [],
                                          "neurons": [], "offset": [], "doc": [], "token": []}
    n_rows = 0
    bar = tqdm(total=plan.n_tokens, desc="sae eval", unit="tok", disable=not progress)
    for batch in iter_batches(plan, tokens_all, batch_size, 0, plan.n_seqs):
        toks = batch.tokens.to(device)
        b, t = toks.shape
        lengths = torch.from_numpy(plan.lengths[batch.seq_lo:batch.seq_hi]).to(device)
        valid = torch.arange(t, device=device)[None, :] < lengths[:, None]
        grabbed: dict[str, Tensor] = {}
        hooks = [(hook, _grab(grabbed, "x"))] + (
            [(target, _grab(grabbed, "y"))] if target else []) + (
            [(neurons, _grab(grabbed, "neurons"))] if neurons else [])
        clean = model.run_with_hooks(toks, fwd_hooks=hooks)
        x = grabbed["x"]
        y = grabbed.get("y", x)
        f = d.encode(x)
        x_hat = d.decode(f)
        spliced = model.run_with_hooks(toks, fwd_hooks=[(write_at, _put(x_hat))])
        zeroed = model.run_with_hooks(toks, fwd_hooks=[(write_at, _put(None))])
        scored = valid.clone()
        scored[:, 0] = False
        for key, logits in (("clean", clean), ("spliced", spliced), ("zero", zeroed)):
            out.nll[key] += float(token_nll(logits, toks)[scored].sum())
        out.n_nll += int(scored.sum())
        yv, xh, fv = y[valid].float(), x_hat[valid].float(), f[valid]
        out.n_tokens += int(valid.sum())
        out.sq_err += float((xh - yv).pow(2).sum())
        out.y_sum += yv.sum(0).cpu()
        out.y_sq += yv.pow(2).sum(0).cpu()
        active = fv > 0
        out.l0_sum += float(active.sum())
        out.fired += active.sum(0).float().cpu()
        # the word-final rows: latents, inputs, neurons, labels
        flat = []
        for i, seq in enumerate(range(batch.seq_lo, batch.seq_hi)):
            n = int(plan.lengths[seq])
            kept = words.kept(batch.tokens[i, :n].numpy())
            flat.append(i * t + kept)
            parts["offset"].append(int(plan.starts[seq]) + kept)
            parts["doc"].append(np.full(len(kept), plan.docs[seq]))
            parts["token"].append(batch.tokens[i, kept].numpy())
        idx = torch.from_numpy(np.concatenate(flat)).to(device)
        fw = f.reshape(b * t, -1)[idx]
        r, j = fw.nonzero(as_tuple=True)
        parts["row"].append((r + n_rows).cpu().numpy())
        parts["latent"].append(j.cpu().numpy())
        parts["value"].append(fw[r, j].float().cpu().numpy())
        parts["resid"].append(x.reshape(b * t, -1)[idx].half().cpu().numpy())
        if neurons:
            parts["neurons"].append(grabbed["neurons"].reshape(b * t, -1)[idx].half()
                                    .cpu().numpy())
        n_rows += len(idx)
        bar.update(int(valid.sum()))
    bar.close()
    offsets = np.concatenate(parts["offset"]).astype(np.int64)
    out.meta = {"offset": offsets, "doc": np.concatenate(parts["doc"]).astype(np.int64),
                "token": np.concatenate(parts["token"]).astype(np.int64)}
    out.labels = {k: np.asarray(v)[offsets] for k, v in labels_all.items()
                  if len(v) == len(tokens_all)}
    out.codes = SparseCodes(np.concatenate(parts["row"]), np.concatenate(parts["latent"]),
                            np.concatenate(parts["value"]), n_rows, d.cfg.d_sae)
    out.residual = np.concatenate(parts["resid"])
    out.neurons = np.concatenate(parts["neurons"]) if neurons else None
    return out
