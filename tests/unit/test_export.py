"""`workbench export`: the unembedding-bias fold, the GPT-2 weights of a random checkpoint,
the shapes GPT-2 cannot hold, and what an existing output allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.cli.core import main
from workbench.models import export
from workbench.models.checkpoints import save_checkpoint
from workbench.models.config import ModelConfig, get_preset
from workbench.models.export import check_exportable, export_hf, fold_unembed_bias
from workbench.models.loader import build_bridge, load

CFG = get_preset("tiny").replace(d_vocab=12, n_ctx=8)
TOKENS = torch.tensor([[2, 4, 5, 6, 11, 7, 8, 9], [2, 10, 4, 4, 5, 11, 3, 0]])


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=1e-5)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_the_fold_gives_the_logits_of_the_unembedding_bias_exactly(dtype: torch.dtype,
                                                                   atol: float) -> None:
    g = torch.Generator().manual_seed(0)
    d, v = 48, 300
    w_u, b_u = torch.randn(v, d, generator=g), 3 * torch.randn(v, generator=g)
    gamma, beta = 1 + torch.randn(d, generator=g), torch.randn(d, generator=g)
    x = 5 * torch.randn(4, 7, d, generator=g) + 2  # a residual stream with a mean
    w_u, b_u, gamma, beta, x = (t.to(dtype) for t in (w_u, b_u, gamma, beta, x))
    ours = (gamma * _layer_norm(x) + beta) @ w_u.T + b_u  # trained ln_final, then unembed
    folded = fold_unembed_bias(w_u, b_u, gamma, beta)
    assert folded.dtype == dtype and folded.shape == (v, d)
    theirs = (_layer_norm(x) + 1) @ folded.T  # ln_f of unit weight and bias, lm_head no bias
    torch.testing.assert_close(theirs, ours, atol=atol, rtol=0)
    # without the mean-zero identity the fold would not hold: a vector off the normalised
    # subspace (mean 1) gives other logits
    off = torch.ones(d, dtype=dtype)
    assert not torch.allclose((off + 1) @ folded.T, (gamma * off + beta) @ w_u.T + b_u)


def _checkpoint(run: Path, tokenizer: Path, cfg: ModelConfig = CFG, step: int = 4,
                seed: int = 1) -> Path:
    torch.manual_seed(seed)
    sd = {k: 0.3 * torch.randn_like(v) for k, v in build_bridge(cfg).state_dict().items()}
    sd["ln_final.weight"] = 1 + sd["ln_final.weight"]
    return save_checkpoint(run / "checkpoints" / f"step_{step:06d}", sd, cfg, tokenizer,
                           meta={"step": step})


@pytest.fixture
def run(tmp_path: Path, tokenizer_file: Path) -> Path:
    _checkpoint(tmp_path / "run", tokenizer_file, step=4, seed=1)
    _checkpoint(tmp_path / "run", tokenizer_file, step=8, seed=2)
    return tmp_path / "run"


def test_an_export_gives_the_logits_and_tokens_of_the_run(run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

    out = export_hf(run, tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run", "tokenizer.json"]
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(hf, GPT2LMHeadModel) and hf.lm_head.bias is None
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["n_positions"] == 8
    assert config["activation_function"] == "gelu" and config["layer_norm_epsilon"] == 1e-5
    assert config["workbench_export"]["step"] == 8  # the latest checkpoint
    assert config["workbench_export"]["max_abs_logit_diff"] < 1e-4
    assert (out / "model.safetensors").is_file()
    ours = load(run)
    with torch.no_grad():
        torch.testing.assert_close(hf(TOKENS).logits, ours(TOKENS), atol=1e-4, rtol=0)
        torch.testing.assert_close(load(out)(TOKENS), ours(TOKENS), atol=1e-4, rtol=0)
    assert torch.equal(hf.transformer.ln_f.weight, torch.ones(CFG.d_model))
    assert torch.equal(hf.transformer.ln_f.bias, torch.ones(CFG.d_model))
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("a b c .")["input_ids"] == ours.to_tokens("a b c .")[0].tolist() == [2, 4, 5, 6,
                                                                                    11]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<bos>", "<eos>", "<pad>")


def test_step_picks_the_checkpoint(run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = export_hf(run, tmp_path / "hf4", step=4)
    assert json.loads((out / "config.json").read_text())["workbench_export"]["step"] == 4
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(TOKENS).logits, load(run, step=4)(TOKENS), atol=1e-4,
                                   rtol=0)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at step 5; it has \[4, 8\]"):
        export_hf(run, tmp_path / "hf5", step=5)


@pytest.mark.parametrize("change,message", [
    ({"attn_only": True}, r"cannot export an attention-only model \(attn_only=True, 2 layers\)"
                          r".*every GPT-2 block has an MLP"),
    ({"d_head": 8}, r"n_heads \* d_head = 4 \* 8 = 32 != d_model = 64 .*Export a model with"),
])
def test_shapes_gpt2_cannot_hold_are_refused(change: dict, message: str, tmp_path: Path,
                                             tokenizer_file: Path) -> None:
    run = tmp_path / "odd"
    _checkpoint(run, tokenizer_file, CFG.replace(**change))
    with pytest.raises(ValueError, match=message):
        export_hf(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd", "tokenizer.json"]


def test_an_activation_without_a_transformers_name_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "HF_ACTIVATIONS", {"gelu": "gelu"})
    with pytest.raises(ValueError, match=r"cannot export act_fn='silu'.*exportable ones are "
                                         r"\['gelu'\]"):
        check_exportable(CFG.replace(act_fn="silu"))


def test_references_that_are_not_our_runs_are_refused(run: Path, tmp_path: Path) -> None:
    out = export_hf(run, tmp_path / "hf")
    with pytest.raises(ValueError, match=rf"{out} is already a Hugging Face checkpoint .*"
                                         "export takes a run or checkpoint of ours"):
        export_hf(out, tmp_path / "again")
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match="notes is not a run or checkpoint of ours"):
        export_hf(tmp_path / "notes", tmp_path / "again")
    with pytest.raises(FileNotFoundError, match="model reference .*nope does not exist"):
        export_hf(tmp_path / "nope", tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_an_existing_output_is_replaced_only_with_overwrite(run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    export_hf(run, tmp_path / "empty", step=4)  # an empty directory is fine
    with pytest.raises(ValueError, match=r"--out .*empty exists and is not empty; pass "
                                         "--overwrite"):
        export_hf(run, tmp_path / "empty")
    out = export_hf(run, tmp_path / "empty", overwrite=True)
    assert json.loads((out / "config.json").read_text())["workbench_export"]["step"] == 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"besides the export it holds notes.txt"):
        export_hf(run, out, overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"refusing to overwrite .*mine: it is not an export "
                                         "made by `workbench export`"):
        export_hf(run, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "a.txt").read_text() == "mine"


def test_the_command_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "hf"
    assert main(["export", "--model", str(run), "--out", str(out), "--step", "4"]) == 0
    printed = capsys.readouterr().out
    assert "step 4) as GPT2LMHeadModel to" in printed and "max |logit difference|" in printed
    assert main(["export", "--model", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: --out") and "pass --overwrite" in err
    assert err.count("\n") == 1
    assert main(["export", "--model", str(run), "--out", str(out), "--overwrite"]) == 0
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "x")]) == 2
    assert "already a Hugging Face checkpoint" in capsys.readouterr().err
    assert main(["export", "--model", str(run), "--out", str(run)]) == 2
    assert "the output" in capsys.readouterr().err
