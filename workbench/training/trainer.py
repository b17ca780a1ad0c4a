"""Trainer: AdamW, warmup + cosine, clipping, bf16 on CUDA, log-spaced checkpoints, exact
resume, and data parallelism under `torchrun`.

Training runs `FastGPT` (fused QKV, SDPA); every checkpoint stores the weights under
TransformerBridge names, so what we analyse is the hooked bridge with the same weights.

A run directory holds `run.json` (model, train and corpus configs), `tokenizer.json`,
`metrics.jsonl` (one JSON object per log or eval event), `checkpoints/step_NNNNNN/` and,
at the end, `training.fig.json` (plotly loss curves).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.layout import CHECKPOINTS_DIR, METRICS, TRAINING_FIGURE
from workbench.models.checkpoints import (
    Checkpoint,
    list_checkpoints,
    save_checkpoint,
    step_dir_name,
    write_text_atomic,
)
from workbench.models.config import TRAIN_PRESETS, ModelConfig, TrainConfig, get_preset
from workbench.models.devices import resolve_device
from workbench.training.batches import TokenBatcher, eval_windows
from workbench.training.distributed import DistInfo, all_reduce_mean, barrier, setup_distributed
from workbench.training.fastgpt import FastGPT, from_bridge_state_dict, to_bridge_state_dict
from workbench.training.recipe import checkpoint_steps, lr_at, make_optimizer
from workbench.training.run_dir import (
    check_resume_args,
    copy_atomic,
    load_resume_state,
    metric_lines,
    prepare_run_dir,
    remove_leftovers,
)

log = logging.getLogger(__name__)
RUN_SCHEMA = "workbench.run/1"


def _finite(value: float) -> float | None:
    """A float as JSON can hold it: NaN or infinity (a loss not measured) as null."""
    return value if math.isfinite(value) else None


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            kind,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _as_float(value: Any) -> float:
    return float("nan") if value is None else float(value)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    final_val_loss: float
    tokens_per_s: float
    seconds: float


def train(
    model_cfg: ModelConfig | str,
    corpus_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    train_cfg: TrainConfig | None = None,
    *,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a native model on a corpus built by `workbench world build`.

    Args:
        model_cfg: a `ModelConfig` or a preset name (`tiny`, `attn2`, `default`, `small`).
        corpus_path: corpus directory.
        run_dir: output directory (refused when not empty unless `resume` or `overwrite`).
        train_cfg: optimisation settings (default: the preset's).
        device: `auto`, `cpu`, `cuda` or `cuda:N` (under torchrun: the local rank's GPU).
        resume: continue from the newest checkpoint whose training state loads; the result
            is identical to an uninterrupted run, whenever the run was killed. A finished
            run is left as it is (only a missing `training.fig.json` is written); a damaged
            training state with no earlier one to fall back to is refused. `run_dir` must
            exist and not be empty.
        overwrite: delete a non-empty `run_dir` first (not with `resume`).
        progress: show a progress bar (rank 0 only).
        on_step: called as `on_step(step, loss)` after each optimizer step (tests use it to
            interrupt a run).
    """
    run_dir = Path(run_dir)
    check_resume_args(run_dir, resume, overwrite)
    if isinstance(model_cfg, str):
        preset = model_cfg
        model_cfg = get_preset(preset)
        train_cfg = train_cfg or TRAIN_PRESETS[preset]
    train_cfg = train_cfg or TrainConfig()
    from workbench.world import load_corpus

    dist = setup_distributed(device)
    dev = dist.device if dist.enabled else resolve_device(device)
    corpus = load_corpus(Path(corpus_path))
    model_cfg = model_cfg.replace(d_vocab=corpus.vocab_size)
    run_info = {
        "schema": RUN_SCHEMA,
        "model": model_cfg.to_dict(),
        "train": asdict(train_cfg),
        "corpus": str(Path(corpus_path).resolve()),
        "corpus_id": {
            "vocab_size": corpus.vocab_size,
            "n_tokens_train": int(len(corpus.tokens("train"))),
        },
    }
    resuming = False
    if dist.is_main:
        resuming = prepare_run_dir(run_dir, run_info, resume, overwrite)
        if not (run_dir / "tokenizer.json").exists():
            copy_atomic(Path(corpus.tokenizer_path), run_dir / "tokenizer.json")
    resuming = bool(dist.broadcast_flag(resuming))
    return _Trainer(model_cfg, train_cfg, corpus, run_dir, dev, dist, progress, on_step).run(
        resuming
    )


