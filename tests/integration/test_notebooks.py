"""The notebooks in notebooks/ run end to end (nbclient) on the tiny test models, and are
committed without outputs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from workbench.training.trainer import TrainResult

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PLOTLY = "application/vnd.plotly.v1+json"
# Prepended to the executed copy only: which interpreter the kernel runs.
WHICH_PYTHON = "import sys\nprint(sys.prefix)"


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook in a fresh `python3` kernel with cwd `tmp_path`; the executed notebook
    and its wall time. The kernel inherits os.environ (set it with monkeypatch first)."""
    # The venv's own kernelspec (installed with ipykernel, argv `python`, which jupyter_client
    # replaces by sys.executable) wins over a user-level `python3` spec of another interpreter.
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(WHICH_PYTHON))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError with the cell's traceback
    seconds = time.perf_counter() - start
    prefix = "".join(o.get("text", "") for o in nb.cells[0].outputs).strip()
    assert prefix == sys.prefix, f"the python3 kernel runs {prefix!r}, not this venv"
    print(f"{name}: {seconds:.1f} s")
    return nb, seconds


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def stdout(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in outputs(nb) if o.get("name") == "stdout")


def test_induction_attn2_notebook_runs(tiny_run: TrainResult, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_MODEL", str(tiny_run.run_dir))
    nb, _ = execute("induction_attn2.ipynb", tmp_path, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    figures = [o for o in outputs(nb) if PLOTLY in o.get("data", {})]
    assert len(figures) == 4  # two attention patterns, the heads, the dynamics
    text = stdout(nb)
    assert str(tiny_run.run_dir) in text
    assert "induction heads:" in text and "checkpoints" in text


def test_induction_hf_gpt2_notebook_runs(hf_gpt2_dir: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_HF_MODEL", str(hf_gpt2_dir))
    # The same directory twice: two "checkpoints" (step -1) exercise the dynamics cells.
    monkeypatch.setenv("WORKBENCH_HF_CHECKPOINTS", f"{hf_gpt2_dir},{hf_gpt2_dir}")
    nb, _ = execute("induction_hf_gpt2.ipynb", tmp_path, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    figures = [o for o in outputs(nb) if PLOTLY in o.get("data", {})]
    assert len(figures) == 5  # two attention patterns, logit lens, heads, checkpoints
    text = stdout(nb)
    assert str(hf_gpt2_dir) in text
    assert "blocks.1.hook_resid_post" in text  # the logit lens' last point
    assert "no checkpoints given" not in text


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} keep outputs; clear them before committing"


def test_notebooks_are_there() -> None:
    names = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    assert {"induction_attn2.ipynb", "induction_hf_gpt2.ipynb", "probes_default.ipynb",
            "beliefs_default.ipynb", "icl_default.ipynb", "sae_default.ipynb",
            "circuits_default.ipynb"} <= names


def test_beliefs_default_notebook_runs(tiny_run: TrainResult, world_corpus: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_MODEL", str(tiny_run.run_dir))
    monkeypatch.setenv("WORKBENCH_CORPUS", str(world_corpus))
    monkeypatch.setenv("WORKBENCH_COV_TOKENS", "3000")
    nb, _ = execute("beliefs_default.ipynb", tmp_path, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    figures = [o for o in outputs(nb) if PLOTLY in o.get("data", {})]
    assert len(figures) == 3  # the trace, the metrics, the ladder
    text = stdout(nb)
    assert "MLP peak at the last subject token" in text and "efficacy" in text
    assert "flips at:" in text


def test_circuits_default_notebook_runs(tiny_run: TrainResult, world_corpus: Path,
                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_MODEL", str(tiny_run.run_dir))
    monkeypatch.setenv("WORKBENCH_CORPUS", str(world_corpus))
    monkeypatch.setenv("WORKBENCH_N_PAIRS", "8")
    nb, _ = execute("circuits_default.ipynb", tmp_path, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    figures = [o for o in outputs(nb) if PLOTLY in o.get("data", {})]
    assert len(figures) == 3  # EAP-IG against exact, the circuit, faithfulness
    text = stdout(nb)
    assert "EAP-IG vs exact: node AUROC" in text and "circuit:" in text
    assert "causal tracing's MLP peak" in text and "strongest MLP node: m" in text


def test_icl_default_notebook_runs(tiny_run: TrainResult, world_corpus: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_MODEL", str(tiny_run.run_dir))
    monkeypatch.setenv("WORKBENCH_CORPUS", str(world_corpus))
    monkeypatch.setenv("WORKBENCH_MIN_SCORE", "0.2")  # tiny's induction heads score ~0.3
    nb, _ = execute("icl_default.ipynb", tmp_path, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    figures = [o for o in outputs(nb) if PLOTLY in o.get("data", {})]
    assert len(figures) == 3  # the candidates, the head's attention, accuracy against k
    text = stdout(nb)
    assert "induction heads (score >= 0.2): [(1," in text  # tiny's are in its second layer
    assert "attention to the matching answer" in text and "<- the answer" in text
    assert "induction heads ablated" in text and "novel mappings: accuracy" in text


def test_sae_default_notebook_runs(tiny_run: TrainResult, world_corpus: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_MODEL", str(tiny_run.run_dir))
    monkeypatch.setenv("WORKBENCH_CORPUS", str(world_corpus))
    monkeypatch.setenv("WORKBENCH_SAE_TOKENS", "40000")
    monkeypatch.setenv("WORKBENCH_EVAL_TOKENS", "5000")
    monkeypatch.setenv("WORKBENCH_PROBE_TOKENS", "20000")
    nb, _ = execute("sae_default.ipynb", tmp_path, monkeypatch)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    figures = [o for o in outputs(nb) if PLOTLY in o.get("data", {})]
    assert len(figures) == 2  # the recovery table, city recall against exposure
    text = stdout(nb)
    assert "FVU" in text and "CE recovered" in text and "best for NOUN" in text
    assert "probe acc" in text
