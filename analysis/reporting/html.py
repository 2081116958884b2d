"""``report.html``: one self-contained page that makes the recommendation obvious and its
evidence easy to check. It works offline (plotly's JavaScript is inlined once).

The page is written by Jinja2 templates (``templates/*.html.j2``) with autoescaping on, so every
value that comes from a profile, a metric name, a target or the findings is HTML-escaped without
anyone having to remember it; the few inlined parts that must go in raw are marked safe in one
place, ``page_assets``, each with the reason it is safe. This module gathers plain values for the
templates; the markup lives in the templates. The chart data sits in a JSON script block with
``<``, ``>`` and ``&`` written as Unicode escapes, so no name can end the block early."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
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
KUBERNETES_RENDERINGS = (("hpa", "HPA"), ("keda", "KEDA ScaledObject"), ("prometheus_adapter", "prometheus-adapter rule"))
GENERATOR_BUSY_PCT = 90.0
# Metrics are listed from the one to use to the ones ruled out.
VERDICT_ORDER = {"recommended": 0, "candidate": 1, "inconclusive": 2, "rejected": 3}
TABLE_OF_CONTENTS = (("ramp", "Ramp"), ("metrics", "Metrics"), ("hold", "Will it hold?"), ("steps", "Steps"),
                     ("facts", "Run facts"))


# -- the template engine ----------------------------------------------------------------------


def _blank_for_none(value: Any) -> Any:
    # A value the run did not record (None) shows as nothing rather than the word "None".
    return "" if value is None else value


@lru_cache(maxsize=1)
def template_environment() -> Environment:
    """The one Jinja2 environment of the report and the runs index."""
    return Environment(
        # templates/ ships as package data beside this module, in a wheel as in a checkout
        loader=PackageLoader("scalefinder.analysis.reporting", "templates"),
        # every template is HTML: a value is text, escaped, unless it is Markup on purpose
        autoescape=True,
        # a field a template names but the context lacks is an error, not a silently blank cell
        undefined=StrictUndefined,
        finalize=_blank_for_none,
        # block tags on lines of their own leave no blank lines or indentation behind
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(template_name: str, **context: Any) -> str:
    return template_environment().get_template(template_name).render(**context)


#: the version of vendor/plotly-basic.min.js
VENDORED_PLOTLY_JS = "4.1.1"


@lru_cache(maxsize=1)
def plotly_library() -> str:
    """plotly.js for the page: the vendored basic bundle (1.2 MB: the scatter traces the report
    draws) while the plotly package writes figures for the same major version, else that package's
    full bundle (4.8 MB), which always matches its figures."""
    from plotly.offline import get_plotlyjs_version

    if get_plotlyjs_version().split(".")[0] == VENDORED_PLOTLY_JS.split(".")[0]:
        return read_asset("vendor/plotly-basic.min.js")
    return get_plotlyjs()


def read_asset(name: str) -> str:
    return resources.files("scalefinder.analysis.reporting").joinpath(name).read_text(encoding="utf-8")


def script_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>``, no ``<!--``, no entity surprises."""
    # plotly's encoder turns NaN and infinities (gaps in a measured series) into null and
    # understands numpy arrays; the standard encoder would reject the first and stringify the second.
    encoded = to_json_plotly(value)
    return encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page_assets(chart_specs: list[dict[str, Any]], *, with_plotly: bool) -> dict[str, Markup | None]:
    """The parts of a page that go in unescaped, for ``page.html.j2``. Escaping them would break
    them (``>`` in a CSS selector, ``&&`` in JavaScript), so each is marked safe here, and only here."""
    return {
        # the package's own stylesheet and script: fixed text shipped with scalefinder, no run data
        "stylesheet": Markup(read_asset("report.css")),
        "page_script": Markup(read_asset("report.js")),
        # plotly's library (vendor/README.md): code, no run data
        "plotly_js": Markup(plotly_library()) if with_plotly else None,
        # run data, but script_json writes every <, > and & as a \u escape, so no name in it can
        # close the script element or open markup; JSON.parse reads the escapes back as the characters
        "charts_json": Markup(script_json(chart_specs)),
    }


