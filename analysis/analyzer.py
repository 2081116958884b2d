"""From a run directory to findings: the order in which the analysis is done.

``analyze_run`` is pure: it reads only the run directory it is given and returns the findings
as a JSON-ready dict (``analysis.findings`` writes it). Each stage lives in its own module:
steady-state windows (``steady``), the latency knee (``knee``), the per-metric tests
(``properties``), bottleneck and pattern (``classify``), target and policies (``recommend``,
``policy``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from scalefinder.analysis import classify, deployment, knee as knees, properties as props, recommend, units
from scalefinder.analysis.samples import read_service_samples
from scalefinder.analysis.steady import build_windows
from scalefinder.core import catalog, slo as slos
from scalefinder.core.errors import RunDirectoryError
from scalefinder.core.models import RAMP_PHASES, AnalysisOptions, Findings, RunManifest, Verdict, jsonable
from scalefinder.core.redact import redact_urls_in
from scalefinder.core.rundir import RunDirectory

log = logging.getLogger(__name__)

RECOVERY_PHASE = "recovery"
# Events that mean a task hit a hard limit: it died and restarted, or the kernel's OOM killer
# killed a process inside it (a worker of a pre-forking server) while the task kept running.
# A process restart on its own is not counted: a server also recycles workers on purpose.
CRASH_EVENTS = ("task_crash", "task_restart", "oom_kill")


@dataclass(frozen=True)
class MetricData:
    """One metric's step values and kept samples at service level, joined with the steps."""

    name: str
    info: catalog.MetricInfo
    steps: pd.DataFrame  # step table columns + value, ci_low, ci_high, steady, per_task_rps
    samples: pd.DataFrame  # step_id, time_unix_s, value, per_task_rps
    peaks: dict[int, float]  # step_id -> highest per-task sample in the step (warm-up included)


def options_from_manifest(manifest: RunManifest, *, headroom: float | None = None,
                          peak_rps: float | None = None, availability_zones: int | None = None) -> AnalysisOptions:
    """Command-line values win over the profile's ``[analysis]`` table, which wins over defaults."""
    return manifest.analysis_options.overridden(headroom=headroom, peak_rps=peak_rps, availability_zones=availability_zones)


