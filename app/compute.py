"""What the dashboard computes between a model and a figure: token ids without silent
truncation, the window of a long input that is run and shown, repeated text and its induction
stripe, a 2-D PCA, corpus documents as text, activation-file rows, the logit-lens table and
the tables of an attribution report. No Streamlit here.

>>> plan_window(n_tokens=300, n_ctx=128, size=64, start=200, has_bos=True)
Window(start=200, stop=264, context_start=137, context_stop=264)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.repeats import repeat_segment


@dataclass(frozen=True)
class Window:
    """A window of a long token sequence: positions `[start, stop)` are shown, the model runs
    on `[context_start, context_stop)` (with BOS prepended when `context_start > 0`)."""

    start: int
    stop: int
    context_start: int
    context_stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_window(n_tokens: int, n_ctx: int, size: int, start: int = 0,
                has_bos: bool = True) -> Window:
    """The window of `size` tokens from `start` (clipped into the sequence) and the context
    the model reads for it: the whole sequence when it fits `n_ctx`, else the `n_ctx` tokens
    that end at the window (a BOS takes one place when the context does not start at 0), so
    every shown query sees as much of its past as the model can.

    Raises:
        ValueError: an empty sequence or a size below 1.
    """
    if n_tokens < 1 or size < 1 or n_ctx < 2:
        raise ValueError(f"n_tokens={n_tokens}, size={size}, n_ctx={n_ctx}: a window needs "
                         "at least one token, a size >= 1 and n_ctx >= 2")
    cap = n_ctx - 1 if has_bos else n_ctx  # tokens of a context that does not start at 0
    size = min(size, n_tokens, cap)
    start = max(0, min(start, n_tokens - size))
    stop = start + size
    if n_tokens <= n_ctx:
        return Window(start, stop, 0, n_tokens)
    if stop <= n_ctx:
        return Window(start, stop, 0, n_ctx)
    return Window(start, stop, stop - cap, stop)


def window_tokens(ids: Int[Tensor, " pos"], window: Window, bos: int | None
                  ) -> tuple[Int[Tensor, " ctx"], int]:
    """The ids the model runs on for `window`, and the index in them of the window's first
    shown token."""
    ctx = ids[window.context_start:window.context_stop]
    offset = window.start - window.context_start
    if window.context_start > 0 and bos is not None:
        ctx = torch.cat([torch.tensor([bos], dtype=ids.dtype), ctx])
        offset += 1
    return ctx, offset


def repeat_room(ids: Int[Tensor, " pos"], n_ctx: int, bos: int | None) -> int:
    """How many of the text's tokens (without BOS) `repeat_tokens` can repeat within `n_ctx`.

    >>> repeat_room(torch.tensor([0, 5, 6, 7]), n_ctx=6, bos=0)
    2
    """
    body = len(ids) - (1 if bos is not None and len(ids) and int(ids[0]) == bos else 0)
    return min(body, (n_ctx - (1 if bos is not None else 0)) // 2)


def repeat_tokens(ids: Int[Tensor, " pos"], n_ctx: int, bos: int | None,
                  length: int | None = None) -> tuple[Int[Tensor, " pos2"], int]:
    """`[BOS] body body` (`workbench.repeats.repeat_segment`): the text's first `length`
    tokens (without BOS; default: as many as fit) twice, the body cut to fit `n_ctx`; returns
    the ids and the period (the body's length).

    >>> repeat_tokens(torch.tensor([0, 5, 6, 7]), n_ctx=16, bos=0)
    (tensor([0, 5, 6, 7, 5, 6, 7]), 3)
    >>> repeat_tokens(torch.tensor([0, 5, 6, 7]), n_ctx=16, bos=0, length=2)
    (tensor([0, 5, 6, 5, 6]), 2)
    """
    body = ids[1:] if bos is not None and len(ids) and int(ids[0]) == bos else ids
    room = (n_ctx - (1 if bos is not None else 0)) // 2
    body = body[:room if length is None else min(room, length)]
    if len(body) < 1:
        raise ValueError("the text has no tokens to repeat; type a longer prompt")
    return repeat_segment(body[None], bos).tokens[0], len(body)


def induction_stripe(n_tokens: int, period: int, start: int = 1) -> Int[Tensor, "n 2"]:
    """`(query, key)` cells an induction head attends to on text repeated with `period`
    from position `start` (1 after a BOS): each query of a later copy looks at the token
    right after its previous occurrence, `period - 1` back.

    >>> induction_stripe(7, 3).tolist()
    [[4, 2], [5, 3], [6, 4]]
    """
    if period < 1:
        raise ValueError(f"period={period}; a repeated text has a period >= 1")
    q = torch.arange(start + period, max(n_tokens, start + period))
    return torch.stack([q, q - period + 1], 1)


def stripe_scores(pattern: Float[Tensor, "layer head query key"], stripe: Int[Tensor, "n 2"]
                  ) -> Float[Tensor, "layer head"]:
    """Mean attention weight of every head on the stripe cells (0 when there are none)."""
    if len(stripe) == 0:
        return torch.zeros(pattern.shape[:2])
    return pattern[:, :, stripe[:, 0], stripe[:, 1]].mean(-1)


def lens_rows(lens: Any, tops: list[list[list[str]]], pos: int) -> list[dict[str, Any]]:
    """One row per residual point of a `circuits.attention.LogitLens` at position `pos`: the
    top tokens with their probabilities, and the probability of the actual next token."""
    rows = []
    for j, layer in enumerate(lens.layers):
        probs = lens.top_probs[j, pos].tolist()
        nxt = float(lens.logprob_of_next[j, pos])
        rows.append({"after": layer,
                     "top tokens": ", ".join(f"{t!r} {p:.2f}" for t, p in zip(tops[j][pos], probs)),
                     "p(actual next)": None if np.isnan(nxt) else round(float(np.exp(nxt)), 4)})
    return rows


def pca_2d(x: Float[Tensor, "n d"]) -> tuple[Float[Tensor, "n 2"], Float[Tensor, " 2"]]:
    """The rows projected on their first two principal components, and the fraction of the
    variance each explains; signs fixed so that each component's largest loading is positive
    (the same data always gives the same picture).

    Raises:
        ValueError: fewer than 2 rows or 2 dimensions.
    """
    x = x.reshape(len(x), -1).double()
    if x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"PCA needs at least 2 rows of at least 2 values; got "
                         f"{tuple(x.shape)}")
    centered = x - x.mean(0)
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    comps = vh[:2]
    idx = comps.abs().argmax(1)
    comps = comps * torch.sign(comps[torch.arange(len(comps)), idx])[:, None]
    total = (s**2).sum()
    explained = (s[:2] ** 2) / total if total > 0 else torch.zeros(2, dtype=s.dtype)
    return (centered @ comps.T).float(), explained.float()


def sample_rows(n_rows: int, k: int, seed: int = 0) -> np.ndarray:
    """`k` row indices out of `n_rows` (all when fewer), sorted; seeded."""
    if n_rows <= k:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=k, replace=False))


def corpus_document(corpus_path: Path, split: str, index: int) -> str:
    """Document `index` of a corpus split as text (special tokens dropped), for any model's
    tokenizer to encode."""
    from workbench.world import load_corpus
    from workbench.world.tokenizer_files import read_tokenizer_file

    corpus = load_corpus(corpus_path)
    docs = corpus.docs(split)
    if not 0 <= index < len(docs):
        raise ValueError(f"document {index} does not exist; split {split!r} of {corpus_path} "
                         f"has documents 0..{len(docs) - 1}")
    lo, hi = (int(v) for v in docs[index])
    ids = np.asarray(corpus.tokens(split)[lo:hi]).tolist()
    return read_tokenizer_file(corpus.tokenizer_path).decode(ids, skip_special_tokens=True)


def n_documents(corpus_path: Path, split: str) -> int:
    from workbench.world import load_corpus

    return len(load_corpus(corpus_path).docs(split))


# ---- activation files -----------------------------------------------------------------------

# what the overview calls an attribute -> the file's root attribute (`workbench.cache.store`)
OVERVIEW_ATTRS = {"model": "model_ref", "corpus": "corpus", "split": "split",
                  "positions": "positions", "dtype": "dtype", "n_rows": "n_rows"}
NOT_RECORDED = "(not recorded)"


def store_overview(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An activation file's main attributes (the model as the command that wrote it named
    it), and its hooks with their shapes."""
    from workbench.cache.store import ActivationStore

    with ActivationStore(path) as store:
        attrs = {k: _plain(store.attrs.get(key)) for k, key in OVERVIEW_ATTRS.items()}
        attrs["model"] = attrs["model"] or NOT_RECORDED  # written by a library call without it
        hooks = [{"hook": h, "shape": str(list(store.shape(h)))} for h in store.hooks]
        attrs["labels"] = ", ".join(store.labels()) or "none"
    return attrs, hooks


def recorded_model(path: Path) -> str:
    """The model reference an activation file records (`model_ref`; '' when none)."""
    import h5py

    with h5py.File(path, "r") as f:
        return str(f.attrs.get("model_ref", ""))


def files_of_model(files: list[Path], model_dir: Path, refs: dict[Path, str],
                   cwd: Path | None = None) -> list[Path]:
    """The activation files of the model in `model_dir`: those inside its folder, and those
    whose recorded reference (`refs[file]`, absolute or relative to `cwd`, the folder the
    command ran in as far as we know) is the folder or lies in it (a checkpoint).

    >>> run = Path("/r/demo")
    >>> files = [Path("/r/demo/acts_val.h5"), Path("/r/x.h5"), Path("/r/y.h5")]
    >>> [f.name for f in files_of_model(files, run, {Path("/r/x.h5"): "/r/demo/checkpoints/s",
    ...                                               Path("/r/y.h5"): "/r/other"})]
    ['acts_val.h5', 'x.h5']
    """
    model_dir = Path(model_dir).resolve()
    cwd = Path.cwd() if cwd is None else Path(cwd)

    def mine(path: Path) -> bool:
        if model_dir in Path(path).resolve().parents:
            return True
        ref = refs.get(path, "")
        if not ref:
            return False
        target = (cwd / ref).resolve()
        return target == model_dir or model_dir in target.parents

    return [f for f in files if mine(f)]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def label_names(corpus_path: Path | None) -> dict[str, list[str]]:
    """The class names of each label of a corpus (`{}` when there is no corpus)."""
    if corpus_path is None:
        return {}
    from workbench.world import load_corpus

    corpus = load_corpus(corpus_path)
    return {k: v for k, v in corpus.manifest.get("label_names", {}).items()
            if isinstance(v, list)}


def _decode(values: np.ndarray, names: list[str] | None) -> list[str]:
    out = []
    for v in values.tolist():
        if v < 0:
            out.append("none")
        elif names is not None and v < len(names):
            out.append(str(names[v]))
        else:
            out.append(str(v))
    return out


def store_rows(path: Path, start: int, n: int, names: dict[str, list[str]],
               decode: Callable[[int], str] | None = None) -> list[dict[str, Any]]:
    """Rows `[start, start + n)` of an activation file: their metadata (`seq`, `doc`, the
    `position` in the sequence), each token as text (`decode`, the model's tokenizer, one id
    at a time) beside its id, and decoded labels."""
    from workbench.cache.store import ActivationStore

    with ActivationStore(path) as store:
        stop = min(len(store), start + n)
        sl = slice(start, stop)
        cols: dict[str, list[Any]] = {"row": list(range(start, stop))}
        for key, column in (("seq", "seq"), ("doc", "doc"), ("pos", "position")):
            cols[column] = store.meta(key)[sl].tolist()  # `position`: the label `pos` is
            # the part of speech
        ids = store.meta("token")[sl].tolist()
        if decode is not None:
            cols["token"] = [decode(int(i)) for i in ids]
        cols["token id"] = ids
        for key, values in store.labels().items():
            cols[key] = _decode(values[sl], names.get(key))
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())]