class _Charts:
    """Collects the figures while the sections are gathered; each becomes a div plus JSON."""

    def __init__(self) -> None:
        self.specs: list[dict[str, Any]] = []

    def add(self, figure) -> str:
        """The id of the div the figure will be drawn in."""
        chart_id = f"chart-{len(self.specs) + 1}"
        self.specs.append({"id": chart_id, "figure": figure.to_plotly_json()})
        return chart_id


# -- the page ---------------------------------------------------------------------------------


def render_report(run: RunDirectory, findings: Mapping[str, Any], figures: RunFigures) -> str:
    """The whole page as one string."""
    page_charts = _Charts()
    # The ramp is chart-1 and the metrics follow in the order they are listed.
    ramp_chart = _ramp_chart(page_charts, run)
    metrics = _metric_views(page_charts, findings)
    hold = _will_it_hold(page_charts, run, findings)
    return render_page(
        "report.html.j2",
        title=f"scalefinder · {figures.profile_name or figures.run_id}",
        header=_header(run, figures),
        partial=_partial(run),
        headline=_headline(findings, figures),
        ramp_chart=ramp_chart,
        metrics=metrics,
        rejected_metrics=_rejected(metrics),
        hold=hold,
        steps=_step_views(findings),
        facts=_facts(run),
        warnings=run_warnings(run, findings),
        footer={"version": __version__, "run_directory": run.path.name,
                "schema_version": findings.get("schema_version")},
        **page_assets(page_charts.specs, with_plotly=True),
    )


def _first_tasks(findings: Mapping[str, Any]) -> int | None:
    capacity_tasks = (findings.get("capacity") or {}).get("tasks")
    if capacity_tasks:
        return int(capacity_tasks)
    steps = findings.get("steps") or []
    return steps[0].get("tasks") if steps else None


# -- header and headline ----------------------------------------------------------------------


def _header(run: RunDirectory, figures: RunFigures) -> dict[str, Any]:
    return {
        "name": figures.profile_name or figures.run_id,
        "meta": [part for part in (figures.run_id, format_date(figures.started_utc), figures.status) if part],
        "description": run.manifest.profile.get("description"),
        "toc": TABLE_OF_CONTENTS,
    }


def format_date(iso: str | None) -> str:
    if iso is None:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return ""


def _partial(run: RunDirectory) -> dict[str, str] | None:
    if not run.is_partial:
        return None
    reason = run.manifest.status_reason or "the process stopped before the run finished"
    return {"status": run.status, "reason": reason}


@dataclass(frozen=True)
class KeyFigure:
    """One cell of the headline's figures: a label, a value and an optional note under it."""

    label: str
    value: str
    note: str = ""
    note_style: str = "text"  # "code" for a metric's name, "badge" for a verdict drawn as a badge
    badge_kind: str | None = None  # the badge's verdict class when note_style is "badge"


@dataclass(frozen=True)
class PolicyPane:
    key: str
    label: str
    text: str  # shown in a <pre> and copied as is; escaped like any other text


@dataclass(frozen=True)
class PolicyBlock:
    kind: str
    title: str
    panes: list[PolicyPane]


def _headline(findings: Mapping[str, Any], figures: RunFigures) -> dict[str, Any]:
    inconclusive = findings.get("inconclusive") or {}
    return {
        "verdict": figures.verdict,
        "verdict_word": VERDICT_WORDS.get(figures.verdict, figures.verdict),
        "text": figures.headline,
        "key_figures": _key_figures(findings, figures),
        "evidence": _pattern_evidence(findings),
        "reasons": list(inconclusive.get("reasons") or []),
        "next_steps": list(inconclusive.get("next_steps") or []),
        "policies": _policies(findings),
    }


