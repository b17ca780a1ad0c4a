"""`workbench circuit` on the tiny trained model: the report's shape, its scores against the
exact truth, the faithfulness curve's ends, the circuit by each pruning rule, and a model
compared with itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuits.circuit import CircuitConfig, circuit_nodes, jaccard, run
from workbench.cli.core import main
from workbench.training.trainer import TrainResult


def test_cli_report(tiny_run: TrainResult, world_corpus: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "circuit.json"
    code = main(["circuit", "--model", str(tiny_run.run_dir), "--corpus", str(world_corpus),
                 "--task", "induction,agreement", "--n-pairs", "8", "--ig-steps", "3",
                 "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "workbench.circuit/1"
    g = report["graph"]
    assert len(g["edges"]) == g["n_edges"] and g["writers"][0] == "input"
    for name, t in report["tasks"].items():
        assert t["clean"] > t["corrupt"], name  # the metric tells clean from corrupted
        assert set(t["methods"]) == {"eap-ig", "eap", "attribution", "exact"}
        exact = t["methods"]["exact"]
        assert len(exact["edges"]) == g["n_edges"] and len(exact["nodes"]) == len(g["writers"])
        assert exact["recovery"]["edges"]["auroc"] in (None, 1.0)  # the truth ranks itself
        curve = t["methods"]["eap-ig"]["faithfulness"]
        assert curve["sizes"][0] == 0 and curve["sizes"][-1] == g["n_edges"]
        assert abs(curve["recovered"][0]) < 1e-3 and abs(curve["recovered"][-1] - 1) < 1e-3
        c = t["circuit"]
        assert c["method"] == "eap-ig" and c["rule"].startswith("smallest")
        assert c["recovered"] >= 0.9 - 1e-6 and set(c["nodes"]) == set(circuit_nodes(c["edges"]))
    check = report["tasks"]["induction"]["induction_check"]
    assert set(check) == {"induction_heads", "previous_token_heads", "pairs"}
    assert "graph: 2 layers x 4 heads" in printed and "eap-ig" in printed
    for suffix in (".graph.fig.json", ".faithfulness.fig.json", ".recovery.fig.json"):
        assert out.with_suffix(suffix).is_file()


def test_pruning_rules_and_compare(tiny_run: TrainResult, world_corpus: Path) -> None:
    from workbench.models.loader import load
    from workbench.world import load_corpus

    model, corpus = load(tiny_run.run_dir), load_corpus(world_corpus)
    base = {"tasks": ("agreement",), "methods": ("eap-ig",), "n_pairs": 6, "ig_steps": 2}
    top = run(model, corpus, CircuitConfig(**base, top_k=3), progress=False)
    c = top["tasks"]["agreement"]["circuit"]
    assert c["rule"] == "top 3" and c["n_edges"] == 3
    scores = top["tasks"]["agreement"]["methods"]["eap-ig"]["edges"]
    best = sorted(range(len(scores)), key=lambda i: -abs(scores[i]))[:3]
    assert set(c["edges"]) == {top["graph"]["edges"][i] for i in best}
    # ACDC with a threshold no edge reaches removes them all; with 0 it removes none that
    # moves the metric
    everything = run(model, corpus, CircuitConfig(**base, acdc=10.0), progress=False)
    assert everything["tasks"]["agreement"]["circuit"]["n_edges"] == 0
    kept = run(model, corpus, CircuitConfig(**base, acdc=0.0), compare=[("same", model)],
               progress=False)
    ck = kept["tasks"]["agreement"]["circuit"]
    assert ck["rule"] == "acdc 0.0" and ck["method"] == "acdc" and abs(ck["recovered"] - 1) < 1e-4
    assert kept["compare"]["jaccard"]["agreement"]["this | same"] == 1.0
    assert kept["compare"]["jaccard_unlabelled"]["agreement"]["this | same"] == 1.0
    assert jaccard(["a"], ["a", "b"]) == 0.5 and jaccard([], []) is None
