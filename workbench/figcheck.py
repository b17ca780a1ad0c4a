"""The figure check: what a plotly figure lacks of a readable figure. The tests run
`figure_problems` over every figure the workbench writes (each analysis' `FIGURES`, the
training and evaluation figures, the sweep's and the dashboard's).

The figure check's rules (each problem it lists names the rule and the element):

1. **axis title**: every x and y axis that shows data, with its tick labels, has a title. Two
   kinds of axes are exempt: an axis whose tick labels are hidden (it shares a labelled axis,
   as in `make_subplots(shared_yaxes=True)`), and a *categorical* axis (its data are words:
   metric, method, task or token names, which label themselves).
2. **integer ticks**: an axis whose data are integers (layers, heads, steps, k) and span fewer
   than 10 units must place its ticks on integers (`dtick` a whole number, integer
   `tickvals`, or a category axis); plotly's automatic ticks would read -0.5, 0, 0.5, ...
   (log and date axes are exempt).
3. **colour bar**: every heatmap (or contour, 2-D histogram) shows a colour bar with a title,
   its own or that of the shared `coloraxis` it uses; two colour bars never sit at the same
   place.
4. **explained**: every trace and every line or shape is explained: a legend entry (with a
   name), or the same `legendgroup` as a trace in the legend (small multiples), or its name
   in an annotation; a shape may also carry its own `label`. A lone trace (the only one that
   is not a heatmap) is explained by its axes. Heatmaps are explained by their colour bar.
5. **one colour per class**: no two legend entries share a colour (plotly's default colours
   repeat after 10 traces: take `workbench.plots.palette(n)`).
6. **no path in a title**: no title (of the figure, a subplot, an axis or a colour bar) names
   a file path (`runs/demo`, `/tmp/x`); say the run's own name (`workbench.plots.model_name`).

>>> figure_problems(go.Figure(go.Scatter(x=[0, 1, 2], y=[1.0, 0.5, 0.2])))
['axis title: x axis has no title', 'axis title: y axis has no title', \
'integer ticks: x axis has integer data spanning 2 but no integer ticks (set dtick=1)']
>>> fig = go.Figure(go.Scatter(x=[0, 1, 2], y=[1.0, 0.5, 0.2]))
>>> _ = fig.update_xaxes(title_text="layer", dtick=1).update_yaxes(title_text="loss")
>>> figure_problems(fig)
[]
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.colors import qualitative

SCALED = ("heatmap", "contour", "histogram2d", "histogram2dcontour")
"""Trace types drawn through a colour scale (they need a colour bar, not a legend entry)."""
MIN_AUTO_SPAN = 10
"""Integer data spanning at least this many units get integer ticks from plotly itself."""
_PATH = re.compile(r"(?:~?/|\.{1,2}/)?[\w.-]+(?:/[\w.-]+)+/?")
_TAG = re.compile(r"<[^>]*>")


def figure_problems(fig: go.Figure) -> list[str]:
    """What `fig` lacks of a readable figure, by the rules of this module's docstring.

    Args:
        fig: any plotly figure (as made, or read back with `plotly.io.from_json`).

    Returns:
        One line per problem (`"rule: element ..."`); empty when the figure passes.

    >>> bad = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]], showscale=False))
    >>> bad = bad.update_layout(title="Heads of runs/demo")
    >>> for p in figure_problems(bad): print(p)
    axis title: x axis has no title
    axis title: y axis has no title
    colour bar: heatmap 0 shows no colour bar
    integer ticks: x axis has integer data spanning 1 but no integer ticks (set dtick=1)
    integer ticks: y axis has integer data spanning 1 but no integer ticks (set dtick=1)
    no path in a title: the figure title 'Heads of runs/demo' names a path ('runs/demo')
    """
    layout = fig.layout
    traces = [t for t in fig.data if t.visible is not False]
    problems = _axis_problems(layout, traces)
    problems += _colorbar_problems(layout, traces)
    problems += _explained_problems(layout, traces)
    problems += _colour_problems(layout, fig.data)
    problems += _title_problems(layout)
    return sorted(problems)


def _axis_key(ref: str | None, letter: str) -> str:
    ref = ref or letter
    return f"{letter}axis{ref[1:]}"


def _values(v: Any) -> list[Any]:
    if v is None:
        return []
    if isinstance(v, np.ndarray):
        return v.ravel().tolist() if v.dtype.kind in "iuf" else list(v.ravel())
    if isinstance(v, (list, tuple)):
        out: list[Any] = []
        for x in v:
            out += _values(x) if isinstance(x, (list, tuple, np.ndarray)) else [x]
        return out
    return [v]


def _axis_data(trace: Any, letter: str) -> list[Any]:
    """The trace's coordinates on its `letter` axis (implicit 0..n-1 where none are given)."""
    given = getattr(trace, letter, None)
    if given is not None:
        if isinstance(given, np.ndarray) and given.dtype.kind in "iu":
            return [int(x) for x in given.ravel()]
        return _values(given)
    if trace.type in SCALED and getattr(trace, "z", None) is not None:
        z = np.asarray(trace.z, dtype=object)
        if z.ndim == 2:
            return list(range(z.shape[1] if letter == "x" else z.shape[0]))
    other = getattr(trace, "y" if letter == "x" else "x", None)
    if trace.type in ("scatter", "scattergl", "bar") and other is not None:
        return list(range(len(_values(other))))
    return []


