"""Label vocabularies, and the row and document types every document generator emits.

A document (`Document`) is a list of `Row`s, one per word. Context-dependent labels (part of
speech, tree depth, subject number at verbs, person id) live on the row; context-free labels
(category, animacy, sentiment) are looked up from the word (`lexicon.lexical_labels`) wherever
the row has a part of speech. "-" / -1 means "no label".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

POS_TAGS = (
    "DET",
    "ADJ",
    "NOUN",
    "PROPN",
    "VERB",
    "AUX",
    "PREP",
    "PRON",
    "SCONJ",
    "ADV",
    "PART",
    "PUNCT",
    "CCONJ",
)
NUMBERS = ("sing", "plur")
CATEGORIES = ("animal", "food", "tool", "place", "role", "person")
ANIMACY = ("animate", "inanimate")
SENTIMENTS = ("pos", "neg", "neutral")
DOC_KINDS = (
    "bio", "city", "grammar", "repeat_words", "repeat_names", "index", "update", "fewshot"
)

# Arrays in `{split}.labels.npz` aligned with tokens; None = integer label (no names).
LABEL_NAMES: dict[str, list[str] | None] = {
    "pos": list(POS_TAGS),
    "depth": None,
    "number": list(NUMBERS),
    "category": list(CATEGORIES),
    "animacy": list(ANIMACY),
    "sentiment": list(SENTIMENTS),
    "person": None,
}
NO_LABEL = -1

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")  # ids 0..3
BOS = "<bos>"


class Row(NamedTuple):
    """One word of a document with its context-dependent gold labels.

    Attributes:
        word: the token text.
        pos: a tag of POS_TAGS, or "-" (no label: BOS, random word lists).
        depth: depth in the parse tree (root S = 0) for grammar sentences, else -1.
        number: subject number ("sing"/"plur") at finite verbs of grammar sentences, else "-".
        person: index of the person whose name this word is part of, else -1.
    """

    word: str
    pos: str = "-"
    depth: int = -1
    number: str = "-"
    person: int = -1


BOS_ROW = Row(BOS)


@dataclass
class Document:
    """One generated document: its kind, its rows, and what the evaluation needs of it."""

    kind: str  # one of DOC_KINDS
    rows: list[Row]
    facts: list[tuple[int, str]] = field(default_factory=list)  # (person, relation) stated
    updates: list[dict[str, Any]] = field(default_factory=list)  # update episodes (tests)

    @property
    def text(self) -> str:
        return " ".join(r.word for r in self.rows)
