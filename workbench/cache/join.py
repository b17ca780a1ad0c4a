"""Sharded caching under `torchrun`: each rank caches a contiguous share of the sequences
to `OUT.rankR.h5`; rank 0 then writes `OUT` whose datasets are h5py virtual datasets
joining the shards in order, so reading `OUT` equals reading a single-process cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import torch.distributed as tdist

from workbench.cache.store import CacheConfig, cache_activations

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus


def shard_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.stem}.rank{rank}{out.suffix}")


def join_shards(out: Path, shards: list[Path], *, overwrite: bool = False) -> Path:
    """Write `out` with virtual datasets that concatenate `shards` (paths kept relative)."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    files = [h5py.File(p, "r") for p in shards]
    try:
        names: list[str] = []
        files[0].visit(lambda n: names.append(n) if isinstance(files[0][n], h5py.Dataset)
                       else None)
        tmp = out.with_name(out.name + ".partial")
        with h5py.File(tmp, "w", libver="latest") as f:
            for key, value in files[0].attrs.items():
                f.attrs[key] = value
            total = sum(int(s.attrs["n_rows"]) for s in files)
            f.attrs.update({"n_rows": total, "n_done": total, "shard": json.dumps([0, 1]),
                            "shards": json.dumps([p.name for p in shards])})
            for name in names:
                first = files[0][name]
                layout = h5py.VirtualLayout(shape=(total, *first.shape[1:]), dtype=first.dtype)
                lo = 0
                for path, src in zip(shards, files):
                    n = src[name].shape[0]
                    if n:
                        # relative to the joined file's directory, so the set can be moved
                        layout[lo: lo + n] = h5py.VirtualSource(
                            os.path.relpath(path, out.parent), name, shape=src[name].shape)
                    lo += n
                f.create_virtual_dataset(name, layout, fillvalue=0)
        os.replace(tmp, out)
    finally:
        for s in files:
            s.close()
    return out


def cache_sharded(model: Model, corpus: Corpus, cfg: CacheConfig, out: Path, *, model_ref: str,
                  resume: bool, overwrite: bool, progress: bool) -> Path:
    """Cache this rank's shard, then (rank 0) join all shards into `out`."""
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if not tdist.is_initialized():
        tdist.init_process_group(backend="gloo")
    try:
        mine = shard_path(out, rank)
        if not (resume and mine.exists()):
            cache_activations(model, corpus, cfg, mine, model_ref=model_ref, resume=resume,
                              overwrite=overwrite, progress=progress and rank == 0,
                              shard=(rank, world_size))
        tdist.barrier()
        if rank == 0:
            join_shards(out, [shard_path(out, r) for r in range(world_size)],
                        overwrite=overwrite)
        tdist.barrier()
    finally:
        tdist.destroy_process_group()
    return out
