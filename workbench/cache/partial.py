"""The partial file of an interrupted cache (`OUT.partial`): whether it holds rows worth
keeping, whether it may be appended to (same model, hooks, corpus and settings), and whether
an existing complete file is the one asked for. See `workbench.cache.store`."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import h5py

SCHEMA = "workbench.activations/1"
# Attributes that must match for a resumed run to append to a partial file.
IDENTITY = ("model_checksum", "hooks", "dtype", "corpus", "split", "positions", "plan")
log = logging.getLogger("workbench.cache.store")


def open_partial(partial: Path, identity: dict[str, Any]) -> h5py.File:
    """The partial file opened for appending, when it was written with `identity` (model,
    hooks, corpus, settings and torchrun shard); else a ValueError with the fix. The checks
    read the file without writing: opening HDF5 for writing changes its header, and a
    refused file must stay byte for byte as it was."""
    try:
        with h5py.File(partial, "r") as f:
            attrs = {k: f.attrs.get(k) for k in ("schema", *IDENTITY, "shard")}
    except OSError as exc:
        refuse_if_locked(partial, exc)
        raise ValueError(f"partial cache {partial} is corrupt ({exc}); pass --overwrite to "
                         "start again") from exc
    if attrs["schema"] != SCHEMA:
        raise ValueError(f"{partial} is not a workbench activation file; pass --overwrite")
    diffs = [k for k in (*IDENTITY, "shard") if attrs[k] != identity[k]]
    if diffs:
        found = {k: attrs[k] for k in diffs}
        raise ValueError(
            f"refusing to append to {partial}: it was written with different "
            f"{', '.join(diffs)} ({found}); resume with the same model, hooks and settings, "
            "or pass --overwrite to start again"
        )
    try:
        return h5py.File(partial, "r+")
    except OSError as exc:
        refuse_if_locked(partial, exc)
        raise ValueError(f"partial cache {partial} cannot be opened for writing ({exc}); "
                         "check its permissions, or pass --overwrite to start again") from exc


def existing_output(out: Path, partial: Path, identity: dict[str, Any], resume: bool,
                    overwrite: bool) -> bool:
    """Settle what an earlier run left at `out` and `out.partial` before a cache starts:
    True when `out` is already the complete file asked for (a resume with nothing to do).
    A partial without rows is removed; one with rows is kept for `open_partial` only when
    resuming (else removed with `overwrite`, or refused). `resume` and `overwrite` are not
    both set (`cache_activations` refuses that before the model runs)."""
    if partial.exists() and not resume:
        if not overwrite:
            raise FileExistsError(
                f"{partial} is left from an interrupted run; pass --resume to continue it or "
                "--overwrite to start again"
            )
        partial.unlink()
    if partial.exists() and not has_rows(partial):
        partial.unlink()  # interrupted before its first write: nothing to keep
    if out.exists() and not overwrite and not partial.exists():
        check_complete(out, identity)
        log.info("%s is complete already: nothing to resume", out)
        return True
    return False


def has_rows(partial: Path) -> bool:
    """Whether a partial file holds rows worth keeping. One killed before its first write
    may be unreadable (HDF5 had flushed nothing), have no `schema` yet, or `n_done == 0`;
    a file of another kind (another `schema`) is kept for `open_partial` to refuse."""
    try:
        with h5py.File(partial, "r") as f:
            if "schema" not in f.attrs:
                return False
            return f.attrs["schema"] != SCHEMA or int(f.attrs.get("n_done", 0)) > 0
    except OSError as exc:
        refuse_if_locked(partial, exc)
        log.warning("%s is unreadable (%s), as a run killed before its first write leaves "
                    "it; starting again", partial, exc)
        return False


def refuse_if_locked(path: Path, exc: OSError) -> None:
    """HDF5 locks a file it writes: a lock error means a live process is writing `path`."""
    if exc.errno == errno.EAGAIN or "unable to lock file" in str(exc):
        raise ValueError(f"{path} is being written by another process (it holds the HDF5 "
                         "file lock); wait for it to finish or stop it, then --resume") from exc


def check_complete(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to treat `out` as the requested cache unless it is a complete activation file
    made with the same model, hooks, corpus and settings."""
    try:
        with h5py.File(out, "r") as f:
            attrs = {k: f.attrs.get(k) for k in (*IDENTITY, "shard", "schema", "complete")}
    except OSError as exc:
        refuse_if_locked(out, exc)
        raise ValueError(f"{out} exists but is not a readable HDF5 file ({exc}); pass "
                         "--overwrite to replace it") from exc
    if attrs["schema"] != SCHEMA or not attrs["complete"]:
        raise FileExistsError(f"{out} exists but is not a complete workbench activation file "
                              f"(schema {attrs['schema']!r}); pass --overwrite to replace it")
    diffs = [k for k in (*IDENTITY, "shard") if attrs[k] != identity[k]]
    if diffs:
        found = {k: attrs[k] for k in diffs}
        raise FileExistsError(
            f"{out} already exists, made with different {', '.join(diffs)} ({found}); "
            "--resume leaves it as it is: pass --overwrite to replace it, or another --out"
        )
