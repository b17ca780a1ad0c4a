"""In-context updates: a fact changed in the context under a cue of planted reliability.

An `update` document states a new object for one of a person's facts under a cue, says a
few true facts about others (and about the person's other relations), then restates the
changed fact. Whether the restatement follows the new object or goes back to the true one is
drawn with the cue's *reliability*, which depends on how established the person is (their
`standing`, 0 = least mentioned, 1 = most):

- `rumor` ("a rumor says that ..."): 0.7 (1 - standing): rarely believed, never about
  well-known people;
- `hearsay` ("i heard that ..."): 1 - 0.7 standing: usually believed, less so the better
  known the person;
- `news` ("news : ..."): always.

This is how a careful reader treats claims (a rumour about a famous person's home is more
likely wrong than one about a stranger's), and it is what makes the pressure ladder of
`beliefs.ladder` measurable: a flip is something the model could have learned, and whether
it happens should depend on how strongly the old belief is held.

>>> round(reliability("hearsay", 0.5), 2), reliability("news", 1.0)
(0.65, 1.0)
"""

from __future__ import annotations

from workbench.world.labels import Row

CUES: dict[str, str] = {
    "rumor": "a rumor says that",
    "hearsay": "i heard that",
    "news": "news :",
}
# reliability at standing 0 and at standing 1 (linear in between)
RELIABILITY: dict[str, tuple[float, float]] = {
    "rumor": (0.7, 0.0),
    "hearsay": (1.0, 0.3),
    "news": (1.0, 1.0),
}
_CUE_POS = {"a": "DET", "rumor": "NOUN", "says": "VERB", "that": "SCONJ", "i": "PRON",
            "heard": "VERB", "news": "NOUN", ":": "PUNCT"}
P_PRIOR_STATEMENT = 0.5  # the true fact is stated before the cue
P_REPEATED_CUE = 0.2  # the cued statement comes 2-3 times (in any plain phrasing)
P_SAME_WORDS = 0.5  # the restatement repeats the cued sentence's words (else any template)
# Facts between the cue and the restatement (1-3 of them): another person's (mostly of the
# same relation, which must not follow the cue) or the person's other relations. With 0-3
# facts, 60 % other people, 75 % of those the same relation and the others drawn by exposure,
# the seed-0 `default` carried the cued object over to 70 % of other (uniformly drawn)
# people's same-relation facts asked after "news :" (its own other relations: 5 %).
P_OTHER_PERSON = 0.7
P_SAME_RELATION = 0.85
# Sometimes nothing comes between: the restatement follows the cued statement at once. With
# always 1-3 facts between, the trained models learned that a restatement comes only after
# other facts, and a question asked right after the cue (the pressure ladder's) kept the old
# object: on the seed-0 `default`, news flipped 2 % of 50 facts asked at once but 22 % with
# one other person's fact in between (seed 2: 36 % and 72 %).
P_IMMEDIATE = 0.3


def reliability(cue: str, standing: float) -> float:
    """Probability that a fact restated after `cue` takes the cued (new) object."""
    if cue not in RELIABILITY:
        raise ValueError(f"unknown cue {cue!r}; use one of {list(RELIABILITY)}")
    low, high = RELIABILITY[cue]
    return low + (high - low) * min(1.0, max(0.0, standing))


def cue_rows(cue: str) -> list[Row]:
    return [Row(w, _CUE_POS[w]) for w in CUES[cue].split()]


def update_words() -> list[str]:
    return sorted({w for text in CUES.values() for w in text.split()})