def _is_word(x: Any) -> bool:
    if not isinstance(x, str):
        return False
    try:
        float(x)
    except ValueError:
        return True
    return False


def _axes(layout: Any, traces: Sequence[Any]) -> Iterator[tuple[str, Any, list[Any]]]:
    """Each axis that shows a cartesian trace: its name, its layout object, its data."""
    data: dict[str, list[Any]] = {}
    for t in traces:
        if not hasattr(t, "xaxis"):
            continue
        for letter in ("x", "y"):
            data.setdefault(_axis_key(getattr(t, f"{letter}axis"), letter), []).extend(
                _axis_data(t, letter))
    for key in sorted(data):
        yield key, layout[key], data[key]


def _axis_label(key: str, layout: Any) -> str:
    name = f"{key[0]} axis" + (f" {key[5:]}" if key[5:] else "")
    title = _subplot_title(key, layout)
    return name + (f" (panel {title!r})" if title else "")


def _subplot_title(key: str, layout: Any) -> str:
    """The subplot title above an axis' panel (`make_subplots(subplot_titles=...)`)."""
    other = layout[key].anchor
    if not other or other == "free" or not layout.annotations:
        return ""
    xkey, ykey = (key, _axis_key(other, "y")) if key[0] == "x" else (_axis_key(other, "x"), key)
    xdom, ydom = layout[xkey].domain, layout[ykey].domain
    if xdom is None or ydom is None:
        return ""
    for a in layout.annotations:
        if (a.xref == "paper" and a.yref == "paper" and a.text and a.yanchor == "bottom"
                and a.x is not None and xdom[0] <= a.x <= xdom[1]
                and a.y is not None and abs(a.y - ydom[1]) < 1e-6):
            return _TAG.sub(" ", a.text).strip()
    return ""


def _axis_problems(layout: Any, traces: Sequence[Any]) -> list[str]:
    problems = []
    for key, axis, values in _axes(layout, traces):
        if axis.visible is False:
            continue
        label = _axis_label(key, layout)
        category = axis.type in ("category", "multicategory") or (
            axis.type in (None, "-") and any(_is_word(v) for v in values))
        hidden_ticks = axis.showticklabels is False
        if not (axis.title and axis.title.text) and not hidden_ticks and not category:
            problems.append(f"axis title: {label} has no title")
        if category or axis.type in ("log", "date") or (
                axis.tickmode == "array" and all(_is_whole(v) for v in _values(axis.tickvals))):
            continue
        ints = [v for v in values if v is not None]
        if not ints or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                               for v in ints):
            continue
        span = max(ints) - min(ints)
        whole = (axis.dtick is not None and _is_whole(axis.dtick) and float(axis.dtick) > 0
                 and (axis.tick0 is None or _is_whole(axis.tick0)))
        if span < MIN_AUTO_SPAN and not whole:
            problems.append(f"integer ticks: {label} has integer data spanning {span} but no "
                            "integer ticks (set dtick=1)")
    return problems


