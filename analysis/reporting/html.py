"""``report.html``: one self-contained page that makes the recommendation obvious and its
evidence easy to check. It works offline (plotly's JavaScript is inlined once), and every value
that comes from a profile, a metric name or the findings is HTML-escaped; the chart data sits in
a JSON script block with ``<``, ``>`` and ``&`` written as Unicode escapes, so no name can end the
block early."""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Iterable, Mapping

from plotly.io.json import to_json_plotly
from plotly.offline import get_plotlyjs

from scalefinder import __version__
from scalefinder.core.redact import redact_urls_in
from scalefinder.core.rundir import RunDirectory

from scalefinder.analysis.reporting import charts
from scalefinder.analysis.reporting.figures import (
    RunFigures,
    as_float,
    duration_between,
    format_duration,
    format_interval,
    format_number,
    with_unit,
)
from scalefinder.analysis.reporting.summary import VERDICT_WORDS

POLICY_KINDS = (("target_tracking", "Target tracking policy"), ("step_scaling", "Step scaling policy"))
RENDERINGS = (("api_request", "API JSON"), ("aws_cli", "AWS CLI"), ("cloudformation", "CloudFormation"),
              ("terraform", "Terraform"))
GENERATOR_BUSY_PCT = 90.0
# Metrics are listed from the one to use to the ones ruled out.
VERDICT_ORDER = {"recommended": 0, "candidate": 1, "inconclusive": 2, "rejected": 3}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>``, no ``<!--``, no entity surprises."""
    # plotly's encoder turns NaN and infinities (gaps in a measured series) into null and
    # understands numpy arrays; the standard encoder would reject the first and stringify the second.
    encoded = to_json_plotly(value)
    return encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_report(run: RunDirectory, findings: Mapping[str, Any], figures: RunFigures) -> str:
    """The whole page as one string."""
    page = _Page()
    first_tasks = _first_tasks(findings)
    body = [
        _header(run, figures),
        _partial_banner(run),
        _headline(findings, figures),
        _ramp_section(page, run),
        _metrics_section(page, findings, first_tasks),
        _steps_section(findings),
        _facts_section(run, findings),
        f'<footer>Written by scalefinder {esc(__version__)} from {esc(run.path.name)} · '
        f'findings schema {esc(findings.get("schema_version"))}</footer>',
    ]
    title = f"scalefinder · {figures.profile_name or figures.run_id}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{read_asset('report.css')}</style>",
        "</head><body><main>",
        *body,
        "</main>",
        f"<script>{get_plotlyjs()}</script>",
        f'<script type="application/json" id="sf-charts">{script_json(page.charts)}</script>',
        f"<script>{read_asset('report.js')}</script>",
        "</body></html>",
    ])


class _Page:
    """Collects the figures while the sections are written; each becomes a div plus JSON."""

    def __init__(self) -> None:
        self.charts: list[dict[str, Any]] = []

    def chart(self, figure, css_class: str = "chart") -> str:
        chart_id = f"chart-{len(self.charts) + 1}"
        self.charts.append({"id": chart_id, "figure": figure.to_plotly_json()})
        return f'<div class="{css_class}" id="{chart_id}"></div>'


def read_asset(name: str) -> str:
    return resources.files("scalefinder.analysis.reporting").joinpath(name).read_text(encoding="utf-8")


def _first_tasks(findings: Mapping[str, Any]) -> int | None:
    capacity_tasks = (findings.get("capacity") or {}).get("tasks")
    if capacity_tasks:
        return int(capacity_tasks)
    steps = findings.get("steps") or []
    return steps[0].get("tasks") if steps else None


# -- header and headline ----------------------------------------------------------------------


def _header(run: RunDirectory, figures: RunFigures) -> str:
    description = (run.manifest.get("profile") or {}).get("description")
    meta = " · ".join(esc(p) for p in [figures.run_id, format_date(figures.started_utc), figures.status] if p)
    subtitle = f'<div class="meta">{esc(description)}</div>' if description else ""
    toc = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in (
        ("ramp", "Ramp"), ("metrics", "Metrics"), ("steps", "Steps"), ("facts", "Run facts")))
    return (f'<header class="page"><h1>Scaling report: {esc(figures.profile_name or figures.run_id)}</h1>'
            f'<span class="meta">{meta}</span>{subtitle}</header><nav class="toc">{toc}</nav>')


def format_date(iso: str | None) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return ""


def _partial_banner(run: RunDirectory) -> str:
    if not run.is_partial:
        return ""
    reason = run.manifest.get("status_reason") or "the process stopped before the run finished"
    return (f'<div class="card banner">This run is partial (status {esc(run.status)}: {esc(reason)}); '
            "what follows is drawn from its finished steps only.</div>")


def _headline(findings: Mapping[str, Any], figures: RunFigures) -> str:
    verdict = figures.verdict
    parts = [
        f'<section class="card headline v-{esc(verdict)}" id="headline">',
        verdict_badge(verdict),
        f'<div class="headline-text" id="headline-text">{esc(figures.headline)}</div>',
        _key_figures(findings, figures),
        _pattern_evidence(findings),
        _inconclusive(findings),
        _policies(findings),
        "</section>",
    ]
    return "\n".join(p for p in parts if p)


def verdict_badge(verdict: str) -> str:
    return f'<span class="badge {esc(verdict)}">{esc(VERDICT_WORDS.get(verdict, verdict))}</span>'


def _figure(label: str, value: str, note: str = "") -> str:
    note_html = f'<div class="note">{note}</div>' if note else ""
    return f'<div class="figure"><div class="label">{label}</div><div class="value">{value}</div>{note_html}</div>'


def _key_figures(findings: Mapping[str, Any], figures: RunFigures) -> str:
    capacity = findings.get("capacity") or {}
    cells = []
    if figures.metric:
        cells.append(_figure("Scale on", esc(figures.metric_label or figures.metric), f"<code>{esc(figures.metric)}</code>"))
        cells.append(_figure("Target", esc(with_unit(figures.target, figures.unit)),
                             _interval_note(figures.target_interval, figures.unit)))
    if figures.per_task_rps is not None:
        cells.append(_figure("Capacity per task", f"{esc(format_number(figures.per_task_rps))} req/s",
                             _interval_note(figures.per_task_rps_interval)))
    if figures.service_rps is not None:
        cells.append(_figure("Service capacity", f"{esc(format_number(figures.service_rps))} req/s",
                             f"with {esc(figures.tasks)} tasks at the SLO"))
    if figures.pattern_label or figures.pattern:
        cells.append(_figure("Pattern", esc(figures.pattern_label or figures.pattern)))
    doubling = capacity.get("doubling") or {}
    if doubling.get("tested"):
        ratio = as_float(doubling.get("ratio"))
        cells.append(_figure("Doubling tasks", f"×{esc(format_number(ratio))} capacity",
                             f'<span class="badge {esc(doubling.get("verdict"))}">{esc(str(doubling.get("verdict")).replace("_", " "))}</span>'))
    peak = capacity.get("tasks_for_peak") or {}
    if peak.get("tasks") is not None:
        cells.append(_figure("Tasks for peak", esc(peak.get("tasks")),
                             f"{esc(format_number(as_float(peak.get('peak_rps'))))} req/s over "
                             f"{esc(peak.get('availability_zones'))} zones"))
    return f'<div class="figures">{"".join(cells)}</div>' if cells else ""


def _interval_note(interval: tuple[float, float] | None, unit: str | None = None) -> str:
    return f"interval {esc(format_interval(interval, unit))}" if interval else ""


def _pattern_evidence(findings: Mapping[str, Any]) -> str:
    evidence = list((findings.get("pattern") or {}).get("evidence") or [])
    bottleneck = (findings.get("bottleneck") or {}).get("evidence")
    if bottleneck:
        evidence.append(bottleneck)
    doubling = ((findings.get("capacity") or {}).get("doubling") or {}).get("detail")
    if doubling:
        evidence.append(doubling)
    if not evidence:
        return ""
    return "<h3>Evidence</h3>" + _list(dict.fromkeys(evidence), "evidence")


def _inconclusive(findings: Mapping[str, Any]) -> str:
    inconclusive = findings.get("inconclusive") or {}
    parts = []
    if inconclusive.get("reasons"):
        parts.append("<h3>Why there is no recommendation</h3>" + _list(inconclusive["reasons"], "evidence"))
    if inconclusive.get("next_steps"):
        parts.append("<h3>What to run next</h3>" + _list(inconclusive["next_steps"], "evidence"))
    return "".join(parts)


def _list(items: Iterable[Any], css_class: str = "") -> str:
    rows = "".join(f"<li>{esc(item)}</li>" for item in items)
    return f'<ul class="{css_class}">{rows}</ul>'


def _policies(findings: Mapping[str, Any]) -> str:
    policies = (findings.get("recommendation") or {}).get("policies") or {}
    blocks = []
    for kind, title in POLICY_KINDS:
        renderings = dict(policies.get(kind) or {})
        renderings["api_request"] = _api_requests(renderings)
        available = [(key, label, renderings[key]) for key, label in RENDERINGS if renderings.get(key)]
        if available:
            blocks.append(_policy_block(kind, title, available))
    return "".join(blocks)


def _api_requests(renderings: Mapping[str, Any]) -> Any:
    """Step scaling takes two policies and two alarms; show every request, not the first only."""
    scale_in, alarms = renderings.get("scale_in_api_request"), renderings.get("alarms")
    if not scale_in and not alarms:
        return renderings.get("api_request")
    policies = [p for p in (renderings.get("api_request"), scale_in) if p]
    return {"PutScalingPolicy": policies, "PutMetricAlarm": alarms or []}


def _policy_block(kind: str, title: str, available: list[tuple[str, str, Any]]) -> str:
    tabs, panes = [], []
    for index, (key, label, content) in enumerate(available):
        pane_id = f"policy-{kind}-{key}"
        active = " active" if index == 0 else ""
        text = json.dumps(content, indent=2) if not isinstance(content, str) else content
        tabs.append(f'<button type="button" class="tab{active}" data-pane="{pane_id}">{label}</button>')
        panes.append(f'<pre class="pane{active}" id="{pane_id}">{esc(text)}</pre>')
    return (f'<div class="policy" id="policy-{kind}"><div class="policy-head"><span class="title">{title}</span>'
            f'{"".join(tabs)}<button type="button" class="copy">Copy</button></div>{"".join(panes)}</div>')


# -- the ramp ---------------------------------------------------------------------------------


def _ramp_section(page: _Page, run: RunDirectory) -> str:
    slo = run.manifest.get("slo") or (run.manifest.get("profile") or {}).get("slo") or {}
    figure = charts.ramp_figure(run.load(), slo)
    return ('<section id="ramp"><h2>The ramp</h2><p class="meta">Offered against achieved rate, latency against the SLO, '
            'failures and dropped arrivals, and the task count, second by second; phases shaded.</p>'
            f'<div class="card">{page.chart(figure)}</div></section>')


# -- the metrics ------------------------------------------------------------------------------


def _metrics_section(page: _Page, findings: Mapping[str, Any], first_tasks: int | None) -> str:
    metrics = sorted(findings.get("metrics") or [], key=lambda m: VERDICT_ORDER.get(m.get("verdict"), len(VERDICT_ORDER)))
    if not metrics:
        return '<section id="metrics"><h2>Metrics</h2><p class="none">No utilization metric was measured.</p></section>'
    recommendation = findings.get("recommendation") or {}
    cards = []
    for metric in metrics:
        target = as_float(recommendation.get("target")) if metric.get("name") == recommendation.get("metric") else None
        figure = charts.metric_figure(metric, first_tasks, target)
        cards.append(
            f'<div class="card metric-card"><h3>{_metric_title(metric)} '
            f'<span class="badge {esc(metric.get("verdict"))}">{esc(metric.get("verdict"))}</span></h3>'
            f'{page.chart(figure)}{_list(metric.get("reasons") or [], "reasons")}</div>'
        )
    return ('<section id="metrics"><h2>Metrics</h2>' + _metric_table(metrics) + _rejected(metrics)
            + '<h3 style="margin-top:18px">Each metric against load</h3>'
            + f'<div class="metric-grid">{"".join(cards)}</div></section>')


def _metric_title(metric: Mapping[str, Any]) -> str:
    name, label = metric.get("name"), metric.get("label")
    if label and label != name:
        return f"{esc(label)} <code>{esc(name)}</code>"
    return f"<code>{esc(name)}</code>"


def _metric_table(metrics: list[Mapping[str, Any]]) -> str:
    rows = []
    for metric in metrics:
        tests = metric.get("tests") or []
        pills = " ".join(
            f'<span class="badge {esc(t.get("verdict"))}" title="{esc(t.get("detail"))}">{esc(t.get("name"))}</span>'
            for t in tests)
        rows.append(
            f'<tr><td><code>{esc(metric.get("name"))}</code></td>'
            f'<td><span class="badge {esc(metric.get("verdict"))}">{esc(metric.get("verdict"))}</span></td>'
            f'<td>{pills}{_tests_detail(tests)}</td><td>{_list(metric.get("reasons") or [], "reasons")}</td></tr>'
        )
    return ('<table class="metric-table"><thead><tr><th>Metric</th><th>Verdict</th><th>Tests</th>'
            f'<th>Reasons</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _tests_detail(tests: list[Mapping[str, Any]]) -> str:
    if not tests:
        return ""
    rows = "".join(
        f'<tr><td>{esc(t.get("name"))}</td><td>{esc(t.get("method"))}</td>'
        f'<td class="num">{esc(_number(t.get("statistic")))}</td><td class="num">{esc(_number(t.get("p_value")))}</td>'
        f'<td>{esc(_interval_text(t.get("interval")))}</td><td>{esc(t.get("threshold"))}</td>'
        f'<td><span class="badge {esc(t.get("verdict"))}">{esc(t.get("verdict"))}</span></td>'
        f'<td>{esc(t.get("detail"))}</td></tr>'
        for t in tests)
    return ('<details><summary>every test</summary><table class="tests"><thead><tr><th>Test</th><th>Method</th>'
            '<th class="num">Statistic</th><th class="num">p</th><th>Interval</th><th>Threshold</th><th>Verdict</th>'
            f'<th>Detail</th></tr></thead><tbody>{rows}</tbody></table></details>')


def _number(value: Any) -> str:
    number = as_float(value)
    return "" if number is None else format_number(number, 3)


def _interval_text(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{_number(value[0])}, {_number(value[1])}]"
    return "" if value is None else str(value)


def _rejected(metrics: list[Mapping[str, Any]]) -> str:
    rejected = [m for m in metrics if m.get("verdict") == "rejected"]
    if not rejected:
        return ""
    items = []
    for metric in rejected:
        failed = [t for t in metric.get("tests") or [] if t.get("verdict") == "fail"]
        why = [t.get("detail") or t.get("name") for t in failed] or list(metric.get("reasons") or [])
        items.append(f'<li><code>{esc(metric.get("name"))}</code>: {esc("; ".join(str(w) for w in why))}</li>')
    return f'<h3 style="margin-top:18px">Rejected metrics</h3><ul class="evidence">{"".join(items)}</ul>'


# -- steps and run facts ----------------------------------------------------------------------


def _steps_section(findings: Mapping[str, Any]) -> str:
    steps = findings.get("steps") or []
    if not steps:
        return '<section id="steps"><h2>Steps</h2><p class="none">No finished step.</p></section>'
    rows = []
    for step in steps:
        classes = []
        if step.get("valid") is False:
            classes.append("invalid")
        if step.get("slo_met") is False:
            classes.append("breach")
        rows.append(
            f'<tr class="{" ".join(classes)}"><td class="num">{esc(step.get("step_id"))}</td><td>{esc(step.get("phase"))}</td>'
            f'<td class="num">{esc(step.get("tasks"))}</td><td class="num">{esc(_number(step.get("offered_rps")))}</td>'
            f'<td class="num">{esc(_number(step.get("achieved_rps")))}</td><td class="num">{esc(_number(step.get("p95_ms")))}</td>'
            f'<td class="num">{esc(_number(step.get("error_pct")))}</td><td>{_yes_no(step.get("valid"))}</td>'
            f'<td>{_yes_no(step.get("steady"))}</td><td>{_yes_no(step.get("slo_met"))}</td></tr>'
        )
    return ('<section id="steps"><h2>Steps</h2><details><summary>every step of the run</summary><table><thead><tr>'
            '<th class="num">Step</th><th>Phase</th><th class="num">Tasks</th><th class="num">Offered req/s</th>'
            '<th class="num">Achieved req/s</th><th class="num">p95 ms</th><th class="num">Errors %</th><th>Valid</th>'
            f'<th>Steady</th><th>SLO met</th></tr></thead><tbody>{"".join(rows)}</tbody></table></details></section>')


def _yes_no(value: Any) -> str:
    if value is None:
        return ""
    return "yes" if value else "<strong>no</strong>"


def _facts_section(run: RunDirectory, findings: Mapping[str, Any]) -> str:
    manifest = run.manifest
    profile = manifest.get("profile") or {}
    environment = manifest.get("environment") or {}
    target = manifest.get("target") or {}
    slo = manifest.get("slo") or profile.get("slo") or {}
    libraries = environment.get("libraries") or {}
    host = environment.get("host") or {}
    generator = manifest.get("generator") or {}
    facts = [
        ("Profile", f'{esc(profile.get("name"))} <span class="meta">{esc(manifest.get("profile_path") or "")}</span>'),
        ("Run", f'{esc(manifest.get("run_id"))} · {esc(manifest.get("status"))}'
                + (f' ({esc(manifest.get("status_reason"))})' if manifest.get("status_reason") else "")),
        ("Started", esc(format_date(manifest.get("started_utc")))),
        ("Duration", esc(format_duration(_duration(manifest)))),
        ("Target", esc(_target_words(target))),
        ("SLO", esc(f'p{format_number(as_float(slo.get("percentile")))} ≤ {format_number(as_float(slo.get("latency_ms")))} ms, '
                    f'errors ≤ {format_number(as_float(slo.get("error_budget_pct")))}%')),
        ("Load generator", esc(_generator_words(generator))),
        ("Metric sources", esc(", ".join(sorted(manifest.get("sources") or {})) or "—")),
        ("Cgroup mode", esc(environment.get("cgroup_mode") or "—")),
        ("Host", esc(", ".join(f"{k} {v}" for k, v in host.items()) or "—")),
        ("Tool versions", esc(", ".join([f'scalefinder {environment.get("tool_version", "?")}',
                                         f'python {environment.get("python") or "?"}']
                                        + [f"{k} {v}" for k, v in sorted(libraries.items())]))),
    ]
    rows = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
    return (f'<section id="facts"><h2>Run facts</h2><div class="card"><dl class="facts">{rows}</dl>'
            f'<h3 style="margin-top:14px">Warnings</h3>{_warnings(run, findings)}</div></section>')


def _duration(manifest: Mapping[str, Any]) -> float | None:
    return duration_between(manifest.get("started_utc"), manifest.get("finished_utc"))


def _generator_words(generator: Mapping[str, Any]) -> str:
    if generator.get("mode") == "distributed":
        return f'distributed over {generator.get("workers", "?")} workers'
    return f'{generator.get("mode", "?")}, one process'


def _target_words(target: Mapping[str, Any]) -> str:
    # a run recorded before URLs were redacted must not show its credentials in the report either
    what = redact_urls_in(target.get("archetype") or target.get("command") or target.get("url") or "?")
    sizes = []
    if target.get("cpu_units"):
        sizes.append(f'{target["cpu_units"]} CPU units')
    if target.get("memory_mib"):
        sizes.append(f'{target["memory_mib"]} MiB')
    return f'{target.get("kind", "?")}: {what}' + (f' ({", ".join(sizes)})' if sizes else "")


def run_warnings(run: RunDirectory, findings: Mapping[str, Any]) -> list[str]:
    """Everything a reader should doubt: recorded warnings, invalid steps, a busy load
    generator and the parts the analysis could not decide."""
    warnings = [str(w) for w in run.manifest.get("warnings") or []]
    warnings += [str(w) for w in findings.get("warnings") or [] if str(w) not in warnings]
    steps = run.steps()
    for row in steps.to_dict("records"):
        if row.get("valid") is False and row.get("phase") != "recovery":  # probes are invalid by design
            reason = row.get("invalid_reason")
            reason = reason if isinstance(reason, str) and reason else "no reason recorded"
            warnings.append(f'step {row.get("step_id")} ({row.get("phase")}, {format_number(as_float(row.get("offered_rps")))} '
                            f'req/s) is invalid: {reason}')
    busy = [r for r in steps.to_dict("records")
            if (as_float(r.get("generator_cpu_pct")) or 0.0) >= GENERATOR_BUSY_PCT and r.get("valid") is not False]
    if busy:
        ids = ", ".join(str(r.get("step_id")) for r in busy)
        warnings.append(f"the load generator used ≥ {GENERATOR_BUSY_PCT:g}% of a core in step(s) {ids}; "
                        "rates there may be limited by the generator")
    warnings += [f"inconclusive: {r}" for r in (findings.get("inconclusive") or {}).get("reasons") or []]
    return warnings


def _warnings(run: RunDirectory, findings: Mapping[str, Any]) -> str:
    warnings = run_warnings(run, findings)
    if not warnings:
        return '<p class="none">None.</p>'
    return _list(warnings, "warnings")
