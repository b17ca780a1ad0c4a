"""Weight edits of one MLP's output matrix, applied on a copy or inside a context manager.

An edit never mutates the caller's model silently: `edit.applied(model)` changes the weights
for the duration of a `with` block and then writes back a saved copy of the original tensor
(bit-exact, not "minus the delta"); `edit.copy_applied(model)` returns an edited deep copy.

The MLP output matrix is read and written in the direction `key -> value`: `value = key @ W`
with `key` the MLP's hidden activation (`blocks.{l}.mlp.hook_post`, `[d_mlp]`) and `value`
its output (`blocks.{l}.hook_mlp_out`, `[d_model]`), whatever the underlying module stores
(`nn.Linear` keeps `[d_model, d_mlp]`, Hugging Face GPT-2's `Conv1D` keeps `[d_mlp, d_model]`).

Keys and their second moment (ROME's key covariance) come from here too; the covariance is
estimated from corpus activations streamed through `ActivationStore`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.tracing import find_subject
from workbench.hooks import (
    hook_name,
    resid_entering,
    resumes_exactly,
    run_from,
    unembed_input,
    unembeds_exactly,
)

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus

log = logging.getLogger(__name__)


def check_layer(model: Model, layer: int) -> int:
    n = model.cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer {layer!r} is out of range; this model has layers 0..{n - 1}")
    return layer


def key_hook(layer: int) -> str:
    """The hook holding the MLP's hidden activation (the edit's key) at `layer`."""
    return hook_name(layer, "mlp.hook_post")


def _out_module(model: Model, layer: int) -> torch.nn.Module:
    mlp = model.blocks[check_layer(model, layer)].mlp
    out = getattr(mlp, "out", None)
    if out is None:
        raise ValueError(f"layer {layer}'s MLP has no `out` projection; this architecture "
                         "(gated or mixture MLP) is not supported by weight edits")
    return getattr(out, "original_component", out)


def mlp_out_weight(model: Model, layer: int) -> tuple[torch.nn.Parameter, bool]:
    """The MLP output weight of `layer` and whether it is stored `[d_model, d_mlp]`."""
    module = _out_module(model, layer)
    weight = module.weight
    d_model, d_mlp = model.cfg.d_model, model.cfg.d_mlp
    if type(module).__name__ == "Conv1D":
        transposed = False
    elif isinstance(module, torch.nn.Linear):
        transposed = True
    else:
        transposed = tuple(weight.shape) == (d_model, d_mlp)
    expected = (d_model, d_mlp) if transposed else (d_mlp, d_model)
    if tuple(weight.shape) != expected:
        raise ValueError(f"MLP output weight of layer {layer} has shape {tuple(weight.shape)}, "
                         f"expected {expected}; this architecture is not supported")
    return weight, transposed


def read_w_out(model: Model, layer: int) -> Float[Tensor, "d_mlp d_model"]:
    """The MLP output matrix of `layer` in `key -> value` direction (a detached copy)."""
    weight, transposed = mlp_out_weight(model, layer)
    w = weight.detach()
    return (w.T if transposed else w).clone()


@dataclass
class WeightEdit:
    """An additive change `delta` (`[d_mlp, d_model]`, key -> value) to one MLP's output."""

    layer: int
    delta: Float[Tensor, "d_mlp d_model"]
    method: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def _param_delta(self, model: Model) -> tuple[torch.nn.Parameter, Tensor]:
        weight, transposed = mlp_out_weight(model, self.layer)
        delta = self.delta.T if transposed else self.delta
        if delta.shape != weight.shape:
            raise ValueError(f"edit of shape {tuple(self.delta.shape)} does not fit layer "
                             f"{self.layer}'s MLP output {tuple(weight.shape)}")
        return weight, delta.to(weight.device, weight.dtype)

    @contextlib.contextmanager
    def applied(self, model: Model) -> Iterator[Any]:
        """Apply the edit in place for a `with` block; the original weights come back exactly."""
        weight, delta = self._param_delta(model)
        original = weight.detach().clone()
        try:
            with torch.no_grad():
                weight.add_(delta)
            yield model
        finally:
            with torch.no_grad():
                weight.copy_(original)

    def copy_applied(self, model: Model) -> Any:
        """A deep copy of `model` with the edit applied (the original is untouched)."""
        edited = copy.deepcopy(model)
        weight, delta = self._param_delta(edited)
        with torch.no_grad():
            weight.add_(delta)
        return edited

    def norm(self) -> float:
        return float(self.delta.norm())


