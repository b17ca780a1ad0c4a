"""Checkpoints: safetensors weights + config + tokenizer + training state, written atomically.

A checkpoint directory holds:

- `model.safetensors`: weights under TransformerBridge names (`embed.weight`,
  `blocks.0.attn.q.weight`, ...); loading never runs pickled code.
- `config.json`: `{"schema": "workbench.checkpoint/1", "model": ModelConfig,
  "bridge_config": TransformerBridgeConfig fields (dtype as a string), "step", "tokens_seen",
  "train": TrainConfig or null, "sha256": {file: digest}}`.
- `tokenizer.json`: the Hugging Face `tokenizers` file the model was trained with.
- `train_state.pt` (optional): optimizer state, RNG states and data position, loaded with
  `torch.load(weights_only=True)`.

Everything is written into a temporary sibling directory and renamed into place, so a
crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from workbench.layout import CHECKPOINTS_DIR, checkpoint_dirs, step_dir_name, step_of
from workbench.models.config import ModelConfig
from workbench.outputs import apply_umask, replace_dir

SCHEMA = "workbench.checkpoint/1"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN: an unknown loss is null
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return str(value)  # torch.dtype and friends become strings


def bridge_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The TransformerBridgeConfig fields of `cfg`, JSON-safe (dtype as a string)."""
    return {k: _json_safe(v) for k, v in cfg.to_bridge_config().to_dict().items()}


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place; the file
    gets the mode the user's umask gives (not `mkstemp`'s 0600)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:  # name the file asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it into place."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


@dataclass
class Checkpoint:
    """A checkpoint read from disk."""

    path: Path
    model_cfg: ModelConfig
    state_dict: dict[str, Tensor]
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    def train_state(self) -> dict[str, Any] | None:
        """The optimizer/RNG/data state, or None when the checkpoint has none."""
        path = self.path / "train_state.pt"
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(
                f"training state {path} is corrupt or truncated ({exc}); resume from an "
                "earlier checkpoint by deleting this checkpoint directory"
            ) from exc


def save_checkpoint(
    out_dir: Path,
    state_dict: dict[str, Tensor],
    model_cfg: ModelConfig,
    tokenizer_path: Path,
    *,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint directory atomically.

    Args:
        out_dir: final directory; refused when it exists unless `overwrite`.
        state_dict: weights under TransformerBridge names.
        model_cfg: the model's shape.
        tokenizer_path: `tokenizer.json` to copy beside the weights.
        meta: extra fields for `config.json` (step, tokens_seen, train config, losses).
        train_state: optimizer/RNG/data state for exact resume.
        overwrite: replace an existing checkpoint.

    Returns:
        `out_dir`.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"checkpoint {out_dir} already exists; pass overwrite=True")
    if not Path(tokenizer_path).is_file():
        raise FileNotFoundError(f"tokenizer {tokenizer_path} not found; pass the corpus tokenizer")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        apply_umask(tmp)  # mkdtemp makes it 0700
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
        config = {
            "schema": SCHEMA,
            "model": model_cfg.to_dict(),
            "bridge_config": bridge_config_dict(model_cfg),
            **_json_safe(meta or {}),
            "sha256": {
                name: sha256_file(tmp / name)
                for name in ("model.safetensors", "tokenizer.json", "train_state.pt")
                if (tmp / name).exists()
            },
        }
        write_json_atomic(tmp / "config.json", config)
        for name in ("model.safetensors", "tokenizer.json", "train_state.pt"):
            if (tmp / name).exists():
                apply_umask(tmp / name)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, sorted by step."""
    return checkpoint_dirs(run_dir)


def is_checkpoint_dir(path: Path) -> bool:
    """A directory with our config.json and weights (a Hugging Face config has `model_type`)."""
    config = Path(path) / "config.json"
    if not (config.is_file() and (Path(path) / "model.safetensors").exists()):
        return False
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True  # ours but damaged: load_checkpoint explains
    return not (isinstance(data, dict) and "model_type" in data)


def is_hf_dir(path: Path) -> bool:
    """A local Hugging Face model directory: a `config.json` object with a `model_type`."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "model_type" in data


