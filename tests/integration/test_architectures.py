"""The architecture matrix: every CLI analysis (info, cache, induction, probe, icl, beliefs)
and dashboard page on tiny random Hugging Face checkpoints of the families researchers use
(GPT-2; GPT-NeoX with rotary positions and parallel attention + MLP; Llama, Qwen2 and
Mistral with grouped-query attention, RMSNorm and gated MLPs; Gemma with multi-query
attention), built offline in a module fixture, with the world corpus re-encoded by their
tokenizer. Plus the architectures the workbench refuses:
each gets one clear error, never a traceback.

Cost: about 2 minutes on 2 cores (the six checkpoints have ~50k parameters each)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch

from workbench.cli.core import main

ARCHS = ["gpt2", "neox", "llama", "qwen2", "mistral", "gemma"]
# (attention kind, key/value heads, norm, MLP kind, parallel) of each tiny checkpoint
EXPECTED = {
    "gpt2": ("multi-head", 4, "LayerNorm", "standard", False),
    "neox": ("multi-head", 4, "LayerNorm", "standard", True),
    "llama": ("grouped-query", 2, "RMSNorm", "gated", False),
    "qwen2": ("grouped-query", 2, "RMSNorm", "gated", False),
    "mistral": ("grouped-query", 2, "RMSNorm", "gated", False),
    "gemma": ("multi-query", 1, "RMSNorm", "gated", False),
}
D_HEAD = 8
# Weights ten times the usual init scale (0.02): sharper attention, so head scores differ,
# and MLP keys large enough that one MLP's output can change what the model states.
INIT_STD = 0.2


def _hf_config(arch: str, vocab: int) -> tuple[Any, Any]:
    import transformers as T

    ids = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0)
    if arch == "gpt2":
        return T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids), \
            T.GPT2LMHeadModel
    if arch == "neox":
        return T.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=128,
                               rotary_pct=0.5, use_parallel_residual=True, **ids), \
            T.GPTNeoXForCausalLM
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=128, **ids)
    kv = EXPECTED[arch][1]
    classes = {"llama": (T.LlamaConfig, T.LlamaForCausalLM),
               "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM),
               "mistral": (T.MistralConfig, T.MistralForCausalLM),
               "gemma": (T.GemmaConfig, T.GemmaForCausalLM)}
    cfg_cls, model_cls = classes[arch]
    extra = {"head_dim": D_HEAD} if arch == "gemma" else {}
    return cfg_cls(num_key_value_heads=kv, **common, **extra), model_cls


def _world_tokenizer(corpus: Path) -> Any:
    """A byte-level BPE trained on the world's words, as a model ships it: it covers any text
    and holds every world word (with its leading space) as one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer.from_file(str(corpus / "tokenizer.json")).get_vocab()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(sorted(words))] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>")