def analyze_run(run: RunDirectory, options: AnalysisOptions) -> dict[str, Any]:
    manifest = run.manifest
    slo = _slo(manifest)
    steps = _steps(run, slo)
    warnings = list(manifest.warnings)
    gaps: list[tuple[str, str]] = []  # (reason, next step) that make the answer inconclusive
    if run.is_partial:
        warnings.append(f"the run is partial (status {run.status}); only its finished steps are analysed")
    initial = _initial_tasks(manifest, steps)
    first = steps[(steps["tasks"] == initial) & steps["valid"]]
    second_tasks = _second_tasks(steps, initial)
    second = steps[(steps["tasks"] == second_tasks) & steps["valid"]] if second_tasks else steps.iloc[0:0]
    knee = _knee(steps, first, initial, warnings)
    knee2 = knees.find_knee(second, second_tasks) if second_tasks and len(second) else None
    doubling = knees.doubling(knee, knee2, second, _invalid_beyond(steps, second_tasks, knee)) if knee else {"tested": False, "verdict": "inconclusive",
                                                                   "detail": "no valid step at the initial task count"}
    warnings.extend(knees.slo_warnings(steps, slo, knee, knee2))
    _check_steps(steps, first, second, knee, initial, gaps)
    if not doubling.get("tested"):
        warnings.append(f"capacity doubling was not checked ({doubling['detail']}): a limit shared by all tasks "
                        "would go unnoticed; run the 'beyond' phase to rule it out")

    crash_steps = _crash_steps(run, steps)
    metric_data = _metric_data(run, steps, crash_steps)
    log.debug("%s: %d steps (%d valid), %d metrics, crashes in steps %s", run.path, len(steps),
              int(steps["valid"].sum()), len(metric_data), crash_steps)
    if not metric_data:
        gaps.append(("no utilization metric was recorded",
                     "check the metric sources in the profile; at least CPU and memory are needed"))
    # Past the knee the curve at twice the tasks is the same curve per task only when capacity
    # doubled; then the 'beyond' steps add the post-knee points the saturation fit needs.
    pooled = second_tasks if doubling.get("verdict") == "scales" else None
    results = {name: _tests(data, crash_steps, knee, initial, second_tasks, pooled)
               for name, data in metric_data.items()}
    _adjust_demand(results)
    verdicts = {name: classify.metric_verdict(tests) for name, tests in results.items()}
    cpu_units = units.cpu_units_from_manifest(manifest)
    for name, data in metric_data.items():
        problem = units.check_units(name, data.info, data.steps["value"].to_numpy(float), cpu_units)
        if problem:
            verdicts[name] = ("inconclusive", [problem])
            gaps.append((problem, f"report {name} as percent of the task's reservation (0-100) and analyse again"))

    capacity = recommend.capacity(knee, initial, slo, doubling, options)
    capacity["lower_bound"] = bool(knee is not None and knee.slo_breach_step is not None
                                   and not steps.loc[steps["step_id"] == knee.slo_breach_step, "valid"].all())
    decision = classify.decide(metric_data, results, verdicts, knee, doubling, capacity, first, manifest)
    knee_for_capacity = knee
    if decision.pattern["name"] == "job_processor":
        assert decision.metric is not None  # a job processor is recommended on its queue's backlog
        # the queue's overflow, not the SLO breach, bounds what a job processor can take; its
        # steps were all valid (the backlog test reads valid steps only), so no lower bound
        onset = results[decision.metric]["backlog_growth"].extra["onset_per_task_rps"]
        knee_for_capacity = knees.at_queue_overflow(first, initial, onset)
        capacity = {**recommend.capacity(knee_for_capacity, initial, slo, doubling, options,
                                         method=recommend.QUEUE_CAPACITY), "lower_bound": False}
    if decision.verdict == "no_task_level_metric" and capacity.get("tasks_for_peak"):
        # Adding tasks does not add capacity here, so no task count serves a higher peak.
        capacity["tasks_for_peak"] = None
        warnings.append("no task count is given for the peak: capacity did not grow with the task count")
    recommendation = None
    if decision.verdict == "recommended" and not gaps:
        assert decision.metric is not None  # every recommendation names its metric (classify.decide)
        if decision.pattern["name"] == "job_processor":
            recommendation = recommend.backlog_recommendation(decision.metric, metric_data[decision.metric],
                                                              knee_for_capacity, initial, options, decision, slo,
                                                              deployment.from_manifest(manifest))
        else:
            recommendation = recommend.recommendation(decision.metric, metric_data[decision.metric],
                                                      results[decision.metric], knee, initial, options, decision,
                                                      deployment.from_manifest(manifest))
        if recommendation is None:
            gaps.append((f"no safe target for {decision.metric}: the fitted relation leaves no room below saturation",
                         "re-run with smaller ramp steps below capacity"))
    verdict = decision.verdict
    reasons = [g[0] for g in gaps] + list(decision.inconclusive_reasons)
    next_steps = [g[1] for g in gaps] + list(decision.next_steps)
    if gaps and verdict != "inconclusive":
        verdict = "inconclusive"
    if verdict == "inconclusive":
        recommendation = None
    metrics_out = [
        _metric_entry(name, metric_data[name], results[name],
                      "recommended" if recommendation and recommendation.metric == name else verdicts[name][0],
                      verdicts[name][1])
        for name in metric_data
    ]
    undecided = verdict == Verdict.INCONCLUSIVE
    findings = Findings(
        tool_version=_tool_version(),
        run=_run_block(manifest, run),
        verdict=Verdict(verdict),
        headline=recommend.headline(verdict, recommendation, capacity, decision, reasons),
        recommendation=recommendation,
        capacity=capacity,
        pattern=decision.pattern,
        bottleneck=decision.bottleneck,
        knee=_knee_block(knee),
        steps=tuple(_step_entries(steps, metric_data)),
        metrics=tuple(metrics_out),
        warnings=tuple(warnings),
        inconclusive_reasons=tuple(reasons) if undecided else (),
        next_steps=tuple(next_steps) if undecided else (),
    )
    return jsonable(findings.to_dict())


# -- inputs --------------------------------------------------------------------------------------
def _slo(manifest: RunManifest) -> dict[str, Any]:
    if manifest.slo is None:
        raise RunDirectoryError("the run manifest has no SLO (slo.latency_ms); it cannot be analysed")
    return manifest.slo.to_dict()  # written into the findings as recorded


