"""A small English grammar whose sentences carry gold labels on every word.

    S  -> NP VP "."          VP -> V | V NP
    NP -> DET (ADJ (CONJ ADJ)) N (RC | PP)
    RC -> "that" V (NP)      (subject relative: the head is the verb's subject)
        | "that" NP V        (object relative: the head is the verb's object)
    PP -> P NP

Verbs agree in number with their subject; nouns inside a relative clause or PP (the
"attractors") often have the opposite number, so agreement must skip over them:
"the dog that the cats chase eats the cake .". Selectional restrictions hold throughout
(an `eat` subject is animate and its object is food; a relative clause head satisfies both of
its verbs). Coordinated adjectives carry sentiment: "and" joins two of the same sentiment,
"but" a positive and a negative one ("the kind but lazy dog"), as in real text, so a model
has a reason to learn which adjectives are positive. Depth is the number of constituents
above a word: S = 0, the subject's words 2, the main verb 2, the object's words 3, the
final "." 1.

>>> rows = Grammar().sentence(random.Random(0))
>>> rows[-1].word, rows[-1].depth
('.', 1)
"""

from __future__ import annotations

import functools
import random
from typing import Any

from workbench.world import lexicon
from workbench.world.labels import NUMBERS, Row
from workbench.world.lexicon import NOUN_CLASSES, TRANSITIVE_VERBS, VERBS, Noun, Verb

P_SUBJECT_MOD = 0.6  # the subject gets a relative clause or PP
P_OBJECT_MOD = 0.25
P_INNER_MOD = 0.2  # a noun inside a relative clause or PP gets one (second level)
MODIFIERS = ("subj_rel", "obj_rel", "pp")
MODIFIER_WEIGHTS = (0.35, 0.35, 0.3)
P_ADJECTIVE = 0.3
P_THE = 0.5
P_COORDINATED = 0.5  # an adjective gets a second one after "and" / "but"
P_BUT = 0.5  # for a positive or negative first adjective

_ADJ_ANY = tuple(a.word for a in lexicon.ADJECTIVES if not a.animate_only)
_ADJ_ANIMATE = tuple(a.word for a in lexicon.ADJECTIVES)
_SENTIMENT = {a.word: a.sentiment for a in lexicon.ADJECTIVES}
_OPPOSITE = {"pos": "neg", "neg": "pos"}


@functools.cache
def _adjectives_with(pool: tuple[str, ...], sentiment: str, other_than: str) -> tuple[str, ...]:
    return tuple(w for w in pool if _SENTIMENT[w] == sentiment and w != other_than)


def _adjective_rows(rng: random.Random, animate: bool, depth: int) -> list[Row]:
    """One adjective, or two joined by "and" (same sentiment) / "but" (opposite)."""
    pool = _ADJ_ANIMATE if animate else _ADJ_ANY
    first = rng.choice(pool)
    rows = [Row(first, "ADJ", depth)]
    if rng.random() >= P_COORDINATED:
        return rows
    sentiment = _SENTIMENT[first]
    if sentiment in _OPPOSITE and rng.random() < P_BUT:
        conj, sentiment = "but", _OPPOSITE[sentiment]
    else:
        conj = "and"
    second = rng.choice(_adjectives_with(pool, sentiment, first))
    return rows + [Row(conj, "CCONJ", depth), Row(second, "ADJ", depth)]


def _other(number: str) -> str:
    return "plur" if number == "sing" else "sing"


