"""Hook names: glob patterns over a model's TransformerLens hook points, a weight checksum
that ties cached activations to the exact model that produced them, and partial runs (stop
before the unembedding or a block, unembed chosen positions, resume from a block's input)."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import operator
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from workbench.models import Model

_LAYER = re.compile(r"^blocks\.(\d+)\.")
_POINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def hook_name(layer: int | None, point: str) -> str:
    """The TransformerLens name of hook point `point` in block `layer` (None: a point
    outside the blocks), the one spelling of a hook name.

    Args:
        layer: the block's index (>= 0), or None for a point outside the blocks.
        point: the point's name inside the block (`hook_resid_post`, `attn.hook_pattern`,
            `mlp.hook_post`) or, with `layer=None`, the whole name (`ln_final.hook_in`).

    Raises:
        ValueError: a negative or non-integer layer, or a point that is not a dotted name
            (a glob, an empty string, or a name that already starts with `blocks.`).

    >>> hook_name(3, "attn.hook_pattern")
    'blocks.3.attn.hook_pattern'
    >>> hook_name(None, "ln_final.hook_in")
    'ln_final.hook_in'
    """
    index = None
    if layer is not None:
        try:  # an int, or a numpy / torch integer
            index = None if isinstance(layer, bool) else operator.index(layer)
        except TypeError:
            pass
        if index is None or index < 0:
            raise ValueError(f"hook_name layer={layer!r}; pass a block index >= 0, or None "
                             "for a point outside the blocks")
    if isinstance(point, str) and point.startswith("blocks."):
        raise ValueError(f"hook_name point={point!r} already names a block; pass the layer "
                         "and the point inside it, e.g. hook_name(0, 'hook_resid_pre')")
    if not isinstance(point, str) or not _POINT.match(point):
        raise ValueError(f"hook_name point={point!r}; pass a dotted hook point such as "
                         "'hook_resid_post' or 'attn.hook_pattern' (globs go to "
                         "resolve_hooks)")
    return point if index is None else f"blocks.{index}.{point}"


def layer_of(name: str) -> int | None:
    """The block of a hook name (`blocks.3.attn.hook_z` -> 3), None outside the blocks.

    >>> layer_of("blocks.3.attn.hook_z"), layer_of("ln_final.hook_in")
    (3, None)
    """
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def hook_names(model: Model) -> list[str]:
    """Every hook point of a TransformerBridge (in the bridge's registration order)."""
    return list(model.hook_dict.keys())


def _summarise(names: list[str]) -> str:
    """`blocks.{0..3}.hook_resid_post`-style summary of many names."""
    seen: dict[str, list[int]] = {}
    order: list[str] = []
    for name in names:
        m = _LAYER.match(name)
        key = _LAYER.sub("blocks.{l}.", name) if m else name
        if key not in seen:
            seen[key] = []
            order.append(key)
        if m:
            seen[key].append(int(m.group(1)))
    parts = []
    for key in order:
        layers = seen[key]
        parts.append(key.replace("{l}", f"{{{min(layers)}..{max(layers)}}}") if layers else key)
    return ", ".join(parts)


def resolve_hooks(model: Model, patterns: list[str] | tuple[str, ...]) -> list[str]:
    """Hook names matching the glob `patterns`, in `hook_names` order, without duplicates.

    Raises:
        ValueError: a pattern matches no hook point (the message lists the valid names).

    >>> class M: hook_dict = {"hook_embed": 0, "blocks.0.hook_resid_post": 0,
    ...                       "blocks.1.hook_resid_post": 0}
    >>> resolve_hooks(M(), ["blocks.*.hook_resid_post"])
    ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']
    """
    if not patterns:
        raise ValueError("no hook patterns given; pass e.g. --hooks 'blocks.*.hook_resid_post'")
    names = hook_names(model)
    chosen: set[str] = set()
    for pattern in patterns:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ValueError(
                f"hook pattern {pattern!r} matches no hook point of this model. Valid names: "
                f"{_summarise(names)}"
            )
        chosen.update(matched)
    return [n for n in names if n in chosen]


def last_layer(hooks: list[str]) -> int | None:
    """The deepest block a hook set needs (None when a hook sits after the blocks)."""
    layers = []
    for name in hooks:
        m = _LAYER.match(name)
        if not m:
            if name.startswith(("hook_embed", "hook_pos_embed", "embed", "pos_embed")):
                layers.append(-1)
                continue
            return None
        layers.append(int(m.group(1)))
    return max(layers)


def weights_checksum(model: Model) -> str:
    """sha256 over the model's parameters and buffers (names, shapes, dtypes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


FINAL_NORM_IN = "ln_final.hook_in"


def _stop(x: Any, hook: Any) -> None:
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    raise StopAtLayerException(x)


def stop_hooks(model: Model, hooks: list[str]) -> tuple[dict[str, int], list[tuple[str, Any]]]:
    """How to end a forward pass as soon as `hooks` have fired: `(forward kwargs, fwd_hooks)`.

    Before a later block, `stop_at_layer`; after the last block, a hook on the final layer
    norm's input that raises TransformerLens' `StopAtLayerException` (which the bridge's
    forward catches), so the unembedding and its `[batch, pos, d_vocab]` logits are skipped.
    Nothing when a hook sits after the blocks or the model has no such hook point."""
    stop = last_layer(hooks)
    if stop is None:
        return {}, []
    if stop + 1 < model.cfg.n_layers:
        return {"stop_at_layer": stop + 1}, []
    if FINAL_NORM_IN in model.hook_dict:
        return {}, [(FINAL_NORM_IN, _stop)]
    return {}, []


UNEMBED_IN = "unembed.hook_in"
_UNEMBED_SLICES: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


@torch.no_grad()
def logits_at(model: Model, tokens: Int[Tensor, "batch pos"], positions: Int[Tensor, " batch"]
              ) -> Float[Tensor, "batch d_vocab"]:
    """The logits at one position of each row (`positions[i]` of row i): the run stops at the
    unembedding's input and unembeds those positions only (for a prompt of 12 tokens at
    GPT-2's vocabulary that skips about a fourth of the work). The first call per model
    checks that this equals the full run's logits (an architecture that changes logits after
    the unembedding, a soft cap, or a bridge without the hook point keeps the full run)."""
    rows = torch.arange(len(tokens), device=tokens.device)
    positions = positions.to(tokens.device)
    if not unembeds_exactly(model, tokens):
        return model(tokens)[rows, positions]
    return _sliced(model, tokens, rows, positions)


def unembeds_exactly(model: Model, tokens: Int[Tensor, "batch pos"]) -> bool:
    """Whether the model's logits are `model.unembed` of what enters the unembedding (checked
    once per model, on `tokens`, against the full run: an architecture that changes logits
    after the unembedding, a soft cap, or a bridge without the hook point fails)."""
    ok = _UNEMBED_SLICES.get(model)
    if ok is None:
        with torch.no_grad():
            full = model(tokens)
            try:
                x = unembed_input(lambda h: model.run_with_hooks(tokens, return_type=None,
                                                                 fwd_hooks=h))
                ok = bool(torch.allclose(model.unembed(x), full, rtol=1e-4,
                                         atol=1e-4 * float(full.abs().max()) + 1e-6))
            except (RuntimeError, AttributeError, TypeError, ValueError, KeyError):
                ok = False
        _UNEMBED_SLICES[model] = ok
    return ok


NLL_ROWS = 512  # positions unembedded at once by `unembedded_nll` (103 MB of logits at GPT-2 vocab)


@torch.no_grad()
def unembedded_nll(model: Model, x: Float[Tensor, "batch pos d_model"],
                   tokens: Int[Tensor, "batch pos"],
                   mask: Bool[Tensor, "batch pos"] | None = None) -> Float[Tensor, "batch pos"]:
    """Each masked token's negative log-likelihood (`workbench.evaluate.token_nll`; on the
    CPU, nan elsewhere) from what entered the unembedding (`x`, from `unembed_input`): the
    positions before the masked ones are unembedded `NLL_ROWS` at a time, so no
    `[batch, pos, d_vocab]` tensor is ever held (at GPT-2's vocabulary, 16 windows of 128
    tokens would be 412 MB of logits). Default mask: every position but the first. Equal to
    the full run's only where `unembeds_exactly`."""
    if mask is None:
        mask = torch.ones(tokens.shape, dtype=torch.bool)
        mask[:, 0] = False
    rows, pos = mask.cpu().nonzero(as_tuple=True)
    nll = torch.full(mask.shape, float("nan"))
    for lo in range(0, len(rows), NLL_ROWS):
        r, p = rows[lo:lo + NLL_ROWS], pos[lo:lo + NLL_ROWS]
        logits = model.unembed(x[r.to(x.device), p.to(x.device) - 1]).float()
        at = tokens[r.to(tokens.device), p.to(tokens.device)]
        target = logits.gather(-1, at.to(logits.device)[:, None])[:, 0]
        nll[r, p] = (torch.logsumexp(logits, -1) - target).cpu()
    return nll


