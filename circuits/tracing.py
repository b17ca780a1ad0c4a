"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

Corrupt the subject of a factual prompt by adding Gaussian noise to its token embeddings,
then restore one hidden state at a time to its clean value and measure how much of the
probability of the correct next token comes back:

    result = causal_trace(model, "anna berg lives in", "anna berg", "velmora")
    result.scores["mlp"]          # [n_layers, n_pos] p(target) with that MLP output restored
    result.peak("mlp")            # (layer, pos) of the largest effect at the last subject token
    trace_figure(result).show()

Three kinds of state, as in the ROME repository: `resid` (the block output,
`blocks.{l}.hook_resid_post`), `mlp` (`blocks.{l}.hook_mlp_out`) and `attn`
(`blocks.{l}.hook_attn_out`); `mlp` and `attn` restore a window of `window` consecutive layers
around `l`, as Meng et al. do with window 10 on GPT-2 XL.

`causal_trace` runs every restoration in a few large batches (one row per restoration and
noise sample); `causal_trace_loop` is the baseline, one forward run per restoration as the
ROME repository runs it (`trace_important_states` / `trace_important_window`). Both use the
same noise, so their scores agree to float rounding.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuits.patching import patch_hook
from workbench.hooks import hook_name
from workbench.prompts import encode, to_tokens, tokenizer_of

if TYPE_CHECKING:
    from workbench.models import Model


SCHEMA = "workbench.trace/1"
KINDS = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}
EMBED_HOOK = "hook_embed"  # token embedding, before the positional embedding is added


@dataclass(frozen=True)
class TraceConfig:
    """How to corrupt and what to restore.

    Attributes:
        kinds: states to restore, from `KINDS`.
        noise: std of the Gaussian added to the subject's token embeddings; None = 3 x the
            std of the entries of the model's token-embedding matrix `W_E` (Meng et al.).
        n_samples: noise draws; p(target) is averaged over them.
        window: consecutive layers restored around layer `l` for `mlp` and `attn` (layers
            `l - window // 2` up to but excluding `l + ceil(window / 2)`, clipped to the
            model; 1 = layer `l` alone). `resid` always restores one layer.
        seed: seed of the noise.
        batch_size: sequences per forward pass in `causal_trace`.
        layers: the layers `l` to trace (None = all); the others' scores are nan.
        skip_unchanged: `causal_trace` does not run restorations that cannot change the
            output and gives them the corrupted probability: states before the subject (the
            noise cannot reach them) and the last layer's states off the last position (they
            only feed the logits of their own position). `causal_trace_loop` runs them all.

    >>> TraceConfig(kinds="mlp", window=3).kinds
    ('mlp',)
    """

    kinds: tuple[str, ...] = ("resid", "mlp", "attn")
    noise: float | None = None
    n_samples: int = 10
    window: int = 1
    seed: int = 0
    batch_size: int = 512
    layers: tuple[int, ...] | None = None
    skip_unchanged: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.kinds, str):  # kinds="mlp" means ("mlp",), not ("m", "l", "p")
            object.__setattr__(self, "kinds", (self.kinds,))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        unknown = [k for k in self.kinds if k not in KINDS]
        if not self.kinds or unknown or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"TraceConfig.kinds={self.kinds!r}; pass distinct kinds from "
                             f"{tuple(KINDS)}, e.g. kinds=('mlp',)")
        if self.noise is not None and not (isinstance(self.noise, (int, float))
                                           and math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"TraceConfig.noise={self.noise!r}; pass a finite std >= 0, or "
                             "None for 3 x the std of the token embeddings")
        for name in ("n_samples", "window", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TraceConfig.{name}={value!r}; it must be an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"TraceConfig.seed={self.seed!r}; pass an integer")
        if self.layers is not None and (
                not self.layers or len(set(self.layers)) != len(self.layers)
                or any(isinstance(x, bool) or not isinstance(x, int) or x < 0
                       for x in self.layers)):
            raise ValueError(f"TraceConfig.layers={self.layers!r}; pass distinct layer "
                             "indices >= 0, or None for all layers")


