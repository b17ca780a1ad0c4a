"""What a belief edit did, measured by re-running the edited model.

For an edit making `belief` state `new` (all comparisons among the relation's candidates):

- `efficacy`: on the edit prompt, log p(new) > log p(old);
- `paraphrase`: the same on the held-out paraphrases (share of them);
- `specificity`: the same relation of neighbouring subjects: share whose stated answer (top-1)
  is unchanged by the edit; `neighbourhood` is ROME's softer score, p(their object) > p(new);
- `ripple_twohop`: derived facts that should follow (the person's country after a city edit):
  share that state the new derived object, also split into `ripple_twohop_stated` (countries
  stated in training text, memorised directly) and `ripple_twohop_composed` (never stated:
  person -> city -> country); `ripple_kept`: the subject's other attributes: share whose
  stated answer is unchanged;
- `fluency_delta`: validation loss (nats per token, fixed windows) after minus before.

`EditEvaluator` reads the unedited answers once per belief and the validation loss once;
prompts of one relation are scored in one batch.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from beliefs.editing import Edit, WeightEdit
from beliefs.elicit import candidate_logprobs, stated
from beliefs.factbase import Belief, FactBase
from probe.stats import bootstrap_ci
from workbench.batches import eval_windows
from workbench.evaluate import token_nll
from workbench.hooks import resid_entering, resumes_exactly, run_from

if TYPE_CHECKING:
    from workbench.models import Model

METRICS = ("efficacy", "paraphrase", "specificity", "neighbourhood", "ripple_twohop",
           "ripple_twohop_stated", "ripple_twohop_composed", "ripple_kept", "fluency_delta")


@dataclass(frozen=True)
class EditEvalConfig:
    """How many neighbours to check, and how many validation windows (of at most
    `fluency_ctx` tokens: the model's context when shorter) measure fluency."""

    n_neighbours: int = 10
    fluency_windows: int = 16
    # the default model's context. Windows of GPT-2's 1,024 tokens made fluency most of a
    # belief run at that scale (16k tokens per edit, about a minute on two CPU cores) for a
    # before/after difference on the same windows, which 2k tokens already measure.
    fluency_ctx: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_neighbours < 0 or self.fluency_windows < 0 or self.fluency_ctx < 2:
            raise ValueError(f"EditEvalConfig n_neighbours={self.n_neighbours}, fluency_windows="
                             f"{self.fluency_windows}, fluency_ctx={self.fluency_ctx}; pass >= 0 "
                             "(fluency_ctx >= 2)")


LOSS_LOGIT_BYTES = 2**30  # logits of one forward pass of the fluency loss


def _beats(model: Model, prompts: tuple[str, ...] | list[str], candidates: tuple[str, ...],
           new: str, old: str) -> list[bool]:
    if not prompts:
        return []
    logp = candidate_logprobs(model, list(prompts), candidates)
    i_new, i_old = candidates.index(new), candidates.index(old)
    return (logp[:, i_new] > logp[:, i_old]).tolist()


class EditEvaluator:
    """Measures edits of one model against its unedited answers.

    Args:
        model: the unedited model (edits are applied inside `evaluate` and undone).
        base: the fact base beliefs come from.
        val_tokens: a token stream for the fluency windows (None: no fluency metric).
    """

    def __init__(self, model: Model, base: FactBase, val_tokens: np.ndarray | None = None,
                 cfg: EditEvalConfig | None = None) -> None:
        self.model, self.base, self.cfg = model, base, cfg or EditEvalConfig()
        self.windows = None
        if val_tokens is not None and self.cfg.fluency_windows:
            self.windows, _ = eval_windows(val_tokens, min(model.cfg.n_ctx, self.cfg.fluency_ctx),
                                           self.cfg.fluency_windows)
        self.loss_before = self._loss()
        self._before: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        # per edited layer: the windows' residual entering it, or None when resuming there
        # does not give the full run's logits on this model
        self._resid: dict[int, list[Tensor] | None] = {}

    @torch.no_grad()
    def _loss(self, layer: int | None = None) -> float | None:
        """Mean NLL of the fluency windows; with `layer` (the model edited at that layer's
        MLP only, so nothing below it changed), resumed from the residual entering it."""
        if self.windows is None:
            return None
        device = next(self.model.parameters()).device
        tokens = self.windows.to(device)
        # a few windows per pass: their logits stay under LOSS_LOGIT_BYTES (the 16 default
        # windows of GPT-2's 1024 tokens and 50257 words would hold 3.3 GB at once)
        rows = max(1, LOSS_LOGIT_BYTES // (4 * tokens.shape[1] * self.model.cfg.d_vocab))
        parts = [tokens[lo:lo + rows] for lo in range(0, len(tokens), rows)]
        resid = self._resumable(layer, parts) if layer else None
        if resid is None:
            nll = [token_nll(self.model(part), part).cpu() for part in parts]
        else:  # half of GPT-2 small's blocks at its middle layer
            nll = [token_nll(run_from(self.model, r, layer), part).cpu()
                   for r, part in zip(resid, parts, strict=True)]
        return float(np.nanmean(torch.cat(nll).numpy()))

    def _resumable(self, layer: int, parts: list[Tensor]) -> list[Tensor] | None:
        if layer not in self._resid:
            ok = resumes_exactly(self.model, parts[0][:1], layer)
            self._resid[layer] = ([resid_entering(self.model, p, layer) for p in parts]
                                  if ok else None)
        return self._resid[layer]

    def _probes(self, belief: Belief, new: str) -> dict[str, Any]:
        neighbours = self.base.neighbours(belief, self.cfg.n_neighbours, self.cfg.seed)
        return {"neighbours": neighbours, "others": self.base.other_relations(belief),
                "twohop": self.base.two_hop(belief, new)}

    def _answers(self, beliefs: list[Belief]) -> list[str]:
        """The stated answer of each belief on its first prompt (one batch per relation)."""
        out = [""] * len(beliefs)
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, b in enumerate(beliefs):
            groups[b.candidates].append(i)
        for candidates, idx in groups.items():
            answers = stated(self.model, [beliefs[i].prompts[0] for i in idx], candidates)
            for i, answer in zip(idx, answers, strict=True):
                out[i] = answer
        return out

    def _unedited(self, belief: Belief, nb: list[Belief], others: list[Belief]
                  ) -> tuple[list[str], list[str]]:
        """Neighbours' and other relations' unedited answers, read once per belief."""
        key = (belief.subject, belief.relation)
        if key not in self._before:
            self._before[key] = (self._answers(nb), self._answers(others))
        return self._before[key]

    def evaluate(self, belief: Belief, new: str, edit: Edit | None) -> dict[str, Any]:
        """Metrics of one edit (`edit=None` measures the unedited model: the baseline)."""
        probes = self._probes(belief, new)
        nb, others = probes["neighbours"], probes["others"]
        before_nb, before_others = self._unedited(belief, nb, others)
        twohop = probes["twohop"]
        stated_hop = [self.base.exposure_of(b.subject, b.relation).get("in_text")
                      for b, _ in twohop]
        model = self.model
        ctx = edit.applied(model) if edit is not None else contextlib.nullcontext()
        with ctx:
            efficacy = _beats(model, belief.prompts[:1], belief.candidates, new, belief.object)
            para = _beats(model, belief.paraphrases, belief.candidates, new, belief.object)
            after_nb, after_others = self._answers(nb), self._answers(others)
            soft = _neighbourhood(model, [n for n in nb if n.object != new], new)
            hop = [a == want for a, (_, want) in
                   zip(self._answers([b for b, _ in twohop]), twohop, strict=True)]
            # the unedited model's loss is the baseline's, already measured; a weight edit
            # of one MLP leaves the blocks below it as they were
            loss_after = (self.loss_before if edit is None else self._loss(
                edit.layer if isinstance(edit, WeightEdit) else None))
        return {
            "subject": belief.subject,
            "relation": belief.relation,
            "old": belief.object,
            "new": new,
            "efficacy": float(efficacy[0]),
            "paraphrase": float(np.mean(para)) if para else None,
            "specificity": _share(a == b for a, b in zip(before_nb, after_nb, strict=True)),
            "neighbourhood": _share(soft),
            "ripple_twohop": _share(hop),
            "ripple_twohop_stated": _share(h for h, s in zip(hop, stated_hop, strict=True) if s),
            "ripple_twohop_composed": _share(h for h, s in zip(hop, stated_hop, strict=True)
                                             if s is False),
            "ripple_kept": _share(a == b for a, b in zip(before_others, after_others,
                                                          strict=True)),
            "fluency_delta": (None if loss_after is None or self.loss_before is None
                              else loss_after - self.loss_before),
            "edit_norm": None if edit is None else edit.norm(),
            "edit": {} if edit is None else _plain(edit.info),
        }


def before_after(model: Model, base: FactBase, belief: Belief, edit: Edit,
                 n_neighbours: int = 5) -> list[dict[str, str]]:
    """What the model states before and after `edit` (applied to a copy: `model` is left as
    it is) on every prompt of `belief` (the first is the edit prompt), its paraphrases and
    `n_neighbours` neighbouring facts: rows of `kind`, `prompt`, `before`, `after`."""
    edited = edit.copy_applied(model)
    asked = ([("edit prompt" if i == 0 else "prompt", belief, p)
              for i, p in enumerate(belief.prompts)]
             + [("paraphrase", belief, p) for p in belief.paraphrases]
             + [("neighbour", n, n.prompts[0]) for n in base.neighbours(belief, n_neighbours)])
    return [{"kind": kind, "prompt": prompt,
             "before": stated(model, [prompt], b.candidates)[0],
             "after": stated(edited, [prompt], b.candidates)[0]}
            for kind, b, prompt in asked]


def _neighbourhood(model: Model, neighbours: list[Belief], new: str) -> list[bool]:
    """Per neighbour (one relation, so one batch): p(its own object) > p(new)."""
    if not neighbours:
        return []
    candidates = neighbours[0].candidates
    logp = candidate_logprobs(model, [n.prompts[0] for n in neighbours], candidates)
    own = torch.tensor([candidates.index(n.object) for n in neighbours])
    return (logp[torch.arange(len(neighbours)), own] > logp[:, candidates.index(new)]).tolist()


def _share(values: Any) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def _plain(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool, list))}


def aggregate(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Mean of each metric over edits, with a 95 % bootstrap interval over the edited facts
    (edits of one fact under several seeds are resampled together)."""
    out: dict[str, Any] = {"n": len(rows), "ci": {}}
    groups = np.array([f"{r['subject']}|{r['relation']}" for r in rows])
    for name in METRICS:
        keep = [i for i, r in enumerate(rows) if r.get(name) is not None]
        if not keep:
            out[name] = None
            continue
        values = np.array([rows[i][name] for i in keep], dtype=np.float64)
        out[name] = float(values.mean())
        lo, hi = bootstrap_ci(values, groups[keep], seed=seed)
        out["ci"][name] = [float(lo), float(hi)]
    out["ripple"] = {"twohop": out["ripple_twohop"], "kept": out["ripple_kept"],
                     "twohop_stated": out["ripple_twohop_stated"],
                     "twohop_composed": out["ripple_twohop_composed"]}
    return out
