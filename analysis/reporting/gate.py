"""The CI performance gate: does this run still support the team's scaling policy?

Criteria come from the profile's ``[gate]`` table, overridden by command-line flags:

* ``slo_at_rate`` - the SLO was met at the declared rate (``slo_rate_rps``) with the run's task count;
* ``capacity_per_task`` - capacity per task is not lower than the baseline's by more than
  ``capacity_tolerance_pct``. A ramp measures capacity only to within its step size, so a drop
  fails only when it is both larger than the tolerance and significant: the whole range the
  ratio can take, given both runs' capacity intervals, lies below the bound;
* ``recommended_metric`` - the recommended metric (or the lack of one) is unchanged;
* ``target`` - the recommended target moved by no more than ``target_tolerance_pct``.

The last three need a baseline. A criterion that cannot be judged for lack of data in the
current run fails: an absent measurement is never a pass.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from scalefinder.core.errors import InputError
from scalefinder.core.models import (
    DEFAULT_CAPACITY_TOLERANCE_PCT,
    DEFAULT_TARGET_TOLERANCE_PCT,
    GateCriteria,
    ModelError,
    RunManifest,
)

from scalefinder.analysis.reporting.figures import RunFigures, as_float, format_number, with_unit

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass(frozen=True)
class CriterionResult:
    name: str
    outcome: str  # pass | fail | skipped
    message: str  # one line with the numbers that decided it


@dataclass(frozen=True)
class GateResult:
    run_id: str
    baseline_run_id: str | None
    criteria: GateCriteria
    results: tuple[CriterionResult, ...]

    @property
    def passed(self) -> bool:
        return not self.failures and any(r.outcome == PASS for r in self.results)

    @property
    def failures(self) -> tuple[CriterionResult, ...]:
        return tuple(r for r in self.results if r.outcome == FAIL)


def criteria_from_profile(manifest: RunManifest) -> GateCriteria:
    """The ``[gate]`` table of the profile recorded in the manifest (all unset when absent)."""
    with _as_gate_error():
        return manifest.gate_criteria()


def criteria_from_flags(**flags: Any) -> GateCriteria:
    """The gate's command-line flags, checked against the same ranges as the profile's table."""
    with _as_gate_error():
        return GateCriteria(**flags)


def merge_criteria(base: GateCriteria, overrides: GateCriteria) -> GateCriteria:
    """Flags given on the command line win over the profile's table."""
    return base.merged(overrides)


@contextmanager
def _as_gate_error() -> Iterator[None]:
    try:
        yield
    except ModelError as exc:
        raise InputError(f"gate {exc}") from None


def evaluate_gate(
    findings: Mapping[str, Any],
    figures: RunFigures,
    criteria: GateCriteria,
    baseline: RunFigures | None = None,
) -> GateResult:
    """Judge the run against every criterion that applies; raises InputError when none does."""
    results: list[CriterionResult] = []
    if criteria.slo_rate_rps is not None:
        results.append(check_slo_at_rate(findings, criteria.slo_rate_rps))
    if baseline is None:
        results.extend(_needs_baseline(criteria))
    else:
        capacity_tol = _or_default(criteria.capacity_tolerance_pct, DEFAULT_CAPACITY_TOLERANCE_PCT)
        target_tol = _or_default(criteria.target_tolerance_pct, DEFAULT_TARGET_TOLERANCE_PCT)
        results.append(check_capacity(figures, baseline, capacity_tol))
        if criteria.metric_unchanged is not False:
            results.append(check_metric(figures, baseline))
        results.append(check_target(figures, baseline, target_tol))
    if not any(r.outcome != SKIPPED for r in results):
        raise InputError(
            "nothing to check: give --baseline or --slo-rate-rps, or a [gate] table with slo_rate_rps in the profile"
        )
    return GateResult(
        run_id=figures.run_id,
        baseline_run_id=baseline.run_id if baseline else None,
        criteria=criteria,
        results=tuple(results),
    )


def _or_default(value: float | None, default: float) -> float:
    return default if value is None else float(value)


def _needs_baseline(criteria: GateCriteria) -> list[CriterionResult]:
    wanted = [("capacity_per_task", criteria.capacity_tolerance_pct), ("target", criteria.target_tolerance_pct)]
    if criteria.metric_unchanged:
        wanted.append(("recommended_metric", True))
    return [CriterionResult(name, SKIPPED, "no baseline given (--baseline)") for name, value in wanted if value is not None]


# -- SLO at the declared rate ------------------------------------------------------------------


def check_slo_at_rate(findings: Mapping[str, Any], rate_rps: float) -> CriterionResult:
    """Pass when every valid step up to a rate of at least ``rate_rps`` met the SLO at the run's
    first task count: the rate the service demonstrably sustains, not one lucky step."""
    steps = _first_capacity_steps(findings.get("steps") or [])
    if not steps:
        return CriterionResult("slo_at_rate", FAIL, "the run has no valid step at its first task count")
    sustained, breach = None, None
    for step in steps:
        if step.get("slo_met") is True:
            sustained = as_float(step.get("offered_rps"))
        else:
            breach = step
            break
    tasks = steps[0].get("tasks")
    sustained_text = "no rate" if sustained is None else f"up to {format_number(sustained)} req/s"
    breach_text = ""
    if breach is not None:
        breach_text = f"; first breach at {format_number(as_float(breach.get('offered_rps')))} req/s (step {breach.get('step_id')})"
    message = f"SLO met {sustained_text} with {tasks} tasks{breach_text}; required {format_number(rate_rps)} req/s"
    passed = sustained is not None and sustained >= rate_rps
    return CriterionResult("slo_at_rate", PASS if passed else FAIL, message)


