"""Where the tools may write, and what they may delete.

- `--overwrite` removes a directory only when it is recognisably ours and holds nothing else,
  checked over the whole tree (`check_replaceable`: a run with its `run.json`, a corpus with
  its `corpus.json`, and only the files and folders those tools write, no symbolic links);
  a file only when it is one of ours (`check_replaceable_file`).
- An output that equals, contains or lies inside an input is refused (`check_separate`).
- Every file and directory the tools create follows the user's umask (`apply_umask`), also
  those made through temporary files (`mkstemp` makes them 0600, `mkdtemp` 0700).

>>> check_separate("runs/demo/acts.h5", {"--model": "runs/demo"})
Traceback (most recent call last):
...
ValueError: the output runs/demo/acts.h5 lies inside the input --model runs/demo; ...
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.layout import (
    ANALYSES_DIR,
    CHECKPOINTS_DIR,
    CONFIG_JSON,
    EVAL_FIGURE,
    EVAL_JSON,
    METRICS,
    RUN_JSON,
    STEP_PREFIX,
    TOKENIZER_JSON,
    TRAIN_STATE,
    TRAINING_FIGURE,
    WEIGHTS,
    read_run_json,
    scheduled_steps,
    step_of,
)

# What each of our directories may hold, over the whole tree: a rule maps entry-name globs to
# FILE (a regular file), ANY (a temporary file or folder of an atomic write: `.NAME.*`) or
# the rule of a folder. Anything else (another name, a file where a folder belongs, a
# symbolic link anywhere) is foreign, and a directory holding something foreign is never
# deleted. `marker` says the top folder is ours.
FILE, ANY = "file", "any"
Rule = Mapping[str, Any]
_TEMP: Rule = {".*": ANY}
STEP_RULE: Rule = {CONFIG_JSON: FILE, WEIGHTS: FILE, TOKENIZER_JSON: FILE, TRAIN_STATE: FILE,
                   **_TEMP}
_KRONFLUENCE: Rule = {"*.safetensors": FILE, "*.json": FILE, **_TEMP}
ATTRIBUTION_RULE: Rule = {  # MODEL/attribution/<weights digest>/ (`workbench attribute`)
    "[0-9a-f]*": {"ekfac": {"meta.json": FILE, "ekfac": {"factors_*": _KRONFLUENCE,
                                                         "scores_*": _KRONFLUENCE, **_TEMP},
                            **_TEMP},
                  "scores": {"*.npy": FILE, **_TEMP}, **_TEMP},
    **_TEMP}
RUN_RULE: Rule = {
    RUN_JSON: FILE, TOKENIZER_JSON: FILE, METRICS: FILE, f"{METRICS}.tmp": FILE,
    TRAINING_FIGURE: FILE, EVAL_JSON: FILE, EVAL_FIGURE: FILE,
    "provenance.json": FILE, "*.h5": FILE, "*.h5.partial": FILE, "*.fig.json": FILE,
    CHECKPOINTS_DIR: {f"{STEP_PREFIX}[0-9][0-9][0-9][0-9][0-9][0-9]": STEP_RULE, **_TEMP},
    ANALYSES_DIR: {"*.json": FILE, "*.h5": FILE, "*.h5.partial": FILE, **_TEMP},
    "attribution": ATTRIBUTION_RULE, **_TEMP}
CORPUS_RULE: Rule = {
    "corpus.json": FILE, "tokenizer.json": FILE, "world.json": FILE, "*.tokens.npy": FILE,
    "*.docs.npy": FILE, "*.labels.npz": FILE, "*.doc_facts.npz": FILE,
    "*.dropped_docs.npy": FILE, "eval": {"*.jsonl": FILE, **_TEMP}, **_TEMP}
KINDS: dict[str, tuple[str, Rule, str]] = {
    # kind: (marker, what the tree may hold, what makes one)
    "run": (RUN_JSON, RUN_RULE, "`workbench train`"),
    "corpus": ("corpus.json", CORPUS_RULE, "`workbench world build`"),
}


def foreign_entries(path: str | os.PathLike[str], rule: Rule) -> list[str]:
    """Entries under the folder `path` (relative, with `/`) that `rule` does not allow: names
    no tool of ours writes there, symbolic links, and files where folders belong (or the
    reverse). A foreign folder is named once, not everything in it.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> step = root / CHECKPOINTS_DIR / "step_000010"
    >>> step.mkdir(parents=True)
    >>> (step / "notes.txt").write_text("mine")
    4
    >>> foreign_entries(root, RUN_RULE)
    ['checkpoints/step_000010/notes.txt']
    """
    out: list[str] = []
    _walk(Path(path), rule, "", out)
    return out


def _walk(folder: Path, rule: Rule, prefix: str, out: list[str]) -> None:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        name = prefix + entry.name
        what = next((w for pat, w in rule.items() if fnmatch.fnmatchcase(entry.name, pat)),
                    None)
        if what is None or entry.is_symlink():
            out.append(name)
        elif what == ANY:
            continue
        elif what == FILE:
            if not stat.S_ISREG(entry.lstat().st_mode):
                out.append(name)
        elif entry.is_dir():
            _walk(entry, what, name + "/", out)
        else:
            out.append(name)


def current_umask() -> int:
    """The process umask (read without changing it for good)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give `path` the mode a plain `open`/`mkdir` would: 0666 (files) or 0777 (directories)
    less the umask. For files made through `mkstemp`/`mkdtemp`, before they are renamed."""
    path = Path(path)
    base = 0o777 if path.is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def check_separate(out: str | os.PathLike[str], inputs: Mapping[str, object],
                   containers: Mapping[str, object] | None = None) -> None:
    """Refuse an output that equals, contains or lies inside one of `inputs` (flag -> path;
    None values are skipped). `containers` are inputs an output may lie inside (a run
    directory holds its own analyses), but not equal or contain."""
    o = _resolved(out)
    both = [(f, v, False) for f, v in inputs.items()]
    both += [(f, v, True) for f, v in (containers or {}).items()]
    for flag, value, container in both:
        if value is None:
            continue
        i = _resolved(str(value))
        if o == i:
            how = "is"
        elif i in o.parents and not container:
            how = "lies inside"
        elif o in i.parents:
            how = "contains"
        else:
            continue
        raise ValueError(f"the output {out} {how} the input {flag} {value}; writing there "
                         "could destroy what is read: choose an output outside the inputs")


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an output whose nearest existing folder cannot be written."""
    folder = Path(path).expanduser().absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot write {path}: {folder} is a file, not a folder; choose "
                         "another output path")
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: the folder {folder} is not writable; choose "
                         "an output in a folder you can write")
    try:  # what access() cannot tell (/proc, read-only mounts): a folder made and removed
        os.rmdir(tempfile.mkdtemp(prefix=".workbench-check-", dir=folder))
    except OSError as exc:
        raise ValueError(f"cannot write {path}: nothing can be created in {folder} "
                         f"({exc.strerror or exc}); choose an output in a folder you can "
                         "write") from None