def store_pca(path: Path, hook: str, max_rows: int, label: str | None,
              names: dict[str, list[str]], seed: int = 0
              ) -> tuple[Float[Tensor, "n 2"], Float[Tensor, " 2"], list[str]]:
    """A seeded sample of at most `max_rows` rows of `hook` (rows without `label` left out
    when one is chosen), projected on their first two principal components, with each row's
    decoded label."""
    from workbench.cache.store import ActivationStore

    with ActivationStore(path) as store:
        keep = np.arange(len(store))
        values = None
        if label is not None:
            values = store.labels()[label]
            keep = keep[values >= 0]
        rows = keep[sample_rows(len(keep), max_rows, seed)]
        x = store.take(hook, rows)
    coords, explained = pca_2d(x)
    if values is None or label is None:
        return coords, explained, ["all"] * len(rows)
    return coords, explained, _decode(values[rows], names.get(label))


# ---- belief edits ---------------------------------------------------------------------------

NEW, OLD, THIRD, KEPT, CHANGED = ("✓ the new object", "✗ still the old object",
                                  "≠ a third object", "✓ unchanged", "✗ changed")


STAYS = ("neighbour", "other fact")  # the rows of `before_after` an edit should not change


def mark_edit_rows(rows: list[dict[str, str]], old: str, new: str) -> list[dict[str, str]]:
    """`beliefs.metrics.before_after` rows with a `result` column: on the edited fact's
    prompts, whether the answer after the edit is the new object, still the old one, or a
    third; on neighbours and the subject's other facts (whose answers should stay), whether
    it is unchanged.

    >>> rows = [{"kind": "edit prompt", "prompt": "p", "before": "a", "after": "c"},
    ...         {"kind": "paraphrase", "prompt": "q", "before": "a", "after": "b"},
    ...         {"kind": "neighbour", "prompt": "r", "before": "d", "after": "d"}]
    >>> [r["result"] for r in mark_edit_rows(rows, old="a", new="b")]
    ['≠ a third object', '✓ the new object', '✓ unchanged']
    """
    out = []
    for row in rows:
        after = row["after"]
        if row["kind"] in STAYS:
            result = KEPT if after == row["before"] else CHANGED + (
                " (to the new object)" if after == new else "")
        else:
            result = NEW if after == new else OLD if after == old else THIRD
        out.append({**row, "result": result})
    return out