def _key_figures(findings: Mapping[str, Any], figures: RunFigures) -> list[KeyFigure]:
    capacity = findings.get("capacity") or {}
    cells = []
    if figures.metric:
        cells.append(KeyFigure("Scale on", figures.metric_label or figures.metric, figures.metric, note_style="code"))
        cells.append(KeyFigure("Target", with_unit(figures.target, figures.unit),
                               _interval_note(figures.target_interval, figures.unit)))
    if figures.per_task_rps is not None:
        cells.append(KeyFigure("Capacity per task", f"{format_number(figures.per_task_rps)} req/s",
                               _interval_note(figures.per_task_rps_interval)))
    if figures.service_rps is not None:
        tasks = "" if figures.tasks is None else figures.tasks
        cells.append(KeyFigure("Service capacity", f"{format_number(figures.service_rps)} req/s",
                               f"with {tasks} tasks at the SLO"))
    pattern = figures.pattern_label or figures.pattern
    if pattern:
        cells.append(KeyFigure("Pattern", pattern))
    doubling = capacity.get("doubling") or {}
    if doubling.get("tested"):
        ratio = as_float(doubling.get("ratio"))
        cells.append(KeyFigure("Doubling tasks", f"×{format_number(ratio)} capacity",
                               str(doubling.get("verdict")).replace("_", " "),
                               note_style="badge", badge_kind=doubling.get("verdict")))
    peak = capacity.get("tasks_for_peak") or {}
    if peak.get("tasks") is not None:
        zones = peak.get("availability_zones")
        cells.append(KeyFigure("Tasks for peak", str(peak.get("tasks")),
                               f"{format_number(as_float(peak.get('peak_rps')))} req/s over "
                               f"{'' if zones is None else zones} zones"))
    return cells


def _interval_note(interval: tuple[float, float] | None, unit: str | None = None) -> str:
    return f"interval {format_interval(interval, unit)}" if interval else ""


def _pattern_evidence(findings: Mapping[str, Any]) -> list[Any]:
    evidence = list((findings.get("pattern") or {}).get("evidence") or [])
    bottleneck = (findings.get("bottleneck") or {}).get("evidence")
    if bottleneck:
        evidence.append(bottleneck)
    doubling = ((findings.get("capacity") or {}).get("doubling") or {}).get("detail")
    if doubling:
        evidence.append(doubling)
    return list(dict.fromkeys(evidence))


def _policies(findings: Mapping[str, Any]) -> list[PolicyBlock]:
    policies = (findings.get("recommendation") or {}).get("policies") or {}
    blocks = []
    for kind, title in POLICY_KINDS:
        renderings = dict(policies.get(kind) or {})
        renderings["api_request"] = _api_requests(renderings)
        panes = [PolicyPane(key, label, _policy_text(renderings[key]))
                 for key, label in RENDERINGS if renderings.get(key)]
        if panes:
            blocks.append(PolicyBlock(kind, title, panes))
    manifests = policies.get("kubernetes") or {}
    panes = [PolicyPane(key, label, manifests[key]) for key, label in KUBERNETES_RENDERINGS
             if isinstance(manifests.get(key), str)]
    if panes:
        blocks.append(PolicyBlock("kubernetes", "Kubernetes", panes))
    return blocks


def _policy_text(content: Any) -> str:
    return content if isinstance(content, str) else json.dumps(content, indent=2)


def _api_requests(renderings: Mapping[str, Any]) -> Any:
    """Step scaling takes two policies and two alarms; show every request, not the first only."""
    scale_in, alarms = renderings.get("scale_in_api_request"), renderings.get("alarms")
    if not scale_in and not alarms:
        return renderings.get("api_request")
    policies = [p for p in (renderings.get("api_request"), scale_in) if p]
    return {"PutScalingPolicy": policies, "PutMetricAlarm": alarms or []}


# -- will it hold? ----------------------------------------------------------------------------


