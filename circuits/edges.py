"""Edge-level patching and attribution over a `circuits.graph.Graph`: what happens to a task's
metric when edges carry the corrupted run's values instead of the clean run's.

Every score here is the *noising* effect of patching, normalised by nothing (callers divide
by the task's total effect): `exact` runs the clean prompts with the chosen edges patched,
`attribution` estimates the same change to first order.

- `patched_metric(model, graph, clean, corrupt_out, patched, metric)`: the metric of the clean
  run where, for each copy `c`, every edge with `patched[c, w, r]` delivers writer `w`'s
  corrupted output to reader `r` (its input becomes `input - sum_w (out_w - corrupt_w)` over
  the patched writers; the rest of the network runs as usual). One copy per edge is path
  patching of that edge (the ground truth); all of a writer's edges is activation patching
  of the node; everything outside a circuit is the circuit's faithfulness run.
- `edge_attribution(...)`: EAP (Syed et al. 2023), `(corrupt_w - clean_w) . dM/d input_r`
  summed over positions, with the gradient at the clean input; with `ig_steps = m`, EAP-IG
  (Hanna et al. 2024, the `inputs` variant of `hannamw/EAP-IG`): the gradient averaged over
  `m` runs whose embeddings lie on the line from the corrupted to the clean ones
  (`alpha = 1/m ... 1`). A writer's node score is the sum of its edges' scores (its output
  reaches the metric only through its readers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuits.graph import INPUT, LOGITS_IN, QKV, Graph, ln1_of, mlp_in_hook, weights
from workbench.hooks import hook_name, stop_hooks, unembed_input, unembeds_exactly

if TYPE_CHECKING:
    from workbench.models import Model

Metric = Callable[[Float[Tensor, "batch pos vocab"]], Float[Tensor, " batch"]]
"""The task's metric of each pair from the logits of its run: at every position, or with a
`readout` (`[batch, k]` positions) at those positions only (`[batch, k, vocab]`)."""


def run_logits(model: Model, tokens: Int[Tensor, "batch pos"], hooks: list[tuple[str, Any]],
               readout: Int[Tensor, "batch k"] | None = None) -> Tensor:
    """The logits of a run with `hooks`: all of them, or with `readout` only those at its
    positions, unembedded from the unembedding's input (at GPT-2's vocabulary most of a
    short prompt's forward pass is the unembedding) when the model's logits are exactly
    that (`workbench.hooks.unembeds_exactly`), else gathered from the full run's."""
    if readout is None:
        return model.run_with_hooks(tokens, fwd_hooks=hooks)
    idx = readout.to(tokens.device)
    if unembeds_exactly(model, tokens[:1]):
        x = unembed_input(lambda h: model.run_with_hooks(tokens, return_type=None,
                                                         fwd_hooks=h), hooks)
        return model.unembed(x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1])))
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))


def _recorders(model: Model, graph: Graph, store: Callable[[int, Tensor], None],
               w_o: Tensor | None = None) -> list[tuple[str, Any]]:
    """Hooks that hand every writer group's output `[batch, pos, n, d_model]` to
    `store(first writer index, output)`: the input, each block's heads (`hook_z @ W_O`) and
    MLP."""
    def writer(first: int, w_o: Tensor | None) -> Any:
        def hook(act: Tensor, hook: Any) -> None:
            out = act.unsqueeze(2) if w_o is None else torch.einsum("bphe,hed->bphd", act, w_o)
            store(first, out)
        return hook

    w_o = model.W_O.detach() if w_o is None else w_o
    hooks = [(INPUT, writer(0, None))]
    for la in range(graph.n_layers):
        first = graph.writers_before(la, "q")  # the block's first head
        hooks.append((hook_name(la, "attn.hook_z"), writer(first, w_o[la])))
        if graph.has_mlp:
            hooks.append((hook_name(la, "hook_mlp_out"), writer(first + graph.n_heads, None)))
    return hooks