def _steps(run: RunDirectory, slo: dict[str, Any]) -> pd.DataFrame:
    steps = run.steps().copy()
    numeric = ["step_id", "tasks", "offered_rps", "start_unix_s", "end_unix_s", "warmup_s", "achieved_rps", "sent",
               "failures"]
    for column in numeric:
        steps[column] = pd.to_numeric(steps[column], errors="coerce")
    steps = steps.dropna(subset=["step_id", "tasks", "offered_rps", "start_unix_s", "end_unix_s"])
    steps = steps[(steps["end_unix_s"] > steps["start_unix_s"]) & (steps["tasks"] > 0)]
    steps = steps.drop_duplicates("step_id", keep="last").sort_values("start_unix_s").reset_index(drop=True)
    steps["step_id"] = steps["step_id"].astype(int)
    steps["tasks"] = steps["tasks"].astype(int)
    steps["phase"] = steps["phase"].astype("string").fillna("ramp")
    steps["valid"] = steps["valid"].astype(bool)
    steps["warmup_s"] = steps["warmup_s"].fillna(0)
    # Recovery probes after an aborted step only check that the target came back: they are not
    # measurements, and the analysis never sees them.
    steps = steps[steps["phase"] != RECOVERY_PHASE].reset_index(drop=True)
    steps["slo_ok"], steps["slo_known"] = knees.slo_columns(steps, slo)
    # A step the run's safety rule aborted was an overload, whatever its few finished requests say.
    if "end_reason" in steps.columns:
        aborted = steps["end_reason"].eq("abort").to_numpy(dtype=bool)
        steps.loc[aborted, "slo_ok"], steps.loc[aborted, "slo_known"] = False, True
    steps["per_task_rps"] = steps["offered_rps"] / steps["tasks"]
    steps["mid_unix_s"] = (steps["start_unix_s"] + steps["end_unix_s"]) / 2
    return steps


def _initial_tasks(manifest: RunManifest, steps: pd.DataFrame) -> int:
    declared = manifest.initial_tasks
    if isinstance(declared, int) and declared > 0 and (steps["tasks"] == declared).any():
        return declared
    ramp = steps[steps["phase"].isin(RAMP_PHASES)]
    source = ramp if len(ramp) else steps
    return int(source["tasks"].iloc[0]) if len(source) else 0


def _second_tasks(steps: pd.DataFrame, initial: int) -> int | None:
    others = steps.loc[steps["tasks"] != initial, "tasks"]
    return int(others.mode().iloc[0]) if len(others) else None


def _knee(steps: pd.DataFrame, first: pd.DataFrame, initial: int, warnings: list[str]):
    """The knee among valid steps; failing that, an invalid step that broke the SLO above the
    last good rate is taken as the breach, so the capacity is a lower bound and says so."""
    knee = knees.find_knee(first, initial) if len(first) else None
    if knee is None or knee.breached or knee.last_good_rps is None:
        return knee
    above = steps[(steps["tasks"] == initial) & ~steps["valid"] & ~steps["slo_ok"] & steps["slo_known"]
                  & (steps["offered_rps"] > knee.last_good_rps)]
    if above.empty:
        return knee
    breach = above.sort_values("offered_rps").iloc[[0]]
    warnings.append(f"the step at {float(breach['offered_rps'].iloc[0]):g} req/s broke the SLO but is invalid "
                    f"({_first_reason(breach)}); it is taken as the breach, so the capacity is a lower bound")
    return knees.find_knee(pd.concat([first, breach]), initial)


def _invalid_beyond(steps: pd.DataFrame, tasks: int | None, knee) -> int:
    if tasks is None or knee is None or knee.last_good_rps is None:
        return 0
    above = steps[(steps["tasks"] == tasks) & ~steps["valid"] & (steps["offered_rps"] > knee.last_good_rps * 1.05)]
    return len(above)


def _first_reason(steps: pd.DataFrame) -> str:
    reasons = steps["invalid_reason"].dropna()
    return str(reasons.iloc[0]) if len(reasons) else "no reason recorded"


