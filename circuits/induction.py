"""Find a model's induction heads: head scores, OV copying, composition, ablation, and the
phase change over checkpoints, written as `workbench.induction/1` JSON with plotly figures.
The analysis has the shape of every other (`workbench.analysis`):

    from circuits import induction
    report = induction.run(model, None, induction.Config())   # a loaded model
    report = induction.from_ref("runs/demo", induction.Config(checkpoints="all"))
    report["induction_heads"]      # ['L1H0', 'L1H6']
    write_report(report, report_path("runs/demo", induction.KIND), induction.FIGURES)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from circuits.ablation import ablate_each_head, ablation_estimates
from circuits.figures import dynamics_figure, heads_figure
from circuits.inputs import repeated_tokens_for
from circuits.paths import k_path_patching
from circuits.scores import (
    COMPOSITION,
    composition_scores,
    head_name,
    head_scores,
    ov_copying_scores,
)
from workbench.analysis import FigureMaker, Report
from workbench.models.arch import require

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from workbench.models import Model
    from workbench.models.devices import Placement
    from workbench.models.refs import CheckpointRef, ModelRef
    from workbench.world.loader import Corpus

KIND = "induction"
SCHEMA = "workbench.induction/1"
EXACT = ("auto", "all", "candidates")
AUTO_ALL_HEADS = 64  # `exact="auto"` measures every head of a model with at most this many
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InductionConfig:
    """Settings of an induction-head analysis.

    Attributes:
        n_seqs: repeated random sequences scored (and ablated).
        seq_len: their length (default `min(n_ctx - 1, 255)`).
        seed: seed of the random tokens.
        min_score: induction score a head needs (`targets` normalisation).
        min_ablation: loss increase (nats) on the repeated half when the head is
            zero-ablated that an induction head needs.
        min_prev_token: previous-token score of a previous-token head.
        checkpoints: `all` or steps (`0,64,512`): also score the run's checkpoints (the
            phase change); None scores the loaded model only.
        exact: which heads are ablated and path-patched exactly (one forward pass each):
            `all`; `candidates`, the heads whose induction score reaches `min_score` (the
            only ones that can be induction heads), path-patched from the `path_sources`
            earlier heads with the strongest weight K-composition into them and the
            `path_sources` with the highest previous-token score; `auto` is `all` for a
            model of at most `AUTO_ALL_HEADS` heads, else `candidates` (GPT-2 small: 144
            heads, 288 ablation passes, ~45 min on two CPU cores). Every head also gets an
            attribution-patching estimate of both ablations (`ablation_estimate`).
        path_sources: see `exact`.
    """

    n_seqs: int = 32
    seq_len: int | None = None
    seed: int = 0
    min_score: float = 0.4
    min_ablation: float = 0.5
    min_prev_token: float = 0.4
    checkpoints: str | None = None
    exact: str = "auto"
    path_sources: int = 4

    def __post_init__(self) -> None:
        if self.n_seqs < 1:
            raise ValueError(f"n_seqs={self.n_seqs}; it must be >= 1")
        if self.exact not in EXACT:
            raise ValueError(f"exact={self.exact!r}; choose one of {EXACT}")
        if self.path_sources < 1:
            raise ValueError(f"path_sources={self.path_sources}; it must be >= 1")
        if self.min_ablation < 0 or not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score={self.min_score} must be in [0, 1] and "
                             f"min_ablation={self.min_ablation} >= 0")


def _heads_report(model: Model, cfg: InductionConfig, model_ref: str | None) -> Report:
    """Score, ablate and relate every head; the `workbench.induction/1` report (no dynamics).

    An *induction head* has induction score >= `min_score` and zero-ablation effect >=
    `min_ablation`; a *previous-token head* has previous-token score >= `min_prev_token`.
    For each induction head, `pairs` names the earlier head with the largest K-composition
    into it, by weights (`composition["K"]`), by direct-path patching of its keys
    (`composition["K_path"]`: the drop of its induction score when that head's output is
    replaced by its mean in the keys' input, `circuits.paths`) and by all-path patching
    (`composition["K_path_all"]`: the keys computed in a run with that head mean-ablated, so
    a previous-token head whose output reaches the keys through a later head counts), and
    says whether each is a previous-token head.
    """
    rep = repeated_tokens_for(model, cfg.n_seqs, cfg.seq_len, seed=cfg.seed)
    scores = head_scores(model, rep)
    copying = ov_copying_scores(model)
    comp = {m: composition_scores(model, m) for m in COMPOSITION}
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    exact = exact_mode(cfg, n_layers * n_heads)
    estimates = ablation_estimates(model, rep, ("zero", "mean"))
    candidates = None if exact == "all" else [
        (la, h) for la in range(n_layers) for h in range(n_heads)
        if scores["induction"][la, h] >= cfg.min_score]
    effects, losses = ablate_each_head(model, rep, ("zero", "mean"), heads=candidates)
    zero, mean = effects["zero"], effects["mean"]
    heads = []
    for layer in range(n_layers):
        for h in range(n_heads):
            rec = {"layer": layer, "head": h, "name": head_name(layer, h)}
            rec.update({k: float(v[layer, h]) for k, v in scores.items()})
            rec.update(copying=float(copying[layer, h]), ablation_nats=_num(zero[layer, h]),
                       mean_ablation_nats=_num(mean[layer, h]),
                       ablation_estimate=float(estimates["zero"][layer, h]),
                       mean_ablation_estimate=float(estimates["mean"][layer, h]))
            rec["ablation_exact"] = rec["ablation_nats"] is not None
            rec["is_induction"] = (rec["induction"] >= cfg.min_score and rec["ablation_exact"]
                                   and rec["ablation_nats"] >= cfg.min_ablation)
            rec["is_prev_token"] = rec["prev_token"] >= cfg.min_prev_token
            heads.append(rec)
    induction = [r["name"] for r in heads if r["is_induction"]]
    prev = [r["name"] for r in heads if r["is_prev_token"]]
    targets = sorted({r["layer"] for r in heads if r["is_induction"] and r["layer"] > 0})
    sources = None if exact == "all" else _path_sources(
        [(r["layer"], r["head"]) for r in heads if r["is_induction"] and r["layer"] > 0],
        comp["K"], scores["prev_token"], cfg.path_sources)
    comp["K_path"] = k_path_patching(model, rep, target_layers=targets, sources=sources)
    comp["K_path_all"] = k_path_patching(model, rep, target_layers=targets, paths="all",
                                         sources=sources)
    pairs = []
    for r in heads:
        if not r["is_induction"] or r["layer"] == 0:
            continue
        pair: dict[str, Any] = {"induction_head": r["name"], "induction": r["induction"]}
        for key, mode in (("k_composition", "K"), ("k_path", "K_path"),
                          ("k_path_all", "K_path_all")):
            k = comp[mode][: r["layer"], :, r["layer"], r["head"]]  # [earlier layers, H]
            best = int(k.nan_to_num(nan=-torch.inf).argmax())  # nan: not path-patched
            src = head_name(best // n_heads, best % n_heads)
            pair.update({f"{key}_source": src, key: float(k.flatten()[best]),
                         f"{key}_source_is_prev_token": src in prev,
                         f"{key}_mean_earlier": float(k.nanmean()),
                         f"{key}_n_sources": int(k.isfinite().sum())})
        pairs.append(pair)
    return {
        "schema": SCHEMA,
        "model": model_ref,
        "config": asdict(cfg),
        "exact": exact,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "inputs": {"kind": "repeated random tokens with a random prefix",
                   "n_seqs": int(rep.tokens.shape[0]), "seq_len": int(rep.tokens.shape[1]),
                   "period_range": [int(rep.period.min()), int(rep.period.max())]},
        "loss": {"first_copy": losses["first"], "second_copy": losses["second"]},
        "heads": heads,
        "induction_heads": induction,
        "previous_token_heads": prev,
        "pairs": pairs,
        "composition": {m: _nested(v) for m, v in comp.items()},
    }


def exact_mode(cfg: InductionConfig, n_heads_total: int) -> str:
    """`all` or `candidates`: what `cfg.exact` means for a model of `n_heads_total` heads."""
    if cfg.exact == "auto":
        return "all" if n_heads_total <= AUTO_ALL_HEADS else "candidates"
    return cfg.exact


def _path_sources(targets: list[tuple[int, int]], k_comp: torch.Tensor, prev: torch.Tensor,
                  n: int) -> set[tuple[int, int]]:
    """The earlier heads path-patched into the induction heads `targets` under `exact=
    candidates`: for each, the `n` with the strongest weight K-composition into it and the
    `n` earlier heads with the highest previous-token score."""
    n_heads = prev.shape[1]
    out: set[tuple[int, int]] = set()
    for layer, head in targets:
        for values in (k_comp[:layer, :, layer, head], prev[:layer]):
            top = values.flatten().topk(min(n, values.numel())).indices.tolist()
            out.update((i // n_heads, i % n_heads) for i in top)
    return out


def _num(x: torch.Tensor) -> float | None:
    """A float, or None for nan (not measured): JSON has no nan."""
    return None if bool(x.isnan()) else float(x)


def _nested(t: torch.Tensor) -> list[Any]:
    """`t.tolist()` with nan (not measured) as None."""
    def fix(v: Any) -> Any:
        return [fix(x) for x in v] if isinstance(v, list) else (None if v != v else v)

    return fix(t.tolist())  # type: ignore[no-any-return]


def head_table(report: dict[str, Any], keys: tuple[str, ...] = (
        "induction", "prefix_matching", "prev_token", "duplicate", "copying",
        "ablation_nats", "mean_ablation_nats")) -> str:
    """The report's heads as a fixed-width text table, best induction score first."""
    rows = sorted(report["heads"], key=lambda r: -r["induction"])
    head = f"{'head':6s}" + "".join(f"{k:>19s}" for k in keys)
    lines = [head] + [f"{r['name']:6s}" + "".join(
        f"{'-':>19s}" if r.get(k, float("nan")) is None else f"{r.get(k, float('nan')):19.3f}"
        for k in keys) for r in rows]
    return "\n".join(lines)


def findings(report: dict[str, Any]) -> str:
    """A few lines that say what was found."""
    lines = [f"induction heads: {', '.join(report['induction_heads']) or 'none'}; "
             f"previous-token heads: {', '.join(report['previous_token_heads']) or 'none'}",
             f"loss on the first copy {report['loss']['first_copy']:.3f}, on the second "
             f"{report['loss']['second_copy']:.3f} nats"]
    if report.get("exact") == "candidates":
        measured = [r["name"] for r in report["heads"] if r.get("ablation_exact")]
        lines.append(f"ablated exactly: the {len(measured)} head(s) with induction score >= "
                     f"{report['config']['min_score']} ({', '.join(measured) or 'none'}); the "
                     "other heads' ablation effects are attribution-patching estimates "
                     "(`--exact all` measures every head)")
    yes = {True: "yes", False: "no"}
    for p in report["pairs"]:
        weights = p.get("k_composition_source_is_prev_token", p.get("source_is_prev_token"))
        line = (f"{p['induction_head']}: strongest K-composition by weights from "
                f"{p['k_composition_source']} ({p['k_composition']:.3f}, mean over earlier "
                f"heads {p['k_composition_mean_earlier']:.3f}; previous-token head: "
                f"{yes[bool(weights)]})")
        if "k_path" in p:  # reports written before path patching have only the weights
            line += (f"; by path patching its keys from {p['k_path_source']} (induction "
                     f"score {p['induction']:.3f} drops by {p['k_path']:.3f}, mean over "
                     f"earlier heads {p['k_path_mean_earlier']:.3f}; previous-token head: "
                     f"{yes[p['k_path_source_is_prev_token']]})")
        if "k_path_all" in p:
            line += (f"; counting paths through later heads from {p['k_path_all_source']} "
                     f"(drops by {p['k_path_all']:.3f}; previous-token head: "
                     f"{yes[p['k_path_all_source_is_prev_token']]})")
        lines.append(line)
    pc = report.get("dynamics", {}).get("phase_change")
    if pc:
        line = (f"phase change: best induction score rises most between steps "
                f"{pc['induction_rise'][0]} and {pc['induction_rise'][1]} "
                f"(+{pc['induction_rise_size']:.2f})")
        if "icl_drop" in pc:
            line += (f"; ICL score drops most between {pc['icl_drop'][0]} and "
                     f"{pc['icl_drop'][1]} ({pc['icl_drop_size']:+.2f} nats)")
        lines.append(line)
    return "\n".join(lines)


def to_grid(report: dict[str, Any], key: str) -> torch.Tensor:
    """A per-head value of the report as a `[layer, head]` tensor."""
    grid = torch.zeros(report["n_layers"], report["n_heads"])
    for r in report["heads"]:
        grid[r["layer"], r["head"]] = r[key]
    return grid


def _dynamics_figure(report: Report) -> go.Figure | None:
    return dynamics_figure(report) if report.get("dynamics", {}).get("checkpoints") else None


FIGURES: dict[str, FigureMaker] = {".heads.fig.json": heads_figure,
                                   ".dynamics.fig.json": _dynamics_figure}


def run(model: Model, corpus: Corpus | None = None, cfg: InductionConfig | None = None, *,
        ref: str | ModelRef | None = None,
        checkpoints: Iterable[tuple[CheckpointRef, Model]] | None = None,
        progress: bool = True) -> Report:
    """The induction analysis of a loaded model: every head scored, ablated and related
    (`workbench.induction/1`), and with `checkpoints` (the run's checkpoints, loaded one at a
    time: `ModelRef.load_checkpoints`) the dynamics over training; their ICL score reads
    `corpus`'s validation split (skipped when `corpus` is None).

    Args:
        model: the model.
        corpus: a world or text corpus in the model's tokenizer, for the ICL score.
        cfg: the settings (default `Config()`); `cfg.checkpoints` says which checkpoints
            `from_ref` loads.
        ref: the reference recorded in the report (default: the model's name).
        checkpoints: the loaded checkpoints whose dynamics to measure.
    """
    from circuits.dynamics import checkpoint_dynamics, phase_change
    from workbench.models.checks import check_vocab
    from workbench.training.batches import eval_windows

    cfg = cfg or InductionConfig()
    require(model, "attention", "the induction analysis")
    report = _heads_report(model, cfg, model_ref=str(ref) if ref is not None
                           else model.cfg.model_name)
    if checkpoints is not None:
        windows = None
        if corpus is not None:
            check_vocab(model, corpus)
            val = corpus.tokens("val")
            windows = eval_windows(val, model.cfg.n_ctx, 64)[0]  # fixed [64, n_ctx] windows
        records = checkpoint_dynamics(checkpoints, windows, n_seqs=min(cfg.n_seqs, 16),
                                      seed=cfg.seed, progress=progress)
        report["dynamics"] = {"checkpoints": records, "phase_change": phase_change(records),
                              "icl_corpus": None if windows is None else str(corpus.path)}
    return report


def from_ref(ref: str | Path | ModelRef, cfg: InductionConfig | None = None, *,
             corpus: str | Path | None = None, device: str | Placement = "cpu",
             progress: bool = True) -> Report:
    """Load the model `ref` and run the analysis; with `cfg.checkpoints`, the run's
    checkpoints too, whose ICL score reads `corpus`, else the run's own corpus (skipped
    with a warning when it is not there)."""
    from workbench.models.loader import placement_of_model
    from workbench.models.refs import ModelRef
    from workbench.world import load_corpus

    cfg = cfg or InductionConfig()
    ref = ModelRef.of(ref)
    path = None
    if cfg.checkpoints:
        ref.select(cfg.checkpoints)  # checked before minutes of loading
        if corpus is not None and not Path(corpus).exists():
            raise FileNotFoundError(f"corpus {corpus} does not exist; pass a corpus directory "
                                    "from `workbench world build`")
        path = ref.corpus_path(corpus)
        if corpus is None and path is not None and not path.exists():
            log.warning("the run's corpus %s is not there; the ICL score is skipped (pass "
                        "--corpus)", path)
            path = None
    model = ref.load(device)
    loaded = None if path is None else load_corpus(path)
    history = (ref.load_checkpoints(cfg.checkpoints, placement_of_model(model))
               if cfg.checkpoints else None)
    return run(model, loaded, cfg, ref=ref, checkpoints=history, progress=progress)


def summary(report: Report) -> str:
    """What `workbench induction` prints: every head (`head_table`), then the findings."""
    return head_table(report) + "\n" + findings(report)


Config = InductionConfig
