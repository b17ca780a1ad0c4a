"""Device selection with one clear error when CUDA is asked for but absent, and where (and
in what precision) a model is loaded (`Placement`)."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The precisions a model can be loaded in (`Placement.dtype`)."""
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
"""Hugging Face's placement strategies for a checkpoint spread over several devices."""


@dataclass(frozen=True)
class Placement:
    """Where, and in what precision, `workbench.models.loader.load` puts a model's weights.

    Args:
        device: `cpu`, `cuda`, `cuda:N` or `auto` (the whole model on one device).
        dtype: `float32` (default), `bfloat16` or `float16`.
        device_map: a Hugging Face checkpoint's layers spread over the devices there are
            (`auto`, `balanced`, `balanced_low_0`, `sequential` or a dict of module ->
            device, as `from_pretrained(device_map=...)` takes; Accelerate places them and
            moves activations between devices); for a model larger than one device.
            Exclusive with a `device` other than `cpu`.
        max_memory: the most each device may hold under `device_map`, e.g.
            `{0: "70GiB", 1: "70GiB"}`; what does not fit goes to the next device. Every
            weight must fit on a device: the analyses read weights directly (OV circuits,
            weight edits), so layers offloaded to disk are refused.

    >>> Placement(dtype="bfloat16").torch_dtype
    torch.bfloat16
    >>> Placement(device="cuda", device_map="auto")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: device='cuda' with device_map='auto': pass one of them (device_map places ...
    """

    device: str = "cpu"
    dtype: str = "float32"
    device_map: str | dict[str, str | int] | None = None
    max_memory: dict[str | int, str | int] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if isinstance(self.device_map, str) and self.device_map not in DEVICE_MAPS:
            raise ValueError(f"device_map={self.device_map!r}; choose one of "
                             f"{', '.join(DEVICE_MAPS)} or pass a dict of module -> device")
        if self.device_map is not None and self.device != "cpu":
            raise ValueError(f"device={self.device!r} with device_map={self.device_map!r}: "
                             "pass one of them (device_map places the layers on the devices "
                             "itself)")
        if self.device_map is None and self.max_memory:
            raise ValueError("max_memory applies with a device_map; pass device_map='auto' "
                             "as well")

    @property
    def torch_dtype(self) -> torch.dtype:
        """`dtype` as a `torch.dtype`."""
        return DTYPES[self.dtype]


class Default(str):
    """A flag's default value, told apart from the same value typed (`--device cpu` beside
    `--device-map` is a conflict; the default `cpu` is not)."""


CPU_DEFAULT = Default("cpu")  # the `--device` default of the commands that load a model


def add_placement_args(parser: argparse.ArgumentParser) -> None:
    """`--model-dtype` and `--device-map` (with `--max-memory`) beside a command's `--device`:
    how its model is loaded (`Placement`)."""
    parser.add_argument("--model-dtype", choices=tuple(DTYPES), default="float32",
                        help="precision the model is loaded in (bfloat16 halves its memory)")
    parser.add_argument("--device-map", choices=DEVICE_MAPS, default=None,
                        help="spread a Hugging Face checkpoint's layers over every device "
                             "there is (a model larger than one GPU); instead of --device")
    parser.add_argument("--max-memory", type=_memory_budget, default=None,
                        metavar="DEV=SIZE,...",
                        help="with --device-map: the most each device may hold, e.g. "
                             "0=70GiB,1=70GiB")


def placement_of(args: argparse.Namespace) -> str | Placement:
    """The `device` a command's `load` call takes: `--device` alone when nothing else about
    the placement was asked for, else a `Placement` (one clear error when flags conflict)."""
    plain = (args.model_dtype == "float32" and args.device_map is None
             and args.max_memory is None)
    if plain:
        return str(args.device)
    if args.device_map is not None and str(args.device) != "auto" and not isinstance(
            args.device, Default):
        raise ValueError(f"--device {str(args.device)!r} with --device-map "
                         f"{args.device_map!r}: pass one of them (--device-map places the "
                         "layers on the devices itself)")
    device = "cpu" if args.device_map is not None and args.device in ("cpu", "auto") \
        else str(args.device)
    try:
        return Placement(device=device, dtype=args.model_dtype, device_map=args.device_map,
                         max_memory=args.max_memory)
    except ValueError as exc:
        raise ValueError(str(exc).replace("device=", "--device ").replace(
            "device_map=", "--device-map ").replace("max_memory", "--max-memory")) from None


_UNITS = ("KB", "MB", "GB", "KiB", "MiB", "GiB")  # what accelerate reads
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(" + "|".join(_UNITS) + ")")


def check_device(placement: str | Placement) -> None:
    """Refuse, before anything loads, a device this machine does not have (`resolve_device`'s
    errors) for a placement from `placement_of`."""
    resolve_device(placement if isinstance(placement, str) else placement.device)


def _memory_budget(text: str) -> dict[str | int, str]:
    """`0=70GiB,cpu=100GiB` -> `{0: "70GiB", "cpu": "100GiB"}`."""
    budget: dict[str | int, str] = {}
    for part in filter(None, text.split(",")):
        dev, eq, size = part.partition("=")
        dev, size = dev.strip(), size.strip()
        if not eq or not size or not (dev.isdigit() or dev == "cpu"):
            raise argparse.ArgumentTypeError(
                f"{part!r} is not DEVICE=SIZE; pass e.g. 0=70GiB,1=70GiB,cpu=100GiB")
        found = _SIZE.fullmatch(size)
        if found is None or float(found.group(1)) <= 0:
            raise argparse.ArgumentTypeError(
                f"{part!r}: {size!r} is not a size; pass a positive number and a unit of "
                f"{', '.join(_UNITS)}, e.g. {dev}=70GiB")
        key = int(dev) if dev.isdigit() else dev
        if key in budget:
            raise argparse.ArgumentTypeError(f"{text!r} names device {dev} twice; give each "
                                             "device once")
        budget[key] = size
    if not budget:
        raise argparse.ArgumentTypeError(f"{text!r} names no device; pass e.g. 0=70GiB,cpu=100GiB")
    return budget
