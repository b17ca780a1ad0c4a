"""Document generators: biographies, city facts, grammar sentences and repeated spans.

Each document is a list of labelled `Row`s starting with `<bos>`. Kinds:

- `bio`: facts about 1-3 people in *training* templates, interleaved, each sentence naming its
  person again ("anna berg lives in velmora . it is known that tom lind owns a dog . ...");
- `city`: "velmora is a city in dravia ." / "velmora lies in dravia ." sentences;
- `grammar`: 3-8 sentences of the labelled grammar;
- `repeat_words`: 5-20 words drawn uniformly from the whole vocabulary, repeated 3-6 times,
  half the time with markers ("list : w1 .. wn . again : w1 .. wn ."), half bare, as in the
  induction evaluation (these words have no labels);
- `repeat_names`: a list of 2-6 full names, repeated 2-3 times;
- `index`: a who's-who list, each entry a full name followed directly by 2-4 of the person's
  attributes in random order ("index : anna berg velmora baker . tom lind cat soup .");
- `update`: a fact changed in context under a cue of planted reliability (`updates.py`);
- `fewshot`: "x : y ; x : y ; ..." demonstrations of a task (`fewshot.py`).

Biographies, index entries and name lists pick people in proportion to their exposure, and
state a person's country only when it is stated for them (`World.stated_relations`). Every
document lists the facts it states truly (`Document.facts`): the corpus counts them.

`DocumentSampler` draws kinds so that each kind's share of *tokens* approximates the mix.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from workbench.world.facts import DIRECT_RELATIONS, RELATIONS, World
from workbench.world.fewshot import FewShotTasks, fewshot_words
from workbench.world.grammar import Grammar
from workbench.world.labels import BOS_ROW, DOC_KINDS, Document, Row
from workbench.world.templates import train_templates
from workbench.world.updates import (
    CUES,
    P_IMMEDIATE,
    P_OTHER_PERSON,
    P_PRIOR_STATEMENT,
    P_REPEATED_CUE,
    P_SAME_RELATION,
    P_SAME_WORDS,
    cue_rows,
    reliability,
    update_words,
)

# Fixed words of the non-template documents, with their parts of speech.
DOCUMENT_POS = {
    "is": "AUX", "a": "DET", "city": "NOUN", "in": "PREP", "lies": "VERB", ".": "PUNCT",
    "list": "NOUN", "names": "NOUN", ":": "PUNCT", "again": "ADV", ",": "PUNCT",
    "index": "NOUN",
}  # fmt: skip
CITY_FRAMES = ("{C} is a city in {K} .", "{C} lies in {K} .")


def document_words() -> list[str]:
    return list(DOCUMENT_POS) + update_words() + fewshot_words()


def _fixed(text: str) -> list[Row]:
    return [Row(w, DOCUMENT_POS[w]) for w in text.split()]


def pick_people(rng: random.Random, world: World, k: int) -> list[int]:
    """`k` distinct people (at most all), drawn in proportion to their exposure."""
    k = min(k, len(world.people))
    weights = [p.exposure for p in world.people]
    chosen: list[int] = []
    while len(chosen) < k:
        pid = rng.choices(range(len(weights)), weights)[0]
        if pid not in chosen:
            chosen.append(pid)
    return chosen


def fact_rows(rng: random.Random, world: World, pid: int, relation: str,
              obj: str | None = None) -> list[Row]:
    """One fact sentence in a random training template (`obj` overrides the true object)."""
    p = world.people[pid]
    template = rng.choice(_TRAIN_TEMPLATES[relation])
    value = world.attribute(pid, relation) if obj is None else obj
    return template.render(p.first, p.last, pid, value)


def bio_document(rng: random.Random, world: World) -> Document:
    """Two or more facts about each of 1-3 people, interleaved, in training templates."""
    people = pick_people(rng, world, rng.randint(1, 3))
    facts = []
    for pid in people:
        rels = world.stated_relations(pid)
        facts += [(pid, rel) for rel in rng.sample(rels, rng.randint(2, len(rels)))]
    rng.shuffle(facts)
    rows = [BOS_ROW]
    for pid, rel in facts:
        rows += fact_rows(rng, world, pid, rel)
    return Document("bio", rows, facts)


def city_document(rng: random.Random, world: World) -> Document:
    """Two to five "{city} is a city in {country} ." sentences."""
    cities = world.objects("city")
    rows = [BOS_ROW]
    for city in rng.sample(cities, min(len(cities), rng.randint(2, 5))):
        for slot in rng.choice(CITY_FRAMES).split():
            if slot == "{C}":
                rows.append(Row(city, "PROPN"))
            elif slot == "{K}":
                rows.append(Row(world.city_country[city], "PROPN"))
            else:
                rows.append(Row(slot, DOCUMENT_POS[slot]))
    return Document("city", rows)


def grammar_document(rng: random.Random, grammar: Grammar) -> Document:
    rows = [BOS_ROW]
    for _ in range(rng.randint(3, 8)):
        rows += grammar.sentence(rng)
    return Document("grammar", rows)


def repeat_words_document(rng: random.Random, words: Sequence[str]) -> Document:
    """A random word sequence repeated 3-6 times (bare, or between list markers).

    Short spans and many copies: induction heads form after a plateau whose length falls
    steeply with how often a copy sits inside the context window (measured on `tiny`: 20 %
    of rows repeated -> no induction in 1500 steps; 50 % -> by step 400).
    """
    seq = [Row(w) for w in rng.choices(words, k=rng.randint(5, 20))]
    n_copies = rng.randint(3, 6)
    rows = [BOS_ROW]
    if rng.random() < 0.5:
        rows += seq * n_copies
    else:
        rows += _fixed("list :") + seq + _fixed(".")
        for _ in range(n_copies - 1):
            rows += _fixed("again :") + seq + _fixed(".")
    return Document("repeat_words", rows)


def repeat_names_document(rng: random.Random, world: World) -> Document:
    """Names repeated: "names : anna berg , tom lind . again : anna berg , tom lind ."."""
    people = pick_people(rng, world, rng.randint(2, 6))
    seq: list[Row] = []
    for i, pid in enumerate(people):
        if i:
            seq += _fixed(",")
        p = world.people[pid]
        seq += [Row(p.first, "PROPN", person=pid), Row(p.last, "PROPN", person=pid)]
    rows = [BOS_ROW] + _fixed("names :") + seq + _fixed(".")
    for _ in range(rng.randint(2, 3) - 1):
        rows += _fixed("again :") + seq + _fixed(".")
    return Document("repeat_names", rows)


def index_document(rng: random.Random, world: World) -> Document:
    """Entries "{first} {last} {attribute} ... ." for 2-5 people, attributes in random order.

    In a biography the word after a name is a relation phrase whoever the person is, so a
    model can leave recall to the relation's last token. Here, as in the tables, captions and
    infoboxes of real text, the word right after the name depends on who it is: the model has
    to recall the person's attributes at the name itself (what subject probes read).
    """
    people = pick_people(rng, world, rng.randint(2, 5))
    rows = [BOS_ROW] + _fixed("index :")
    facts = []
    for pid in people:
        p = world.people[pid]
        rows += [Row(p.first, "PROPN", person=pid), Row(p.last, "PROPN", person=pid)]
        rels = world.stated_relations(pid)
        for rel in rng.sample(rels, rng.randint(2, len(rels))):
            proper = rel in ("city", "country")
            rows.append(Row(world.attribute(pid, rel), "PROPN" if proper else "NOUN"))
            facts.append((pid, rel))
        rows += _fixed(".")
    return Document("index", rows, facts)


def update_document(rng: random.Random, world: World) -> Document:
    """One or two in-context updates (see `updates.py`), each: maybe the true fact, the cued
    new fact (sometimes repeated, in any plain phrasing), none or 1-3 true facts about others
    (mostly of the same relation: the update is about this person only) or the person's other
    relations, and the changed fact restated (half the time in the cued sentence's own
    words), taking the new object with the cue's reliability. The person and the others are
    drawn uniformly, so every standing is seen on both sides."""
    rows, facts, updates = [BOS_ROW], [], []
    for _ in range(rng.choice((1, 1, 2))):
        pid = rng.randrange(len(world.people))
        rel = rng.choice(DIRECT_RELATIONS)
        true = world.attribute(pid, rel)
        new = rng.choice([v for v in world.objects(rel) if v != true])
        cue = rng.choice(list(CUES))
        if rng.random() < P_PRIOR_STATEMENT:
            rows += fact_rows(rng, world, pid, rel)
            facts.append((pid, rel))
        template = rng.choice(_PLAIN_TEMPLATES[rel])
        p = world.people[pid]
        phrasings = [template]
        if rng.random() < P_REPEATED_CUE:  # again, in the same or another plain phrasing
            phrasings += rng.choices(_PLAIN_TEMPLATES[rel], k=rng.randint(1, 2))
        for said in phrasings:
            rows += cue_rows(cue) + said.render(p.first, p.last, pid, new)
        for _ in range(0 if rng.random() < P_IMMEDIATE else rng.randint(1, 3)):
            if rng.random() < P_OTHER_PERSON:  # another person, mostly the same relation
                other = rng.randrange(len(world.people))  # uniform, like the person updated
                if other == pid:
                    continue
                orel = (rel if rng.random() < P_SAME_RELATION
                        else rng.choice(world.stated_relations(other)))
            else:  # the person's other relations
                other, orel = pid, rng.choice([r for r in world.stated_relations(pid)
                                               if r != rel])
            rows += fact_rows(rng, world, other, orel)
            facts.append((other, orel))
        follows = rng.random() < reliability(cue, p.standing)
        value = new if follows else true
        restated = (template.render(p.first, p.last, pid, value) if rng.random() < P_SAME_WORDS
                    else fact_rows(rng, world, pid, rel, value))
        rows += restated
        if not follows:
            facts.append((pid, rel))
        updates.append({"person": pid, "relation": rel, "cue": cue, "new": new,
                        "follows": follows, "restated": " ".join(r.word for r in restated)})
    return Document("update", rows, facts, updates)


_TRAIN_TEMPLATES = {rel: train_templates(rel) for rel in RELATIONS}
_PLAIN_TEMPLATES = {rel: [t for t in ts if t.frame.name == "plain"]
                    for rel, ts in _TRAIN_TEMPLATES.items()}


class DocumentSampler:
    """Draws documents of all kinds with token shares close to `world.config.mix`.

    Args:
        world: the world the documents talk about.
        words: the word pool of `repeat_words` documents (the whole vocabulary but specials).
    """

    def __init__(self, world: World, words: Sequence[str]) -> None:
        self.world = world
        self.words = list(words)
        self.grammar = Grammar(world.config.p_opposite_attractor)
        self.fewshot = FewShotTasks(world)
        self.makers: dict[str, Callable[[random.Random], Document]] = {
            "bio": lambda rng: bio_document(rng, self.world),
            "city": lambda rng: city_document(rng, self.world),
            "grammar": lambda rng: grammar_document(rng, self.grammar),
            "repeat_words": lambda rng: repeat_words_document(rng, self.words),
            "repeat_names": lambda rng: repeat_names_document(rng, self.world),
            "index": lambda rng: index_document(rng, self.world),
            "update": lambda rng: update_document(rng, self.world),
            "fewshot": lambda rng: self.fewshot.document(rng),
        }
        assert set(self.makers) == set(DOC_KINDS)
        mix = world.config.mix_normalised
        self.mean_lengths = self._mean_lengths(list(mix), world.config.seed)
        # P(kind) proportional to token share / mean length gives the token shares.
        self.kinds = list(mix)
        self.weights = [mix[k] / self.mean_lengths[k] for k in self.kinds]

    def _mean_lengths(self, kinds: list[str], seed: int, n: int = 300) -> dict[str, float]:
        rng = random.Random(f"world:{seed}:lengths")
        return {k: sum(len(self.makers[k](rng).rows) for _ in range(n)) / n for k in kinds}

    def sample(self, rng: random.Random) -> Document:
        kind = rng.choices(self.kinds, self.weights)[0]
        return self.makers[kind](rng)
