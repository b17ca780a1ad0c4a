"""Influence functions with EK-FAC curvature (Grosse et al. 2023), computed by `kronfluence`.

This module is the glue between `kronfluence` and our models, documents and queries:

- the **task** (`LanguageModelTask`): a document's training loss is the sum of its next-token
  losses (its first `n_ctx` tokens, padding masked; with `sample=True` the labels are drawn
  from the model, the true Fisher kronfluence fits its factors with); a query's measurement
  is the answer's negative log-probability after one held-out prompt. A fact's score is the
  mean over its prompts (scores are linear in the query gradient);
- the **datasets** (`TokenDataset`, padded per batch by `collate`);
- the **tracked modules**: the linear layers of every MLP (`params="mlp"`, where facts are
  recalled; the choice of Grosse et al. for their largest models) or every linear layer of
  every block (`all`);
- **where results live**: `FactorStore` keeps kronfluence's output directory (factors and
  score shards, safetensors) under one folder keyed by the model's weights digest, with a
  `meta.json` naming the weights and the corpus, so factors made for other weights are
  refused rather than silently used. Factors are fitted stage by stage and scores computed
  shard by shard (`shard` documents each); an interrupted run resumes at the first stage or
  shard not on disk.

Kronfluence wraps the tracked linear layers of the model it is given, so it is given a deep
copy: the caller's model is never changed.

Influence of document z on query q is `grad f_q^T (G + lambda I)^-1 grad L_z` with G the
EK-FAC Gauss-Newton: positive when training on z lowers the query's loss (z is a proponent).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from attribution.documents import Documents, Query
from workbench.models import Model
from workbench.models.checkpoints import write_json_atomic
from workbench.prompts import encode_prompt, object_ids

PARAMS = ("mlp", "all")
META = "meta.json"
META_SCHEMA = "workbench.attribution_factors/1"
KRONFLUENCE_PIN = "kronfluence==1.0.1"


@dataclass(frozen=True)
class EkfacConfig:
    """How the curvature is fitted and the scores computed.

    Args:
        params: `mlp` (every MLP's linear layers) or `all` (every linear layer of the blocks).
        fit_documents: training documents the factors are fitted on (a seeded sample; all
            when there are fewer).
        batch_size: documents per batch.
        damping: the damping added to the curvature's eigenvalues (None: kronfluence's
            heuristic, 0.1 times their mean).
        shard: documents per score shard (what a resumed run does not compute again).
        seed: the sample of fitting documents.
    """

    params: str = "mlp"
    fit_documents: int = 20_000
    batch_size: int = 64
    damping: float | None = None
    shard: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.params not in PARAMS:
            raise ValueError(f"params={self.params!r}; choose one of {', '.join(PARAMS)}")
        for name in ("fit_documents", "batch_size", "shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; pass 1 or more")
        if self.damping is not None and not self.damping > 0:
            raise ValueError(f"damping={self.damping}; pass a positive number (or None)")


def _kronfluence() -> Any:
    try:
        import kronfluence
    except ImportError as exc:  # the Makefile installs it (see the module's note)
        raise ImportError(f"EK-FAC needs kronfluence: pip install --no-deps "
                          f"'{KRONFLUENCE_PIN}' einconv opt-einsum (make install does)"
                          ) from exc
    return kronfluence


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's parameters and buffers (names, shapes, dtypes, bytes): what its
    factors and cached gradients are keyed by."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class TokenDataset(Dataset[dict[str, torch.Tensor]]):
    """Token sequences (documents, or prompts with their answer token)."""

    def __init__(self, sequences: Sequence[np.ndarray], targets: Sequence[int] | None = None
                 ) -> None:
        self.sequences = sequences
        self.targets = targets

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"input_ids": torch.tensor(np.array(self.sequences[i]), dtype=torch.long)}
        if self.targets is not None:
            item["target"] = torch.tensor(int(self.targets[i]))
        return item


class DocumentSequences(Sequence[np.ndarray]):
    """The documents' token ids (first `n_ctx`), read from the memory-mapped stream."""

    def __init__(self, docs: Documents, n_ctx: int, index: np.ndarray | None = None) -> None:
        self.docs, self.n_ctx = docs, n_ctx
        self.index = np.arange(len(docs)) if index is None else np.asarray(index)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        return self.docs.tokens(int(self.index[i]))[: self.n_ctx]


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `lengths` (+ `target` for queries)."""
    lengths = torch.tensor([len(x["input_ids"]) for x in items])
    ids = torch.zeros(len(items), int(lengths.max()), dtype=torch.long)
    for row, x in enumerate(items):
        ids[row, : len(x["input_ids"])] = x["input_ids"]
    batch = {"input_ids": ids, "lengths": lengths,
             "attention_mask": (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()}
    if "target" in items[0]:
        batch["target"] = torch.stack([x["target"] for x in items])
    return batch


def tracked_modules(model: torch.nn.Module, params: str = "mlp") -> list[str]:
    """Names of the linear layers influence is computed over (in the model's order).

    Raises:
        ValueError: the model has no such layer.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
             and (".mlp." in f".{n}." if params == "mlp" else ("blocks." in n or "layers." in n))]
    if not names:
        raise ValueError(f"the model has no linear layer for params={params!r} (its MLPs must "
                         "be torch.nn.Linear modules); use params='all'")
    return names


