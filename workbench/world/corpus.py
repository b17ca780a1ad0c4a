"""Build a labelled world corpus directory (`workbench world build`).

Layout of `out_dir`:

    corpus.json                 manifest (schema workbench.corpus/1): config, sizes, label names
    tokenizer.json              word-level tokenizer (ids 0-3: <pad> <unk> <bos> <eos>)
    world.json                  people (exposure, standing), attributes, cities, fact table
                                (with each fact's training mentions), held-out templates
    {split}.tokens.npy          flat token stream, every document starts with <bos>
    {split}.docs.npy            int64 [n_docs, 2] start/end offsets into the stream
    {split}.labels.npz          int16 per token: pos depth number category animacy sentiment
                                person (-1 = no label); int8 per document: doc_kind
    {split}.doc_facts.npz       the facts each document states: int64 offsets [n_docs + 1],
                                int32 facts (rows of world.json's fact table); `docfacts.py`
    eval/facts_train.jsonl      fact queries in training templates
    eval/facts_heldout.jsonl    fact queries in held-out templates (in no split's text)
    eval/facts_twohop.jsonl     "<person> lives in the country of" for the people whose
                                country is never stated (person -> city -> country)
    eval/agreement.jsonl        subject-verb agreement across an attractor
    eval/fewshot.jsonl          k-shot items of every few-shot task (fewshot.py)

Fact items carry the person's `exposure`, `standing`, `bucket` and the fact's training
`mentions`, so every result can be split by how often a fact was seen.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from workbench.world.docfacts import DocFacts, fact_index
from workbench.world.documents import DocumentSampler
from workbench.world.facts import RELATIONS, World, WorldConfig, build_world, exposure_bucket
from workbench.world.fewshot import FewShotTasks
from workbench.world.grammar import agreement_items
from workbench.world.labels import (
    ANIMACY,
    CATEGORIES,
    DOC_KINDS,
    LABEL_NAMES,
    NUMBERS,
    POS_TAGS,
    SENTIMENTS,
    SPECIAL_TOKENS,
)
from workbench.world.lexicon import lexical_labels
from workbench.world.output import (
    atomic_output_dir,
    check_output_dir,
    save_npz,
    write_json,
    write_jsonl,
    write_split,
)
from workbench.world.templates import (
    RELATION_PHRASES,
    Template,
    all_templates,
    fact_query,
    heldout_templates,
    train_templates,
)
from workbench.world.tokenizer import build_world_tokenizer, world_words

log = logging.getLogger(__name__)

SCHEMA = "workbench.corpus/1"
SPLITS = ("train", "val", "test")
DEFAULT_N_TOKENS_TRAIN = 8_000_000
MIN_EVAL_SPLIT_TOKENS = 1024  # val/test hold at least this many tokens (validation windows)
_FLUSH = 1 << 18

_POS_ID = {"-": -1, **{t: i for i, t in enumerate(POS_TAGS)}}
_NUMBER_ID = {"-": -1, **{t: i for i, t in enumerate(NUMBERS)}}


@dataclass
class _Split:
    tokens: np.ndarray
    docs: np.ndarray
    labels: dict[str, np.ndarray]
    tokens_by_kind: dict[str, int]
    mentions: dict[tuple[int, str], int]
    doc_facts: list[list[tuple[int, str]]]  # per document, the facts it states


def _lexical_tables(vocab: dict[str, int]) -> dict[str, np.ndarray]:
    """Per token id: category / animacy / sentiment label id (-1 where none)."""
    names = {"category": CATEGORIES, "animacy": ANIMACY, "sentiment": SENTIMENTS}
    tables = {k: np.full(len(vocab), -1, dtype=np.int16) for k in names}
    for word, labels in lexical_labels().items():
        for key, value in labels.items():
            tables[key][vocab[word]] = names[key].index(value)
    return tables


def _generate_split(
    sampler: DocumentSampler,
    rng: random.Random,
    n_tokens: int,
    vocab: dict[str, int],
    desc: str,
    progress: bool,
) -> _Split:
    cols: dict[str, list[int]] = {k: [] for k in ("tokens", "pos", "depth", "number", "person")}
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in cols}
    starts: list[int] = []
    kinds: list[int] = []
    by_kind: dict[str, int] = defaultdict(int)
    mentions: dict[tuple[int, str], int] = defaultdict(int)
    doc_facts: list[list[tuple[int, str]]] = []
    n = 0

    def flush() -> None:
        for k, values in cols.items():
            chunks[k].append(np.asarray(values, dtype=np.int32 if k == "tokens" else np.int16))
            values.clear()

    with tqdm(total=n_tokens, desc=desc, unit="tok", disable=not progress, leave=False) as bar:
        while n < n_tokens:
            doc = sampler.sample(rng)
            words, pos, depth, number, person = zip(*doc.rows)
            try:
                cols["tokens"].extend([vocab[w] for w in words])
            except KeyError as err:  # a generator emitted a word world_words() lacks
                raise RuntimeError(f"word {err} is missing from the world vocabulary") from err
            cols["pos"].extend([_POS_ID[p] for p in pos])
            cols["depth"].extend(depth)
            cols["number"].extend([_NUMBER_ID[x] for x in number])
            cols["person"].extend(person)
            starts.append(n)
            kinds.append(DOC_KINDS.index(doc.kind))
            by_kind[doc.kind] += len(words)
            for fact in doc.facts:
                mentions[fact] += 1
            doc_facts.append(list(doc.facts))
            n += len(words)
            bar.update(len(words))
            if len(cols["tokens"]) >= _FLUSH:
                flush()
    flush()
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    tokens = arrays.pop("tokens")
    ends = starts[1:] + [n]
    docs = np.stack([np.asarray(starts, np.int64), np.asarray(ends, np.int64)], axis=1)
    labels = {"pos": arrays["pos"], "depth": arrays["depth"], "number": arrays["number"]}
    labelled = labels["pos"] >= 0  # category/animacy/sentiment only where a word has a POS
    for key, table in _lexical_tables(vocab).items():
        labels[key] = np.where(labelled, table[tokens], -1).astype(np.int16)
    labels["person"] = arrays["person"]
    labels["doc_kind"] = np.asarray(kinds, dtype=np.int8)
    return _Split(tokens, docs, labels, {k: by_kind.get(k, 0) for k in DOC_KINDS},
                  dict(mentions), doc_facts)


def _stratified(items: list[dict[str, Any]], cap: int, rng: random.Random) -> list[dict[str, Any]]:
    """Up to `cap` items, spread over (person, relation) pairs, in a mixed order.

    Layer k holds the k-th (shuffled) item of every pair, so any prefix of the result covers
    as many pairs as it can; callers may truncate.
    """
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        groups[(it["person"], it["relation"])].append(it)
    for g in groups.values():
        rng.shuffle(g)
    out: list[dict[str, Any]] = []
    for k in range(max((len(g) for g in groups.values()), default=0)):
        layer = [g[k] for g in groups.values() if k < len(g)]
        rng.shuffle(layer)
        out += layer
    return out[:cap]


def _fact_items(
    world: World,
    templates: dict[str, list[Template]],
    cap: int,
    rng: random.Random,
    mentions: dict[tuple[int, str], int],
    stated: bool = True,
) -> list[dict[str, Any]]:
    """Queries of the facts that are (`stated`) or are not stated in text."""
    items = [
        fact_query(world, pid, t) | _exposure(world, pid, rel, mentions)
        for rel, ts in templates.items()
        for pid in range(len(world.people))
        if world.stated(pid, rel) == stated
        for t in ts
    ]
    return _stratified(items, cap, rng)


def _exposure(world: World, pid: int, rel: str, mentions: dict[tuple[int, str], int]
              ) -> dict[str, Any]:
    p = world.people[pid]
    return {"exposure": p.exposure, "standing": p.standing,
            "bucket": exposure_bucket(p.standing), "mentions": mentions.get((pid, rel), 0)}


def _eval_sets(world: World, n_items: int, mentions: dict[tuple[int, str], int]
               ) -> dict[str, list[dict[str, Any]]]:
    seed = world.config.seed

    def rng(name: str) -> random.Random:
        return random.Random(f"world:{seed}:eval:{name}")

    return {
        "facts_train": _fact_items(
            world, {r: train_templates(r) for r in RELATIONS}, n_items, rng("facts_train"),
            mentions,
        ),
        "facts_heldout": _fact_items(
            world, {r: heldout_templates(r) for r in RELATIONS}, n_items,
            rng("facts_heldout"), mentions,
        ),
        "facts_twohop": _fact_items(
            world, {"country": all_templates("country")}, n_items, rng("facts_twohop"),
            mentions, stated=False,
        ),
        "agreement": agreement_items(n_items, seed),
        "fewshot": FewShotTasks(world).eval_items(),
    }


def _world_record(world: World, mentions: dict[tuple[int, str], int]) -> dict[str, Any]:
    templates = {}
    for rel in RELATION_PHRASES:
        templates[rel] = {
            "train": [t.id for t in train_templates(rel)],
            "heldout": [t.id for t in heldout_templates(rel)],
            "text": {t.id: t.frame.text.replace("{R}", t.phrase) for t in all_templates(rel)},
        }
    return {
        "schema": "workbench.world/1",
        "world": world.to_dict(),
        "facts": [f | {"mentions": mentions.get((f["person"], f["relation"]), 0)}
                  for f in world.fact_table()],
        "templates": templates,
    }


def build_corpus(
    world_cfg: WorldConfig,
    out_dir: str | Path,
    n_tokens_train: int = DEFAULT_N_TOKENS_TRAIN,
    *,
    overwrite: bool = False,
    eval_fraction: float = 0.01,
    n_eval_items: int = 1000,
    progress: bool = True,
) -> Path:
    """Generate the world of `world_cfg` and write a labelled corpus into `out_dir`.

    Args:
        world_cfg: world sizes, document mix and seed (same config -> identical bytes).
        out_dir: output directory; must be new or empty unless `overwrite`.
        n_tokens_train: training tokens (documents are whole, so slightly more).
        overwrite: replace an existing corpus directory.
        eval_fraction: size of val and of test relative to train (at least 1024 tokens each).
        n_eval_items: cap on the items of each `eval/*.jsonl` file.
        progress: show a progress bar.

    Returns:
        The corpus directory.
    """
    out = Path(out_dir)
    if n_tokens_train < 1:
        raise ValueError(f"n_tokens_train={n_tokens_train}; pass a positive number of tokens")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction}; pass a fraction in (0, 1)")
    if n_eval_items < 1:
        raise ValueError(f"n_eval_items={n_eval_items}; pass a positive number")
    check_output_dir(out, overwrite)  # fail before minutes of generation
    t0 = time.perf_counter()
    world = build_world(world_cfg)
    words = world_words()
    tokenizer = build_world_tokenizer(words)
    vocab = tokenizer.get_vocab()
    sampler = DocumentSampler(world, words)
    n_eval = max(MIN_EVAL_SPLIT_TOKENS, math.ceil(n_tokens_train * eval_fraction))
    sizes = {"train": n_tokens_train, "val": n_eval, "test": n_eval}
    seed = world_cfg.seed
    splits = {
        name: _generate_split(
            sampler, random.Random(f"world:{seed}:{name}"), size, vocab, f"world {name}", progress
        )
        for name, size in sizes.items()
    }
    mentions = splits["train"].mentions
    evals = _eval_sets(world, n_eval_items, mentions)
    files: dict[str, Any] = {"tokenizer": "tokenizer.json", "world": "world.json", "splits": {}}
    files["eval"] = {name: f"eval/{name}.jsonl" for name in evals}
    table = [(f["person"], f["relation"]) for f in world.fact_table()]
    rows = fact_index(table)
    with atomic_output_dir(out, overwrite) as tmp:
        tokenizer.save(str(tmp / "tokenizer.json"))
        write_json(tmp / "world.json", _world_record(world, mentions))
        for name, sp in splits.items():
            files["splits"][name] = write_split(tmp, name, sp.tokens, sp.docs, len(vocab))
            files["splits"][name]["labels"] = f"{name}.labels.npz"
            save_npz(tmp / f"{name}.labels.npz", sp.labels)
            files["splits"][name]["doc_facts"] = f"{name}.doc_facts.npz"
            DocFacts.from_lists([[rows[f] for f in fs] for fs in sp.doc_facts], table).save(
                tmp / f"{name}.doc_facts.npz")
        for name, items in evals.items():
            write_jsonl(tmp / files["eval"][name], items)
        manifest = {
            "schema": SCHEMA,
            "kind": "world",
            "world_config": world_cfg.to_dict(),
            "vocab_size": len(vocab),
            "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
            "splits": {
                name: {
                    "n_tokens": int(len(sp.tokens)),
                    "n_docs": int(len(sp.docs)),
                    "tokens_by_kind": sp.tokens_by_kind,
                }
                for name, sp in splits.items()
            },
            "label_names": LABEL_NAMES,
            "doc_kinds": list(DOC_KINDS),
            "eval": {name: len(items) for name, items in evals.items()},
            "files": files,
        }
        write_json(tmp / "corpus.json", manifest)
    log.info(
        "world corpus: %s train tokens, vocab %d, %.1f s -> %s",
        f"{len(splits['train'].tokens):,}",
        len(vocab),
        time.perf_counter() - t0,
        out,
    )
    return out
