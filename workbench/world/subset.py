"""A world corpus without some of its training documents: "retrain without these documents"
as a corpus like any other.

A `Drop` rule names the training documents to leave out, in one of three ways:

- `facts`: every document that states any of these facts (`{split}.doc_facts.npz`). A fact
  is written `"SUBJECT:RELATION"`, SUBJECT being the person's name as the world spells it
  (the `subject` of eval items and of `world.json`'s fact table, e.g. `"bruno moreau:city"`)
  or the person's id (their `person`, e.g. `"0:city"`); a table `{subject = ..., relation =
  ...}` or `{person = ..., relation = ...}` (as copied from an eval item) says the same;
- `fraction` (and `seed`): a random share of the documents (of documents, not tokens);
- `docs`: these document indices of the train split (e.g. the top-k of a data attribution).

`write_subset(base, out, rule)` writes the base corpus with its train split filtered
(tokens, documents re-based, labels, facts per document); val, test, the evaluation sets,
the tokenizer and `world.json` are the base's (hard links where the file system allows, else
copies), so results on them compare with the base's. `world.json` and the eval items keep
the base's training `mentions`; the subset's own are `Corpus.doc_facts("train").counts()`.
Besides the base's files it holds:

```
train.dropped_docs.npy   int64: the base train split's indices of the documents left out
corpus.json "subset":    {"schema": "workbench.subset/1", "name", "rule" (Drop.to_dict()),
                          "facts": [{"row", "person", "subject", "relation"}] (facts rule),
                          "base": {"path", "train_sha256", "n_docs", "n_tokens"},
                          "removed": {"n_docs", "n_tokens"},
                          "dropped_docs": "train.dropped_docs.npy"}
```

`train_sha256` identifies the base's train split (its tokens file, then its docs file).
Writing the same rule on the same base again changes nothing; another subset at `out` is
refused.

>>> Drop.from_dict({"facts": ["bruno moreau:city", {"person": 2, "relation": "job"}]}).facts
('bruno moreau:city', '2:job')
>>> Drop(fraction=0.1, seed=1).to_dict()
{'fraction': 0.1, 'seed': 1}
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.hints import did_you_mean
from workbench.outputs import check_separate
from workbench.world.facts import RELATIONS, World
from workbench.world.loader import Corpus, load_corpus
from workbench.world.output import MANIFEST, atomic_output_dir, save_npz, write_json, write_split

log = logging.getLogger(__name__)

SUBSET_SCHEMA = "workbench.subset/1"
DROPPED_FILE = "train.dropped_docs.npy"
RULE_KEYS = ("facts", "fraction", "seed", "docs")
FACT_FORM = ('"SUBJECT:RELATION" (SUBJECT: the person\'s name as the world spells it, or '
             'their id), or a table {subject|person = ..., relation = ...}')


def _fact_text(where: str, raw: Any) -> str:
    """A fact as `"SUBJECT:RELATION"` from a string or an eval-item-like table."""
    if isinstance(raw, Mapping):
        keys = set(raw) - {"object", "answer"}  # copied along from an eval item: ignored
        who = [k for k in ("subject", "person") if k in keys]
        if "relation" not in keys or not who or keys - {"subject", "person", "relation"}:
            raise ValueError(f"{where}: fact {dict(raw)} is not {FACT_FORM}")
        subject = raw["person"] if "person" in raw else raw["subject"]
        if isinstance(subject, bool) or not isinstance(subject, (int, str)):
            raise ValueError(f"{where}: fact {dict(raw)} is not {FACT_FORM}")
        return f"{subject}:{raw['relation']}"
    if not isinstance(raw, str) or ":" not in raw:
        raise ValueError(f"{where}: fact {raw!r} is not {FACT_FORM}")
    subject, relation = raw.rsplit(":", 1)
    return f"{' '.join(subject.split())}:{relation.strip()}"


@dataclass(frozen=True)
class Drop:
    """Which training documents a subset leaves out: give exactly one of `facts`,
    `fraction` (with `seed`) or `docs` (see the module docstring).

    Args:
        facts: `"SUBJECT:RELATION"` facts; every document stating one of them goes.
        fraction: the share of documents that goes, in (0, 1): round(fraction x n_docs).
        seed: the draw of `fraction`'s documents.
        docs: indices of documents in the train split.
    """

    facts: tuple[str, ...] = ()
    fraction: float | None = None
    seed: int = 0
    docs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        given = [k for k, v in (("facts", self.facts), ("fraction", self.fraction),
                                ("docs", self.docs)) if v not in ((), None)]
        if not given:
            raise ValueError("drop rule is empty; give facts = [\"SUBJECT:RELATION\", ...], "
                             "fraction = F (with seed = S) or docs = [i, ...]")
        if len(given) > 1:
            raise ValueError(f"drop rule gives {' and '.join(given)}; give one of facts, "
                             "fraction or docs (one rule per name)")
        f = self.fraction
        if f is not None and (isinstance(f, bool) or not isinstance(f, (int, float))
                              or not 0 < f < 1):
            raise ValueError(f"drop rule: fraction {f!r} is not in (0, 1); give the share of "
                             "training documents to leave out, e.g. 0.1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"drop rule: seed {self.seed!r}; give an integer >= 0")
        for i in self.docs:
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise ValueError(f"drop rule: document index {i!r}; give integers >= 0 (rows "
                                 "of the train split's docs)")
        if len(set(self.docs)) != len(self.docs):
            raise ValueError("drop rule: docs lists an index twice; list each once")
        for fact in self.facts:
            subject, _, relation = fact.rpartition(":")
            if not subject or relation not in RELATIONS:
                hint = did_you_mean(relation, list(RELATIONS))
                raise ValueError(f"drop rule: fact {fact!r} is not SUBJECT:RELATION with a "
                                 f"relation of {', '.join(RELATIONS)}{hint}")
        if len(set(self.facts)) != len(self.facts):
            raise ValueError(f"drop rule: facts {list(self.facts)} name a fact twice; list "
                             "each once")

    @property
    def kind(self) -> str:
        """`facts`, `fraction` or `docs`."""
        return "facts" if self.facts else "fraction" if self.fraction is not None else "docs"

    def to_dict(self) -> dict[str, Any]:
        """The rule as a spec's `[drop.NAME]` table gives it (`from_dict` reads it back)."""
        if self.kind == "fraction":
            return {"fraction": self.fraction, "seed": self.seed}
        return {self.kind: list(getattr(self, self.kind))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "drop rule") -> Drop:
        """A rule from a table: `facts`, `fraction` (+ `seed`) or `docs`.

        Raises:
            ValueError: an unknown key, a `seed` without `fraction`, a malformed fact or an
                invalid value (naming it and the fix).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} is not a table; give facts = [...], fraction = F or "
                             "docs = [...]")
        for key in data:
            if key not in RULE_KEYS:
                raise ValueError(f"{where}: unknown key {key!r}{did_you_mean(key, RULE_KEYS)}; "
                                 f"use one of {', '.join(RULE_KEYS)}")
        if "seed" in data and "fraction" not in data:
            raise ValueError(f"{where}: seed is for fraction; give fraction = F with it or "
                             "drop the seed")
        facts, docs = data.get("facts", ()), data.get("docs", ())
        for key, value in (("facts", facts), ("docs", docs)):
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}: {key} must be a list, e.g. {key} = [...]")
        if "facts" in data and not facts or "docs" in data and not docs:
            raise ValueError(f"{where}: an empty list drops nothing; name what to drop")
        try:
            return cls(facts=tuple(_fact_text(where, f) for f in facts),
                       fraction=data.get("fraction"), seed=data.get("seed", 0),
                       docs=tuple(docs))
        except ValueError as exc:
            raise ValueError(f"{where}: {str(exc).removeprefix('drop rule: ')}") from exc

    def resolve_facts(self, world: World) -> list[dict[str, Any]]:
        """The rule's facts in `world`: `{"row", "person", "subject", "relation"}` each,
        `row` indexing the fact table (`World.fact_table()`, `world.json` "facts").

        Raises:
            ValueError: a person the world lacks, or a fact no document states (a two-hop
                country that is never stated).
        """
        by_name = {p.name: i for i, p in enumerate(world.people)}
        out = []
        for fact in self.facts:
            subject, _, relation = fact.rpartition(":")
            if subject.isdigit():
                pid = int(subject)
                if pid >= len(world.people):
                    raise ValueError(f"drop rule: fact {fact!r}: the world has no person "
                                     f"{pid} (ids 0-{len(world.people) - 1})")
            elif subject.lower() in by_name:
                pid = by_name[subject.lower()]
            else:
                hint = did_you_mean(subject.lower(), by_name)
                raise ValueError(f"drop rule: fact {fact!r}: the world has no person "
                                 f"{subject!r}{hint}; name a "
                                 "person as its eval items' `subject` (or `person` id) does")
            if not world.stated(pid, relation):
                raise ValueError(f"drop rule: fact {fact!r} is never stated in text (a "
                                 "two-hop country), so no document states it; name a stated "
                                 "fact")
            out.append({"row": pid * len(RELATIONS) + RELATIONS.index(relation),
                        "person": pid, "subject": world.people[pid].name,
                        "relation": relation})
        return out

    def dropped(self, corpus: Corpus) -> np.ndarray:
        """int64, ascending: the indices of the train documents of `corpus` the rule drops.

        Raises:
            ValueError: a document index past the split, or a corpus without facts per
                document (facts rule).
        """
        n = len(corpus.docs("train"))
        if self.kind == "facts":
            rows = [f["row"] for f in self.resolve_facts(corpus.world())]
            return np.flatnonzero(corpus.doc_facts("train").mentioning(rows)).astype(np.int64)
        if self.kind == "fraction":
            k = round(float(self.fraction or 0.0) * n)
            chosen = np.random.default_rng(self.seed).choice(n, size=k, replace=False)
            return np.sort(chosen).astype(np.int64)
        bad = [i for i in self.docs if i >= n]
        if bad:
            raise ValueError(f"drop rule: document index {bad[0]} is past the train split of "
                             f"{corpus.path} ({n} documents, 0-{n - 1}); give indices below {n}")
        return np.asarray(sorted(self.docs), dtype=np.int64)


@dataclass(frozen=True)
class Subset:
    """What `write_subset` left at `path`: `built` (now, or present already), the documents
    and tokens removed."""

    path: Path
    built: bool
    n_docs_removed: int
    n_tokens_removed: int


def train_sha256(corpus: Corpus) -> str:
    """The identity of a corpus's train split: sha256 of its tokens file, then its docs file."""
    h = hashlib.sha256()
    files = corpus.manifest["files"]["splits"]["train"]
    for key in ("tokens", "docs"):
        with open(corpus.path / files[key], "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, dst)


def _existing(out: Path, rule: Drop, sha: str) -> Subset | None:
    """The subset already at `out` when it is this one; None when `out` is empty or new.

    Raises:
        ValueError: `out` holds something else.
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    try:
        record = json.loads((out / MANIFEST).read_text()).get("subset") or {}
    except (OSError, ValueError, AttributeError):
        record = {}
    if record.get("rule") == rule.to_dict() and record.get("base", {}).get(
            "train_sha256") == sha:
        removed = record.get("removed", {})
        return Subset(out, False, int(removed.get("n_docs", 0)),
                      int(removed.get("n_tokens", 0)))
    what = (f"the subset {record.get('rule')} of another base" if record.get("rule") ==
            rule.to_dict() else f"the subset {record.get('rule')}" if record else
            "something that is not a subset")
    raise ValueError(f"{out} holds {what}, not {rule.to_dict()} of this base; remove it or "
                     "choose another out")


def write_subset(base: str | Path, out: str | Path, rule: Drop, *, name: str = "") -> Subset:
    """Write the world corpus `base` without the training documents `rule` drops, at `out`
    (see the module docstring for what it holds).

    Args:
        base: a world corpus directory.
        out: the subset's directory: new, empty, or this very subset (then nothing is done).
        rule: which training documents go.
        name: the rule's name (recorded).

    Returns:
        Where it is, whether it was written now, and what was removed.

    Raises:
        ValueError: `base` is not a world corpus or `out` lies in it; `out` holds another
            corpus; the rule names a fact, person or document the base lacks, or leaves no
            document.
    """
    base, out = Path(base), Path(out)
    corpus = load_corpus(base)
    if corpus.kind != "world":
        raise ValueError(f"corpus at {base} is a real-text corpus; a drop rule needs a world "
                         "corpus (`workbench world build`)")
    check_separate(out, {"base": base})
    sha = train_sha256(corpus)
    present = _existing(out, rule, sha)
    if present is not None:
        return present
    docs = corpus.docs("train")
    dropped = rule.dropped(corpus)
    keep = np.ones(len(docs), dtype=bool)
    keep[dropped] = False
    if not keep.any():
        raise ValueError(f"drop rule {rule.to_dict()} leaves no training document of {base}; "
                         "drop fewer")
    lengths = docs[:, 1] - docs[:, 0]
    token_keep = np.repeat(keep, lengths)
    tokens = np.asarray(corpus.tokens("train"))[token_keep]
    kept_lengths = lengths[keep]
    new_docs = np.stack([np.cumsum(kept_lengths) - kept_lengths, np.cumsum(kept_lengths)], 1)
    labels = {k: np.asarray(v)[keep if k == "doc_kind" else token_keep]
              for k, v in corpus.labels("train").items()}
    doc_facts = corpus.doc_facts("train").take(keep)
    manifest = copy.deepcopy(corpus.manifest)
    kinds = manifest["doc_kinds"]
    by_kind = np.bincount(labels["doc_kind"], weights=kept_lengths, minlength=len(kinds))
    manifest["splits"]["train"] = {**manifest["splits"]["train"],
                                   "n_tokens": int(len(tokens)), "n_docs": int(keep.sum()),
                                   "tokens_by_kind": {k: int(by_kind[i])
                                                      for i, k in enumerate(kinds)}}
    removed = {"n_docs": int(len(dropped)), "n_tokens": int(len(token_keep) - len(tokens))}
    record: dict[str, Any] = {"schema": SUBSET_SCHEMA, "name": name, "rule": rule.to_dict()}
    if rule.kind == "facts":
        record["facts"] = rule.resolve_facts(corpus.world())
    record |= {"base": {"path": str(base.resolve()), "train_sha256": sha,
                        "n_docs": int(len(docs)), "n_tokens": int(len(token_keep))},
               "removed": removed, "dropped_docs": DROPPED_FILE}
    manifest["subset"] = record
    files = manifest["files"]
    shared = [files["tokenizer"], files["world"], *files.get("eval", {}).values()]
    shared += [f for split, fs in files["splits"].items() if split != "train" for f in
               fs.values()]
    with atomic_output_dir(out, overwrite=False) as tmp:
        for rel in shared:
            _link(base / rel, tmp / rel)
        train = write_split(tmp, "train", tokens, new_docs, corpus.vocab_size)
        save_npz(tmp / "train.labels.npz", labels)
        doc_facts.save(tmp / "train.doc_facts.npz")
        files["splits"]["train"] = {**train, "labels": "train.labels.npz",
                                    "doc_facts": "train.doc_facts.npz"}
        np.save(tmp / DROPPED_FILE, dropped, allow_pickle=False)
        write_json(tmp / MANIFEST, manifest)
    log.info("subset %s of %s: %d documents (%d tokens) left out -> %s", name or "",
             base, removed["n_docs"], removed["n_tokens"], out)
    return Subset(out, True, removed["n_docs"], removed["n_tokens"])


def dropped_docs(corpus: Corpus) -> np.ndarray:
    """The base train split's indices of the documents a subset corpus left out (empty for a
    corpus that is no subset)."""
    record = corpus.manifest.get("subset")
    if not record:
        return np.zeros(0, dtype=np.int64)
    return np.load(corpus.path / record["dropped_docs"])

