"""MEMIT (Meng et al. 2023): many facts edited at once, spread over a range of MLP layers,
and AlphaEdit's null-space projection (Fang et al. 2025) for edits made one after another.

For each requested fact, a target hidden state `z` is found at the last layer `L` of the
range: the residual after block `L` at the subject's last token plus a `delta` optimised as
ROME's (`beliefs.rome.optimise_delta`: the new object's NLL in sampled contexts, the essence
KL, the retention term on the subject's other relations, the norm clamp). Then, layer by
layer from the lowest, each MLP output matrix takes its share of what is still missing:

    R = (Z - Z_now) / (layers left)           Z_now: with the layers below already edited
    K = the facts' keys at this layer
    dW = (lambda C + K K^T)^-1 K R^T          (key -> value, `[d_mlp, d_model]`)

with `C = E[k k^T]` the layer's key second moment over corpus text (the one ROME uses,
`beliefs.editing.key_covariance`) weighted by `lambda` (`mom2_weight`). MEMIT's GPT-J
setting, 15,000 (d_mlp 16,384), leaves nearly all of each target unwritten on the
`default` model (d_mlp 512: 96 % missing at layers 0-1, efficacy 0 on 30 facts); 100 leaves
13 % at layer 0 and efficacy falls to 0.73; at 1, one fact at one layer is ROME's edit
(efficacy 1.00, paraphrase 0.80, kept 0.48 on the same 30 facts, as ROME).

MEMIT's published `K` is one key per fact, its mean over the rewrite rows (each template after
each prefix). Here (`MemitConfig.keys`, default `rows+kept`) every row is a column of `K`
with its fact's own change as its column of `R`, each fact's rows weighted to sum to 1, and
the subject's other relations' prompts (those the retention term held while `delta` was
optimised) are rows too: the edit adds `delta` wherever the subject stands, which is what
its optimisation assumed. With a single row per fact the two are the same solve. A subject's
key at layer 0 varies with the text before it more than it differs between people who share a
name (the world's 120 people with a city have 39 first and 39 last names), so the mean key is
written and the rows are missed: on the shipped model, 120 random targets at layer 0 leave
67 % of each row's change unwritten with mean keys, 15 % with rows (`target_missing_rows`).

With `project` (AlphaEdit), the change is confined to the null space `P` of the corpus keys
(the eigen-directions of `C` below `null_threshold` of its mean eigenvalue) and to what the
keys of earlier edits (`previous`, their `K K^T` summed) do not read:

    dW = (P (K K^T + K_p K_p^T) + l2 I)^-1 P K R^T

so a later edit does not move what an earlier one wrote, nor what the corpus keys read.
Without the projection, `previous` joins MEMIT's own regulariser (`lambda C + K_p K_p^T`):
the earlier edits' keys are held at their values like the corpus keys.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from beliefs.editing import (
    WeightEdit,
    check_layer,
    context_prefixes,
    frozen,
    key_hook,
    rewrite_batch,
)
from beliefs.rome import RomeConfig, optimise_delta
from workbench.hooks import hook_name, stop_hooks

if TYPE_CHECKING:
    from workbench.models import Model


# Each fact's target: ROME's optimisation with the retention term on, over every training
# template of the fact and one sampled prefix. On the shipped `default` (30 facts, layer 0):
# ROME's published settings (one template, five prefixes, no retention) efficacy 1.00,
# paraphrase 0.80, kept 0.48; retention 1 alone 0.73-0.87 / 0.60-0.69 / 0.96-1.00 (stopped
# at a plateau); 400 steps 0.93 / 0.76 / 1.00; with all 13 templates 1.00 / 0.95 / 1.00
# (held-out paraphrases of the other facts kept 0.91; fluency +0.023 nats). Stopped at a
# plateau, training seed 2 stated 0.84 of 50 facts and kept 0.89; run to the end of its 400
# steps (or to `stop_nll`), 0.98 and 0.93.
TARGET = RomeConfig(n_prefixes=1, n_templates=0, retain_weight=1.0, weight_decay=0.05,
                    steps=400, plateau_steps=0)


KEYS = ("rows", "rows+kept", "mean")


@dataclass(frozen=True)
class MemitConfig:
    """MEMIT's settings.

    Args:
        z: how each fact's target is optimised at the last layer of the range (ROME's
            settings: steps, learning rate, essence KL, retention term, clamp).
        mom2_weight: `lambda`, the weight of the corpus keys' second moment against the
            edited keys (larger: smaller changes, edits spread less).
        keys: what the solve fits (module docstring): `rows+kept`, every rewrite row
            and each of the subject's kept prompts is a key that must give its fact's
            change, each fact weighing 1 in all; `rows`, the rewrite rows only; `mean`,
            MEMIT's published one key per fact, the mean over its rewrite rows.
        project: AlphaEdit's null-space projection (for sequential edits).
        null_threshold: eigen-directions of `C` whose eigenvalue is below this fraction of
            the mean eigenvalue form the null space.
        l2: AlphaEdit's ridge on the projected system.
    """

    z: RomeConfig = TARGET
    mom2_weight: float = 1.0
    keys: str = "rows+kept"
    project: bool = False
    null_threshold: float = 0.1
    l2: float = 1.0

    def __post_init__(self) -> None:
        for name in ("mom2_weight", "null_threshold", "l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"MemitConfig.{name}={getattr(self, name)}; pass >= 0")
        if self.keys not in KEYS:
            raise ValueError(f"MemitConfig.keys={self.keys!r}; pass one of {', '.join(KEYS)}")


@dataclass
class Request:
    """One fact to write: each of `prompts` (containing `subject`; the first is the edit
    prompt) continued by `target_ids`; `keep`: prompts about the subject the retention term
    holds."""

    prompts: list[str]
    subject: str
    target_ids: list[int]
    keep: list[str] = field(default_factory=list)


@dataclass
class LayerEdits:
    """Additive changes of several MLP output matrices (one `WeightEdit` per layer), applied
    and undone together like a `WeightEdit`. `layer` is the lowest edited layer (nothing
    below it changes)."""

    edits: list[WeightEdit]
    method: str = "memit"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> int:
        return min(e.layer for e in self.edits)

    @property
    def layers(self) -> list[int]:
        return [e.layer for e in self.edits]

    @contextlib.contextmanager
    def applied(self, model: Model) -> Iterator[Any]:
        with contextlib.ExitStack() as stack:
            for e in self.edits:
                stack.enter_context(e.applied(model))
            yield model

    def copy_applied(self, model: Model) -> Any:
        edited = copy.deepcopy(model)
        for e in self.edits:
            weight, delta = e._param_delta(edited)
            with torch.no_grad():
                weight.add_(delta)
        return edited

    def norm(self) -> float:
        return float(sum(e.delta.norm() ** 2 for e in self.edits) ** 0.5)

    def plus(self, other: LayerEdits) -> LayerEdits:
        """The sum of two multi-layer edits (sequential edits accumulate)."""
        by = {e.layer: e.delta.clone() for e in self.edits}
        for e in other.edits:
            by[e.layer] = by[e.layer] + e.delta if e.layer in by else e.delta.clone()
        return LayerEdits([WeightEdit(la, d, self.method) for la, d in sorted(by.items())],
                          self.method, dict(self.info))


def null_space(cov: Float[Tensor, "d d"], threshold: float) -> Float[Tensor, "d d"]:
    """The projection onto the eigen-directions of `cov` whose eigenvalue is below
    `threshold` times the mean eigenvalue (AlphaEdit's `P`)."""
    values, vectors = torch.linalg.eigh(cov.double())
    small = vectors[:, values < threshold * values.mean()]
    return (small @ small.T).float()


@dataclass
class States:
    """What the model computes at the requests' subjects, over every rewrite row (each
    template after each prefix, `editing.rewrite_batch`; a request's first row is its edit
    prompt): per layer the keys `[d_mlp, rows]`, the residual after the target layer
    `[d_model, rows]`, and which request each row belongs to."""

    keys: dict[int, Tensor]
    resid: Tensor
    owner: Tensor

    @property
    def first(self) -> Tensor:
        """The row of each request's edit prompt."""
        return torch.cat([torch.zeros(1, dtype=torch.long),
                          torch.nonzero(self.owner[1:] != self.owner[:-1])[:, 0] + 1])

    def weights(self) -> Tensor:
        """1 / (the rows of the row's request): each request weighs 1 in all."""
        return 1.0 / torch.bincount(self.owner)[self.owner].double()

    def mean_keys(self, layer: int) -> Tensor:
        """Per request its keys' mean (MEMIT's published key) `[d_mlp, n]`."""
        k = self.keys[layer].double()
        total = torch.zeros(k.shape[0], int(self.owner.max()) + 1, dtype=k.dtype)
        return total.index_add_(1, self.owner, k) * torch.bincount(self.owner).reciprocal()

    def solve_keys(self, layer: int, rows: bool) -> Tensor:
        """The columns of `K` the solve fits: with `rows`, every row's key weighted by the
        square root of `weights` (so `K K^T` weighs each request 1); else `mean_keys`."""
        if not rows:
            return self.mean_keys(layer)
        return self.keys[layer].double() * self.weights().sqrt()


@torch.no_grad()
def _states(model: Model, requests: list[Request], layers: list[int], z_layer: int,
            prefixes: list[str], kept: bool = False) -> States:
    """`States` of `requests` at `layers` and after block `z_layer`; with `kept`, each
    request's `keep` prompts follow its rewrite rows."""
    names = [key_hook(la) for la in layers] + [hook_name(z_layer, "hook_resid_post")]
    device = next(model.parameters()).device
    got: dict[str, Tensor] = {}
    # the run ends after block `z_layer`: nothing later (nor the unembedding) is read
    kwargs, stop = stop_hooks(model, names)
    hooks = [(n, lambda act, hook, n=n: got.__setitem__(n, act)) for n in names] + stop
    keys: dict[int, list[Tensor]] = {la: [] for la in layers}
    zs, owner = [], []
    for i, r in enumerate(requests):
        batches = [rewrite_batch(model, r.prompts, r.subject, r.target_ids, prefixes)]
        if kept and r.keep:
            batches.append(rewrite_batch(model, r.keep, r.subject, r.target_ids[:1], []))
        for batch in batches:
            model.run_with_hooks(batch.tokens.to(device), return_type=None, fwd_hooks=hooks,
                                 **kwargs)
            rows = torch.arange(len(batch.tokens))
            for la in layers:
                keys[la].append(got[key_hook(la)][rows, batch.subject_pos].float().cpu())
            zs.append(got[names[-1]][rows, batch.subject_pos].float().cpu())
            owner += [i] * len(rows)
    return States({la: torch.cat(k).T for la, k in keys.items()}, torch.cat(zs).T,
                  torch.tensor(owner))


def _system(states: States, layer: int, change: Tensor, first_change: Tensor, rows: bool
            ) -> tuple[Tensor, Tensor]:
    """The keys `K` and the residual changes `R` one layer writes (`K K^T` and `K R^T` are
    the normal equations' terms): with `rows`, every row of `states` with its request's
    change (`change`, per row), weighted so each request weighs 1; else MEMIT's mean key per
    request with the change at its edit prompt (`first_change`)."""
    if not rows:
        return states.mean_keys(layer), first_change.double()
    return states.solve_keys(layer, rows), change.double() * states.weights().sqrt()


def targets(model: Model, requests: list[Request], z_layer: int, cfg: MemitConfig,
            prefixes: list[str], progress: bool = False
            ) -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
    """Each request's target residual after block `z_layer` (`[d_model, n]`): the current one
    plus ROME's optimised delta there; the current one; each optimisation's record."""
    deltas, infos = [], []
    with frozen(model):
        for r in tqdm(requests, desc="memit targets", disable=not progress, leave=False):
            delta, _, info = optimise_delta(model, r.prompts, r.subject, r.target_ids,
                                            z_layer, cfg.z, prefixes, r.keep)
            deltas.append(delta)
            infos.append(info)
    now = _states(model, requests, [], z_layer, prefixes)
    start = now.resid[:, now.first]
    return start + torch.stack(deltas, 1), start, infos


def memit_edit(model: Model, requests: list[Request], layers: list[int],
               covs: dict[int, Tensor], cfg: MemitConfig | None = None,
               prefixes: list[str] | None = None, *, previous: dict[int, Tensor] | None = None,
               projections: dict[int, Tensor] | None = None, progress: bool = False,
               known: tuple[Tensor, Tensor, list[dict[str, Any]]] | None = None
               ) -> LayerEdits:
    """The MEMIT edit writing every request at once over `layers` (ascending; the target is
    set at the last). `covs[l]`: layer `l`'s key second moment. `previous[l]`: the sum of
    `K K^T` of the edits already made (AlphaEdit's cache), held by the projected system or,
    without `cfg.project`, by MEMIT's regulariser. With `cfg.project`, `projections[l]` is
    the null-space projection (computed from `covs` when not given).
    `known`: the requests' `targets` already computed on this model (batches that share
    facts share them). The model is not changed; apply the returned edit."""
    cfg = cfg or MemitConfig()
    if not requests:
        raise ValueError("no fact to edit; pass at least one request")
    layers = sorted(check_layer(model, la) for la in layers)
    last = model.cfg.n_layers - 1
    if not layers or (layers[-1] == last and last > 0):
        raise ValueError(f"layers {layers}: MEMIT needs one layer or more below the last "
                         f"({last}), whose MLP at the subject cannot reach a later token's "
                         "prediction")
    d_mlp = model.cfg.d_mlp
    for la in layers:
        if la not in covs or tuple(covs[la].shape) != (d_mlp, d_mlp):
            raise ValueError(f"no ({d_mlp}, {d_mlp}) key covariance for layer {la}; estimate "
                             f"it with key_covariance(model, corpus, {la})")
    if any(not r.target_ids for r in requests):
        raise ValueError("a request has no target tokens; pass the new object's token ids")
    if prefixes is None:
        prefixes = context_prefixes(model, cfg.z.n_prefixes, cfg.z.prefix_len, cfg.z.seed)
    z_layer = layers[-1]
    zs, start, infos = known or targets(model, requests, z_layer, cfg, prefixes, progress)
    done: list[WeightEdit] = []
    rows, kept = cfg.keys != "mean", cfg.keys == "rows+kept"
    with contextlib.ExitStack() as stack:
        for i, la in enumerate(layers):
            now = _states(model, requests, [la], z_layer, prefixes, kept)  # this layer's keys
            if i == 0:  # every row's residual before the edit, plus its request's delta
                want = now.resid + (zs - start)[:, now.owner]
            k, resid = _system(now, la, (want - now.resid) / (len(layers) - i),
                               (zs - now.resid[:, now.first]) / (len(layers) - i), rows)
            if cfg.project:
                p = (projections or {}).get(la)
                p = null_space(covs[la], cfg.null_threshold) if p is None else p
                p = p.double()
                prev = (previous or {}).get(la)
                a = k @ k.T + (prev.double() if prev is not None else 0.0)
                lhs = p @ a + cfg.l2 * torch.eye(d_mlp, dtype=torch.float64)
                upd = torch.linalg.solve(lhs, p @ k @ resid.T)
            else:  # MEMIT; earlier edits' keys (when given) held like the corpus keys
                prev = (previous or {}).get(la)
                lhs = cfg.mom2_weight * covs[la].double() + k @ k.T + (
                    prev.double() if prev is not None else 0.0)
                upd = torch.linalg.solve(lhs, k @ resid.T)
            edit = WeightEdit(la, upd.float(), "memit")
            done.append(edit)
            stack.enter_context(edit.applied(model))
        reached = _states(model, requests, [], z_layer, prefixes, kept).resid
    # the share of each target's change the edited weights fail to produce (edit prompts;
    # every rewrite row with its request's delta)
    size = (zs - start).norm(dim=0).clamp_min(1e-9)
    missing = (zs - reached[:, now.first]).norm(dim=0) / size
    missing_rows = (want - reached).norm(dim=0) / size[now.owner]
    info = {"layers": layers, "n_requests": len(requests), "project": cfg.project,
            "keys": cfg.keys, "z_layer": z_layer, "steps": [x["steps"] for x in infos],
            "final_nll": [x["final_nll"] for x in infos],
            "target_missing": float(missing.mean()),
            "target_missing_rows": float(missing_rows.mean()),
            "config": {k: v for k, v in asdict(cfg).items() if k != "z"}}
    return LayerEdits(done, "memit", info)


def key_products(model: Model, requests: list[Request], layers: list[int],
                 prefixes: list[str], keys: str = "rows+kept") -> dict[int, Tensor]:
    """`K K^T` per layer of the requests' keys (what AlphaEdit adds to its cache after an
    edit; which keys: `MemitConfig.keys`), read from the model as it is (the edit applied)."""
    states = _states(model, requests, layers, layers[-1], prefixes, keys == "rows+kept")
    out = {}
    for la in layers:
        k = states.solve_keys(la, keys != "mean")
        out[la] = (k @ k.T).float()
    return out