def _will_it_hold(page_charts: _Charts, run: RunDirectory, findings: Mapping[str, Any]) -> dict[str, Any]:
    """The recommended policy, step scaling and a lower target simulated on a spike
    (``analysis.simulation``); or why nothing is simulated."""
    from scalefinder.analysis.simulation.compare import compare
    from scalefinder.analysis.simulation.model import measured_start_delay, model_from_findings
    from scalefinder.core.errors import InputError

    if findings.get("verdict") != "recommended" or not findings.get("recommendation"):
        return {"why_not": "There is no recommended policy to simulate."}
    try:
        model = model_from_findings(dict(findings), measured_start_delay(run),
                                    availability_zones=run.manifest.analysis_options.availability_zones)
        demand, bounds, scenarios = compare(model)
    except InputError as exc:
        return {"why_not": f"Not simulated: {exc}."}
    rows = []
    for scenario in scenarios:
        summary = scenario.simulation.summary()
        over = summary["overprovisioning"]
        rows.append({"label": scenario.label, "breach_minutes": summary["breach_minutes"],
                     "first_breach": "" if summary["first_breach_minute"] is None else summary["first_breach_minute"],
                     "task_hours": f"{summary['task_hours']:.2f}", "peak_tasks": summary["peak_tasks"],
                     "overprovisioning": "" if over is None else f"{over * 100:+.0f}%"})
    figure = charts.hold_figure(scenarios, model.capacity_per_task_rps, model.slo_latency_ms)
    return {"why_not": None, "chart_id": page_charts.add(figure), "rows": rows, "demand": demand.description,
            "minutes": demand.minutes, "tasks": f"{bounds.min_tasks}-{bounds.max_tasks}",
            "start_delay": f"{bounds.start_delay_s:.0f} s ({model.start_delay_source})",
            "command": f"scalefinder simulate {run.path.name} --demand spike --start-delay-s 60",
            "validations": _validations(page_charts, run)}


def _validations(page_charts: _Charts, run: RunDirectory) -> dict[str, Any]:
    """The closed-loop checks of the simulation on the local cluster, where ``scalefinder validate``
    wrote them."""
    from scalefinder.analysis.simulation.validation import load_validations

    found, problems = load_validations(run.path)
    rows = []
    for validation in found:
        c = validation["comparison"]
        clock = validation.get("clock") or {}
        rows.append({"curve": validation.get("demand", {}).get("name", "?"), "minutes": c.get("minutes"),
                     "minute_s": clock.get("minute_s"), "tasks_share": f"{c.get('tasks_within_1_share', 0):.0%}",
                     "breach": f"{c.get('breach_minutes_predicted')} / {c.get('breach_minutes_actual')}",
                     "task_hours": f"{c.get('task_hours_predicted')} / {c.get('task_hours_actual')}",
                     "start_delay": clock.get("measured_start_delay_s"), "verdict": c["verdict"],
                     "chart_id": page_charts.add(charts.validation_figure(validation))})
    return {"rows": rows, "problems": problems}


# -- the ramp ---------------------------------------------------------------------------------


def _ramp_chart(page_charts: _Charts, run: RunDirectory) -> str:
    slo = run.manifest.slo.to_dict() if run.manifest.slo else {}
    return page_charts.add(charts.ramp_figure(run.load(), slo))


# -- the metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatisticalTestView:
    name: Any
    method: Any
    statistic: str
    p_value: str
    interval: str
    threshold: Any
    verdict: Any
    detail: Any


@dataclass(frozen=True)
class MetricView:
    name: Any
    title_label: str  # the metric's label when it says more than its name, shown before the name
    verdict: Any
    tests: list[StatisticalTestView]
    failed_tests: list[Mapping[str, Any]]
    reasons: list[Any]
    chart_id: str


def _metric_views(page_charts: _Charts, findings: Mapping[str, Any]) -> list[MetricView]:
    metrics = sorted(findings.get("metrics") or [], key=lambda m: VERDICT_ORDER.get(m.get("verdict"), len(VERDICT_ORDER)))
    recommendation = findings.get("recommendation") or {}
    first_tasks = _first_tasks(findings)
    views = []
    for metric in metrics:
        target = as_float(recommendation.get("target")) if metric.get("name") == recommendation.get("metric") else None
        name, label = metric.get("name"), metric.get("label")
        tests = metric.get("tests") or []
        views.append(MetricView(
            name=name,
            title_label=label if label and label != name else "",
            verdict=metric.get("verdict"),
            tests=[_test_view(t) for t in tests],
            failed_tests=[t for t in tests if t.get("verdict") == "fail"],
            reasons=list(metric.get("reasons") or []),
            chart_id=page_charts.add(charts.metric_figure(metric, first_tasks, target)),
        ))
    return views


