"""Re-encode a world corpus with another tokenizer (a Hugging Face model's), keeping its labels.

The same labelled sentences then probe and cache any model. Word labels move to the **last
sub-token of each word** (the position where the model has read the whole word); the other
sub-tokens get -1. A `word` label array records the world word id at each labelled position,
so word-type splits still work when a word is several tokens.

>>> # retokenize_corpus("runs/world", "models/gpt2", "runs/world-gpt2")
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from workbench.world.loader import Corpus, load_corpus
from workbench.world.output import atomic_output_dir, save_npz, write_json, write_split
from workbench.world.text import existing_tokenizer
from workbench.world.tokenizer_files import read_tokenizer_file

log = logging.getLogger(__name__)


def align_words(
    words: list[str], tokenizer: Tokenizer
) -> tuple[list[int], np.ndarray]:
    """Encode `" ".join(words)`; return the token ids and, per word, its last token's index.

    Raises:
        ValueError: the tokenizer drops a word (no token covers it).
    """
    text = " ".join(words)
    ends = np.cumsum([len(w) + 1 for w in words]) - 1  # exclusive end of each word
    enc = tokenizer.encode(text, add_special_tokens=False)
    last = np.full(len(words), -1, dtype=np.int64)
    for j, (lo, hi) in enumerate(enc.offsets):
        if hi <= lo:
            continue
        w = int(np.searchsorted(ends, hi - 1, side="right"))  # word holding the last char
        if w < len(words):
            last[w] = j
    if (last < 0).any():
        bad = words[int(np.argmax(last < 0))]
        raise ValueError(f"the tokenizer produced no token for the word {bad!r}; pass a "
                         "tokenizer that covers every character (a byte-level BPE does)")
    return list(enc.ids), last


def _retokenize_split(corpus: Corpus, split: str, world_tok: Tokenizer, tok: Tokenizer,
                      bos: int | None, progress: bool) -> tuple[np.ndarray, np.ndarray,
                                                                 dict[str, np.ndarray]]:
    tokens = np.asarray(corpus.tokens(split))
    docs = corpus.docs(split)
    labels = {k: np.asarray(v) for k, v in corpus.labels(split).items()}
    per_token = {k: v for k, v in labels.items() if len(v) == len(tokens)}
    world_bos = corpus.manifest["special_tokens"].get("<bos>")
    ids: list[int] = []
    new_docs = []
    out_labels: dict[str, list[np.ndarray]] = {k: [] for k in [*per_token, "word"]}
    for lo, hi in tqdm(docs, desc=f"retokenize {split}", disable=not progress, unit="doc"):
        lo, hi = int(lo), int(hi)
        body = lo + 1 if world_bos is not None and tokens[lo] == world_bos else lo
        words = [world_tok.id_to_token(int(i)) for i in tokens[body:hi]]
        doc_ids, last = align_words(words, tok) if words else ([], np.zeros(0, np.int64))
        head = [] if bos is None else [bos]
        n = len(head) + len(doc_ids)
        at = len(head) + last
        for key, arr in per_token.items():
            col = np.full(n, -1, dtype=np.int16)
            col[at] = arr[body:hi]
            out_labels[key].append(col)
        col = np.full(n, -1, dtype=np.int16)
        col[at] = tokens[body:hi]
        out_labels["word"].append(col)
        new_docs.append((len(ids), len(ids) + n))
        ids += head + doc_ids
    merged = {k: np.concatenate(v) if v else np.zeros(0, np.int16) for k, v in out_labels.items()}
    for k, v in labels.items():
        if k not in per_token:  # per-document arrays (doc_kind)
            merged[k] = v
    return (np.asarray(ids, dtype=np.int64), np.asarray(new_docs, dtype=np.int64).reshape(-1, 2),
            merged)


def retokenize_corpus(
    corpus_dir: str | Path,
    tokenizer: str | Path,
    out_dir: str | Path,
    splits: tuple[str, ...] | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a copy of a world corpus encoded with `tokenizer`, labels on last sub-tokens.

    Args:
        corpus_dir: a world corpus (`workbench world build`).
        tokenizer: a `tokenizer.json` or a Hugging Face model directory holding one.
        out_dir: output directory; must be new or empty unless `overwrite`.
        splits: the splits to encode (default all; `val,test` is enough for probes).
        overwrite: replace an existing output directory.
        progress: show a progress bar.

    Returns:
        The new corpus directory (kind `world`, `retokenized_from` in its manifest).
    """
    corpus = load_corpus(corpus_dir)
    if corpus.kind != "world":
        raise ValueError(f"corpus at {corpus.path} is a real-text corpus without labels; "
                         "retokenize a world corpus (`workbench world build`)")
    wanted = list(splits) if splits else corpus.splits
    for s in wanted:
        if s not in corpus.splits:
            raise ValueError(f"unknown split {s!r}; corpus at {corpus.path} has {corpus.splits}")
    tok, bos, specials = existing_tokenizer(Path(tokenizer))
    world_tok = read_tokenizer_file(corpus.tokenizer_path)
    manifest = dict(corpus.manifest)
    files = dict(manifest["files"])
    files["splits"] = {}
    split_info = {}
    with atomic_output_dir(Path(out_dir), overwrite) as tmp:
        tok.save(str(tmp / "tokenizer.json"))
        for split in wanted:
            ids, docs, labels = _retokenize_split(corpus, split, world_tok, tok, bos, progress)
            files["splits"][split] = write_split(tmp, split, ids, docs, tok.get_vocab_size())
            files["splits"][split]["labels"] = f"{split}.labels.npz"
            save_npz(tmp / f"{split}.labels.npz", labels)
            split_info[split] = {**corpus.manifest["splits"][split], "n_tokens": len(ids)}
        shutil.copy(corpus.path / files["world"], tmp / files["world"])
        for rel in files.get("eval", {}).values():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(corpus.path / rel, tmp / rel)
        manifest.update({
            "vocab_size": tok.get_vocab_size(),
            "special_tokens": specials,
            "splits": split_info,
            "label_names": {**manifest["label_names"], "word": None},
            "retokenized_from": str(corpus.path.resolve()),
            "tokenizer_source": str(Path(tokenizer).resolve()),
            "files": files,
        })
        write_json(tmp / "corpus.json", manifest)
    log.info("retokenized %s (%s) with %s -> %s", corpus.path, ", ".join(wanted), tokenizer,
             out_dir)
    return Path(out_dir)