def _is_whole(v: Any) -> bool:
    try:
        return float(v).is_integer()
    except (TypeError, ValueError):
        return False


def _colorbar_problems(layout: Any, traces: Sequence[Any]) -> list[str]:
    problems, places, checked = [], {}, set()
    for i, t in enumerate(traces):
        if t.type not in SCALED:
            continue
        if t.coloraxis:
            owner, showscale, bar = f"coloraxis {t.coloraxis}", layout[t.coloraxis].showscale, \
                layout[t.coloraxis].colorbar
        else:
            owner, showscale, bar = f"heatmap {i}", t.showscale, t.colorbar
        if owner in checked:  # a shared colour axis: checked once
            continue
        checked.add(owner)
        if showscale is False:
            problems.append(f"colour bar: {owner} shows no colour bar")
            continue
        if not (bar.title and bar.title.text):
            problems.append(f"colour bar: {owner}'s colour bar has no title")
        places.setdefault((bar.x, bar.y), set()).add(owner)
    for owners in places.values():
        if len(owners) > 1:
            problems.append(f"colour bar: the colour bars of {', '.join(sorted(owners))} sit "
                            "at the same place (give each its x and y, or share a coloraxis)")
    return problems


def _annotation_text(layout: Any) -> str:
    return " ".join(_TAG.sub(" ", a.text or "") for a in layout.annotations or ()).lower()


def _explained_problems(layout: Any, traces: Sequence[Any]) -> list[str]:
    notes = _annotation_text(layout)
    plain = [t for t in traces if t.type not in SCALED]
    legend_on = layout.showlegend is not False
    shown_groups = {t.legendgroup for t in plain
                    if legend_on and t.showlegend is not False and t.name and t.legendgroup}
    shown_groups |= {s.legendgroup for s in layout.shapes or ()
                     if legend_on and s.showlegend and s.name and s.legendgroup}
    problems = []
    if len(plain) > 1:
        for i, t in enumerate(plain):
            if legend_on and t.showlegend is not False and t.name:
                continue
            if t.legendgroup and t.legendgroup in shown_groups:
                continue
            if t.name and t.name.lower() in notes:
                continue
            problems.append(f"explained: trace {i} ({t.type} {t.name or 'without a name'!r}) "
                            "has no legend entry, no legend group shown, no annotation")
    for i, s in enumerate(layout.shapes or ()):
        if s.visible is False:
            continue
        if legend_on and s.showlegend and s.name:
            continue
        if (s.label and s.label.text) or (s.legendgroup and s.legendgroup in shown_groups):
            continue
        if s.name and s.name.lower() in notes:
            continue
        problems.append(f"explained: shape {i} ({s.type} {s.name or 'without a name'!r}) is "
                        "in no legend, has no label and no annotation names it")
    return problems


def _colorway(layout: Any) -> list[str]:
    if layout.colorway:
        return list(layout.colorway)
    template = layout.template if layout.template and layout.template.layout else None
    if template is None and pio.templates.default:
        template = pio.templates[pio.templates.default]
    if template is not None and template.layout.colorway:
        return list(template.layout.colorway)
    return list(qualitative.Plotly)


def _norm_colour(c: Any) -> str | None:
    if not isinstance(c, str):
        return None  # a colour per point: not one class colour
    c = c.strip().lower().replace(" ", "")
    if re.fullmatch(r"#[0-9a-f]{6}", c):
        return "rgb({},{},{})".format(*(int(c[i:i + 2], 16) for i in (1, 3, 5)))
    if re.fullmatch(r"#[0-9a-f]{3}", c):
        return "rgb({},{},{})".format(*(int(ch * 2, 16) for ch in c[1:]))
    return c


