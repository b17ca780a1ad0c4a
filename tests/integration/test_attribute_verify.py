"""`workbench attribute verify` end to end on a micro run (30 steps of `tiny` on the session's
world): the plan reproduces the run's recipe on the very corpus the report ranked, each
condition's documents are removed (a method's top k per fact, as many random ones, every
mention), every member trains through the sweep engine, the facts are asked again, and a run
again retrains nothing. Then the refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.cli.core import main
from workbench.models.config import TRAIN_PRESETS
from workbench.training.trainer import train


@pytest.fixture(scope="module")
def micro_report(world_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    run = root / "micro"
    cfg = replace(TRAIN_PRESETS["tiny"], steps=30, ckpt_interval=30, eval_interval=30)
    train("tiny", world_corpus, run, cfg, device="cpu", progress=False)
    out = root / "attribute.json"
    assert main(["attribute", "--model", str(run), "--corpus", str(world_corpus), "--facts",
                 "2", "--candidates", "40", "--method", "bm25", "--top", "3", "--out", str(out),
                 "--no-progress"]) == 0
    return out


def test_verify_plans_trains_and_measures(micro_report: Path, world_corpus: Path,
                                          tmp_path: Path, one_thread: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sweep.plan import load_plan
    from workbench.world import load_corpus

    plan_dir = tmp_path / "plan"
    argv = ["attribute", "verify", "--report", str(micro_report), "--out", str(plan_dir),
            "--k", "3", "--seeds", "0", "--executor", "debug", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "every mention removed" in printed
    result = json.loads((plan_dir / "verify.json").read_text())
    assert result["schema"] == "workbench.attribute_verify/1"
    report = json.loads(micro_report.read_text())
    facts = [q["fact"] for q in report["queries"]]
    assert result["facts"] == facts
    conds = result["conditions"]
    assert list(conds) == ["bm25", "random", "mentions"]
    top = {d["doc"] for f in facts for d in report["methods"]["bm25"]["top"][f][:3]}
    assert conds["bm25"]["removed_docs"] == len(top) == conds["random"]["removed_docs"]
    corpus = load_corpus(world_corpus)
    stating = corpus.doc_facts("train").mentioning(
        [i for i, f in enumerate(corpus.fact_table()) if f"{f['subject']}:{f['relation']}"
         in facts])
    assert conds["mentions"]["removed_docs"] == conds["mentions"]["removed_stating"] == \
        int(stating.sum())
    # the members: the run's recipe, on subsets of the run's own corpus
    plan = load_plan(plan_dir)
    run_cfg = json.loads((Path(report["model"]) / "run.json").read_text())
    for m in plan.members():
        got = json.loads((plan.run_dir(m) / "run.json").read_text())
        assert got["model"] == run_cfg["model"] and got["train"] == run_cfg["train"], m.name
        n = json.loads((plan.world_dir(m.corpus_id) / "corpus.json").read_text())
        removed = conds.get(m.drop, {"removed_docs": 0})["removed_docs"]
        assert n["splits"]["train"]["n_docs"] == len(corpus.docs("train")) - removed
    seed0 = result["seeds"]["0"]
    assert set(seed0) == {"none", "bm25", "random", "mentions"}
    for cond in seed0.values():
        assert set(cond["facts"]) == set(facts)
        assert 0 <= cond["accuracy"] <= 1 and 0 < cond["chance"] < 1
    prior = seed0["mentions"]["name_prior"]  # strangers of the subject's name, asked too
    assert set(prior) == set(facts)
    for groups in prior.values():
        assert set(groups) == {"first", "last", "strangers"}
        for g in groups.values():
            assert g["names"] >= 1 and 0 <= g["accuracy"] <= 1 and 0 < g["p_answer"] < 1
    assert 0 <= result["verdicts"]["0"]["mentions_name_prior"] <= 1
    assert "at the name prior" in printed
    drop = result["verdicts"]["0"]["drop"]
    assert drop["bm25"] == pytest.approx(seed0["none"]["margin"] - seed0["bm25"]["margin"])
    assert (plan_dir / "verify.fig.json").is_file()
    kept = json.loads(micro_report.read_text())["verify"]  # the report gains its check
    assert kept["result"] == str(plan_dir / "verify.json") and kept["k"] == 3
    assert kept["seeds"]["0"]["bm25"]["drop"] == pytest.approx(drop["bm25"])
    from attribution.figures import verify_figure
    from workbench.figcheck import figure_problems

    assert figure_problems(verify_figure(result)) == []
    # again: every member is finished, nothing retrains, the same numbers
    before = {m.name: (plan.run_dir(m) / "run.json").stat().st_mtime_ns for m in plan.members()}
    assert main(argv) == 0
    capsys.readouterr()
    assert json.loads((plan_dir / "verify.json").read_text())["seeds"] == result["seeds"]
    assert before == {m.name: (plan.run_dir(m) / "run.json").stat().st_mtime_ns
                      for m in plan.members()}


def test_verify_baseline_run_adopts_the_run(micro_report: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`--baseline run`: the attributed run is the `none` member of its seed (its files
    linked, not retrained); a run short of its last step is refused and leaves nothing.
    `--controls random` plans no `mentions` member."""
    import shutil

    from sweep.plan import load_plan, member_state

    run = Path(json.loads(micro_report.read_text())["model"])
    plan_dir = tmp_path / "plan"
    assert main(["attribute", "verify", "--report", str(micro_report), "--out", str(plan_dir),
                 "--k", "3", "--baseline", "run", "--controls", "random", "--plan-only",
                 "--executor", "debug", "--no-progress"]) == 0
    assert "(--baseline run)" in capsys.readouterr().out
    plan = load_plan(plan_dir)
    states = {m.drop: member_state(plan, m) for m in plan.members()}
    assert states == {"none": "done", "bm25": "new", "random": "new"}
    none = next(m for m in plan.members() if m.drop == "none")
    final = "checkpoints/step_000030/model.safetensors"
    assert (plan.run_dir(none) / final).stat().st_ino == (run / final).stat().st_ino
    assert sorted(p.name for p in plan.run_dir(none).iterdir()) == sorted(
        p.name for p in run.iterdir() if p.is_file() or p.name == "checkpoints")
    # a run that stopped short of its last step cannot stand for the member
    short = tmp_path / "short"
    shutil.copytree(run, short)
    shutil.rmtree(short / "checkpoints" / "step_000030")
    report = json.loads(micro_report.read_text())
    report["model"] = str(short)
    short_report = tmp_path / "short.json"
    short_report.write_text(json.dumps(report))
    assert main(["attribute", "verify", "--report", str(short_report), "--out",
                 str(tmp_path / "plan2"), "--k", "3", "--baseline", "run", "--plan-only",
                 "--executor", "debug"]) == 2
    err = capsys.readouterr().err
    assert "not trained to step 30" in err and "--baseline retrain" in err
    plan2 = load_plan(tmp_path / "plan2")
    assert {member_state(plan2, m) for m in plan2.members()} == {"new"}


