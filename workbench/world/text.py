"""Build an unlabelled corpus from plain-text files (`workbench world build --text`).

Each paragraph (text between blank lines) is a document. A byte-level BPE tokenizer is trained
on all of them, documents are shuffled with the seed and split 90/5/5 (train keeps at least
one), and each is encoded with a leading `<bos>`. The directory has the world corpus' layout
minus labels, world and evaluation files.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from workbench.world.corpus import SCHEMA, SPLITS
from workbench.world.labels import SPECIAL_TOKENS
from workbench.world.output import atomic_output_dir, check_output_dir, write_json, write_split
from workbench.world.tokenizer import train_bpe_tokenizer
from workbench.world.tokenizer_files import read_tokenizer_file

log = logging.getLogger(__name__)

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


def read_documents(files: list[Path]) -> list[str]:
    """Paragraphs of all `files` in order (stripped, empty ones dropped)."""
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"text file {f} not found; pass existing plain-text files")
    docs = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{f} is not UTF-8 text (byte {exc.start} cannot be decoded); "
                             "pass plain-text files (convert others with `iconv -t UTF-8`)"
                             ) from exc
        if "\x00" in text:
            raise ValueError(f"{f} holds NUL bytes: it is a binary file, not text; pass "
                             "plain-text files")
        docs += [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    if not docs:
        names = ", ".join(str(f) for f in files) or "(no files)"
        raise ValueError(
            f"the text files are empty (no non-whitespace characters): {names}; pass "
            "non-empty text files"
        )
    return docs


def existing_tokenizer(path: Path) -> tuple[Tokenizer, int | None, dict[str, int]]:
    """A `tokenizers` file (or a Hugging Face directory holding `tokenizer.json`), its BOS
    id (from `tokenizer_config.json` when present; None when it has none) and specials."""
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no tokenizer at {path}; pass a tokenizer.json or a Hugging Face directory "
            "that holds one"
        )
    tok = read_tokenizer_file(file)
    names = ["<bos>", "<|endoftext|>", "<s>"]
    config = file.parent / "tokenizer_config.json"
    if config.is_file():
        bos_token = json.loads(config.read_text()).get("bos_token")
        if isinstance(bos_token, dict):
            bos_token = bos_token.get("content")
        if isinstance(bos_token, str):
            names.insert(0, bos_token)
    bos = next((tok.token_to_id(n) for n in names if tok.token_to_id(n) is not None), None)
    specials = {} if bos is None else {tok.id_to_token(bos): bos}
    return tok, bos, specials


def _split_sizes(n_docs: int) -> dict[str, int]:
    n_val = round(0.05 * n_docs)
    n_test = round(0.05 * n_docs)
    if n_val + n_test >= n_docs:  # train keeps at least one document
        n_val = n_test = (n_docs - 1) // 2
    return {"train": n_docs - n_val - n_test, "val": n_val, "test": n_test}


def build_text_corpus(
    files: list[Path],
    out_dir: str | Path,
    vocab_size: int = 4096,
    *,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = True,
    tokenizer: str | Path | None = None,
) -> Path:
    """Train a BPE tokenizer on `files` and write them as an unlabelled corpus.

    Args:
        files: UTF-8 text files; paragraphs become documents.
        out_dir: output directory; must be new or empty unless `overwrite`.
        vocab_size: BPE vocabulary size (fewer when the text is too small to fill it).
        overwrite: replace an existing corpus directory.
        seed: document shuffle before the 90/5/5 split.
        progress: show a progress bar.
        tokenizer: encode with this existing tokenizer instead of training one: a
            `tokenizer.json` or a Hugging Face model directory holding one (so a corpus
            matches a model you load from that directory).

    Returns:
        The corpus directory.
    """
    out = Path(out_dir)
    files = [Path(f) for f in files]
    docs = read_documents(files)
    check_output_dir(out, overwrite)
    if tokenizer is None:
        tok = train_bpe_tokenizer(docs, vocab_size)
        bos: int | None = SPECIAL_TOKENS.index("<bos>")
        specials = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    else:
        tok, bos, specials = existing_tokenizer(Path(tokenizer))
    vocab = tok.get_vocab_size()
    order = list(range(len(docs)))
    random.Random(f"text:{seed}").shuffle(order)
    sizes = _split_sizes(len(docs))
    bounds = {"train": (0, sizes["train"])}
    bounds["val"] = (sizes["train"], sizes["train"] + sizes["val"])
    bounds["test"] = (bounds["val"][1], len(docs))
    notes = []
    files_record: dict[str, dict[str, str]] = {}
    split_info = {}
    with atomic_output_dir(out, overwrite) as tmp:
        tok.save(str(tmp / "tokenizer.json"))
        for split in SPLITS:
            lo, hi = bounds[split]
            chosen = [docs[i] for i in sorted(order[lo:hi])]  # keep file order within a split
            ids: list[int] = []
            starts = []
            for enc in tqdm(
                tok.encode_batch(chosen, add_special_tokens=False), desc=f"text {split}",
                disable=not progress,
            ):
                starts.append(len(ids))
                ids += ([] if bos is None else [bos]) + enc.ids
            ends = starts[1:] + [len(ids)]
            docs_arr = np.asarray(list(zip(starts, ends)), dtype=np.int64).reshape(-1, 2)
            files_record[split] = write_split(tmp, split, np.asarray(ids), docs_arr, vocab)
            split_info[split] = {"n_tokens": len(ids), "n_docs": len(chosen)}
            if not chosen:
                notes.append(
                    f"{split} split is empty: the text has only {len(docs)} paragraph(s); "
                    "add text (paragraphs are separated by blank lines) to fill it"
                )
        manifest = {
            "schema": SCHEMA,
            "kind": "text",
            "sources": [str(f) for f in files],
            "vocab_size": vocab,
            "special_tokens": specials,
            "splits": split_info,
            "label_names": {},
            "notes": notes,
            "files": {"tokenizer": "tokenizer.json", "splits": files_record, "eval": {}},
        }
        write_json(tmp / "corpus.json", manifest)
    for note in notes:
        log.warning(note)
    log.info("text corpus: %d documents, vocab %d -> %s", len(docs), vocab, out)
    return out
