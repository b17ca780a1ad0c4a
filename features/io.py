"""A dictionary on disk, in SAELens' layout, plus ours.

    DIR/cfg.json                  SAELens 6 config (architecture, d_in, d_sae, k, metadata
                                  with the hook name, the model, the corpus)
    DIR/sae_weights.safetensors   W_enc [d_in, d_sae], W_dec [d_sae, d_out], b_enc, b_dec,
                                  threshold (JumpReLU / BatchTopK) - SAELens' key names
    DIR/workbench.json            ours: the model's weight checksum, hook (and target hook of
                                  a transcoder), corpus, split, training config, the
                                  normalisation scales folded into the weights, final metrics
    DIR/training.jsonl            the training curve; DIR/training.fig.json its figure
    DIR/sae.json                  `workbench sae eval`'s report (and its figures)

The weights read and write raw activations (the normalisation is folded in, as SAELens'
`fold_activation_norm_scaling_factor` does), so `sae_lens.SAE.load_from_disk(DIR)` runs them on
`hook_name` of the same model loaded elsewhere. A BatchTopK dictionary is saved as SAELens'
JumpReLU with its learned threshold (how SAELens saves BatchTopK); ours keeps `arch` in
`workbench.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from features.dictionary import BATCH_TOPK, SAELENS_ARCH, Dictionary, DictionaryConfig
from workbench.models.checkpoints import write_json_atomic

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
META = "workbench.json"
REPORT = "sae.json"
"""`workbench sae eval`'s report, beside its dictionary (figures `sae.fig.json`, ...)."""
SCHEMA = "workbench.dictionary/1"


def saelens_cfg(d: Dictionary, meta: dict[str, Any]) -> dict[str, Any]:
    """SAELens 6's `cfg.json` for `d` (hook, model and corpus from `meta`)."""
    arch = SAELENS_ARCH[d.cfg.arch]
    cfg: dict[str, Any] = {
        "architecture": arch, "d_in": d.cfg.d_in, "d_sae": d.cfg.d_sae, "dtype": "float32",
        "device": "cpu", "apply_b_dec_to_input": d.apply_b_dec_to_input,
        "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {
            "model_name": meta.get("model"), "hook_name": meta.get("hook"),
            "hook_head_index": None, "prepend_bos": False,
            "dataset_path": meta.get("corpus"), "context_size": meta.get("n_ctx"),
            "model_checksum": meta.get("model_checksum"),
        },
    }
    if arch == "topk":
        cfg["k"] = d.cfg.k
    if d.cfg.transcoder:
        cfg["d_out"] = d.cfg.width_out
        cfg["metadata"]["hook_name_out"] = meta.get("target")
    return cfg


def save_dictionary(d: Dictionary, out: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write `d` (already folded to raw activations) and `meta` into the folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": d.W_enc.detach(), "W_dec": d.W_dec.detach(),
               "b_enc": d.b_enc.detach(), "b_dec": d.b_dec.detach()}
    if SAELENS_ARCH[d.cfg.arch] == "jumprelu":
        tensors["threshold"] = d.sparse_threshold()
    tmp = out / (WEIGHTS + ".tmp")
    save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, out / WEIGHTS)
    write_json_atomic(out / CFG, saelens_cfg(d, meta))
    write_json_atomic(out / META, {"schema": SCHEMA, **meta, "dictionary": {
        "arch": d.cfg.arch, "d_in": d.cfg.d_in, "d_sae": d.cfg.d_sae, "k": d.cfg.k,
        "d_out": d.cfg.width_out, "transcoder": d.cfg.transcoder}})


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `workbench.json` of the dictionary folder `path` (one clear error otherwise)."""
    path = Path(path)
    if not path.is_dir():
        partial = path.with_name(path.name + ".partial")
        hint = (f" (an interrupted `workbench sae train` left {partial}: run it again with "
                "--resume)" if partial.exists() else "; train one with `workbench sae train`")
        raise FileNotFoundError(f"dictionary {path} does not exist{hint}")
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a workbench dictionary ({META} missing or damaged: "
                         f"{exc}); train one with `workbench sae train`") from exc
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise ValueError(f"{path / META} is not a {SCHEMA} record; train the dictionary again "
                         "with `workbench sae train`")
    return meta


def load_dictionary(path: str | os.PathLike[str]) -> tuple[Dictionary, dict[str, Any]]:
    """The dictionary saved in `path` and its `workbench.json`."""
    path = Path(path)
    meta = read_meta(path)
    shape = meta["dictionary"]
    cfg = DictionaryConfig(arch=shape["arch"], d_in=shape["d_in"], d_sae=shape["d_sae"],
                           k=shape["k"], d_out=shape["d_out"], transcoder=shape["transcoder"])
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, SafetensorError, ValueError) as exc:
        raise ValueError(f"{path / WEIGHTS} is damaged or missing ({exc}); train the "
                         "dictionary again with `workbench sae train --overwrite`") from exc
    d = Dictionary(cfg)
    want = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.width_out),
            "b_enc": (cfg.d_sae,), "b_dec": (cfg.width_out,)}
    for key, shape_ in want.items():
        if key not in tensors or tuple(tensors[key].shape) != shape_:
            got = tuple(tensors[key].shape) if key in tensors else "missing"
            raise ValueError(f"{path / WEIGHTS}: {key} is {got}, expected {shape_} (from "
                             f"{META}); train the dictionary again with `workbench sae train "
                             "--overwrite`")
        getattr(d, key).data.copy_(tensors[key])
        if not torch.isfinite(tensors[key]).all():
            raise ValueError(f"{path / WEIGHTS}: {key} holds NaN or inf values; train the "
                             "dictionary again")
    if "threshold" in tensors:
        d.threshold.data.copy_(tensors["threshold"])
        if cfg.arch in BATCH_TOPK:
            d.batch_threshold.fill_(float(tensors["threshold"][0]))
    return d.eval(), meta


def model_dictionaries(model_dir: str | os.PathLike[str]) -> list[Path]:
    """The dictionaries kept with a model: the folders `MODEL/sae/NAME/` holding a
    `workbench.json` (where the dashboard and `--method sae` look)."""
    folder = Path(model_dir) / "sae"
    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir() if (d / META).is_file())


def find_dictionary(model_dir: str | os.PathLike[str], given: str | os.PathLike[str] | None,
                    model: str) -> Path:
    """`given`, else the model's only dictionary (`model_dictionaries`); one clear error when
    it has none or several."""
    if given is not None:
        return Path(given)
    found = model_dictionaries(model_dir)
    folder = Path(model_dir) / "sae"
    if not found:
        raise FileNotFoundError(
            f"model {model} has no sparse dictionary (none under {folder}); train one with "
            f"`workbench sae train --model {model} --hook blocks.1.hook_resid_post --out "
            f"{folder}/resid1`, or pass --sae DIR")
    if len(found) > 1:
        raise ValueError(f"model {model} has {len(found)} dictionaries under {folder} ("
                         f"{', '.join(d.name for d in found)}); pass --sae DIR to pick one")
    return found[0]
