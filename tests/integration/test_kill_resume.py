"""Resume is exact or refused: `kill -9` at any instant of `workbench train` or `workbench
cache`, then `--resume`, gives what an uninterrupted run gives; a finished run or a complete
cache is left byte for byte; what cannot continue exactly is refused with the fix.

The kills are deterministic: one helper process imports the workbench once, then forks a
child per instant that patches a function (`save_checkpoint`, `_Trainer._log`, `_write`, ...)
to SIGKILL itself before or after its N-th call and runs the real CLI. Resumes run the CLI's
`main` in this process (a subprocess costs ~7 s of imports); every computation here and in
the children uses one thread, so results compare bit for bit."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from workbench.cache.store import CacheConfig, cache_activations
from workbench.cli.core import main
from workbench.models.checkpoints import list_checkpoints
from workbench.models.config import TRAIN_PRESETS, TrainConfig
from workbench.training.trainer import train

# ckpt steps 0 1 2 4 8 16 30; loss logged at 10 20 30; validation at 0 and 30
TRAIN_ARGS = ["--preset", "tiny", "--steps", "30", "--batch-size", "8", "--device", "cpu",
              "--no-progress"]
# 20000 rows: three writes of at most 8192 rows (the CLI's flush size)
CACHE_ARGS = ["--hooks", "blocks.*.hook_resid_post", "--split", "train", "--max-tokens",
              "20000", "--batch-size", "16", "--chunk", "--no-progress"]
TIMING = ("tokens_per_s", "elapsed")

# Runs in a helper process: argv[1] is a JSON list of jobs {name, argv, module, attr, when,
# call}. Each job runs in a forked child that patches `module.attr` to SIGKILL itself
# `before` / `after` its call number `call`, `torn` (a `_Trainer._log` writing half its line
# first) or `after-last` (a `_write` that wrote the last rows). Prints {name: outcome}.
KILLER = r"""
import json, os, signal, sys
import torch
torch.set_num_threads(1)
import workbench.cache.store, workbench.models.checkpoints, workbench.models.loader, workbench.plots
import workbench.training.trainer
from workbench.cli.core import main


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def install(job):
    owner = sys.modules[job["module"]]
    *path, name = job["attr"].split(".")
    for part in path:
        owner = getattr(owner, part)
    original, when, calls = getattr(owner, name), job["when"], [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        hit = calls[0] == job["call"]
        if hit and when == "before":
            die()
        if hit and when == "torn":
            trainer, record = args
            line = json.dumps(record) + "\n"
            with open(trainer.run_dir / "metrics.jsonl", "a") as f:
                f.write(line[: len(line) // 2])
            die()
        out = original(*args, **kwargs)
        if hit and when == "after":
            die()
        if when == "after-last" and args[0].attrs["n_done"] == args[0].attrs["n_rows"]:
            die()
        return out

    setattr(owner, name, wrapper)


def child(job):
    install(job)
    try:
        main(job["argv"])
    finally:
        os._exit(3)  # the instant was never reached


outcome, running = {}, {}
jobs = json.loads(sys.argv[1])
while jobs or running:
    while jobs and len(running) < 2:
        job = jobs.pop(0)
        pid = os.fork()
        if pid == 0:
            child(job)
        running[pid] = job["name"]
    pid, status = os.wait()
    name = running.pop(pid)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    outcome[name] = "killed" if killed else f"status {status}"
print(json.dumps(outcome))
"""


@dataclass(frozen=True)
class Instant:
    name: str
    module: str
    attr: str
    when: str
    call: int = 1


TRAIN_INSTANTS = [
    # run.json, tokenizer.json and the step-0 validation record written, no checkpoint yet
    Instant("before-first-checkpoint", "workbench.training.trainer", "save_checkpoint", "before"),
    # inside the step-8 save: a temporary checkpoint directory without config.json
    Instant("inside-checkpoint-write", "workbench.models.checkpoints", "write_json_atomic",
            "before", 5),
    # between checkpoints 8 and 16, half of the step-10 record written
    Instant("torn-metrics-line", "workbench.training.trainer", "_Trainer._log", "torn", 2),
    # step 16 saved, step 8 still holds its train_state.pt
    Instant("before-old-state-deleted", "workbench.training.trainer", "save_checkpoint", "after",
            6),
    # the last checkpoint saved, step 16 still holds its train_state.pt, no figure
    Instant("final-before-old-state-deleted", "workbench.training.trainer", "save_checkpoint",
            "after", 7),
    # everything but training.fig.json
    Instant("before-figure", "workbench.plots", "training_figure", "before"),
]
CACHE_INSTANTS = [
    # out.partial just created (nothing flushed), before its datasets are
    Instant("before-create", "workbench.cache.store", "_create", "before"),
    Instant("before-first-write", "workbench.cache.store", "_write", "before"),
    Instant("after-first-write", "workbench.cache.store", "_write", "after"),
    Instant("after-last-write", "workbench.cache.store", "_write", "after-last"),
    # complete = True, file closed, not renamed yet
    Instant("before-rename", "workbench.cache.store", "os.replace", "before"),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cli(*argv: str) -> None:
    assert main(["--verbose", *argv]) == 0  # --verbose: errors raise with their traceback


def _reference_cfg() -> TrainConfig:
    """The training settings of TRAIN_ARGS."""
    return TRAIN_PRESETS["tiny"].replace(steps=30, batch_size=8)


def _train_argv(corpus: Path, run: Path, *extra: str) -> list[str]:
    return ["train", *TRAIN_ARGS, "--corpus", str(corpus), "--run", str(run), *extra]


def _cache_argv(run: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["cache", "--model", str(run), "--corpus", str(corpus), "--out", str(out),
            *CACHE_ARGS, *extra]


@dataclass(frozen=True)
class Reference:
    run: Path
    acts: Path


@pytest.fixture(scope="module")
def reference(world_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """Uninterrupted runs (read-only)."""
    root = tmp_path_factory.mktemp("reference")
    _cli(*_train_argv(world_corpus, root / "run"))
    _cli(*_cache_argv(root / "run", world_corpus, root / "acts.h5"))
    return Reference(root / "run", root / "acts.h5")


@pytest.fixture(scope="module")
def killed(world_corpus: Path, reference: Reference,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each instant's run directory or activation file as the kill left it (read-only)."""
    root = tmp_path_factory.mktemp("killed")
    paths = {f"train:{i.name}": root / i.name for i in TRAIN_INSTANTS}
    paths |= {f"cache:{i.name}": root / f"{i.name}.h5" for i in CACHE_INSTANTS}
    jobs = [{**vars(i), "name": f"train:{i.name}",
             "argv": _train_argv(world_corpus, paths[f"train:{i.name}"])}
            for i in TRAIN_INSTANTS]
    jobs += [{**vars(i), "name": f"cache:{i.name}",
              "argv": _cache_argv(reference.run, world_corpus, paths[f"cache:{i.name}"])}
             for i in CACHE_INSTANTS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLER, json.dumps(jobs)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome == {name: "killed" for name in paths}, proc.stderr
    return paths


# --- comparisons ---------------------------------------------------------------------------

def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _digests(root: Path) -> dict[str, tuple[str, int]]:
    return {rel: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for rel, p in _files(root).items()}


def _records(path: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in path.read_text().splitlines()]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(a == b)


def _train_state(path: Path) -> dict[str, Any]:
    """A training state without its timing (`elapsed`) and the numpy and Python RNG states:
    training draws from neither, so they hold whatever the process that started the run had
    (the reference starts in this process, a killed run in a child)."""
    state = torch.load(path, weights_only=True)
    return {**state, "elapsed": None, "rng": {"torch": state["rng"]["torch"]}}


def _assert_same_run(got: Path, want: Path) -> None:
    """Same files, same bytes, apart from timings (`tokens_per_s` and `elapsed` of metrics)
    and what `_train_state` leaves out (and so the state's checksum in config.json)."""
    a, b = _files(got), _files(want)
    assert a.keys() == b.keys()
    for rel, path in a.items():
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(b[rel].stat().st_mode), rel
        if rel == "metrics.jsonl":
            assert _records(path) == _records(b[rel])
        elif path.name == "train_state.pt":
            x, y = (_train_state(p) for p in (path, b[rel]))
            assert _same(x, y), rel
        elif path.name == "config.json":
            x, y = (json.loads(p.read_text()) for p in (path, b[rel]))
            for c in (x, y):
                c["sha256"].pop("train_state.pt", None)
            assert x == y, rel
        else:
            assert path.read_bytes() == b[rel].read_bytes(), rel


def _assert_same_cache(got: Path, want: Path) -> None:
    """Same datasets and the same attributes (none of them is a timing)."""
    with h5py.File(got, "r") as a, h5py.File(want, "r") as b:
        names: list[list[str]] = [[], []]
        for f, out in ((a, names[0]), (b, names[1])):
            f.visititems(lambda n, o, out=out: out.append(n) if isinstance(o, h5py.Dataset)
                         else None)
        assert names[0] == names[1]
        for name in names[0]:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name][()], b[name][()])
        assert sorted(a.attrs) == sorted(b.attrs)
        for key in a.attrs:
            assert a.attrs[key] == b.attrs[key], key


# --- what each kill leaves -----------------------------------------------------------------

def _with_state(run: Path) -> list[str]:
    return [c.name for c in list_checkpoints(run) if (c / "train_state.pt").exists()]


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def _check_train_kill(name: str, run: Path) -> None:
    """The kill happened where the instant says."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    figure = (run / "training.fig.json").exists()
    if name == "before-first-checkpoint":
        assert (run / "run.json").exists() and not list_checkpoints(run) and len(lines) == 1
    elif name == "inside-checkpoint-write":
        assert _with_state(run) == ["step_000004"]
        assert list((run / "checkpoints").glob(".step_000008.tmp-*"))
    elif name == "torn-metrics-line":
        assert _with_state(run) == ["step_000008"] and not _parses(lines[-1])
    elif name == "before-old-state-deleted":
        assert _with_state(run) == ["step_000008", "step_000016"]
    elif name == "final-before-old-state-deleted":
        assert _with_state(run) == ["step_000016", "step_000030"] and not figure
    else:
        assert _with_state(run) == ["step_000030"] and not figure


def _check_cache_kill(name: str, out: Path) -> None:
    partial = out.with_name(out.name + ".partial")
    assert partial.exists() and not out.exists()
    try:
        with h5py.File(partial, "r") as f:
            attrs = dict(f.attrs)
    except OSError:  # nothing flushed yet
        attrs = {}
    n_done, n_rows = attrs.get("n_done", 0), attrs.get("n_rows", -1)
    if name in ("before-create", "before-first-write"):
        assert n_done == 0
    elif name == "after-first-write":
        assert 0 < n_done < n_rows
    elif name == "after-last-write":
        assert n_done == n_rows and not attrs["complete"]
    else:
        assert n_done == n_rows and attrs["complete"]


# --- kill, then resume ---------------------------------------------------------------------

@pytest.mark.parametrize("instant", [i.name for i in TRAIN_INSTANTS])
def test_train_killed_then_resumed_equals_uninterrupted(
    instant: str, killed: dict[str, Path], reference: Reference, world_corpus: Path,
    tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed[f"train:{instant}"], run)
    _check_train_kill(instant, run)
    _cli(*_train_argv(world_corpus, run, "--resume"))
    _assert_same_run(run, reference.run)


@pytest.mark.parametrize("instant", [i.name for i in CACHE_INSTANTS])
def test_cache_killed_then_resumed_equals_uninterrupted(
    instant: str, killed: dict[str, Path], reference: Reference, world_corpus: Path,
    tmp_path: Path
) -> None:
    out = tmp_path / "acts.h5"
    partial = out.with_name(out.name + ".partial")
    left = killed[f"cache:{instant}"]
    shutil.copyfile(left.with_name(left.name + ".partial"), partial)
    _check_cache_kill(instant, out)
    _cli(*_cache_argv(reference.run, world_corpus, out, "--resume"))
    assert not partial.exists()
    _assert_same_cache(out, reference.acts)


# --- finished work is left alone -----------------------------------------------------------

def test_resume_of_a_finished_run_changes_no_byte(reference: Reference, world_corpus: Path,
                                                  tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference.run, run)
    before = _digests(run)
    # the real command line, in its own process: nothing to train, so no model is built
    proc = subprocess.run([sys.executable, "-m", "workbench.cli.core",
                           *_train_argv(world_corpus, run, "--resume")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "trained tiny for 30 steps" in proc.stdout
    assert _digests(run) == before
    result = train("tiny", world_corpus, run, _reference_cfg(), device="cpu", progress=False,
                   resume=True)
    assert _digests(run) == before
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == 30
    assert result.final_loss == [r["loss"] for r in records if "loss" in r][-1]
    assert result.final_val_loss == records[-1]["val_loss"]
    assert result.tokens_per_s == [r["tokens_per_s"] for r in records if "loss" in r][-1]
    assert result.seconds > 0


def test_resume_of_a_complete_cache_is_a_no_op(reference: Reference, world_corpus: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "acts.h5"
    _cli(*_cache_argv(reference.run, world_corpus, out, "--resume"))  # nothing yet: starts
    _assert_same_cache(out, reference.acts)
    before = _digests(tmp_path)
    _cli(*_cache_argv(reference.run, world_corpus, out, "--resume"))
    assert _digests(tmp_path) == before
    # made with other settings: refused, not replaced
    argv = _cache_argv(reference.run, world_corpus, out, "--resume")
    argv[argv.index("20000")] = "10000"
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists, made with different plan" in err and "--overwrite" in err
    assert _digests(tmp_path) == before


# --- refusals ------------------------------------------------------------------------------

def test_resume_of_a_missing_or_empty_run_is_an_error(world_corpus: Path,
                                                      tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"nope: it does not exist; start the run "
                                                r"without --resume"):
        train("tiny", world_corpus, missing, _reference_cfg(), device="cpu", progress=False,
              resume=True)
    assert not missing.exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: it is empty; start the run without"):
        train("tiny", world_corpus, tmp_path / "empty", _reference_cfg(), device="cpu",
              progress=False, resume=True)
    assert not any((tmp_path / "empty").iterdir())


def test_resume_with_overwrite_is_an_error(tmp_path: Path) -> None:
    # refused before any work: the corpus and the model are not even looked at
    with pytest.raises(ValueError, match="pass one of them"):
        train("tiny", tmp_path / "no-corpus", tmp_path / "r", resume=True, overwrite=True)
    with pytest.raises(ValueError, match="pass one of them"):
        cache_activations(None, None, CacheConfig(), tmp_path / "a.h5",  # type: ignore[arg-type]
                          resume=True, overwrite=True)
    assert not any(tmp_path.iterdir())


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_train_state_falls_back_to_an_earlier_one(
    killed: dict[str, Path], reference: Reference, world_corpus: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed["train:before-old-state-deleted"], run)  # states at 8 and 16
    _truncate(run / "checkpoints" / "step_000016" / "train_state.pt")
    with caplog.at_level(logging.WARNING, logger="workbench.training.trainer"):
        _cli(*_train_argv(world_corpus, run, "--resume"))
    assert "cannot resume from" in caplog.text and "step_000016" in caplog.text
    _assert_same_run(run, reference.run)


def test_truncated_train_state_without_fallback_is_refused(
    killed: dict[str, Path], reference: Reference, world_corpus: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed["train:torn-metrics-line"], run)  # one state, at step 8
    state = run / "checkpoints" / "step_000008" / "train_state.pt"
    _truncate(state)
    before = _digests(run)
    with pytest.raises(ValueError, match=rf"{re.escape(str(state))}.*corrupt or truncated.*"
                                         r"--overwrite"):
        train("tiny", world_corpus, run, _reference_cfg(), device="cpu", progress=False,
              resume=True)
    assert _digests(run) == before
    # deleting the checkpoint leaves none to resume from: also refused, not a silent restart
    shutil.rmtree(state.parent)
    with pytest.raises(ValueError, match="none of its checkpoints keeps a train_state.pt.*"
                                         "--overwrite"):
        train("tiny", world_corpus, run, _reference_cfg(), device="cpu", progress=False,
              resume=True)
    _cli(*_train_argv(world_corpus, run, "--overwrite"))  # the fix the message names
    _assert_same_run(run, reference.run)
