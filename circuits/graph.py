"""The computational graph circuit discovery scores: nodes that write into the residual stream,
nodes that read from it, and the edges between them.

A *writer* adds its output to the residual stream: the input (`input`: the embeddings, block
0's `hook_resid_pre`), each attention head (`a1.h0`: its `hook_z` times its `W_O`, the head's
share of the attention output) and each MLP (`m1`: `hook_mlp_out`). A *reader* takes the
residual stream in: each query head's query input (`a1.h0<q>`), each key/value head's key and
value inputs (`a1.h0<k>`, `a1.h0<v>`; on a grouped-query model the key/value head `g` serves
query heads `g * n_heads / n_kv ...`, and is named `a1.g0<k>`), each MLP's input (`m1`) and
the logits (`logits`: `ln_final.hook_in`). An edge `a0.h1->a1.h0<k>` is the writer's output
as it reaches the reader's input. A reader's input is the sum of the outputs of the writers
before it (plus constant biases), and a head's query is a linear map of its normalised
input; `check_graph` verifies both on the model before any score is trusted. The names follow
EAP-IG's (`hannamw/EAP-IG`): `input`, `a{layer}.h{head}`, `m{layer}`, `logits`,
`<q>`/`<k>`/`<v>`.

Each head's query, key and value input is its own copy of the block input, but a model runs
one copy through one normalisation for all heads (the bridge splits it only for some Hugging
Face architectures, `use_split_qkv_input`, and not for our native models). `circuits.edges`
therefore reads a head's input as the block input and writes a change of it as the change of
that head's query (`(ln1(x - c) - ln1(x)) W_Q[h]`, exact), and its gradient as the
normalisation's vector-Jacobian product at the block input: one method for every
architecture, and no per-head copies of the residual stream.

>>> g = Graph(n_layers=2, n_heads=2, n_kv=2, parallel=False)
>>> g.writers
('input', 'a0.h0', 'a0.h1', 'm0', 'a1.h0', 'a1.h1', 'm1')
>>> g.n_edges, g.edge_names()[:2]
(46, ['input->a0.h0<q>', 'input->a0.h1<q>'])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool
from torch import Tensor

from workbench.hooks import hook_name

if TYPE_CHECKING:
    from workbench.models import Model

INPUT = "blocks.0.hook_resid_pre"
LOGITS_IN = "ln_final.hook_in"
QKV = ("q", "k", "v")
ADDITIVE_TOL = 1e-3  # error allowed (relative to the mean size) between a reader's input and
# its writers' sum


@dataclass(frozen=True)
class Graph:
    """The writers, readers and edges of a model with `n_layers` blocks of `n_heads` query
    heads and `n_kv` key/value heads (`parallel`: attention and MLP read the same block
    input, as in GPT-NeoX / Pythia / GPT-J, so a block's heads do not feed its own MLP;
    `has_mlp` False: an attention-only model)."""

    n_layers: int
    n_heads: int
    n_kv: int
    parallel: bool = False
    has_mlp: bool = True
    writers: tuple[str, ...] = field(init=False)
    readers: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(f"a graph needs layers and heads (got {self.n_layers} layers, "
                             f"{self.n_heads} heads)")
        if self.n_kv < 1 or self.n_heads % self.n_kv:
            raise ValueError(f"n_kv={self.n_kv} must divide n_heads={self.n_heads}")
        writers = ["input"]
        readers = []
        for la in range(self.n_layers):
            readers += [self.qkv_name(la, kind, h) for kind in QKV
                        for h in range(self.n_heads if kind == "q" else self.n_kv)]
            writers += [f"a{la}.h{h}" for h in range(self.n_heads)]
            if self.has_mlp:
                readers.append(f"m{la}")
                writers.append(f"m{la}")
        readers.append("logits")
        object.__setattr__(self, "writers", tuple(writers))
        object.__setattr__(self, "readers", tuple(readers))

    def qkv_name(self, layer: int, kind: str, head: int) -> str:
        """`a1.h0<q>`; a grouped key/value head is `a1.g0<k>`."""
        grouped = kind != "q" and self.n_kv != self.n_heads
        return f"a{layer}.{'g' if grouped else 'h'}{head}<{kind}>"

    @property
    def n_writers(self) -> int:
        return len(self.writers)

    @property
    def n_readers(self) -> int:
        return len(self.readers)

    def writers_before(self, layer: int, kind: str) -> int:
        """How many writers (a prefix of `writers`) feed block `layer`'s `kind` readers
        (`q`/`k`/`v`, `mlp`), or the logits (`layer` = n_layers)."""
        per_block = self.n_heads + self.has_mlp
        if kind in QKV or layer == self.n_layers:
            return 1 + layer * per_block
        if kind != "mlp" or not self.has_mlp:
            raise ValueError(f"kind={kind!r}; choose q, k, v" + (" or mlp" if self.has_mlp
                                                                  else " (no MLPs)"))
        return 1 + layer * per_block + (0 if self.parallel else self.n_heads)

    def reader_slices(self, layer: int) -> dict[str, slice]:
        """Where block `layer`'s readers sit in `readers`: `q`, `k`, `v`, `mlp`."""
        start = layer * (self.n_heads + 2 * self.n_kv + self.has_mlp)
        sizes = {"q": self.n_heads, "k": self.n_kv, "v": self.n_kv}
        if self.has_mlp:
            sizes["mlp"] = 1
        out = {}
        for kind, size in sizes.items():
            out[kind] = slice(start, start + size)
            start += size
        return out

    @cached_property
    def edges(self) -> Bool[Tensor, "writer reader"]:
        """`edges[w, r]`: writer `w` feeds reader `r`."""
        mask = torch.zeros(self.n_writers, self.n_readers, dtype=torch.bool)
        for la in range(self.n_layers):
            for kind, sl in self.reader_slices(la).items():
                mask[:self.writers_before(la, kind), sl] = True
        mask[:, -1] = True
        return mask

    @property
    def n_edges(self) -> int:
        return int(self.edges.sum())

    def edge_names(self) -> list[str]:
        """`writer->reader` of every edge, in the order of `edge_index()`."""
        w, r = self.edge_index()
        return [f"{self.writers[i]}->{self.readers[j]}" for i, j in zip(w.tolist(), r.tolist())]

    def edge_index(self) -> tuple[Tensor, Tensor]:
        """(writer, reader) indices of every edge, reader-major (the readers in order)."""
        r, w = self.edges.T.nonzero(as_tuple=True)
        return w, r

    def edge_values(self, matrix: Tensor) -> Tensor:
        """A `[writer, reader]` matrix's values on the edges, in `edge_index()` order."""
        w, r = self.edge_index()
        return matrix[w, r]

    def edge_matrix(self, values: Tensor, fill: float = 0.0) -> Tensor:
        """Edge values (in `edge_index()` order) as a `[writer, reader]` matrix."""
        out = torch.full((self.n_writers, self.n_readers), fill, dtype=values.dtype)
        w, r = self.edge_index()
        out[w, r] = values
        return out

    def edge_of(self, name: str) -> int:
        """The index of the edge `writer->reader` (ValueError naming the graph's size)."""
        try:
            return self.edge_names().index(name)
        except ValueError:
            raise ValueError(f"no edge {name!r} in this graph ({self.n_edges} edges, e.g. "
                             f"{self.edge_names()[0]!r})") from None


