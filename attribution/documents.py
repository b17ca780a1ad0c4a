"""What an attribution ranks, and what it is asked about.

A **query** is one fact of the world: its held-out paraphrase prompts (templates the model
never trained on, `facts_heldout`) and its object. The **documents** are training documents
of the corpus (the `train` split's spans): all of them, or a candidate set that holds every
document stating a queried fact plus a seeded random sample of the others (`select_documents`;
scores against truth are then measured among the candidates, which the report says).

>>> Fact.parse("bruno moreau:city")
Fact(subject='bruno moreau', relation='city')
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from tokenizers import Tokenizer

from workbench.hints import did_you_mean
from workbench.world.docfacts import DocFacts
from workbench.world.loader import Corpus


@dataclass(frozen=True)
class Fact:
    """A fact named as the world names it: the subject's name and the relation."""

    subject: str
    relation: str

    @classmethod
    def parse(cls, text: str) -> Fact:
        """`"SUBJECT:RELATION"` (e.g. `"bruno moreau:city"`)."""
        subject, sep, relation = text.rpartition(":")
        if not sep or not subject.strip() or not relation.strip():
            raise ValueError(f"fact {text!r}; write SUBJECT:RELATION, e.g. "
                             "'bruno moreau:city'")
        return cls(subject.strip(), relation.strip())

    def __str__(self) -> str:
        return f"{self.subject}:{self.relation}"


@dataclass(frozen=True)
class Query:
    """One fact asked about: its row in the world's fact table, its object and the held-out
    prompts (each followed by the object in the world's text). A free prompt has no fact
    (`fact` None, `row` -1): nothing says which documents state it."""

    fact: Fact | None
    row: int
    answer: str
    prompts: tuple[str, ...]
    mentions: int
    bucket: str

    @property
    def name(self) -> str:
        """The fact (`subject:relation`), or the prompt and its target."""
        return str(self.fact) if self.fact is not None else f"{self.prompts[0]} -> {self.answer}"


def prompt_query(prompt: str, target: str) -> Query:
    """A query of one free prompt and the word the model should say next.

    >>> prompt_query("anna lives in", "paris").name
    'anna lives in -> paris'
    """
    if not prompt.strip():
        raise ValueError("--prompt is empty; type the words before the answer")
    if not target.strip() or len(target.split()) != 1:
        raise ValueError(f"--target {target!r}; pass one word (the token after the prompt)")
    return Query(None, -1, target.strip(), (prompt.strip(),), -1, "")


def queries(corpus: Corpus, facts: Sequence[Fact] | int, bucket: str | None = None
            ) -> list[Query]:
    """The queries of `facts` (or of the first `n` stated facts that have held-out prompts,
    spread over subjects, when `facts` is an int; with `bucket`, only facts of that exposure
    bucket: `low`, `mid`, `high`).

    Raises:
        ValueError: a fact the world lacks (with the closest subject), a fact never stated in
            training text (a two-hop fact), a fact without held-out prompts, or an unknown
            bucket.
    """
    table = corpus.fact_table()
    rows = {(f["subject"], f["relation"]): i for i, f in enumerate(table)}
    prompts: dict[int, list[str]] = {}
    for item in corpus.eval_items("facts_heldout"):
        row = rows.get((item["subject"], item["relation"]))
        if row is not None:
            prompts.setdefault(row, []).append(item["prefix"])
    if bucket is not None:
        buckets = sorted({str(f["bucket"]) for f in table})
        if bucket not in buckets:
            raise ValueError(f"--bucket {bucket!r}; the world's exposure buckets are "
                             f"{', '.join(buckets)}")
        prompts = {r: p for r, p in prompts.items() if table[r]["bucket"] == bucket}
    if isinstance(facts, int):
        if facts < 1:
            raise ValueError(f"--facts {facts}; pass 1 or more")
        order, seen = [], set()
        for row in sorted(prompts):  # one fact per subject first, then the rest
            if table[row]["stated"] and table[row]["subject"] not in seen:
                order.append(row)
                seen.add(table[row]["subject"])
        order += [r for r in sorted(prompts) if table[r]["stated"] and r not in order]
        chosen = order[:facts]
    else:
        chosen = []
        subjects = sorted({f["subject"] for f in table})
        for fact in facts:
            row = rows.get((fact.subject, fact.relation))
            if row is None:
                hint = did_you_mean(fact.subject, subjects)
                raise ValueError(f"fact {str(fact)!r} is not in the world{hint}; facts are "
                                 "SUBJECT:RELATION with a relation of "
                                 f"{', '.join(sorted({f['relation'] for f in table}))}")
            if not table[row]["stated"]:
                raise ValueError(f"fact {str(fact)!r} is never stated in training text (it "
                                 "is derived, e.g. a two-hop country); no document taught it")
            if row not in prompts:
                raise ValueError(f"fact {str(fact)!r} has no held-out prompt in the corpus's "
                                 "facts_heldout items; choose another fact")
            chosen.append(row)
    return [Query(Fact(table[r]["subject"], table[r]["relation"]), r, str(table[r]["object"]),
                  tuple(prompts[r]), int(table[r]["mentions"]), str(table[r]["bucket"]))
            for r in chosen]