class Edit(Protocol):
    """What the edit metrics apply and undo: a `WeightEdit`, or hooks instead of weights
    (`beliefs.steering.HookedEdit`: a `SteeringEdit`, a `beliefs.latent.LatentEdit`)."""

    layer: int
    method: str
    info: dict[str, Any]

    def applied(self, model: Model) -> contextlib.AbstractContextManager[Any]: ...

    def copy_applied(self, model: Model) -> Any: ...

    def norm(self) -> float: ...


@torch.no_grad()
def keys_at(model: Model, tokens: list[list[int]], positions: list[int],
            layer: int) -> Float[Tensor, "n d_mlp"]:
    """The MLP key of `layer` at `positions[i]` of each token sequence (float32, CPU)."""
    name = key_hook(check_layer(model, layer))
    device = next(model.parameters()).device
    out = []
    for ids, pos in zip(tokens, positions, strict=True):
        _, cache = model.run_with_cache(torch.tensor([ids], device=device),
                                        names_filter=lambda n: n == name)
        out.append(cache[name][0, pos].float().cpu())
    return torch.stack(out)


def key_covariance(model: Model, corpus: Corpus, layer: int, *, n_tokens: int = 100_000,
                   split: str = "train", acts: str | Path | None = None,
                   batch_rows: int = 8192, progress: bool = False) -> Float[Tensor, "d_mlp d_mlp"]:
    """Second moment `E[k k^T]` of the MLP keys of `layer` over corpus tokens (ROME's C).

    The keys' products are taken in float32 over `batch_rows` rows at a time and summed in
    float64, so memory stays bounded: straight from the forward passes (each stopped after
    `layer`, sequences batched by length), or, with `acts`, read from that activation file
    (written first when it does not exist).
    """
    from workbench.cache.store import (
        ActivationStore,
        CacheConfig,
        cache_activations,
    )

    name = key_hook(check_layer(model, layer))
    if acts is None:
        return key_covariances(model, corpus, [layer], n_tokens=n_tokens, split=split,
                               batch_rows=batch_rows)[layer]
    cfg = CacheConfig(hooks=(name,), split=split, max_tokens=n_tokens, chunk=True)
    cov = torch.zeros(model.cfg.d_mlp, model.cfg.d_mlp, dtype=torch.float64)
    path = Path(acts)
    if path.exists() and not _has_hook(path, name):
        raise ValueError(f"activation file {path} holds no {name!r} (or is not a complete "
                         "activation file); pass another path to write the keys to")
    if not path.exists():
        cache_activations(model, corpus, cfg, path, progress=progress,
                          resume=path.with_name(path.name + ".partial").exists())
    with ActivationStore(path) as store:
        n = len(store)
        for k in store.iter_batches(name, batch_rows, torch.float32):
            add_second_moment(cov, k)
    log.info("key covariance of layer %d from %d tokens", layer, n)
    return (cov / n).float()


def key_covariances(model: Model, corpus: Corpus, layers: list[int], *,
                    n_tokens: int = 100_000, split: str = "train", batch_rows: int = 8192
                    ) -> dict[int, Float[Tensor, "d_mlp d_mlp"]]:
    """`key_covariance` of several layers from the same forward passes (stopped after the
    highest): what MEMIT needs, one pass over the tokens instead of one per layer."""
    from workbench.cache.store import CacheConfig, iter_activations

    names = {key_hook(check_layer(model, la)): la for la in layers}
    cfg = CacheConfig(hooks=tuple(names), split=split, max_tokens=n_tokens, chunk=True)
    covs = {la: torch.zeros(model.cfg.d_mlp, model.cfg.d_mlp, dtype=torch.float64)
            for la in names.values()}
    n = 0
    for batch in iter_activations(model, corpus, cfg, by_length=True):
        for name, la in names.items():
            keys = torch.from_numpy(batch[name])
            for lo in range(0, len(keys), batch_rows):
                add_second_moment(covs[la], keys[lo:lo + batch_rows])
        n += len(batch[next(iter(names))])
    log.info("key covariance of layers %s from %d tokens", sorted(covs), n)
    return {la: (c / max(n, 1)).float() for la, c in covs.items()}