def _test_view(test: Mapping[str, Any]) -> StatisticalTestView:
    return StatisticalTestView(
        name=test.get("name"),
        method=test.get("method"),
        statistic=_number(test.get("statistic")),
        p_value=_number(test.get("p_value")),
        interval=_interval_text(test.get("interval")),
        threshold=test.get("threshold"),
        verdict=test.get("verdict"),
        detail=test.get("detail"),
    )


def _number(value: Any) -> str:
    number = as_float(value)
    return "" if number is None else format_number(number, 3)


def _interval_text(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"[{_number(value[0])}, {_number(value[1])}]"
    return "" if value is None else str(value)


def _rejected(metrics: list[MetricView]) -> list[dict[str, Any]]:
    """Each rejected metric with what failed: its failed tests, else its reasons."""
    rejected = []
    for metric in metrics:
        if metric.verdict != "rejected":
            continue
        why = [t.get("detail") or t.get("name") for t in metric.failed_tests] or metric.reasons
        rejected.append({"name": metric.name, "why": "; ".join(str(w) for w in why)})
    return rejected


# -- steps and run facts ----------------------------------------------------------------------


@dataclass(frozen=True)
class StepView:
    row_class: str  # "invalid" and "breach" mark the rows to doubt
    step_id: Any
    phase: Any
    tasks: Any
    offered_rps: str
    achieved_rps: str
    p95_ms: str
    error_pct: str
    valid: bool | None
    steady: bool | None
    slo_met: bool | None


def _step_views(findings: Mapping[str, Any]) -> list[StepView]:
    views = []
    for step in findings.get("steps") or []:
        classes = []
        if step.get("valid") is False:
            classes.append("invalid")
        if step.get("slo_met") is False:
            classes.append("breach")
        views.append(StepView(
            row_class=" ".join(classes),
            step_id=step.get("step_id"),
            phase=step.get("phase"),
            tasks=step.get("tasks"),
            offered_rps=_number(step.get("offered_rps")),
            achieved_rps=_number(step.get("achieved_rps")),
            p95_ms=_number(step.get("p95_ms")),
            error_pct=_number(step.get("error_pct")),
            valid=step.get("valid"),
            steady=step.get("steady"),
            slo_met=step.get("slo_met"),
        ))
    return views


def _facts(run: RunDirectory) -> dict[str, Any]:
    """The run's facts as text: the profile (name and file) and label/value rows."""
    manifest = run.manifest
    environment = manifest.environment
    slo = manifest.slo.to_dict() if manifest.slo else {}
    libraries = environment.get("libraries") or {}
    host = environment.get("host") or {}
    status_reason = f" ({manifest.status_reason})" if manifest.status_reason else ""
    rows = [
        ("Run", f"{manifest.run_id} · {manifest.status}{status_reason}"),
        ("Started", format_date(manifest.started_utc)),
        ("Duration", format_duration(duration_between(manifest.started_utc, manifest.finished_utc))),
        ("Target", _target_words(manifest.target)),
        ("SLO", f'p{format_number(as_float(slo.get("percentile")))} ≤ {format_number(as_float(slo.get("latency_ms")))} ms, '
                f'errors ≤ {format_number(as_float(slo.get("error_budget_pct")))}%'),
        ("Load generator", _generator_words(manifest.generator)),
        ("Metric sources", ", ".join(sorted(manifest.sources)) or "—"),
        ("Cgroup mode", environment.get("cgroup_mode") or "—"),
        ("Host", ", ".join(f"{k} {v}" for k, v in host.items()) or "—"),
        ("Tool versions", ", ".join([f'scalefinder {environment.get("tool_version", "?")}',
                                     f'python {environment.get("python") or "?"}']
                                    + [f"{k} {v}" for k, v in sorted(libraries.items())])),
    ]
    return {"profile_name": manifest.profile_name, "profile_path": manifest.data.get("profile_path") or "", "rows": rows}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


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
    warnings = list(run.manifest.warnings)
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