@dataclass
class TraceResult:
    """The causal trace of one fact.

    Attributes:
        prompt, tokens: the prompt and its token strings (BOS included when the model
            prepends one).
        subject: `[start, end)` token positions of the subject (the corrupted tokens).
        target, target_id: the predicted token and its id.
        clean_prob: p(target) on the clean prompt.
        corrupt_prob: p(target) with the subject corrupted and nothing restored (mean over
            the noise samples).
        scores: kind -> `[n_layers, n_pos]` p(target) with that state restored (mean over
            samples); nan for layers not traced.
        noise: the noise std used (`TraceConfig.noise`, resolved).
        config: the configuration.
    """

    prompt: str
    tokens: list[str]
    subject: tuple[int, int]
    target: str
    target_id: int
    clean_prob: float
    corrupt_prob: float
    scores: dict[str, Float[np.ndarray, "layer pos"]]
    noise: float = 0.0
    config: TraceConfig = field(default_factory=TraceConfig)

    def _kind(self, kind: str) -> Float[np.ndarray, "layer pos"]:
        if kind not in self.scores:
            raise ValueError(f"kind {kind!r} was not traced; traced kinds: "
                             f"{tuple(self.scores)} (set TraceConfig.kinds)")
        return self.scores[kind]

    def peak(self, kind: str = "mlp", position: str | int = "last_subject") -> tuple[int, int]:
        """`(layer, pos)` of the largest restored p(target) of `kind`: at the last subject
        token (`"last_subject"`), anywhere (`"any"`) or at position `position` (an int;
        negative counts from the end)."""
        scores = self._kind(kind)
        n_pos = scores.shape[1]
        if position == "last_subject":
            cols = [self.subject[1] - 1]
        elif position == "any":
            cols = list(range(n_pos))
        elif isinstance(position, int) and not isinstance(position, bool) \
                and -n_pos <= position < n_pos:
            cols = [position % n_pos]
        else:
            raise ValueError(f"position={position!r}; pass 'last_subject', 'any' or a token "
                             f"position in [{-n_pos}, {n_pos})")
        sub = scores[:, cols]
        if np.isnan(sub).all():
            raise ValueError(f"no traced layer for kind {kind!r} at positions {cols}")
        layer, j = np.unravel_index(np.nanargmax(sub), sub.shape)
        return int(layer), int(cols[j])

    def indirect_effect(self, kind: str) -> Float[np.ndarray, "layer pos"]:
        """`scores[kind] - corrupt_prob`: how much p(target) each restored state brings back."""
        return self._kind(kind) - self.corrupt_prob

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the inputs, probabilities, scores (nan as None) and each kind's peaks
        at the last subject token, the last token and anywhere."""
        def peaks(kind: str) -> dict[str, list[int] | None]:
            out: dict[str, list[int] | None] = {}
            for name, pos in (("last_subject", "last_subject"), ("last_token", -1),
                              ("any", "any")):
                try:
                    out[name] = list(self.peak(kind, pos))
                except ValueError:
                    out[name] = None
            return out

        return {
            "schema": SCHEMA, "prompt": self.prompt, "tokens": list(self.tokens),
            "subject": list(self.subject), "target": self.target, "target_id": self.target_id,
            "clean_prob": self.clean_prob, "corrupt_prob": self.corrupt_prob,
            "noise": self.noise, "config": asdict(self.config),
            "scores": {k: [[None if math.isnan(x) else float(x) for x in row] for row in s]
                       for k, s in self.scores.items()},
            "peaks": {k: peaks(k) for k in self.scores},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceResult:
        """The inverse of `to_dict`."""
        cfg = dict(d["config"])
        cfg["kinds"] = tuple(cfg["kinds"])
        cfg["layers"] = None if cfg["layers"] is None else tuple(cfg["layers"])
        return cls(prompt=d["prompt"], tokens=list(d["tokens"]), subject=tuple(d["subject"]),
                   target=d["target"], target_id=int(d["target_id"]),
                   clean_prob=float(d["clean_prob"]), corrupt_prob=float(d["corrupt_prob"]),
                   scores={k: np.array(v, dtype=float) for k, v in d["scores"].items()},
                   noise=float(d["noise"]), config=TraceConfig(**cfg))


def _sublist(ids: list[int], sub: list[int]) -> int:
    return next((i for i in range(len(ids) - len(sub) + 1) if sub and ids[i:i + len(sub)] == sub),
                -1)


def find_subject(model: Model, prompt: str, subject: str) -> tuple[int, int]:
    """`[start, end)` token positions of `subject` in `model.to_tokens(prompt)` (BOS counted):
    the tokens that overlap its first whole-word occurrence in the text (or its first
    occurrence when it only occurs inside a word).

    Works for word-level and sub-word tokenizers (BPE with leading spaces: `" berg"` covers
    `"berg"`) through the tokenizer's character offsets.
    """
    tok = tokenizer_of(model, "causal tracing")
    text = subject.strip()
    found = re.search(rf"(?<!\w){re.escape(text)}(?!\w)", prompt) if text else None
    c0 = found.start() if found else (prompt.find(text) if text else -1)
    if c0 < 0:
        raise ValueError(f"subject {subject!r} is not in the prompt {prompt!r}; pass a subject "
                         "that occurs in the prompt")
    c1 = c0 + len(text)
    tokens = to_tokens(model, prompt)[0].tolist()
    try:
        enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    except (NotImplementedError, TypeError, KeyError):  # slow tokenizers have no offsets
        ids, offsets = encode(tok, prompt), None
    n_bos = len(tokens) - len(ids)
    if offsets is not None and n_bos >= 0 and tokens[n_bos:] == ids:
        inside = [i for i, (s, e) in enumerate(offsets) if s < c1 and e > c0 and e > s]
        if inside:
            return n_bos + inside[0], n_bos + inside[-1] + 1
    for variant in (" " + text, text):  # token ids of the subject as a word or at the start
        sub = encode(tok, variant)
        start = _sublist(tokens, sub)
        if start >= 0:
            return start, start + len(sub)
    raise ValueError(f"subject {subject!r} occurs in the prompt {prompt!r} but not on token "
                     "boundaries of its tokens; pass whole words as the subject")


def target_token_id(model: Model, target: str) -> int:
    """Id of `target` as the next token after a prompt (with a leading space, as a word
    follows the prompt); raises when it is several tokens or unknown to the vocabulary."""
    tok = tokenizer_of(model, "causal tracing")
    word = target.strip()
    if not word:
        raise ValueError(f"target {target!r} is empty; pass the expected next word")
    ids = encode(tok, " " + word)
    if len(ids) != 1:
        pieces = [tok.decode([i]) for i in ids]
        first = pieces[0].strip() if pieces else word
        raise ValueError(f"target {target!r} is {len(ids)} tokens {pieces} after the prompt; "
                         "causal tracing needs one token: pass a single-token target, e.g. "
                         f"its first token {first!r} when that identifies the answer")
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and ids[0] == unk and word != tok.unk_token:
        raise ValueError(f"target {target!r} is not in the tokenizer's vocabulary (it encodes "
                         "to the unknown token); pass a word the model knows")
    return ids[0]


@dataclass
class _Problem:
    """A prompt prepared for tracing: tokens and noise on the model's device."""

    tokens: Int[Tensor, "1 pos"]
    str_tokens: list[str]
    subject: tuple[int, int]
    target_id: int
    noise: Float[Tensor, "sample n_subject d_model"]
    noise_std: float
    layers: list[int]


