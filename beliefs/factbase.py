"""Beliefs: (subject, relation, object) facts with query templates and candidate answers.

A `FactBase` holds relations (query templates seen in training, held-out paraphrases, the
candidate objects) and facts. It is built from a world corpus' fact table
(`world_facts`) or from a real-fact list in `datasets/facts/` (`load_facts`), so the same
belief tests run on our models and on real ones.

Templates are query prefixes with slots `{S}` (the subject), `{F}` (its first word) and `{L}`
(the rest): `"it is known that {S} lives in"` -> `"it is known that anna berg lives in"`.

>>> from workbench.world.facts import WorldConfig, build_world
>>> base = world_facts(build_world(WorldConfig(seed=0, n_people=3)))
>>> b = base.belief("anna berg", "city") if "anna berg" in base.subjects else base.beliefs()[0]
>>> b.prompts[0].endswith(("in", "a", "pet", "eat", "enjoys")), b.object in b.candidates
(True, True)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.world.facts import DERIVED_RELATIONS, RELATIONS, World
from workbench.world.templates import all_templates

SCHEMA = "workbench.facts/1"
DEFAULT_FACTS = Path(__file__).resolve().parents[1] / "datasets" / "facts" / "real_facts.json"


@dataclass(frozen=True)
class Relation:
    """A relation's query templates and candidate answers.

    Args:
        name: relation name (`city`, `capital`, ...).
        templates: query prefixes that appear in training text (or, for real models, the
            plainest phrasings); the first one is the edit prompt.
        heldout: paraphrases never used to state or edit the fact (generalisation tests).
        candidates: every possible object; beliefs are read as top-1 among them.
        statement_end: text that closes a stated fact (`" ."` for the world's words).
        derived_from: for a two-hop relation, (the relation it goes through, object -> value),
            e.g. `country` = ("city", {city: country}).
    """

    name: str
    templates: tuple[str, ...]
    heldout: tuple[str, ...]
    candidates: tuple[str, ...]
    statement_end: str = " ."
    derived_from: tuple[str, dict[str, str]] | None = None

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError(f"relation {self.name!r} has no query templates; add at least one")
        if len(self.candidates) < 2:
            raise ValueError(
                f"relation {self.name!r} has {len(self.candidates)} candidate objects; a belief "
                "needs at least two to compare"
            )
        for t in self.templates + self.heldout:
            if "{S}" not in t and "{F}" not in t:
                raise ValueError(f"template {t!r} of {self.name!r} has no {{S}} or {{F}} slot")


def fill(template: str, subject: str) -> str:
    """Put `subject` into a template's slots (no format(): objects may contain braces)."""
    first, _, rest = subject.partition(" ")
    return template.replace("{S}", subject).replace("{F}", first).replace("{L}", rest)


@dataclass(frozen=True)
class Belief:
    """One fact as the tests ask it."""

    subject: str
    relation: str
    object: str
    prompts: tuple[str, ...]  # training-template queries; prompts[0] is the edit prompt
    paraphrases: tuple[str, ...]  # held-out queries
    candidates: tuple[str, ...]
    statement_end: str = " ."

    def statement(self, obj: str | None = None, template: int = 0) -> str:
        """The fact stated as text, e.g. "anna berg lives in velmora ." (optionally false)."""
        prompt = self.prompts[template % len(self.prompts)]
        return f"{prompt} {obj or self.object}{self.statement_end}"

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "relation": self.relation, "object": self.object,
                "prompts": list(self.prompts), "paraphrases": list(self.paraphrases)}