SECOND_MOMENT_BLOCK = 768  # columns per block of `add_second_moment`


def add_second_moment(cov: Float[Tensor, "d d"], k: Float[Tensor, "n d"]) -> None:
    """`cov += k^T k` (float32 products, added to `cov`'s dtype), computing the blocks on and
    below the diagonal only and mirroring the rest: 10 of 16 block products at GPT-2's
    d_mlp of 3,072 (the symmetric rank-k update BLAS calls `syrk`, which torch does not
    expose)."""
    d = k.shape[1]
    for lo in range(0, d, SECOND_MOMENT_BLOCK):
        hi = min(lo + SECOND_MOMENT_BLOCK, d)
        block = (k[:, lo:hi].T @ k[:, :hi]).to(cov.dtype)  # rows lo:hi, columns 0:hi
        cov[lo:hi, :hi] += block
        cov[:lo, lo:hi] += block[:, :lo].T


def _has_hook(path: Path, name: str) -> bool:
    from workbench.cache.store import ActivationStore

    try:
        with ActivationStore(path) as store:
            return name in store.hooks
    except (OSError, ValueError):
        return False


@torch.no_grad()
def context_prefixes(model: Model, n: int, length: int, seed: int = 0) -> list[str]:
    """`n` short texts sampled from the model itself (top-5, seeded), as ROME does, so that
    an edit is made and checked in varied contexts rather than only after `<bos>`."""
    if n == 0:
        return []
    g = torch.Generator().manual_seed(seed)
    bos = model.tokenizer.bos_token_id
    ids = torch.full((n, 1), 0 if bos is None else bos, dtype=torch.long)
    device = next(model.parameters()).device
    for _ in range(length):
        logits = model(ids.to(device))[:, -1].float().cpu()
        top = logits.topk(5, -1)
        pick = torch.multinomial(top.values.softmax(-1), 1, generator=g)
        ids = torch.cat([ids, top.indices.gather(1, pick)], 1)
    return [model.tokenizer.decode(row[1:].tolist()).strip() for row in ids]


@dataclass
class RewriteBatch:
    """Prompts (with context prefixes) followed by the new object, right-padded."""

    tokens: Tensor  # [batch, pos]
    subject_pos: Tensor  # [batch] last subject token
    target_pos: Tensor  # [batch, n_target] positions whose next token is a target token
    target_ids: Tensor  # [n_target]


def rewrite_batch(model: Model, prompts: list[str], subject: str, target_ids: list[int],
                  prefixes: list[str]) -> RewriteBatch:
    """Every `prefix + prompt + target[:-1]`, with where the subject ends and targets sit."""
    bos = model.tokenizer.bos_token_id
    rows, subj, tgt = [], [], []
    for prompt in prompts:
        for prefix in [""] + prefixes:
            text = f"{prefix} {prompt}" if prefix else prompt
            ids = ([] if bos is None else [bos]) + list(
                model.tokenizer.encode(text, add_special_tokens=False))
            subj.append(find_subject(model, text, subject)[1] - 1)  # its last token
            tgt.append(list(range(len(ids) - 1, len(ids) - 1 + len(target_ids))))
            rows.append(ids + target_ids[:-1])
    if max(len(r) for r in rows) > model.cfg.n_ctx:
        raise ValueError(f"an edit prompt is longer than n_ctx={model.cfg.n_ctx}; shorten it")
    tokens = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    return RewriteBatch(tokens, torch.tensor(subj), torch.tensor(tgt), torch.tensor(target_ids))