class _Trainer:
    def __init__(
        self,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        corpus: Any,
        run_dir: Path,
        device: str,
        dist: DistInfo,
        progress: bool,
        on_step: Callable[[int, float], None] | None,
    ) -> None:
        self.model_cfg, self.cfg, self.corpus, self.run_dir = model_cfg, cfg, corpus, run_dir
        self.device, self.dist, self.progress, self.on_step = device, dist, progress, on_step
        self.batcher = TokenBatcher(
            corpus.tokens("train"), model_cfg.n_ctx, cfg.batch_size, cfg.seed
        )
        val_tokens = corpus.tokens("val")
        self.val = (
            eval_windows(val_tokens, model_cfg.n_ctx, cfg.eval_windows)
            if len(val_tokens) > model_cfg.n_ctx + 2
            else None
        )
        if self.val is None and dist.is_main:
            log.warning("the corpus's val split has %d tokens, fewer than one context of %d: "
                        "no validation loss is measured (recorded as null)", len(val_tokens),
                        model_cfg.n_ctx)
        self.ckpt_steps = checkpoint_steps(cfg)
        self.is_cuda = device.startswith("cuda")

    def _init_model(self) -> FastGPT:
        from workbench.models.loader import build_bridge  # start from TL's seeded initialisation

        torch.manual_seed(self.model_cfg.seed)
        model = FastGPT(self.model_cfg)
        bridge_sd = build_bridge(self.model_cfg).state_dict()
        model.load_state_dict(from_bridge_state_dict(bridge_sd, self.model_cfg))
        return model

    def _autocast(self) -> Any:
        if self.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    @torch.no_grad()
    def val_loss(self, model: FastGPT) -> float:
        if self.val is None:
            return float("nan")
        model.train(False)  # inference mode for the validation pass
        x, y = self.val
        losses = []
        for i in range(0, len(x), 16):
            with self._autocast():
                losses.append(
                    model.loss(x[i : i + 16].to(self.device), y[i : i + 16].to(self.device)).item()
                    * len(x[i : i + 16])
                )
        model.train()
        return sum(losses) / len(x)

    def save(
        self,
        model: FastGPT,
        opt: torch.optim.Optimizer,
        step: int,
        tokens: int,
        loss: float,
        val_loss: float,
        elapsed: float,
    ) -> None:
        sd = to_bridge_state_dict(model.state_dict(), self.model_cfg)
        train_state = {
            "step": step,
            "tokens_seen": tokens,
            "elapsed": elapsed,
            "optimizer": opt.state_dict(),
            "rng": _rng_state(),
        }
        meta = {
            "step": step,
            "tokens_seen": tokens,
            "train": asdict(self.cfg),
            "loss": _finite(loss),
            "val_loss": _finite(val_loss),
            "corpus": str(Path(self.corpus.path).resolve()),
        }
        out = self.run_dir / CHECKPOINTS_DIR / step_dir_name(step)
        save_checkpoint(
            out,
            sd,
            self.model_cfg,
            self.run_dir / "tokenizer.json",
            meta=meta,
            train_state=train_state,
            overwrite=True,
        )
        # Only the newest checkpoint keeps optimizer state (exact resume needs no more);
        # older ones keep their weights for the training-dynamics analyses.
        for old in list_checkpoints(self.run_dir):
            if old != out and (old / "train_state.pt").exists():
                (old / "train_state.pt").unlink()

    def _log(self, record: dict[str, Any]) -> None:
        record = {k: _finite(v) if isinstance(v, float) else v for k, v in record.items()}
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")

    def _resume_point(self) -> tuple[Checkpoint, dict[str, Any]]:
        """The newest checkpoint whose weights and training state load, and that state.

        Raises:
            ValueError: no checkpoint with a training state loads (naming the damaged files).
        """
        with_state = [c for c in list_checkpoints(self.run_dir) if (c / "train_state.pt").exists()]
        damaged = []
        for path in reversed(with_state):
            try:
                return load_resume_state(path)
            except ValueError as exc:
                log.warning("cannot resume from %s (%s); trying an earlier checkpoint", path, exc)
                damaged.append(str(exc))
        raise ValueError(
            f"cannot resume {self.run_dir}: "
            + ("; ".join(damaged) or "no checkpoint keeps a train_state.pt")
            + ", and no earlier checkpoint keeps a training state (a run keeps only its "
            "newest), so it cannot continue exactly; start it again with --overwrite "
            "(training is deterministic: it reproduces the same checkpoints)"
        )

    def _tidy(self, resume_from: Checkpoint | None) -> None:
        """Rank 0, before training: remove what a killed run left half-written; on a fresh
        start the metrics of a run killed before its first checkpoint; on resume the
        training states older than the one resumed from (a kill can leave two)."""
        remove_leftovers(self.run_dir)
        if resume_from is None:
            (self.run_dir / METRICS).unlink(missing_ok=True)
            return
        for old in list_checkpoints(self.run_dir):
            if old == resume_from.path:
                break
            (old / "train_state.pt").unlink(missing_ok=True)

    def _restore(
        self,
        model: FastGPT,
        opt: torch.optim.Optimizer,
        ckpt: Checkpoint,
        state: dict[str, Any],
    ) -> tuple[int, int, float, float, float]:
        """Load `ckpt` and `state` into the model, optimizer and RNGs; keep the metrics logged
        up to its step. Returns step, tokens seen, elapsed seconds, and the train and
        validation losses the run had at that step."""
        model.load_state_dict(from_bridge_state_dict(ckpt.state_dict, self.model_cfg))
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        step = int(state["step"])
        if self.dist.is_main:  # a checkpoint is saved after its step's records are logged
            path = self.run_dir / METRICS
            keep = [line for line, r in metric_lines(path) if r["step"] <= step]
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in keep))
            os.replace(tmp, path)
        log.info("resuming %s from step %d", self.run_dir, step)
        return (
            step,
            int(state["tokens_seen"]),
            float(state.get("elapsed", 0.0)),
            _as_float(ckpt.meta.get("loss")),
            _as_float(ckpt.meta.get("val_loss")),
        )

    def _write_figure(self) -> None:
        from workbench.plots import training_figure

        fig = training_figure(self.run_dir / METRICS)
        write_text_atomic(self.run_dir / TRAINING_FIGURE, fig.to_json())

    def _finished(self, ckpt: Checkpoint, state: dict[str, Any]) -> TrainResult:
        """The result of a run that already reached its last step, read from its files;
        only a missing figure (a kill just before it was written) is written."""
        if self.dist.is_main and not (self.run_dir / TRAINING_FIGURE).exists():
            self._write_figure()
        self.dist.shutdown()
        records = [r for _, r in metric_lines(self.run_dir / METRICS)]
        tok_s = next(
            (float(r["tokens_per_s"]) for r in reversed(records) if "tokens_per_s" in r),
            float("nan"),
        )
        log.info("%s finished at step %d already: nothing to resume", self.run_dir, self.cfg.steps)
        return TrainResult(
            self.run_dir,
            int(state["step"]),
            _as_float(ckpt.meta.get("loss")),
            _as_float(ckpt.meta.get("val_loss")),
            tok_s,
            float(state.get("elapsed", 0.0)),
        )

    def _eval_and_save(
        self,
        model: FastGPT,
        opt: torch.optim.Optimizer,
        step: int,
        tokens: int,
        losses: tuple[float, float],
        elapsed: float,
    ) -> float:
        """At an eval or checkpoint step: validate, log, save. Returns the validation loss."""
        loss_val, val_loss = losses
        if self.dist.is_main and (step % self.cfg.eval_interval == 0 or step == self.cfg.steps):
            val_loss = self.val_loss(model)
            self._log({"step": step, "val_loss": val_loss, "tokens": tokens})
        if self.dist.is_main and step in self.ckpt_steps:
            self.save(model, opt, step, tokens, loss_val, val_loss, elapsed)
        barrier(self.dist)
        return val_loss

    def run(self, resuming: bool) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        resume_from = self._resume_point() if resuming else None
        if dist.is_main:
            self._tidy(resume_from[0] if resume_from else None)
        if resume_from is not None and int(resume_from[1]["step"]) >= cfg.steps:
            return self._finished(*resume_from)
        model = self._init_model()
        opt = make_optimizer(model, cfg)
        step, tokens, elapsed = 0, 0, 0.0
        loss_val, val_loss = float("nan"), float("nan")
        if resume_from is not None:
            step, tokens, elapsed, loss_val, val_loss = self._restore(model, opt, *resume_from)
        resumed_at = step if resume_from is not None else -1  # its checkpoint exists already
        model.to(self.device)
        _optimizer_to(opt, self.device)
        model.train()
        ddp_model = dist.wrap(model)
        tokens_per_step = cfg.batch_size * self.model_cfg.n_ctx
        bar = tqdm(
            total=cfg.steps,
            initial=step,
            disable=not (self.progress and dist.is_main),
            desc=f"train {self.run_dir.name}",
            unit="step",
            mininterval=0.2 if sys.stderr.isatty() else 10.0,
            dynamic_ncols=True,
        )
        window_t, window_tokens = time.time(), 0
        start = time.time() - elapsed
        tok_s = 0.0
        while True:
            at_event = step in self.ckpt_steps or step % cfg.eval_interval == 0
            if step != resumed_at and (at_event or step == cfg.steps):
                val_loss = self._eval_and_save(
                    model, opt, step, tokens, (loss_val, val_loss), time.time() - start
                )
            if step >= cfg.steps:
                break
            x, y = self.batcher.batch(step, dist.rank, dist.world_size)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            with self._autocast():
                loss = _loss(ddp_model, x, y)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += tokens_per_step
            window_tokens += tokens_per_step
            if self.on_step is not None:
                self.on_step(step, float(loss.item()))
            if step % cfg.log_interval == 0 or step == cfg.steps:
                loss_val = all_reduce_mean(dist, loss.detach().float()).item()
                now = time.time()
                if self.is_cuda:
                    torch.cuda.synchronize()
                tok_s = window_tokens / max(now - window_t, 1e-9)
                window_t, window_tokens = now, 0
                if dist.is_main:
                    self._log(
                        {
                            "step": step,
                            "loss": loss_val,
                            "lr": lr_at(step - 1, cfg),
                            "grad_norm": float(grad_norm),
                            "tokens": tokens,
                            "tokens_per_s": tok_s,
                            "elapsed": now - start,
                        }
                    )
                bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tok_s:,.0f}")
            bar.update(1)
        bar.close()
        seconds = time.time() - start
        if dist.is_main:
            self._write_figure()
        dist.shutdown()
        return TrainResult(self.run_dir, step, loss_val, val_loss, tok_s, seconds)


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1)
    )


def _optimizer_to(opt: torch.optim.Optimizer, device: str) -> None:
    for state in opt.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)
