"""`workbench beliefs`: the belief tests from the command line (registered under the
`workbench.commands` entry points; `beliefs.suite` does the work)."""

from __future__ import annotations

import argparse
from typing import Any

from workbench.cli.argtypes import (
    bounded_int,
    device,
    int_list,
    name_list,
    nonneg_int,
    positive_int,
)
from workbench.cli.registry import Command
from workbench.models.devices import add_placement_args, placement_of


def add_belief_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run dir, checkpoint dir or HF dir")
    p.add_argument("--corpus", default=None, help="corpus for ROME's key covariance and the "
                   "fluency loss, in the model's tokenizer (default: the run's)")
    p.add_argument("--facts", default=None, help="fact list (schema workbench.facts/1); "
                   "default: the world facts of a world corpus, else datasets/facts/"
                   "real_facts.json")
    p.add_argument("--method", type=name_list(("icl", "rome", "ft", "steer")),
                   default="icl,rome,ft,steer", help="any of icl,rome,ft,steer")
    p.add_argument("--n", type=bounded_int(1, 100_000), default=50, help="beliefs tested")
    p.add_argument("--seeds", type=int_list(0), default="0",
                   help="comma-separated seeds (new objects, contexts)")
    p.add_argument("--relations", type=name_list(), default=None,
                   help="e.g. city,job (default: all direct)")
    p.add_argument("--layer", type=nonneg_int, default=None,
                   help="edited MLP layer (default: the causal-trace peak)")
    p.add_argument("--n-trace", type=bounded_int(0, 10_000), default=10,
                   help="facts traced for the peak layer")
    p.add_argument("--trace-samples", type=bounded_int(1, 10_000), default=10,
                   help="noise draws per trace")
    p.add_argument("--cov-tokens", type=positive_int, default=100_000,
                   help="corpus tokens for the key covariance")
    p.add_argument("--probes", default=None, help="probe report to compare the trace's peak "
                   "layer with (default: MODEL/analyses/probe.json when present)")
    p.add_argument("--device", type=device, default="cpu")
    add_placement_args(p)
    p.add_argument("--out", default=None, help="JSON output (default: MODEL/analyses/"
                   "beliefs.json)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r}: pass comma-separated integers like 0,1") from exc


def summary_table(report: dict[str, Any]) -> str:
    """Method x metric table, ladder flips, trace peak."""
    lines = [f"beliefs: {report['n_beliefs']} (stated correctly "
             f"{report['elicit']['accuracy']:.0%}, consistency "
             f"{report['elicit']['consistency']:.2f}, strength {report['elicit']['strength']:.2f}"
             " nats)"]
    if "trace" in report:
        t = report["trace"]
        lines.append(f"causal trace ({t['n']} facts): MLP peak at the last subject token: "
                     f"layer {t['peak_layer']}; residual peak at the last token: layer "
                     f"{t['resid_last_token_peak_layer']}")
        probes = t["probes"]
        if "probe_best_layers" in probes:
            lines.append(f"  fact probes' best layers {probes['probe_best_layers']} vs the "
                         f"trace peak's probe layer {probes['trace_peak_probe_layer']}")
    cols = ("efficacy", "paraphrase", "specificity", "neighbourhood", "ripple_twohop",
            "ripple_twohop_stated", "ripple_twohop_composed", "ripple_kept", "fluency_delta")
    short = {"ripple_twohop_stated": "hop_stated", "ripple_twohop_composed": "hop_composed"}
    header = f"{'method':10s} {'n':>4s} " + " ".join(f"{short.get(c, c)[:12]:>12s}"
                                                      for c in cols)
    rows = []
    for method, agg in report["methods"].items():
        if method == "icl":
            continue
        cells = []
        for c in cols:
            v = agg.get(c)
            cells.append(f"{'-':>12s}" if v is None else f"{v:12.3f}")
        rows.append(f"{method:10s} {agg['n']:4d} " + " ".join(cells))
    if rows:
        lines += [f"edits at layer {report['layer']}:", header, *rows]
    if "steering" in report:
        st = report["steering"]
        best = {t["layer"]: max((t2 for t2 in st["tried"] if t2["layer"] == t["layer"]),
                                key=lambda t2: t2["efficacy"]) for t in st["tried"]}
        tried = ", ".join(f"L{lay} {t['efficacy']:.2f} (x{t['alpha']:g})"
                          for lay, t in best.items())
        lines.append(f"steering at layer {st['layer']} x{st['alpha']:g} ({st['position']} the "
                     f"subject), chosen on {len(st['calibration'])} held-out facts; best "
                     f"calibration efficacy per layer: {tried}")
    icl = report["methods"].get("icl")
    if icl:
        flips = ", ".join(f"{k} {v}" for k, v in icl["flip_level"].items())
        kept = ", ".join(f"{k} {v:.2f}" for k, v in icl["others_kept"].items() if v is not None)
        lines.append(f"pressure ladder: flip level counts: {flips}")
        lines.append(f"  other facts kept per level: {kept}")
    lines += _strength_lines(report.get("strength", {}))
    return "\n".join(lines)


def _rho(r: dict | None) -> str:
    if not r or r.get("value") is None:
        return "n/a"
    ci = r.get("ci")
    return f"{r['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + f" n={r['n']}"


def _strength_lines(strength: dict) -> list[str]:
    if not strength.get("n_with_exposure"):
        return []
    lines = [f"strength: Spearman rho(exposure, margin) {_rho(strength.get('rho_exposure_margin'))}"
             + (f"; rho(margin, flip level) {_rho(strength['rho_margin_flip'])}"
                if "rho_margin_flip" in strength else "")]
    for bucket, b in strength.get("by_bucket", {}).items():
        parts = [f"n={b['n']}", f"accuracy {b['accuracy']:.2f}", f"margin {b['margin']:.2f}"]
        if "mean_flip_level" in b:
            parts.append(f"mean flip level {b['mean_flip_level']:.2f}")
        for method in ("rome", "ft", "steer"):
            if method in b and b[method].get("efficacy") is not None:
                parts.append(f"{method} efficacy {b[method]['efficacy']:.2f}")
        lines.append(f"  exposure {bucket:5s}: " + ", ".join(parts))
    return lines


def beliefs_command(args: argparse.Namespace) -> None:
    from beliefs import suite
    from circuits.tracing import TraceConfig
    from workbench.analysis import check_output, report_path, write_report

    out = check_output(args.out or report_path(args.model, suite.KIND), args.overwrite,
                       inputs={"--corpus": args.corpus, "--facts": args.facts,
                               "--probes": args.probes}, model=args.model)
    methods = tuple(m.strip() for m in args.method.split(",") if m.strip())
    relations = tuple(r.strip() for r in args.relations.split(",")) if args.relations else None
    cfg = suite.BeliefsConfig(methods=methods, n=args.n, seeds=_ints(args.seeds, "--seeds"),
                              relations=relations, layer=args.layer, n_trace=args.n_trace,
                              cov_tokens=args.cov_tokens, progress=not args.no_progress,
                              trace=TraceConfig(n_samples=args.trace_samples))
    report = suite.from_ref(args.model, cfg, corpus=args.corpus, facts=args.facts,
                            probes=args.probes, device=placement_of(args))
    paths = write_report(report, out, suite.FIGURES, overwrite=args.overwrite)
    print(summary_table(report))
    print("written: " + ", ".join(str(p) for p in paths))


BELIEFS = Command("beliefs", "elicit facts, trace them, and try to change them (in-context "
                  "pressure, ROME, fine-tuning)", add_belief_args, beliefs_command, order=70)
