"""The trained `default` model that ships with the project, so the demo need not train.

`datasets/models/default/` is a run directory (`run.json`, `tokenizer.json`,
`metrics.jsonl`, `checkpoints/step_NNNNNN/`) holding checkpoints of `make train-default` (the
`default` preset, training seed 0, on the seed-0 world) without their optimizer state, plus
`provenance.json` (how it was made, and which steps it holds). `export` writes the final
checkpoint and a training history (`HISTORY`: log-spaced early, then every 500 steps, so the
phase change and in-context learning over training show out of the box: 10 checkpoints of
3.6 MB). Its corpus is recorded as
`../world`: a world built beside the run directory (`make demo` builds `runs/world` and copies
the model to `runs/demo`).

    python -m workbench.models.shipped export --run runs/default     # after make train-default
    python -m workbench.models.shipped install --run runs/demo       # what make demo does
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from workbench.layout import CHECKPOINTS_DIR, RUN_JSON, read_run_json, step_of
from workbench.models.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    sha256_file,
    write_json_atomic,
)
from workbench.outputs import apply_umask

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "models" / "default"
CORPUS = "../world"  # relative to the run directory
HISTORY = (0, 32, 128, 256, 500, 1000, 1500, 2000, 3000)  # besides the last step
RECIPE = ("workbench world build --out runs/world && workbench train --preset default "
          "--corpus runs/world --run runs/default --seed 0   (make train-default)")


def export_run(run_dir: str | Path, out: str | Path = SHIPPED, overwrite: bool = False,
               history: Sequence[int] = HISTORY) -> Path:
    """Copy the last checkpoint of `run_dir` and those at the steps `history` (weights,
    config, tokenizer; no optimizer state), its run record and metrics into `out` as a
    shippable run directory.

    Raises:
        FileNotFoundError: `run_dir` has no checkpoints, or none at a step of `history`.
        FileExistsError: `out` exists and not `overwrite`.
    """
    run_dir, out = Path(run_dir), Path(out)
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} has no checkpoints; train it first "
                                "(make train-default)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace the shipped model")
    by_step = {step_of(p): p for p in checkpoints}
    missing = sorted(set(history) - set(by_step))
    if missing:
        raise FileNotFoundError(f"{run_dir} has no checkpoint at step(s) {missing} of the "
                                f"shipped history; it has {sorted(by_step)}")
    last = checkpoints[-1]
    chosen = [by_step[s] for s in sorted(set(history)) if by_step[s] != last] + [last]
    for path in chosen:
        load_checkpoint(path)  # verifies every checksum before anything is copied
    with _atomic_dir(out) as tmp:
        for path in chosen:
            config = _copy_checkpoint(path, tmp / CHECKPOINTS_DIR / path.name)
        run = read_run_json(run_dir)
        world = Path(run.get("corpus") or "")
        run["corpus"] = CORPUS
        write_json_atomic(tmp / RUN_JSON, run)
        for name in ("tokenizer.json", "metrics.jsonl"):
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, tmp / name)
        prov = _provenance(config, run, world)
        prov["history"] = [step_of(p) for p in chosen]
        write_json_atomic(tmp / "provenance.json", prov)
    return out


def _copy_checkpoint(src: Path, dst: Path) -> dict[str, Any]:
    """`src` without its optimizer state, recording the shipped corpus; its config."""
    dst.mkdir(parents=True)
    for name in ("model.safetensors", "tokenizer.json"):
        shutil.copyfile(src / name, dst / name)
    config = json.loads((src / "config.json").read_text())
    config["corpus"] = CORPUS
    config["sha256"] = {n: sha256_file(dst / n) for n in ("model.safetensors", "tokenizer.json")}
    write_json_atomic(dst / "config.json", config)
    return config


def _provenance(config: dict[str, Any], run: dict[str, Any], world: Path) -> dict[str, Any]:
    # the world it was trained on, byte for byte (`workbench world build` is deterministic)
    world_sha = {name: sha256_file(world / name) for name in ("world.json", "train.tokens.npy")
                 if (world / name).is_file()}
    return {
        "recipe": RECIPE,
        "step": config.get("step"),
        "tokens_seen": config.get("tokens_seen"),
        "model": run.get("model"),
        "train": run.get("train"),
        "corpus_id": run.get("corpus_id"),
        "sha256": config["sha256"],
        "world_sha256": world_sha,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def install(run_dir: str | Path, shipped: str | Path = SHIPPED) -> Path:
    """Copy the shipped model to `run_dir` (refused when it exists), checksums verified."""
    run_dir, shipped = Path(run_dir), Path(shipped)
    if run_dir.exists():
        raise FileExistsError(f"{run_dir} exists; remove it or pass another --run")
    checkpoints = list_checkpoints(shipped)
    if not checkpoints:
        raise FileNotFoundError(f"no shipped model at {shipped}; run `make train-default`")
    load_checkpoint(checkpoints[-1])  # verifies the checksums
    with _atomic_dir(run_dir) as tmp:
        shutil.copytree(shipped, tmp, dirs_exist_ok=True)
    return run_dir


@contextmanager
def _atomic_dir(out: Path) -> Iterator[Path]:
    """A temporary sibling of `out` that replaces it (if any) when the block succeeds, with
    the modes a plain mkdir/open would give; removed when the block fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        for path in (tmp, *tmp.rglob("*")):
            apply_umask(path)  # mkdtemp makes it 0700
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.models.shipped", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("export", "install"))
    parser.add_argument("--run", required=True, help="the run to export, or to install into")
    parser.add_argument("--overwrite", action="store_true", help="export: replace the "
                        "shipped model")
    args = parser.parse_args(argv)
    try:
        if args.action == "export":
            print(f"shipped model written to {export_run(args.run, overwrite=args.overwrite)}")
        else:
            print(f"shipped model installed at {install(args.run)}")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
