"""Load any model we analyse as a TransformerLens 4 `TransformerBridge`.

One call, three kinds of reference:

- a run directory or checkpoint directory of ours (`runs/demo`,
  `runs/demo/checkpoints/step_000512`): `TransformerBridge.boot_native` + our weights;
- a local Hugging Face directory (`config.json` with a `model_type`):
  `TransformerBridge.boot_transformers(path)`, offline;
- a hub name (`gpt2`): works when online; offline it fails with one clear error.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
from transformer_lens.model_bridge import TransformerBridge

from workbench.layout import CHECKPOINTS_DIR
from workbench.models import Model
from workbench.models.arch import UnsupportedArchitecture, check_causal
from workbench.models.checkpoints import (
    Checkpoint,
    is_checkpoint_dir,
    is_hf_dir,
    load_checkpoint,
    looks_like_path,
    resolve_checkpoint,
)
from workbench.models.checks import check_model_memory, hf_param_count, hub_error, offline
from workbench.models.config import ModelConfig
from workbench.models.devices import DTYPES, Placement, resolve_device
from workbench.world.tokenizer_files import load_hf_tokenizer


def build_bridge(
    cfg: ModelConfig,
    state_dict: dict[str, torch.Tensor] | None = None,
    tokenizer: Any = None,
    device: str = "cpu",
) -> TransformerBridge:
    """A hooked TL-native bridge of shape `cfg`, with `state_dict` (bridge names) loaded.

    Without `state_dict` the weights are TransformerLens' seeded initialisation
    (`cfg.seed`), which is also where `FastGPT` training starts.
    """
    bridge = TransformerBridge.boot_native(cfg.to_bridge_config(), tokenizer=tokenizer)
    if state_dict is not None:
        expected = set(bridge.state_dict())
        missing, unexpected = expected - set(state_dict), set(state_dict) - expected
        if missing or unexpected:
            raise ValueError(
                f"weights do not fit the model config: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}; the checkpoint's config.json and "
                "model.safetensors disagree"
            )
        bridge.load_state_dict(state_dict, strict=True)
    bridge.train(False)  # inference mode (no dropout)
    return bridge.to(device) if device != "cpu" else bridge


def bridge_from_checkpoint(ckpt: Checkpoint, device: str = "cpu") -> TransformerBridge:
    """A bridge from a checkpoint read with `load_checkpoint`."""
    tokenizer = load_hf_tokenizer(ckpt.tokenizer_path)
    return build_bridge(ckpt.model_cfg, ckpt.state_dict, tokenizer=tokenizer, device=device)


def load(ref: str | os.PathLike[str], device: str | Placement = "cpu", step: int | None = None
         ) -> Model:
    """Load a model reference as a hooked `TransformerBridge` in eval mode.

    Args:
        ref: run directory, checkpoint directory, local Hugging Face directory or hub name.
        device: `cpu`, `cuda`, `cuda:N` or `auto`; or a `Placement` for a precision other
            than float32 (`Placement(device="cuda", dtype="bfloat16")`) or a Hugging Face
            checkpoint spread over several devices (`Placement(device_map="auto")`).
        step: for run directories, the checkpoint step (default: the latest).

    Raises:
        FileNotFoundError: a path that does not exist or holds no model.
        ValueError: a local Hugging Face model whose estimated memory (from its config.json,
            `workbench.models.checks.check_model_memory`) exceeds the memory available on the CPU;
            a `device_map` for one of our own models (they fit one device).
        OSError: a hub name while offline (or unreachable).
    """
    place = device if isinstance(device, Placement) else Placement(device=device)
    place = replace(place, device=resolve_device(place.device))
    path = Path(ref).expanduser()
    if path.exists():
        if is_checkpoint_dir(path) or (path / CHECKPOINTS_DIR).is_dir():
            if place.device_map is not None:
                raise ValueError(f"device_map={place.device_map!r} spreads a Hugging Face "
                                 f"checkpoint over several devices; {path} is one of our "
                                 "models, loaded whole: pass a device instead")
            bridge = bridge_from_checkpoint(load_checkpoint(resolve_checkpoint(path, step)),
                                            place.device)
            return bridge if place.dtype == "float32" else bridge.to(place.torch_dtype)
        if is_hf_dir(path):
            if step is not None:
                raise ValueError(f"step={step} only applies to our run directories, not {path}")
            if place.device == "cpu" and place.device_map is None:  # refused up front
                n_params = hf_param_count(path)
                if n_params is not None:
                    check_model_memory(str(path), n_params, place.torch_dtype.itemsize)
            try:
                bridge = _boot_hf(str(path), place)
            except UnsupportedArchitecture:
                raise
            except Exception as exc:
                if "Could not determine supported architecture" in str(exc):
                    raise _unsupported(path) from exc
                reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise ValueError(f"Hugging Face directory {path} cannot be loaded "
                                 f"({type(exc).__name__}: {reason}); check its config.json, "
                                 "weights and tokenizer files (save_pretrained writes them)"
                                 ) from exc
            return _on_devices(str(path), bridge)
        raise FileNotFoundError(
            f"{path} holds no model: expected a run directory (checkpoints/), a checkpoint "
            "(config.json + model.safetensors) or a Hugging Face directory (config.json with "
            "model_type)"
        )
    ref_str = str(ref)
    if looks_like_path(ref_str):
        raise FileNotFoundError(
            f"model reference {ref_str!r} does not exist; pass a run directory such as "
            "runs/demo (train one with `workbench train`) or a local Hugging Face directory"
        )
    if offline():
        raise hub_error(ref_str, "HF_HUB_OFFLINE is set and no local directory has that name")
    try:
        bridge = _boot_hf(ref_str, place)
    except OSError as exc:
        raise hub_error(ref_str, str(exc).splitlines()[0] if str(exc) else "offline") from exc
    return _on_devices(ref_str, bridge)


def _unsupported(path: Path) -> UnsupportedArchitecture:
    import json
    from importlib.metadata import version

    cfg = json.loads((path / "config.json").read_text())
    name = (cfg.get("architectures") or [cfg.get("model_type", "?")])[0]
    return UnsupportedArchitecture(
        f"{path} is a {name} (model_type {cfg.get('model_type')!r}), an architecture the "
        f"TransformerLens bridge (transformer-lens {version('transformer-lens')}) cannot "
        "load; the tested ones are GPT-2, GPT-NeoX/Pythia, Llama, Qwen2, Mistral and Gemma "
        "(tests/integration/test_architectures.py), and a newer transformer-lens may add it")


def _on_devices(name: str, bridge: Model) -> Model:
    """`bridge`, unless Accelerate put some of its weights on disk (they read as `meta`
    tensors outside a forward pass, and the analyses read weights directly)."""
    placed = getattr(getattr(bridge, "original_model", None), "hf_device_map", None) or {}
    offloaded = sorted(k or "the whole model" for k, v in placed.items()
                       if str(v) in ("disk", "meta"))
    if offloaded:
        raise ValueError(f"{name} does not fit in its devices' memory: {len(offloaded)} "
                         f"module(s) ({', '.join(offloaded[:3])}) would be read from disk, "
                         "and the analyses read weights directly; raise --max-memory, use "
                         "more devices, or load it with --model-dtype bfloat16")
    return bridge


def _boot_hf(name: str, place: Placement) -> Model:
    if not sys.stderr.isatty():  # no progress bars in logs, pipes and the dashboard's runner
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    mapped = place.device_map is not None
    bridge = TransformerBridge.boot_transformers(
        name, device=None if mapped else place.device, dtype=place.torch_dtype,
        device_map=place.device_map, max_memory=place.max_memory)
    check_causal(name, getattr(getattr(bridge, "original_model", None), "config", None))
    bridge.train(False)  # inference mode (no dropout)
    return bridge


def placement_of_model(bridge: Model) -> Placement:
    """Where a loaded model is, and in what precision (from its first weight): to load its
    other checkpoints alike."""
    first = next(bridge.parameters())
    dtype = next((k for k, v in DTYPES.items() if v == first.dtype), "float32")
    return Placement(device=str(first.device), dtype=dtype)
