"""Export a native run or checkpoint as a standard Hugging Face `GPT2LMHeadModel` directory.

`workbench export --model runs/demo --out runs/demo-hf` writes `config.json`,
`model.safetensors`, `generation_config.json` and the run's tokenizer (`tokenizer.json`,
`tokenizer_config.json`), so that `transformers.AutoModelForCausalLM.from_pretrained(out)`,
`AutoTokenizer.from_pretrained(out)` and `workbench.models.loader.load(out)` all read it and give
the logits of the run (within float32 rounding; the export checks this before writing).

Our models are GPT-2 in all but one weight: the unembedding has a bias `b_U`, GPT-2's
`lm_head` has none. The bias is folded into the unembedding through the final LayerNorm,
exactly. The normalised vector `x̂ = (x - mean(x)) / sqrt(var(x) + eps)` is orthogonal to the
all-ones vector `1`, so with `γ`, `β` the trained final-norm weight and bias and `W_U` the
unembedding as [d_vocab, d_model], the export writes

    ln_f.weight = 1,  ln_f.bias = 1,
    lm_head.weight = W_U diag(γ) + v 1ᵀ / d_model,   v = W_U β + b_U - W_U γ,

and `lm_head(x̂ + 1) = W_U (γ ⊙ x̂) + W_U γ + v (1ᵀx̂) / d + v = W_U (γ ⊙ x̂ + β) + b_U`.
So the exported final norm has unit weight and unit bias (its output is `x̂ + 1`, not the
run's `γ ⊙ x̂ + β`); the residual stream, every other activation and the logits are the
run's. Scores computed from weights alone that read `W_U` without the final norm (the OV
copying score of `circuits.scores`, `W_E W_V W_O W_U`) see the folded matrix and shift a
little (by 0.04 at most on the `tiny` test model); forward-pass scores do not.

What GPT-2 cannot express is refused with a `ValueError`: attention-only models (GPT-2 blocks
have MLPs), `n_heads * d_head != d_model` (GPT-2's head width is `n_embd / n_head`), and an
activation Hugging Face has no name for. The config records where the export came from under
`workbench_export` (source checkpoint, step, the fold, the checked logit difference).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from workbench.layout import CHECKPOINTS_DIR
from workbench.models.checkpoints import (
    Checkpoint,
    is_checkpoint_dir,
    is_hf_dir,
    load_checkpoint,
    resolve_checkpoint,
)
from workbench.models.config import ModelConfig
from workbench.outputs import apply_umask, replace_dir

SCHEMA = "workbench.export/1"
log = logging.getLogger(__name__)

# Our act_fn -> the transformers `ACT2FN` name of the same function ("gelu" is the exact
# erf GELU in both; "gelu_new" the tanh approximation in both).
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "silu": "silu"}
# What an export directory holds; `--overwrite` replaces only a directory of these.
EXPORT_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
MAX_LOGIT_DIFF = 1e-3  # the export's self-check (float32; measured ~1e-6 on our models)


def fold_unembed_bias(
    w_u: Float[Tensor, "d_vocab d_model"],
    b_u: Float[Tensor, " d_vocab"],
    gamma: Float[Tensor, " d_model"],
    beta: Float[Tensor, " d_model"],
) -> Float[Tensor, "d_vocab d_model"]:
    """The bias-free unembedding that, after a final LayerNorm of unit weight and unit bias,
    gives the logits of `W_U (γ ⊙ x̂ + β) + b_U` (the module docstring derives it).

    Computed in float64 and returned in `w_u`'s dtype.

    >>> w, b = torch.randn(5, 4), torch.randn(5)
    >>> g, be = torch.randn(4), torch.randn(4)
    >>> x = torch.randn(4); x_hat = x - x.mean()
    >>> torch.allclose(fold_unembed_bias(w, b, g, be) @ (x_hat + 1), w @ (g * x_hat + be) + b,
    ...                atol=1e-5)
    True
    """
    w, b, g, be = (t.detach().double() for t in (w_u, b_u, gamma, beta))
    v = w @ be + b - w @ g  # (V,)
    folded = w * g[None, :] + v[:, None] / w.shape[1]  # (V, D)
    return folded.to(w_u.dtype)


def check_exportable(cfg: ModelConfig) -> None:
    """Refuse, with the value and the way out, a shape `GPT2LMHeadModel` cannot hold."""
    if cfg.attn_only:
        raise ValueError(
            f"cannot export an attention-only model (attn_only=True, {cfg.n_layers} layers) as "
            "GPT2LMHeadModel: every GPT-2 block has an MLP. Analyse it with "
            "workbench.load(REF) instead, or train a preset with MLPs (tiny, default)")
    if cfg.d_attn != cfg.d_model:
        raise ValueError(
            f"cannot export n_heads * d_head = {cfg.n_heads} * {cfg.d_head} = {cfg.d_attn} != "
            f"d_model = {cfg.d_model} as GPT2LMHeadModel: its head width is n_embd / n_head. "
            "Export a model with n_heads * d_head == d_model")
    if cfg.act_fn not in HF_ACTIVATIONS:
        raise ValueError(
            f"cannot export act_fn={cfg.act_fn!r}: transformers has no activation of that "
            f"name; exportable ones are {sorted(HF_ACTIVATIONS)}")


def hf_config(cfg: ModelConfig, tokenizer: Any = None, meta: dict[str, Any] | None = None
              ) -> Any:
    """The `transformers.GPT2Config` of `cfg` (untied unembedding, no dropout)."""
    from transformers import GPT2Config

    check_exportable(cfg)
    ids = {} if tokenizer is None else {
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id}
    extra = {} if meta is None else {"workbench_export": meta}
    return GPT2Config(
        vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=cfg.d_mlp, activation_function=HF_ACTIVATIONS[cfg.act_fn],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=float(cfg.to_bridge_config().eps), tie_word_embeddings=False,
        scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
        architectures=["GPT2LMHeadModel"], **ids, **extra)


def hf_state_dict(state_dict: dict[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Our bridge-named weights as `GPT2LMHeadModel` weights (`transformer.h.{l}...`).

    GPT-2's `Conv1D` stores [in, out] where our `Linear`s store [out, in]; Q, K, V are one
    `c_attn` with heads in the same order; the unembedding bias is folded
    (`fold_unembed_bias`).
    """
    check_exportable(cfg)
    sd = {k: v.detach().float() for k, v in state_dict.items()}
    out = {"transformer.wte.weight": sd["embed.weight"],
           "transformer.wpe.weight": sd["pos_embed.weight"]}
    for layer in range(cfg.n_layers):
        ours, hf = f"blocks.{layer}.", f"transformer.h.{layer}."
        out[hf + "ln_1.weight"] = sd[ours + "ln1.weight"]
        out[hf + "ln_1.bias"] = sd[ours + "ln1.bias"]
        qkv = [sd[f"{ours}attn.{p}.weight"] for p in "qkv"]  # each (H*Dh, D)
        out[hf + "attn.c_attn.weight"] = torch.cat(qkv, dim=0).T  # (D, 3*H*Dh)
        out[hf + "attn.c_attn.bias"] = torch.cat([sd[f"{ours}attn.{p}.bias"] for p in "qkv"])
        out[hf + "attn.c_proj.weight"] = sd[ours + "attn.o.weight"].T  # (H*Dh, D)
        out[hf + "attn.c_proj.bias"] = sd[ours + "attn.o.bias"]
        out[hf + "ln_2.weight"] = sd[ours + "ln2.weight"]
        out[hf + "ln_2.bias"] = sd[ours + "ln2.bias"]
        out[hf + "mlp.c_fc.weight"] = sd[ours + "mlp.in.weight"].T  # (D, d_mlp)
        out[hf + "mlp.c_fc.bias"] = sd[ours + "mlp.in.bias"]
        out[hf + "mlp.c_proj.weight"] = sd[ours + "mlp.out.weight"].T  # (d_mlp, D)
        out[hf + "mlp.c_proj.bias"] = sd[ours + "mlp.out.bias"]
    d = cfg.d_model
    out["transformer.ln_f.weight"] = torch.ones(d)
    out["transformer.ln_f.bias"] = torch.ones(d)
    out["lm_head.weight"] = fold_unembed_bias(sd["unembed.weight"], sd["unembed.bias"],
                                              sd["ln_final.weight"], sd["ln_final.bias"])
    return {k: v.contiguous().clone() for k, v in out.items()}