def _check_steps(steps, first, second, knee, initial, gaps) -> None:
    if steps.empty:
        gaps.append(("no step finished in this run", "run the experiment to the end of at least the ramp phase"))
        return
    # A step the ramp repeated at the same rate ("retried") is invalid so it is not counted
    # twice; the repeat decided, so the first attempt says nothing about the generator.
    invalid = steps[~steps["valid"] & (steps["end_reason"] != "retried")]
    if knee is None or not knee.breached:
        if len(invalid) and (knee is None or invalid["offered_rps"].min() <= steps["offered_rps"].max()):
            gaps.append((f"the load generator limited the run before the service saturated ({len(invalid)} invalid "
                         f"steps: {_first_reason(invalid)})",
                         "give the load generator more CPU: run with --workers N or from a larger machine"))
        else:
            gaps.append(("the SLO was never broken, so the capacity is unknown",
                         "raise ramp.max_rps (or max_duration_s) so the ramp reaches the SLO breach"))
    good = first[first["slo_ok"]] if len(first) else first
    if knee is not None and knee.last_good_rps is not None:
        good = good[good["offered_rps"] <= knee.last_good_rps]
    if len(good) < props.MIN_DEMAND_STEPS:
        ceiling = knee.slo_breach_rps if knee is not None and knee.slo_breach_rps else float("inf")
        lost = invalid[(invalid["tasks"] == initial) & (invalid["offered_rps"] < ceiling)]
        why = f"; {len(lost)} more were invalid ({_first_reason(lost)})" if len(lost) else ""
        fix = ("give the load generator more CPU (--workers N, a larger machine) and " if len(lost) else "") + \
            "use a smaller ramp.step_rps (or a lower start_rps) so at least 6 steps fall below capacity"
        gaps.append((f"only {len(good)} valid step(s) below saturation at {initial} tasks{why}; "
                     f"{props.MIN_DEMAND_STEPS} are needed for an exact rank test", fix))
    if second.empty:
        gaps.append((f"only one task count ({initial}) was run, so proportionality to capacity cannot be tested",
                     "enable the replay phase (ramp.replay_steps >= 4) so the rates are replayed at twice the tasks"))


def _metric_data(run: RunDirectory, steps: pd.DataFrame, crash_steps: list[int]) -> dict[str, MetricData]:
    if steps.empty:
        return {}
    # Verdicts rest on the service-level series, the one an autoscaler acts on; per-task samples
    # are read only for each task's peak (a task that dies at its limit).
    samples = read_service_samples(run.metric_batches(), steps, crash_steps)
    if samples.rows.empty:
        return {}
    windows = build_windows(samples.rows, steps)
    out = {}
    service_values = windows.values
    service_kept = windows.samples
    step_columns = ["step_id", "phase", "tasks", "offered_rps", "achieved_rps", "per_task_rps", "valid", "slo_ok",
                    "mid_unix_s"]
    for name, table in service_values.groupby("metric", sort=True, observed=True):
        joined = table.merge(steps[step_columns], on="step_id", how="inner").sort_values("step_id")
        kept = service_kept[service_kept["metric"] == name].merge(steps[["step_id", "per_task_rps"]], on="step_id")
        info = catalog.info(str(name))
        out[str(name)] = MetricData(str(name), info, joined.reset_index(drop=True), kept,
                                    samples.peaks.get(str(name), {}))
    return out


