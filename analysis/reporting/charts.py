"""The report's plotly figures. Every string that reaches a figure is HTML-escaped first:
plotly reads a small HTML subset in labels, and names from a profile must show as typed."""

from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from scalefinder.analysis.reporting.figures import as_float, format_number

PHASE_COLOURS = {
    "ramp": "rgba(31, 119, 180, 0.07)",
    "refine": "rgba(148, 103, 189, 0.10)",
    "replay": "rgba(255, 127, 14, 0.08)",
    "beyond": "rgba(214, 39, 40, 0.07)",
    "restore": "rgba(127, 127, 127, 0.08)",
    "recovery": "rgba(44, 160, 44, 0.08)",
}
FIRST_TASKS_COLOUR = "#1f77b4"
DOUBLED_TASKS_COLOUR = "#e6550d"
TARGET_COLOUR = "#2ca02c"
BREAK_COLOUR = "#7f7f7f"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def text(value: Any) -> str:
    return html.escape(str(value), quote=False)


def _base_layout(figure: go.Figure, height: int) -> None:
    # The bare template with a few axis styles: a named template is validated anew on every
    # figure, which costs more than drawing the report's data.
    figure.update_layout(
        template="none",
        paper_bgcolor="white",
        plot_bgcolor="white",
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        font={"family": FONT, "size": 12},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
        hovermode="x unified",
    )
    axis = {"showgrid": True, "gridcolor": "#e8edf3", "zeroline": False, "linecolor": "#c9d3de", "ticks": "",
            "automargin": True}
    figure.update_xaxes(**axis)
    figure.update_yaxes(**axis)


# -- the ramp ---------------------------------------------------------------------------------


def ramp_figure(load, slo: Mapping[str, Any]) -> go.Figure:
    """Offered and achieved rate, latency against the SLO, failures and drops, and the task
    count, second by second, with each phase shaded."""
    figure = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                           row_heights=[0.32, 0.32, 0.2, 0.16])
    _base_layout(figure, 700)
    figure.update_layout(margin={"l": 70, "r": 20, "t": 60, "b": 40}, legend={"y": 1.045})
    for row, title in enumerate(("req/s", "latency ms", "per second", "tasks"), start=1):
        figure.update_yaxes(title_text=title, row=row, col=1)
    if load.empty:
        return figure
    frame = load.sort_values("time_unix_s")
    elapsed = (frame["time_unix_s"] - frame["time_unix_s"].iloc[0]).tolist()
    lines = [
        (1, "offered", frame["offered_rps"], FIRST_TASKS_COLOUR, "dash"),
        (1, "achieved", frame["completed"], "#17becf", "solid"),
        (2, "p50", frame["p50_ms"], "#9ecae1", "solid"),
        (2, "p95", frame["p95_ms"], "#3182bd", "solid"),
        (2, "p99", frame["p99_ms"], "#08519c", "solid"),
        (3, "failures", frame["failures"], "#d62728", "solid"),
        (3, "dropped", frame["dropped"], "#ff7f0e", "solid"),
        (4, "tasks", frame["tasks"], "#555555", "solid"),
    ]
    for row, name, series, colour, dash in lines:
        figure.add_trace(
            go.Scatter(x=elapsed, y=series.tolist(), name=name, mode="lines",
                       line={"color": colour, "width": 1.5, "dash": dash, "shape": "hv" if row == 4 else "linear"}),
            row=row, col=1,
        )
    latency_ms = as_float(slo.get("latency_ms"))
    if latency_ms is not None:
        figure.add_hline(y=latency_ms, row=2, col=1, line={"color": "#d62728", "dash": "dot", "width": 1.5},
                         annotation_text=text(f"SLO p{format_number(as_float(slo.get('percentile')))} {latency_ms:g} ms"),
                         annotation_position="top left")
    _shade_phases(figure, frame, elapsed)
    figure.update_xaxes(title_text="seconds since start", row=4, col=1)
    figure.update_yaxes(rangemode="tozero")
    return figure


def _shade_phases(figure: go.Figure, frame, elapsed: Sequence[float]) -> None:
    phases = frame["phase"].astype("string").fillna("").tolist()
    start = 0
    for index in range(1, len(phases) + 1):
        if index < len(phases) and phases[index] == phases[start]:
            continue
        name = phases[start]
        figure.add_vrect(
            x0=elapsed[start], x1=elapsed[index - 1] + 1, fillcolor=PHASE_COLOURS.get(name, "rgba(0,0,0,0.04)"),
            line_width=0, layer="below", row="all", col=1,
        )
        figure.add_annotation(x=elapsed[start], y=1.0, xref="x", yref="paper", text=text(name), showarrow=False,
                              xanchor="left", yanchor="bottom", font={"size": 11, "color": "#555"})
        start = index


# -- one metric -------------------------------------------------------------------------------


