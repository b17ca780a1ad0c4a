"""Read a corpus directory written by `build_corpus` or `build_text_corpus`."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from workbench.world.corpus import SCHEMA
from workbench.world.docfacts import DocFacts
from workbench.world.facts import World
from workbench.world.output import MANIFEST, load_npz_mmap

T = TypeVar("T")
# what a damaged corpus file raises while it is read
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile)


def _read(path: Path, read: Callable[[Path], T]) -> T:
    """`read(path)`, or one ValueError naming the damaged (or missing) corpus file."""
    try:
        return read(path)
    except READ_ERRORS as exc:
        if isinstance(exc, FileNotFoundError):
            raise FileNotFoundError(f"corpus file {path} is missing; rebuild the corpus "
                                    f"({_REBUILD})") from exc
        raise ValueError(f"corpus file {path} is damaged or truncated ({exc}); rebuild the "
                         f"corpus ({_REBUILD})") from exc


_REBUILD = "`workbench world build --overwrite` or `workbench world retokenize --overwrite`"


# The fields every item of an evaluation set has (what the analyses read).
_FACT_FIELDS = ("subject", "relation", "prefix", "answer", "candidates", "bucket")
EVAL_FIELDS: dict[str, tuple[str, ...]] = {
    "facts_train": _FACT_FIELDS, "facts_heldout": _FACT_FIELDS, "facts_twohop": _FACT_FIELDS,
    "agreement": ("prefix", "correct", "wrong", "number"),
    "fewshot": ("task", "k", "prefix", "answer", "candidates", "demos"),
}


def _check_ids(path: Path, tokens: np.ndarray, vocab_size: int) -> None:
    """Refuse a token stream holding ids the vocabulary lacks (one pass, ~10 ms per 8 M)."""
    if not len(tokens):
        return
    hi, lo = int(tokens.max()), int(tokens.min())
    if hi >= vocab_size or lo < 0:
        at = int(np.argmax((tokens >= vocab_size) | (tokens < 0)))
        raise ValueError(f"corpus file {path} is damaged: token id {tokens[at]} at position "
                         f"{at} is outside the vocabulary (0..{vocab_size - 1}); rebuild the "
                         f"corpus ({_REBUILD})")


@dataclass
class Corpus:
    """A corpus on disk: token streams per split, labels, tokenizer and evaluation items.

    >>> # corpus = load_corpus("runs/world"); corpus.tokens("train")[:10]
    """

    path: Path
    manifest: dict[str, Any]
    _checked: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False,
                                           compare=False)

    @property
    def kind(self) -> str:
        """`world` (labelled synthetic corpus) or `text` (real text, no labels)."""
        return str(self.manifest["kind"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest["files"]["tokenizer"]

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["files"]["splits"])

    def _file(self, split: str, what: str) -> Path:
        files = self.manifest["files"]["splits"]
        if split not in files:
            raise ValueError(f"unknown split {split!r}; corpus at {self.path} has {list(files)}")
        return self.path / files[split][what]

    def tokens(self, split: str) -> np.ndarray:
        """Flat token stream of `split` (memory-mapped; documents start with <bos>). The
        first read of a split checks every id against the vocabulary."""
        path = self._file(split, "tokens")
        out = _read(path, lambda p: np.load(p, mmap_mode="r"))
        if ("tokens", split) not in self._checked:
            _check_ids(path, out, self.vocab_size)
            self._checked.add(("tokens", split))
        return out

    def docs(self, split: str) -> np.ndarray:
        """int64 [n_docs, 2]: start and end offset of each document in `tokens(split)`."""
        return _read(self._file(split, "docs"), np.load)

    def labels(self, split: str) -> dict[str, np.ndarray]:
        """Per-token int16 labels (-1 = none) and per-document `doc_kind` (world corpora).

        Label ids index `manifest["label_names"][key]`; `doc_kind` indexes
        `manifest["doc_kinds"]`; `person` indexes `world().people`; `depth` is the depth.
        """
        if self.kind != "world":
            raise ValueError(
                f"corpus at {self.path} is a real-text corpus and has no labels; build a world "
                "corpus with `workbench world build`"
            )
        path = self._file(split, "labels")
        first = ("labels", split) not in self._checked
        out = _read(path, lambda p: load_npz_mmap(p, check=first))  # CRC: on the first read
        if first:
            self._check_labels(path, out)
            self._checked.add(("labels", split))
        return out

    def _check_labels(self, path: Path, labels: dict[str, np.ndarray]) -> None:
        """Every label within its classes (-1: none), every document kind a known one."""
        n_people = len(self.world().people)
        for key, values in labels.items():
            if not len(values):
                continue
            names = (self.manifest.get("doc_kinds") if key == "doc_kind"
                     else self.manifest["label_names"].get(key))
            low = 0 if key == "doc_kind" else -1
            high = (len(names) if names is not None else n_people if key == "person"
                    else None)
            lo, hi = int(values.min()), int(values.max())
            if lo < low or (high is not None and hi >= high):
                bad = lo if lo < low else hi
                raise ValueError(f"corpus file {path} is damaged: label {key!r} holds {bad}, "
                                 f"outside {low}..{'' if high is None else high - 1}; rebuild "
                                 f"the corpus ({_REBUILD})")

    def label_names(self, key: str) -> list[str] | None:
        return self.manifest["label_names"].get(key)

    def world(self) -> World:
        """The people and places of a world corpus."""
        if self.kind != "world":
            raise ValueError(f"corpus at {self.path} is a real-text corpus and has no world")
        return _read(self.path / self.manifest["files"]["world"],
                     lambda p: World.from_dict(json.loads(p.read_text())["world"]))

    def fact_table(self) -> list[dict[str, Any]]:
        """Every fact of a world corpus with its exposure and training mentions."""
        if self.kind != "world":
            raise ValueError(f"corpus at {self.path} is a real-text corpus and has no facts")
        return _read(self.path / self.manifest["files"]["world"],
                     lambda p: json.loads(p.read_text())["facts"])

    def doc_facts(self, split: str) -> DocFacts:
        """The facts each document of `split` states (`docfacts.DocFacts`: `df[d]` is a list
        of `(person, relation)`; `df.indices(d)` their rows in `fact_table()`).

        Raises:
            ValueError: a real-text corpus, or a world built before documents' facts were
                recorded (rebuild it).
        """
        if self.kind != "world":
            raise ValueError(f"corpus at {self.path} is a real-text corpus and has no facts")
        self._file(split, "tokens")  # an unknown split is refused here
        name = self.manifest["files"]["splits"][split].get("doc_facts")
        if name is None:
            raise ValueError(f"corpus at {self.path} records no facts per document (built "
                             "before they were); rebuild the world with `workbench world "
                             "build --overwrite` and its settings (a sweep's world: delete it "
                             "and run `workbench sweep world PLAN`)")
        table = [(int(f["person"]), str(f["relation"])) for f in self.fact_table()]
        return _read(self.path / name, lambda p: DocFacts.load(p, table))

    def eval_items(self, name: str) -> list[dict[str, Any]]:
        """Items of `eval/{name}.jsonl` (facts_train, facts_heldout, facts_twohop, agreement)."""
        files = self.manifest["files"].get("eval", {})
        if name not in files:
            raise ValueError(
                f"corpus at {self.path} has no evaluation set {name!r}; it has "
                f"{sorted(files) or 'none (real-text corpus)'}"
            )
        def read(path: Path) -> list[dict[str, Any]]:
            with path.open() as f:
                return [json.loads(line) for line in f if line.strip()]
        items = _read(self.path / files[name], read)
        need = EVAL_FIELDS.get(name, ())
        for i, item in enumerate(items, 1):
            missing = [k for k in need if k not in item] if isinstance(item, dict) else need
            if missing:
                raise ValueError(f"corpus file {self.path / files[name]} is damaged: item {i} "
                                 f"lacks {', '.join(missing)}; rebuild the corpus ({_REBUILD})")
        return items


def load_corpus(path: str | Path) -> Corpus:
    """Open the corpus directory `path` (reads only the manifest)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"no corpus at {path} ({manifest_path} not found); run "
            f"`workbench world build --out {path}` to build one"
        )
    manifest = _read(manifest_path, lambda p: json.loads(p.read_text()))
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(
            f"{manifest_path} has schema {found!r}, expected {SCHEMA!r}; rebuild the corpus "
            "with `workbench world build --overwrite`"
        )
    try:
        splits = manifest["files"]["splits"]
        ok = (manifest["kind"] in ("world", "text") and int(manifest["vocab_size"]) > 0
              and isinstance(manifest["files"]["tokenizer"], str) and isinstance(splits, dict)
              and all(isinstance(v, dict) and "tokens" in v for v in splits.values()))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{manifest_path} lacks or mangles the fields a corpus manifest has "
                         "(kind, vocab_size, files); rebuild the corpus with `workbench world "
                         "build --overwrite`")
    return Corpus(path, manifest)