# -- per-metric tests ----------------------------------------------------------------------------
def _tests(data: MetricData, crash_steps: list[int], knee, initial: int, second_tasks: int | None,
           pooled_tasks: int | None = None):
    steps = data.steps
    valid = steps[steps["valid"]]
    at_first = valid[valid["tasks"] == initial]
    below = _below_capacity(at_first, knee)
    tests: dict[str, props.TestResult] = {}
    tests["demand_correlation"] = props.demand_correlation(below["per_task_rps"], below["value"])
    kept = data.samples[data.samples["step_id"].isin(below["step_id"])]
    tests["demand_slope"] = props.demand_slope(kept["per_task_rps"], kept["value"])
    curve = valid[valid["tasks"].isin([initial, pooled_tasks])] if pooled_tasks else at_first
    knee_per_task = knee.last_good_per_task_rps if knee is not None else None
    tests["saturation"] = props.saturation(curve["per_task_rps"], curve["value"], limit=data.info.limit,
                                           knee_rps=knee_per_task)
    tests["crash_at_limit"] = props.crash_at_limit(crash_steps, data.peaks, limit=data.info.limit,
                                                   last_good_rps=knee.last_good_rps if knee else None)
    at_second = valid[valid["tasks"] == second_tasks] if second_tasks else valid.iloc[0:0]
    capacity_per_task = knee.last_good_per_task_rps if knee else None
    below_second = at_second[at_second["slo_ok"]]
    if capacity_per_task is not None:
        below_second = below_second[below_second["per_task_rps"] <= capacity_per_task * 1.001]
    same_a, same_b = _common_range(below, below_second)
    tests["proportionality"] = props.proportionality(same_a["offered_rps"], same_a["value"], same_b["offered_rps"],
                                                     same_b["value"], tasks_a=initial,
                                                     tasks_b=second_tasks or 2 * initial)
    baseline = tests["proportionality"].extra.get("baseline")
    tests["capacity_ratio"] = props.capacity_ratio(_matched(below, at_second), baseline=baseline, tasks_a=initial,
                                                   tasks_b=second_tasks or 2 * initial)
    settled = valid[valid["slo_ok"]]
    holds = [(int(step_id), group["time_unix_s"].to_numpy(float), group["value"].to_numpy(float))
             for step_id, group in data.samples[data.samples["step_id"].isin(settled["step_id"])].groupby("step_id")]
    tests["time_trend"] = props.time_trend(holds, (settled["per_task_rps"], settled["value"],
                                                   settled["mid_unix_s"] / 3600.0))
    tests["flat_near_limit"] = props.flat_near_limit(below["per_task_rps"], below["value"], limit=data.info.limit)
    if classify.is_queue_backlog(data.name):
        breach = (knee.slo_breach_rps / initial) if knee and knee.slo_breach_rps else None
        # A per-task depth is the queue's depth over the task count: one job is 1/tasks of it.
        one_job = 1.0 / initial if data.name == catalog.QUEUE_BACKLOG_PER_TASK else 1.0
        tests["backlog_growth"] = props.backlog_growth(_holds(at_first, data.samples), breach_per_task_rps=breach,
                                                       one_job=one_job)
    return tests


def _holds(steps: pd.DataFrame, samples: pd.DataFrame) -> list[props.Hold]:
    by_step = {int(k): g.sort_values("time_unix_s") for k, g in samples.groupby("step_id")}
    empty = samples.iloc[0:0]
    return [props.Hold(int(r.step_id), float(r.per_task_rps), float(r.value),
                       by_step.get(int(r.step_id), empty)["time_unix_s"].to_numpy(float),
                       by_step.get(int(r.step_id), empty)["value"].to_numpy(float))
            for r in steps.itertuples()]