def _hook_name(kind: str, layer: int) -> str:
    return hook_name(layer, KINDS[kind])


def _window(kind: str, layer: int, window: int, n_layers: int) -> range:
    """Layers restored for a trace at `layer` (ROME's `trace_important_window`)."""
    if kind == "resid":
        return range(layer, layer + 1)
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def _prepare(model: Model, prompt: str, subject: str, target: str,
             cfg: TraceConfig) -> _Problem:
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if cfg.layers is None else list(cfg.layers)
    bad = [x for x in layers if x >= n_layers]
    if bad:
        raise ValueError(f"TraceConfig.layers has {bad}, out of range for a model with "
                         f"n_layers={n_layers}; pass layers in [0, {n_layers - 1}]")
    if EMBED_HOOK not in model.hook_dict:
        raise ValueError(f"the model has no {EMBED_HOOK!r} hook to add the noise at; causal "
                         "tracing needs a TransformerBridge with a token-embedding hook")
    span = find_subject(model, prompt, subject)
    tid = target_token_id(model, target)
    device = next(model.parameters()).device
    tokens = to_tokens(model, prompt).to(device)
    std = cfg.noise if cfg.noise is not None else 3 * float(model.W_E.detach().float().std())
    gen = torch.Generator().manual_seed(cfg.seed)  # on CPU: the same noise on every device
    noise = torch.randn((cfg.n_samples, span[1] - span[0], model.cfg.d_model), generator=gen,
                        dtype=torch.float32) * std
    return _Problem(tokens=tokens, str_tokens=list(model.to_str_tokens(tokens[0])),
                    subject=span, target_id=tid, noise=noise.to(device), noise_std=float(std),
                    layers=layers)