@torch.no_grad()
def writer_outputs(model: Model, graph: Graph, tokens: Int[Tensor, "batch pos"]
                   ) -> Float[Tensor, "batch pos writer d_model"]:
    """Every writer's output in one run of `tokens` (graph order), stopped after the last
    (the unembedding's `[batch, pos, d_vocab]` is never read)."""
    out: dict[int, Tensor] = {}
    hooks = _recorders(model, graph, out.__setitem__)
    kwargs, stop = stop_hooks(model, [name for name, _ in hooks])
    model.run_with_hooks(tokens, return_type=None, fwd_hooks=hooks + stop, **kwargs)
    return torch.cat([out[k] for k in sorted(out)], dim=2)


def patched_metric(
    model: Model,
    graph: Graph,
    clean: Int[Tensor, "batch pos"],
    corrupt_out: Float[Tensor, "batch pos writer d_model"],
    patched: Bool[Tensor, "copy writer reader"],
    metric: Metric,
    readout: Int[Tensor, "batch k"] | None = None,
) -> Float[Tensor, "copy batch"]:
    """The metric of `clean` run once per copy, with copy `c`'s patched edges carrying the
    corrupted outputs (`corrupt_out`, from `writer_outputs` of the corrupted prompts)."""
    n_copies, b = patched.shape[0], clean.shape[0]
    device = corrupt_out.device
    mask = patched.to(device=device, dtype=corrupt_out.dtype)
    # each writer's output minus its corrupted output, per copy: [copy, writer, b * p * d]
    corrupt_flat = corrupt_out.permute(2, 0, 1, 3).reshape(corrupt_out.shape[2], -1)
    diff = torch.zeros(n_copies, *corrupt_flat.shape, dtype=corrupt_out.dtype, device=device)
    block_in: dict[int, Tensor] = {}

    def store(first: int, out: Tensor) -> None:
        n = out.shape[2]
        flat = out.view(n_copies, b, *out.shape[1:]).permute(0, 3, 1, 2, 4).reshape(
            n_copies, n, -1)
        diff[:, first:first + n] = flat - corrupt_flat[first:first + n]

    def change(sl: slice, n_before: int) -> Tensor:
        """The change of each reader's input in `sl`: `[copy * batch, pos, reader, d]`."""
        fix = torch.bmm(mask[:, :n_before, sl].transpose(1, 2), diff[:, :n_before])
        fix = fix.view(n_copies, fix.shape[1], b, -1, corrupt_out.shape[-1])
        return fix.permute(0, 2, 3, 1, 4).reshape(n_copies * b, -1, fix.shape[1],
                                                  corrupt_out.shape[-1])

    normed: dict[int, Tensor] = {}

    def keep_input(layer: int) -> Any:
        def hook(act: Tensor, hook: Any) -> None:
            block_in[layer] = act
            normed.pop(layer, None)
        return hook

    w_all = weights(model)

    def projection(layer: int, kind: str, sl: slice) -> Any:
        norm, w = ln1_of(model, layer), w_all[kind][layer]

        def hook(act: Tensor, hook: Any) -> Tensor:
            x = block_in[layer]
            if layer not in normed:
                normed[layer] = norm(x).unsqueeze(2)
            moved = norm(x.unsqueeze(2) - change(sl, graph.writers_before(layer, kind)))
            shift = torch.einsum("bphd,hde->bphe", moved - normed[layer], w)
            return act + shift.to(act.dtype)
        return hook

    def residual(sl: slice, n_before: int) -> Any:
        def hook(act: Tensor, hook: Any) -> Tensor:
            return act - change(sl, n_before)[:, :, 0].to(act.dtype)
        return hook

    hooks = _recorders(model, graph, store, w_all["o"])
    for la in range(graph.n_layers):
        sl = graph.reader_slices(la)
        hooks.append((hook_name(la, "hook_resid_pre"), keep_input(la)))
        for kind in QKV:
            if bool(patched[:, :graph.writers_before(la, kind), sl[kind]].any()):
                hooks.append((hook_name(la, f"attn.hook_{kind}"), projection(la, kind, sl[kind])))
        n_mlp = graph.writers_before(la, "mlp") if graph.has_mlp else 0
        if graph.has_mlp and bool(patched[:, :n_mlp, sl["mlp"]].any()):
            hooks.append((hook_name(la, "hook_mlp_in"), residual(sl["mlp"], n_mlp)))
    last = slice(graph.n_readers - 1, graph.n_readers)
    if bool(patched[:, :, last].any()):
        hooks.append((LOGITS_IN, residual(last, graph.n_writers)))
    with torch.no_grad(), mlp_in_hook(model):
        logits = run_logits(model, clean.repeat(n_copies, 1), hooks,
                            None if readout is None else readout.repeat(n_copies, 1))
    return metric_copies(metric, logits, n_copies)