def _common_range(a: pd.DataFrame, b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The steps of each phase within the range of rates per task the other phase covered (+5%):
    the phases are compared at the same load per task, so a knee that only one phase reached
    does not bend the common line."""
    if a.empty or b.empty:
        return a, b
    top = min(a["per_task_rps"].max(), b["per_task_rps"].max()) * 1.05
    return a[a["per_task_rps"] <= top], b[b["per_task_rps"] <= top]


def _below_capacity(at_first: pd.DataFrame, knee) -> pd.DataFrame:
    good = at_first[at_first["slo_ok"]]
    if knee is not None and knee.last_good_rps is not None:
        good = good[good["offered_rps"] <= knee.last_good_rps]
    return good.sort_values("offered_rps")


def _matched(first: pd.DataFrame, second: pd.DataFrame) -> list[tuple[float, float, float]]:
    """(rate, value with fewer tasks, value with more) for rates run at both task counts (+-1%)."""
    if first.empty or second.empty:
        return []
    a = first.sort_values("offered_rps")[["offered_rps", "value"]]
    b = second.sort_values("offered_rps")[["offered_rps", "value"]]
    pairs = pd.merge_asof(b, a.rename(columns={"offered_rps": "rate_a", "value": "value_a"}),
                          left_on="offered_rps", right_on="rate_a", direction="nearest")
    close = (pairs["rate_a"] - pairs["offered_rps"]).abs() <= 0.01 * pairs["offered_rps"]
    pairs = pairs[close]
    return list(zip(pairs["offered_rps"].astype(float), pairs["value_a"].astype(float), pairs["value"].astype(float)))


def _crash_steps(run: RunDirectory, steps: pd.DataFrame) -> list[int]:
    times = [float(e["time_unix_s"]) for e in run.events()
             if e.get("kind") in CRASH_EVENTS and isinstance(e.get("time_unix_s"), (int, float))]
    found = []
    for moment in times:
        hit = steps[(steps["start_unix_s"] <= moment) & (moment < steps["end_unix_s"])]
        if len(hit):
            found.append(int(hit["step_id"].iloc[0]))
    return sorted(set(found))


def _adjust_demand(results: dict[str, dict[str, props.TestResult]]) -> None:
    """Benjamini-Hochberg over the demand tests of all metrics: many metrics are screened."""
    names = [n for n, tests in results.items() if "p_raw" in tests["demand_correlation"].extra]
    if len(names) < 2:
        return
    raw = [results[n]["demand_correlation"].extra["p_raw"] for n in names]
    adjusted = props.benjamini_hochberg(raw)
    for name, p in zip(names, adjusted):
        results[name]["demand_correlation"] = props.adjust_demand(results[name]["demand_correlation"], float(p))


# -- output blocks -------------------------------------------------------------------------------
def _metric_entry(name, data: MetricData, tests, verdict: str, reasons: list[str]) -> dict[str, Any]:
    sat = tests["saturation"].extra
    prop = tests["proportionality"].extra
    fit = {"baseline": prop.get("baseline"), "slope_per_task_rps": prop.get("slope_per_task_rps"),
           "breakpoint_rps": sat.get("breakpoint_rps"), "plateau_value": sat.get("plateau_value")}
    if fit["baseline"] is None:
        fit["baseline"] = tests["demand_slope"].extra.get("intercept")
        fit["slope_per_task_rps"] = tests["demand_slope"].statistic
    step_values = [
        {"step_id": int(r.step_id), "phase": str(r.phase), "tasks": int(r.tasks), "offered_rps": float(r.offered_rps),
         "per_task_rps": float(r.per_task_rps), "value": float(r.value), "ci_low": float(r.ci_low),
         "ci_high": float(r.ci_high), "steady": bool(r.steady)}
        for r in data.steps.itertuples()
    ]
    return {"name": name, "label": classify.label(name), "unit": data.info.unit or "", "role": data.info.role,
            "limit": data.info.limit, "verdict": verdict, "reasons": reasons,
            "tests": [t.as_dict() for t in tests.values()], "step_values": step_values, "fit": fit}


def _step_entries(steps: pd.DataFrame, metric_data: dict[str, MetricData]) -> list[dict[str, Any]]:
    steady_by_step: dict[int, list[bool]] = {}
    for data in metric_data.values():
        for r in data.steps.itertuples():
            steady_by_step.setdefault(int(r.step_id), []).append(bool(r.steady))
    entries = []
    for r in steps.itertuples():
        flags = steady_by_step.get(int(r.step_id), [])
        entries.append({
            "step_id": int(r.step_id), "phase": str(r.phase), "tasks": int(r.tasks), "offered_rps": float(r.offered_rps),
            "achieved_rps": _num(r.achieved_rps), "p50_ms": _num(getattr(r, "p50_ms", None)),
            "p95_ms": _num(getattr(r, "p95_ms", None)), "p99_ms": _num(getattr(r, "p99_ms", None)),
            "error_pct": round(slos.error_pct(r.failures, r.dropped, r.sent) or 0.0, 3),
            "valid": bool(r.valid), "invalid_reason": r.invalid_reason if isinstance(r.invalid_reason, str) else None,
            "steady": bool(sum(flags) >= len(flags) / 2) if flags else None,
            "slo_met": bool(r.slo_ok) if r.slo_known else None, "warmup_cut_s": _num(r.warmup_s), "start_unix_s": float(r.start_unix_s),
            "end_unix_s": float(r.end_unix_s), "end_reason": r.end_reason if isinstance(r.end_reason, str) else None,
        })
    return entries


def _knee_block(knee) -> dict[str, Any] | None:
    if knee is None:
        return None
    return {"tasks": knee.tasks, "slo_breach_step": knee.slo_breach_step, "slo_breach_rps": knee.slo_breach_rps,
            "last_good_step": knee.last_good_step, "last_good_rps": knee.last_good_rps,
            "last_good_achieved_rps": knee.last_good_achieved_rps, "kneedle_rps": knee.kneedle_rps}


def _run_block(manifest: RunManifest, run: RunDirectory) -> dict[str, Any]:
    return {"run_id": manifest.run_id or None, "status": run.status, "profile_name": manifest.profile_name,
            "started_utc": manifest.started_utc, "finished_utc": manifest.finished_utc,
            "target": redact_urls_in(manifest.data.get("target")),  # an older manifest may hold credentials
            "cgroup_mode": manifest.cgroup_mode,
            "path": str(run.path)}


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _tool_version() -> str:
    from scalefinder import __version__

    return __version__