@dataclass
class FactBase:
    """Relations and (subject, relation) -> object facts, with derived two-hop relations.

    `exposure` holds, per (subject, relation), what the world planted about the fact:
    `exposure` (the person's weight), `standing` (exposure rank in [0, 1]), `bucket`
    (`low`/`mid`/`high`), `mentions` (times stated in training text) and `in_text` (False for
    a two-hop fact never stated). Empty for real facts.
    """

    relations: dict[str, Relation]
    facts: dict[tuple[str, str], str] = field(default_factory=dict)
    source: str = "world"
    exposure: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def exposure_of(self, subject: str, relation: str) -> dict[str, Any]:
        """What the world planted about (subject, relation); {} when unknown (real facts)."""
        return dict(self.exposure.get((subject, relation), {}))

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.facts))

    def relation(self, name: str) -> Relation:
        if name not in self.relations:
            raise ValueError(f"unknown relation {name!r}; use one of {sorted(self.relations)}")
        return self.relations[name]

    def object(self, subject: str, relation: str) -> str:
        rel = self.relation(relation)
        if rel.derived_from is not None:
            via, mapping = rel.derived_from
            return mapping[self.object(subject, via)]
        if (subject, relation) not in self.facts:
            raise ValueError(
                f"no fact ({subject!r}, {relation!r}); pick a subject from this fact base "
                f"(e.g. {self.subjects[:3]})"
            )
        return self.facts[(subject, relation)]

    def belief(self, subject: str, relation: str, obj: str | None = None) -> Belief:
        """The belief about (subject, relation); `obj` overrides the object (a new fact)."""
        rel = self.relation(relation)
        return Belief(
            subject=subject,
            relation=relation,
            object=obj if obj is not None else self.object(subject, relation),
            prompts=tuple(fill(t, subject) for t in rel.templates),
            paraphrases=tuple(fill(t, subject) for t in rel.heldout),
            candidates=rel.candidates,
            statement_end=rel.statement_end,
        )

    def direct_relations(self) -> list[str]:
        return [r for r, spec in self.relations.items() if spec.derived_from is None]

    def beliefs(self, relations: list[str] | None = None, n: int | None = None,
                seed: int = 0) -> list[Belief]:
        """`n` beliefs (all when None) spread over subjects and relations, in a seeded order."""
        relations = relations or self.direct_relations()
        for r in relations:
            self.relation(r)
        pairs = [(s, r) for (s, r) in self.facts if r in relations]
        if not pairs:
            raise ValueError(f"no facts for relations {relations}; use {self.direct_relations()}")
        random.Random(seed).shuffle(pairs)
        # one fact per subject first, so a small n covers many people
        seen: set[str] = set()
        first = [p for p in pairs if not (p[0] in seen or seen.add(p[0]))]
        rest = [p for p in pairs if p not in set(first)]
        ordered = first + rest
        return [self.belief(s, r) for s, r in ordered[: n or len(ordered)]]

    def new_object(self, belief: Belief, seed: int = 0) -> str:
        """A counterfactual object for `belief`: another candidate, seeded per fact."""
        others = [c for c in belief.candidates if c != belief.object]
        rng = random.Random(f"{seed}|{belief.subject}|{belief.relation}")
        return rng.choice(others)

    def neighbours(self, belief: Belief, k: int, seed: int = 0) -> list[Belief]:
        """Up to `k` beliefs of the same relation about other subjects (specificity)."""
        subjects = [s for (s, r) in self.facts if r == belief.relation and s != belief.subject]
        if self.relation(belief.relation).derived_from is not None:
            via = self.relation(belief.relation).derived_from[0]
            subjects = [s for (s, r) in self.facts if r == via and s != belief.subject]
        rng = random.Random(f"{seed}|nb|{belief.subject}|{belief.relation}")
        rng.shuffle(subjects)
        return [self.belief(s, belief.relation) for s in subjects[:k]]

    def other_relations(self, belief: Belief) -> list[Belief]:
        """The subject's other direct facts (they should not move when one is edited)."""
        return [self.belief(belief.subject, r) for r in self.direct_relations()
                if r != belief.relation and (belief.subject, r) in self.facts]

    def two_hop(self, belief: Belief, new_object: str) -> list[tuple[Belief, str]]:
        """Derived facts that should follow an edit: (belief, object expected after it), for
        those whose object the edit changes. Whether such a fact is itself stated in text
        (a stated country) or only composed: `exposure_of(subject, relation)["in_text"]`."""
        out = []
        for name, rel in self.relations.items():
            if rel.derived_from is not None and rel.derived_from[0] == belief.relation:
                mapping = rel.derived_from[1]
                # only when the derived object changes (a new city in the same country
                # cannot tell "followed" from "stayed")
                if new_object in mapping and mapping[new_object] != mapping.get(belief.object):
                    out.append((self.belief(belief.subject, name), mapping[new_object]))
        return out


