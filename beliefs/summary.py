"""The text summary of a belief-test report (`workbench.beliefs/1`), as `workbench beliefs`
prints it."""

from __future__ import annotations

from typing import Any


def summary(report: dict[str, Any]) -> str:
    """What `workbench beliefs` prints: the beliefs stated, the causal trace's peak, a method x
    metric table of the edits, steering, the pressure ladder's flips and belief strength."""
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
    if "sae" in report:
        sa = report["sae"]
        lines.append(f"latent clamp ({sa['dictionary']}, {sa['hook']}): {sa['n_latents']} "
                     f"latent(s) per object x{sa['scale']:g} {_WHERE.get(sa['position'])}, "
                     f"chosen on {len(sa['calibration'])} held-out facts; best calibration "
                     f"efficacy {max(t['efficacy'] for t in sa['tried']):.2f}")
    icl = report["methods"].get("icl")
    if icl:
        flips = ", ".join(f"{k} {v}" for k, v in icl["flip_level"].items())
        kept = ", ".join(f"{k} {v:.2f}" for k, v in icl["others_kept"].items() if v is not None)
        lines.append(f"pressure ladder: flip level counts: {flips}")
        lines.append(f"  other facts kept per level: {kept}")
    lines += _strength_lines(report.get("strength", {}))
    return "\n".join(lines)


_WHERE = {"last": "at the subject's last token", "after": "from the subject's last token on"}


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
        for method in ("rome", "ft", "steer", "sae"):
            if method in b and b[method].get("efficacy") is not None:
                parts.append(f"{method} efficacy {b[method]['efficacy']:.2f}")
        lines.append(f"  exposure {bucket:5s}: " + ", ".join(parts))
    return lines
