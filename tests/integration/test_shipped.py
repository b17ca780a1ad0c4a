"""The trained `default` model shipped in datasets/models/default: it loads with verified
checksums, has the `default` preset's shape, passes `workbench eval` on the seed-0 world; and
export/install round-trip a run (what `make train-default` and `make demo` do)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from workbench.cli.core import main
from workbench.layout import step_of
from workbench.models.checkpoints import list_checkpoints, load_checkpoint, sha256_file
from workbench.models.config import PRESETS, TRAIN_PRESETS
from workbench.models.loader import load
from workbench.models.refs import ModelRef
from workbench.models.shipped import CORPUS, SHIPPED, export_run, install
from workbench.training.trainer import TrainResult
from workbench.world import WorldConfig, build_corpus
from workbench.world.tokenizer import world_words


def test_shipped_default_model_loads_matches_its_record_and_passes_eval(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoints = list_checkpoints(SHIPPED)
    checkpoint = checkpoints[-1]
    ckpt = load_checkpoint(checkpoint)  # every sha256 in config.json verified
    provenance = json.loads((SHIPPED / "provenance.json").read_text())
    # the checkpoints shipped are those its provenance names (the final one, and the training
    # history when it was exported with one: `export_run(history=HISTORY)`)
    assert [step_of(p) for p in checkpoints] == provenance.get("history", [ckpt.step])
    for path in checkpoints:
        assert not (path / "train_state.pt").exists()
        assert json.loads((path / "config.json").read_text())["corpus"] == CORPUS
    assert provenance["sha256"]["model.safetensors"] == sha256_file(
        checkpoint / "model.safetensors")
    assert ckpt.model_cfg == PRESETS["default"].replace(d_vocab=len(world_words()) + 4)
    assert provenance["train"] == json.loads(json.dumps(TRAIN_PRESETS["default"].__dict__))
    assert ckpt.step == TRAIN_PRESETS["default"].steps and not (checkpoint / "train_state.pt"
                                                                ).exists()
    assert ckpt.meta["corpus"] == CORPUS
    run = install(tmp_path / "runs" / "demo")
    # the seed-0 world at any size has the same facts, tokenizer and evaluation items
    build_corpus(WorldConfig(seed=0), tmp_path / "runs" / "world", n_tokens_train=20_000,
                 progress=False)
    assert Path(ModelRef.of(run).corpus).resolve() == (tmp_path / "runs" / "world").resolve()
    assert main(["eval", "--model", str(run), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((run / "eval.json").read_text())
    failed = {k: m["value"] for k, m in report["metrics"].items() if m.get("meets_goal") is False}
    assert not failed, printed
    with pytest.raises(FileExistsError, match="exists"):
        install(run)


def test_export_then_install_round_trips_a_run(tiny_run: TrainResult, world_corpus: Path,
                                               tmp_path: Path) -> None:
    steps = [step_of(p) for p in list_checkpoints(tiny_run.run_dir)]
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at step\(s\) \[7777\]"):
        export_run(tiny_run.run_dir, tmp_path / "shipped", history=(0, 7777))
    out = export_run(tiny_run.run_dir, tmp_path / "shipped", history=(steps[0],))
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(tiny_run.run_dir, out, history=(steps[0],))
    first, last = list_checkpoints(out)
    assert [first.name, last.name] == [list_checkpoints(tiny_run.run_dir)[i].name
                                       for i in (0, -1)]
    assert not (last / "train_state.pt").exists()
    assert json.loads((out / "provenance.json").read_text())["history"] == [steps[0],
                                                                           steps[-1]]
    assert json.loads((out / "run.json").read_text())["corpus"] == CORPUS
    run = install(tmp_path / "runs" / "copy", out)
    shutil.copytree(world_corpus, tmp_path / "runs" / "world")
    assert Path(ModelRef.of(run).corpus).resolve() == (tmp_path / "runs" / "world").resolve()
    original, copy = load(tiny_run.run_dir), load(run)
    tokens = torch.tensor([[2, 5, 6, 7, 8]])
    assert torch.equal(original(tokens), copy(tokens))
    export_run(tiny_run.run_dir, out, overwrite=True, history=())  # replaced atomically
    assert len(list_checkpoints(out)) == 1
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []
