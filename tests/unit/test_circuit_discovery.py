"""Circuit discovery's engine against independent computations: patching nothing or
everything gives the clean or corrupted run; patching all of a node's edges is activation
patching of the node; an edge into a head's query is the bridge's own split-input patching;
EAP is TransformerLens' edge attribution summed over positions; one-step EAP-IG is EAP; and
the graph refuses a model it does not describe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuits.discovery import (
    Effect,
    attributed_scores,
    curve_sizes,
    edge_masks,
    faithfulness_curve,
    node_masks,
    patched_effects,
    recovery,
    select,
    task_effect,
)
from circuits.edges import edge_attribution, patched_metric, writer_outputs
from circuits.graph import Graph, check_graph, graph_for, transformer_lens_edge
from circuits.tasks import Task, build_task, induction_task
from workbench.models.loader import load


def _pairs(model, n: int = 6, seed: int = 0) -> Task:  # noqa: ANN001
    return induction_task(model, None, n, seed)


def _logit_task(model, n: int = 5, width: int = 9, seed: int = 0) -> Task:  # noqa: ANN001
    """Random prompts vs the same prompts with two tokens resampled; logit of token 3 minus
    token 4 at the last position."""
    g = torch.Generator().manual_seed(seed)
    vocab = min(int(model.cfg.d_vocab), 40)
    clean = torch.randint(5, vocab, (n, width), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2:4] = torch.randint(5, vocab, (n, 2), generator=g)
    return Task("toy", clean, corrupt, answer_pos=torch.full((n,), width - 1),
                good=torch.full((n,), 3), bad=torch.full((n,), 4))


def _save(path: Path, kind: str) -> Path:
    """A tiny random Hugging Face model: grouped-query Llama, or GPT-NeoX (parallel blocks)."""
    import transformers as T
    from tokenizers import Tokenizer, models, pre_tokenizers

    if kind == "llama":
        cfg = T.LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            max_position_embeddings=64)
        cls = T.LlamaForCausalLM
    else:
        cfg = T.GPTNeoXConfig(vocab_size=48, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=4,
                              max_position_embeddings=64, use_parallel_residual=True)
        cls = T.GPTNeoXForCausalLM
    torch.manual_seed(0)
    cls(cfg).eval().save_pretrained(path)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(48)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    T.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1",
                              eos_token="w2").save_pretrained(path)
    return path


def _attn_only(model):  # noqa: ANN001, ANN202
    """A random attention-only native model (the `attn2` preset's kind) of `model`'s size."""
    from workbench.models.config import get_preset
    from workbench.models.loader import build_bridge

    cfg = get_preset("attn2").replace(d_vocab=model.cfg.d_vocab, n_layers=2, d_model=32,
                                      n_heads=2, d_head=16, n_ctx=64)
    torch.manual_seed(1)
    return build_bridge(cfg, tokenizer=model.tokenizer)


@pytest.fixture(scope="module")
def models(model, hf_gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    root = tmp_path_factory.mktemp("circuit-models")
    return {"native": model, "attn_only": _attn_only(model), "gpt2": load(hf_gpt2_dir),
            "llama": load(_save(root / "llama", "llama")),
            "neox": load(_save(root / "neox", "neox"))}


def test_graph_shapes() -> None:
    g = Graph(n_layers=2, n_heads=4, n_kv=2)
    assert g.readers[:8] == ("a0.h0<q>", "a0.h1<q>", "a0.h2<q>", "a0.h3<q>", "a0.g0<k>",
                             "a0.g1<k>", "a0.g0<v>", "a0.g1<v>")
    # block 1's readers hear the input, block 0's heads and MLP; its MLP also its own heads
    assert g.edges[:, g.readers.index("a1.h0<q>")].sum() == 1 + 4 + 1
    assert g.edges[:, g.readers.index("m1")].sum() == 1 + 4 + 1 + 4
    assert g.edges[:, -1].all() and not g.edges[g.writers.index("m1"), :-1].any()
    attn_only = Graph(n_layers=2, n_heads=2, n_kv=2, has_mlp=False)
    assert attn_only.writers == ("input", "a0.h0", "a0.h1", "a1.h0", "a1.h1")
    assert attn_only.n_edges == 6 * 1 + 6 * 3 + 5
    parallel = Graph(n_layers=2, n_heads=4, n_kv=4, parallel=True)
    assert parallel.edges[:, parallel.readers.index("m1")].sum() == 1 + 4 + 1
    w, r = g.edge_index()
    assert g.edge_values(g.edge_matrix(torch.arange(g.n_edges).float())).tolist() == list(
        range(g.n_edges))
    assert g.edge_of(g.edge_names()[7]) == 7
    with pytest.raises(ValueError, match="no edge 'm1->a0.h0<q>'"):
        g.edge_of("m1->a0.h0<q>")
    with pytest.raises(ValueError, match="n_kv=3 must divide n_heads=4"):
        Graph(n_layers=1, n_heads=4, n_kv=3)


@pytest.mark.parametrize("name", ["native", "attn_only", "gpt2", "llama", "neox"])
def test_nothing_and_everything_patched(models, name: str) -> None:  # noqa: ANN001
    m = models[name]
    g = graph_for(m)
    task = _logit_task(m)
    check_graph(m, g, task.clean)
    metric = task.metric()
    with torch.no_grad():
        clean, corrupt = metric(m(task.clean)), metric(m(task.corrupt))
    masks = torch.stack([torch.zeros_like(g.edges), g.edges])
    got = patched_metric(m, g, task.clean, writer_outputs(m, g, task.corrupt), masks, metric)
    torch.testing.assert_close(got[0], clean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1], corrupt, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["native", "attn_only", "llama"])
def test_node_edges_are_activation_patching(models, name: str) -> None:  # noqa: ANN001
    """All of head a1.h1's edges patched = its hook_z set to the corrupted run's."""
    m = models[name]
    g = graph_for(m)
    task = _logit_task(m)
    metric = task.metric()
    _, cache = m.run_with_cache(task.corrupt, names_filter="blocks.1.attn.hook_z")
    z = cache["blocks.1.attn.hook_z"]

    def patch(act: torch.Tensor, hook: object) -> torch.Tensor:
        act = act.clone()
        act[:, :, 1] = z[:, :, 1]
        return act
    with torch.no_grad():
        want = metric(m.run_with_hooks(task.clean, fwd_hooks=[("blocks.1.attn.hook_z", patch)]))
    i = g.writers.index("a1.h1")
    got = patched_metric(m, g, task.clean, writer_outputs(m, g, task.corrupt),
                         node_masks(g)[i:i + 1], metric)[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_edge_into_a_query_is_split_input_patching(models) -> None:  # noqa: ANN001
    """On GPT-2 the bridge can split each head's input; patching the edge a0.h2 -> a1.h1<q>
    there (add the corrupted-minus-clean output of a0.h2 to head 1's query input) is what
    the engine computes through the normalisation by hand."""
    m = models["gpt2"]
    g = graph_for(m)
    task = _logit_task(m)
    metric = task.metric()
    out_clean, out_corrupt = (writer_outputs(m, g, t) for t in (task.clean, task.corrupt))
    w = g.writers.index("a0.h2")
    delta = out_corrupt[:, :, w] - out_clean[:, :, w]

    def shift(act: torch.Tensor, hook: object) -> torch.Tensor:
        act = act.clone()
        act[:, :, 1] += delta
        return act
    m.set_use_split_qkv_input(True)
    try:
        with torch.no_grad():
            want = metric(m.run_with_hooks(task.clean,
                                           fwd_hooks=[("blocks.1.attn.hook_q_input", shift)]))
    finally:
        m.set_use_split_qkv_input(False)
    mask = torch.zeros_like(g.edges)
    mask[w, g.readers.index("a1.h1<q>")] = True
    got = patched_metric(m, g, task.clean, out_corrupt, mask[None], metric)[0]
    base = metric(m(task.clean)).detach()
    assert (want - base).abs().max() > 1e-6  # the patch moves the metric
    torch.testing.assert_close(got - base, want - base, atol=1e-7, rtol=1e-3)


def test_eap_is_transformer_lens_edge_attribution(models) -> None:  # noqa: ANN001
    """TransformerLens' edge attribution (denoising: gradient at the corrupted run), summed
    over positions, is ours with clean and corrupted swapped."""
    from transformer_lens.tools.analysis.attribution_patching import (
        EdgeAttributionConfig,
        attribution_patch,
    )

    m = models["gpt2"]
    g = graph_for(m)
    task = _logit_task(m, n=3)
    metric = task.metric()
    ours = edge_attribution(m, g, task.corrupt, task.clean, metric) / task.n_pairs

    def one(logits: torch.Tensor) -> torch.Tensor:
        return logits[0, -1, 3] - logits[0, -1, 4]
    tl = attribution_patch(m, task.clean, task.corrupt, one, EdgeAttributionConfig("edge"))
    theirs = torch.zeros_like(ours)
    for edge, v in tl.edge_scores.items():
        wname, rname = transformer_lens_edge(*edge)
        theirs[g.writers.index(wname), g.readers.index(rname)] += v
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3)


def test_one_step_ig_is_eap_and_node_scores_sum_edges(models) -> None:  # noqa: ANN001
    m = models["llama"]
    g = graph_for(m)
    task = _logit_task(m)
    eap = edge_attribution(m, g, task.clean, task.corrupt, task.metric())
    ig1 = edge_attribution(m, g, task.clean, task.corrupt, task.metric(), ig_steps=1)
    torch.testing.assert_close(eap, ig1)
    effect = task_effect(m, task)
    s = attributed_scores(m, g, task, effect, "eap-ig", ig_steps=3)
    torch.testing.assert_close(s.nodes, g.edge_matrix(s.edges).sum(1), atol=1e-5, rtol=1e-5)
    assert attributed_scores(m, g, task, effect, "attribution").edges is None


def test_eap_ig_tracks_exact_patching_and_the_curve_ends(models) -> None:  # noqa: ANN001
    m = models["native"]
    g = graph_for(m)
    task = _pairs(m, 8)
    effect = task_effect(m, task)
    exact = (patched_effects(m, g, task, edge_masks(g)) - effect.clean) / effect.total
    ig = attributed_scores(m, g, task, effect, "eap-ig", ig_steps=8)
    assert torch.corrcoef(torch.stack([ig.edges, exact]))[0, 1] > 0.7
    rec = recovery(ig.edges, exact, 0.02)
    assert rec["auroc"] is None or rec["auroc"] > 0.7
    curve = faithfulness_curve(m, g, task, effect, ig.edges)
    assert curve["sizes"][0] == 0 and curve["sizes"][-1] == g.n_edges
    assert abs(curve["recovered"][0]) < 1e-4 and abs(curve["recovered"][-1] - 1) < 1e-4
    assert 0 < curve["cpr"] <= 1.5


def test_selection_and_sizes() -> None:
    s = torch.tensor([0.1, -0.5, 0.02, 0.3])
    assert select(s, top_k_edges=2).tolist() == [False, True, False, True]
    assert select(s, threshold=0.1).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="not both"):
        select(s, top_k_edges=1, threshold=0.1)
    sizes = curve_sizes(1000, 0.05)
    assert {0, 50, 1000} <= set(sizes) and sizes == sorted(set(sizes)) and len(sizes) < 200


def test_refusals(models) -> None:  # noqa: ANN001
    m = models["native"]
    with pytest.raises(ValueError, match="m0 is not computed as circuit discovery assumes"):
        check_graph(m, Graph(2, 2, 2, parallel=True), _pairs(m).clean)
    same = Task("flat", torch.tensor([[1, 5, 6]]), torch.tensor([[1, 5, 6]]),
                answer_pos=torch.tensor([2]), good=torch.tensor([7]), bad=torch.tensor([8]))
    with pytest.raises(ValueError, match="no effect to attribute"):
        task_effect(m, same)
    with pytest.raises(ValueError, match="unknown task 'ioi'; choose one of induction"):
        build_task("ioi", m, None)
    with pytest.raises(ValueError, match="built from a world corpus; pass --corpus"):
        build_task("facts", m, None)
    with pytest.raises(ValueError, match="give answer_pos, good and bad"):
        Task("both", same.clean, same.corrupt, answer_pos=same.answer_pos, good=same.good,
             bad=same.bad, loss_mask=torch.ones_like(same.clean, dtype=torch.bool))
    assert Effect(1.0, -2.0).total == -3.0


@pytest.mark.parametrize("kind", ["copy_loss", "logit_diff"])
def test_readout_reads_the_same_metric(models, kind: str) -> None:  # noqa: ANN001
    """Unembedding only the positions the metric reads gives the full run's metric."""
    m = models["gpt2"]
    g = graph_for(m)
    task = _pairs(m, 4) if kind == "copy_loss" else _logit_task(m)
    assert task.kind == kind and task.readout is not None
    with torch.no_grad():
        full = task.metric()(m(task.clean))
    masks = torch.stack([torch.zeros_like(g.edges), g.edges])
    out = writer_outputs(m, g, task.corrupt)
    got = patched_metric(m, g, task.clean, out, masks, task.metric(gathered=True), task.readout)
    want = patched_metric(m, g, task.clean, out, masks, task.metric())
    torch.testing.assert_close(got[0], full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    eap = edge_attribution(m, g, task.clean, task.corrupt, task.metric(gathered=True),
                           readout=task.readout)
    torch.testing.assert_close(eap, edge_attribution(m, g, task.clean, task.corrupt,
                                                     task.metric()), atol=1e-5, rtol=1e-4)


def test_paths_through_grouped_heads() -> None:
    """A key/value head's input reaches every query head it serves."""
    from circuits.circuit import _reaches, circuit_nodes

    edges = {"a0.h0->a1.g0<k>", "a1.h1->a2.h0<k>"}
    assert _reaches(edges, "a0.h0", "a2.h0<k>", group=2)
    assert not _reaches(edges, "a0.h0", "a2.h0<k>", group=1)  # g0 serves a1.h0 alone
    assert circuit_nodes(sorted(edges)) == ["a0.h0", "a1.g0", "a1.h1", "a2.h0"]


@pytest.mark.parametrize("name", ["native", "gpt2", "llama"])
def test_closed_form_norm_vjp_is_autograds(models, name: str) -> None:  # noqa: ANN001
    from circuits.edges import norm_vjp
    from circuits.graph import ln1_of

    model = models[name]
    norm = ln1_of(model, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, model.cfg.d_model, generator=g) * 2 + 0.5
    cot = torch.randn(3, 5, 4, model.cfg.d_model, generator=g)
    fast = norm_vjp(norm, x)
    assert (fast.__name__ == "closed") == (name != "llama")  # RMSNorm: autograd's
    got = fast(cot)
    generic = norm_vjp(lambda v: norm(v), x)(cot)  # no module to recognise: autograd's VJP
    torch.testing.assert_close(got, generic, atol=1e-5, rtol=1e-4)


def test_eap_on_frozen_weights_is_the_same(models) -> None:  # noqa: ANN001
    model = models["native"]
    graph, task = graph_for(model), _pairs(model)
    got = edge_attribution(model, graph, task.clean, task.corrupt, task.metric())
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)  # no activation needs a gradient of its own
        frozen = edge_attribution(model, graph, task.clean, task.corrupt, task.metric())
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    torch.testing.assert_close(frozen, got, atol=1e-5, rtol=1e-4)
