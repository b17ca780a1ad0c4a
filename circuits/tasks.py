"""Circuit-discovery tasks as data: clean and corrupted prompts of equal length, pair by pair,
and the metric that tells them apart.

A `Task` is what a user writes for their own model: token tensors `clean` and `corrupt`
(`[pair, pos]`, right-padded; the answer is read at `answer_pos`), and either a logit
difference (`good` minus `bad` token at `answer_pos`) or a copy loss (the mean log-probability
of the clean next tokens where `loss_mask` is set). The metric is higher on clean prompts;
circuit discovery asks which edges carry the difference.

The world's tasks (`TASKS`), built from its ground truth:

- `induction`: `[BOS] A A` vs `[BOS] B A` (random tokens; the first copy resampled); the
  metric is the log-probability of the second copy;
- `facts`: a person's city query vs the same template about another person with another
  city (names of equal length); logit of the first person's city minus the second's;
- `agreement`: a subject across a relative clause or prepositional phrase vs the same
  prefix with the subject's number flipped (and the relative verb that agrees with it);
  correct verb form minus wrong;
- `update`: "news : P lives in NEW ." then P's city query, vs the same news about another
  person; NEW minus P's city;
- `fewshot`: a novel mapping's demonstrations and query (the world's `novel` few-shot items)
  vs the same demonstrations with their labels rotated; answer minus the rotated label
  that now follows the query's input.

>>> import torch
>>> t = Task("toy", torch.tensor([[1, 2, 3]]), torch.tensor([[1, 4, 3]]),
...          answer_pos=torch.tensor([2]), good=torch.tensor([5]), bad=torch.tensor([6]))
>>> t.kind, t.n_pairs
('logit_diff', 1)
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.edges import Metric
from workbench.prompts import encode_prompt, prepended_bos, word_id
from workbench.world import lexicon

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus


@dataclass(frozen=True)
class Task:
    """Clean/corrupted prompt pairs and their metric (see the module doc)."""

    name: str
    clean: Int[Tensor, "pair pos"]
    corrupt: Int[Tensor, "pair pos"]
    answer_pos: Int[Tensor, " pair"] | None = None
    good: Int[Tensor, " pair"] | None = None
    bad: Int[Tensor, " pair"] | None = None
    loss_mask: Bool[Tensor, "pair pos"] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.clean.shape != self.corrupt.shape or self.clean.dim() != 2:
            raise ValueError(f"task {self.name!r}: clean {tuple(self.clean.shape)} and corrupt "
                             f"{tuple(self.corrupt.shape)} must both be [pair, pos]")
        if not len(self.clean):
            raise ValueError(f"task {self.name!r} has no pairs")
        diff = (self.good, self.bad, self.answer_pos)
        if all(x is not None for x in diff) == (self.loss_mask is not None) or (
                self.loss_mask is None and any(x is None for x in diff)):
            raise ValueError(f"task {self.name!r}: give answer_pos, good and bad (a logit "
                             "difference) or loss_mask (a copy loss), not both")

    @property
    def kind(self) -> str:
        return "copy_loss" if self.loss_mask is not None else "logit_diff"

    @property
    def n_pairs(self) -> int:
        return int(self.clean.shape[0])

    def subset(self, rows: slice | Tensor) -> Task:
        """The task on some of its pairs."""
        def pick(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[rows]
        return replace(self, clean=self.clean[rows], corrupt=self.corrupt[rows],
                       answer_pos=pick(self.answer_pos), good=pick(self.good),
                       bad=pick(self.bad), loss_mask=pick(self.loss_mask))

    @property
    def readout(self) -> Int[Tensor, "pair k"] | None:
        """The positions whose logits the metric reads, `k` per pair (None: a copy loss whose
        pairs count different numbers of positions, which reads every position)."""
        if self.loss_mask is None:
            assert self.answer_pos is not None
            return self.answer_pos[:, None]
        predicts = self.loss_mask[:, 1:]
        counts = predicts.sum(1)
        if not bool((counts == counts[0]).all()):
            return None
        return predicts.nonzero()[:, 1].view(self.n_pairs, -1)

    def metric(self, gathered: bool = False) -> Metric:
        """The metric of each pair from a run's logits (clean-shaped), or with `gathered`
        from its logits at the `readout` positions only (`[pair, k, vocab]`)."""
        if gathered and self.readout is not None:
            return self._gathered_metric(self.readout)
        if self.loss_mask is not None:
            mask = self.loss_mask[:, 1:].float()
            target = self.clean[:, 1:]

            def copy_logprob(logits: Float[Tensor, "b p v"]) -> Float[Tensor, " b"]:
                lp = logits[:, :-1].float().log_softmax(-1)
                got = lp.gather(-1, target.to(lp.device)[..., None])[..., 0]
                m = mask.to(lp.device)
                return (got * m).sum(-1) / m.sum(-1).clamp(min=1)
            return copy_logprob
        assert self.answer_pos is not None and self.good is not None and self.bad is not None
        pos, good, bad = self.answer_pos, self.good, self.bad

        def logit_diff(logits: Float[Tensor, "b p v"]) -> Float[Tensor, " b"]:
            rows = torch.arange(logits.shape[0], device=logits.device)
            at = logits[rows, pos.to(logits.device)].float()
            return at[rows, good.to(logits.device)] - at[rows, bad.to(logits.device)]
        return logit_diff


    def _gathered_metric(self, readout: Tensor) -> Metric:
        if self.loss_mask is not None:
            target = self.clean.gather(1, readout + 1)

            def copy_logprob(logits: Float[Tensor, "b k v"]) -> Float[Tensor, " b"]:
                lp = logits.float().log_softmax(-1)
                return lp.gather(-1, target.to(lp.device)[..., None])[..., 0].mean(-1)
            return copy_logprob
        assert self.good is not None and self.bad is not None
        good, bad = self.good, self.bad

        def logit_diff(logits: Float[Tensor, "b k v"]) -> Float[Tensor, " b"]:
            rows = torch.arange(logits.shape[0], device=logits.device)
            at = logits[:, 0].float()
            return at[rows, good.to(logits.device)] - at[rows, bad.to(logits.device)]
        return logit_diff


def _stack(rows: list[tuple[list[int], list[int], int, int]], name: str, description: str
           ) -> Task:
    """A logit-difference task from (clean ids, corrupt ids, good, bad) rows (right-padded;
    the answer is read at each clean prompt's last token)."""
    width = max(len(c) for c, _, _, _ in rows)
    clean = torch.zeros(len(rows), width, dtype=torch.long)  # causal: padding after the end
    corrupt = clean.clone()
    for i, (c, x, _, _) in enumerate(rows):
        clean[i, :len(c)] = torch.tensor(c)
        corrupt[i, :len(x)] = torch.tensor(x)
    return Task(name, clean, corrupt, answer_pos=torch.tensor([len(c) - 1 for c, *_ in rows]),
                good=torch.tensor([g for *_, g, _ in rows]),
                bad=torch.tensor([b for *_, b in rows]), description=description)


def _sample(rows: list[Any], n: int, seed: int, name: str) -> list[Any]:
    if not rows:
        raise ValueError(f"task {name!r}: no clean/corrupted pairs of equal length could be "
                         "built from this corpus for this model's tokenizer")
    rows = list(rows)
    random.Random(f"{name}:{seed}").shuffle(rows)
    return rows[:n]


def induction_task(model: Model, corpus: Corpus | None, n_pairs: int, seed: int) -> Task:
    """`[BOS] A A` vs `[BOS] B A`, `A`, `B` of 10 random tokens (non-special ids)."""
    from circuits.inputs import sample_ids

    span = 10
    ids = sample_ids(model)
    gen = torch.Generator().manual_seed(seed)
    a = ids[torch.randint(len(ids), (n_pairs, span), generator=gen)]
    b = ids[torch.randint(len(ids), (n_pairs, span), generator=gen)]
    bos = prepended_bos(model)
    head = torch.full((n_pairs, 1), bos, dtype=torch.long) if bos is not None else a[:, :0]
    clean, corrupt = torch.cat([head, a, a], 1), torch.cat([head, b, a], 1)
    mask = torch.zeros_like(clean, dtype=torch.bool)
    mask[:, head.shape[1] + span + 1:] = True  # the second copy, after its first token
    return Task("induction", clean, corrupt, loss_mask=mask,
                description="log-probability of a repeated span's second copy; corrupted: "
                            "its first copy resampled")


def facts_task(model: Model, corpus: Corpus | None, n_pairs: int, seed: int) -> Task:
    """A person's city query vs the same template about a person with another city."""
    items = [it for it in _corpus(corpus, "facts").eval_items("facts_train")
             if it["relation"] == "city"]
    groups: dict[tuple[str, int], list[tuple[list[int], int]]] = defaultdict(list)
    for it in items:
        ids = encode_prompt(model, it["prefix"])
        groups[(it["template"], len(ids))].append((ids, word_id(model.tokenizer, it["answer"])))
    rng = random.Random(f"facts-pairs:{seed}")
    rows = []
    for group in groups.values():
        for ids, good in group:
            others = [(x, bad) for x, bad in group if bad != good]
            if others:
                x, bad = rng.choice(others)
                rows.append((ids, x, good, bad))
    return _stack(_sample(rows, n_pairs, seed, "facts"), "facts",
                  "logit of a person's city minus another person's city; corrupted: the same "
                  "query about that other person")


def _other_number() -> dict[str, str]:
    out = {}
    for nouns in lexicon.NOUNS.values():
        for n in nouns:
            out[n.sing], out[n.plur] = n.plur, n.sing
    for v in lexicon.VERBS:
        out[v.sing], out[v.plur] = v.plur, v.sing
    return out


def agreement_task(model: Model, corpus: Corpus | None, n_pairs: int, seed: int) -> Task:
    """Agreement items vs the same prefix with the subject's number flipped."""
    flip = _other_number()
    rows = []
    for it in _corpus(corpus, "agreement").eval_items("agreement"):
        words = it["prefix"].split()
        flipped = list(words)
        flipped[1] = flip.get(words[1], words[1])
        if it.get("structure") == "subj_rel":
            flipped[3] = flip.get(words[3], words[3])
        ids, x = encode_prompt(model, it["prefix"]), encode_prompt(model, " ".join(flipped))
        good, bad = word_id(model.tokenizer, it["correct"]), word_id(model.tokenizer, it["wrong"])
        if len(ids) == len(x) and ids != x and good != bad:
            rows.append((ids, x, good, bad))
    return _stack(_sample(rows, n_pairs, seed, "agreement"), "agreement",
                  "logit of the verb form agreeing with the subject minus the other form; "
                  "corrupted: the subject's number flipped")


def update_task(model: Model, corpus: Corpus | None, n_pairs: int, seed: int) -> Task:
    """"news : P lives in NEW ." + P's query vs the same news about another person (the
    world's plain city templates: "P lives in", "P resides in", "P has a home in")."""
    items = [it for it in _corpus(corpus, "update").eval_items("facts_train")
             if it["relation"] == "city" and it["template"].startswith("city.plain.")]
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        groups[(it["template"], len(encode_prompt(model, it["prefix"])))].append(it)
    rng = random.Random(f"update-pairs:{seed}")
    rows = []
    for group in groups.values():
        for it in group:
            others = [o for o in group if o["subject"] != it["subject"]]
            if not others:
                continue
            other = rng.choice(others)
            new = rng.choice([c for c in it["candidates"] if c != it["answer"]])
            query = it["prefix"]
            ids = encode_prompt(model, f"news : {query} {new} . {query}")
            x = encode_prompt(model, f"news : {other['prefix']} {new} . {query}")
            good, bad = word_id(model.tokenizer, new), word_id(model.tokenizer, it["answer"])
            if len(ids) == len(x) and good != bad:
                rows.append((ids, x, good, bad))
    return _stack(_sample(rows, n_pairs, seed, "update"), "update",
                  "logit of the city a news item gives the person minus their own city; "
                  "corrupted: the news is about another person")


def fewshot_task(model: Model, corpus: Corpus | None, n_pairs: int, seed: int) -> Task:
    """Novel-mapping few-shot items vs their demonstrations' labels rotated (each input takes
    the next demonstration's label)."""
    items = [it for it in _corpus(corpus, "fewshot").eval_items("fewshot")
             if it["task"].startswith("novel") and it["k"] >= 2]
    rows = []
    for it in items:
        demos = [tuple(d) for d in it["demos"]]
        ys = [y for _, y in demos]
        answer_of = dict(demos)
        if len(set(ys)) != len(ys) or answer_of.get(it["x"]) != it["answer"]:
            continue  # labels must be distinct, and the query's input demonstrated
        if _few_text(demos, it["x"]) != it["prefix"]:
            continue
        rotated = [(x, ys[(i + 1) % len(ys)]) for i, (x, _) in enumerate(demos)]
        ids = encode_prompt(model, it["prefix"])
        x = encode_prompt(model, _few_text(rotated, it["x"]))
        good = word_id(model.tokenizer, it["answer"])
        bad = word_id(model.tokenizer, dict(rotated)[it["x"]])
        if len(ids) == len(x) and good != bad:
            rows.append((ids, x, good, bad))
    return _stack(_sample(rows, n_pairs, seed, "fewshot"), "fewshot",
                  "logit of the demonstrated mapping's answer minus the label it has after "
                  "rotating; corrupted: the demonstrations' labels rotated")


def _few_text(demos: Sequence[tuple[str, str]], query: str) -> str:
    """A few-shot prompt as the world writes it: `x : y ; x : y ; query :`."""
    return " ; ".join(f"{x} : {y}" for x, y in demos) + f" ; {query} :"


def _corpus(corpus: Corpus | None, task: str) -> Corpus:
    if corpus is None:
        raise ValueError(f"task {task!r} is built from a world corpus; pass --corpus (a "
                         "`workbench world build` directory)")
    return corpus


TaskBuilder = Callable[["Model", "Corpus | None", int, int], Task]
TASKS: dict[str, TaskBuilder] = {
    "induction": induction_task, "facts": facts_task, "agreement": agreement_task,
    "update": update_task, "fewshot": fewshot_task,
}


def build_task(name: str, model: Model, corpus: Corpus | None, n_pairs: int = 64,
               seed: int = 0) -> Task:
    """The world task `name` (`TASKS`) for `model`, with `n_pairs` pairs."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if n_pairs < 1:
        raise ValueError(f"n_pairs={n_pairs}; pass at least 1")
    return TASKS[name](model, corpus, n_pairs, seed)