def metric_figure(metric: Mapping[str, Any], first_tasks: int | None, target: float | None) -> go.Figure:
    """A metric against service load (left) and load per task (right), one colour per task
    count, with the fitted relation, breakpoint, plateau and (when recommended) the target."""
    figure = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                           subplot_titles=("against service load", "against load per task"))
    _base_layout(figure, 320)
    figure.update_layout(hovermode="closest", margin={"l": 50, "r": 10, "t": 30, "b": 40},
                         legend={"yanchor": "top", "y": -0.22, "x": 0})
    figure.update_annotations(font={"size": 12, "color": "#555"})
    values = [v for v in metric.get("step_values") or [] if as_float(v.get("value")) is not None]
    for tasks in sorted({v.get("tasks") for v in values}, key=lambda t: (t is None, t)):
        group = [v for v in values if v.get("tasks") == tasks]
        colour = FIRST_TASKS_COLOUR if tasks == first_tasks else DOUBLED_TASKS_COLOUR
        for column, x_key in ((1, "offered_rps"), (2, "per_task_rps")):
            figure.add_trace(_points(group, x_key, f"{tasks} tasks", colour, show_legend=column == 1), row=1, col=column)
    saturation = [t for t in metric.get("tests") or [] if t.get("name") == "saturation"]
    saturated = bool(saturation) and saturation[0].get("verdict") == "pass"
    _add_fit(figure, metric.get("fit") or {}, values, first_tasks, saturated)
    unit = text(metric.get("unit") or "")
    if target is not None:
        for column in (1, 2):
            figure.add_hline(y=target, row=1, col=column, line={"color": TARGET_COLOUR, "width": 2},
                             **_label("target" if column == 2 else None, "top left"))
    figure.update_xaxes(title_text="req/s", row=1, col=1)
    figure.update_xaxes(title_text="req/s per task", row=1, col=2)
    figure.update_yaxes(title_text=unit, row=1, col=1, rangemode="tozero")
    figure.update_yaxes(rangemode="tozero", row=1, col=2)
    return figure


def _points(group: list[Mapping[str, Any]], x_key: str, name: str, colour: str, show_legend: bool) -> go.Scatter:
    xs = [as_float(v.get(x_key)) for v in group]
    ys = [as_float(v.get("value")) for v in group]
    high = [_gap(v.get("ci_high"), y) for v, y in zip(group, ys)]
    low = [_gap(y, v.get("ci_low")) for v, y in zip(group, ys)]
    labels = [text(f"step {v.get('step_id')} · {v.get('phase', '')}") for v in group]
    return go.Scatter(
        x=xs, y=ys, mode="markers", name=text(name), legendgroup=text(name), showlegend=show_legend,
        marker={"color": colour, "size": 7}, text=labels,
        error_y={"type": "data", "array": high, "arrayminus": low, "visible": True, "thickness": 1, "width": 3},
    )


def _gap(upper: Any, lower: Any) -> float:
    upper, lower = as_float(upper), as_float(lower)
    if upper is None or lower is None:
        return 0.0
    return max(upper - lower, 0.0)


def _add_fit(figure: go.Figure, fit: Mapping[str, Any], values: list[Mapping[str, Any]], first_tasks: int | None,
             saturated: bool) -> None:
    baseline, slope = as_float(fit.get("baseline")), as_float(fit.get("slope_per_task_rps"))
    knee, plateau = as_float(fit.get("breakpoint_rps")), as_float(fit.get("plateau_value"))
    if not saturated:
        knee = plateau = None  # a hinge is always fitted; only a passed saturation test makes it a plateau
    per_task = [rate for rate in (as_float(v.get("per_task_rps")) for v in values) if rate is not None]
    if baseline is None or slope is None or not per_task or not first_tasks:
        return
    highest = max(per_task)  # the saturation fit, and so its breakpoint, runs against load per task
    xs = [0.0, min(knee, highest) if knee else highest]
    ys = [baseline, baseline + slope * xs[1]]
    if knee is not None and highest > knee:
        xs.append(highest)
        ys.append(plateau if plateau is not None else ys[-1])
    style = {"color": "#444", "width": 1.5, "dash": "dash"}
    figure.add_trace(go.Scatter(x=[x * first_tasks for x in xs], y=ys, mode="lines", name="fit", line=style,
                                legendgroup="fit", hoverinfo="skip"), row=1, col=1)
    figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="fit", line=style, legendgroup="fit",
                                showlegend=False, hoverinfo="skip"), row=1, col=2)
    if knee is not None:
        for column, x in ((1, knee * first_tasks), (2, knee)):
            figure.add_vline(x=x, row=1, col=column, line={"color": BREAK_COLOUR, "dash": "dot", "width": 1},
                             **_label("breakpoint" if column == 1 else None, "top right"))
    if plateau is not None and knee is not None:
        for column in (1, 2):
            figure.add_hline(y=plateau, row=1, col=column, line={"color": BREAK_COLOUR, "dash": "dot", "width": 1},
                             **_label("plateau" if column == 1 else None, "bottom right"))


def _label(words: str | None, position: str) -> dict[str, Any]:
    """Annotation arguments for a reference line; none at all for an unlabelled one, since
    plotly writes placeholder text when only a position is given."""
    if words is None:
        return {}
    return {"annotation_text": words, "annotation_position": position, "annotation_font": {"size": 11}}


