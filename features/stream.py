"""Shuffled training rows from an activation file (or the same rows in memory).

Rows are read in contiguous blocks (`BLOCK_ROWS`, fast on HDF5's row chunks); each epoch
visits the blocks in a seeded random order, `BLOCKS_PER_BUFFER` at a time, and shuffles the
rows of each such buffer. The row at any position of the stream is a function of the seed
alone, so training resumed at step s reads exactly what an uninterrupted run reads from
there. An autoencoder reads one hook; a transcoder two (input and target) at the same rows.

>>> import numpy as np
>>> x = np.arange(10, dtype=np.float32)[:, None]
>>> s = RowStream([x], batch_size=4, seed=0, block_rows=3, blocks_per_buffer=2)
>>> it = s.batches(0); first, second = next(it)[0], next(it)[0]
>>> bool((next(s.batches(1))[0] == second).all())  # resumed at step 1: the same rows
True
>>> len({int(v) for v in torch.cat([first, second])[:, 0]})  # no row twice in an epoch
8
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

BLOCK_ROWS = 1 << 15
BLOCKS_PER_BUFFER = 8  # 262,144 rows shuffled together (128 MiB at d_model 128)


class RowStream:
    """Batches of `batch_size` rows from `sources` (arrays or h5py datasets of equal length,
    read at the same rows), in the seeded order described above."""

    def __init__(self, sources: Sequence[Any], batch_size: int, seed: int,
                 block_rows: int = BLOCK_ROWS, blocks_per_buffer: int = BLOCKS_PER_BUFFER
                 ) -> None:
        self.sources = list(sources)
        self.n_rows = int(self.sources[0].shape[0])
        if any(int(s.shape[0]) != self.n_rows for s in self.sources):
            raise ValueError("the input and target activations hold different numbers of rows")
        if self.n_rows < batch_size:
            raise ValueError(f"the activations hold {self.n_rows} rows, fewer than one batch "
                             f"({batch_size}); cache more tokens or lower --batch-size")
        self.batch_size = batch_size
        self.seed = seed
        self.block_rows = block_rows
        self.blocks_per_buffer = blocks_per_buffer
        self.n_blocks = -(-self.n_rows // block_rows)

    def _buffers(self, epoch: int) -> list[np.ndarray]:
        """The block indices of each buffer of `epoch`."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
        return [order[i:i + self.blocks_per_buffer]
                for i in range(0, self.n_blocks, self.blocks_per_buffer)]

    def _read_buffer(self, epoch: int, index: int, blocks: np.ndarray) -> list[np.ndarray]:
        out = []
        for src in self.sources:
            parts = [np.asarray(src[b * self.block_rows:(b + 1) * self.block_rows])
                     for b in blocks]
            out.append(np.concatenate(parts))
        perm = np.random.default_rng([self.seed, epoch, index, 1]).permutation(len(out[0]))
        return [a[perm] for a in out]

    def _locate(self, position: int) -> tuple[int, int, int]:
        """(epoch, buffer index, offset in that buffer) of a stream position."""
        epoch, within = divmod(position, self.n_rows)
        for index, blocks in enumerate(self._buffers(epoch)):
            size = sum(min(self.block_rows, self.n_rows - b * self.block_rows) for b in blocks)
            if within < size:
                return epoch, index, within
            within -= size
        raise AssertionError("position beyond the epoch")

    def batches(self, start_step: int = 0) -> Iterator[list[Tensor]]:
        """Batches from step `start_step` on (endless): one float32 tensor per source."""
        epoch, index, offset = self._locate(start_step * self.batch_size)
        pending: list[list[np.ndarray]] = []
        have = 0
        while True:
            buffers = self._buffers(epoch)
            while index < len(buffers):
                data = self._read_buffer(epoch, index, buffers[index])
                data = [a[offset:] for a in data]
                offset = 0
                pending.append(data)
                have += len(data[0])
                while have >= self.batch_size:
                    joined = [np.concatenate([p[i] for p in pending])
                              for i in range(len(self.sources))]
                    batch = [torch.from_numpy(np.ascontiguousarray(
                        a[:self.batch_size], dtype=np.float32)) for a in joined]
                    pending = [[a[self.batch_size:] for a in joined]]
                    have -= self.batch_size
                    yield batch
                index += 1
            epoch, index = epoch + 1, 0