def metric_copies(metric: Metric, logits: Tensor, n_copies: int) -> Float[Tensor, "copy batch"]:
    """`metric` of logits holding `n_copies` copies of one batch, per copy."""
    b = logits.shape[0] // n_copies
    return torch.stack([metric(logits[c * b:(c + 1) * b]) for c in range(n_copies)]).float()


def norm_vjp(norm: Callable[[Tensor], Tensor], x: Float[Tensor, "batch pos d_model"]
             ) -> Callable[[Tensor], Tensor]:
    """The vector-Jacobian product of the normalisation `norm` at `x`, for cotangents
    `[batch, pos, n, d_model]` (one per head): `n` products at once. A `torch.nn.LayerNorm`
    whose bridge computes exactly `layer_norm` (checked on the first row) gets the closed
    form, `(g - mean(g) - x_hat mean(g x_hat)) / sigma` with `g` the cotangent times the
    weight; any other normalisation `torch.func.vjp`, vmapped over the `n` cotangents."""
    ln = getattr(norm, "_original_component", None)
    if isinstance(ln, torch.nn.LayerNorm) and ln.weight is not None and len(
            ln.normalized_shape) == 1:
        row = x[:1, :1]
        with torch.no_grad():
            same = torch.allclose(norm(row), torch.nn.functional.layer_norm(
                row, ln.normalized_shape, ln.weight, ln.bias, ln.eps), atol=1e-5, rtol=1e-4)
        if same:
            w = ln.weight.detach()
            with torch.no_grad():
                centred = x - x.mean(-1, keepdim=True)
                rstd = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + ln.eps).unsqueeze(2)
                x_hat = centred.unsqueeze(2) * rstd

            def closed(cot: Tensor) -> Tensor:
                with torch.no_grad():
                    g = cot * w
                    return rstd * (g - g.mean(-1, keepdim=True)
                                   - x_hat * (g * x_hat).mean(-1, keepdim=True))
            return closed
    _, vjp = torch.func.vjp(norm, x)
    return lambda cot: torch.vmap(vjp, in_dims=2, out_dims=2)(cot)[0]


