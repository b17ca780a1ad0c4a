"""Integration fixtures: a small world corpus and a `tiny` model trained on it, once per
session, in a temporary directory. Treat them as read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.train import TRAIN_PRESETS, TrainResult, train
from workbench.world import WorldConfig, build_corpus

# Small enough to build in a second, large enough for `tiny` to learn facts in ~40 s.
WORLD = WorldConfig(seed=0, n_people=24)
N_TOKENS = 400_000


@pytest.fixture(scope="session")
def world_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "world"
    return Path(build_corpus(WORLD, out, n_tokens_train=N_TOKENS, progress=False))


@pytest.fixture(scope="session")
def tiny_run(world_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    return train("tiny", world_corpus, run, TRAIN_PRESETS["tiny"], device="cpu", progress=False)
