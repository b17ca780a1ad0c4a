"""Elicit what a model states: scores of candidate answers after a query, and belief strength.

A belief is read as the top-1 candidate object after a query prompt (optionally after a
context); its strength is the margin, in nats, of the object over the best alternative,
averaged over the belief's prompts and paraphrases. Multi-token candidates are scored by
the summed log-probability of their tokens (teacher forcing), so real models with sub-word
tokenizers are read the same way as our word-level ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from beliefs.factbase import Belief
from workbench.prompts import candidate_logprobs, encode_prompt, object_ids

if TYPE_CHECKING:
    from workbench.models import Model


def single_token_id(model: Model, obj: str) -> int:
    """The one token of `obj`, or a ValueError naming the object and the fix."""
    ids = object_ids(model, obj)
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"object {obj!r} is {len(ids)} tokens {pieces} in this model's tokenizer; this "
            "method needs a one-token object: pick facts whose objects are single tokens"
        )
    return ids[0]


def join(context: str, query: str) -> str:
    return f"{context} {query}" if context else query


def stated(model: Model, prompts: Sequence[str], candidates: Sequence[str],
           batch_size: int = 64) -> list[str]:
    """The top-1 candidate after each prompt."""
    logp = candidate_logprobs(model, prompts, candidates, batch_size)
    return [candidates[int(i)] for i in logp.argmax(-1)]


@torch.no_grad()
def generate(model: Model, prompt: str, max_new_tokens: int = 4, stop: str = ".") -> str:
    """Greedy free generation after `prompt` (stops at `stop` or `max_new_tokens`)."""
    ids = encode_prompt(model, prompt)
    device = next(model.parameters()).device
    new: list[int] = []
    for _ in range(max_new_tokens):
        if len(ids) + len(new) >= model.cfg.n_ctx:
            break
        logits = model(torch.tensor([ids + new], device=device))[0, -1]
        new.append(int(logits.argmax()))
        if stop and stop in model.tokenizer.decode(new[-1:]):
            break
    return model.tokenizer.decode(new).strip()


@dataclass
class Elicitation:
    """What a model states about one belief, and how strongly.

    `stated` is the top-1 candidate on the first prompt; `p_object` the mean probability of
    the true object over all prompts (the full vocabulary's softmax); `margin` the mean of
    log p(object) - max log p(other candidate) over all prompts (nats; > 0 = believed);
    `consistency` the share of all prompts whose top-1 equals the most common answer;
    `correct` the share whose top-1 is the true object; `strength` = `margin`.
    """

    subject: str
    relation: str
    object: str
    stated: str
    answers: list[str]
    p_object: float
    margin: float
    consistency: float
    correct: float
    strength: float
    generation: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def elicit(model: Model, belief: Belief, context: str = "", generate_tokens: int = 4,
           batch_size: int = 64) -> Elicitation:
    """Read one belief on all its prompts and paraphrases (after `context` if given)."""
    queries = [join(context, q) for q in belief.prompts + belief.paraphrases]
    logp = candidate_logprobs(model, queries, belief.candidates, batch_size)
    idx = belief.candidates.index(belief.object)
    others = torch.cat([logp[:, :idx], logp[:, idx + 1 :]], 1)
    margin = (logp[:, idx] - others.max(-1).values).mean()
    answers = [belief.candidates[int(i)] for i in logp.argmax(-1)]
    majority = Counter(answers).most_common(1)[0][1]
    stop = belief.statement_end.strip()
    return Elicitation(
        subject=belief.subject,
        relation=belief.relation,
        object=belief.object,
        stated=answers[0],
        answers=answers,
        p_object=float(logp[:, idx].exp().mean()),
        margin=float(margin),
        consistency=majority / len(answers),
        correct=float(np.mean([a == belief.object for a in answers])),
        strength=float(margin),
        generation=generate(model, queries[0], generate_tokens, stop) if generate_tokens else "",
    )
