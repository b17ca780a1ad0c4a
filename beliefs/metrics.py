"""What a belief edit did, measured by re-running the edited model.

For an edit making `belief` state `new` (all comparisons among the relation's candidates):

- `efficacy`: on the edit prompt, log p(new) > log p(old); `stated`: the new object is the
  top-1 there (efficacy's stricter form, which an old object fading does not satisfy);
- `paraphrase`: the same on the held-out paraphrases (share of them);
- `specificity`: the same relation of neighbouring subjects: share whose stated answer (top-1)
  is unchanged by the edit; `neighbourhood` is ROME's softer score, p(their object) > p(new);
- `ripple_twohop`: derived facts that should follow (the person's country after a city edit):
  share that state the new derived object, also split into `ripple_twohop_stated` (countries
  stated in training text, memorised directly) and `ripple_twohop_composed` (never stated:
  person -> city -> country); `portability`: the same among the derived facts the model
  answered right before the edit (EasyEdit's portability); `ripple_kept`: the subject's
  other attributes: share whose stated answer is unchanged (on their first prompt);
  `kept_paraphrase`: the same on their held-out paraphrases (prompts no edit method sees);
- `fluency_delta`: validation loss (nats per token, fixed windows) after minus before.

`EditEvaluator` reads the unedited answers once per (belief, new object) and the validation
loss once; every prompt an evaluation reads goes into one batched call
(`workbench.prompts.candidate_logprobs_many`: a few dozen short prompts cost about one
forward pass), and the fluency loss of an edit of one MLP resumes from its layer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from beliefs.editing import Edit, WeightEdit
from beliefs.elicit import stated
from beliefs.factbase import Belief, FactBase
from beliefs.memit import LayerEdits
from probe.stats import bootstrap_ci
from workbench.evaluate import token_nll
from workbench.hooks import (
    resid_entering,
    resumes_exactly,
    run_from,
    unembed_input,
    unembedded_nll,
    unembeds_exactly,
)
from workbench.prompts import candidate_logprobs_many
from workbench.training.batches import eval_windows

if TYPE_CHECKING:
    from workbench.models import Model

METRICS = ("efficacy", "stated", "paraphrase", "specificity", "neighbourhood", "ripple_twohop",
           "ripple_twohop_stated", "ripple_twohop_composed", "portability", "ripple_kept",
           "kept_paraphrase", "fluency_delta")
# EasyEdit's names for ours (Yao et al. 2023; Wang et al. 2024), so tables can be compared:
# locality there is the unchanged answer on unrelated prompts, our specificity
EASYEDIT = {"reliability": "efficacy", "generalization": "paraphrase",
            "locality": "specificity", "portability": "portability"}


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
LOSS_TOKENS = 4096  # tokens of one pass of the fluency loss when it holds no logits


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
        # the unedited answers per (subject, relation, new object)
        self._before: dict[tuple[str, str, str], dict[str, list[str]]] = {}
        # per edited layer: the windows' residual entering it, or None when resuming there
        # does not give the full run's logits on this model
        self._resid: dict[int, list[Tensor] | None] = {}

    @torch.no_grad()
    def _loss(self, layer: int | None = None) -> float | None:
        """Mean NLL of the fluency windows; with `layer` (the model edited at that layer's
        MLP only, so nothing below it changed), resumed from the residual entering it. The
        runs stop at the unembedding's input and unembed a few positions at a time when that
        gives the full run's logits (`workbench.hooks.unembedded_nll`)."""
        if self.windows is None:
            return None
        model = self.model
        device = next(model.parameters()).device
        tokens = self.windows.to(device)
        stopped = unembeds_exactly(model, tokens[:1])
        if stopped:  # no logits are held: LOSS_TOKENS per pass
            rows = max(1, LOSS_TOKENS // tokens.shape[1])
        else:  # full logits, a few windows per pass: under LOSS_LOGIT_BYTES (the 16 default
            # windows of GPT-2's 1024 tokens and 50257 words would hold 3.3 GB at once)
            rows = max(1, LOSS_LOGIT_BYTES // (4 * tokens.shape[1] * model.cfg.d_vocab))
        parts = [tokens[lo:lo + rows] for lo in range(0, len(tokens), rows)]
        resid = self._resumable(layer, parts) if layer else None
        nll = []
        for i, part in enumerate(parts):
            def run(hooks: list[tuple[str, Any]], i: int = i, part: Tensor = part) -> Any:
                if resid is None:
                    return model.run_with_hooks(part, fwd_hooks=hooks)
                # half of GPT-2 small's blocks at its middle layer
                return run_from(model, resid[i], layer, hooks)  # type: ignore[arg-type]
            if stopped:
                nll.append(unembedded_nll(model, unembed_input(run), part))
            else:
                nll.append(token_nll(run([]), part).cpu())
        return float(np.nanmean(torch.cat(nll).numpy()))

    def _resumable(self, layer: int, parts: list[Tensor]) -> list[Tensor] | None:
        if layer not in self._resid:
            ok = resumes_exactly(self.model, parts[0][:1], layer)
            self._resid[layer] = ([resid_entering(self.model, p, layer) for p in parts]
                                  if ok else None)
        return self._resid[layer]

    def _probes(self, belief: Belief, new: str, skip: frozenset[str] = frozenset()
                ) -> dict[str, Any]:
        neighbours = self.base.neighbours(belief, self.cfg.n_neighbours + len(skip),
                                          self.cfg.seed)
        neighbours = [n for n in neighbours if n.subject not in skip][:self.cfg.n_neighbours]
        others = self.base.other_relations(belief)
        return {"neighbours": neighbours, "others": others,
                "others_para": [replace(o, prompts=(p,)) for o in others
                                for p in o.paraphrases],
                "twohop": self.base.two_hop(belief, new)}

    def _ask(self, belief: Belief, sets: dict[str, list[Belief]]
             ) -> tuple[Tensor, dict[str, list[str]], dict[str, list[Tensor]]]:
        """Everything one evaluation reads, in one batched call: the candidates' log-probs on
        the belief's edit prompt and paraphrases `[1 + n_para, n_candidates]`, and for each
        set of beliefs its stated answers (first prompt) and their log-probs."""
        queries: list[tuple[list[str], tuple[str, ...]]] = [
            ([*belief.prompts[:1], *belief.paraphrases], belief.candidates)]
        layout: dict[str, list[tuple[tuple[str, ...], list[int]]]] = {}
        for name, beliefs in sets.items():
            groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
            for i, b in enumerate(beliefs):
                groups[b.candidates].append(i)
            layout[name] = list(groups.items())
            queries += [([beliefs[i].prompts[0] for i in idx], cands)
                        for cands, idx in layout[name]]
        logps = iter(candidate_logprobs_many(self.model, queries))
        own = next(logps)
        answers: dict[str, list[str]] = {}
        scores: dict[str, list[Tensor]] = {}
        for name, beliefs in sets.items():
            answers[name], scores[name] = [""] * len(beliefs), [torch.empty(0)] * len(beliefs)
            for cands, idx in layout[name]:
                logp = next(logps)
                for i, row in zip(idx, logp, strict=True):
                    answers[name][i], scores[name][i] = cands[int(row.argmax())], row
        return own, answers, scores

    def evaluate(self, belief: Belief, new: str, edit: Edit | None, *,
                 skip: frozenset[str] = frozenset(), loss_after: float | None = None
                 ) -> dict[str, Any]:
        """Metrics of one edit (`edit=None` measures the unedited model: the baseline).

        The unedited answers are read once per (belief, new object), with the very batch
        the edited model is then read with (so an unedited "edit" changes no answer, to the
        bit). `skip`: subjects not to use as neighbours (those an edit of many facts changed
        on purpose); `loss_after`: the edited model's fluency loss when already measured
        (one edit of many facts is measured once)."""
        probes = self._probes(belief, new, skip)
        twohop = probes["twohop"]
        sets = {"nb": probes["neighbours"], "others": probes["others"],
                "others_para": probes["others_para"], "hop": [b for b, _ in twohop]}
        stated_hop = [self.base.exposure_of(b.subject, b.relation).get("in_text")
                      for b, _ in twohop]
        key = (belief.subject, belief.relation, new, skip)
        unedited = None
        if edit is None or key not in self._before:
            unedited = self._ask(belief, sets)
            self._before.setdefault(key, unedited[1])
        before = self._before[key]
        if edit is None:  # the baseline: its loss is `loss_before`, already measured
            own, after, scores = unedited  # type: ignore[misc]
            loss_after = self.loss_before
        else:
            with edit.applied(self.model):
                own, after, scores = self._ask(belief, sets)
                if loss_after is None:
                    loss_after = self.loss(edit)
        i_new, i_old = belief.candidates.index(new), belief.candidates.index(belief.object)
        beats = (own[:, i_new] > own[:, i_old]).tolist()
        # ROME's neighbourhood score: p(their own object) > p(new), neighbours whose object
        # is not `new`
        soft = [bool(row[b.candidates.index(b.object)] > row[b.candidates.index(new)])
                for b, row in zip(sets["nb"], scores["nb"], strict=True) if b.object != new]
        hop = [a == want for a, (_, want) in zip(after["hop"], twohop, strict=True)]
        known = [h for h, was, (b, _) in zip(hop, before["hop"], twohop, strict=True)
                 if was == b.object]
        return {
            "subject": belief.subject,
            "relation": belief.relation,
            "old": belief.object,
            "new": new,
            "efficacy": float(beats[0]),
            "stated": float(int(own[0].argmax()) == i_new),
            "paraphrase": float(np.mean(beats[1:])) if len(beats) > 1 else None,
            "specificity": _share(a == b for a, b in zip(before["nb"], after["nb"],
                                                          strict=True)),
            "neighbourhood": _share(soft),
            "ripple_twohop": _share(hop),
            "ripple_twohop_stated": _share(h for h, s in zip(hop, stated_hop, strict=True) if s),
            "ripple_twohop_composed": _share(h for h, s in zip(hop, stated_hop, strict=True)
                                             if s is False),
            "portability": _share(known),
            "ripple_kept": _share(a == b for a, b in zip(before["others"], after["others"],
                                                          strict=True)),
            "kept_paraphrase": _share(a == b for a, b in zip(
                before["others_para"], after["others_para"], strict=True)),
            "fluency_delta": (None if loss_after is None or self.loss_before is None
                              else loss_after - self.loss_before),
            "edit_norm": None if edit is None else edit.norm(),
            "edit": {} if edit is None else _plain(edit.info),
        }

    def loss(self, edit: Edit) -> float | None:
        """The fluency loss of the model as it is, `edit` applied to it (call it inside
        `edit.applied`). A weight edit leaves the blocks below its lowest layer as they were,
        so the windows resume there."""
        return self._loss(edit.layer if isinstance(edit, (WeightEdit, LayerEdits)) else None)


def before_after(model: Model, base: FactBase, belief: Belief, edit: Edit,
                 n_neighbours: int = 5) -> list[dict[str, str]]:
    """What the model states before and after `edit` (applied to a copy: `model` is left as
    it is) on every prompt of `belief` (the first is the edit prompt), its paraphrases,
    `n_neighbours` neighbouring facts and the subject's other facts (`other fact`): rows of
    `kind`, `prompt`, `before`, `after`."""
    edited = edit.copy_applied(model)
    asked = ([("edit prompt" if i == 0 else "prompt", belief, p)
              for i, p in enumerate(belief.prompts)]
             + [("paraphrase", belief, p) for p in belief.paraphrases]
             + [("neighbour", n, n.prompts[0]) for n in base.neighbours(belief, n_neighbours)]
             + [("other fact", o, o.prompts[0]) for o in base.other_relations(belief)])
    return [{"kind": kind, "prompt": prompt,
             "before": stated(model, [prompt], b.candidates)[0],
             "after": stated(edited, [prompt], b.candidates)[0]}
            for kind, b, prompt in asked]


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
    out["easyedit"] = {name: out[ours] for name, ours in EASYEDIT.items()}
    return out
