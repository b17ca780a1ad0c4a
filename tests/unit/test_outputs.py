"""Where the tools may write and what they may delete (`workbench.outputs`), and the flag
types that check values at parse time (`workbench.cli.argtypes`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from workbench.cli.argtypes import bounded_int, device, floats, int_list, name_list, one_of
from workbench.outputs import check_replaceable, check_replaceable_file, check_separate


def test_check_separate(tmp_path: Path) -> None:
    run, corpus = tmp_path / "run", tmp_path / "run" / "world"
    with pytest.raises(ValueError, match="contains the input --corpus"):
        check_separate(run, {"--corpus": corpus})
    with pytest.raises(ValueError, match="lies inside the input --corpus"):
        check_separate(corpus / "x.h5", {"--corpus": corpus})
    with pytest.raises(ValueError, match="is the input --corpus"):
        check_separate(tmp_path / "run" / ".." / "run", {"--corpus": run})
    check_separate(run / "analyses/p.json", {"--corpus": tmp_path / "world"},
                   containers={"--model": run})  # a run holds its own reports
    with pytest.raises(ValueError, match="is the input --model"):
        check_separate(run, {}, containers={"--model": run})
    check_separate(tmp_path / "a", {"--corpus": None, "--acts": tmp_path / "b"})


def test_check_replaceable(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no run.json"):
        check_replaceable(run, "run")
    (run / "run.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    (run / "acts_val.h5").write_text("")
    (run / ".run.json.tmp123").write_text("")
    check_replaceable(run, "run")
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds notes.txt; move them out"):
        check_replaceable(run, "run")
    with pytest.raises(ValueError, match="no corpus.json"):
        check_replaceable(run, "corpus")


@pytest.mark.parametrize(("where", "named"), [
    ("checkpoints/notes.txt", "checkpoints/notes.txt"),  # a note beside the checkpoints
    ("checkpoints/step_000500/notes.txt", "checkpoints/step_000500/notes.txt"),  # in a step
    ("checkpoints/best/model.safetensors", "checkpoints/best"),  # a user's own folder
    ("checkpoints/step_000300/config.json", "checkpoints/step_000300"),  # not in the schedule
    ("analyses/mine/notes.txt", "analyses/mine"),
    ("attribution/0123456789abcdef/mine.txt", "attribution/0123456789abcdef/mine.txt"),
])
def test_check_replaceable_looks_over_the_whole_tree(tmp_path: Path, where: str,
                                                     named: str) -> None:
    run = tmp_path / "run"
    step = run / "checkpoints" / "step_000500"
    step.mkdir(parents=True)
    (run / "run.json").write_text(
        '{"model": {}, "train": {"steps": 1000, "ckpt_interval": 500}}')
    for name in ("config.json", "model.safetensors", "train_state.pt"):
        (step / name).write_text("")
    (run / "analyses").mkdir()
    (run / "analyses" / "probe.json").write_text("{}")
    cache = run / "attribution" / "0123456789abcdef"
    (cache / "ekfac" / "ekfac" / "factors_factors").mkdir(parents=True)
    (cache / "ekfac" / "ekfac" / "factors_factors" / "lambda_matrix.safetensors").write_text("")
    (cache / "ekfac" / "meta.json").write_text("{}")
    (run / "checkpoints" / ".step_001000.tmp-1").mkdir()  # an atomic write's temporary folder
    check_replaceable(run, "run")  # everything here is ours
    (run / where).parent.mkdir(parents=True, exist_ok=True)
    (run / where).write_text("mine")
    with pytest.raises(ValueError, match=f"holds {named}; move them out"):
        check_replaceable(run, "run")


def test_check_replaceable_refuses_links_and_kinds_out_of_place(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "eval").mkdir(parents=True)
    (corpus / "corpus.json").write_text("{}")
    (corpus / "eval" / "facts_train.jsonl").write_text("")
    check_replaceable(corpus, "corpus")
    (corpus / "eval" / "mynotes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds eval/mynotes.txt"):
        check_replaceable(corpus, "corpus")
    (corpus / "eval" / "mynotes.txt").unlink()
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("")
    (corpus / "eval" / "linked.jsonl").symlink_to(outside)  # a link: never ours
    with pytest.raises(ValueError, match="holds eval/linked.jsonl"):
        check_replaceable(corpus, "corpus")
    (corpus / "eval" / "linked.jsonl").unlink()
    (corpus / "eval" / "folder.jsonl").mkdir()  # a folder where a file belongs
    with pytest.raises(ValueError, match="holds eval/folder.jsonl"):
        check_replaceable(corpus, "corpus")


def test_check_replaceable_file(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    check_replaceable_file(report, "report")  # missing: nothing to protect
    report.write_text(json.dumps({"schema": "workbench.probe/1", "tasks": {}}))
    check_replaceable_file(report, "report")
    report.write_text('{"schema": "workbench.probe/1", "tas')  # a truncated report of ours
    check_replaceable_file(report, "report")
    report.write_text('{"schema": "theirs"}')
    with pytest.raises(ValueError, match="not a report made by workbench"):
        check_replaceable_file(report, "report")
    (tmp_path / "a.h5").write_bytes(b"\x89HDF\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="not an activation file made by workbench"):
        check_replaceable_file(tmp_path / "a.h5", "activations")
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        check_replaceable_file(tmp_path / "d", "report")


@pytest.mark.parametrize(("parse", "text", "match"), [
    (bounded_int(1, 10), "11", "11 is out of range; pass a whole number from 1 to 10"),
    (bounded_int(1, 10), "1.5", "'1.5' is not an integer"),
    (floats(0.0, 1.0), "-inf", "-inf is not a finite number"),
    (floats(0.0, low_open=True), "0", r"0.0 is out of range; pass a number > 0.0"),
    (one_of("a", "b"), "c", "'c' is not one of a, b"),
    (int_list(0), "1,-2", "-2 is below 0"),
    (int_list(0), ",", "is empty"),
    (name_list(("icl", "ft")), "icl,rome", "rome not among icl, ft"),
    (device, "cuda:x", "'cuda:x' is not a device"),
])
def test_argument_types_refuse_with_the_value(parse, text: str, match: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=match):
        parse(text)


def test_argument_types_accept() -> None:
    assert bounded_int(0, 5)("5") == 5 and floats(0.0, 1.0)("1e-3") == 1e-3
    assert device("cuda:1") == "cuda:1" and int_list(0)("0,2,4") == "0,2,4"


def test_check_writable(tmp_path: Path) -> None:
    from workbench.outputs import check_writable

    check_writable(tmp_path / "new" / "deeper" / "r.json")  # made later, under a writable one
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file is a file, not a folder; choose another"):
        check_writable(tmp_path / "file" / "r.json")
    with pytest.raises(ValueError, match=r"nothing can be created in /proc"):
        check_writable("/proc/nope/r.json")  # access() says writable to root; it is not


def test_check_disk_and_memory_refuse_with_the_bytes_needed(tmp_path: Path) -> None:
    from workbench.models.checks import check_disk, check_memory

    check_disk(1, tmp_path, "fix")
    with pytest.raises(ValueError, match=r"needs about .* on disk, more than the .* free in"):
        check_disk(2**62, tmp_path, "lower --max-tokens")
    with pytest.raises(ValueError, match=r"--batch-size 9 needs about 4096.0 GiB of memory"):
        check_memory(2**42, "--batch-size", 9)


@pytest.mark.parametrize(("text", "match"), [
    ("[1, 2]", r"is not a JSON object \(it holds a list\)"),
    ('{"model": {"n_layers": 2', r"is damaged \(JSONDecodeError: "),
    ('{"model": {}}', r"lacks its train table"),
    ("\xff", r"is damaged"),
])
def test_a_damaged_run_json_is_one_error_and_the_run_can_be_replaced(
        tmp_path: Path, text: str, match: str) -> None:
    from workbench.layout import read_run_json

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(text, encoding="latin-1")
    with pytest.raises(ValueError, match=match + r".*restore it from a copy, or train the run "
                                                 r"again \(`workbench train --run .*run "
                                                 r"--overwrite`"):
        read_run_json(run)
    check_replaceable(run, "run")  # the fix it names: --overwrite may replace the run