# ---- attribution reports (`workbench attribute`, schema workbench.attribute/1) ------------

STATES, NOT_STATES = "✓ states it", "✗ does not"


def top_document_rows(top: list[dict[str, Any]], k: int | None = None) -> list[dict[str, Any]]:
    """One method's best documents for one query (`methods[m]["top"][fact]`) as table rows,
    ranked, each marked by whether it states the fact; the first `k` (default: all).

    >>> top_document_rows([{"doc": 7, "score": 1.5, "states": True, "text": "a b"}])
    [{'rank': 1, 'states the fact': '✓ states it', 'score': 1.5, 'document': 7, 'text': 'a b'}]
    """
    return [{"rank": i + 1, "states the fact": STATES if d["states"] else NOT_STATES,
             "score": round(float(d["score"]), 4), "document": int(d["doc"]),
             "text": d["text"]} for i, d in enumerate(top[:k])]


def retrieval_rows(report: dict[str, Any], fact: str) -> list[dict[str, Any]]:
    """Per method: precision@10, @100 and average precision (AUPRC) of retrieving the
    documents that state `fact`, beside the same means over the report's facts; last, what a
    random ranking scores in expectation (the share of candidates that state the fact).
    Empty for a query no truth is known of (a free prompt).

    >>> m = {"mean": {"p@10": 0.5, "p@100": 0.4, "ap": 0.3, "base_rate": 0.1},
    ...      "facts": {"a:city": {"p@10": 1.0, "p@100": 0.5, "ap": 0.6, "base_rate": 0.2}}}
    >>> [(r["method"], r["AUPRC"]) for r in retrieval_rows({"methods": {"bm25": m}}, "a:city")]
    [('bm25', 0.6), ("random's expectation", 0.2)]
    """
    rows, base = [], None
    for name, m in report["methods"].items():
        f = m["facts"].get(fact)
        if f is None:
            continue
        base = base or (f["base_rate"], m["mean"]["base_rate"])
        rows.append(_retrieval_row(name, (f["p@10"], f["p@100"], f["ap"]),
                                   (m["mean"]["p@10"], m["mean"]["p@100"], m["mean"]["ap"])))
    if base is not None:
        rows.append(_retrieval_row("random's expectation", (base[0],) * 3, (base[1],) * 3))
    return rows


