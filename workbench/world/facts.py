"""The world's facts: fictional people with attributes, and cities grouped into countries.

Planted structure the analyses can check against:

- *exposure*: each person has a Zipf-like weight (the most-mentioned person
  `exposure_ratio` times the least); documents pick people in proportion to it, so facts are
  seen very different numbers of times and beliefs have different strengths. `standing` is
  the person's exposure rank scaled to [0, 1] (1 = the most-mentioned person);
- *composition*: a person's country is stated in text only for a seeded share
  (`p_country_stated`) of people; for the others it is a two-hop fact
  (person -> city -> country) never seen in text.

>>> world = build_world(WorldConfig(seed=0, n_people=4))
>>> len(world.people), len(world.fact_table())
(4, 20)
>>> round(max(p.exposure for p in world.people) / min(p.exposure for p in world.people), 6)
100.0
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.world import lexicon
from workbench.world.labels import DOC_KINDS

# Relations stated in biographies, and the derived two-hop relation (person -> city ->
# country; stated in text only for the people with `country_stated`).
DIRECT_RELATIONS = ("city", "job", "pet", "food")
DERIVED_RELATIONS = ("country",)
RELATIONS = DIRECT_RELATIONS + DERIVED_RELATIONS

DEFAULT_MIX = {  # token shares; see documents.py for why repetition is this high
    "bio": 0.19,
    "city": 0.04,
    "grammar": 0.16,
    "repeat_words": 0.28,
    "repeat_names": 0.03,
    "index": 0.11,  # with 0.08, city and country were not decodable at the name on `default`
    # in-context updates with cues of different reliability (updates.py): at 0.05 the
    # `default` model had not begun to follow even "news" after 2000 steps (p(new) 0.01)
    "update": 0.12,
    "fewshot": 0.07,  # "x : y ; x : y ; ..." demonstrations (fewshot.py)
}


@dataclass
class WorldConfig:
    """Sizes and document mix of a synthetic world.

    Args:
        seed: seeds everything (world facts and corpus text).
        n_people: number of people (unique first + last names).
        n_cities: cities (each in one country).
        n_countries: countries (every country gets a city).
        n_jobs: jobs, drawn from the lexicon's person roles.
        n_pets: pets, drawn from the lexicon's animals.
        n_foods: favourite foods, drawn from the lexicon's foods.
        mix: approximate share of *tokens* per document kind (normalised to sum 1).
        p_opposite_attractor: probability that a noun inside a relative clause or a
            prepositional phrase has the number opposite to the noun it modifies.
        exposure_ratio: exposure weight of the most-mentioned person over the least
            (Zipf-like over a seeded ranking; 1 = everyone equally often).
        p_country_stated: share of people whose country is stated in text (the others'
            countries are two-hop facts).
    """

    seed: int = 0
    n_people: int = 120
    n_cities: int = 24
    n_countries: int = 6
    n_jobs: int = 12
    n_pets: int = 10
    n_foods: int = 12
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    p_opposite_attractor: float = 0.6
    exposure_ratio: float = 100.0
    p_country_stated: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"WorldConfig.seed={self.seed!r}; pass a non-negative integer")
        limits = {
            "n_people": len(lexicon.FIRST_NAMES) * len(lexicon.LAST_NAMES),
            "n_cities": len(lexicon.CITIES),
            "n_countries": len(lexicon.COUNTRIES),
            "n_jobs": len(lexicon.nouns("role")),
            "n_pets": len(lexicon.nouns("animal")),
            "n_foods": len(lexicon.nouns("food")),
        }
        for name, high in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ValueError(
                    f"WorldConfig.{name}={value!r}; pass an integer in [1, {high}] "
                    "(the lexicon has no more)"
                )
        if self.n_cities < self.n_countries:
            raise ValueError(
                f"WorldConfig.n_cities={self.n_cities} < n_countries={self.n_countries}; every "
                "country needs a city, so pass n_cities >= n_countries"
            )
        unknown = sorted(set(self.mix) - set(DOC_KINDS))
        if unknown:
            raise ValueError(
                f"WorldConfig.mix has unknown document kinds {unknown}; use keys of {DOC_KINDS}"
            )
        bad = {k: v for k, v in self.mix.items() if not (math.isfinite(v) and v >= 0)}
        if bad or sum(self.mix.values()) <= 0:
            raise ValueError(
                f"WorldConfig.mix={self.mix}; weights must be finite, >= 0 and not all zero"
            )
        if not 0.0 <= self.p_opposite_attractor <= 1.0:
            raise ValueError(
                f"WorldConfig.p_opposite_attractor={self.p_opposite_attractor}; pass a "
                "probability in [0, 1]"
            )
        ratio = self.exposure_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (
            math.isfinite(ratio) and ratio >= 1
        ):
            raise ValueError(
                f"WorldConfig.exposure_ratio={ratio!r}; pass a number >= 1 (1 = every person "
                "mentioned equally often)"
            )
        if not 0.0 <= self.p_country_stated <= 1.0:
            raise ValueError(
                f"WorldConfig.p_country_stated={self.p_country_stated}; pass a probability in "
                "[0, 1]"
            )

    @property
    def mix_normalised(self) -> dict[str, float]:
        """Token shares per document kind, in DOC_KINDS order, summing to 1."""
        total = sum(self.mix.values())
        return {k: self.mix.get(k, 0.0) / total for k in DOC_KINDS if self.mix.get(k, 0.0) > 0}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        return cls(**data)


@dataclass(frozen=True)
class Person:
    """A person: name, direct attributes, exposure weight (mean 1 over people), standing
    (exposure rank in [0, 1], 1 = most mentioned) and whether their country is stated."""

    first: str
    last: str
    attributes: dict[str, str]  # relation -> object, for DIRECT_RELATIONS
    exposure: float = 1.0
    standing: float = 0.5
    country_stated: bool = False

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


@dataclass
class World:
    """People, their attributes, and which country each city is in."""

    config: WorldConfig
    people: list[Person]
    city_country: dict[str, str]
    values: dict[str, list[str]]  # relation -> every possible object (the candidate set)

    def objects(self, relation: str) -> list[str]:
        """All possible objects of `relation` (the candidate answers)."""
        if relation not in self.values:
            raise ValueError(f"unknown relation {relation!r}; use one of {list(self.values)}")
        return list(self.values[relation])

    def attribute(self, person: int, relation: str) -> str:
        """Object of `relation` for person index `person` (country is derived from city)."""
        p = self.people[person]
        if relation == "country":
            return self.city_country[p.attributes["city"]]
        if relation not in p.attributes:
            raise ValueError(f"unknown relation {relation!r}; use one of {list(RELATIONS)}")
        return p.attributes[relation]

    def stated(self, person: int, relation: str) -> bool:
        """Whether the fact appears in text (a derived fact only for `country_stated`)."""
        return relation not in DERIVED_RELATIONS or self.people[person].country_stated

    def stated_relations(self, person: int) -> tuple[str, ...]:
        """The relations stated in text about `person`."""
        return tuple(r for r in RELATIONS if self.stated(person, r))

    def fact_table(self) -> list[dict[str, Any]]:
        """Every fact, derived two-hop `country` facts included, person by person."""
        return [
            {
                "subject": p.name,
                "person": i,
                "relation": rel,
                "object": self.attribute(i, rel),
                "derived": rel in DERIVED_RELATIONS,
                "stated": self.stated(i, rel),
                "exposure": p.exposure,
                "standing": p.standing,
                "bucket": exposure_bucket(p.standing),
            }
            for i, p in enumerate(self.people)
            for rel in RELATIONS
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "people": [
                {"id": i, "first": p.first, "last": p.last, "attributes": dict(p.attributes),
                 "exposure": p.exposure, "standing": p.standing,
                 "country_stated": p.country_stated}
                for i, p in enumerate(self.people)
            ],
            "city_country": dict(self.city_country),
            "values": {k: list(v) for k, v in self.values.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> World:
        people = [
            Person(p["first"], p["last"], dict(p["attributes"]), float(p.get("exposure", 1.0)),
                   float(p.get("standing", 0.5)), bool(p.get("country_stated", False)))
            for p in data["people"]
        ]
        return cls(
            WorldConfig.from_dict(data["config"]),
            people,
            dict(data["city_country"]),
            {k: list(v) for k, v in data["values"].items()},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> World:
        return cls.from_dict(json.loads(text))


def build_world(cfg: WorldConfig) -> World:
    """Draw the world of `cfg.seed`: attribute values, city -> country, people."""
    rng = random.Random(cfg.seed)
    countries = rng.sample(lexicon.COUNTRIES, cfg.n_countries)
    cities = rng.sample(lexicon.CITIES, cfg.n_cities)
    # Round-robin after the shuffle: every country gets at least one city.
    city_country = {c: countries[i % len(countries)] for i, c in enumerate(cities)}
    values = {
        "city": cities,
        "job": [n.sing for n in rng.sample(lexicon.nouns("role"), cfg.n_jobs)],
        "pet": [n.sing for n in rng.sample(lexicon.nouns("animal"), cfg.n_pets)],
        "food": [n.plur for n in rng.sample(lexicon.nouns("food"), cfg.n_foods)],
        "country": countries,
    }
    names = list(itertools.product(lexicon.FIRST_NAMES, lexicon.LAST_NAMES))
    drawn = [
        (first, last, {rel: rng.choice(values[rel]) for rel in DIRECT_RELATIONS})
        for first, last in rng.sample(names, cfg.n_people)
    ]
    # exposure and composition come from their own streams: the facts above stay those of
    # worlds built before exposure existed
    weights, standing = exposure_weights(cfg.n_people, cfg.exposure_ratio, cfg.seed)
    order = random.Random(f"world:{cfg.seed}:country_stated")
    stated = set(order.sample(range(cfg.n_people), round(cfg.p_country_stated * cfg.n_people)))
    people = [
        Person(first, last, attrs, weights[i], standing[i], i in stated)
        for i, (first, last, attrs) in enumerate(drawn)
    ]
    return World(cfg, people, city_country, values)


BUCKETS = ("low", "mid", "high")


def exposure_bucket(standing: float) -> str:
    """`low`, `mid` or `high`: the third of people (by exposure rank) a standing falls in."""
    return BUCKETS[min(len(BUCKETS) - 1, int(standing * len(BUCKETS)))]


def exposure_weights(n: int, ratio: float, seed: int) -> tuple[list[float], list[float]]:
    """Zipf-like exposure weights over a seeded ranking of `n` people, and their standing.

    The person of rank r (1 = most mentioned) gets weight r^-s with s chosen so that rank 1
    over rank n is `ratio`; weights are scaled to mean 1. Standing is 1 - (r - 1) / (n - 1).

    >>> w, s = exposure_weights(3, 4.0, seed=0)
    >>> round(max(w) / min(w), 6), sorted(s)
    (4.0, [0.0, 0.5, 1.0])
    """
    ranks = list(range(1, n + 1))
    random.Random(f"world:{seed}:exposure").shuffle(ranks)
    s = math.log(ratio) / math.log(n) if n > 1 else 0.0
    raw = [r**-s for r in ranks]
    mean = sum(raw) / n
    standing = [1.0 - (r - 1) / (n - 1) if n > 1 else 1.0 for r in ranks]
    return [w / mean for w in raw], standing
