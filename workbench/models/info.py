"""Model cards: what `workbench info` prints about a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.layout import EVAL_JSON, step_of
from workbench.models.checkpoints import list_checkpoints, load_checkpoint
from workbench.models.refs import ModelRef

if TYPE_CHECKING:
    from workbench.models import Model


def model_card(ref: str | Path, model: Model | None = None) -> str:
    """A plain-text card: shape, parameters, vocabulary, steps, losses, checkpoints.

    `model`: the already loaded model of a Hugging Face `ref` (else it is loaded here)."""
    resolved = ModelRef.of(ref)
    if not resolved.is_ours:
        from workbench.models.arch import describe
        from workbench.models.loader import load

        model = model if model is not None else load(str(ref))
        c = model.cfg
        n_params = sum(p.numel() for p in model.parameters())
        return "\n".join(
            [
                f"model         {ref} (Hugging Face, {c.original_architecture or c.architecture})",
                f"parameters    {n_params:,}",
                f"layers        {c.n_layers}   heads {c.n_heads}   d_model {c.d_model}   "
                f"d_head {c.d_head}   n_ctx {c.n_ctx}",
                f"architecture  {describe(model).summary()}",
                f"vocabulary    {c.d_vocab}",
                "weights       not verified (a Hugging Face directory records no checksums)",
            ]
        )
    ckpt_path = resolved.checkpoint
    assert ckpt_path is not None
    ckpt = load_checkpoint(ckpt_path, verify=True)  # as `load` does: a damaged file is refused
    m, meta = ckpt.model_cfg, ckpt.meta
    run_dir = ModelRef.of(ckpt_path).run_dir
    lines = [
        f"model         {ref}",
        f"checkpoint    {ckpt_path}",
        f"kind          native TransformerBridge ({'attention-only' if m.attn_only else 'GPT'})",
        f"parameters    {sum(t.numel() for t in ckpt.state_dict.values()):,}",
        f"layers        {m.n_layers}   heads {m.n_heads}   d_model {m.d_model}   "
        f"d_head {m.d_head}   d_mlp {0 if m.attn_only else m.d_mlp}   n_ctx {m.n_ctx}",
        f"vocabulary    {m.d_vocab}",
        f"steps         {meta.get('step', 0)}   tokens seen {meta.get('tokens_seen', 0):,}",
        f"losses        train {_fmt(meta.get('loss'))}   validation {_fmt(meta.get('val_loss'))}",
        f"corpus        {meta.get('corpus', '?')}",
        "weights       " + ("verified (sha256 of model.safetensors matches config.json)"
                             if "model.safetensors" in meta.get("sha256", {}) else
                             "not verified (config.json records no checksum of them)"),
    ]
    if run_dir is not None:
        steps = [step_of(p) or 0 for p in list_checkpoints(run_dir)]
        lines.append(f"checkpoints   {len(steps)}: {_short(steps)}")
        eval_path = run_dir / EVAL_JSON
        if eval_path.is_file():
            try:
                metrics = json.loads(eval_path.read_text())["metrics"]
                lines.append("eval          " + "   ".join(f"{k} {v['value']:.3f}"
                                                        for k, v in metrics.items()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                lines.append(f"eval          {eval_path} is unreadable ({exc}); run "
                             "`workbench eval` again")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _short(steps: list[int]) -> str:
    return (
        ", ".join(map(str, steps))
        if len(steps) <= 14
        else (", ".join(map(str, steps[:10])) + ", ..., " + ", ".join(map(str, steps[-3:])))
    )
