"""The run directory of a training run: creating it, checking a resume against it, and
what a killed run leaves behind.

A run directory holds `run.json` (model, train and corpus configs), `tokenizer.json`,
`metrics.jsonl`, `checkpoints/step_NNNNNN/` and `training.fig.json`. Everything is written
atomically, so `kill -9` at any instant leaves either the old or the new file; what it can
leave besides (temporary checkpoint directories, a torn last metrics line, the training state
of an older checkpoint) is cleaned up here before a resumed run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from workbench.layout import CHECKPOINTS_DIR, RUN_JSON, read_run_json
from workbench.models.checkpoints import (
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    sha256_file,
    write_json_atomic,
)
from workbench.outputs import check_replaceable

log = logging.getLogger(__name__)


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{prefix}{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)
    ]


def prepare_run_dir(
    run_dir: Path, run_info: dict[str, Any], resume: bool, overwrite: bool
) -> bool:
    """Create or validate the run directory; return True when resuming from a checkpoint
    (False also when a run to resume was killed before its first checkpoint)."""
    run_json = run_dir / RUN_JSON
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            if not run_json.is_file():
                raise ValueError(f"cannot resume {run_dir}: it has no run.json (not a run of ours)")
            old = read_run_json(run_dir)
            diffs = (
                config_diff(old["model"], run_info["model"], "model.")
                + config_diff(old["train"], run_info["train"], "train.")
                + config_diff(old["corpus_id"], run_info["corpus_id"], "corpus.")
            )
            if diffs:
                raise ValueError(
                    f"--resume with a different config than the run at {run_dir}: "
                    + "; ".join(diffs)
                    + ". Pass the original settings, or start a new run "
                    "(another --run directory, or --overwrite to replace this one)"
                )
            ckpts = list_checkpoints(run_dir)
            if any((c / "train_state.pt").exists() for c in ckpts):
                return True
            if ckpts:
                raise ValueError(
                    f"cannot resume {run_dir}: none of its checkpoints keeps a train_state.pt "
                    "(the newest one of a run always does), so it cannot continue exactly; "
                    "start it again with --overwrite"
                )
            return False  # killed before its first checkpoint: start again from step 0
        if not overwrite:
            raise FileExistsError(
                f"run directory {run_dir} is not empty; pass --resume to continue it or "
                "--overwrite to delete it and start again"
            )
        check_replaceable(run_dir, "run")  # a run of ours with nothing else in it
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_json, run_info)
    return False


def check_resume_args(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise ValueError(
            f"resume=True and overwrite=True for {run_dir}: pass one of them (--resume "
            "continues the run, --overwrite deletes it and starts again)"
        )
    if resume and not run_dir.exists():
        raise FileNotFoundError(
            f"cannot resume {run_dir}: it does not exist; start the run without --resume"
        )
    if resume and run_dir.is_dir() and not any(run_dir.iterdir()):
        raise FileNotFoundError(
            f"cannot resume {run_dir}: it is empty; start the run without --resume"
        )


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy `src` to a temporary file beside `dst`, then rename it into place."""
    tmp = dst.with_name(f".{dst.name}.tmp-{secrets.token_hex(4)}")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def metric_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The lines of `metrics.jsonl` and their records, without the lines that do not parse
    as a record (a line torn by a kill)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.append((line, record))
        elif line.strip():
            log.warning("dropping an unreadable line of %s: %r", path, line[:80])
    return out


def load_resume_state(path: Path) -> tuple[Checkpoint, dict[str, Any]]:
    """A checkpoint and its training state, checked against the checksums in config.json.

    Raises:
        ValueError: damaged weights, config or training state.
    """
    ckpt = load_checkpoint(path)
    state_path = path / "train_state.pt"
    digest = ckpt.meta.get("sha256", {}).get("train_state.pt")
    try:
        if digest is not None and sha256_file(state_path) != digest:
            raise ValueError("it does not match its checksum in config.json")
        state = ckpt.train_state()  # ValueError when torch.load fails (truncated file)
    except ValueError as exc:
        reason = exc.__cause__ or exc
        raise ValueError(f"training state {state_path} is corrupt or truncated ({reason})") from exc
    if state is None:
        raise ValueError(f"training state {state_path} disappeared while resuming")
    return ckpt, state


def remove_leftovers(run_dir: Path) -> None:
    """Delete what a killed run leaves half-written: checkpoint and figure temporaries."""
    ckpt_root = run_dir / CHECKPOINTS_DIR
    if ckpt_root.is_dir():
        for p in ckpt_root.glob(".step_*"):
            if ".tmp-" in p.name or ".old-" in p.name:
                shutil.rmtree(p, ignore_errors=True)
    for pattern in (".training.fig.json.*", ".tokenizer.json.tmp-*", "metrics.jsonl.tmp"):
        for p in run_dir.glob(pattern):
            p.unlink(missing_ok=True)
