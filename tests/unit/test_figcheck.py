"""The figure check (`workbench.figcheck.figure_problems`): each rule fails on a figure that
breaks it and passes the fixed figure; the shared helpers (`palette`, `model_name`) and the
evaluation figure (each metric's own goal and direction)."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio
import pytest
from plotly.subplots import make_subplots

from workbench.figcheck import figure_problems
from workbench.plots import FAIL, PASS, colorbar_beside, eval_figure, model_name, palette


def titled(fig: go.Figure, **kwargs: object) -> go.Figure:
    return fig.update_xaxes(title_text="x", **kwargs).update_yaxes(title_text="y", **kwargs)


def lines(n: int, colours: list[str] | None = None) -> go.Figure:
    fig = go.Figure([go.Scatter(x=[0.5, 1.5], y=[i, i + 1.0], name=f"class {i}",
                                line={"color": colours[i]} if colours else None)
                     for i in range(n)])
    return titled(fig.update_layout(template="plotly"))  # its 10 colours, whatever the default


def only(problems: list[str], rule: str) -> list[str]:
    return [p for p in problems if p.startswith(rule + ":")]


def test_axis_titles() -> None:
    fig = go.Figure(go.Scatter(x=[0.5, 1.5], y=[1.0, 2.0]))
    assert only(figure_problems(fig), "axis title") == ["axis title: x axis has no title",
                                                        "axis title: y axis has no title"]
    assert figure_problems(titled(fig)) == []
    # a categorical axis labels itself; a numeric one in a titled panel still needs a title
    bars = go.Figure(go.Bar(x=["rome", "ft"], y=[0.5, 0.2])).update_yaxes(title_text="share")
    assert figure_problems(bars) == []
    sub = make_subplots(rows=1, cols=2, subplot_titles=["left", "right"])
    sub.add_trace(go.Scatter(x=[0.5, 1.5], y=[1.0, 2.0], name="a"), row=1, col=1)
    sub.add_trace(go.Scatter(x=[0.5, 1.5], y=[1.0, 2.0], name="b"), row=1, col=2)
    sub.update_xaxes(title_text="x").update_yaxes(title_text="y", row=1, col=1)
    assert figure_problems(sub) == ["axis title: y axis 2 (panel 'right') has no title"]
    # a shared axis with hidden tick labels goes by the labelled one
    shared = make_subplots(rows=1, cols=2, shared_yaxes=True)
    shared.add_trace(go.Scatter(x=[0.5, 1.5], y=[1.0, 2.0], name="a"), row=1, col=1)
    shared.add_trace(go.Scatter(x=[0.5, 1.5], y=[1.0, 2.0], name="b"), row=1, col=2)
    shared.update_xaxes(title_text="x").update_yaxes(title_text="y", col=1)
    assert figure_problems(shared) == []


def test_integer_ticks() -> None:
    heat = go.Figure(go.Heatmap(z=[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
                                colorbar={"title": {"text": "score"}}))
    heat.update_xaxes(title_text="head").update_yaxes(title_text="layer")
    assert figure_problems(heat) == [
        "integer ticks: x axis has integer data spanning 2 but no integer ticks (set dtick=1)",
        "integer ticks: y axis has integer data spanning 1 but no integer ticks (set dtick=1)"]
    assert figure_problems(heat.update_xaxes(dtick=1).update_yaxes(dtick=1)) == []
    one_step = titled(go.Figure(go.Scatter(x=[4000], y=[0.5])))  # 3999.5, 4000, 4000.5 ...
    assert len(only(figure_problems(one_step), "integer ticks")) == 1
    assert figure_problems(one_step.update_xaxes(tickmode="array", tickvals=[4000])) == []
    steps = titled(go.Figure(go.Scatter(x=[0, 500, 4000], y=[3.0, 2.0, 1.0])))
    assert figure_problems(steps) == []  # a wide span: plotly's own ticks are whole
    fractional = go.Figure(go.Heatmap(z=[[1, 2]], colorbar={"title": {"text": "v"}}))
    assert only(figure_problems(titled(fractional, dtick=0.5)), "integer ticks")


def test_colour_bars() -> None:
    def heat(**kwargs: object) -> go.Heatmap:
        return go.Heatmap(z=[[0.1, 0.2], [0.3, 0.4]], **kwargs)

    fig = titled(go.Figure(heat(showscale=False)), dtick=1)
    assert figure_problems(fig) == ["colour bar: heatmap 0 shows no colour bar"]
    fig = titled(go.Figure(heat()), dtick=1)
    assert figure_problems(fig) == ["colour bar: heatmap 0's colour bar has no title"]
    fig = titled(go.Figure(heat(colorbar={"title": {"text": "weight"}})), dtick=1)
    assert figure_problems(fig) == []
    # two panels: two colour bars at the default place overlap; beside each panel they do not
    sub = make_subplots(rows=1, cols=2)
    for col in (1, 2):
        sub.add_trace(heat(colorbar={"title": {"text": "score"}}), row=1, col=col)
    titled(sub, dtick=1)
    assert only(figure_problems(sub), "colour bar") == [
        "colour bar: the colour bars of heatmap 0, heatmap 1 sit at the same place (give each "
        "its x and y, or share a coloraxis)"]
    for col, trace in zip((1, 2), sub.data):
        trace.colorbar = colorbar_beside(sub, 1, col, "score")
    assert figure_problems(sub) == []
    # a shared colour axis: its colour bar must show and be titled
    sub.update_traces(coloraxis="coloraxis")
    assert figure_problems(sub) == ["colour bar: coloraxis coloraxis's colour bar has no "
                                    "title"]
    sub.update_layout(coloraxis={"colorbar": {"title": {"text": "p"}}})
    assert figure_problems(sub) == []


def test_every_trace_and_line_explained() -> None:
    fig = lines(2)
    fig.data[1].showlegend = False
    assert figure_problems(fig) == [
        "explained: trace 1 (scatter 'class 1') has no legend entry, no legend group shown, "
        "no annotation"]
    fig.add_annotation(text="thin: class 1", x=1, y=1)
    assert figure_problems(fig) == []
    grouped = lines(2)
    grouped.update_traces(legendgroup="g")
    grouped.data[1].showlegend = False  # small multiples: the same class in another panel
    grouped.data[1].line.color = grouped.data[0].line.color = "#111111"
    assert figure_problems(grouped) == []
    lone = titled(go.Figure(go.Scatter(x=[0.5, 1.5], y=[1.0, 2.0], showlegend=False)))
    assert figure_problems(lone) == []  # the only trace: its axes say what it is
    fig = lines(2)
    fig.add_vline(x=1.0, line_dash="dash")
    assert figure_problems(fig) == [
        "explained: shape 0 (line 'without a name') is in no legend, has no label and no "
        "annotation names it"]
    fig.layout.shapes[0].name = "centre of gravity"
    fig.layout.shapes[0].showlegend = True
    assert figure_problems(fig) == []
    fig = lines(2)
    fig.add_hline(y=0.5, name="majority class", annotation_text="majority class")
    assert figure_problems(fig) == []
    fig = lines(2)
    fig.add_vrect(x0=0.6, x1=0.9, label={"text": "subject"})
    assert figure_problems(fig) == []


def test_one_colour_per_class() -> None:
    fig = lines(11)  # plotly's default colours repeat after 10
    assert figure_problems(fig) == ["one colour per class: legend entries 'class 0' and "
                                    "'class 10' share the colour rgb(99,110,250)"]
    assert figure_problems(lines(11, palette(11))) == []
    same = lines(2, ["#1f77b4", "#1F77B4"])
    assert only(figure_problems(same), "one colour per class")
    # a trace explained by a legend group must look like its legend entry
    grouped = lines(2, ["#1f77b4", "#ff7f0e"])
    grouped.update_traces(legendgroup="rome")
    grouped.data[1].showlegend = False
    assert figure_problems(grouped) == [
        "one colour per class: 'class 1' (legend group 'rome') is rgb(255,127,14) but its "
        "legend entry 'class 0' is rgb(31,119,180)"]
    # a pale band of the same hue is another class colour than its line
    band = lines(2, ["#1f77b4", "#1f77b4"])
    band.data[1].update(fill="toself", fillcolor="rgba(31,119,180,0.2)", line={"width": 0})
    assert figure_problems(band) == []


@pytest.mark.parametrize("title, bad", [
    ("Heads of runs/demo", "runs/demo"), ("Probes of /tmp/pytest/runs/tiny (linear)",
                                          "/tmp/pytest/runs/tiny"),
    ("What demo knows", None), ("Spearman ρ n/a", None), ("K/V composition, 1/2", None),
    ("Heads of demo step 512<br><sup>peaks</sup>", None)])
def test_no_path_in_a_title(title: str, bad: str | None) -> None:
    fig = titled(go.Figure(go.Scatter(x=[0.5, 1.5], y=[1.0, 2.0])))
    problems = figure_problems(fig.update_layout(title=title))
    assert problems == ([] if bad is None else [
        f"no path in a title: the figure title {title!r} names a path ({bad!r})"])


def test_a_figure_read_back_from_json_is_checked_alike() -> None:
    fig = go.Figure(go.Heatmap(z=[[0.1, 0.2], [0.3, 0.4]], showscale=False))
    fig.update_layout(title="Heads of runs/demo")
    assert figure_problems(pio.from_json(fig.to_json())) == figure_problems(fig)
    assert len(figure_problems(fig)) == 6


def test_helpers() -> None:
    for n in (1, 10, 11, 24, 26, 40):
        assert len(set(palette(n)[:n])) == n
    assert model_name("/home/a/runs/demo/") == "demo"
    assert model_name("runs/demo/checkpoints/step_004000") == "demo step 4000"


def test_eval_figure_draws_each_goal_its_own_way() -> None:
    results = {"model": "/machine/that/trained/runs/default", "metrics": {
        "fact_recall_heldout": {"value": 0.94, "goal": 0.9, "direction": "higher",
                                "meets_goal": True},
        "agreement": {"value": 0.8, "goal": 0.9, "direction": "higher", "meets_goal": False},
        "fact_recall_twohop": {"value": 0.3},
        "induction_ratio": {"value": 0.012, "goal": 0.5, "direction": "lower",
                            "meets_goal": True}}}
    fig = eval_figure(results, name="demo")
    assert figure_problems(fig) == []
    assert fig.layout.title.text == "What demo knows: 2 of 3 goals met"
    bars = {t.name: t for t in fig.data if t.type == "bar"}
    passed = bars["meets its goal"]
    assert passed.marker.color == PASS and bars["misses its goal"].marker.color == FAIL
    assert list(passed.y) == [0.94, 0.012]  # the lower-is-better pass is drawn as a pass
    assert passed.x[1] == "induction_ratio<br>goal ≤ 0.5 (lower is better)"
    goal = next(t for t in fig.data if t.name.startswith("goal"))
    assert list(goal.marker.symbol) == ["triangle-up", "triangle-up", "triangle-down"]
    assert eval_figure(results).layout.title.text.startswith("What default knows")