def world_facts(world: World, table: list[dict[str, Any]] | None = None) -> FactBase:
    """The fact base of a synthetic world: its four direct relations plus `country`.

    `table` is the corpus' fact table (`world.json` "facts", with training mentions);
    without it, mentions are unknown and the rest comes from `world`."""
    relations: dict[str, Relation] = {}
    for name in RELATIONS:
        train, held = [], []
        for t in all_templates(name):
            (held if t.heldout else train).append(t.prefix("{F}", "{L}"))
        # the plain frame first: it is the edit prompt ("{S} lives in")
        train.sort(key=lambda p: not p.startswith("{F} {L}"))
        derived = (
            ("city", dict(world.city_country)) if name in DERIVED_RELATIONS else None
        )
        if not train:  # a world built before countries were stated: every one held out
            train, held = held[:1], held[1:]
        relations[name] = Relation(
            name=name,
            templates=tuple(p.replace("{F} {L}", "{S}") for p in train),
            heldout=tuple(p.replace("{F} {L}", "{S}") for p in held),
            candidates=tuple(world.objects(name)),
            derived_from=derived,
        )
    facts = {(p.name, r): p.attributes[r] for p in world.people for r in p.attributes}
    rows = table if table is not None else world.fact_table()
    exposure = {
        (f["subject"], f["relation"]): {k: f[k] for k in ("exposure", "standing", "bucket",
                                                          "mentions") if k in f}
        | ({"in_text": f["stated"]} if "stated" in f else {})
        for f in rows
    }
    return FactBase(relations, facts, source="world", exposure=exposure)


def load_facts(path: str | Path = DEFAULT_FACTS) -> FactBase:
    """A real-fact list (schema `workbench.facts/1`, see `datasets/facts/README.md`)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"fact list {path} is a folder; pass --facts FILE.json (schema "
                         f"{SCHEMA}, e.g. datasets/facts/real_facts.json)")
    if not path.is_file():
        raise FileNotFoundError(f"fact list {path} does not exist; pass --facts FILE.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"fact list {path} is not valid JSON ({exc}); pass a file of schema "
                         f"{SCHEMA} (see datasets/facts/README.md)") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} has schema {found!r}; expected {SCHEMA!r} (see "
                         "datasets/facts/README.md)")
    try:
        facts = {(f["subject"], f["relation"]): f["object"] for f in data["facts"]}
        relations = {}
        for name, spec in data["relations"].items():
            objects = list(dict.fromkeys(o for (_, r), o in facts.items() if r == name))
            relations[name] = Relation(
                name=name,
                templates=tuple(spec["templates"]),
                heldout=tuple(spec.get("heldout", ())),
                candidates=tuple(spec.get("candidates", objects)),
                statement_end=spec.get("statement_end", "."),
            )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"fact list {path} lacks or mangles a field ({type(exc).__name__}: "
                         f"{exc}); each fact needs subject, relation, object and each relation "
                         "templates (see datasets/facts/README.md)") from exc
    unknown = sorted({r for (_, r) in facts} - set(relations))
    if unknown:
        raise ValueError(f"{path}: facts use relations {unknown} that are not defined")
    return FactBase(relations, facts, source=str(path))