def check_replaceable(path: str | os.PathLike[str], kind: str) -> None:
    """Refuse to delete the directory `path` unless it is a `kind` directory of ours (`run`,
    `corpus`) that holds only what our tools write there."""
    marker, allowed, maker = KINDS[kind]
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"refusing to overwrite {path}: it is a symbolic link; pass the "
                         "directory itself or another output")
    if not (path / marker).is_file():
        raise ValueError(f"refusing to overwrite {path}: it has no {marker}, so it is not a "
                         f"{kind} made by {maker}; choose an empty or new directory")
    foreign = foreign_entries(path, allowed)
    if kind == "run":
        foreign += _unscheduled_steps(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise ValueError(f"refusing to overwrite {path}: besides the {kind}'s own files it "
                         f"holds {shown}; move them out first or choose another directory")


def _unscheduled_steps(run: Path) -> list[str]:
    """Checkpoint folders the run's own schedule never writes (a user's copy named like one);
    none when `run.json` cannot be read (its names were checked already)."""
    try:
        train = read_run_json(run)["train"]
        steps = scheduled_steps(int(train["steps"]), int(train["ckpt_interval"]))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    folder = run / CHECKPOINTS_DIR
    if not folder.is_dir() or folder.is_symlink():
        return []
    return [f"{CHECKPOINTS_DIR}/{p.name}" for p in sorted(folder.iterdir())
            if p.name.startswith(STEP_PREFIX) and step_of(p) not in steps]


def check_replaceable_file(path: str | os.PathLike[str], what: str) -> None:
    """Refuse to replace the file `path` unless it is one of ours: a JSON report with a
    `workbench.*` schema (`what="report"`) or an HDF5 activation file (`what="activations"`).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not stat.S_ISREG(path.lstat().st_mode):
        raise ValueError(f"refusing to overwrite {path}: it is not a regular file; choose "
                         "another output path")
    if what == "report":
        ours = _is_our_report(path)
    else:
        ours = _is_our_hdf5(path)
    if not ours:
        kind = {"report": "a report", "activations": "an activation file"}[what]
        raise ValueError(f"refusing to overwrite {path}: it is not {kind} made by workbench; "
                         "choose another output path")


def _is_our_report(path: Path) -> bool:
    """A JSON report with a `workbench.*` schema, or the truncated start of one (a report
    damaged by a crash may be replaced by running the analysis again)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        schema = json.loads(text).get("schema", "")
        return isinstance(schema, str) and schema.startswith("workbench.")
    except (json.JSONDecodeError, AttributeError):
        head = text[:4096]
        return head.lstrip().startswith("{") and '"schema": "workbench.' in head


def _is_our_hdf5(path: Path) -> bool:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return str(f.attrs.get("schema", "")).startswith("workbench.")
    except (OSError, ValueError):
        return False


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished directory `tmp` at `out` by renames: an existing `out` is moved aside,
    `tmp` takes its place, and only then is the old one deleted (a crash in between leaves
    `out` or its `.old-*` copy, never a half-written `out`)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