def target_nll(logits: Tensor, batch: RewriteBatch) -> Tensor:
    """Mean NLL of the target tokens over the batch rows."""
    logp = torch.log_softmax(logits.float(), -1)
    rows = torch.arange(len(batch.tokens))[:, None]
    picked = logp[rows, batch.target_pos.to(logp.device), batch.target_ids.to(logp.device)]
    return -picked.sum(-1).mean()


class RewriteLoss:
    """`target_nll` of `batch` under a run with forward hooks, unembedding only the target
    positions when that gives the full run's value (a run stopped at the unembedding's
    input; an architecture that changes logits after the unembedding, a soft cap, keeps the
    full run), and, given the edited `layer`, resuming the blocks from it when that gives the
    full run's logits (`workbench.hooks.run_from`: what enters an edited MLP's block does
    not change while the edit is optimised). A weight edit's optimisation calls it every
    step: at GPT-2's vocabulary the unembedding of every position is about a third of a
    step's work, and at its middle layer the blocks below half the rest.

    `extra`: more token rows, run in the same batch (after `batch`'s rows, so hooks see
    `len(batch.tokens) + len(extra)` rows), whose last position's logits `with_logits`
    returns too: ROME's essence prompt shares the rewrite rows' pass, as in ROME's own code.
    A small batch costs about what one row does on a CPU (the weights' memory traffic)."""

    def __init__(self, model: Model, batch: RewriteBatch, layer: int | None = None,
                 extra: list[list[int]] | None = None) -> None:
        self.model, self.batch = model, batch
        device = next(model.parameters()).device
        extra = extra or []
        rows = [*batch.tokens, *(torch.tensor(r, dtype=torch.long) for r in extra)]
        width = max(len(r) for r in rows)
        self.tokens = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            self.tokens[i, :len(r)] = r
        self.tokens = self.tokens.to(device)
        self.n = len(batch.tokens)
        self.extra_last = torch.tensor([len(r) - 1 for r in extra], dtype=torch.long)
        self.layer, self.resid = None, None
        # both shortcuts are checked once per model (and layer) against the full run
        if layer and resumes_exactly(model, self.tokens, layer):
            self.layer, self.resid = layer, resid_entering(model, self.tokens, layer)
        self.fast = unembeds_exactly(model, self.tokens)

    def __call__(self, fwd_hooks: list[tuple[str, Any]]) -> Tensor:
        return self.with_logits(fwd_hooks)[0]

    def with_logits(self, fwd_hooks: list[tuple[str, Any]]
                    ) -> tuple[Tensor, Float[Tensor, "extra d_vocab"]]:
        """The target NLL and the logits at the last position of each `extra` row."""
        if self.fast:
            return self._stopped(fwd_hooks)
        logits = self._run(fwd_hooks)
        last = logits[self.n + torch.arange(len(self.extra_last)), self.extra_last]
        return target_nll(logits[:self.n], self.batch), last

    def _run(self, fwd_hooks: list[tuple[str, Any]]) -> Any:
        if self.resid is not None:
            return run_from(self.model, self.resid, self.layer, fwd_hooks)  # type: ignore[arg-type]
        return self.model.run_with_hooks(self.tokens, fwd_hooks=fwd_hooks)

    def _stopped(self, fwd_hooks: list[tuple[str, Any]]) -> tuple[Tensor, Tensor]:
        x = unembed_input(self._run, fwd_hooks)
        rows = torch.arange(self.n, device=x.device)[:, None]
        pos = self.batch.target_pos.to(x.device)
        last = self.extra_last.to(x.device)
        at = torch.cat([x[rows, pos].flatten(0, 1),
                        x[self.n + torch.arange(len(last), device=x.device), last]])
        logits = self.model.unembed(at)
        n_target = pos.numel()
        logp = torch.log_softmax(logits[:n_target].float(), -1).view(*pos.shape, -1)
        picked = logp.gather(-1, self.batch.target_ids.to(x.device).expand_as(pos)[..., None])
        return -picked[..., 0].sum(-1).mean(), logits[n_target:]


@contextlib.contextmanager
def frozen(model: Model) -> Iterator[Any]:
    """Turn off gradients of every model parameter for a block (restored afterwards), so that
    optimising an edit never leaves `.grad` tensors on the caller's model."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