# -- runs over time ---------------------------------------------------------------------------


def trend_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Capacity per task of each run over time, one series per profile, with intervals."""
    figure = go.Figure()
    _base_layout(figure, 360)
    figure.update_layout(hovermode="closest", yaxis_title="capacity per task (req/s)")
    for profile in sorted({r["profile"] for r in rows}):
        chosen = sorted((r for r in rows if r["profile"] == profile), key=lambda r: r["started_utc"])
        figure.add_trace(go.Scatter(
            x=[r["started_utc"] for r in chosen], y=[r["per_task_rps"] for r in chosen], mode="lines+markers",
            name=text(profile), text=[text(r["run_id"]) for r in chosen],
            error_y={"type": "data", "visible": True,
                     "array": [_gap(r["high"], r["per_task_rps"]) for r in chosen],
                     "arrayminus": [_gap(r["per_task_rps"], r["low"]) for r in chosen]},
        ))
    figure.update_yaxes(rangemode="tozero")
    return figure


# -- will it hold? ----------------------------------------------------------------------------

SCENARIO_COLOURS = {"recommended": TARGET_COLOUR, "step": "#9467bd", "lower": "#8c564b"}


def validation_figure(validation: Mapping[str, Any]) -> go.Figure:
    """One closed-loop validation: the tasks the simulation predicted against those the loop ran,
    and the minutes each found in breach (``scalefinder validate``)."""
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.7, 0.3])
    _base_layout(figure, 380)
    figure.update_layout(margin={"l": 70, "r": 20, "t": 40, "b": 40})
    figure.update_yaxes(title_text="tasks", row=1, col=1, rangemode="tozero")
    figure.update_yaxes(title_text="breach", row=2, col=1, range=[-0.2, 1.2], tickvals=[0, 1], ticktext=["ok", "breach"])
    for key, label, colour, dash in (("predicted", "simulated", "#1f77b4", "dot"), ("actual", "closed loop", "#d62728",
                                                                                   "solid")):
        minutes = validation[key][:len(validation["actual"])]
        x = [m["minute"] for m in minutes]
        figure.add_trace(go.Scatter(x=x, y=[m["tasks"] for m in minutes], name=text(label), legendgroup=label,
                                    mode="lines", line={"color": colour, "width": 1.5, "dash": dash, "shape": "hv"}),
                         row=1, col=1)
        figure.add_trace(go.Scatter(x=x, y=[None if m["breached"] is None else int(m["breached"]) for m in minutes],
                                    name=text(label), legendgroup=label, showlegend=False, mode="lines",
                                    line={"color": colour, "width": 1.5, "dash": dash, "shape": "hv"}), row=2, col=1)
    figure.update_xaxes(title_text="minute", row=2, col=1)
    return figure


def hold_figure(scenarios: Sequence[Any], capacity_per_task_rps: float, slo_latency_ms: float | None) -> go.Figure:
    """The simulated minutes of each policy on one demand curve: demand against the capacity
    the serving tasks give, the tasks paid for, and the predicted p95 against the SLO."""
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=[0.4, 0.3, 0.3])
    _base_layout(figure, 560)
    figure.update_layout(margin={"l": 70, "r": 20, "t": 50, "b": 40})
    for row, title in enumerate(("req/s", "tasks", "p95 ms"), start=1):
        figure.update_yaxes(title_text=title, row=row, col=1, rangemode="tozero")
    if not scenarios:
        return figure
    minutes = [m.minute for m in scenarios[0].simulation.minutes]
    figure.add_trace(go.Scatter(x=minutes, y=[m.demand_rps for m in scenarios[0].simulation.minutes], name="demand",
                                mode="lines", line={"color": "#333", "width": 2}), row=1, col=1)
    for scenario in scenarios:
        colour = SCENARIO_COLOURS.get(scenario.key, "#555")
        name = text(scenario.label)
        trajectory = scenario.simulation.minutes
        figure.add_trace(go.Scatter(x=minutes, y=[m.serving * capacity_per_task_rps for m in trajectory],
                                    name=name, legendgroup=name, mode="lines",
                                    line={"color": colour, "width": 1.5, "dash": "dot", "shape": "hv"}), row=1, col=1)
        figure.add_trace(go.Scatter(x=minutes, y=[m.tasks for m in trajectory], name=name, legendgroup=name,
                                    showlegend=False, mode="lines", line={"color": colour, "width": 1.5, "shape": "hv"}),
                         row=2, col=1)
        figure.add_trace(go.Scatter(x=minutes, y=[m.p95_ms for m in trajectory], name=name, legendgroup=name,
                                    showlegend=False, mode="lines", line={"color": colour, "width": 1.5}),
                         row=3, col=1)
    if slo_latency_ms:
        figure.add_hline(y=slo_latency_ms, row=3, col=1, line={"color": "#d62728", "dash": "dot", "width": 1.5},
                         annotation_text=text(f"SLO {slo_latency_ms:g} ms"), annotation_position="top left")
    figure.update_xaxes(title_text="minute", row=3, col=1)
    return figure
