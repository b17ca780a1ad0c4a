"""The text summary of a belief-test report (`workbench.beliefs/1`), as `workbench beliefs`
prints it."""

from __future__ import annotations

from typing import Any

TABLE = ("efficacy", "paraphrase", "specificity", "ripple_kept", "kept_paraphrase",
         "portability", "ripple_twohop", "fluency_delta")
EASYEDIT_NAMES = {"efficacy": "reliability", "paraphrase": "generalization",
                  "specificity": "locality", "portability": "portability"}


def method_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method of a belief report, the ladder included, with every edit metric
    (None where a method has none). The ladder's row is its strongest level: efficacy is the
    share flipped by it, specificity the share of facts asked in the same context (other
    people's and the subject's own) that kept their answer."""
    rows = []
    for method, agg in report.get("methods", {}).items():
        if method == "icl":
            last = agg["levels"][-1]
            rows.append({"method": f"icl ({last})", "n": agg["n"],
                         "efficacy": agg["flipped_by"][last],
                         "specificity": agg["others_kept"].get(last)})
            continue
        rows.append({"method": method, "n": agg["n"], **{c: agg.get(c) for c in TABLE}})
    return [{c: r.get(c) for c in ("method", "n", *TABLE)} for r in rows]


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
    short = {"ripple_twohop": "twohop", "ripple_kept": "kept", "kept_paraphrase": "kept_para",
             "fluency_delta": "fluency"}
    header = f"{'method':12s} {'n':>4s} " + " ".join(f"{short.get(c, c)[:11]:>11s}"
                                                      for c in TABLE)
    rows = [f"{r['method']:12s} {r['n']:4d} " + " ".join(
        f"{'-':>11s}" if r[c] is None else f"{r[c]:11.3f}" for c in TABLE)
        for r in method_table(report)]
    if rows:
        at = (f"; MEMIT at layers {report['memit_layers']}" if "memit_layers" in report
              else "")
        names = ", ".join(f"{v} = {k}" for k, v in EASYEDIT_NAMES.items() if k != v)
        lines += [f"edits at layer {report['layer']}{at} (EasyEdit's names: {names}):",
                  header, *rows]
    lines += _regime_lines(report.get("regimes") or {})
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


def _regime_lines(regimes: dict) -> list[str]:
    lines = []
    for b in regimes.get("batch") or []:
        lines.append(f"MEMIT batch of {b['size']} {regimes['relation']} facts at layers "
                     f"{regimes['layers']}: " + _cells(b) + f" ({b['seconds']:.0f} s)")
    seq = regimes.get("sequential")
    for name, run in (seq or {}).get("runs", {}).items():
        lines.append(f"MEMIT {seq['n']} sequential edits ({name}): first {seq['every']} "
                     f"edits' efficacy at the end {run['first_efficacy_end']:.2f} (stated "
                     f"{run.get('first_stated_end', float('nan')):.2f}); after all: "
                     + _cells(run["final"]))
    return lines


def _cells(agg: dict) -> str:
    names = {"efficacy": "efficacy", "paraphrase": "paraphrase", "specificity": "specificity",
             "ripple_kept": "kept", "portability": "portability",
             "fluency_delta": "fluency"}
    return ", ".join(f"{short} {agg[k]:.2f}" for k, short in names.items()
                     if agg.get(k) is not None)


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
        for method in ("rome", "memit", "ft", "steer", "sae"):
            if method in b and b[method].get("efficacy") is not None:
                parts.append(f"{method} efficacy {b[method]['efficacy']:.2f}")
        lines.append(f"  exposure {bucket:5s}: " + ", ".join(parts))
    return lines
