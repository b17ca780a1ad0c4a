"""Steering: change a stated belief by adding a vector to the residual stream, no weight edit.

Activation addition (Turner et al. 2023) at one layer and one position: the residual stream
after block `layer` (`blocks.{layer}.hook_resid_post`, where ROME's MLP writes) at the last
token of the subject, wherever the subject occurs in the input. The vector is a difference of
means over the fact base's other subjects (the world's ground truth): the mean residual at
the subject's last token of subjects whose object is the new one, minus that of subjects
whose object is the old one, each read on their first prompt of the same relation. A
subject's representation is moved from "holds the old object" to "holds the new" along the
direction the model itself uses to tell them apart, scaled by `alpha`.

The layer and `alpha` are chosen once per run on held-out calibration facts (`calibrate`):
the pair of the grid that maximises firm efficacy (the new object leads by a nat or more) +
specificity + kept (the subject's other facts unchanged) there, the grid's top scale doubled
while that scores higher. The same edit metrics as the weight edits then apply
(`beliefs.metrics.EditEvaluator`): a `SteeringEdit` is applied and undone like a
`WeightEdit`. Because it acts only where the subject's tokens occur, its
specificity on other subjects is high by construction; its ripple (the country of an edited
city) and fluency are what the measurement shows.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from beliefs.factbase import Belief, FactBase
from circuits.tracing import find_subject
from workbench.hooks import hook_name
from workbench.prompts import encode, word_ids

if TYPE_CHECKING:
    from workbench.models import Model

ALPHAS = (0.5, 1.0, 2.0, 4.0, 8.0)
POSITIONS = ("after", "subject")
FIRM_MARGIN = 1.0  # nats by which the new object must lead for a calibration edit to count


@dataclass(frozen=True)
class SteerConfig:
    """Steering's settings.

    Args:
        position: `after` adds the vector at the subject's last token and every later
            position (the query's prediction among them, whatever the padding); `subject`
            at every token of the subject only.
        layers: the layers tried on the calibration facts (None: every layer); the run's
            edit layer is not imposed, since where a direction steers best is itself a
            finding (reported with every score tried).
        alphas: the scales tried on the calibration facts.
        n_calibration: held-out facts (not among those tested) that choose layer and scale.
        max_subjects: subjects averaged per side of the difference of means.
        firm_margin: nats by which the new object must lead on a calibration fact for the
            edit to count there (`calibration_scores`).
        extend: times a best scale at the top of `alphas` is doubled (`calibrate`).
    """

    position: str = "after"
    layers: tuple[int, ...] | None = None
    alphas: tuple[float, ...] = ALPHAS
    # 10 facts chose a scale that stated 0.46 of the tested facts on seed 2 of `default`
    n_calibration: int = 20
    max_subjects: int = 32
    firm_margin: float = FIRM_MARGIN
    extend: int = 3

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ValueError(f"SteerConfig.position={self.position!r}; choose one of "
                             f"{list(POSITIONS)}")
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError(f"SteerConfig.alphas={self.alphas}; pass positive scales")
        if self.n_calibration < 1 or self.max_subjects < 1:
            raise ValueError(f"SteerConfig.n_calibration={self.n_calibration}, max_subjects="
                             f"{self.max_subjects}; pass >= 1")
        if self.firm_margin < 0 or self.extend < 0:
            raise ValueError(f"SteerConfig.firm_margin={self.firm_margin}, extend="
                             f"{self.extend}; pass >= 0")


class HookedEdit:
    """An edit made of forward hooks, applied and undone like a `WeightEdit`: in a context
    (`applied`) or on a copy of the model (`copy_applied`). A subclass has `subject` and
    `position` (where the edit acts: `subject_positions`) and names the activation it
    changes (`hook_point`) and by how much (`delta`, of the activation's rows there)."""

    subject: str
    position: str

    @property
    def hook_point(self) -> str:
        raise NotImplementedError

    def delta(self, x: Tensor) -> Tensor:
        """What is added to the activation rows `x` (`[n, d]`) where the edit acts."""
        raise NotImplementedError

    def hooks(self, model: Model) -> list[tuple[str, Any]]:
        """The forward hooks: one reads the input tokens, one adds `delta` where the subject
        occurs."""
        patterns = subject_patterns(model, self.subject)
        state: dict[str, Tensor] = {}

        def read_tokens(tokens: Tensor, hook: Any) -> Tensor:
            state["tokens"] = tokens
            return tokens

        def edit(act: Tensor, hook: Any) -> Tensor:
            rows, cols = subject_positions(state["tokens"], patterns, self.position)
            if not rows:
                return act
            with torch.no_grad():
                delta = self.delta(act[rows, cols])
            act = act.clone()
            act[rows, cols] += delta.to(act.device, act.dtype)
            return act

        return [("embed.hook_in", read_tokens), (self.hook_point, edit)]

    @contextlib.contextmanager
    def applied(self, model: Model) -> Iterator[Any]:
        with model.hooks(fwd_hooks=self.hooks(model)):
            yield model

    def copy_applied(self, model: Model) -> Any:
        edited = copy.deepcopy(model)
        for name, fn in self.hooks(edited):
            edited.add_hook(name, fn)
        return edited


@dataclass
class SteeringEdit(HookedEdit):
    """Add `alpha * vector` to `blocks.{layer}.hook_resid_post` where `subject` occurs
    (`position`: `after` its last token, or on its tokens); `applied` and `copy_applied` as
    for a `WeightEdit`."""

    layer: int
    vector: Float[Tensor, " d_model"]
    subject: str
    alpha: float = 1.0
    position: str = "after"
    method: str = "steer"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def hook_point(self) -> str:
        return hook_name(self.layer, "hook_resid_post")

    def delta(self, x: Tensor) -> Tensor:
        return (self.alpha * self.vector).to(x.device)

    def norm(self) -> float:
        return float(self.alpha * self.vector.norm())


def subject_patterns(model: Model, subject: str) -> list[list[int]]:
    """The token ids `subject` may appear as in a prompt (as a word, as text)."""
    tok = model.tokenizer
    found = [word_ids(tok, subject), encode(tok, subject)]
    return [p for i, p in enumerate(found) if p and p not in found[:i]]


def subject_positions(tokens: Tensor, patterns: list[list[int]], position: str = "after"
                      ) -> tuple[list[int], list[int]]:
    """(rows, positions) where an edit acts: for `subject`, every token of every occurrence
    of any of `patterns`; for `last`, the last token of every occurrence; for `after`, the
    last token of a row's first occurrence and every later position."""
    hits: set[tuple[int, int]] = set()
    for r, seq in enumerate(tokens.tolist()):
        for pat in patterns:
            n = len(pat)
            starts = [i for i in range(len(seq) - n + 1) if seq[i : i + n] == pat]
            if not starts:
                continue
            if position == "after":
                hits.update((r, c) for c in range(starts[0] + n - 1, len(seq)))
            elif position == "last":
                hits.update((r, i + n - 1) for i in starts)
            else:
                hits.update((r, i + j) for i in starts for j in range(n))
    ordered = sorted(hits)
    return [r for r, _ in ordered], [c for _, c in ordered]


@torch.no_grad()
def subject_states(model: Model, belief: Belief, layers: Sequence[int],
                   position: str = "after") -> Float[Tensor, "layer d_model"]:
    """The residual after each block of `layers` (one pass) on the belief's first prompt
    where a steering vector would go: at its last token (`after`; where the object is
    predicted) or averaged over the subject's tokens (`subject`)."""
    tokens = model.to_tokens(belief.prompts[0])
    start, end = find_subject(model, belief.prompts[0], belief.subject)
    names = [hook_name(layer, "hook_resid_post") for layer in layers]
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(device), names_filter=lambda n: n in names)
    resid = torch.stack([cache[n][0] for n in names]).float().cpu()  # [layer, pos, d]
    return resid[:, -1] if position == "after" else resid[:, start:end].mean(1)


def steering_vectors(model: Model, base: FactBase, belief: Belief, new: str,
                     layers: Sequence[int], cfg: SteerConfig | None = None
                     ) -> tuple[dict[int, Tensor], dict[str, Any]]:
    """Per layer, the mean state of other subjects whose object is `new` minus that of those
    whose object is `belief.object` (the same relation), one pass per subject for all
    `layers`; zero vectors, with a note, when no other subject holds `new` or
    `belief.object`."""
    cfg = cfg or SteerConfig()
    sides: dict[str, list[str]] = {"new": [], "old": []}
    for (subject, relation), obj in sorted(base.facts.items()):
        if relation != belief.relation or subject == belief.subject:
            continue
        for side, want in (("new", new), ("old", belief.object)):
            if obj == want and len(sides[side]) < cfg.max_subjects:
                sides[side].append(subject)
    info: dict[str, Any] = {"n_new": len(sides["new"]), "n_old": len(sides["old"])}
    if not sides["new"] or not sides["old"]:
        info["note"] = "no other subject holds the new or the old object"
        return {layer: torch.zeros(model.cfg.d_model) for layer in layers}, info
    means = {side: torch.stack([subject_states(model, base.belief(s, belief.relation), layers,
                                               cfg.position) for s in subjects]).mean(0)
             for side, subjects in sides.items()}
    diff = means["new"] - means["old"]
    return {layer: diff[i] for i, layer in enumerate(layers)}, info


def steering_vector(model: Model, base: FactBase, belief: Belief, new: str, layer: int,
                    cfg: SteerConfig | None = None) -> tuple[Tensor, dict[str, Any]]:
    """`steering_vectors` at one layer."""
    vectors, info = steering_vectors(model, base, belief, new, [layer], cfg)
    return vectors[layer], info


def steer_edit(model: Model, base: FactBase, belief: Belief, new: str, layer: int,
               alpha: float, cfg: SteerConfig | None = None) -> SteeringEdit:
    """The steering edit making `model` state `new` for `belief` (not applied)."""
    cfg = cfg or SteerConfig()
    vector, info = steering_vector(model, base, belief, new, layer, cfg)
    return SteeringEdit(layer, vector, belief.subject, alpha, cfg.position, "steer",
                        info | {"alpha": alpha, "layer": layer, "position": cfg.position,
                                "vector_norm": float(vector.norm())})


Candidates = Callable[[Belief, str], Iterable[tuple[dict[str, Any], HookedEdit]]]
"""For a calibration fact and its new object, each setting tried and its (unapplied) edit."""


def calibration_scores(model: Model, base: FactBase, calibration: list[Belief],
                       candidates: Candidates, seed: int = 0,
                       firm_margin: float = FIRM_MARGIN) -> list[dict[str, Any]]:
    """Per setting that `candidates` yields (the same for every fact), efficacy, `firm`
    (the new object leads every other candidate by `firm_margin` nats or more), the mean
    `margin` (log p(new) minus the best other candidate's), specificity (3 neighbours each)
    and kept (the subject's other facts unchanged) over the `calibration` facts, the settings
    in their first-seen order. Kept counts because an edit acting wherever the subject occurs
    also reaches the subject's other questions; the margin because a setting that only just
    flips the calibration facts stops short on the tested ones (seed 2 of the `default`
    preset, chosen by efficacy on 10 facts: 0.46 on the 50 tested)."""
    from beliefs.elicit import stated
    from workbench.prompts import candidate_logprobs

    def answers(beliefs: list[Belief]) -> list[str]:
        return [stated(model, [x.prompts[0]], x.candidates)[0] for x in beliefs]

    tallies: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, list[bool]]]] = {}
    for b in calibration:
        new = base.new_object(b, seed)
        others = base.neighbours(b, 3, seed) + base.other_relations(b)
        before = answers(others)
        for settings, edit in candidates(b, new):
            _, tally = tallies.setdefault(tuple(settings.items()), (settings, {
                "efficacy": [], "firm": [], "margin": [], "specificity": [], "kept": []}))
            with edit.applied(model):
                logp = candidate_logprobs(model, [b.prompts[0]], b.candidates)[0]
                after = answers(others)
            i_new = b.candidates.index(new)
            lead = float(logp[i_new] - torch.cat([logp[:i_new], logp[i_new + 1:]]).max())
            tally["efficacy"].append(lead > 0)
            tally["firm"].append(lead >= firm_margin)
            tally["margin"].append(lead)
            for o, was, now in zip(others, before, after, strict=True):
                tally["kept" if o.subject == b.subject else "specificity"].append(was == now)
    return [settings | {k: _share(v) for k, v in tally.items()}
            for settings, tally in tallies.values()]


