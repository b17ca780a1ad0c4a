"""Attention patterns with their tokens, and the logit lens.

These are the building blocks the dashboard and the notebooks use:

    pats = attention_patterns(model, "the dog sees the dog")
    pats.pattern[1, 3]            # layer 1, head 3: [query, key]
    lens = logit_lens(model, "the capital of France is", k=5)

Activation patching is `circuits.patching`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor

from workbench.hooks import hook_name
from workbench.prompts import to_tokens

if TYPE_CHECKING:
    from workbench.models import Model


@dataclass(frozen=True)
class AttentionPatterns:
    """Every head's pattern of one sequence.

    Attributes:
        pattern: `[layer, head, query, key]` attention weights.
        tokens: the token strings (BOS included when the model prepends one).
        token_ids: the token ids.
    """

    pattern: Float[Tensor, "layer head query key"]
    tokens: list[str]
    token_ids: Int[Tensor, " pos"]

    def head(self, layer: int, head: int) -> Float[Tensor, "query key"]:
        return self.pattern[layer, head]


def _str_tokens(model: Model, tokens: Tensor) -> list[str]:
    if getattr(model, "tokenizer", None) is None:
        return [str(int(t)) for t in tokens]
    return list(model.to_str_tokens(tokens))


@torch.no_grad()
def attention_patterns(model: Model, text_or_tokens: str | Sequence[int] | Tensor
                       ) -> AttentionPatterns:
    """Every head's attention pattern on one text (or token sequence), with its tokens."""
    tokens = to_tokens(model, text_or_tokens)
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(device), return_type=None,
                                    names_filter=lambda n: n.endswith("attn.hook_pattern"))
    pattern = torch.stack([cache[hook_name(layer, "attn.hook_pattern")][0].float().cpu()
                           for layer in range(model.cfg.n_layers)])
    return AttentionPatterns(pattern=pattern, tokens=_str_tokens(model, tokens[0]),
                             token_ids=tokens[0])


@torch.no_grad()
def batch_attention_patterns(model: Model, tokens: Int[Tensor, "batch pos"]
                             ) -> Float[Tensor, "batch layer head query key"]:
    """Every head's pattern for a batch of equal-length token sequences."""
    if tokens.ndim != 2 or tokens.shape[1] > model.cfg.n_ctx:
        raise ValueError(f"tokens of shape {tuple(tokens.shape)}: expected [batch, pos] with "
                         f"pos <= n_ctx={model.cfg.n_ctx}")
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(device), return_type=None,
                                    names_filter=lambda n: n.endswith("attn.hook_pattern"))
    return torch.stack([cache[hook_name(layer, "attn.hook_pattern")].float().cpu()
                        for layer in range(model.cfg.n_layers)], dim=1)


@dataclass(frozen=True)
class LogitLens:
    """Top-k next-token predictions read from the residual stream after each layer.

    Attributes:
        layers: names of the residual points (`embed`, then `blocks.L.hook_resid_post`).
        top_ids / top_probs: `[point, pos, k]` ids and probabilities.
        logprob_of_next: `[point, pos]` log-probability of the actual next token (nan at the
            last position).
        tokens: input token strings.
    """

    layers: list[str]
    top_ids: Int[Tensor, "point pos k"]
    top_probs: Float[Tensor, "point pos k"]
    logprob_of_next: Float[Tensor, "point pos"]
    tokens: list[str]

    def top_tokens(self, model: Model, pos: int = -1) -> list[list[str]]:
        """The top-k token strings at position `pos`, one list per residual point."""
        return [_str_tokens(model, ids) for ids in self.top_ids[:, pos]]


@torch.no_grad()
def logit_lens(model: Model, text_or_tokens: str | Sequence[int] | Tensor, k: int = 5) -> LogitLens:
    """Apply the final layer norm and unembedding to the residual stream after the embedding
    and after every block (nostalgebraist 2020); the last point equals the model's logits."""
    tokens = to_tokens(model, text_or_tokens)
    names = [hook_name(0, "hook_resid_pre")] + [hook_name(i, "hook_resid_post")
                                           for i in range(model.cfg.n_layers)]
    device = next(model.parameters()).device
    _, cache = model.run_with_cache(tokens.to(device), names_filter=lambda n: n in names)
    ids, probs, nxt = [], [], torch.full((len(names), tokens.shape[1]), float("nan"))
    for i, n in enumerate(names):  # one point at a time: memory of one [pos, vocab] logits
        logp = model.unembed(model.ln_final(cache[n])).float()[0].log_softmax(-1).cpu()
        top = logp.topk(min(k, logp.shape[-1]), dim=-1)
        ids.append(top.indices)
        probs.append(top.values.exp())
        nxt[i, :-1] = logp[:-1].gather(-1, tokens[0, 1:, None])[:, 0]
    return LogitLens(layers=["embed"] + names[1:], top_ids=torch.stack(ids),
                     top_probs=torch.stack(probs), logprob_of_next=nxt,
                     tokens=_str_tokens(model, tokens[0]))
