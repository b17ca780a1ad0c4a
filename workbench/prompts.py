"""Text to the tokens a model reads, written once for every analysis.

Two conventions, kept apart on purpose:

- a *prompt* of ours (fact queries, belief prompts, agreement items) is fed as
  `<bos> + tokens(text)` whenever the tokenizer has a BOS token (`encode_prompt`), and the
  answer is read from the logits at its last position (`last_logits`);
- *text as the model reads it* (attention views, logit lens, causal tracing) goes through
  the model's own `to_tokens`, which prepends BOS only when the model does
  (`prepended_bos`, `to_tokens`, `tokenize`).

A word that follows a prompt is encoded after a space (`word_ids`), as BPE tokenizers mark
word starts; word-level tokenizers give the same ids either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from workbench.hooks import logits_at

if TYPE_CHECKING:
    from workbench.models import Model


def tokenizer_of(model: Model, needed_by: str = "this analysis") -> Any:
    """The model's tokenizer, or a ValueError saying what needs it."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError(f"{needed_by} needs the model's tokenizer (model.tokenizer is None); "
                         "load the model with its tokenizer")
    return tok


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text`, no special tokens added."""
    return list(tokenizer.encode(text, add_special_tokens=False))


def bos_ids(tokenizer: Any) -> list[int]:
    """`[bos]` when the tokenizer has a BOS token, else `[]`."""
    bos = tokenizer.bos_token_id
    return [] if bos is None else [bos]


def encode_prompt(model: Model, text: str) -> list[int]:
    """`<bos>` + the prompt's tokens, as every analysis feeds a prompt of ours."""
    return bos_ids(model.tokenizer) + encode(model.tokenizer, text)


def word_ids(tokenizer: Any, word: str) -> list[int]:
    """Tokens of `word` as it follows a prompt (after a space; bare when that gives none)."""
    return encode(tokenizer, " " + word) or encode(tokenizer, word)


def word_id(tokenizer: Any, word: str) -> int:
    """Id of `word` as it follows a space (its first sub-token for sub-word tokenizers)."""
    return word_ids(tokenizer, word)[0]


def prepended_bos(model: Model) -> int | None:
    """The BOS id the model's `to_tokens` prepends to text, None when it prepends none."""
    tok = getattr(model, "tokenizer", None)
    if tok is None or not getattr(model.cfg, "default_prepend_bos", True):
        return None
    return getattr(tok, "bos_token_id", None)


def to_tokens(model: Model, text_or_tokens: str | Sequence[int] | Tensor
              ) -> Int[Tensor, "1 pos"]:
    """A `[1, pos]` token tensor from text (BOS prepended as the model does) or ids; at most
    `n_ctx` tokens."""
    if isinstance(text_or_tokens, str):
        tokens = model.to_tokens(text_or_tokens)
    else:
        tokens = torch.as_tensor(text_or_tokens, dtype=torch.long)
        tokens = tokens[None] if tokens.ndim == 1 else tokens
    if tokens.shape[0] != 1:
        raise ValueError(f"expected one sequence, got a batch of {tokens.shape[0]}")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"the input has {tokens.shape[1]} tokens, more than the model's "
                         f"n_ctx={model.cfg.n_ctx}; shorten it or pass a window")
    return tokens


def tokenize(model: Model, text: str) -> Int[Tensor, " pos"]:
    """Token ids of `text` as the model encodes it (BOS prepended when it does), however
    long: callers cut windows themselves, never silently here."""
    if not text.strip():
        raise ValueError("the text is empty; type a prompt or pick a corpus document")
    return model.to_tokens(text, truncate=False)[0].cpu()


@torch.no_grad()
def last_logits(
    model: Model, prompts: list[list[int]], batch_size: int = 64, progress: bool = False
) -> Float[Tensor, "n d_vocab"]:
    """Next-token logits after each prompt (token ids; right-padded in batches)."""
    n_ctx = model.cfg.n_ctx
    for ids in prompts:
        if len(ids) > n_ctx:
            raise ValueError(f"prompt has {len(ids)} tokens; model n_ctx is {n_ctx}. Shorten it")
    device = next(model.parameters()).device
    out = []
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, disable=not progress, desc="eval", leave=False):
        width = max(len(prompts[i]) for i in batch)
        tokens = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            tokens[row, : len(prompts[i])] = torch.tensor(prompts[i])
        ends = torch.tensor([len(prompts[i]) - 1 for i in batch])
        # causal: right padding cannot leak backwards
        out.append(logits_at(model, tokens.to(device), ends).float().cpu())
    result = torch.cat(out)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return result[inverse]


def object_ids(model: Model, obj: str) -> list[int]:
    """Tokens of `obj` as it follows a prompt (after a space)."""
    ids = word_ids(model.tokenizer, obj)
    if not ids:
        raise ValueError(f"object {obj!r} encodes to no tokens; pass a non-empty object")
    return ids


@torch.no_grad()
def candidate_logprobs_many(
    model: Model, groups: Sequence[tuple[Sequence[str], Sequence[str]]], batch_size: int = 64
) -> list[Float[Tensor, "n_prompts n_candidates"]]:
    """`candidate_logprobs` of several `(prompts, candidates)` groups, in as few forward
    passes as they allow: the prompts of every group whose candidates are one token each
    are batched together (a handful of short prompts costs about what one does: the
    weights' memory traffic, not arithmetic, bounds a small batch on a CPU), the others are
    scored group by group. The same numbers as one `candidate_logprobs` call per group, to
    float rounding."""
    out: list[Tensor | None] = [None] * len(groups)
    single, encoded, columns = [], [], []
    for g, (prompts, candidates) in enumerate(groups):
        cand_ids = [object_ids(model, c) for c in candidates]
        if not prompts or any(len(c) != 1 for c in cand_ids):
            out[g] = candidate_logprobs(model, prompts, candidates, batch_size)
            continue
        single.append((g, len(encoded), len(prompts)))
        encoded += [encode_prompt(model, p) for p in prompts]
        columns.append(torch.tensor([c[0] for c in cand_ids]))
    if encoded:
        logp = F.log_softmax(last_logits(model, encoded, batch_size).float(), -1)
        for (g, lo, n), cols in zip(single, columns, strict=True):
            out[g] = logp[lo:lo + n][:, cols]
    return out  # type: ignore[return-value]


@torch.no_grad()
def candidate_logprobs(
    model: Model, prompts: Sequence[str], candidates: Sequence[str], batch_size: int = 64
) -> Float[Tensor, "n_prompts n_candidates"]:
    """log p(candidate | <bos> prompt) for every prompt and candidate (tokens summed)."""
    cand_ids = [object_ids(model, c) for c in candidates]
    encoded = [encode_prompt(model, p) for p in prompts]
    if not encoded:
        return torch.empty(0, len(cand_ids))
    if all(len(c) == 1 for c in cand_ids):  # one forward pass per prompt
        logp = F.log_softmax(last_logits(model, encoded, batch_size).float(), -1)
        return logp[:, torch.tensor([c[0] for c in cand_ids])]
    seqs = [p + c[:-1] for p in encoded for c in cand_ids]
    n_ctx = model.cfg.n_ctx
    if max(len(s) for s in seqs) > n_ctx:
        raise ValueError(f"a prompt plus candidate exceeds n_ctx={n_ctx}; shorten the prompt")
    device = next(model.parameters()).device
    out = torch.empty(len(seqs))
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start : start + batch_size]
        width = max(len(s) for s in batch)
        tokens = torch.zeros(len(batch), width, dtype=torch.long)
        for row, s in enumerate(batch):
            tokens[row, : len(s)] = torch.tensor(s)
        logp = F.log_softmax(model(tokens.to(device)).float(), -1).cpu()
        for row in range(len(batch)):
            i = start + row
            p, c = encoded[i // len(cand_ids)], cand_ids[i % len(cand_ids)]
            pos = torch.arange(len(p) - 1, len(p) - 1 + len(c))
            out[i] = logp[row, pos, torch.tensor(c)].sum()
    return out.view(len(prompts), len(cand_ids))