def calibration_total(score: dict[str, Any]) -> float:
    """What calibration maximises: firm efficacy (efficacy when not measured) + specificity
    + kept (a missing one counts 0)."""
    firm = score.get("firm", score.get("efficacy"))
    return (firm or 0.0) + sum(score.get(k) or 0.0 for k in ("specificity", "kept"))


def calibrate(model: Model, base: FactBase, calibration: list[Belief],
              cfg: SteerConfig | None = None, seed: int = 0) -> dict[str, Any]:
    """The layer and scale (of `cfg.layers` x `cfg.alphas`) maximising `calibration_total`
    on the `calibration` facts, the smallest scale and then the earliest layer on ties; a
    best scale at the top of the grid is doubled at its layer (up to `cfg.extend` times)
    while that scores higher, so calibration does not stop at the grid's edge. Returns the
    scores of every pair tried (`calibration_scores`)."""
    cfg = cfg or SteerConfig()
    layers = cfg.layers if cfg.layers is not None else tuple(range(model.cfg.n_layers))

    def grid(at: Sequence[int], alphas: Sequence[float]) -> Candidates:
        def candidates(b: Belief, new: str) -> Iterator[tuple[dict[str, Any], HookedEdit]]:
            vectors = steering_vectors(model, base, b, new, at, cfg)[0]
            for layer in at:
                for alpha in alphas:
                    yield ({"layer": layer, "alpha": alpha},
                           SteeringEdit(layer, vectors[layer], b.subject, alpha, cfg.position))
        return candidates

    def pick(scores: list[dict[str, Any]]) -> dict[str, Any]:
        return max(scores, key=lambda s: (calibration_total(s), -s["alpha"], -s["layer"]))

    scores = calibration_scores(model, base, calibration, grid(layers, cfg.alphas), seed,
                                cfg.firm_margin)
    best, top = pick(scores), max(cfg.alphas)
    for _ in range(cfg.extend):
        if best["alpha"] < top:
            break
        top *= 2
        scores += calibration_scores(model, base, calibration, grid([best["layer"]], [top]),
                                     seed, cfg.firm_margin)
        best = pick(scores)
    return {"layer": best["layer"], "alpha": best["alpha"], "position": cfg.position,
            "firm_margin": cfg.firm_margin, "tried": scores,
            "calibration": [f"{b.subject} / {b.relation}" for b in calibration]}


def _share(values: list[bool]) -> float | None:
    return sum(values) / len(values) if values else None
