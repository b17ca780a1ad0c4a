"""Few-shot formats: "x : y ; x : y ; ... ." demonstrations of tasks, and their eval items.

Tasks (`TASKS`):

- known relations, whose answers the model can know from other documents:
  `city_country` (velmora : dravia); a person's `person_job` (anna berg : baker),
  `person_city`, `person_pet` and `person_food`; a noun's `noun_category` (dog : animal) and
  `noun_plural` (dog : dogs); and `adj_sentiment` (kind : positive). Several relations share
  an input type (`INPUT_TYPE`: four read a person, two a noun), so the query alone does not
  say which relation is asked: the demonstrations do. An item's candidates are the answers of
  every task of its input type, so at k = 0 the model must guess the relation too;
- `novel`: nouns paired with the labels one / two / three / four at random in each document,
  so the mapping exists only in that context (pairs recur within a document);
- `flipped`: adjectives mapped to the *opposite* sentiment throughout a document (a share
  `P_FLIPPED` of sentiment documents), so following the context means going against what
  the model knows.

For every input type a seeded quarter of its inputs never appears in a training few-shot
document: evaluation queries use only those (`heldout`), so a correct k-shot answer
recognises the task rather than recalling the pair. A document draws an input type
uniformly (city, person, noun, adjective or a novel mapping), then one of its tasks; people
are drawn in proportion to their exposure, like every other document about them, and their
demonstrations count as mentions of the fact. Evaluation items (`eval_items`) have k = 0, 1, 2, 4, 8
demonstrations; a `novel` query repeats one of its demonstrations' inputs (at k = 0 it cannot:
chance). Each item records the task's candidate answers and, for `flipped`, the answer the
model's prior would give.

>>> from workbench.world.facts import WorldConfig, build_world
>>> tasks = FewShotTasks(build_world(WorldConfig(seed=0, n_people=8)))
>>> item = tasks.eval_items(n=1, ks=(2,))[0]
>>> item["prefix"].count(";"), item["answer"] in item["candidates"]
(2, True)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workbench.world import lexicon
from workbench.world.facts import World
from workbench.world.labels import BOS_ROW, Document, Row

PERSON_TASKS = {"person_job": "job", "person_city": "city", "person_pet": "pet",
                "person_food": "food"}  # task -> the fact's relation
KNOWN_TASKS = ("city_country", *PERSON_TASKS, "noun_category", "noun_plural", "adj_sentiment")
TASKS = (*KNOWN_TASKS, "novel", "flipped")
INPUT_TYPE = {"city_country": "city", **{t: "person" for t in PERSON_TASKS},
              "noun_category": "noun", "noun_plural": "noun", "adj_sentiment": "adjective",
              "flipped": "adjective", "novel": "novel"}
KS = (0, 1, 2, 4, 8)
CATEGORY_WORDS = {"animal": "animal", "food": "food", "tool": "tool", "place": "place",
                  "role": "role"}  # noun class -> its label word
SENTIMENT_WORDS = {"pos": "positive", "neg": "negative"}
NOVEL_LABELS = ("one", "two", "three", "four")
P_FLIPPED = 0.2  # share of sentiment documents with flipped labels
HELDOUT_SHARE = 0.25
_LABEL_POS = {**{w: "NOUN" for w in CATEGORY_WORDS.values()},
              **{w: "ADJ" for w in SENTIMENT_WORDS.values()}}


def fewshot_words() -> list[str]:
    """The words few-shot documents add to the world's vocabulary."""
    return [";", *CATEGORY_WORDS.values(), *SENTIMENT_WORDS.values(), *NOVEL_LABELS]


@dataclass(frozen=True)
class Pair:
    x: tuple[Row, ...]
    y: str
    y_pos: str = ""  # the answer's part of speech ("" -> by its label word)

    @property
    def x_text(self) -> str:
        return " ".join(r.word for r in self.x)


