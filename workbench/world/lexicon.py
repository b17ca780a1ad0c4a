"""Word lists of the synthetic world: nouns, adjectives, verbs, function words and names.

Every noun and adjective starts with a consonant (the grammar puts "a" in front of them) and
no word belongs to two lists, so each word has one part of speech and one set of lexical
labels. Tests check both properties.
"""

from __future__ import annotations

from dataclasses import dataclass

ANIMATE = ("animal", "role")
INANIMATE = ("food", "tool", "place")
NOUN_CLASSES = ANIMATE + INANIMATE


@dataclass(frozen=True)
class Noun:
    """A common noun with its number forms and semantic class."""

    sing: str
    plur: str
    category: str  # one of NOUN_CLASSES

    def form(self, number: str) -> str:
        return self.sing if number == "sing" else self.plur

    @property
    def animate(self) -> bool:
        return self.category in ANIMATE


@dataclass(frozen=True)
class Adjective:
    word: str
    sentiment: str  # pos | neg | neutral
    animate_only: bool  # "happy dog" but not "happy hammer"


@dataclass(frozen=True)
class Verb:
    """A present-tense verb with selectional restrictions (noun classes it accepts)."""

    plur: str  # "eat": the form after plural subjects
    sing: str  # "eats"
    subj: tuple[str, ...]
    obj: tuple[str, ...]  # () for intransitive verbs

    def form(self, number: str) -> str:
        return self.sing if number == "sing" else self.plur


def _nouns(category: str, spec: str) -> tuple[Noun, ...]:
    """`"dog fox:foxes"` -> dog/dogs, fox/foxes."""
    out = []
    for item in spec.split():
        sing, _, plur = item.partition(":")
        out.append(Noun(sing, plur or sing + "s", category))
    return tuple(out)


NOUNS: dict[str, tuple[Noun, ...]] = {
    "animal": _nouns(
        "animal",
        "dog cat horse rabbit goat parrot fox:foxes cow duck pig wolf:wolves bird frog "
        "lizard turtle snake bear tiger lion mouse:mice",
    ),
    "food": _nouns(
        "food",
        "cake pie plum pear carrot berry:berries melon cookie banana potato:potatoes "
        "tomato:tomatoes pepper sandwich:sandwiches biscuit bun noodle",
    ),
    "tool": _nouns(
        "tool",
        "hammer knife:knives saw brush:brushes rope shovel ladder needle pencil bucket drill "
        "wrench:wrenches",
    ),
    "place": _nouns(
        "place",
        "park garden market river forest kitchen school bridge harbor barn library:libraries tower",
    ),
    "role": _nouns(
        "role",
        "baker farmer teacher doctor painter sailor tailor miner pilot nurse singer writer "
        "builder cook guard judge",
    ),
}


def _adjectives(sentiment: str, animate_only: bool, spec: str) -> tuple[Adjective, ...]:
    return tuple(Adjective(w, sentiment, animate_only) for w in spec.split())


ADJECTIVES: tuple[Adjective, ...] = (
    _adjectives("pos", False, "good nice lovely fine perfect")
    + _adjectives("pos", True, "happy kind brave gentle clever friendly")
    + _adjectives("neg", False, "bad nasty dirty terrible horrible")
    + _adjectives("neg", True, "mean cruel lazy rude grumpy wicked")
    + _adjectives("neutral", False, "big small red brown green heavy round little yellow")
    + _adjectives("neutral", True, "tall young")
)

_ALL = NOUN_CLASSES
TRANSITIVE_VERBS: tuple[Verb, ...] = (
    Verb("eat", "eats", ANIMATE, ("food",)),
    Verb("chase", "chases", ANIMATE, ("animal",)),
    Verb("use", "uses", ("role",), ("tool",)),
    Verb("visit", "visits", ANIMATE, ("place",)),
    Verb("like", "likes", ANIMATE, _ALL),
    Verb("see", "sees", ANIMATE, _ALL),
    Verb("feed", "feeds", ("role",), ("animal",)),
    Verb("carry", "carries", ANIMATE, ("food", "tool")),
    Verb("hold", "holds", ("role",), ("tool", "food")),
    Verb("clean", "cleans", ("role",), ("tool", "place")),
    Verb("find", "finds", ANIMATE, _ALL),
    Verb("bite", "bites", ("animal",), ANIMATE),
    Verb("fear", "fears", ANIMATE, ("animal",)),
    Verb("paint", "paints", ("role",), _ALL),
    Verb("wash", "washes", ("role",), ("animal", "tool", "food")),
    Verb("buy", "buys", ("role",), ("food", "tool", "animal")),
)
INTRANSITIVE_VERBS: tuple[Verb, ...] = (
    Verb("sleep", "sleeps", ANIMATE, ()),
    Verb("run", "runs", ANIMATE, ()),
    Verb("wait", "waits", ("role",), ()),
    Verb("laugh", "laughs", ("role",), ()),
    Verb("hide", "hides", ("animal",), ()),
)
VERBS = TRANSITIVE_VERBS + INTRANSITIVE_VERBS

