"""Biography templates: FRAME x RELATION PHRASE, with a fixed held-out subset.

A template renders one fact, e.g. frame "it is known that {S} {R} {O} ." with the city phrase
"resides in" gives "it is known that anna berg resides in velmora .". For each direct
relation, 5 of the 18 (frame, phrase) combinations (28%) are held out of every corpus split
and used only as evaluation queries. The plain frame is never held out (its text is a
substring of the other frames'), every other frame holds out exactly one phrase, and every
phrase keeps at least four training frames, so each held-out combination is a paraphrase
built from parts the model has seen. The derived relation `country` follows the city's rule
(its phrases extend the city's): its training templates state the country of the people whose
country is stated; for the others every template is a two-hop query.

>>> [t.id for t in heldout_templates("city")][:2]
['city.known.2', 'city.say.1']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.world.facts import RELATIONS, World
from workbench.world.labels import Row


@dataclass(frozen=True)
class Frame:
    name: str
    text: str  # slots: {S} full name, {F} first name, {R} relation phrase, {O} object


FRAMES: tuple[Frame, ...] = (
    Frame("plain", "{S} {R} {O} ."),
    Frame("known", "it is known that {S} {R} {O} ."),
    Frame("say", "people say that {S} {R} {O} ."),
    Frame("asfor", "as for {S} , {F} {R} {O} ."),
    Frame("accounts", "{S} , by all accounts , {R} {O} ."),
    Frame("didyou", "did you know ? {S} {R} {O} ."),
)

RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "city": ("lives in", "resides in", "has a home in"),
    "job": ("works as a", "is employed as a", "earns a living as a"),
    "pet": ("owns a", "keeps a", "has a pet"),
    "food": ("likes to eat", "loves to eat", "enjoys"),
    "country": (
        "lives in the country of",
        "resides in the land of",
        "has a home in the country of",
    ),
}

# Parts of speech of the frame and phrase words ("that" here is a complementizer; in grammar
# sentences it is the relative pronoun, tagged PRON).
TEMPLATE_POS: dict[str, str] = {
    "it": "PRON", "is": "AUX", "known": "VERB", "that": "SCONJ", "people": "NOUN",
    "say": "VERB", "as": "PREP", "for": "PREP", ",": "PUNCT", "by": "PREP", "all": "DET",
    "accounts": "NOUN", "did": "AUX", "you": "PRON", "know": "VERB", "?": "PUNCT",
    ".": "PUNCT", "lives": "VERB", "in": "PREP", "resides": "VERB", "has": "VERB", "a": "DET",
    "home": "NOUN", "works": "VERB", "employed": "VERB", "earns": "VERB", "living": "NOUN",
    "owns": "VERB", "keeps": "VERB", "pet": "NOUN", "likes": "VERB", "to": "PART",
    "eat": "VERB", "loves": "VERB", "enjoys": "VERB", "the": "DET", "country": "NOUN",
    "of": "PREP", "land": "NOUN",
}  # fmt: skip

# Objects that are proper names (cities, countries); the others are common nouns.
_PROPER_OBJECTS = ("city", "country")
_OBJECT_SLOT = "{O}"


def is_heldout(frame_index: int, phrase_index: int, relation: str) -> bool:
    """The fixed held-out rule (see the module docstring)."""
    # a country phrase extends the city phrase ("lives in" -> "lives in the country of"):
    # it follows the city's rule, so a held-out city query is in no country sentence either
    r = RELATIONS.index("city" if relation == "country" else relation)
    return frame_index != 0 and (frame_index + phrase_index + r) % 3 == 0


@dataclass(frozen=True)
class Template:
    relation: str
    frame: Frame
    phrase_index: int
    heldout: bool

    @property
    def id(self) -> str:
        return f"{self.relation}.{self.frame.name}.{self.phrase_index}"

    @property
    def phrase(self) -> str:
        return RELATION_PHRASES[self.relation][self.phrase_index]

    def render(self, first: str, last: str, person: int, obj: str) -> list[Row]:
        """The fact sentence as labelled rows (object included)."""
        rows: list[Row] = []
        obj_pos = "PROPN" if self.relation in _PROPER_OBJECTS else "NOUN"
        for slot in self.frame.text.split():
            if slot == "{S}":
                rows += [Row(first, "PROPN", person=person), Row(last, "PROPN", person=person)]
            elif slot == "{F}":
                rows.append(Row(first, "PROPN", person=person))
            elif slot == "{R}":
                rows += [Row(w, TEMPLATE_POS[w]) for w in self.phrase.split()]
            elif slot == "{O}":
                rows.append(Row(obj, obj_pos))
            else:
                rows.append(Row(slot, TEMPLATE_POS[slot]))
        return rows

    def text(self, first: str, last: str, obj: str) -> str:
        return " ".join(r.word for r in self.render(first, last, -1, obj))

    def prefix(self, first: str, last: str) -> str:
        """Text up to, not including, the object."""
        words = [r.word for r in self.render(first, last, -1, _OBJECT_SLOT)]
        return " ".join(words[: words.index(_OBJECT_SLOT)])


def _make(relation: str) -> tuple[Template, ...]:
    return tuple(
        Template(relation, frame, p, is_heldout(f, p, relation))
        for f, frame in enumerate(FRAMES)
        for p in range(len(RELATION_PHRASES[relation]))
    )


TEMPLATES: dict[str, tuple[Template, ...]] = {rel: _make(rel) for rel in RELATIONS}


def _check(relation: str) -> None:
    if relation not in TEMPLATES:
        raise ValueError(f"unknown relation {relation!r}; use one of {list(TEMPLATES)}")


def all_templates(relation: str) -> list[Template]:
    _check(relation)
    return list(TEMPLATES[relation])


def train_templates(relation: str) -> list[Template]:
    """Templates that appear in corpus text."""
    _check(relation)
    return [t for t in TEMPLATES[relation] if not t.heldout]


def heldout_templates(relation: str) -> list[Template]:
    """Templates that appear only in evaluation queries."""
    _check(relation)
    return [t for t in TEMPLATES[relation] if t.heldout]


def template_words() -> list[str]:
    """Every fixed word a template can emit (names and objects excluded)."""
    words = [w for f in FRAMES for w in f.text.split() if not w.startswith("{")]
    words += [w for ps in RELATION_PHRASES.values() for p in ps for w in p.split()]
    return list(dict.fromkeys(words))


def fact_query(world: World, person: int, template: Template) -> dict[str, Any]:
    """An evaluation item: query prefix, answer, candidate answers and provenance.

    >>> from workbench.world.facts import WorldConfig, build_world
    >>> w = build_world(WorldConfig(seed=0, n_people=2))
    >>> q = fact_query(w, 0, all_templates("city")[1])
    >>> q["prefix"].split()[-2:], q["answer"] in q["candidates"]
    (['resides', 'in'], True)
    """
    p = world.people[person]
    return {
        "prefix": template.prefix(p.first, p.last),
        "answer": world.attribute(person, template.relation),
        "candidates": world.objects(template.relation),
        "subject": p.name,
        "person": person,
        "relation": template.relation,
        "template": template.id,
        "heldout": template.heldout,
    }