def unembed_input(run: Callable[[list[tuple[str, Any]]], Any],
                  fwd_hooks: Sequence[tuple[str, Any]] = ()) -> Float[Tensor, "batch pos d_model"]:
    """What enters the unembedding in `run(hooks)` (a forward pass taking `fwd_hooks`, e.g.
    `lambda h: model.run_with_hooks(tokens, fwd_hooks=h)`), stopped there: unembed only the
    positions you need."""
    kept: dict[str, Tensor] = {}

    def grab(x: Tensor, hook: Any) -> None:
        kept["x"] = x
        _stop(x, hook)

    run([*fwd_hooks, (UNEMBED_IN, grab)])
    return kept["x"]


def _sliced(model: Model, tokens: Tensor, rows: Tensor, positions: Tensor) -> Tensor:
    x = unembed_input(lambda h: model.run_with_hooks(tokens, return_type=None, fwd_hooks=h))
    return model.unembed(x[rows, positions])


@torch.no_grad()
def resid_entering(model: Model, tokens: Int[Tensor, "batch pos"], layer: int
                   ) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream entering block `layer` (the output of the block before, or the
    embedding), from a run stopped there: what `run_from` resumes."""
    name = hook_name(layer - 1, "hook_resid_post") if layer else hook_name(0, "hook_resid_pre")
    # how each block below returns (a tensor, or a 1-tuple as native blocks do): what its
    # stand-in in `run_from` must return
    handles = [b.original_component.register_forward_hook(_note_return)
               for b in model.blocks[:layer] if getattr(b, "original_component", None)]
    try:
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name,
                                        stop_at_layer=max(layer, 1), return_type=None)
    finally:
        for h in handles:
            h.remove()
    return cache[name]


_RETURNS_TUPLE: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _note_return(module: Any, args: Any, output: Any) -> None:
    _RETURNS_TUPLE[module] = isinstance(output, tuple)


def run_from(model: Model, resid: Float[Tensor, "batch pos d_model"], layer: int,
             fwd_hooks: list[tuple[str, Any]] | None = None) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of the blocks from `layer` on, given the residual entering it: the blocks below
    do no work (the bridge's own `start_at_layer` still runs them and discards their output).
    For what does not change below `layer` (an edit of block `layer`'s MLP, say), run once
    up to it with `resid_entering` and resume here as often as needed. Check it against the
    full run on the model at hand (`resumes_exactly`): it leans on how the bridge's blocks
    call the Hugging Face layers."""
    with _blocks_passed_through(model, layer):
        return model.run_with_hooks(resid, start_at_layer=layer, fwd_hooks=fwd_hooks or [])


