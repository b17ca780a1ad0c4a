"""`workbench sae train` and `workbench sae eval` on the tiny trained model: a dictionary and a
transcoder trained from activations made on the fly, evaluated against the world's labels,
and the bad inputs refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.cli.core import main
from workbench.training.trainer import TrainResult

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def trained(tiny_run: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sae") / "resid"
    assert main(["sae", "train", "--model", str(tiny_run.run_dir), "--hook", HOOK,
                 "--tokens", "80000", "--batch-size", "1024", "--expansion", "4", "--k", "8",
                 "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_writes_saelens_layout_and_drops_its_activations(trained: Path) -> None:
    assert sorted(p.name for p in trained.iterdir()) == [
        "cfg.json", "sae_weights.safetensors", "training.fig.json", "training.jsonl",
        "workbench.json"]
    cfg = json.loads((trained / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 8
    assert cfg["metadata"]["hook_name"] == HOOK
    meta = json.loads((trained / "workbench.json").read_text())
    assert meta["final"]["l0"] <= 8 and meta["final"]["fvu"] < 0.5
    assert not trained.with_name(trained.name + ".partial").exists()


def test_eval_reports_reconstruction_and_label_recovery(trained: Path, tiny_run: TrainResult,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    out = tmp_path / "sae.json"
    assert main(["sae", "eval", "--model", str(tiny_run.run_dir), "--sae", str(trained),
                 "--max-tokens", "20000", "--tasks", "pos,agreement,city,country",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "CE recovered" in printed and "bars" in printed
    report = json.loads(out.read_text())
    assert report["schema"] == "workbench.sae/1"
    r = report["reconstruction"]
    # the reconstruction carries most of what the model needs at this hook
    assert r["ce_clean"] < r["ce_spliced"] < r["ce_zero"] and 0.3 < r["ce_recovered"] <= 1.0
    assert r["l0"] <= 8
    cards = report["latents"]
    assert len(cards) == 4 * 64 and {"fire_rate", "top", "labels", "raises"} <= set(cards[0])
    labelled = [c for c in cards if c["labels"]]
    assert labelled and all(c["top"] for c in labelled)  # a label's latent fires somewhere
    pos = report["tasks"]["pos"]
    assert len(pos["values"]) >= 5 and all(0 <= v["latent"]["f1"] <= 1 for v in pos["values"])
    # a part-of-speech tag is found by some latent far above its base rate
    assert max(v["latent"]["f1"] for v in pos["values"]) > 0.5
    assert report["absorption"]["general"] == "country"
    assert {"person", "recall", "exposure", "bucket"} <= set(report["exposure"][0])
    assert set(report["bars"]) == {"l0", "ce_recovered", "pos_f1", "number_category_f1",
                                   "beats_neuron_share"}
    assert out.with_suffix(".fig.json").exists()


def test_a_transcoder_trains_and_evaluates(tiny_run: TrainResult, tmp_path: Path) -> None:
    out = tmp_path / "tc"
    assert main(["sae", "train", "--model", str(tiny_run.run_dir), "--hook",
                 "blocks.0.mlp.hook_in", "--target", "blocks.0.hook_mlp_out", "--tokens",
                 "40000", "--batch-size", "1024", "--expansion", "4", "--k", "8", "--out",
                 str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["apply_b_dec_to_input"] is False
    assert cfg["metadata"]["hook_name_out"] == "blocks.0.hook_mlp_out"
    report = tmp_path / "tc.json"
    assert main(["sae", "eval", "--model", str(tiny_run.run_dir), "--sae", str(out),
                 "--max-tokens", "5000", "--tasks", "pos", "--out", str(report),
                 "--no-progress"]) == 0
    r = json.loads(report.read_text())["reconstruction"]
    assert r["ce_spliced"] < r["ce_zero"]


def _refused(argv: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err


def test_bad_inputs_are_one_line_and_write_nothing(trained: Path, tiny_run: TrainResult,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = str(tiny_run.run_dir)
    new = tmp_path / "new"
    base = ["sae", "train", "--model", run, "--tokens", "4096", "--out", str(new),
            "--no-progress"]
    _refused(base + ["--hook", "blocks.9.hook_resid_post"], "is not in this model", capsys)
    _refused(base + ["--hook", HOOK, "--k", "5000"], "out of range", capsys)
    _refused(base + ["--hook", HOOK, "--expansion", "0"], "--expansion", capsys)
    _refused(["sae", "train", "--model", run, "--hook", HOOK, "--out", str(trained)],
             "exists; pass --overwrite", capsys)
    assert not new.exists() and not new.with_name("new.partial").exists()
    # an activation file without the hook
    acts = tmp_path / "acts.h5"
    assert main(["cache", "--model", run, "--hooks", "blocks.0.hook_resid_post", "--split",
                 "train", "--max-tokens", "5000", "--chunk", "--out", str(acts),
                 "--no-progress"]) == 0
    capsys.readouterr()
    _refused(base + ["--hook", HOOK, "--acts", str(acts)], "has no hook", capsys)
    assert not new.exists()
    # a dictionary made for another model, and a damaged one
    other = tmp_path / "other"
    other.mkdir()
    for f in trained.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    meta = json.loads((other / "workbench.json").read_text())
    meta["model_checksum"] = "0" * 64
    (other / "workbench.json").write_text(json.dumps(meta))
    report = tmp_path / "r.json"
    evaluate = ["sae", "eval", "--model", run, "--max-tokens", "2000", "--out", str(report),
                "--no-progress"]
    _refused(evaluate + ["--sae", str(other)], "another model", capsys)
    weights = other / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    _refused(evaluate + ["--sae", str(other)], "damaged", capsys)
    _refused(evaluate + ["--sae", str(tmp_path / "none")], "does not exist", capsys)
    _refused(evaluate + ["--sae", str(trained), "--tasks", "nonsense"], "unknown probe task",
             capsys)
    assert not report.exists()


def test_compare_matches_two_seeds_latents(trained: Path, tiny_run: TrainResult,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "seed1"
    assert main(["sae", "train", "--model", str(tiny_run.run_dir), "--hook", HOOK,
                 "--tokens", "80000", "--batch-size", "1024", "--expansion", "4", "--k", "8",
                 "--seed", "1", "--out", str(other), "--no-progress"]) == 0
    out = tmp_path / "compare.json"
    assert main(["sae", "compare", "--sae", str(trained), str(trained), "--out",
                 str(out)]) == 0
    assert json.loads(out.read_text())["matched_a"] == 1.0  # a dictionary is its own match
    assert main(["sae", "compare", "--sae", str(trained), str(other), "--out", str(out),
                 "--overwrite"]) == 0
    record = json.loads(out.read_text())
    assert record["schema"] == "workbench.sae_compare/1" and record["same_model"]
    assert 0.0 <= record["matched_a"] < 1.0 and len(record["cosine_quantiles"]) == 5
    assert "partner in B" in capsys.readouterr().out


def test_beliefs_clamp_a_dictionarys_latents_beside_steering(
        trained: Path, tiny_run: TrainResult, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run = str(tiny_run.run_dir)
    files = {p: p.read_bytes() for p in (tiny_run.run_dir / "checkpoints").rglob("*")
             if p.is_file()}
    out = tmp_path / "beliefs.json"
    argv = ["beliefs", "--model", run, "--method", "steer,sae", "--sae", str(trained), "--n",
            "4", "--layer", "0", "--n-trace", "0", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "latent clamp" in printed and "sae " in printed
    report = json.loads(out.read_text())
    clamp, steer = report["methods"]["sae"], report["methods"]["steer"]
    assert clamp["n"] == steer["n"] == 4 and clamp["layer"] == 1  # the dictionary's block
    chosen = report["sae"]
    assert chosen["hook"] == HOOK and chosen["dictionary"] == str(trained)
    assert len(chosen["tried"]) == 4 * 4 * 2  # latents x scales x positions
    tested = {f"{r['subject']} / {r['relation']}" for r in clamp["edits"]}
    assert not tested & set(chosen["calibration"])  # chosen on held-out facts
    for row in clamp["edits"]:  # each edit names the latents it clamped
        edit = row["edit"]
        assert edit["n_latents"] == chosen["n_latents"] and edit["scale"] == chosen["scale"]
        assert len(edit["new_latents"]) <= chosen["n_latents"]
        assert all(0 <= i < 4 * 64 for i in edit["new_latents"] + edit["old_latents"])
    assert {p: p.read_bytes() for p in files} == files  # the model's weights untouched
    # no dictionary given, several or none kept with the model, or one of another model
    ask = ["beliefs", "--model", run, "--out", str(tmp_path / "x.json"), "--no-progress"]
    _refused(ask + ["--method", "sae"], "has no sparse dictionary", capsys)
    _refused(ask + ["--method", "steer", "--sae", str(trained)], "read only by --method sae",
             capsys)
    _refused(ask + ["--method", "sae", "--sae", str(tmp_path / "none")], "does not exist",
             capsys)
    assert not (tmp_path / "x.json").exists()