def reader_gradients(
    model: Model,
    graph: Graph,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    inputs: Float[Tensor, "batch pos d_model"] | None = None,
    outputs: dict[int, Tensor] | None = None,
    readout: Int[Tensor, "batch k"] | None = None,
) -> tuple[Float[Tensor, "batch pos reader d_model"], Float[Tensor, " batch"]]:
    """The gradient of the summed metric with respect to every reader's input, and the
    metric; `inputs` (the embeddings, block 0's residual input) replaces the run's own, and
    `outputs`, when given, receives every writer group's output of the same run (as
    `writer_outputs` reads them, so EAP needs no separate clean pass).

    A head's query gradient is taken at its query (`hook_q`) and carried back to its input
    through the block's normalisation (a vector-Jacobian product at the block input, every
    head at once); the MLPs' and the logits' at their inputs."""
    probes: dict[str, Tensor] = {}
    block_in: dict[int, Tensor] = {}

    def probe(name: str) -> Any:
        def hook(act: Tensor, hook: Any) -> Tensor:
            if act.requires_grad:  # a free node of the graph for autograd.grad
                probes[name] = act.view_as(act)
                return probes[name]
            # nothing before it needs a gradient (frozen weights): a zero to differentiate
            probes[name] = torch.zeros_like(act, requires_grad=True)
            return act + probes[name]
        return hook

    def keep_input(layer: int) -> Any:
        def hook(act: Tensor, hook: Any) -> None:
            block_in[layer] = act.detach()
        return hook

    hooks: list[tuple[str, Any]] = []
    if inputs is not None:
        hooks.append((INPUT, lambda act, hook: inputs.to(act.dtype)))
    for la in range(graph.n_layers):
        hooks.append((hook_name(la, "hook_resid_pre"), keep_input(la)))
        hooks += [(hook_name(la, f"attn.hook_{k}"), probe(hook_name(la, f"attn.hook_{k}")))
                  for k in QKV]
        if graph.has_mlp:
            hooks.append((hook_name(la, "hook_mlp_in"), probe(hook_name(la, "hook_mlp_in"))))
    hooks.append((LOGITS_IN, probe(LOGITS_IN)))
    w_all = weights(model)
    if outputs is not None:
        hooks += _recorders(model, graph, lambda first, out: outputs.__setitem__(
            first, out.detach()), w_all["o"])
    with torch.enable_grad(), mlp_in_hook(model):
        values = metric(run_logits(model, tokens, hooks, readout))
        names = list(probes)  # the probes' gradients only: no parameter's is computed
        got = dict(zip(names, torch.autograd.grad(values.sum(), [probes[n] for n in names])))
        grads = []
        for la in range(graph.n_layers):
            cot = torch.cat([torch.einsum("bphe,hde->bphd", got[hook_name(la, f"attn.hook_{k}")],
                                          w_all[k][la]) for k in QKV], dim=2)
            grads.append(norm_vjp(ln1_of(model, la), block_in[la])(cot))
            if graph.has_mlp:
                grads.append(got[hook_name(la, "hook_mlp_in")].unsqueeze(2))
        grads.append(got[LOGITS_IN].unsqueeze(2))
    return torch.cat(grads, dim=2).detach(), values.detach().float()
def edge_attribution(
    model: Model,
    graph: Graph,
    clean: Int[Tensor, "batch pos"],
    corrupt: Int[Tensor, "batch pos"],
    metric: Metric,
    ig_steps: int = 0,
    readout: Int[Tensor, "batch k"] | None = None,
) -> Float[Tensor, "writer reader"]:
    """EAP (`ig_steps` 0) or EAP-IG edge scores of one batch of pairs, summed over pairs
    (the first-order change of the summed metric when each edge is patched), as a
    `[writer, reader]` matrix that is 0 off the graph's edges."""
    corrupt_out = writer_outputs(model, graph, corrupt)
    if ig_steps <= 0:  # the gradient run records the clean outputs
        recorded: dict[int, Tensor] = {}
        grads, _ = reader_gradients(model, graph, clean, metric, outputs=recorded,
                                    readout=readout)
        clean_out = torch.cat([recorded[k] for k in sorted(recorded)], dim=2)
    else:
        clean_out = writer_outputs(model, graph, clean)
        start, end = corrupt_out[:, :, 0], clean_out[:, :, 0]
        grads = torch.zeros(*clean.shape, graph.n_readers, clean_out.shape[-1])
        for step in range(1, ig_steps + 1):
            alpha = step / ig_steps
            g, _ = reader_gradients(model, graph, clean, metric, start + alpha * (end - start),
                                    readout=readout)
            grads += g.to(grads.device)
        grads /= ig_steps
    delta = (corrupt_out - clean_out).float()
    grads = grads.to(delta.device).float()
    # sum over pair, position and feature: one [writer, b*p*d] x [b*p*d, reader] product
    scores = delta.permute(2, 0, 1, 3).reshape(delta.shape[2], -1) @ grads.permute(
        0, 1, 3, 2).reshape(-1, grads.shape[2])
    return scores.cpu() * graph.edges


def node_scores(edge_scores: Float[Tensor, "writer reader"]) -> Float[Tensor, " writer"]:
    """A writer's score: the sum of its edges' scores (first order, its output reaches the
    metric only through its readers)."""
    return edge_scores.sum(1)
