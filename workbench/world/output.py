"""Safe, reproducible writing of corpus directories.

Outputs are written into a temporary sibling directory and moved into place at the end, so a
crash never leaves a half-written corpus. Files carry no timestamps, so the same inputs give
byte-identical files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from workbench.outputs import check_replaceable, replace_dir

MANIFEST = "corpus.json"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse to clobber anything but an empty directory or (with overwrite) a corpus."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory; choose another out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"output directory {out} is not empty; pass overwrite=True / --overwrite to "
                "replace it, or choose another out"
            )
        check_replaceable(out, "corpus")  # ours (corpus.json) and nothing else in it


@contextmanager
def atomic_output_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory that replaces `out` when the block succeeds."""
    out = Path(out)
    check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like `np.savez` (stored, not compressed, so `load_npz_mmap` can map the members),
    with fixed zip timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def load_npz_mmap(path: Path, check: bool = True) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file, memory-mapped when stored uncompressed (read into
    memory otherwise): label arrays of a large split cost nothing until sliced. Each stored
    member is checked against its CRC-32 first (about 0.1 s per 100 MB), as reading it
    would: a damaged file raises `zipfile.BadZipFile` (`check=False` skips it, for a file
    checked already)."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as member:
                    out[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            f.seek(info.header_offset)
            local = f.read(30)  # local file header: name and extra lengths at bytes 26-29
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + \
                int.from_bytes(local[28:30], "little")
            f.seek(start)
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
            if check:
                _check_crc(f, start, info)
            out[name] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                  order="F" if fortran else "C")
    return out


def _check_crc(f: BinaryIO, start: int, info: zipfile.ZipInfo) -> None:
    """Check a stored member's CRC-32 (mapping it skips the check reading would make)."""
    f.seek(start)
    crc, left = 0, info.compress_size
    while left > 0:
        chunk = f.read(min(left, 1 << 22))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    if left or crc != info.CRC:
        raise zipfile.BadZipFile(f"member {info.filename} fails its CRC-32 check")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65535 else np.dtype(np.int32)


def write_split(
    out: Path, split: str, tokens: np.ndarray, docs: np.ndarray, vocab_size: int
) -> dict[str, str]:
    """Write `{split}.tokens.npy` and `{split}.docs.npy`; return their file names."""
    files = {"tokens": f"{split}.tokens.npy", "docs": f"{split}.docs.npy"}
    np.save(out / files["tokens"], tokens.astype(token_dtype(vocab_size)), allow_pickle=False)
    np.save(out / files["docs"], docs.astype(np.int64).reshape(-1, 2), allow_pickle=False)
    return files