def _first_capacity_steps(steps: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    valid = [s for s in steps if s.get("valid") is not False and as_float(s.get("offered_rps")) is not None]
    if not valid:
        return []
    tasks = valid[0].get("tasks")
    same = [s for s in valid if s.get("tasks") == tasks]
    return sorted(same, key=_offered_rps)


def _offered_rps(step: Mapping[str, Any]) -> float:
    rate = as_float(step.get("offered_rps"))
    assert rate is not None  # only steps with an offered rate are sorted (see _first_capacity_steps)
    return rate


# -- capacity per task ------------------------------------------------------------------------


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float
    low: float
    high: float
    has_interval: bool


def capacity_ratio(figures: RunFigures, baseline: RunFigures) -> RatioEstimate:
    """Current over baseline capacity per task, with the range the ratio can take.

    A run's capacity interval is a bracket, ``[last good rate, first breach]`` per task: the
    true capacity lies somewhere inside it. So the ratio lies in ``[low / baseline high,
    high / baseline low]``; a run without an interval contributes its point estimate to both ends.
    """
    current, base = figures.per_task_rps, baseline.per_task_rps
    assert current is not None and base is not None  # check_capacity compares only runs with an estimate
    current_low, current_high = figures.per_task_rps_interval or (current,) * 2
    base_low, base_high = baseline.per_task_rps_interval or (base,) * 2
    has_interval = figures.per_task_rps_interval is not None or baseline.per_task_rps_interval is not None
    return RatioEstimate(
        ratio=current / base,
        low=current_low / base_high,
        high=current_high / base_low,
        has_interval=has_interval,
    )


def check_capacity(figures: RunFigures, baseline: RunFigures, tolerance_pct: float) -> CriterionResult:
    name = "capacity_per_task"
    if not baseline.per_task_rps or baseline.per_task_rps <= 0:
        raise InputError(f"the baseline run {baseline.run_id or ''} has no capacity per task to compare with")
    if not figures.per_task_rps or figures.per_task_rps <= 0:
        return CriterionResult(name, FAIL, f"this run has no capacity estimate (verdict {figures.verdict})")
    estimate = capacity_ratio(figures, baseline)
    bound = 1 - tolerance_pct / 100
    larger = estimate.ratio < bound
    significant = estimate.high < bound
    change = f"{_pct(estimate.ratio)} (interval {_pct(estimate.low)} to {_pct(estimate.high)})"
    if not estimate.has_interval:
        change = f"{_pct(estimate.ratio)} (no interval in either run; taken as exact)"
    numbers = (
        f"capacity per task {format_number(figures.per_task_rps)} req/s vs baseline "
        f"{format_number(baseline.per_task_rps)} req/s: {change}; tolerance -{format_number(tolerance_pct)}%"
    )
    if larger and significant:
        return CriterionResult(name, FAIL, f"{numbers}: the drop is larger than the tolerance and significant "
                                           "(its whole interval lies below the bound)")
    if larger:
        return CriterionResult(name, PASS, f"{numbers}: larger than the tolerance but not significant "
                                           "(its interval reaches the bound)")
    return CriterionResult(name, PASS, numbers)


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


# -- recommended metric and target ------------------------------------------------------------


def check_metric(figures: RunFigures, baseline: RunFigures) -> CriterionResult:
    current, before = _recommendation_words(figures), _recommendation_words(baseline)
    if (figures.verdict, figures.metric) == (baseline.verdict, baseline.metric):
        return CriterionResult("recommended_metric", PASS, f"unchanged: {current}")
    return CriterionResult("recommended_metric", FAIL, f"changed from {before} (baseline) to {current}")


def _recommendation_words(figures: RunFigures) -> str:
    if figures.metric:
        return figures.metric
    return f"no recommendation ({figures.verdict})"


def check_target(figures: RunFigures, baseline: RunFigures, tolerance_pct: float) -> CriterionResult:
    name = "target"
    if baseline.target is None or baseline.metric is None:
        return CriterionResult(name, SKIPPED, "the baseline recommends no target")
    if figures.metric != baseline.metric or figures.target is None:
        return CriterionResult(name, SKIPPED, "the recommended metric changed; targets are not comparable")
    if baseline.target == 0:
        moved = 0.0 if figures.target == 0 else math.inf
    else:
        moved = abs(figures.target - baseline.target) / abs(baseline.target) * 100
    message = (
        f"target {with_unit(figures.target, figures.unit)} vs baseline {with_unit(baseline.target, baseline.unit)}: "
        f"moved {moved:.1f}%; tolerance {format_number(tolerance_pct)}%"
    )
    return CriterionResult(name, PASS if moved <= tolerance_pct else FAIL, message)
