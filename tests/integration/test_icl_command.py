"""`workbench icl` on the tiny run: the report, its figures, checkpoints, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.cli.core import main
from workbench.training.trainer import TrainResult
from workbench.world.fewshot import TASKS


def test_icl_report_figures_and_checkpoints(tiny_run: TrainResult, world_corpus: Path,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.models.checkpoints import list_checkpoints

    steps = [p.name.removeprefix("step_").lstrip("0") or "0"
             for p in list_checkpoints(tiny_run.run_dir)]
    out = tmp_path / "icl.json"
    assert main(["icl", "--model", str(tiny_run.run_dir), "--corpus", str(world_corpus),
                 "--k", "0,1,8", "--n", "6", "--checkpoints", f"{steps[0]},{steps[-1]}",
                 "--min-score", "0.2",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "novel mappings: accuracy" in printed and "flipped labels" in printed
    report = json.loads(out.read_text())
    assert report["schema"] == "workbench.icl/1"
    assert set(report["tasks"]) == set(TASKS)
    for task in report["tasks"].values():
        assert list(task["k"]) == ["0", "1", "8"] and 0 < task["chance"] < 1
        for cell in task["k"].values():
            assert cell["n"] == 6 and cell["accuracy_ci"][0] <= cell["accuracy"] <= \
                cell["accuracy_ci"][1] and cell["logprob"] < 0
    assert report["tasks"]["novel"]["chance"] == 0.25
    assert [r["step"] for r in report["checkpoints"]] == [int(steps[0]), int(steps[-1])]
    for suffix in ("accuracy", "logprob", "checkpoints", "mechanism"):
        assert out.with_suffix(f".{suffix}.fig.json").is_file()
    # the induction heads attend from the query to the answer of its own demonstration
    mech = report["mechanism"]
    assert mech["induction_heads"] and "induction heads L1" in printed
    assert not set(mech["induction_heads"]) & set(mech["control_heads"])
    att = mech["attention"]["8"]
    assert att["n"] == 6 and att["to_matching_answer"] > 3 * att["to_other_answer"]
    assert set(mech["ablated"]) == set(report["tasks"]) and len(mech["novel_curve"]) >= 1


def test_answer_positions_find_each_demonstration(tiny_run: TrainResult) -> None:
    from icl.mechanism import answer_positions
    from workbench.models.loader import load
    from workbench.prompts import encode_prompt

    model = load(tiny_run.run_dir)
    item = {"prefix": "barn : three ; duck : one ; barn : two ; barn :", "x": "barn",
            "demos": [["barn", "three"], ["duck", "one"], ["barn", "two"]]}
    match, other, q = answer_positions(model, item)
    ids = encode_prompt(model, item["prefix"])
    words = [model.tokenizer.decode([i]).strip() for i in ids]
    assert [words[i] for i in match] == ["three", "two"] and [words[i] for i in other] == [
        "one"]
    assert q == len(ids) - 1 and words[q] == ":"


def test_icl_errors(tiny_run: TrainResult, world_corpus: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    base = ["icl", "--model", str(tiny_run.run_dir), "--corpus", str(world_corpus),
            "--no-progress", "--out", str(tmp_path / "x.json")]
    cases = [(["--k", "3"], "--k [3]: the world's items have k in"),
             (["--tasks", "colour"], "colour not among"),
             (["--checkpoints", "7"], "no checkpoint at step(s) [7]")]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    text = tmp_path / "text"
    from workbench.world import build_text_corpus

    (tmp_path / "t.txt").write_text("the cat sat on the mat .\n" * 200)
    build_text_corpus([tmp_path / "t.txt"], text, tokenizer=world_corpus / "tokenizer.json",
                      progress=False)
    assert main([*base[:4], str(text), *base[5:]]) == 2
    assert "has no few-shot items" in capsys.readouterr().err