# "the" goes with both numbers; it is listed under each.
DETERMINERS: dict[str, tuple[str, ...]] = {
    "sing": ("the", "a", "every", "each", "this"),
    "plur": ("the", "these", "those", "some", "many"),
}
PREPOSITIONS = ("near", "behind", "beside", "under", "with")
RELATIVE_PRONOUN = "that"
# Adjective coordination: "and" joins adjectives of one sentiment, "but" opposite ones.
CONJUNCTIONS = ("and", "but")
PUNCTUATION = (".", ",", "?", ":")

FIRST_NAMES = tuple(
    "anna ben clara david elena felix greta hugo iris jonas kira leo mara nils olga paul "
    "rosa sami tara ugo vera wim yara zane ada bruno cleo dina emil farah hana ivan jules "
    "karl lotte milo nadia otto pia quinn".split()
)
LAST_NAMES = tuple(
    "berg lind moreau okafor tanaka novak silva kowal haas dahl ferro grimm holt ivers "
    "janssen kemp lorne marsh nygaard ortiz pryce quist rask sato thorne ulver vance wendt "
    "yates zorn abel brandt castell drummond eklund falk gerber hadley ismay jarvis".split()
)
CITIES = tuple(
    "velmora tarnis quellon brisca dunmere olvaro pendrith castora miralen solvik harrowin "
    "zebrak lunhaven tessaly ardwyn korvath nimbria ostrel fennick galdor ravensa ulmstead "
    "yrvane bellport".split()
)
COUNTRIES = ("dravia", "solmark", "ostrevia", "kelland", "mirvane", "zentha")


def nouns(category: str) -> tuple[Noun, ...]:
    """The nouns of one class (`animal`, `food`, `tool`, `place`, `role`)."""
    if category not in NOUNS:
        raise ValueError(f"unknown noun class {category!r}; use one of {sorted(NOUNS)}")
    return NOUNS[category]


def all_nouns() -> tuple[Noun, ...]:
    return tuple(n for c in NOUN_CLASSES for n in NOUNS[c])


def lexicon_words() -> list[str]:
    """Every word in the lexicon (all forms), in a fixed order, without duplicates."""
    words: list[str] = []
    for n in all_nouns():
        words += [n.sing, n.plur]
    words += [a.word for a in ADJECTIVES]
    for v in VERBS:
        words += [v.sing, v.plur]
    for dets in DETERMINERS.values():
        words += list(dets)
    words += list(PREPOSITIONS) + [RELATIVE_PRONOUN] + list(CONJUNCTIONS) + list(PUNCTUATION)
    words += list(FIRST_NAMES + LAST_NAMES + CITIES + COUNTRIES)
    return list(dict.fromkeys(words))


def lexical_labels() -> dict[str, dict[str, str]]:
    """Context-free labels of content words: word -> {category, animacy, sentiment}.

    Names are category `person` (animate); cities and countries are `place` (inanimate).
    """
    table: dict[str, dict[str, str]] = {}
    for n in all_nouns():
        anim = "animate" if n.animate else "inanimate"
        for w in (n.sing, n.plur):
            table[w] = {"category": n.category, "animacy": anim}
    for a in ADJECTIVES:
        table[a.word] = {"sentiment": a.sentiment}
    for w in FIRST_NAMES + LAST_NAMES:
        table[w] = {"category": "person", "animacy": "animate"}
    for w in CITIES + COUNTRIES:
        table[w] = {"category": "place", "animacy": "inanimate"}
    return table