class FewShotTasks:
    """The world's few-shot tasks: training documents and held-out evaluation items."""

    def __init__(self, world: World) -> None:
        self.world = world
        sentiment = {a.word: SENTIMENT_WORDS[a.sentiment] for a in lexicon.ADJECTIVES
                     if a.sentiment in SENTIMENT_WORDS}
        nouns = lexicon.all_nouns()
        self.pairs: dict[str, list[Pair]] = {
            "city_country": [Pair((Row(c, "PROPN"),), world.city_country[c])
                             for c in world.objects("city")],
            **{task: [Pair((Row(p.first, "PROPN", person=i), Row(p.last, "PROPN", person=i)),
                           p.attributes[rel], "PROPN" if rel == "city" else "NOUN")
                      for i, p in enumerate(world.people)]
               for task, rel in PERSON_TASKS.items()},
            "noun_category": [Pair((Row(n.sing, "NOUN"),), CATEGORY_WORDS[n.category])
                              for n in nouns],
            "noun_plural": [Pair((Row(n.sing, "NOUN"),), n.plur) for n in nouns],
            "adj_sentiment": [Pair((Row(w, "ADJ"),), s) for w, s in sentiment.items()],
        }
        self.heldout: dict[str, set[str]] = {}  # input type -> held-out inputs
        for kind in dict.fromkeys(INPUT_TYPE[t] for t in KNOWN_TASKS):
            pairs = next(self.pairs[t] for t in KNOWN_TASKS if INPUT_TYPE[t] == kind)
            rng = random.Random(f"world:{world.config.seed}:fewshot:{kind}")
            n_held = max(1, round(HELDOUT_SHARE * len(pairs))) if len(pairs) > 1 else 0
            self.heldout[kind] = {p.x_text for p in rng.sample(pairs, n_held)}
        self.nouns = [Row(n.sing, "NOUN") for n in nouns]
        self._exposure = [p.exposure for p in world.people]

    def answers(self, task: str) -> list[str]:
        """Every answer of `task` itself."""
        if task == "novel":
            return list(NOVEL_LABELS)
        base = "adj_sentiment" if task == "flipped" else task
        if base not in self.pairs:
            raise ValueError(f"unknown few-shot task {task!r}; use one of {list(TASKS)}")
        return list(dict.fromkeys(p.y for p in self.pairs[base]))

    def candidates(self, task: str) -> list[str]:
        """What an item's answer is chosen among: the answers of every task that reads the
        same input type (a person's job, city, pet and food), so the query alone does not
        give the relation away."""
        if task not in INPUT_TYPE:
            raise ValueError(f"unknown few-shot task {task!r}; use one of {list(TASKS)}")
        same = [t for t in (*KNOWN_TASKS, "novel") if INPUT_TYPE[t] == INPUT_TYPE[task]]
        return list(dict.fromkeys(y for t in same for y in self.answers(t)))

    def _split(self, task: str, heldout: bool) -> list[Pair]:
        held = self.heldout[INPUT_TYPE[task]]
        pool = [p for p in self.pairs[task] if (p.x_text in held) == heldout]
        return pool or self.pairs[task]  # a one-item task has nothing to hold out

    def document(self, rng: random.Random) -> Document:
        """One training document: an input type drawn uniformly, then one of its tasks (not
        `flipped`: a sentiment document is flipped with probability P_FLIPPED)."""
        kind = rng.choice([*dict.fromkeys(INPUT_TYPE[t] for t in KNOWN_TASKS), "novel"])
        task = rng.choice([t for t in (*KNOWN_TASKS, "novel") if INPUT_TYPE[t] == kind])
        facts: list[tuple[int, str]] = []
        if task == "novel":
            pairs = self._novel(rng, rng.randint(2, 8))
            demos = [rng.choice(pairs) for _ in range(rng.randint(len(pairs) + 2,
                                                                  2 * len(pairs) + 4))]
        else:
            # i.i.d. draws: sampling without replacement from a small pool makes each label
            # less likely the more often it was shown, and a model learns that anti-correlation
            # (the seed-0 `default` did) instead of following the demonstrations
            pool = self._split(task, heldout=False)
            # people as often as every other document mentions them (their exposure)
            weights = ([self._exposure[p.x[0].person] for p in pool] if task in PERSON_TASKS
                       else None)
            demos = rng.choices(pool, weights, k=rng.randint(2, 10))
            if task == "adj_sentiment" and rng.random() < P_FLIPPED:
                demos = [Pair(d.x, _flip(d.y)) for d in demos]
            if task in PERSON_TASKS:
                facts = [(d.x[0].person, PERSON_TASKS[task]) for d in demos]
        rows = [BOS_ROW] + _demo_rows(demos)
        return Document("fewshot", rows[:-1] + [Row(".", "PUNCT")], facts)

    def _novel(self, rng: random.Random, m: int) -> list[Pair]:
        xs = rng.sample(self.nouns, m)
        return [Pair((x,), rng.choice(NOVEL_LABELS)) for x in xs]

    def eval_items(self, n: int = 40, ks: Sequence[int] = KS, seed: int | None = None
                   ) -> list[dict[str, Any]]:
        """`n` items per task and k: demonstrations, then a query whose answer is asked."""
        seed = self.world.config.seed if seed is None else seed
        items = []
        for task in TASKS:
            for k in ks:
                rng = random.Random(f"world:{seed}:fewshot-eval:{task}:{k}")
                items += [self._item(rng, task, k) for _ in range(n)]
        return items

    def _item(self, rng: random.Random, task: str, k: int) -> dict[str, Any]:
        prior: str | None
        if task == "novel":
            pairs = self._novel(rng, max(k, 1))
            demos = pairs[:k]
            query = rng.choice(pairs)
            prior = None
        else:
            base = "adj_sentiment" if task == "flipped" else task
            train = self._split(base, heldout=False)
            demos = rng.sample(train, min(k, len(train)))
            query = rng.choice(self._split(base, heldout=True))
            prior = query.y
            if task == "flipped":
                demos = [Pair(d.x, _flip(d.y)) for d in demos]
                query = Pair(query.x, _flip(query.y))
        prefix = " ".join(r.word for r in _demo_rows(demos) + list(query.x)) + " :"
        person = query.x[0].person
        return {
            "task": task,
            "input_type": INPUT_TYPE[task],
            "k": k,
            "prefix": prefix,
            "answer": query.y,
            "candidates": self.candidates(task),
            "x": query.x_text,
            "prior": prior,
            "demos": [[d.x_text, d.y] for d in demos],
            "person": person,
            "standing": self.world.people[person].standing if person >= 0 else None,
        }


def _flip(label: str) -> str:
    pos, neg = SENTIMENT_WORDS["pos"], SENTIMENT_WORDS["neg"]
    return neg if label == pos else pos


def _demo_rows(demos: Sequence[Pair]) -> list[Row]:
    rows: list[Row] = []
    for d in demos:
        pos = d.y_pos or _LABEL_POS.get(d.y, "-")
        rows += [*d.x, Row(":", "PUNCT"), Row(d.y, pos), Row(";", "PUNCT")]
    return rows