def _meet(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """Classes in both (order of `a`; tuples, never sets, keep generation deterministic)."""
    return tuple(c for c in a if c in b)


@functools.cache
def _verbs_with_subject_in(classes: tuple[str, ...]) -> tuple[Verb, ...]:
    return tuple(v for v in VERBS if _meet(v.subj, classes))


@functools.cache
def _verbs_with_object_in(classes: tuple[str, ...]) -> tuple[Verb, ...]:
    return tuple(v for v in TRANSITIVE_VERBS if _meet(v.obj, classes))


@functools.cache
def _modifiers_for(classes: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Modifiers a head in `classes` can take (inanimate nouns subject no verb), weights."""
    ok = {
        "subj_rel": bool(_verbs_with_subject_in(classes)),
        "obj_rel": bool(_verbs_with_object_in(classes)),
        "pp": True,
    }
    pairs = [(m, w) for m, w in zip(MODIFIERS, MODIFIER_WEIGHTS) if ok[m]]
    return tuple(m for m, _ in pairs), tuple(w for _, w in pairs)


def _noun(rng: random.Random, classes: tuple[str, ...]) -> Noun:
    return rng.choice(lexicon.NOUNS[rng.choice(classes)])


class Grammar:
    """Sentence generator. All randomness comes from the `rng` passed to each call.

    Args:
        p_opposite_attractor: probability that a noun inside a relative clause or PP has the
            number opposite to the noun it modifies.
    """

    def __init__(self, p_opposite_attractor: float = 0.6) -> None:
        if not 0.0 <= p_opposite_attractor <= 1.0:
            raise ValueError(
                f"p_opposite_attractor={p_opposite_attractor}; pass a probability in [0, 1]"
            )
        self.p_opposite = p_opposite_attractor

    def _attractor_number(self, rng: random.Random, number: str) -> str:
        return _other(number) if rng.random() < self.p_opposite else number

    def sentence(self, rng: random.Random) -> list[Row]:
        """One labelled sentence, ending with "."."""
        verb = rng.choice(VERBS)
        number = rng.choice(NUMBERS)
        rows = self._noun_phrase(rng, verb.subj, number, 1, 2, P_SUBJECT_MOD)
        rows.append(Row(verb.form(number), "VERB", 2, number))
        if verb.obj:
            rows += self._noun_phrase(rng, verb.obj, rng.choice(NUMBERS), 2, 1, P_OBJECT_MOD)
        rows.append(Row(".", "PUNCT", 1))
        return rows

    def _noun_phrase(
        self,
        rng: random.Random,
        classes: tuple[str, ...],
        number: str,
        depth: int,
        budget: int,
        p_mod: float,
    ) -> list[Row]:
        """An NP node at `depth` (its words at depth + 1) whose head is in `classes`."""
        mod = None
        if budget > 0 and rng.random() < p_mod:
            mod = rng.choices(*_modifiers_for(classes))[0]
        verb = None
        if mod == "subj_rel":
            verb = rng.choice(_verbs_with_subject_in(classes))
            classes = _meet(classes, verb.subj)
        elif mod == "obj_rel":
            verb = rng.choice(_verbs_with_object_in(classes))
            classes = _meet(classes, verb.obj)
        noun = _noun(rng, classes)
        d1, d2 = depth + 1, depth + 2
        det = "the" if rng.random() < P_THE else rng.choice(lexicon.DETERMINERS[number][1:])
        rows = [Row(det, "DET", d1)]
        if rng.random() < P_ADJECTIVE:
            rows += _adjective_rows(rng, noun.animate, d1)
        rows.append(Row(noun.form(number), "NOUN", d1))
        if mod is None:
            return rows
        inner = self._attractor_number(rng, number)
        if mod == "pp":
            rows.append(Row(rng.choice(lexicon.PREPOSITIONS), "PREP", d2))
            rows += self._noun_phrase(rng, NOUN_CLASSES, inner, d2, budget - 1, P_INNER_MOD)
        elif mod == "subj_rel":
            assert verb is not None
            rows.append(Row(lexicon.RELATIVE_PRONOUN, "PRON", d2))
            rows.append(Row(verb.form(number), "VERB", d2, number))
            if verb.obj:
                rows += self._noun_phrase(rng, verb.obj, inner, d2, budget - 1, P_INNER_MOD)
        else:
            assert verb is not None
            rows.append(Row(lexicon.RELATIVE_PRONOUN, "PRON", d2))
            rows += self._noun_phrase(rng, verb.subj, inner, d2, budget - 1, P_INNER_MOD)
            rows.append(Row(verb.form(inner), "VERB", d2, inner))
        return rows


def agreement_items(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Number-agreement test items: the main verb's correct and wrong form after a prefix.

    The attractor (the noun closest to the verb) always has the opposite number; subjects
    alternate singular / plural and structures cycle through object relative, subject
    relative and prepositional phrase. Both nouns take "the", so number shows only on nouns.

    >>> agreement_items(2, seed=0)[0]["prefix"].split()[2]
    'that'
    """
    if n < 0:
        raise ValueError(f"n={n}; pass a non-negative number of items")
    rng = random.Random(f"agreement:{seed}")
    structures = ("obj_rel", "subj_rel", "pp")
    items = []
    for i in range(n):
        number = NUMBERS[i % 2]
        attr_n = _other(number)
        structure = structures[(i // 2) % 3]
        main = rng.choice(VERBS)
        if structure == "obj_rel":
            rel = rng.choice(_verbs_with_object_in(main.subj))
            head = _noun(rng, _meet(main.subj, rel.obj))
            attractor = _noun(rng, rel.subj)
            prefix = f"the {head.form(number)} that the {attractor.form(attr_n)} {rel.form(attr_n)}"
        elif structure == "subj_rel":
            rel = rng.choice([v for v in _verbs_with_subject_in(main.subj) if v.obj])
            head = _noun(rng, _meet(main.subj, rel.subj))
            attractor = _noun(rng, rel.obj)
            prefix = f"the {head.form(number)} that {rel.form(number)} the {attractor.form(attr_n)}"
        else:
            head = _noun(rng, main.subj)
            attractor = _noun(rng, NOUN_CLASSES)
            prep = rng.choice(lexicon.PREPOSITIONS)
            prefix = f"the {head.form(number)} {prep} the {attractor.form(attr_n)}"
        items.append(
            {
                "prefix": prefix,
                "correct": main.form(number),
                "wrong": main.form(attr_n),
                "number": number,
                "attractor_number": attr_n,
                "subject": head.form(number),
                "attractor": attractor.form(attr_n),
                "structure": structure,
            }
        )
    return items
