"""`workbench export` of the tiny model trained in the session fixture: Hugging Face and our
loader read the export with the run's logits on world text, and the induction analysis finds
the same heads in both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from circuits import induction
from circuits.induction import InductionConfig
from workbench.cli.core import main
from workbench.models.loader import load
from workbench.training.trainer import TrainResult
from workbench.world import load_corpus


@pytest.fixture(scope="module")
def exported(tiny_run: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-hf"
    assert main(["export", "--model", str(tiny_run.run_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def world_tokens(tiny_run: TrainResult, world_corpus: Path) -> torch.Tensor:
    """4 windows of validation text (documents start with <bos>), n_ctx tokens each."""
    n_ctx = load(tiny_run.run_dir).cfg.n_ctx
    val = np.asarray(load_corpus(world_corpus).tokens("val"))
    return torch.from_numpy(val[: 4 * n_ctx].astype(np.int64)).reshape(4, n_ctx)


def test_hugging_face_reads_the_export_with_the_runs_logits(
        tiny_run: TrainResult, exported: Path, world_tokens: torch.Tensor) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ours = load(tiny_run.run_dir)
    hf = AutoModelForCausalLM.from_pretrained(exported).eval()
    with torch.no_grad():
        a, b = ours(world_tokens), hf(world_tokens).logits
    torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    text = "anna berg lives in"
    tok = AutoTokenizer.from_pretrained(exported)
    assert tok(text)["input_ids"] == ours.to_tokens(text)[0].tolist()


def test_our_loader_reads_the_export_with_the_runs_logits(
        tiny_run: TrainResult, exported: Path, world_tokens: torch.Tensor) -> None:
    ours, theirs = load(tiny_run.run_dir), load(exported)
    assert theirs.cfg.n_layers == ours.cfg.n_layers and theirs.cfg.n_heads == ours.cfg.n_heads
    with torch.no_grad():
        a, b = ours(world_tokens), theirs(world_tokens)
    torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    _, cache_a = ours.run_with_cache(world_tokens[:1])
    _, cache_b = theirs.run_with_cache(world_tokens[:1])
    for name in ("blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"):
        torch.testing.assert_close(cache_b[name], cache_a[name], atol=1e-4, rtol=0)


def test_induction_finds_the_same_heads_in_the_export(tiny_run: TrainResult,
                                                      exported: Path) -> None:
    cfg = InductionConfig(n_seqs=8)
    ours = induction.run(load(tiny_run.run_dir), cfg=cfg, progress=False)
    theirs = induction.run(load(exported), cfg=cfg, progress=False)
    assert ours["induction_heads"] and theirs["induction_heads"] == ours["induction_heads"]
    assert theirs["previous_token_heads"] == ours["previous_token_heads"]
    # forward-pass scores are the run's; the OV copying score reads the folded W_U (it ignores
    # the final norm), so it is left out
    for key in ("induction", "prev_token", "ablation_nats"):
        a = [h[key] for h in ours["heads"]]
        b = [h[key] for h in theirs["heads"]]
        assert b == pytest.approx(a, abs=1e-3), key
        assert np.argsort(b).tolist() == np.argsort(a).tolist(), key  # the same ranking
    assert [p["k_path_source"] for p in theirs["pairs"]] == [p["k_path_source"]
                                                             for p in ours["pairs"]]
