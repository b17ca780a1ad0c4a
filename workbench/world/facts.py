"""The world's facts: fictional people with attributes, and cities grouped into countries.

>>> world = build_world(WorldConfig(seed=0, n_people=4))
>>> len(world.people), len(world.fact_table())
(4, 20)
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

# Relations stated in biographies, and the derived two-hop relation (never stated about a
# person in any text: person -> city -> country).
DIRECT_RELATIONS = ("city", "job", "pet", "food")
DERIVED_RELATIONS = ("country",)
RELATIONS = DIRECT_RELATIONS + DERIVED_RELATIONS

DEFAULT_MIX = {  # token shares; see documents.py for why repetition is this high
    "bio": 0.22,
    "city": 0.05,
    "grammar": 0.2,
    "repeat_words": 0.36,
    "repeat_names": 0.05,
    "index": 0.12,  # with 0.08, city and country were not decodable at the name on `default`
}


@dataclass
class WorldConfig:
    """Sizes and document mix of a synthetic world.

    Args:
        seed: seeds everything (world facts and corpus text).
        n_people: number of people (unique first + last names).
        n_cities, n_countries: cities (each in one country; every country gets a city).
        n_jobs, n_pets, n_foods: attribute values drawn from the lexicon's roles, animals, foods.
        mix: approximate share of *tokens* per document kind (normalised to sum 1).
        p_opposite_attractor: probability that a noun inside a relative clause or a
            prepositional phrase has the number opposite to the noun it modifies.
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
    first: str
    last: str
    attributes: dict[str, str]  # relation -> object, for DIRECT_RELATIONS

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

    def fact_table(self) -> list[dict[str, Any]]:
        """Every fact, derived two-hop `country` facts included, person by person."""
        return [
            {
                "subject": p.name,
                "person": i,
                "relation": rel,
                "object": self.attribute(i, rel),
                "derived": rel in DERIVED_RELATIONS,
            }
            for i, p in enumerate(self.people)
            for rel in RELATIONS
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "people": [
                {"id": i, "first": p.first, "last": p.last, "attributes": dict(p.attributes)}
                for i, p in enumerate(self.people)
            ],
            "city_country": dict(self.city_country),
            "values": {k: list(v) for k, v in self.values.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> World:
        people = [Person(p["first"], p["last"], dict(p["attributes"])) for p in data["people"]]
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
    people = [
        Person(first, last, {rel: rng.choice(values[rel]) for rel in DIRECT_RELATIONS})
        for first, last in rng.sample(names, cfg.n_people)
    ]
    return World(cfg, people, city_country, values)
