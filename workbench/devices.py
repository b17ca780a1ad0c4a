"""Device selection with one clear error when CUDA is asked for but absent."""

from __future__ import annotations

import torch


def resolve_device(device: str) -> str:
    """`auto` -> `cuda` when available else `cpu`; validate `cuda`/`cuda:N`.

    >>> resolve_device("cpu")
    'cpu'
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was asked for but CUDA is not available "
                f"(torch {torch.__version__}); pass --device cpu or --device auto"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