def _retrieval_row(name: str, fact: tuple[float, ...], mean: tuple[float, ...]
                   ) -> dict[str, Any]:
    cols = ("P@10", "P@100", "AUPRC")
    return {"method": name, **{c: round(v, 3) for c, v in zip(cols, fact, strict=True)},
            **{f"mean {c}": round(v, 3) for c, v in zip(cols, mean, strict=True)}}


def tracin_rows(report: dict[str, Any], fact: str) -> list[dict[str, Any]]:
    """TracIn's teaching of `fact` per checkpoint (`report["tracin"]`): the stretch of
    training from its step to the next checkpoint's, the learning rates summed over it, the
    contribution it made (over the documents that state the fact) and its share. Empty when
    the report has no TracIn for the fact.

    >>> tr = {"steps": [0, 10], "weights": [0.01, 0.0], "facts": {"a:city": {
    ...     "contribution": [2.0, 0.0], "share": [1.0, 0.0]}}}
    >>> [(r["from step"], r["to step"], r["share"])
    ...  for r in tracin_rows({"tracin": tr}, "a:city")]
    [(0, 10, 1.0), (10, None, 0.0)]
    """
    tr = report.get("tracin") or {}
    f = (tr.get("facts") or {}).get(fact)
    if f is None:
        return []
    steps = list(tr["steps"])
    return [{"from step": s, "to step": end, "learning-rate sum": w,
             "contribution": round(c, 6), "share": round(sh, 3)}
            for s, end, w, c, sh in zip(steps, [*steps[1:], None], tr["weights"],
                                        f["contribution"], f["share"], strict=True)]