def save_hf(cls: Any, cfg: Any, tokenizer: Any, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg.initializer_range = INIT_STD
    model = cls(cfg).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@dataclass
class Matrix:
    root: Path  # runs folder: one directory per architecture, and `world`
    corpus: Path  # the world corpus in their tokenizer


@pytest.fixture(scope="module")
def matrix(world_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    from workbench.world.retokenize import retokenize_corpus

    root = tmp_path_factory.mktemp("archs") / "runs"
    tokenizer = _world_tokenizer(world_corpus)
    for arch in ARCHS:
        cfg, cls = _hf_config(arch, len(tokenizer))
        save_hf(cls, cfg, tokenizer, root / arch)
    corpus = retokenize_corpus(world_corpus, root / "gpt2", root / "world", progress=False)
    return Matrix(root, Path(corpus))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_every_cli_analysis_runs(arch: str, matrix: Matrix, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    model, corpus = str(matrix.root / arch), str(matrix.corpus)
    attention, n_kv, norm, mlp, parallel = EXPECTED[arch]
    card = _run(capsys, "info", "--model", model)
    assert f"{attention} attention" in card and norm in card and f"{mlp} MLP" in card
    assert ("in parallel" in card) == parallel

    # hook_k / hook_v hold one row per key/value head: [rows, n_kv_heads, d_head]
    acts = tmp_path / "acts.h5"
    _run(capsys, "cache", "--model", model, "--corpus", corpus, "--hooks",
         "blocks.*.hook_resid_post", "blocks.1.attn.hook_q", "blocks.1.attn.hook_k",
         "blocks.1.attn.hook_v", "--max-tokens", "500", "--chunk", "--out", str(acts),
         "--no-progress")
    with h5py.File(acts) as f:
        shapes = {}
        f.visititems(lambda n, o: shapes.update({n.split("/")[-1]: o.shape})
                     if isinstance(o, h5py.Dataset) else None)
    assert shapes["blocks.1.hook_resid_post"] == (500, 32)
    assert shapes["blocks.1.attn.hook_q"] == (500, 4, D_HEAD)
    assert shapes["blocks.1.attn.hook_k"] == shapes["blocks.1.attn.hook_v"] == (500, n_kv,
                                                                                 D_HEAD)

    ind = tmp_path / "induction.json"
    _run(capsys, "induction", "--model", model, "--corpus", corpus, "--n-seqs", "4",
         "--out", str(ind), "--no-progress")
    report = json.loads(ind.read_text())
    assert len(report["heads"]) == 2 * 4  # every query head scored

    # circuit discovery: per-query-head nodes, key/value edges per key/value head
    circ = tmp_path / "circuit.json"
    _run(capsys, "circuit", "--model", model, "--corpus", corpus, "--task", "induction,agreement",
         "--n-pairs", "4", "--ig-steps", "2", "--out", str(circ), "--no-progress")
    found = json.loads(circ.read_text())
    assert found["graph"]["n_kv"] == n_kv and found["graph"]["parallel"] == parallel
    assert sum(r.endswith("<k>") for r in found["graph"]["readers"]) == 2 * n_kv
    for t in found["tasks"].values():
        curve = t["methods"]["eap-ig"]["faithfulness"]
        assert abs(curve["recovered"][-1] - 1) < 1e-3 and abs(curve["recovered"][0]) < 1e-3

    probe = tmp_path / "probe.json"
    _run(capsys, "probe", "--model", model, "--corpus", corpus, "--split", "train",
         "--tasks", "pos,animacy", "--max-tokens", "5000", "--min-per-class", "5",
         "--out", str(probe), "--no-progress")
    assert json.loads(probe.read_text())["layers"] == [0, 1, 2]

    icl = tmp_path / "icl.json"
    _run(capsys, "icl", "--model", model, "--corpus", corpus, "--k", "0,2", "--n", "4",
         "--out", str(icl), "--no-progress")
    assert json.loads(icl.read_text())["tasks"]["novel"]["k"]["2"]["n"] == 4

    beliefs = tmp_path / "beliefs.json"
    _run(capsys, "beliefs", "--model", model, "--corpus", corpus, "--method", "icl,rome,ft,steer",
         "--n", "2", "--layer", "0", "--n-trace", "1", "--trace-samples", "2",
         "--cov-tokens", "2000", "--out", str(beliefs), "--no-progress")
    methods = json.loads(beliefs.read_text())["methods"]
    assert {"rome", "ft", "steer"} <= set(methods)


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_lens_applies_the_models_own_final_norm(arch: str, matrix: Matrix) -> None:
    from circuits.attention import logit_lens
    from workbench.models.loader import load

    model = load(matrix.root / arch)
    tokens = torch.randint(1, model.cfg.d_vocab, (1, 12),
                           generator=torch.Generator().manual_seed(0))
    lens = logit_lens(model, tokens[0].tolist(), k=3)
    with torch.no_grad():
        logp = model(tokens).log_softmax(-1)[0, :-1].gather(-1, tokens[0, 1:, None])[:, 0]
    torch.testing.assert_close(lens.logprob_of_next[-1, :-1], logp, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_partial_runs_equal_the_full_run(arch: str, matrix: Matrix) -> None:
    """The shortcuts weight edits take: unembedding chosen positions only, and resuming the
    blocks from a layer whose input did not change."""
    from workbench.evaluate import token_nll
    from workbench.hooks import (
        _UNEMBED_SLICES,
        logits_at,
        resid_entering,
        resumes_exactly,
        run_from,
        unembed_input,
        unembedded_nll,
        unembeds_exactly,
    )
    from workbench.models.loader import load

    model = load(matrix.root / arch)
    tokens = torch.randint(1, model.cfg.d_vocab, (3, 9),
                           generator=torch.Generator().manual_seed(1))
    ends = torch.tensor([8, 3, 5])
    with torch.no_grad():
        full = model(tokens)
    first = logits_at(model, tokens, ends)  # checks the sliced unembedding once
    assert _UNEMBED_SLICES[model]  # every architecture here takes the fast path
    torch.testing.assert_close(first, full[torch.arange(3), ends])
    torch.testing.assert_close(logits_at(model, tokens, ends), full[torch.arange(3), ends],
                               atol=1e-5, rtol=1e-5)
    assert unembeds_exactly(model, tokens)
    # token losses from the stopped run, unembedded a few positions at a time
    stopped = unembedded_nll(model, unembed_input(
        lambda h: model.run_with_hooks(tokens, return_type=None, fwd_hooks=h)), tokens)
    torch.testing.assert_close(stopped, token_nll(full, tokens), atol=1e-5, rtol=1e-5,
                               equal_nan=True)
    for layer in range(model.cfg.n_layers):
        assert resumes_exactly(model, tokens, layer, full), layer
        resumed = run_from(model, resid_entering(model, tokens, layer), layer)
        torch.testing.assert_close(resumed, full, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the blocks below run again afterwards
        torch.testing.assert_close(model(tokens), full, atol=0, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_weight_edits_on_every_mlp_kind(arch: str, matrix: Matrix) -> None:
    """ROME and constrained fine-tuning change one MLP output matrix only (`down_proj` reading
    `act(gate) * up`, GPT-NeoX's `dense_4h_to_h` beside parallel attention, GPT-2's `Conv1D`
    `c_proj`): ROME by a rank-one matrix, fine-tuning within its box; the stated answer moves
    to the new object; the weights come back bit-identical."""
    from beliefs.editing import key_covariance, key_hook, read_w_out
    from beliefs.elicit import candidate_logprobs, object_ids
    from beliefs.finetune import FinetuneConfig, finetune_edit
    from beliefs.rome import RomeConfig, rome_edit
    from beliefs.suite import default_facts
    from workbench.models.loader import load
    from workbench.world import load_corpus

    model, corpus = load(matrix.root / arch), load_corpus(matrix.corpus)
    # the edit's key is what the output matrix reads: key @ W_out (+ bias) is the MLP output
    _, cache = model.run_with_cache(torch.randint(1, model.cfg.d_vocab, (1, 10)))
    out = cache[key_hook(0)][0] @ read_w_out(model, 0)
    bias = cache["blocks.0.hook_mlp_out"][0] - out
    assert torch.allclose(bias, bias[:1].expand_as(bias), atol=1e-5)  # a constant: the bias

    base = default_facts(corpus)
    belief = base.beliefs(["city"], n=1, seed=0)[0]
    new = base.new_object(belief)
    prompt, target, i_new = belief.prompts[0], object_ids(model, new), belief.candidates.index(new)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logp_before = candidate_logprobs(model, [prompt], belief.candidates)[0]
    cov = key_covariance(model, corpus, 0, n_tokens=2000, progress=False)
    # ROME writes at the subject's last token; in a random model no attention head carries
    # it on to the prediction, so the "subject" here is the whole prompt: the edit then has
    # to change the prediction through this MLP alone (efficacy on trained models is tested
    # in test_belief_tests.py)
    rome = rome_edit(model, [prompt], prompt, target, 0, cov,
                     RomeConfig(steps=60, n_prefixes=2, prefix_len=3, clamp_norm=20,
                                kl_weight=0))
    ft = finetune_edit(model, [prompt], belief.subject, target, 0,
                       FinetuneConfig(steps=40, n_prefixes=2, prefix_len=3, eps=0.2))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.linalg.matrix_rank(rome.delta.double(), rtol=1e-6) == 1
    assert ft.delta.abs().max() <= 0.2 + 1e-6
    untouched = load(matrix.root / arch)
    for edit in (rome, ft):
        with edit.applied(model):
            changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
            logp = candidate_logprobs(model, [prompt], belief.candidates)[0]
            diff = read_w_out(model, 0) - read_w_out(untouched, 0)
        assert len(changed) == 1 and changed[0].startswith("blocks.0.mlp"), changed
        torch.testing.assert_close(diff, edit.delta, atol=1e-5, rtol=1e-4)
        assert logp[i_new] > logp_before[i_new] + 0.5, (edit.method, logp[i_new])
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with ft.applied(model):  # the stated answer (top candidate) is now the new object
        assert int(candidate_logprobs(model, [prompt], belief.candidates)[0].argmax()) == i_new
    # the edits' loss unembeds only the target positions, and gives the full run's value
    # and gradient (every architecture here has plain logits, so the fast path is taken)
    from beliefs.editing import RewriteLoss, rewrite_batch, target_nll
    from workbench.prompts import encode_prompt

    batch = rewrite_batch(model, [prompt], belief.subject, target, [])
    loss = RewriteLoss(model, batch)
    assert loss.fast
    shift = torch.zeros(model.cfg.d_model, requires_grad=True)
    hooks = [("blocks.0.hook_mlp_out", lambda out, hook: out + shift)]
    fast = loss(hooks)
    (g_fast,) = torch.autograd.grad(fast, shift)
    full = target_nll(model.run_with_hooks(batch.tokens, fwd_hooks=hooks), batch)
    (g_full,) = torch.autograd.grad(full, shift)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_fast, g_full, atol=1e-5, rtol=1e-4)
    # ROME's essence prompt as one more row of the batch: the same loss, and its logits
    essence = encode_prompt(model, f"{belief.subject} is a")
    both = RewriteLoss(model, batch, 1, extra=[essence])  # resumed from block 1
    shift = torch.zeros(model.cfg.d_model, requires_grad=True)
    hooks = [("blocks.1.hook_mlp_out", lambda out, hook: out + shift)]
    nll, last = both.with_logits(hooks)
    torch.testing.assert_close(nll, target_nll(
        model.run_with_hooks(batch.tokens, fwd_hooks=hooks), batch), atol=1e-5, rtol=1e-5)
    alone = model.run_with_hooks(torch.tensor([essence]), fwd_hooks=hooks)[0, -1]
    torch.testing.assert_close(last[0], alone, atol=1e-4, rtol=1e-4)


def test_dashboard_pages_on_every_architecture(matrix: Matrix, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from app import runs as folder

    runs = tmp_path / "runs"
    shutil.copytree(matrix.root, runs)
    monkeypatch.setenv(folder.RUNS_ENV, str(runs))
    app = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
    pages = ["pages/attention.py", "pages/induction.py", "pages/probes.py", "pages/beliefs.py",
             "pages/activations.py", "pages/logit_lens.py"]
    for arch in ARCHS:
        at = AppTest.from_file(app, default_timeout=120)
        at.session_state["model_name"] = arch
        at.run()
        assert at.sidebar.selectbox(key="model_name").options == sorted(ARCHS)
        for page in pages:
            at.switch_page(page).run()
            assert not at.exception, (arch, page, [e.value for e in at.exception])
            assert not at.error, (arch, page, [e.value for e in at.error])
            specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
            if page == "pages/attention.py":  # every query head in the grid
                assert len(specs[0]["layout"]["annotations"]) == 2 * 4, arch
            if page == "pages/logit_lens.py":
                assert specs, arch


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_unsupported_architectures_get_one_clear_error(
        matrix: Matrix, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import transformers as T
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(matrix.root / "gpt2")
    v = len(tok)
    small = dict(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64)
    bert = save_hf(T.BertForMaskedLM, T.BertConfig(**small), tok, tmp_path / "bert")
    err = _refused(capsys, "info", "--model", str(bert))
    assert "BertForMaskedLM, not a causal" in err and "ForCausalLM" in err
    ctrl = save_hf(T.CTRLLMHeadModel, T.CTRLConfig(vocab_size=v, n_embd=32, n_layer=2,
                                                   n_head=4, dff=64), tok, tmp_path / "ctrl")
    err = _refused(capsys, "info", "--model", str(ctrl))
    assert "CTRLLMHeadModel" in err and "cannot load" in err
    mamba = save_hf(T.MambaForCausalLM, T.MambaConfig(vocab_size=v, hidden_size=32,
                                                      num_hidden_layers=2), tok,
                    tmp_path / "mamba")
    err = _refused(capsys, "induction", "--model", str(mamba), "--n-seqs", "2", "--out",
                   str(tmp_path / "i.json"))
    assert "needs attention heads; MambaForCausalLM has none" in err
    moe = save_hf(T.MixtralForCausalLM, T.MixtralConfig(num_local_experts=2,
                                                        num_experts_per_tok=1,
                                                        num_key_value_heads=2, **small),
                  tok, tmp_path / "mixtral")
    err = _refused(capsys, "beliefs", "--model", str(moe), "--corpus", str(matrix.corpus),
                   "--method", "icl,rome", "--n", "2", "--out", str(tmp_path / "b.json"),
                   "--no-progress")
    assert "MixtralForCausalLM cannot be edited" in err and "mixtures of experts" in err
