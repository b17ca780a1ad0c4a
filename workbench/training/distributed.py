"""Data parallelism under `torchrun`: gloo on CPU, NCCL on GPU.

Outside torchrun (no `WORLD_SIZE` > 1 in the environment) everything here is a no-op,
so the trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from workbench.models.devices import resolve_device


@dataclass
class DistInfo:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """`DistributedDataParallel(model)` when distributed, else `model`."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.startswith("cuda") else None
        return DistributedDataParallel(model, device_ids=ids)

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's value of `flag` on every rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        tdist.broadcast(t, src=0)
        return bool(t.item())

    def shutdown(self) -> None:
        if self.enabled and tdist.is_initialized():
            tdist.barrier()
            tdist.destroy_process_group()


def setup_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun with more than one process.

    Args:
        device: `auto`, `cpu` or `cuda`; with CUDA each rank uses `cuda:LOCAL_RANK`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.startswith("cuda"):
        resolved = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    return DistInfo(True, rank, world_size, local_rank, resolved)


def barrier(dist: DistInfo) -> None:
    if dist.enabled:
        tdist.barrier()


def all_reduce_mean(dist: DistInfo, value: torch.Tensor) -> torch.Tensor:
    """Mean of a scalar tensor over ranks (the value itself when not distributed)."""
    if not dist.enabled:
        return value
    value = value.clone()
    tdist.all_reduce(value, op=tdist.ReduceOp.SUM)
    return value / dist.world_size


def shard_of_this_process() -> tuple[int, int]:
    """`(RANK, WORLD_SIZE)` under torchrun, `(0, 1)` otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