def transformer_lens_edge(writer: Any, reader: Any) -> tuple[str, str]:
    """Our names of an edge of TransformerLens' edge attribution
    (`transformer_lens.tools.analysis.attribution_patching.Node` pairs).

    >>> from types import SimpleNamespace as N
    >>> transformer_lens_edge(N(kind="attn_head_out", layer=0, head=1),
    ...                       N(kind="k_input", layer=2, head=0))
    ('a0.h1', 'a2.h0<k>')
    """
    w = {"embed": "input", "mlp_out": f"m{writer.layer}"}.get(
        writer.kind, f"a{writer.layer}.h{writer.head}")
    kind = reader.kind.split("_")[0]
    r = {"mlp": f"m{reader.layer}", "logits": "logits"}.get(
        kind, f"a{reader.layer}.h{reader.head}<{kind}>")
    return w, r


def graph_for(model: Model) -> Graph:
    """The graph of a loaded model (grouped-query and parallel blocks read from its config)."""
    cfg = model.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return Graph(cfg.n_layers, cfg.n_heads, int(n_kv),
                 bool(getattr(cfg, "parallel_attn_mlp", False)),
                 not bool(getattr(cfg, "attn_only", False)))


@contextlib.contextmanager
def mlp_in_hook(model: Model) -> Iterator[None]:
    """The bridge's `hook_mlp_in` point turned on for the body (it fires only when its flag
    is), the model's own setting back after."""
    saved = bool(getattr(model.cfg, "use_hook_mlp_in", False))
    model.set_use_hook_mlp_in(True)
    try:
        yield
    finally:
        model.set_use_hook_mlp_in(saved)