def _task(modules: list[str]) -> Any:
    from kronfluence.task import Task

    class LanguageModelTask(Task):  # type: ignore[misc]
        """Summed next-token loss of documents; the answer's loss after a prompt."""

        def compute_train_loss(self, batch: dict[str, torch.Tensor], model: torch.nn.Module,
                               sample: bool = False) -> torch.Tensor:
            ids = batch["input_ids"].to(next(model.parameters()).device)
            logits = model(ids)[:, :-1].float()
            mask = batch["attention_mask"][:, 1:].bool().to(ids.device)
            if sample:
                with torch.no_grad():
                    labels = torch.multinomial(F.softmax(logits.reshape(-1, logits.shape[-1]),
                                                         -1), 1).reshape(mask.shape)
            else:
                labels = ids[:, 1:]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   reduction="none").reshape(mask.shape)
            return (loss * mask).sum()

        def compute_measurement(self, batch: dict[str, torch.Tensor], model: torch.nn.Module
                                ) -> torch.Tensor:
            ids = batch["input_ids"].to(next(model.parameters()).device)
            last = (batch["lengths"] - 1).to(ids.device)
            logits = model(ids)[torch.arange(len(ids), device=ids.device), last].float()
            return F.cross_entropy(logits, batch["target"].to(ids.device), reduction="sum")

        def get_influence_tracked_modules(self) -> list[str]:
            return modules

        def get_attention_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return batch["attention_mask"]

    return LanguageModelTask()


