"""A tiny model trained on the world: what it learns, exact resume, checkpoints, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from workbench.evaluate import EvalConfig, evaluate
from workbench.models.checkpoints import list_checkpoints, load_checkpoint
from workbench.models.config import TrainConfig
from workbench.models.loader import load
from workbench.training.fastgpt import FastGPT, from_bridge_state_dict
from workbench.training.trainer import TrainResult, train
from workbench.world import load_corpus


def test_tiny_model_learns_facts_agreement_and_copying(
    tiny_run: TrainResult, world_corpus: Path
) -> None:
    model = load(tiny_run.run_dir)
    results = evaluate(
        model,
        load_corpus(world_corpus),
        EvalConfig(max_fact_items=300, max_agreement_items=300),
        progress=False,
    )
    m = {k: v["value"] for k, v in results["metrics"].items()}
    # Looser than the `default` goals (0.9 / 0.9 / 0.9 / 0.5): `tiny` trains for ~40 s.
    # Measured at seed 0: 0.987 / 0.977 / 0.727 / 0.187.
    assert m["fact_recall_train"] >= 0.8, m
    assert m["fact_recall_heldout"] >= 0.7, m
    assert m["agreement"] >= 0.6, m
    assert m["induction_ratio"] <= 0.5, m
    held = results["metrics"]["fact_recall_heldout"]
    assert set(held["by_bucket"]) == {"low", "mid", "high"}  # split by planted exposure
    assert sum(b["n"] for b in held["by_bucket"].values()) == held["n"]
    assert "country" in held["by_relation"] and results["metrics"]["country_stated"]["n"] > 0
    assert results["metrics"]["fact_recall_twohop"]["n"] > 0
    assert "goal" not in results["metrics"]["fact_recall_twohop"]  # a measurement, no bar


def test_run_directory_layout(tiny_run: TrainResult) -> None:
    run = tiny_run.run_dir
    steps = [int(p.name[5:]) for p in list_checkpoints(run)]
    assert steps == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 500, 512, 1000, 1024, 1500, 2000]
    assert (run / "training.fig.json").is_file() and (run / "tokenizer.json").is_file()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] - 2.0
    assert {"tokens_per_s", "lr", "grad_norm"} <= set(records[-1]) | set(records[-2])
    # only the newest checkpoint keeps optimizer state
    assert [p.name for p in list_checkpoints(run) if (p / "train_state.pt").exists()] == [
        "step_002000"
    ]


def test_checkpoint_bridge_equals_training_model(tiny_run: TrainResult) -> None:
    ckpt = load_checkpoint(list_checkpoints(tiny_run.run_dir)[-1])
    fast = FastGPT(ckpt.model_cfg)
    fast.load_state_dict(from_bridge_state_dict(ckpt.state_dict, ckpt.model_cfg))
    a, b = load(tiny_run.run_dir), load(tiny_run.run_dir)
    tokens = a.to_tokens("anna lives in")
    with torch.no_grad():
        assert torch.equal(a(tokens), b(tokens))  # bit-identical reloads
        torch.testing.assert_close(a(tokens), fast(tokens), atol=1e-4, rtol=1e-4)


def _short(**kw: object) -> TrainConfig:
    base = dict(
        steps=12,
        batch_size=4,
        warmup_steps=3,
        eval_interval=5,
        ckpt_interval=5,
        eval_windows=4,
        log_interval=2,
    )
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_interrupted_and_resumed_run_equals_uninterrupted(
    world_corpus: Path, tmp_path: Path
) -> None:
    full = train("tiny", world_corpus, tmp_path / "full", _short(), device="cpu", progress=False)

    def crash(step: int, loss: float) -> None:
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            "tiny",
            world_corpus,
            tmp_path / "cut",
            _short(),
            device="cpu",
            progress=False,
            on_step=crash,
        )
    assert list_checkpoints(tmp_path / "cut")[-1].name == "step_000005"
    resumed = train(
        "tiny", world_corpus, tmp_path / "cut", _short(), device="cpu", progress=False, resume=True
    )
    assert resumed.steps == full.steps == 12
    a = load_checkpoint(list_checkpoints(tmp_path / "full")[-1]).state_dict
    b = load_checkpoint(list_checkpoints(tmp_path / "cut")[-1]).state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    full_metrics = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert [m["step"] for m in metrics] == [json.loads(x)["step"] for x in full_metrics]


def test_resume_with_a_different_config_is_refused(world_corpus: Path, tmp_path: Path) -> None:
    train("tiny", world_corpus, tmp_path / "r", _short(steps=3), device="cpu", progress=False)
    with pytest.raises(
        ValueError,
        match=r"--resume with a different config .*train.lr: "
        r"0.002 -> 0.001",
    ):
        train(
            "tiny",
            world_corpus,
            tmp_path / "r",
            _short(steps=3).replace(lr=1e-3),
            device="cpu",
            progress=False,
            resume=True,
        )


def test_non_empty_run_dir_needs_overwrite(world_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"is not empty; pass --resume .* or --overwrite"):
        train("tiny", world_corpus, run, _short(steps=2), device="cpu", progress=False)
    assert (run / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="refusing to overwrite .* no run.json"):
        train("tiny", world_corpus, run, _short(steps=2), device="cpu", progress=False,
              overwrite=True)  # not a run of ours: --overwrite deletes nothing
    assert (run / "notes.txt").read_text() == "keep me"
    (run / "notes.txt").unlink()
    train("tiny", world_corpus, run, _short(steps=2), device="cpu", progress=False)
    (run / "eval.json").write_text("{}")  # a run of ours, with what our tools write there
    train("tiny", world_corpus, run, _short(steps=2), device="cpu", progress=False, overwrite=True)
    assert not (run / "eval.json").exists()  # replaced by a fresh run


def test_truncated_checkpoint_of_a_run(tiny_run: TrainResult, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(tiny_run.run_dir, run)
    weights = list_checkpoints(run)[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load(run)