def ln1_of(model: Model, layer: int) -> Callable[[Tensor], Tensor]:
    """Block `layer`'s attention-input normalisation as a function (identity when the block
    has none)."""
    return getattr(model.blocks[layer], "ln1", None) or (lambda x: x)


def weights(model: Model) -> dict[str, Tensor]:
    """Every block's `W_O` (`o`) and query, key and value weights (`q`, `k`, `v`:
    `[layer, head, d_model, d_head]`, key/value: one per key/value head), detached. The
    bridge stacks these from its blocks on every access: read them once per call."""
    return {"o": model.W_O.detach(), "q": model.W_Q.detach(), "k": model.W_K.detach(),
            "v": model.W_V.detach()}


@torch.no_grad()
def check_graph(model: Model, graph: Graph, tokens: Tensor) -> None:
    """Refuse a model whose residual stream is not what the graph assumes, from one run of
    `tokens`: each block's input plus its heads' outputs (`hook_z @ W_O`) and its MLP output
    must give the next residual (up to constant biases; a normalisation after attention or
    the MLP, as in Gemma 2, breaks it), the MLP must read that sum, the logits the last
    residual, and each head's query, key and value must be its normalised block input times
    `W_Q`, `W_K`, `W_V` (plus a bias; a normalisation of the queries, as in Qwen 3, breaks it).

    Raises:
        ValueError: naming the first part that differs.
    """
    points = ("hook_resid_pre", "attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v")
    points += ("hook_mlp_out", "hook_mlp_in") if graph.has_mlp else ()
    names = {hook_name(la, p) for la in range(graph.n_layers) for p in points} | {LOGITS_IN}
    with mlp_in_hook(model):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    w = weights(model)
    total = cache[INPUT]
    for la in range(graph.n_layers):
        pre = cache[hook_name(la, "hook_resid_pre")]
        _expect(pre, total, f"block {la}'s input")
        normed = ln1_of(model, la)(pre)
        for kind in QKV:
            _expect(cache[hook_name(la, f"attn.hook_{kind}")],
                    torch.einsum("bpd,hde->bphe", normed, w[kind][la]), f"a{la}<{kind}>")
        heads = torch.einsum("bphe,hed->bpd", cache[hook_name(la, "attn.hook_z")],
                             w["o"][la])
        total = pre + heads
        if graph.has_mlp:
            _expect(cache[hook_name(la, "hook_mlp_in")], pre if graph.parallel else total,
                    f"m{la}")
            total = total + cache[hook_name(la, "hook_mlp_out")]
    _expect(cache[LOGITS_IN], total, "logits")


def _expect(actual: Tensor, writers: Tensor, reader: str) -> None:
    diff = (actual - writers).float()
    diff = diff - diff.mean((0, 1), keepdim=True)  # a bias is the same at every position
    scale = max(float(actual.float().abs().mean()), 1.0)
    if float(diff.abs().max()) > ADDITIVE_TOL * scale:
        raise ValueError(f"this model's {reader} is not computed as circuit discovery "
                         "assumes (the sum of the outputs written before it, then a linear "
                         "projection of its normalisation); the graph does not fit this "
                         "architecture")