@dataclass(frozen=True)
class FactorStore:
    """Where one model's EK-FAC factors and score shards live: `root` (kronfluence's output
    directory), with `meta.json` naming the weights digest, corpus and config."""

    root: Path

    def meta(self) -> dict[str, Any] | None:
        path = self.root / META
        return json.loads(path.read_text()) if path.exists() else None

    def check(self, digest: str, corpus_id: str, cfg: EkfacConfig) -> None:
        """Refuse factors made for other weights, another corpus or other settings.

        Raises:
            ValueError: `meta.json` names something else (one line, with the fix).
        """
        meta = self.meta()
        if meta is None:
            return
        if meta.get("weights") != digest:
            raise ValueError(f"EK-FAC factors in {self.root} were made for other weights "
                             f"(sha256 {str(meta.get('weights'))[:12]}..., the model's is "
                             f"{digest[:12]}...); pass another --factors folder or delete it")
        if meta.get("corpus") != corpus_id:
            raise ValueError(f"EK-FAC factors in {self.root} were fitted on corpus "
                             f"{meta.get('corpus')!r}, not {corpus_id!r}; pass another "
                             "--factors folder or delete it")
        fitted = {k: meta.get("config", {}).get(k) for k in ("params", "fit_documents", "seed")}
        wanted = {k: getattr(cfg, k) for k in fitted}
        if fitted != wanted:
            raise ValueError(f"EK-FAC factors in {self.root} were fitted with {fitted}, not "
                             f"{wanted}; pass another --factors folder or delete it")

    def write_meta(self, digest: str, corpus_id: str, cfg: EkfacConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.meta() is None:
            write_json_atomic(self.root / META, {"schema": META_SCHEMA, "weights": digest,
                                                 "corpus": corpus_id, "config": asdict(cfg)})


def corpus_key(docs: Documents) -> str:
    """The corpus as the factors know it: its folder's name and training-token count."""
    return f"{docs.corpus.path.resolve().name}:{len(docs.stream)}"


def ekfac_scores(model: Model, queries: Sequence[Query], docs: Documents, store: FactorStore,
                 cfg: EkfacConfig = EkfacConfig(), *, fit_docs: Documents | None = None,
                 progress: bool = False) -> np.ndarray:
    """float32 [n_queries, n_documents]: EK-FAC influence of every document on every query
    (the mean over its prompts), fitting the factors first when `store` has none.

    `fit_docs` are the documents the factors are fitted on (default: a seeded sample of
    `cfg.fit_documents` of `docs`).

    Raises:
        ValueError: `store` holds factors of other weights, corpus or settings.
    """
    _kronfluence()
    with warnings.catch_warnings():  # kronfluence 1.0.1 calls torch.cuda.amp.GradScaler
        warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")
        return _scores(model, queries, docs, store, cfg, fit_docs, progress)


def _scores(model: Model, queries: Sequence[Query], docs: Documents, store: FactorStore,
            cfg: EkfacConfig, fit_docs: Documents | None, progress: bool) -> np.ndarray:
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    digest = weights_digest(model)
    key = corpus_key(docs)
    store.check(digest, key, cfg)
    work = copy.deepcopy(model)
    modules = tracked_modules(work, cfg.params)
    task = _task(modules)
    work = prepare_model(work, task)
    for name in ("kronfluence", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    store.write_meta(digest, key, cfg)
    analyzer = Analyzer("ekfac", work, task, cpu=next(model.parameters()).device.type == "cpu",
                        disable_tqdm=not progress, output_dir=str(store.root))
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=collate))
    n_ctx = model.cfg.n_ctx
    if fit_docs is None:
        rng = np.random.default_rng(cfg.seed)
        pick = np.sort(rng.choice(len(docs), min(cfg.fit_documents, len(docs)), replace=False))
        fit_docs = Documents(docs.corpus, docs.index[pick], docs.split)
    fit_lengths = fit_docs.spans[:, 1] - fit_docs.spans[:, 0]  # by length: little padding
    fitting = TokenDataset(DocumentSequences(fit_docs, n_ctx, np.argsort(fit_lengths,
                                                                         kind="stable")))
    analyzer.fit_all_factors("factors", fitting, per_device_batch_size=cfg.batch_size,
                             factor_args=FactorArguments(strategy="ekfac"))

    prompts, targets, owner = [], [], []
    for qi, query in enumerate(queries):
        target = object_ids(model, query.answer)[0]
        for prompt in query.prompts:
            prompts.append(np.asarray(encode_prompt(model, prompt)))
            targets.append(target)
            owner.append(qi)
    query_set = TokenDataset(prompts, targets)
    score_args = ScoreArguments(damping_factor=cfg.damping)
    out = np.zeros((len(queries), len(docs)), dtype=np.float32)
    owner_arr = np.asarray(owner)
    lengths = docs.spans[:, 1] - docs.spans[:, 0]
    shards = range(0, len(docs), cfg.shard)
    for start in tqdm(shards, desc="EK-FAC score shards", disable=not progress or len(shards) < 2,
                      leave=False):
        stop = min(start + cfg.shard, len(docs))
        name = (f"q{_queries_key(prompts, targets)}_d{_index_key(docs.index[start:stop])}"
                f"_damping{cfg.damping or 'auto'}")
        # by length, so that a batch pads little (scores are put back in document order)
        order = start + np.argsort(np.minimum(lengths[start:stop], n_ctx), kind="stable")
        scores = analyzer.load_pairwise_scores(name)
        if scores is None:
            train = TokenDataset(DocumentSequences(docs, n_ctx, order))
            analyzer.compute_pairwise_scores(name, "factors", query_set, train,
                                             per_device_query_batch_size=len(query_set),
                                             per_device_train_batch_size=cfg.batch_size,
                                             score_args=score_args)
            scores = analyzer.load_pairwise_scores(name)
        per_prompt = scores["all_modules"].float().numpy()  # [prompts, shard], by length
        for qi in range(len(queries)):
            out[qi, order] = per_prompt[owner_arr == qi].mean(0)
    return out


def _queries_key(prompts: list[np.ndarray], targets: list[int]) -> str:
    digest = hashlib.sha256()
    for p, t in zip(prompts, targets):
        digest.update(np.asarray(p, np.int64).tobytes() + b"|" + str(t).encode() + b";")
    return digest.hexdigest()[:12]


def _index_key(index: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(index, np.int64).tobytes()).hexdigest()[:12]