def verify_rows(digest: dict[str, Any]) -> list[dict[str, Any]]:
    """The retraining check an attribution report keeps (`verify`, written by `workbench
    attribute verify`) as table rows: per training seed and condition, the documents removed
    (of them, those that state a checked fact), the facts' mean margin, its drop from the
    baseline and their accuracy.

    >>> rows = verify_rows({"k": 2, "conditions": {"ekfac": {"removed_docs": 4,
    ...     "removed_stating": 4}}, "seeds": {"0": {"none": {"margin": 3.0, "accuracy": 1.0,
    ...     "drop": None}, "ekfac": {"margin": 1.0, "accuracy": 0.5, "drop": 2.0}}}})
    >>> [(r["removed"], r["documents"], r["margin drop"]) for r in rows]
    [('none', 0, None), ('ekfac', 4, 2.0)]
    """
    rows = []
    for seed, by in digest["seeds"].items():
        for cond, r in by.items():
            c = digest.get("conditions", {}).get(cond, {"removed_docs": 0, "removed_stating": 0})
            rows.append({"seed": seed, "removed": cond, "documents": c["removed_docs"],
                         "of them stating": c["removed_stating"], "margin": r["margin"],
                         "margin drop": r["drop"], "accuracy": r["accuracy"]})
    return rows


def verify_verdicts(digest: dict[str, Any]) -> list[str]:
    """One line per training seed: each method's drop against BM25's and random's, and
    whether removing every mention left the facts at chance.

    >>> verify_verdicts({"verdicts": {"0": {"drop": {}, "ekfac": {"beats_bm25": True,
    ...     "vs_random": 4.0, "at_least_3x_random": True}, "mentions_at_chance": True}}})[0]
    ... # doctest: +NORMALIZE_WHITESPACE
    'seed 0: ekfac drops the margin more than BM25: yes, 4.0x random;
     every mention removed: facts at chance: yes'

    """
    lines = []
    yes = {True: "yes", False: "no", None: "-"}
    for seed, v in digest.get("verdicts", {}).items():
        parts = [f"{m} drops the margin more than BM25: {yes[r['beats_bm25']]}, "
                 + ("-" if r["vs_random"] is None else f"{r['vs_random']:.1f}x") + " random"
                 for m, r in v.items() if isinstance(r, dict) and "vs_random" in r]
        if "mentions_at_chance" in v:
            parts.append(f"every mention removed: facts at chance: "
                         f"{yes[v['mentions_at_chance']]}")
        lines.append(f"seed {seed}: " + "; ".join(parts))
    return lines


def _cell(value: Any) -> Any:
    """A table cell: numbers, text and None as they are, anything else as JSON."""
    return value if value is None or isinstance(value, int | float | str) else _text(value)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
