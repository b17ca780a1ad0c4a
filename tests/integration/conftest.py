"""Integration fixtures: a small world corpus and a `tiny` model trained on it, once per
session, in a temporary directory. Treat them as read-only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from workbench.models.config import TRAIN_PRESETS
from workbench.training.trainer import TrainResult, train
from workbench.world import WorldConfig, build_corpus

# Small enough to build in a second, large enough for `tiny` to learn facts in ~40 s. Half of
# the tokens are repeated spans so that `tiny` leaves the induction plateau well within its
# 2000 steps whatever the other documents are (with the default 40 % it may or may not).
# The other shares are those `tiny` was tuned on before in-context updates and few-shot
# documents came; those are left out here (the unit tests check them; `tiny` in 2000 steps
# learns neither, and with them its induction heads formed late or not at all), and exposure
# is mild (10x rather than 100x): with the default mix and 100x, `tiny`'s agreement fell to
# 0.54 and its weakest facts could not be edited (ROME 5 of 8).
WORLD = WorldConfig(seed=0, n_people=24, exposure_ratio=10.0, mix={
    "bio": 0.22, "city": 0.05, "grammar": 0.2, "repeat_words": 0.5, "repeat_names": 0.05,
    "index": 0.12})
N_TOKENS = 400_000


@pytest.fixture(scope="session")
def world_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "world"
    return Path(build_corpus(WORLD, out, n_tokens_train=N_TOKENS, progress=False))


@pytest.fixture(scope="session")
def tiny_run(world_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    return train("tiny", world_corpus, run, TRAIN_PRESETS["tiny"], device="cpu", progress=False)


@pytest.fixture(scope="session")
def app_runs(world_corpus: Path, tiny_run: TrainResult, hf_gpt2_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder for the dashboard: copies of the corpus (`world`), the tiny run (`tiny`,
    with small induction, circuit, probe, ICL and attribution reports and an activation
    file) and the tiny Hugging Face GPT-2 (`tiny-gpt2`, no analyses). Copies, not links: the
    app refuses paths that leave it."""
    import shutil

    from circuits import induction
    from circuits.induction import InductionConfig
    from probe import layers
    from probe.fit import ProbeConfig
    from probe.layers import LayersConfig
    from workbench.analysis import report_path, write_report
    from workbench.cache.store import CacheConfig, cache_activations
    from workbench.models.checkpoints import list_checkpoints
    from workbench.models.loader import load
    from workbench.world import load_corpus

    runs = tmp_path_factory.mktemp("app") / "runs"
    shutil.copytree(world_corpus, runs / "world")
    shutil.copytree(tiny_run.run_dir, runs / "tiny")
    shutil.copytree(hf_gpt2_dir, runs / "tiny-gpt2")
    tiny, corpus = runs / "tiny", runs / "world"
    steps = [p.name.removeprefix("step_") for p in list_checkpoints(tiny)]
    cfg = InductionConfig(n_seqs=4, checkpoints=",".join([steps[0], steps[len(steps) // 2],
                                                          steps[-1]]))
    report = induction.from_ref(tiny, cfg, corpus=corpus, progress=False)
    write_report(report, report_path(tiny, induction.KIND), induction.FIGURES)
    probes = layers.from_ref(str(tiny), LayersConfig(tasks="animacy", max_tokens=3000, n_boot=50,
                                                   folds=3, probe=ProbeConfig(max_iter=20)),
                            corpus=corpus, progress=False)
    write_report(probes, report_path(tiny, layers.KIND), layers.FIGURES)
    from icl import measure

    few = measure.from_ref(tiny, measure.IclConfig(ks=(0, 1, 2), n=4, min_score=0.2),
                           corpus=corpus, progress=False)
    write_report(few, report_path(tiny, measure.KIND), measure.FIGURES)
    from circuits import circuit

    found = circuit.from_ref(tiny, circuit.CircuitConfig(
        tasks=("induction", "agreement"), n_pairs=8, ig_steps=3,
        checkpoints=f"{steps[len(steps) // 2]},{steps[-1]}"), corpus=corpus, progress=False)
    write_report(found, report_path(tiny, circuit.KIND), circuit.FIGURES)
    write_attribution(tiny, corpus, [int(steps[len(steps) // 2]), int(steps[-1])],
                      tmp_path_factory.mktemp("attribution-cache"))
    cache_activations(load(tiny), load_corpus(corpus), CacheConfig(max_tokens=2000, chunk=True),
                      tiny / "acts_val.h5", progress=False)
    write_sweep(runs / "sweeps" / "micro", run="../../tiny")
    write_dictionary(tiny, corpus)
    return runs


def write_dictionary(run: Path, corpus: Path) -> None:
    """A small TopK dictionary of the run (`RUN/sae/resid`) with its evaluation."""
    from workbench.cli.core import main

    out = run / "sae" / "resid"
    assert main(["sae", "train", "--model", str(run), "--corpus", str(corpus), "--hook",
                 "blocks.1.hook_resid_post", "--tokens", "40000", "--batch-size", "1024",
                 "--expansion", "4", "--k", "8", "--out", str(out), "--no-progress"]) == 0
    assert main(["sae", "eval", "--model", str(run), "--corpus", str(corpus), "--sae",
                 str(out), "--max-tokens", "5000", "--tasks", "pos,city", "--no-progress"]) == 0


def write_attribution(run: Path, corpus: Path, steps: list[int], cache: Path) -> None:
    """A small attribution report of the run (`analyses/attribute.json`, schema
    workbench.attribute/1): two facts, 40 other candidates, grad-cos and TracIn over the two
    checkpoints `steps`, on one thread."""
    from attribution import attribute as attr
    from workbench.analysis import report_path, write_report
    from workbench.models.refs import ModelRef
    from workbench.world import load_corpus

    ref = ModelRef.of(run)
    which = ",".join(map(str, steps))
    cfg = attr.AttributeConfig(methods=("grad-cos", "tracin"), facts=2, candidates=40, dim=256,
                               checkpoints=which, cache=str(cache))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = attr.run(ref.load(), load_corpus(corpus), cfg, ref=str(run),
                          checkpoints=ref.load_checkpoints(which), progress=False)
    finally:
        torch.set_num_threads(n)
    write_report(report, report_path(run, attr.KIND), attr.FIGURES)


def write_sweep(root: Path, run: str) -> None:
    """A tiny analyzed sweep (`sweep.json`, schema workbench.sweep/1) of three synthetic
    members, the first of which points at the run `run` (relative to `root`)."""
    from sweep.figures import FIGURES
    from sweep.fit import FitConfig
    from sweep.laws import build_report
    from workbench.analysis import write_report

    def metric(name: str, value: float, chance: float) -> dict:
        return {"name": name, "value": value, "chance": chance, "ceiling": 0.0 if chance < 0
                else 1.0}

    members = []
    for i, n in enumerate((12_768, 50_112, 100_096)):
        loss = 12.0 * n ** -0.1
        steps = [0, 128, 300]
        cks = [{"step": s, "val_loss": loss + 3 / (s + 1), "abilities": {
            "facts": {"discrete": metric("top-1 accuracy", (0.0, 0.05, 0.8)[i] * s / 300, 0.0),
                      "continuous": metric("log-probability", -6 + i * s / 150, -6.0)},
            "agreement": {"discrete": metric("accuracy", 0.5 + 0.1 * i * s / 300, 0.5),
                          "continuous": metric("log p", -0.7 + 0.1 * i * s / 300, -0.7)}}}
            for s in steps]
        members.append({"name": f"L1-d{n}_steps300_seed0", "n_params": n, "tokens": 307_200,
                        "compute": 6.0 * n * 307_200, "steps": 300, "seed": 0, "knobs": {},
                        "run": run if i == 0 else f"m{i}/run", "finished": True,
                        "final_loss": loss,
                        "curve": {"step": steps, "loss": [c["val_loss"] for c in cks],
                                  "val_step": steps, "val_loss": [c["val_loss"] for c in cks]},
                        "checkpoints": cks})
    report = build_report("micro", {}, members, {}, fit=FitConfig(n_boot=20))
    root.mkdir(parents=True)
    write_report(report, root / "sweep.json", FIGURES)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test (the sweep tests train several tiny members), and
    `OMP_NUM_THREADS=1` for the processes it starts (sweep jobs take their thread count from
    it), so weights compare bit for bit."""
    n, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(n)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env
