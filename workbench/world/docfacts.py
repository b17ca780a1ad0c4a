"""Which facts each document states: `{split}.doc_facts.npz`, a compressed sparse row table.

```
offsets  int64 [n_docs + 1]  document d's facts are facts[offsets[d]:offsets[d + 1]]
facts    int32 [n_mentions]  indices into the world's fact table (`world.json` "facts",
                             `Corpus.fact_table()`), in the order the document states them;
                             a fact stated twice is listed twice
```

A document's facts are the true facts it states (`Document.facts`): what the fact table's
training `mentions` counts, so `np.bincount(facts)` over the train split is those counts.

>>> table = [(0, "city"), (0, "job"), (1, "city")]
>>> df = DocFacts.from_lists([[0, 1], [], [2, 2]], table)
>>> len(df), df[0], df.mentioning([2]).tolist()
(3, [(0, 'city'), (0, 'job')], [False, False, True])
>>> df.take(np.array([True, False, True])).offsets.tolist()
[0, 2, 4]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.world.output import load_npz_mmap, save_npz

Fact = tuple[int, str]  # (person id, relation)


def fact_index(table: Sequence[Fact]) -> dict[Fact, int]:
    """`(person, relation)` -> its row in the fact table."""
    return {fact: i for i, fact in enumerate(table)}


@dataclass(frozen=True)
class DocFacts:
    """The facts of every document of a split (see the module docstring for the layout).

    Args:
        offsets: int64 [n_docs + 1], starting at 0, non-decreasing.
        facts: int32 [n_mentions], fact-table rows.
        table: the fact table's `(person, relation)` per row (decodes `facts`).
    """

    offsets: np.ndarray
    facts: np.ndarray
    table: tuple[Fact, ...] = field(default=())

    def __post_init__(self) -> None:
        off = self.offsets
        if off.ndim != 1 or len(off) < 1 or off[0] != 0 or off[-1] != len(self.facts) or (
                len(off) > 1 and np.any(np.diff(off) < 0)):
            raise ValueError(f"doc facts: offsets (length {len(off)}) do not index the "
                             f"{len(self.facts)} facts; rebuild the world with `workbench "
                             "world build --overwrite`")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def indices(self, doc: int) -> np.ndarray:
        """Fact-table rows that document `doc` states."""
        return self.facts[self.offsets[doc]:self.offsets[doc + 1]]

    def __getitem__(self, doc: int) -> list[Fact]:
        """`(person, relation)` of each fact document `doc` states."""
        return [self.table[int(i)] for i in self.indices(doc)]

    def mentioning(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """bool [n_docs]: whether each document states any of the fact-table `rows`."""
        hit = np.isin(self.facts, np.asarray(rows, dtype=np.int64))
        before = np.concatenate([[0], np.cumsum(hit, dtype=np.int64)])  # hits before each row
        return before[self.offsets[1:]] > before[self.offsets[:-1]]

    def counts(self, n_facts: int | None = None) -> np.ndarray:
        """int64 [n_facts]: how many times each fact is stated over the split."""
        n = len(self.table) if n_facts is None else n_facts
        return np.bincount(self.facts, minlength=n).astype(np.int64)

    def take(self, keep: np.ndarray) -> DocFacts:
        """The documents where `keep` (bool [n_docs]) is true, in order."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError(f"keep has shape {keep.shape}; pass one bool per document "
                             f"({len(self)})")
        lengths = np.diff(self.offsets)
        offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
        facts = self.facts[np.repeat(keep, lengths)].astype(np.int32)
        return DocFacts(offsets, facts, self.table)

    @classmethod
    def from_lists(cls, per_doc: Sequence[Sequence[int]], table: Sequence[Fact] = ()
                   ) -> DocFacts:
        """From one list of fact-table rows per document."""
        lengths = np.fromiter((len(f) for f in per_doc), np.int64, count=len(per_doc))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        facts = np.fromiter((i for f in per_doc for i in f), np.int32, count=int(offsets[-1]))
        return cls(offsets, facts, tuple(table))

    def save(self, path: Path) -> None:
        """Write `offsets` and `facts` to `path` (`.npz`, byte-reproducible)."""
        save_npz(path, {"offsets": self.offsets.astype(np.int64),
                        "facts": self.facts.astype(np.int32)})

    @classmethod
    def load(cls, path: Path, table: Sequence[Fact] = ()) -> DocFacts:
        """Read what `save` wrote (the arrays memory-mapped)."""
        arrays = load_npz_mmap(path)
        return cls(np.asarray(arrays["offsets"]), arrays["facts"], tuple(table))