_RESUMES: weakref.WeakKeyDictionary[Any, dict[int, bool]] = weakref.WeakKeyDictionary()


def resumes_exactly(model: Model, tokens: Int[Tensor, "batch pos"], layer: int,
                    logits: Float[Tensor, "batch pos d_vocab"] | None = None) -> bool:
    """Whether `run_from(resid_entering(tokens))` gives the full run's `logits` (computed
    when not given) on this model, to float rounding. Checked once per (model, layer): the
    answer depends on how the bridge calls the Hugging Face layers, not on the weights or
    the tokens (a weight edit's optimisation asks before every edit)."""
    known = _RESUMES.setdefault(model, {})
    if layer in known:
        return known[layer]
    if len(tokens) == 1:  # a block's return unpacked along a batch of one hides a mismatch
        tokens = tokens.repeat(2, 1)
        logits = None if logits is None else logits.repeat(2, 1, 1)
    with torch.no_grad():
        full = model(tokens) if logits is None else logits
        try:
            got = run_from(model, resid_entering(model, tokens, layer), layer)
            ok = got.shape == full.shape and bool(torch.allclose(
                got, full, rtol=1e-4, atol=1e-4 * float(full.abs().max()) + 1e-6))
        except (RuntimeError, AttributeError, TypeError, ValueError, KeyError, IndexError,
                NotImplementedError):
            ok = False
    known[layer] = ok
    return ok


@contextlib.contextmanager
def _blocks_passed_through(model: Model, below: int) -> Iterator[None]:
    """Blocks `0..below-1` return their input (their wrapped layers' `forward` is swapped
    for the identity, and restored after)."""
    layers = [getattr(b, "original_component", None) for b in model.blocks[:below]]
    if any(layer is None for layer in layers):
        raise ValueError("a block wraps no Hugging Face layer; resume with the full run")
    saved = [layer.__dict__.get("forward") for layer in layers]
    try:
        for layer in layers:
            layer.forward = _identity_tuple if _RETURNS_TUPLE.get(layer) else _identity
        yield
    finally:
        for layer, old in zip(layers, saved, strict=True):
            if old is None:
                del layer.forward
            else:
                layer.forward = old


def _identity(hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return hidden_states


def _identity_tuple(hidden_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor]:
    return (hidden_states,)
