"""Caching under torchrun: per-rank shards joined by an h5py virtual dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from workbench.cache.store import ActivationStore
from workbench.training.trainer import TrainResult


@pytest.mark.slow
def test_two_rank_cache_equals_single_process(tiny_run: TrainResult, world_corpus: Path,
                                              tmp_path: Path) -> None:
    args = ["-m", "workbench.cli.core", "cache", "--model", str(tiny_run.run_dir), "--corpus",
            str(world_corpus), "--hooks", "blocks.*.hook_resid_post", "--max-tokens", "3000",
            "--chunk", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, joined = tmp_path / "single.h5", tmp_path / "joined.h5"
    subprocess.run([sys.executable, *args, "--out", str(single)], check=True, env=env,
                   timeout=600)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=2", *args, "--out", str(joined)], check=True, env=env,
                   timeout=600)
    assert (tmp_path / "joined.rank0.h5").exists() and (tmp_path / "joined.rank1.h5").exists()
    with h5py.File(joined, "r") as f:
        assert f["blocks.0.hook_resid_post"].is_virtual
    with ActivationStore(single) as a, ActivationStore(joined) as b:
        assert len(a) == len(b) == 3000
        for hook in a.hooks:
            # batches differ in padding width across ranks: equal up to float rounding
            np.testing.assert_allclose(a.get(hook).numpy(), b.get(hook).numpy(), atol=1e-5)
        for key in ("seq", "doc", "pos", "offset", "token"):
            assert np.array_equal(a.meta(key), b.meta(key))
        for key, value in a.labels().items():
            assert np.array_equal(value, b.labels()[key])