def test_verify_refuses_bad_input(micro_report: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    def refused(*argv: str) -> str:
        assert main(["attribute", "verify", *argv, "--executor", "debug"]) == 2
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and len(err.splitlines()) == 1, err
        return err

    out = str(tmp_path / "plan")
    assert "fewer than --k 5" in refused("--report", str(micro_report), "--out", out, "--k", "5")
    assert "does not exist" in refused("--report", str(tmp_path / "nope.json"), "--out", out)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "workbench.icl/1"}))
    assert "not an attribution report" in refused("--report", str(other), "--out", out)
    assert "distinct training seeds" in refused("--report", str(micro_report), "--out", out,
                                                "--seeds", "0,0")
    assert "distinct names" in refused("--report", str(micro_report), "--out", out,
                                       "--controls", "random,random")
    assert "not among" in refused("--report", str(micro_report), "--out", out,
                                  "--controls", "none")
    assert not Path(out).exists()
    assert main(["attribute", "--facts", "2"]) == 2
    assert "--model" in capsys.readouterr().err


def test_lds_retrains_on_random_subsets(micro_report: Path, world_corpus: Path,
                                        tmp_path: Path, one_thread: None,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from attribution.lds import lds
    from sweep.plan import load_plan
    from workbench.world.subset import DROPPED_FILE

    run = json.loads(micro_report.read_text())["model"]
    plan_dir = tmp_path / "lds"
    assert main(["attribute", "lds", "--model", run, "--corpus", str(world_corpus), "--out",
                 str(plan_dir), "--subsets", "3", "--seeds", "0,1", "--facts", "2",
                 "--method", "bm25",
                 "--cache", str(tmp_path / "cache"), "--executor", "debug",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "LDS over 3 random subsets x 2 training seeds" in out and "truth" in out
    result = json.loads((plan_dir / "lds.json").read_text())
    assert result["schema"] == "workbench.attribute_lds/1"
    assert list(result["methods"]) == ["bm25", "random"]  # (every method scores all documents)
    assert np.asarray(result["loss"]).shape == (3, 2) and result["seeds"] == [0, 1]
    by_seed = np.asarray(result["loss_by_seed"])  # the subsets' losses, per training seed
    assert by_seed.shape == (2, 3, 2)
    assert np.allclose(by_seed.mean(0), result["loss"]) and not np.allclose(by_seed[0],
                                                                          by_seed[1])
    assert 0.45 < result["kept_share"] < 0.55
    plan = load_plan(plan_dir)
    dropped = [set(np.load(plan.world_dir(m.corpus_id) / DROPPED_FILE).tolist())
               for m in plan.members()]
    assert len(dropped) == 6 and len({frozenset(d) for d in dropped}) == 3  # 3 halves x 2
    assert min(result["truth"]["stating"]) >= 1  # the truth row: each fact's stating documents
    for m in result["methods"].values():
        assert m["mean"] is None or -1 <= m["mean"] <= 1
        lo, hi = m["ci95"]
        assert np.isnan(lo) or lo <= hi
    # the score itself: a method whose scores make the losses exactly is at 1
    kept = np.ones((3, 5), dtype=bool)
    kept[0, :2] = kept[1, 2:4] = kept[2, 4] = False
    scores = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    loss = -(kept @ scores.T)
    assert lds(scores, kept, loss)["per_query"] == [1.0]
    assert lds(-scores, kept, loss)["per_query"] == [-1.0]
