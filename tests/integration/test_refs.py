"""A model reference is resolved once and its weights are read once per command: the belief
tests, probes and in-context learning each read `model.safetensors` one time, and the
reference's corpus and output folder come from `config.json` alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workbench.cli.core import main
from workbench.models import checkpoints
from workbench.models.refs import ModelRef
from workbench.training.trainer import TrainResult


@pytest.fixture
def weight_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of a `model.safetensors` file (loading it, or hashing it to verify it)."""
    reads: list[str] = []

    def counted(func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
            if Path(path).name == "model.safetensors":
                reads.append(f"{func.__name__}:{path}")
            return func(path, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(checkpoints, "load_file", counted(checkpoints.load_file))
    monkeypatch.setattr(checkpoints, "sha256_file", counted(checkpoints.sha256_file))
    return reads


@pytest.mark.parametrize("argv", [
    ["beliefs", "--method", "icl", "--n", "2", "--n-trace", "0", "--layer", "0"],
    ["probe", "--tasks", "pos", "--max-tokens", "3000", "--folds", "3"],
    ["icl", "--k", "0,1", "--n", "2", "--no-mechanism"],
], ids=["beliefs", "probe", "icl"])
def test_weights_are_read_once_per_command(argv: list[str], tiny_run: TrainResult,
                                           tmp_path: Path, weight_reads: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    assert main([*argv, "--model", str(tiny_run.run_dir), "--out", str(out),
                 "--no-progress"]) == 0, capsys.readouterr().err
    loads = [r for r in weight_reads if r.startswith("load_file")]
    assert len(loads) == 1, weight_reads
    assert len(weight_reads) == 2, weight_reads  # and one checksum when it is loaded
    assert out.is_file()


def test_a_reference_is_resolved_from_its_small_files(tiny_run: TrainResult,
                                                      world_corpus: Path,
                                                      weight_reads: list[str]) -> None:
    run = ModelRef.of(tiny_run.run_dir)
    assert run.kind == "run" and run.run_dir == tiny_run.run_dir
    assert run.corpus is not None and run.corpus.resolve() == world_corpus.resolve()
    assert run.report_path("probe") == tiny_run.run_dir / "analyses" / "probe.json"
    steps = [c.step for c in run.checkpoints]
    assert steps == sorted(steps) and len(steps) >= 2
    first = run.checkpoints[0]
    ckpt = ModelRef.of(first.path)
    assert ckpt.kind == "checkpoint" and ckpt.run_dir == tiny_run.run_dir
    assert ckpt.output_dir == tiny_run.run_dir  # a checkpoint's results go to its run
    assert [c.step for c in run.select(f"{steps[0]},{steps[-1]}")] == [steps[0], steps[-1]]
    with pytest.raises(ValueError, match=r"no checkpoint at step\(s\) \[7777\]"):
        run.select("7777")
    assert weight_reads == []  # none of this reads the weights
    loaded = [(c.step, type(m).__name__) for c, m in run.load_checkpoints(str(steps[0]))]
    assert loaded == [(steps[0], "TransformerBridge")]
    assert len([r for r in weight_reads if r.startswith("load_file")]) == 1


def test_references_that_are_not_ours(tmp_path: Path) -> None:
    hub = ModelRef.of("org/model")
    assert hub.kind == "hub" and hub.output_dir == Path("runs/org__model")
    assert hub.corpus is None and hub.checkpoints == []
    with pytest.raises(ValueError, match="is not a run of ours"):
        hub.select("all")
    missing = ModelRef.of(str(tmp_path / "nope"))
    assert missing.kind == "missing"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        missing.corpus_path(None, required="the probes")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ModelRef.of(empty).kind == "missing" and ModelRef.of(empty).output_dir == empty
    with pytest.raises(FileNotFoundError, match="holds no model"):
        ModelRef.of(empty).load()