def relation_objects(corpus: Corpus) -> dict[str, list[str]]:
    """Every object of each relation in the world's fact table (the candidates asked)."""
    out: dict[str, list[str]] = {}
    for f in corpus.fact_table():
        out.setdefault(f["relation"], [])
        if str(f["object"]) not in out[f["relation"]]:
            out[f["relation"]].append(str(f["object"]))
    return out


@dataclass
class Documents:
    """Training documents of a corpus's `train` split, by index into its `docs` spans."""

    corpus: Corpus
    index: np.ndarray  # int64 [n]: the documents' indices in the split
    split: str = "train"
    _tokenizer: Tokenizer | None = field(default=None, repr=False)
    _stating: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.index)

    @cached_property
    def spans(self) -> np.ndarray:
        return self.corpus.docs(self.split)[self.index]

    @cached_property
    def stream(self) -> np.ndarray:
        """The split's token stream, memory-mapped once (read per document in the loops)."""
        return self.corpus.tokens(self.split)

    def tokens(self, i: int) -> np.ndarray:
        """Token ids of the i-th document (of this set)."""
        start, end = self.spans[i]
        return np.asarray(self.stream[start:end])

    def text(self, i: int) -> str:
        """The i-th document as words."""
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_file(str(self.corpus.tokenizer_path))
        return self._tokenizer.decode(self.tokens(i).tolist())

    def texts(self) -> list[str]:
        return [self.text(i) for i in range(len(self))]

    @cached_property
    def facts(self) -> DocFacts:
        """The facts every document of the split states (read once)."""
        return self.corpus.doc_facts(self.split)

    def stating(self, query: Query) -> np.ndarray:
        """bool [n]: which of these documents state the query's fact (the truth; none for a
        free prompt)."""
        if query.row < 0:
            return np.zeros(len(self), dtype=bool)
        if query.row not in self._stating:  # asked per method and per report section
            self._stating[query.row] = self.facts.mentioning([query.row])[self.index]
        return self._stating[query.row]


def select_documents(corpus: Corpus, qs: Sequence[Query], others: int | None = None,
                     *, seed: int = 0) -> Documents:
    """All training documents (`others=None`), or every document stating a queried fact plus
    `others` random other documents (seeded), in split order."""
    n_docs = len(corpus.docs("train"))
    if others is None:
        return Documents(corpus, np.arange(n_docs, dtype=np.int64))
    if others < 0:
        raise ValueError(f"--candidates {others}; pass 0 or more (other documents), or all")
    truth = corpus.doc_facts("train").mentioning([q.row for q in qs if q.row >= 0])
    stating = np.flatnonzero(truth)
    rest = np.flatnonzero(~truth).tolist()
    extra = random.Random(seed).sample(rest, min(len(rest), others))
    return Documents(corpus, np.sort(np.concatenate([stating, np.asarray(extra, np.int64)])))
