"""Training a dictionary on stored activations: resumable, with progress, kill -9 safe.

`train_dictionary(sources, cfg, out)` trains on rows from `features.stream.RowStream`:

- inputs (and a transcoder's targets) are scaled so that their mean norm is `sqrt(width)`
  (SAELens' `expected_average_only_in`), estimated on the first buffer; the scales are folded
  into the saved weights, which read raw activations;
- the loss is the fraction of variance unexplained (FVU) plus, by architecture: TopK and
  BatchTopK the AuxK term (dead latents reconstruct the residual; Gao et al. 2024),
  Matryoshka the same with the FVU averaged over nested prefixes of the latents (the first
  `d_sae / 2**j` of them, `MATRYOSHKA_PREFIXES`, each reconstructing alone), ReLU
  `sparsity * sum(f)` (decoder rows are unit norm, so this is Anthropic's norm-weighted L1),
  JumpReLU `sparsity * L0` through the straight-through estimator;
- Adam; the learning rate warms up over 1 % of the steps and decays linearly to 0 over the
  last 20 %; decoder rows are kept at unit norm;
- a checkpoint (weights, Adam state, step, scales, firing record) is written atomically every
  `ckpt_every` steps into `OUT.partial/`; `resume=True` continues from it to what an
  uninterrupted run writes; the finished dictionary is renamed to `OUT`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from features.dictionary import ARCHS, BATCH_TOPK, Dictionary, DictionaryConfig, _JumpStep
from features.io import save_dictionary
from features.stream import RowStream
from workbench.models.checkpoints import write_json_atomic

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.safetensors"
STATE = "checkpoint.json"
CURVE = "training.jsonl"
LR_2048 = 8e-3
"""Adam's rate for 2,048 latents. Gao et al.'s `2e-4 * sqrt(16384 / d_sae)` (5.7e-4 here)
left the default model's decoder rows at a median cosine of 0.78 with their random start
after 10M rows (FVU 0.028 all the same: 2,048 random directions in 128 dimensions span it);
8e-3 moved them to 0.67 within 2M rows at a lower FVU (0.024)."""
MATRYOSHKA_PREFIXES = 6
"""Matryoshka's nested prefixes: the first `d_sae / 32`, `/ 16`, ..., `/ 2` latents and all of
them (fewer for small dictionaries: a prefix has at least `k` latents)."""
SPARSITY = {"relu": 0.1, "jumprelu": 0.05}
"""Default sparsity coefficients (in FVU units per unit of L1 / L0) on the default model."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train a dictionary.

    Args:
        arch: `topk`, `batchtopk`, `matryoshka`, `relu` or `jumprelu`.
        expansion: latents per input dimension (`d_sae = expansion * d_in`).
        k: active latents per row (TopK, BatchTopK, Matryoshka).
        sparsity: the L1 (ReLU) or L0 (JumpReLU) coefficient (None: `SPARSITY`'s).
        tokens: rows to train on (more than the file holds: several epochs).
        batch_size: rows per step.
        lr: Adam's learning rate (None: `LR_2048 * sqrt(2048 / d_sae)`, Gao et al.'s scaling
            with their constant raised for budgets of millions of rows, not billions).
        seed: initialisation and row order.
        aux_k: dead latents AuxK uses (None: `d_in // 2`); `aux_coeff` its weight.
        dead_rows: a latent that has not fired for this many rows is dead.
        ckpt_every: steps between checkpoints; `log_every` between curve points.
    """

    arch: str = "topk"
    expansion: int = 16
    k: int = 32
    sparsity: float | None = None
    tokens: int = 10_000_000
    batch_size: int = 4096
    lr: float | None = None
    seed: int = 0
    aux_k: int | None = None
    aux_coeff: float = 1 / 32
    dead_rows: int = 2_000_000
    ckpt_every: int = 200
    log_every: int = 20

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"--arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        if not 1 <= self.expansion <= 256:
            raise ValueError(f"--expansion {self.expansion} is out of range: pass 1 to 256")
        if self.tokens < self.batch_size:
            raise ValueError(f"--tokens {self.tokens} is less than one batch ({self.batch_size})")

    @property
    def steps(self) -> int:
        return self.tokens // self.batch_size

    def coefficient(self) -> float:
        return self.sparsity if self.sparsity is not None else SPARSITY.get(self.arch, 0.0)


def dictionary_config(cfg: TrainConfig, d_in: int, d_out: int | None) -> DictionaryConfig:
    """The dictionary `cfg` trains on inputs of width `d_in` (`d_out`: a transcoder's)."""
    d_sae = cfg.expansion * d_in
    if cfg.arch in ("topk", *BATCH_TOPK) and not 1 <= cfg.k <= d_sae:
        raise ValueError(f"--k {cfg.k} is out of range: pass 1 <= k <= {d_sae} (the latents, "
                         f"{cfg.expansion} x {d_in})")
    return DictionaryConfig(arch=cfg.arch, d_in=d_in, d_sae=d_sae, k=cfg.k, d_out=d_out,
                            transcoder=d_out is not None)


def fvu(x_hat: Tensor, y: Tensor) -> Tensor:
    """Fraction of variance unexplained: squared error over the batch's total variance."""
    return (x_hat - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)


def prefixes(d_sae: int, k: int) -> list[int]:
    """Matryoshka's nested prefix sizes, ascending, ending at `d_sae`."""
    sizes = {d_sae >> j for j in range(MATRYOSHKA_PREFIXES)}
    return sorted(m for m in sizes if m >= k) or [d_sae]


def nested_fvu(d: Dictionary, f: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The FVU of each nested prefix's reconstruction, averaged, and the full
    reconstruction: groups decoded once and summed cumulatively."""
    sizes = prefixes(d.cfg.d_sae, d.cfg.k)
    x_hat = d.b_dec.expand(len(f), -1)
    total = f.new_zeros(())
    start = 0
    for end in sizes:
        x_hat = x_hat + f[:, start:end] @ d.W_dec[start:end]
        total = total + fvu(x_hat, y)
        start = end
    return total / len(sizes), x_hat


def _scale(x: Tensor) -> float:
    return math.sqrt(x.shape[-1]) / float(x.norm(dim=-1).mean().clamp_min(1e-12))


def _lr_at(step: int, steps: int, lr: float) -> float:
    warm = max(1, steps // 100)
    if step < warm:
        return lr * (step + 1) / warm
    decay_from = int(steps * 0.8)
    if step >= decay_from:
        return lr * max(0.0, (steps - step) / max(1, steps - decay_from))
    return lr


def _sparsify() -> tuple[Any, Any]:
    """eai-sparsify's TopK encoder (dense forward, backward through the selected latents
    only) and its sparse decoder (an embedding bag); it announces its decoder on import."""
    with contextlib.redirect_stdout(io.StringIO()):
        from sparsify.fused_encoder import fused_encoder
        from sparsify.utils import eager_decode
    return fused_encoder, eager_decode


def _topk_forward(d: Dictionary, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """TopK latents (values, indices) and reconstruction through sparsify's kernels."""
    fused_encoder, eager_decode = _sparsify()
    sae_in = x - d.b_dec if d.apply_b_dec_to_input else x
    values, indices, pre = fused_encoder(sae_in, d.W_enc.T, d.b_enc, d.cfg.k, "topk")
    x_hat = eager_decode(indices, values.to(d.W_dec.dtype), d.W_dec.T) + d.b_dec  # [d, M]
    return values.detach(), indices, x_hat


def losses(d: Dictionary, x: Tensor, y: Tensor, cfg: TrainConfig, since_fired: Tensor
           ) -> tuple[Tensor, dict[str, float], Tensor]:
    """The training loss on one batch, its parts, and which latents fired."""
    if cfg.arch == "topk":
        values, indices, x_hat = _topk_forward(d, x)
        fired = torch.zeros(d.cfg.d_sae, dtype=torch.bool)
        fired[indices[values > 0]] = True
        l0 = float((values > 0).sum(-1).float().mean())
    else:
        pre = d.pre_acts(x)
        f = d.activate(pre, train=True)
        if cfg.arch == "matryoshka":  # the prefixes' sum is the whole reconstruction
            nested, x_hat = nested_fvu(d, f, y)
        else:
            x_hat = d.decode(f)
        fired = (f > 0).any(0)
        l0 = float((f > 0).sum(-1).float().mean())
    main = fvu(x_hat, y)
    parts = {"fvu": float(main.detach())}
    loss = main
    if cfg.arch == "matryoshka":
        loss = nested
        parts["nested_fvu"] = float(nested.detach())
    if cfg.arch in ("topk", *BATCH_TOPK):
        dead = torch.nonzero(since_fired >= cfg.dead_rows)[:, 0]
        if len(dead):
            # the dead latents' pre-activations (encoder and decoder both learn from AuxK)
            sae_in = x - d.b_dec.detach() if d.apply_b_dec_to_input else x
            pre_dead = sae_in @ d.W_enc[:, dead] + d.b_enc[dead]
            top = pre_dead.topk(min(len(dead), cfg.aux_k or d.cfg.d_in // 2), dim=-1)
            e_hat = torch.nn.functional.embedding_bag(
                dead[top.indices], d.W_dec, per_sample_weights=torch.relu(top.values),
                mode="sum")
            aux = fvu(e_hat, (y - x_hat).detach())
            loss = loss + cfg.aux_coeff * torch.nan_to_num(aux, nan=0.0)
            parts["aux"] = float(aux.detach())
        if cfg.arch in BATCH_TOPK:
            active = f[f > 0]
            if active.numel():
                low = float(active.detach().min())
                old = float(d.batch_threshold)
                d.batch_threshold.fill_(low if old < 0 else 0.99 * old + 0.01 * low)
    elif cfg.arch == "relu":
        l1 = f.sum(-1).mean()
        loss = loss + cfg.coefficient() * l1
        parts["l1"] = float(l1.detach())
    else:
        smooth_l0 = _JumpStep.apply(pre, d.threshold.clamp_min(1e-6)).sum(-1).mean()
        loss = loss + cfg.coefficient() * smooth_l0
    parts["l0"] = l0
    return loss, parts, fired


def _save_checkpoint(partial: Path, d: Dictionary, opt: torch.optim.Optimizer, step: int,
                     scales: tuple[float, float], since_fired: Tensor) -> None:
    tensors = {f"param.{k}": v.detach().contiguous() for k, v in d.state_dict().items()}
    names = {id(p): n for n, p in d.named_parameters()}
    for p, state in opt.state.items():
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[f"adam.{names[id(p)]}.{key}"] = state[key].contiguous()
    tensors["since_fired"] = since_fired
    tmp = partial / (CHECKPOINT + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, partial / CHECKPOINT)
    write_json_atomic(partial / STATE, {"step": step, "scale_in": scales[0],
                                        "scale_out": scales[1]})


def _load_checkpoint(partial: Path, d: Dictionary, opt: torch.optim.Optimizer
                     ) -> tuple[int, tuple[float, float], Tensor] | None:
    if not (partial / STATE).exists():
        return None
    state = json.loads((partial / STATE).read_text())
    tensors = load_file(str(partial / CHECKPOINT))
    d.load_state_dict({k[len("param."):]: v for k, v in tensors.items()
                       if k.startswith("param.")})
    for name, p in d.named_parameters():
        if f"adam.{name}.exp_avg" in tensors:
            opt.state[p] = {"step": torch.tensor(float(state["step"])),
                            "exp_avg": tensors[f"adam.{name}.exp_avg"],
                            "exp_avg_sq": tensors[f"adam.{name}.exp_avg_sq"]}
    return int(state["step"]), (state["scale_in"], state["scale_out"]), tensors["since_fired"]


def _curve(partial: Path, upto: int) -> list[dict[str, Any]]:
    """The curve points written before step `upto` (those after a checkpoint are redone)."""
    path = partial / CURVE
    if not path.exists():
        return []
    points = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [p for p in points if p["step"] < upto]


def train_dictionary(sources: Sequence[Any], cfg: TrainConfig, out: str | os.PathLike[str], *,
                     meta: dict[str, Any], resume: bool = False, progress: bool = True
                     ) -> dict[str, Any]:
    """Train on `sources` (`[inputs]` or `[inputs, targets]`: arrays or HDF5 datasets) and
    save the dictionary to `out` (`features.io`); returns its final metrics.

    Args:
        meta: recorded in `workbench.json` (model, checksum, hook, target, corpus, split).
        resume: continue from the checkpoint in `OUT.partial/` (else it must not exist).
    """
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    stream = RowStream(sources, cfg.batch_size, cfg.seed)
    d_in = int(sources[0].shape[-1])
    d_out = int(sources[1].shape[-1]) if len(sources) > 1 else None
    dcfg = dictionary_config(cfg, d_in, d_out)
    torch.manual_seed(cfg.seed)
    d = Dictionary(dcfg, generator=torch.Generator().manual_seed(cfg.seed))
    lr = cfg.lr or LR_2048 * math.sqrt(2048 / dcfg.d_sae)
    opt = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=lr)
    since_fired = torch.zeros(dcfg.d_sae)
    partial.mkdir(parents=True, exist_ok=True)
    loaded = _load_checkpoint(partial, d, opt) if resume else None
    if loaded is not None:
        start, scales, since_fired = loaded
    else:
        start = 0
        sample = [torch.cat(parts) for parts in
                  zip(*[b for _, b in zip(range(16), stream.batches(0))])]
        x0, y0 = sample[0], sample[-1]
        scales = (_scale(x0), _scale(y0) if d_out is not None else _scale(x0))
        with torch.no_grad():  # the decoder bias starts at the (scaled) mean output
            d.b_dec.copy_((y0 * scales[1]).mean(0))
    curve = _curve(partial, start)
    t0, rows_done = time.perf_counter(), 0
    bar = tqdm(total=cfg.steps, initial=start, desc=f"sae {dcfg.arch}", unit="step",
               disable=not progress)
    batches = stream.batches(start)
    parts: dict[str, float] = {}
    for step in range(start, cfg.steps):
        batch = next(batches)
        x = batch[0] * scales[0]
        y = batch[-1] * scales[1] if d_out is not None else x
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.steps, lr)
        loss, parts, fired = losses(d, x, y, cfg, since_fired)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        d.remove_parallel_grads()
        opt.step()
        d.normalize_decoder()
        since_fired = torch.where(fired, torch.zeros_like(since_fired),
                                  since_fired + len(x))
        rows_done += len(x)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            curve.append({"step": step, "tokens": (step + 1) * cfg.batch_size,
                          "loss": round(float(loss.detach()), 6), **{k: round(v, 6) for k, v in
                                                            parts.items()},
                          "dead": int((since_fired >= cfg.dead_rows).sum())})
            bar.set_postfix(fvu=f"{parts['fvu']:.3f}", l0=f"{parts['l0']:.1f}")
        if (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.steps:
            _write_curve(partial, curve)
            _save_checkpoint(partial, d, opt, step + 1, scales, since_fired)
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - t0
    final = {"fvu": parts.get("fvu"), "l0": parts.get("l0"),
             "dead": int((since_fired >= cfg.dead_rows).sum()),
             "steps": cfg.steps, "tokens": cfg.steps * cfg.batch_size,
             "rows_per_s": round(rows_done / max(elapsed, 1e-9), 1),
             "scale_in": scales[0], "scale_out": scales[1]}
    initial = Dictionary(dcfg, generator=torch.Generator().manual_seed(cfg.seed)).W_dec
    with torch.no_grad():
        moved = torch.nn.functional.cosine_similarity(d.W_dec, initial, dim=-1)
    final["init_cosine_median"] = round(float(moved.median()), 4)
    folded = d.folded(scales[0], scales[1] if d_out is not None else scales[0])
    _write_curve(partial, curve)
    save_dictionary(folded, partial, {**meta, "train": asdict(cfg), "lr": lr, "final": final})
    _write_figure(partial, curve)
    for name in (CHECKPOINT, STATE):
        (partial / name).unlink(missing_ok=True)
    for child in partial.iterdir():
        if child.suffix == ".h5":  # activations made for this training only
            child.unlink()
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    return final


def _write_curve(partial: Path, curve: list[dict[str, Any]]) -> None:
    tmp = partial / (CURVE + ".tmp")
    tmp.write_text("".join(json.dumps(p) + "\n" for p in curve))
    os.replace(tmp, partial / CURVE)


def _write_figure(partial: Path, curve: list[dict[str, Any]]) -> None:
    from features.figures import training_figure
    from workbench.analysis import write_figure

    write_figure(training_figure(curve), partial / "training.fig.json")