def _target_prob(logits: Tensor, tid: int) -> Float[Tensor, " batch"]:
    return logits[:, -1].float().softmax(-1)[:, tid]


def _result(prompt: str, target: str, prob: _Problem, cfg: TraceConfig, clean: float,
            corrupt: float, scores: dict[str, np.ndarray]) -> TraceResult:
    return TraceResult(prompt=prompt, tokens=prob.str_tokens, subject=prob.subject,
                       target=target, target_id=prob.target_id, clean_prob=clean,
                       corrupt_prob=corrupt, scores=scores, noise=prob.noise_std, config=cfg)


@torch.inference_mode()
def causal_trace(model: Model, prompt: str, subject: str, target: str,
                 cfg: TraceConfig = TraceConfig()) -> TraceResult:
    """Causal trace of `target` after `prompt` with `subject` corrupted, every restoration
    batched.

    One clean run caches the states to restore. Then row `r` of a batch is noise sample
    `r % n_samples` of restoration `r // n_samples` (restoration 0 restores nothing and gives
    `corrupt_prob`); one hook per restored hook name writes the clean activation into the
    rows that restore it, at their positions (one `index_put` per hook and chunk of
    `cfg.batch_size` rows). Probabilities are computed in float32.
    """
    prob = _prepare(model, prompt, subject, target, cfg)
    n_layers, n_pos = model.cfg.n_layers, prob.tokens.shape[1]
    start, end = prob.subject
    names = {_hook_name(k, j) for k in cfg.kinds for j in range(n_layers)}
    logits, cache = model.run_with_cache(prob.tokens, names_filter=lambda n: n in names)
    clean_prob = float(_target_prob(logits, prob.target_id)[0])

    # restorations: (kind, layer, pos, restored layers); the first restores nothing
    todo: list[tuple[str, int, int, range]] = [("", -1, -1, range(0))]
    for kind in cfg.kinds:
        for layer in prob.layers:
            restored = _window(kind, layer, cfg.window, n_layers)
            for pos in range(n_pos):
                unchanged = pos < start or (restored.start == n_layers - 1 and pos != n_pos - 1)
                if not (cfg.skip_unchanged and unchanged):
                    todo.append((kind, layer, pos, restored))
    n_samples = cfg.n_samples
    rows_of: dict[str, list[int]] = {}
    pos_of: dict[str, list[int]] = {}
    for i, (kind, _, pos, restored) in enumerate(todo):
        for j in restored:
            name = _hook_name(kind, j)
            rows_of.setdefault(name, []).extend(range(i * n_samples, (i + 1) * n_samples))
            pos_of.setdefault(name, []).extend([pos] * n_samples)
    device = prob.tokens.device
    index = {n: (torch.tensor(r, dtype=torch.long, device=device),
                 torch.tensor(pos_of[n], dtype=torch.long, device=device))
             for n, r in rows_of.items()}  # rows ascending: restorations are in row order

    n_rows = len(todo) * n_samples
    probs = torch.empty(n_rows)
    for a in range(0, n_rows, cfg.batch_size):
        b = min(a + cfg.batch_size, n_rows)
        noise = prob.noise[torch.arange(a, b, device=device) % n_samples]  # [B, n_subj, d]
        hooks: list[tuple[str, Any]] = [(EMBED_HOOK, _add_noise(noise, start, end))]
        for name, (rows, pos) in index.items():
            lo, hi = (int(x) for x in torch.searchsorted(rows, torch.tensor([a, b],
                                                                            device=device)))
            if hi > lo:
                hooks.append((name, patch_hook(cache[name][0], rows[lo:hi] - a, pos[lo:hi])))
        if "unembed.hook_in" in model.hook_dict:  # only the last position's logits matter
            hooks.append(("unembed.hook_in", lambda act, hook: act[:, -1:]))
        out = model.run_with_hooks(prob.tokens.expand(b - a, -1), fwd_hooks=hooks)
        probs[a:b] = _target_prob(out, prob.target_id).cpu()

    means = probs.view(len(todo), n_samples).mean(1).double().numpy()
    corrupt = float(means[0])
    scores = {}
    for kind in cfg.kinds:
        s = np.full((n_layers, n_pos), np.nan)
        s[prob.layers] = corrupt
        scores[kind] = s
    for i, (kind, layer, pos, _) in enumerate(todo[1:], start=1):
        scores[kind][layer, pos] = means[i]
    return _result(prompt, target, prob, cfg, clean_prob, corrupt, scores)


