"""Where the tested facts are recalled: causal traces averaged by token role
(`trace_summary`), the trace's peak beside the fact probes' best layers
(`probe_comparison`, reading a probe report checked by `load_probe_report`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from circuits.tracing import TraceConfig, causal_trace

if TYPE_CHECKING:
    from beliefs.factbase import Belief
    from workbench.models import Model

ROLES = ("subject_first", "subject_middle", "subject_last", "after_subject", "last_token")


def trace_summary(model: Model, beliefs: list[Belief], cfg: TraceConfig) -> dict[str, Any]:
    """Causal traces of `beliefs` on their edit prompt, averaged by token role.

    Returns the per-role indirect effect `[kind][layer][role]`, the MLP peak layer at the
    last subject token (the last layer excluded: it cannot act on later tokens), and the first
    trace in full (for the heatmap)."""
    if not beliefs:
        raise ValueError("no belief to trace: the model states none of the chosen facts "
                         "correctly; pass --layer to edit anyway")
    per_role: dict[str, list[np.ndarray]] = {}
    first = None
    for b in beliefs:
        result = causal_trace(model, b.prompts[0], b.subject, b.object, cfg)
        first = first or result
        start, end = result.subject
        n_pos = len(result.tokens)
        cols = {"subject_first": [start], "subject_middle": list(range(start + 1, end - 1)),
                "subject_last": [end - 1], "after_subject": list(range(end, n_pos - 1)),
                "last_token": [n_pos - 1]}
        for kind in result.scores:
            effect = result.indirect_effect(kind)
            roles = [effect[:, c].mean(1) if c else np.full(len(effect), np.nan)
                     for c in cols.values()]
            per_role.setdefault(kind, []).append(np.stack(roles, 1))
    with warnings.catch_warnings():  # a role no prompt has (one-token subjects) stays nan
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = {k: np.nanmean(np.stack(v), 0) for k, v in per_role.items()}
    mlp = mean.get("mlp", next(iter(mean.values())))
    # the last layer's MLP at the subject cannot reach the prediction at a later token
    editable = mlp[: max(1, len(mlp) - 1), ROLES.index("subject_last")]
    peak = int(np.nanargmax(editable))
    last = int(np.nanargmax(mean.get("resid", mlp)[:, ROLES.index("last_token")]))
    return {
        "n": len(beliefs),
        "facts": [f"{b.subject} | {b.relation} | {b.object}" for b in beliefs],
        "roles": list(ROLES),
        "indirect_effect": {k: np.where(np.isnan(v), None, v).tolist() for k, v in mean.items()},
        "peak_layer": peak,
        "peak_kind": "mlp" if "mlp" in mean else next(iter(mean)),
        "resid_last_token_peak_layer": last,
        "example": first.to_dict(),
    }


def probe_comparison(trace: dict[str, Any], probe_report: dict[str, Any] | None
                     ) -> dict[str, Any]:
    """The trace's peak layer next to the fact probes' best layers. A probe's layer `l` is the
    residual stream after block `l - 1`, so an MLP peak at block `p` writes into probe layer
    `p + 1`."""
    out: dict[str, Any] = {"trace_peak_layer": trace["peak_layer"],
                           "trace_peak_probe_layer": trace["peak_layer"] + 1}
    if probe_report is None:
        out["note"] = "no probe report: run `workbench probe --tasks facts` and pass --probes"
        return out
    facts = {t: r for t, r in probe_report.get("tasks", {}).items() if r.get("kind") == "facts"}
    out["probe_best_layers"] = {t: r["best_layer"] for t, r in facts.items()}
    out["probe_best_selectivity"] = {
        t: next(x["selectivity"] for x in r["layers"] if x["layer"] == r["best_layer"])
        for t, r in facts.items()
    }
    return out


def load_probe_report(path: str | Path | None, *, given: bool = True
                      ) -> dict[str, Any] | None:
    """The probe report at `path` (None: none), checked. `given`: the user passed it as
    `--probes` (else it is the model's own report, found beside it): the fixes differ."""
    if path is None:
        return None
    path = Path(path)
    other = ("leave out --probes" if given else
             f"move {path} away (the model's own probe report, read when --probes is not "
             "given)")
    if not path.is_file():
        raise FileNotFoundError(f"probe report {path} does not exist; run `workbench probe "
                                f"--tasks facts --out {path}` or {other}")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"probe report {path} is not valid JSON ({exc}); run `workbench "
                         f"probe --overwrite` again or {other}") from exc
    from probe.layers import SCHEMA as PROBE_SCHEMA

    if not isinstance(report, dict) or report.get("schema") != PROBE_SCHEMA:
        raise ValueError(f"{path} is not a probe report (schema workbench.probe/1); pass the "
                         f"report `workbench probe` wrote, or {other}")
    tasks = report.get("tasks")
    sound = isinstance(tasks, dict) and all(
        isinstance(t, dict) and (t.get("kind") != "facts" or (
            isinstance(t.get("best_layer"), int) and isinstance(t.get("layers"), list)
            and any(isinstance(x, dict) and x.get("layer") == t["best_layer"]
                    and isinstance(x.get("selectivity"), (int, float)) for x in t["layers"])))
        for t in tasks.values())
    if not sound:
        raise ValueError(f"probe report {path} is damaged (its tasks lack their layers and "
                         f"best layer); run `workbench probe --overwrite` again or {other}")
    return report
