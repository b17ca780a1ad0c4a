"""Is few-shot learning of a novel mapping the induction circuit at work?

A novel-mapping prompt "barn : three ; duck : one ; barn :" can only be answered by finding
the earlier "barn :" and copying what followed it: the induction pattern (Olsson et al. 2022).
This module links the two analyses on the same items:

- the induction heads are found as `workbench induction` finds them (induction score on
  repeated random tokens >= `min_score`, `circuits.scores.head_scores`);
- `attention`: at the query's last token, each induction head's attention to the answer
  token of the matching demonstration, beside its mean attention to the answer tokens of the
  other demonstrations (an induction head puts its mass on the matching one);
- `ablation`: accuracy of every task at each k with the induction heads mean-ablated (their
  `hook_z` replaced by its mean over the items' positions), and, as a control, with as many
  other heads ablated (the lowest induction scores, previous-token heads excluded): the drop
  the induction heads cause beyond removing any heads at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from circuits.inputs import repeated_tokens_for
from circuits.scores import head_name, head_scores
from workbench.hooks import hook_name
from workbench.prompts import encode_prompt, word_ids

if TYPE_CHECKING:
    from workbench.models import Model

Head = tuple[int, int]


@dataclass(frozen=True)
class Mechanism:
    """The induction heads of a model and the heads of the control ablation."""

    heads: list[Head]
    control: list[Head]
    scores: dict[str, float]
    pool: list[Head]  # heads that may serve as controls, lowest induction score first


@torch.no_grad()
def find_induction_heads(model: Model, min_score: float = 0.4, min_prev_token: float = 0.4,
                         n_seqs: int = 16, seed: int = 0) -> Mechanism:
    """Heads whose induction score on repeated random tokens is >= `min_score`, and as many
    control heads: the lowest induction scores among the heads that are neither induction
    nor previous-token heads (previous-token score >= `min_prev_token`, the circuit's first
    half, whose removal would also break induction)."""
    rep = repeated_tokens_for(model, n_seqs, seed=seed)
    scores = head_scores(model, rep)
    score, prev = scores["induction"], scores["prev_token"]
    n_heads = score.shape[1]
    order = [(int(i) // n_heads, int(i) % n_heads) for i in score.flatten().argsort()]
    heads = sorted(h for h in order if float(score[h]) >= min_score)
    pool = [h for h in order if float(prev[h]) < min_prev_token]
    others = [h for h in pool if h not in heads]
    return Mechanism(heads, sorted(others[: len(heads)]),
                     {head_name(*h): float(score[h]) for h in order}, pool)


@torch.no_grad()
def z_means(model: Model, prompts: list[list[int]]) -> dict[int, Tensor]:
    """Per layer, every head's `hook_z` averaged over all positions of `prompts`
    (`[head, d_head]`): what mean ablation puts in its place. One pass per prompt."""
    names = {hook_name(layer, "attn.hook_z"): layer for layer in range(model.cfg.n_layers)}
    sums: dict[int, Tensor] = {}
    count = 0
    device = next(model.parameters()).device
    for ids in prompts:
        _, cache = model.run_with_cache(torch.tensor([ids], device=device),
                                        names_filter=lambda n: n in names)
        for name, layer in names.items():
            z = cache[name][0].float().sum(0)
            sums[layer] = z if layer not in sums else sums[layer] + z
        count += len(ids)
    return {layer: total / count for layer, total in sums.items()}


def mean_ablation_hooks(heads: list[Head], means: dict[int, Tensor]
                        ) -> list[tuple[str, Any]]:
    """Forward hooks replacing each of `heads`' `hook_z` by its mean (`z_means`)."""
    layers = sorted({layer for layer, _ in heads})

    def hook_for(layer: int) -> Any:
        own = [h for lay, h in heads if lay == layer]

        def ablate(z: Tensor, hook: Any) -> Tensor:
            z = z.clone()
            for h in own:
                z[:, :, h] = means[layer][h].to(z.device, z.dtype)
            return z
        return ablate

    return [(hook_name(layer, "attn.hook_z"), hook_for(layer)) for layer in layers]


def answer_positions(model: Model, item: dict[str, Any]) -> tuple[list[int], list[int], int]:
    """Token positions (in `encode_prompt` of the item's prefix) of the first token of the
    matching demonstration's answer, of the other demonstrations' answers, and the query's
    last token. A demonstration "x : y" is found by its tokens; BPE splits are handled."""
    ids = encode_prompt(model, item["prefix"])
    colon = word_ids(model.tokenizer, ":")
    match, other = [], []
    seen: dict[str, int] = {}
    for x, _y in item["demos"]:
        pattern = word_ids(model.tokenizer, x) + colon
        start = seen.get(x, 0)
        for i in range(start, len(ids) - len(pattern)):
            if ids[i : i + len(pattern)] == pattern:
                pos = i + len(pattern)
                (match if x == item["x"] else other).append(pos)
                seen[x] = pos
                break
    return match, other, len(ids) - 1


@torch.no_grad()
def attention_to_answers(model: Model, items: list[dict[str, Any]], heads: list[Head]
                         ) -> dict[str, dict[str, float]]:
    """Per k: each head's mean attention from the query's last token to the matching
    demonstration's answer and (per demonstration) to the others' answers."""
    device = next(model.parameters()).device
    layers = sorted({layer for layer, _ in heads})
    names = [hook_name(layer, "attn.hook_pattern") for layer in layers]
    sums: dict[str, dict[str, list[float]]] = {}
    for item in items:
        if int(item["k"]) == 0:
            continue
        match, other, q = answer_positions(model, item)
        if not match:
            continue
        ids = encode_prompt(model, item["prefix"])
        _, cache = model.run_with_cache(torch.tensor([ids], device=device),
                                        names_filter=lambda n: n in names)
        cell = sums.setdefault(str(item["k"]), {"match": [], "other": []})
        for layer, h in heads:
            row = cache[hook_name(layer, "attn.hook_pattern")][0, h, q].float().cpu()
            cell["match"].append(float(row[match].sum()))
            if other:
                cell["other"].append(float(row[other].mean()))
    return {k: {"to_matching_answer": sum(v["match"]) / len(v["match"]),
                "to_other_answer": (sum(v["other"]) / len(v["other"])) if v["other"]
                else None, "n": len(v["match"]) // max(1, len(heads))}
            for k, v in sorted(sums.items(), key=lambda kv: int(kv[0]))}