def _add_noise(noise: Tensor, start: int, end: int) -> Any:
    def hook(act: Tensor, hook: Any) -> Tensor:
        act = act.clone()
        act[:, start:end] += noise.to(act.dtype)
        return act
    return hook


@torch.inference_mode()
def causal_trace_loop(model: Model, prompt: str, subject: str, target: str,
                      cfg: TraceConfig = TraceConfig()) -> TraceResult:
    """The baseline: one forward run per (kind, layer, position), as the ROME repository's
    `trace_with_patch` does it.

    Each run is a batch of `n_samples + 1` copies of the prompt: row 0 clean, rows 1.. with
    noise sample `s` on the subject's embeddings, and hooks that copy row 0's state into the
    other rows at the restored layers and position. Same noise as `causal_trace`; every
    restoration is run (`cfg.skip_unchanged` and `cfg.batch_size` do not apply).
    """
    prob = _prepare(model, prompt, subject, target, cfg)
    n_layers, n_pos = model.cfg.n_layers, prob.tokens.shape[1]
    start, end = prob.subject
    batch = prob.tokens.expand(cfg.n_samples + 1, -1)
    noise = torch.cat([torch.zeros_like(prob.noise[:1]), prob.noise])  # row 0 stays clean
    noisy = torch.arange(1, cfg.n_samples + 1, device=batch.device)

    def run(names: list[str], pos: int) -> float:
        hooks = [(EMBED_HOOK, _add_noise(noise, start, end))]
        at = torch.full_like(noisy, pos)  # rows 1.. take row 0's state at `pos`
        hooks += [(name, patch_hook(0, noisy, at)) for name in names]
        logits = model.run_with_hooks(batch, fwd_hooks=hooks)
        return float(_target_prob(logits[1:], prob.target_id).mean())

    clean_prob = float(_target_prob(model(prob.tokens), prob.target_id)[0])
    corrupt = run([], 0)
    scores = {}
    for kind in cfg.kinds:
        s = np.full((n_layers, n_pos), np.nan)
        for pos in range(n_pos):
            for layer in prob.layers:
                restored = _window(kind, layer, cfg.window, n_layers)
                s[layer, pos] = run([_hook_name(kind, j) for j in restored], pos)
        scores[kind] = s
    return _result(prompt, target, prob, cfg, clean_prob, corrupt, scores)


def trace_figure(result: TraceResult) -> Any:
    """A plotly figure: one layers x tokens heatmap of restored p(target) per kind; hover
    shows the layer, token and p; subject tokens are starred and shaded."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    kinds = list(result.scores)
    start, end = result.subject
    labels = [f"{i}:{t}{'*' if start <= i < end else ''}" for i, t in enumerate(result.tokens)]
    titles = {"resid": "residual stream (block output) restored", "mlp": "MLP output restored",
              "attn": "attention output restored"}
    window = result.config.window
    fig = make_subplots(rows=len(kinds), cols=1, vertical_spacing=0.12,
                        subplot_titles=[titles[k] + (f" (window {window})" if k != "resid"
                                                     and window > 1 else "") for k in kinds])
    for i, kind in enumerate(kinds):
        s = result.scores[kind]
        z = [[None if math.isnan(x) else float(x) for x in row] for row in s]
        fig.add_trace(go.Heatmap(z=z, x=labels, y=list(range(s.shape[0])), zmin=0,
                                 colorscale="Purples", showscale=i == 0,
                                 hovertemplate="layer %{y}<br>token %{x}<br>"
                                               f"p({result.target})"
                                               " = %{z:.4f}<extra></extra>"),
                      row=i + 1, col=1)
        fig.add_vrect(x0=start - 0.5, x1=end - 0.5, line_width=1.5, line_color="black",
                      row=i + 1, col=1)
        fig.update_yaxes(title_text="layer", row=i + 1, col=1)
    fig.update_xaxes(type="category")
    fig.update_layout(title=f"Causal trace: p({result.target!r}) after {result.prompt!r} "
                            f"(clean {result.clean_prob:.3f}, subject corrupted "
                            f"{result.corrupt_prob:.3f}; * = subject)",
                      template="plotly_white", height=260 * len(kinds) + 120)
    return fig
