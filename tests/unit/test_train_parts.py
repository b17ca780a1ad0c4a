"""Trainer building blocks: schedule, checkpoint steps, deterministic batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.models.config import TrainConfig
from workbench.training.batches import TokenBatcher, eval_windows
from workbench.training.recipe import checkpoint_steps, lr_at


def test_warmup_then_cosine() -> None:
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(0.55e-3)
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    lrs = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_checkpoints_are_log_spaced_and_periodic() -> None:
    steps = checkpoint_steps(TrainConfig(steps=1000, ckpt_interval=300))
    assert sorted(steps) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 512, 600, 900, 1000]


def test_batches_depend_only_on_step_and_seed() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    a, b = TokenBatcher(tokens, 16, 8, seed=3), TokenBatcher(tokens, 16, 8, seed=3)
    xa, ya = a.batch(7)
    xb, yb = b.batch(7)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(xa[:, 1:], ya[:, :-1])  # targets are inputs shifted by one
    assert not torch.equal(a.batch(8)[0], xa)
    assert not torch.equal(TokenBatcher(tokens, 16, 8, seed=4).batch(7)[0], xa)


def test_ranks_split_the_global_batch() -> None:
    batcher = TokenBatcher(np.arange(5_000, dtype=np.int32), 8, 6)
    full, _ = batcher.batch(2)
    parts = [batcher.batch(2, rank=r, world_size=3)[0] for r in range(3)]
    assert torch.equal(torch.cat(parts), full)
    with pytest.raises(ValueError, match="batch_size 6 is not divisible by world size 4"):
        batcher.batch(2, rank=0, world_size=4)


def test_too_short_streams_are_refused() -> None:
    with pytest.raises(ValueError, match=r"token stream has 10 tokens, fewer than n_ctx \+ 2"):
        TokenBatcher(np.arange(10), 16, 2)
    with pytest.raises(ValueError, match="validation split has 10 tokens"):
        eval_windows(np.arange(10), 16, 4)


def test_train_config_validation() -> None:
    with pytest.raises(ValueError, match=r"TrainConfig.lr=5; use a learning rate in \(0, 1\)"):
        TrainConfig(lr=5)
    with pytest.raises(ValueError, match="TrainConfig.steps=0"):
        TrainConfig(steps=0)


def test_a_corpus_without_validation_tokens_records_null_not_nan(tmp_path, caplog) -> None:
    """metrics.jsonl and the checkpoints stay valid JSON: the val loss that cannot be
    measured is null (it was a bare NaN), and the trainer says why once."""
    import json
    import logging

    from workbench.models.config import get_preset
    from workbench.training.trainer import train
    from workbench.world import build_text_corpus, load_corpus

    src = tmp_path / "t.txt"
    src.write_text("\n\n".join(f"line {i} of a short text with words" for i in range(60)))
    corpus = build_text_corpus([src], tmp_path / "c", vocab_size=300, progress=False)
    assert len(load_corpus(corpus).tokens("val")) < 34  # under one context of 32 (+2)
    with caplog.at_level(logging.WARNING):
        result = train(get_preset("tiny").replace(n_ctx=32), corpus, tmp_path / "run",
                       TrainConfig(steps=2, batch_size=2, warmup_steps=0, eval_interval=1,
                                   log_interval=1, ckpt_interval=2), device="cpu",
                       progress=False)
    assert "no validation loss is measured" in caplog.text

    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    records = [strict(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
               .splitlines()]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    assert vals and all(v is None for v in vals)
    config = strict((tmp_path / "run" / "checkpoints" / "step_000002" / "config.json")
                    .read_text())
    assert config["val_loss"] is None and result.steps == 2