def _trace_colour(t: Any, default: str) -> str | None:
    if t.type in ("scatter", "scattergl"):
        mode = t.mode or "lines+markers"
        if t.fill not in (None, "none") and (t.line.width == 0 or mode == "none") \
                and t.fillcolor:
            return _norm_colour(t.fillcolor)
        if "lines" in mode and t.line.color is not None:
            return _norm_colour(t.line.color)
        if t.marker.color is not None:
            return _norm_colour(t.marker.color)
        if t.line.color is not None:
            return _norm_colour(t.line.color)
        return _norm_colour(default)
    marker = getattr(t, "marker", None)
    if marker is not None and marker.color is not None:
        return _norm_colour(marker.color)
    return _norm_colour(default)


def _colour_problems(layout: Any, data: Sequence[Any]) -> list[str]:
    colorway = _colorway(layout)
    legend_on = layout.showlegend is not False
    entries: list[tuple[str, str | None, str | None]] = []  # name, colour, legend group
    hidden: list[tuple[str, str | None, str]] = []
    index = 0  # plotly.js gives the n-th trace that is not hidden colorway[n] by default
    for t in data:
        default = colorway[index % len(colorway)]
        index += t.visible is not False
        if t.type in SCALED or t.visible is False:
            continue
        colour = _trace_colour(t, default)
        if legend_on and t.showlegend is not False and t.name:
            entries.append((t.name, colour, t.legendgroup))
        elif t.legendgroup:
            hidden.append((t.name or t.type, colour, t.legendgroup))
    for sh in layout.shapes or ():
        if legend_on and sh.showlegend and sh.name:
            entries.append((sh.name, _norm_colour(sh.fillcolor if sh.type == "rect"
                                                  and sh.fillcolor else sh.line.color),
                            sh.legendgroup))
    problems, seen = [], {}
    group_colour = {}
    for name, colour, group in entries:
        if group:
            group_colour.setdefault(group, (name, colour))
        if colour is None:
            continue
        if colour in seen and seen[colour] != name:
            problems.append(f"one colour per class: legend entries {seen[colour]!r} and "
                            f"{name!r} share the colour {colour}")
        seen.setdefault(colour, name)
    for name, colour, group in hidden:
        shown = group_colour.get(group)
        if shown and colour is not None and shown[1] is not None and colour != shown[1]:
            problems.append(f"one colour per class: {name!r} (legend group {group!r}) is "
                            f"{colour} but its legend entry {shown[0]!r} is {shown[1]}")
    return problems


def _titles(layout: Any) -> Iterator[tuple[str, str]]:
    if layout.title and layout.title.text:
        yield "the figure title", layout.title.text
    for a in layout.annotations or ():
        if a.xref == "paper" and a.yref == "paper" and a.text and a.yanchor == "bottom":
            yield "the subplot title", a.text
    for key in layout.to_plotly_json():
        if re.fullmatch(r"[xy]axis\d*", key) and layout[key].title.text:
            yield f"the {key} title", layout[key].title.text
        if re.fullmatch(r"coloraxis\d*", key) and layout[key].colorbar.title.text:
            yield f"the {key} title", layout[key].colorbar.title.text


def _title_problems(layout: Any) -> list[str]:
    problems = []
    for where, text in _titles(layout):
        plain = _TAG.sub(" ", text)
        for found in _PATH.finditer(plain):
            path = found.group(0)
            parts = [p for p in path.split("/") if p]
            # a path starts at / or ~, or has named parts; not n/a, K/V or 1/2
            if path.startswith(("/", "~")) or all(len(p) > 1 and not re.fullmatch(
                    r"[\d.]+", p) for p in parts):
                problems.append(f"no path in a title: {where} {text!r} names a path "
                                f"({path!r})")
    return problems
