"""The `workbench` command line end to end, and its one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workbench.cli.core import main
from workbench.training.trainer import TrainResult


def test_world_build_train_eval_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus, run = tmp_path / "world", tmp_path / "run"
    assert main(["world", "build", "--seed", "3", "--n-people", "8", "--tokens", "30000",
                 "--out", str(corpus)]) == 0
    assert "corpus written to" in capsys.readouterr().out
    assert main(["train", "--preset", "tiny", "--corpus", str(corpus), "--run", str(run),
                 "--steps", "4", "--device", "cpu", "--no-progress"]) == 0
    assert "trained tiny for 4 steps" in capsys.readouterr().out
    assert main(["eval", "--model", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fact_recall_heldout" in out and "induction_ratio" in out
    results = json.loads((run / "eval.json").read_text())
    assert results["schema"] == "workbench.eval/1"
    assert (run / "eval.fig.json").is_file()
    assert main(["info", "--model", str(run)]) == 0
    card = capsys.readouterr().out
    assert "layers        2" in card and "steps         4" in card
    assert "checkpoints   4: 0, 1, 2, 4" in card


def test_info_on_a_trained_run(tiny_run: TrainResult, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", str(tiny_run.run_dir)]) == 0
    card = capsys.readouterr().out
    assert "steps         2000" in card and "validation" in card


def test_info_on_a_local_hf_directory(hf_gpt2_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", str(hf_gpt2_dir)]) == 0
    assert "Hugging Face" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--preset", "huge", "--run", "{tmp}/r"],
         "--preset: 'huge' is not one of tiny, attn2, default, small"),
        (["train", "--preset", "tiny", "--run", "{tmp}/r", "--corpus", "{tmp}/none"],
         "run `workbench world build --out"),
        (["info", "--model", "./missing-run"], "model reference './missing-run' does not exist"),
        (["info", "--model", "gpt2"], "HF_HUB_OFFLINE is set"),
        (["world", "build", "--text", "{tmp}/empty.txt", "--out", "{tmp}/t"], "empty"),
        (["world", "build", "--text", "{tmp}/nope.txt", "--out", "{tmp}/t"], "nope.txt"),
    ],
)
def test_bad_input_gets_one_clear_error(argv: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.txt").write_text("  \n\n ")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert re.match(r"workbench( train)?: error: ", err) and message in err  # usage errors
    # name the subcommand (`workbench train: error:`), the others `workbench: error:`
    assert len(err.strip().splitlines()) == 1


def test_cuda_requested_without_cuda(tmp_path: Path, world_corpus: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--preset", "tiny", "--corpus", str(world_corpus), "--run",
                 str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "CUDA is not available (torch" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_model_placement_flags(tiny_run: TrainResult, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """`--model-dtype bfloat16` loads our model in half precision for an analysis;
    `--device-map` (for Hugging Face checkpoints larger than one device) is refused for it in
    one line."""
    run = str(tiny_run.run_dir)
    assert main(["induction", "--model", run, "--model-dtype", "bfloat16", "--n-seqs", "4",
                 "--out", str(tmp_path / "ind.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "ind.json").read_text())["heads"]
    capsys.readouterr()
    assert main(["induction", "--model", run, "--device-map", "auto", "--out",
                 str(tmp_path / "no.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "one of our models, loaded whole: pass a device" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "no.json").exists()