def _native_checkpoint(ref: str | os.PathLike[str], step: int | None) -> Path:
    """The checkpoint directory of a run or checkpoint reference of ours, or one error."""
    path = Path(ref).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model reference {ref} does not exist; pass a run directory "
                                "(runs/NAME, made by `workbench train`) or one of its "
                                "checkpoints/step_NNNNNN")
    if is_hf_dir(path):
        raise ValueError(f"{ref} is already a Hugging Face checkpoint (its config.json has a "
                         "model_type); export takes a run or checkpoint of ours. Load it with "
                         "AutoModelForCausalLM.from_pretrained or copy it instead")
    if not (is_checkpoint_dir(path) or (path / CHECKPOINTS_DIR).is_dir()):
        raise ValueError(f"{ref} is not a run or checkpoint of ours (no checkpoints/, no "
                         "config.json + model.safetensors); pass a run directory made by "
                         "`workbench train`")
    return resolve_checkpoint(path, step)


def check_out(out: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse an existing non-empty `out` unless `overwrite`; with it, only a directory that
    holds nothing but an export of ours (`workbench_export` in its config.json)."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"--out {out} exists and is not a directory; choose a new directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise ValueError(f"--out {out} exists and is not empty; pass --overwrite to replace an "
                         "earlier export there, or choose a new directory")
    import json

    try:
        ours = "workbench_export" in json.loads((out / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if not ours:
        raise ValueError(f"refusing to overwrite {out}: it is not an export made by `workbench "
                         "export` (no workbench_export in its config.json); choose another "
                         "directory")
    foreign = sorted(e.name for e in out.iterdir()
                     if e.name not in EXPORT_FILES and not e.name.startswith("."))
    if foreign:
        raise ValueError(f"refusing to overwrite {out}: besides the export it holds "
                         f"{', '.join(foreign[:5])}; move them out first or choose another "
                         "directory")


def max_logit_diff(bridge: Any, hf_model: Any, tokens: Tensor) -> float:
    """Largest absolute difference between the logits of our bridge and of the exported
    `GPT2LMHeadModel` on `tokens` [batch, pos]."""
    with torch.no_grad():
        ours = bridge(tokens)
        theirs = hf_model(input_ids=tokens).logits
    return float((ours.float() - theirs.float()).abs().max())


def build_hf_model(ckpt: Checkpoint, meta: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """The `GPT2LMHeadModel` (inference mode) and tokenizer of a checkpoint of ours."""
    from transformers import GPT2LMHeadModel

    from workbench.world.tokenizer_files import load_hf_tokenizer

    check_exportable(ckpt.model_cfg)
    tokenizer = load_hf_tokenizer(ckpt.tokenizer_path)
    model = GPT2LMHeadModel(hf_config(ckpt.model_cfg, tokenizer, meta))
    missing, unexpected = model.load_state_dict(hf_state_dict(ckpt.state_dict, ckpt.model_cfg),
                                                strict=False)
    # GPT-2 keeps a causal-mask buffer some versions list as missing; no parameter may be
    assert not [k for k in missing if not k.endswith(".attn.bias")] and not unexpected, (
        missing, unexpected)
    return model.train(False), tokenizer  # inference mode


def export_hf(ref: str | os.PathLike[str], out: str | os.PathLike[str], overwrite: bool = False,
              step: int | None = None) -> Path:
    """Write the run or checkpoint `ref` as a Hugging Face `GPT2LMHeadModel` directory.

    Args:
        ref: a run directory (its latest checkpoint, or `step`) or a checkpoint directory.
        out: the output directory; written in a temporary sibling and renamed into place.
        overwrite: replace an earlier export at `out`.
        step: the checkpoint step of a run directory.

    Returns:
        `out`.

    Raises:
        ValueError: `ref` is not ours, its shape is not GPT-2's, or `out` is not empty.
    """
    from workbench.models.loader import bridge_from_checkpoint

    if not sys.stderr.isatty():  # no "Writing model shards" bar in logs and pipes
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    out = Path(out).expanduser()
    ckpt_path = _native_checkpoint(ref, step)
    check_out(out, overwrite)
    ckpt = load_checkpoint(ckpt_path)
    check_exportable(ckpt.model_cfg)
    meta: dict[str, Any] = {
        "schema": SCHEMA, "source": str(ckpt_path), "step": ckpt.step,
        "final_norm": "unit weight and unit bias; the trained ln_final weight and bias and the "
                      "unembedding bias are folded into lm_head.weight (workbench.models.export)"}
    model, tokenizer = build_hf_model(ckpt, meta)
    n_pos = min(ckpt.model_cfg.n_ctx, 64)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, ckpt.model_cfg.d_vocab, (2, n_pos), generator=gen)
    diff = max_logit_diff(bridge_from_checkpoint(ckpt), model, tokens)
    if not diff <= MAX_LOGIT_DIFF:
        raise RuntimeError(f"the exported model's logits differ from {ckpt_path}'s by {diff:.3g} "
                           f"(> {MAX_LOGIT_DIFF}); nothing was written")
    model.config.workbench_export = {**meta, "max_abs_logit_diff": diff,
                                     "checked_on": f"2 x {n_pos} random tokens"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        apply_umask(tmp)  # mkdtemp makes it 0700
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            apply_umask(f)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to %s (max |logit difference| %.3g)", ckpt_path, out, diff)
    return out