def looks_like_path(text: str) -> bool:
    """Whether a reference that does not exist was meant as a path (not a hub name)."""
    if text.startswith((".", "/", "~")) or os.sep + os.sep in text:
        return True
    first = text.split("/")[0]
    return "/" in text and Path(first).exists()


def resolve_checkpoint(path: Path, step: int | None = None) -> Path:
    """A run directory (its latest or `step` checkpoint) or a checkpoint directory."""
    path = Path(path)
    if is_checkpoint_dir(path) and step is None:
        return path
    ckpts = list_checkpoints(path)
    if not ckpts:
        raise FileNotFoundError(
            f"{path} is neither a checkpoint directory (config.json + model.safetensors) nor a "
            "run directory with checkpoints/; train one with `workbench train --run DIR`"
        )
    if step is None:
        return ckpts[-1]
    wanted = path / CHECKPOINTS_DIR / step_dir_name(step)
    if wanted not in ckpts:
        steps = [step_of(p) for p in ckpts]
        raise FileNotFoundError(f"run {path} has no checkpoint at step {step}; it has {steps}")
    return wanted


def _model_config(config: dict[str, Any], path: Path) -> ModelConfig:
    """The `model` entry of a checkpoint config, or a ValueError naming the file."""
    try:
        data = config["model"]
        if not isinstance(data, dict):
            raise TypeError(f"'model' is a {type(data).__name__}, not an object")
        return ModelConfig.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint config {path} has no valid model config ({exc}); it is "
                         "damaged: pick another checkpoint or retrain") from exc


def read_checkpoint_config(path: Path) -> dict[str, Any]:
    """A checkpoint's `config.json` (without reading its weights).

    Raises:
        FileNotFoundError: no config.json.
        ValueError: it is corrupt, not an object, or not a workbench checkpoint's.
    """
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} has no config.json; pick a checkpoint directory"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"checkpoint config {config_path} is corrupt ({exc}); pick another checkpoint"
        ) from exc
    if not isinstance(config, dict):
        raise ValueError(f"checkpoint config {config_path} holds a {type(config).__name__}, "
                         "not an object; it is damaged: pick another checkpoint or retrain")
    if config.get("schema") != SCHEMA:
        raise ValueError(
            f"{config_path} has schema {config.get('schema')!r}, expected {SCHEMA!r}; it is not "
            "a workbench checkpoint (load Hugging Face directories by their path instead)"
        )
    return config


def load_checkpoint(path: Path, *, verify: bool = True) -> Checkpoint:
    """Read a checkpoint directory (weights on CPU).

    Raises:
        FileNotFoundError: no config, weights or tokenizer.
        ValueError: corrupt or truncated files, or a checksum mismatch.
    """
    path = Path(path)
    config = read_checkpoint_config(path)
    config_path = path / "config.json"
    weights = path / "model.safetensors"
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"checkpoint {path} has no tokenizer.json; copy the tokenizer.json of the corpus "
            "the model was trained on into it"
        )
    if verify:
        digests = config.get("sha256", {})
        if not isinstance(digests, dict):
            raise ValueError(f"checkpoint config {config_path} has a damaged sha256 entry; "
                             "pick another checkpoint or retrain")
        for name, digest in digests.items():
            if name == "train_state.pt" or not (path / name).exists():
                continue
            if sha256_file(path / name) != digest:
                raise ValueError(
                    f"{path / name} does not match its checksum in config.json: the checkpoint "
                    "is corrupt or truncated; pick an earlier checkpoint or retrain"
                )
    try:
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ValueError(
            f"weights {weights} are corrupt or truncated ({exc}); pick an earlier checkpoint "
            "or retrain"
        ) from exc
    model_cfg = _model_config(config, config_path)
    return Checkpoint(path=path, model_cfg=model_cfg, state_dict=state_dict, meta=config)
