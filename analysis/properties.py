"""The statistical tests behind every verdict, one function per property.

Each function takes plain arrays (one steady-state value per step, or the kept samples of the
holds) and returns a frozen ``TestResult`` that stores its method, inputs, statistic, p-value
or interval, threshold and verdict, so a reader of findings.json can check it. A verdict is
``pass`` (the property holds, good for a scaling metric), ``fail`` (it does not, with a
practical size, not only significance) or ``inconclusive`` (the data cannot tell).

The methods follow ``docs/analysis.md``: Kendall's tau with the exact test for demand
correlation, Newey-West (HAC) OLS slopes, hinge regression with a two-one-sided-tests plateau
rule for saturation, an equivalence test on a phase indicator for proportionality, HAC slopes
on time within constant-load holds for memory that follows time, and a Mann-Kendall trend test
within holds for a queue's backlog that is empty below capacity and grows past it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from scalefinder.core.models import TestResult, TestVerdict, format_p

# The verdict values under the short names this module's many tests read easily.
PASS, FAIL, INCONCLUSIVE = TestVerdict.PASS, TestVerdict.FAIL, TestVerdict.INCONCLUSIVE
ALPHA = 0.05
MIN_DEMAND_STEPS = 5  # exact one-sided Kendall p for 5 ordered steps is 0.0083; for 4 only 0.042
MIN_CHANGE = 0.10  # a metric must move by at least 10% of its level to count as tracking demand
PLATEAU_MARGIN = 0.5  # flattened: past the break it rises at most half as fast as before it (90% bound)
AT_LIMIT = 0.90  # share of a metric's limit that counts as having reached it
PROPORTIONAL_MARGIN = 0.20  # the phase effect must lie within 20% of the load-driven part of the predicted value
TREND_MIN_GROWTH = 0.02  # growth within a hold, as a share of its level, that matters
TREND_MIN_HOLDS = 2  # consecutive growing holds that make a metric follow time
TREND_MIN_RUN_GROWTH = 0.10  # growth with time over the whole run, as a share of the level, that matters
# Newey-West errors on a dozen autocorrelated samples are too small (the test rejects far more
# often than its level), so a hold is tested on its own only with this many kept samples; shorter
# holds are left to the view across steps.
MIN_TREND_HOLD_SAMPLES = 30
EMPTY_BACKLOG_JOBS = 1.0  # a queue holding at most one job (or 5% of its peak) is empty
EMPTY_BACKLOG_SHARE = 0.05
FULL_BACKLOG_SHARE = 0.5  # a queue at half its peak or more has filled (it may sit at its bound)
MIN_BACKLOG_RISE_JOBS = 1.0  # growth within a hold must add at least one job to count
MIN_EMPTY_STEPS = 3  # empty steps below the onset needed before growth means saturation
MIN_HOLD_SAMPLES = 4


# -- demand correlation -------------------------------------------------------------------------
def demand_correlation(rate_rps: Sequence[float], values: Sequence[float], *, alpha: float = ALPHA,
                       min_steps: int = MIN_DEMAND_STEPS) -> TestResult:
    """Kendall's tau of step values against offered rate, exact one-sided test in the observed
    direction, plus a practical size: the change across the steps must be at least 10%."""
    x, y = np.asarray(rate_rps, float), np.asarray(values, float)
    inputs = {"steps": len(x), "rate_rps": _round(x), "values": _round(y), "alpha": alpha}
    method = "Kendall tau, exact one-sided test, steps below saturation at fixed capacity"
    threshold = f"p < {alpha} and change >= {MIN_CHANGE:.0%} of the level, over >= {min_steps} steps"
    if len(x) < min_steps:
        return TestResult("demand_correlation", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          f"only {len(x)} step(s) below saturation; {min_steps} are needed for an exact test")
    if np.ptp(y) == 0:
        return TestResult("demand_correlation", method, inputs, 0.0, 1.0, None, threshold, FAIL,
                          f"constant at {y[0]:.3g}: does not track load", {"sign": "none", "change": 0.0, "p_raw": 1.0})
    tau, p_greater, p_less = _kendall(x, y)
    change = _fitted_change(x, y)
    p = p_greater if tau >= 0 else p_less
    extra = {"sign": "positive" if tau > 0 else ("negative" if tau < 0 else "none"), "change": round(change, 4),
             "p_raw": p}
    return _demand_verdict(TestResult("demand_correlation", method, inputs, _r(tau), p, None, threshold, "", "",
                                      extra), p, alpha)


def adjust_demand(result: TestResult, p_adjusted: float, alpha: float = ALPHA) -> TestResult:
    """Re-judge a demand test with a p-value adjusted for the number of metrics tested."""
    if result.p_value is None or "p_raw" not in result.extra or result.extra.get("sign") == "none":
        return result
    extra = dict(result.extra, p_adjusted_by="Benjamini-Hochberg across metrics")
    updated = TestResult(result.name, result.method, result.inputs, result.statistic, p_adjusted, None,
                         result.threshold, "", "", extra)
    return _demand_verdict(updated, p_adjusted, alpha)


def _demand_verdict(result: TestResult, p: float, alpha: float) -> TestResult:
    tau, change = result.statistic or 0.0, result.extra["change"]
    steps = result.inputs["steps"]
    significant = p < alpha
    material = abs(change) >= MIN_CHANGE
    if significant and material and tau > 0:
        verdict, detail = PASS, f"rises with load: Kendall tau {tau:.2f}, p={format_p(p)} over {steps} steps, change {change:+.0%}"
    elif significant and material:
        verdict, detail = FAIL, f"falls as load rises (negative tracking): tau {tau:.2f}, p={format_p(p)}"
    elif significant:
        verdict, detail = FAIL, f"moves with load but only by {change:+.1%} of its level (< {MIN_CHANGE:.0%})"
    elif not material:
        verdict, detail = FAIL, (f"does not track load: flat within {MIN_CHANGE:.0%} ({change:+.1%} across the steps), "
                                 f"Kendall tau {tau:.2f}, p={format_p(p)} over {steps} steps")
    else:
        # No proof of tracking is not proof of none: a change this size on few or noisy steps
        # is left open, with what would settle it.
        verdict, detail = INCONCLUSIVE, (f"not enough evidence: changes {change:+.0%} across {steps} steps but "
                                         f"Kendall tau {tau:.2f}, p={format_p(p)}; more steps below capacity would decide")
    return TestResult(result.name, result.method, result.inputs, result.statistic, _r(p), None,
                      result.threshold, verdict, detail, result.extra)


def _fitted_change(x: np.ndarray, y: np.ndarray) -> float:
    """The change across the steps as a share of the level, from Sen's slope (the median of the
    pairwise slopes): one noisy end step cannot make a flat metric look like it moves, as a
    difference of the first and last step can."""
    result = stats.theilslopes(y, x)
    ends = result.intercept + result.slope * np.array([np.min(x), np.max(x)])
    return float((ends[1] - ends[0]) / max(float(np.max(np.abs(ends))), 1e-12))


def _kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    exact = len(np.unique(x)) == len(x) and len(np.unique(y)) == len(y)
    method = "exact" if exact else "auto"  # the exact distribution assumes no ties
    greater = stats.kendalltau(x, y, method=method, alternative="greater")
    less = stats.kendalltau(x, y, method=method, alternative="less")
    tau = float(greater.statistic) if np.isfinite(greater.statistic) else 0.0
    p_greater = float(greater.pvalue) if np.isfinite(greater.pvalue) else 1.0
    p_less = float(less.pvalue) if np.isfinite(less.pvalue) else 1.0
    return tau, p_greater, p_less


# -- demand slope (HAC) --------------------------------------------------------------------------
def newey_west_lags(samples: int) -> int:
    """Newey and West's (1994) rule of thumb for the HAC lag length: floor(4 (n/100)^(2/9))."""
    return max(1, int(math.floor(4 * (samples / 100.0) ** (2.0 / 9.0))))


def demand_slope(rate_rps: Sequence[float], values: Sequence[float], *, alpha: float = ALPHA) -> TestResult:
    """OLS slope of raw samples on the step's per-task rate, Newey-West standard errors."""
    import statsmodels.api as sm

    x, y = np.asarray(rate_rps, float), np.asarray(values, float)
    lags = newey_west_lags(len(x))
    method = f"OLS on samples with HAC (Newey-West) errors, maxlags={lags}"
    inputs = {"samples": len(x), "maxlags": lags, "distinct_rates": int(len(np.unique(x)))}
    threshold = f"{1 - alpha:.0%} interval of the slope excludes 0"
    if len(np.unique(x)) < 2 or len(x) < 10:
        return TestResult("demand_slope", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          "too few samples or rates for a slope")
    fit = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HAC", cov_kwds={"maxlags": lags}, use_t=True)
    slope = float(fit.params[1])
    low, high = (float(v) for v in fit.conf_int(alpha)[1])
    p = float(fit.pvalues[1])
    verdict = PASS if (low > 0 or high < 0) else FAIL
    detail = f"slope {slope:.4g} per req/s per task ({1 - alpha:.0%} interval {low:.4g} to {high:.4g})"
    return TestResult("demand_slope", method, inputs, _r(slope), _r(p), (_r(low), _r(high)), threshold, verdict,
                      detail, {"intercept": _r(float(fit.params[0]))})


# -- saturation ----------------------------------------------------------------------------------
BREAKPOINT_GRID = 60  # candidate breakpoints between the observed rates


def saturation(rate_rps: Sequence[float], values: Sequence[float], *, limit: float | None,
               knee_rps: float | None = None, alpha: float = ALPHA) -> TestResult:
    """Does the metric stop rising with load? Hinge regression ``y ~ x + max(x - c, 0)`` and a
    one-sided test of the slope after the break ``c``.

    Two hinges are fitted: the least-squares one over a grid of ``c`` between the observed rates
    (the breakpoint and its interval: the knee can fall between two steps), and, when the
    service's own knee is known from its latency (``knee_rps``, the last rate per task that met
    the SLO), one anchored there, a break fixed in advance rather than picked from the noise.
    Three answers, because a step or two past the knee proves nothing either way:

    * ``pass``: for either hinge the 90% upper bound of the slope after the break is below
      ``PLATEAU_MARGIN`` of the slope before it (it flattened, or fell: a thrashing resource
      has run out too), or the value reached 90% of a known limit;
    * ``fail``: the 90% lower bound of the slope after the service's knee (of the best hinge
      when the knee is unknown) is above that share: the metric kept rising past it, so it is
      not what ran out;
    * ``inconclusive``: neither could be shown.

    Past the knee the service takes no more work, so whatever does work per request stops rising
    there; which resource *ran out* is then told by its level (see ``classify``), not by the
    slope. Half the slope before is the bound because a plateau measured over one or two steps
    past the knee is never flat to within a quarter of the rise."""
    x, y = np.asarray(rate_rps, float), np.asarray(values, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    method = ("hinge (segmented) regression: least squares over a grid of breakpoints, and anchored at the "
              "service's knee; one-sided 90% bounds on the slope after the break")
    threshold = (f"plateau: 90% upper bound of the post-break slope below {PLATEAU_MARGIN:.0%} of the pre-break "
                 f"slope, or the value reaches {AT_LIMIT:.0%} of the limit; still rising: 90% lower bound above it")
    inputs = {"steps": len(x), "rate_rps": _round(x), "values": _round(y), "limit": limit, "knee_rps": _r(knee_rps)}
    peak = float(np.max(y)) if len(y) else None
    reached = _stays_at_limit_from(x, y, limit)
    at_limit = reached is not None
    limit_extra = {"kind": "at_limit", "peak": _r(peak), "limit_reached_rps": _r(reached)} if at_limit else {}
    best = _best_hinge(x, y)
    anchored = _hinge_at(x, y, knee_rps) if knee_rps is not None else None
    if best is None and anchored is None:
        if at_limit:
            return TestResult("saturation", method, inputs, None, None, None, threshold, PASS,
                              f"reaches {peak:.1f} of a limit of {limit:g}", limit_extra)
        return TestResult("saturation", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          "too few steps on either side of a breakpoint to fit a hinge", {"peak": _r(peak)})
    judged = [h for h in (best, anchored) if h is not None]
    flat = next((h for h in judged if h.flattened), None)
    shown = flat or best or anchored
    decider = anchored or best  # the break fixed in advance decides "still rising" when there is one
    assert shown is not None and decider is not None  # at least one hinge was fitted (returned above if not)
    interval = best.interval if best is not None else (shown.c, shown.c)
    after = y[x > shown.c]
    plateau_value = float(np.mean(after)) if len(after) else shown.level
    extra = {"breakpoint_rps": _r(shown.c), "breakpoint_interval_rps": [_r(interval[0]), _r(interval[1])],
             "breakpoint_from": "knee" if shown is anchored else "least squares",
             "slope_before": _r(shown.pre), "slope_after": _r(shown.post),
             "slope_after_90": [_r(shown.post_low), _r(shown.post_high)], "plateau_value": _r(plateau_value),
             "level_at_break": _r(shown.level), "peak": _r(peak), "margin": _r(shown.margin),
             "points_after_break": int(len(after)),
             # the line before the break read at the service's knee: one noisy step cannot hide
             # a resource that stood near its limit there
             "level_at_knee": _r(anchored.level) if anchored is not None else None}
    if flat is not None:
        extra["kind"] = "plateau"
        shape = "falls" if flat.post_high < 0 else "flattens"
        where = "the service's knee" if flat is anchored else f"break {interval[0]:.3g}-{interval[1]:.3g}"
        detail = (f"{shape} at {plateau_value:.3g} beyond {flat.c:.3g} req/s per task ({where}); slope "
                  f"{flat.pre:.3g} before, {flat.post:.3g} after (90% upper bound {flat.post_high:.3g} < {flat.margin:.3g})")
        verdict = PASS
    elif at_limit:
        extra.update(limit_extra)
        detail = f"reaches {peak:.1f}, at least {AT_LIMIT:.0%} of its limit {limit:g}"
        verdict = PASS
    elif decider.still_rising or not decider.rising_before:
        extra["kind"] = "rising" if decider.still_rising else "not_rising"
        detail = (f"no plateau: slope {decider.pre:.3g} before {decider.c:.3g} req/s per task, {decider.post:.3g} "
                  f"after (90% bounds {decider.post_low:.3g} to {decider.post_high:.3g})")
        verdict = FAIL
    else:
        extra["kind"] = "undecided"
        detail = (f"not enough evidence of a plateau or of none: {int((x > decider.c).sum())} step(s) past "
                  f"{decider.c:.3g} req/s per task, slope after {decider.post:.3g} (90% bounds "
                  f"{decider.post_low:.3g} to {decider.post_high:.3g}, flat below {decider.margin:.3g})")
        verdict = INCONCLUSIVE
    return TestResult("saturation", method, inputs, _r(shown.post), None, (_r(shown.post_low), _r(shown.post_high)),
                      threshold, verdict, detail, extra)


def _stays_at_limit_from(x: np.ndarray, y: np.ndarray, limit: float | None) -> float | None:
    """The lowest rate from which the metric stays at 90% of its limit or more at every higher
    rate (``x`` sorted), or None. One noisy step above the line mid-ramp is not the limit: the
    resource must still be there at the highest rates run."""
    if limit is None or not len(y):
        return None
    above = y >= AT_LIMIT * limit
    if not above[-1]:
        return None
    first = len(above) - int(np.argmin(above[::-1])) if not above.all() else 0
    return float(x[first])


@dataclass(frozen=True)
class Hinge:
    """One fitted hinge: slopes before and after the break ``c`` with one-sided 90% bounds."""

    c: float
    pre: float
    pre_low: float
    post: float
    post_low: float
    post_high: float
    level: float  # the fitted value at the break
    interval: tuple[float, float]

    @property
    def margin(self) -> float:
        return PLATEAU_MARGIN * abs(self.pre)

    @property
    def rising_before(self) -> bool:
        return self.pre_low > 0  # a plateau is only news after a rise

    @property
    def flattened(self) -> bool:
        return self.rising_before and self.post_high < self.margin

    @property
    def still_rising(self) -> bool:
        return self.rising_before and self.post_low > self.margin


def _hinge_at(x: np.ndarray, y: np.ndarray, c: float, interval: tuple[float, float] | None = None) -> Hinge | None:
    """The hinge with its break at ``c``: needs three points at or below it and one above."""
    if c is None or (x <= c).sum() < 3 or (x > c).sum() < 1 or len(np.unique(x[x <= c])) < 2:
        return None
    design = np.column_stack([np.ones_like(x), x, np.maximum(x - c, 0.0)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(x) - 3
    if dof <= 0:
        return None
    rss = float(np.sum((y - design @ coef) ** 2))
    covariance = rss / dof * np.linalg.pinv(design.T @ design)
    gradient = np.array([0.0, 1.0, 1.0])
    post_se = float(np.sqrt(max(gradient @ covariance @ gradient, 0.0)))
    pre_se = float(np.sqrt(max(covariance[1, 1], 0.0)))
    t90 = float(stats.t.ppf(0.90, dof))  # one-sided 90% bounds
    pre, post = float(coef[1]), float(coef[1] + coef[2])
    return Hinge(float(c), pre, pre - t90 * pre_se, post, post - t90 * post_se, post + t90 * post_se,
                 float(coef[0] + coef[1] * c), interval or (float(c), float(c)))


def _best_hinge(x: np.ndarray, y: np.ndarray) -> Hinge | None:
    """The least-squares hinge over a grid of breakpoints, with a profile interval for the
    breakpoint: every c whose RSS is within the F(1, n-3) 95% bound of the best.

    A candidate needs three points at or below it (a slope with a residual) and one above it;
    with a single point above, the slope after it is fitted but its bounds are wide, and the
    verdict says so rather than guessing."""
    distinct = np.unique(x)
    if len(x) < 5 or len(distinct) < 4:
        return None
    grid = np.unique(np.concatenate([np.linspace(distinct[2], distinct[-1], BREAKPOINT_GRID, endpoint=False),
                                     distinct[2:-1]]))
    fits = []
    for c in grid:
        if (x <= c).sum() < 3 or (x > c).sum() < 1:
            continue
        design = np.column_stack([np.ones_like(x), x, np.maximum(x - c, 0.0)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        fits.append((float(np.sum((y - design @ coef) ** 2)), float(c)))
    if not fits:
        return None
    rss, c = min(fits)
    dof = len(x) - 3
    bound = rss * (1 + stats.f.ppf(0.95, 1, dof) / dof) if dof > 0 else rss
    plausible = [f[1] for f in fits if f[0] <= bound]
    return _hinge_at(x, y, c, (float(min(plausible)), float(max(plausible))))


# -- crash at the limit --------------------------------------------------------------------------
def crash_at_limit(crash_steps: Sequence[int], peak_by_step: dict[int, float], *, limit: float | None,
                   last_good_rps: float | None) -> TestResult:
    """A task died (crash or restart events) during a step in which the metric had reached 90%
    of its limit: the resource ran out, at the last step before."""
    method = "task crash, restart or OOM-kill events, with the metric's peak in the crashing step"
    threshold = f"a crash in a step whose peak reached {AT_LIMIT:.0%} of the limit"
    inputs = {"crash_steps": list(crash_steps), "limit": limit,
              "peaks": {str(k): _r(v) for k, v in peak_by_step.items() if k in set(crash_steps)}}
    if limit is None:
        return TestResult("crash_at_limit", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          "the metric has no known limit")
    if not crash_steps:
        return TestResult("crash_at_limit", method, inputs, None, None, None, threshold, FAIL,
                          "no task crashed or restarted")
    hits = [s for s in crash_steps if peak_by_step.get(s, -math.inf) >= AT_LIMIT * limit]
    if not hits:
        best = max((peak_by_step.get(s, -math.inf) for s in crash_steps), default=-math.inf)
        return TestResult("crash_at_limit", method, inputs, _r(best), None, None, threshold, FAIL,
                          f"tasks crashed but this metric peaked at {best:.3g} of {limit:g}")
    peak = peak_by_step[hits[0]]
    where = f"; the last good step ran {last_good_rps:.3g} req/s" if last_good_rps is not None else ""
    return TestResult("crash_at_limit", method, inputs, _r(peak), None, None, threshold, PASS,
                      f"tasks crashed in step {hits[0]} with the metric at {peak:.3g} of {limit:g}{where}",
                      {"crash_step": hits[0]})


# -- proportionality -----------------------------------------------------------------------------
def proportionality(rate_a: Sequence[float], values_a: Sequence[float], rate_b: Sequence[float],
                    values_b: Sequence[float], *, tasks_a: int, tasks_b: int) -> TestResult:
    """Fit m = b + k (rate / n) + g * [phase b] over both phases' steps below saturation and test
    g for equivalence to zero within +-20% of the load-driven part of the value predicted for
    phase b, ``k * mean(rate_b / n_b)``.

    The margin leaves the idle baseline out on purpose: with a baseline of 60%, a tenth of the
    whole level is bigger than the entire change the extra tasks should make, so a metric that
    does not fall at all would pass. 20% of the load-driven part is the same band as the ratio
    test's 0.8-1.25."""
    import statsmodels.api as sm

    xa = np.asarray(rate_a, float) / tasks_a
    xb = np.asarray(rate_b, float) / tasks_b
    ya, yb = np.asarray(values_a, float), np.asarray(values_b, float)
    method = "OLS m = b + k*(rate/tasks) + g*phase_b; TOST on g"
    threshold = (f"90% interval of g within +-{PROPORTIONAL_MARGIN:.0%} of the load-driven part (k x mean rate per "
                 "task) of the predicted phase-b value")
    inputs = {"tasks_a": tasks_a, "tasks_b": tasks_b, "per_task_rps_a": _round(xa), "values_a": _round(ya),
              "per_task_rps_b": _round(xb), "values_b": _round(yb)}
    if len(xa) < 3 or len(xb) < 3:
        return TestResult("proportionality", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          f"needs at least 3 steps below saturation in each phase (have {len(xa)} and {len(xb)})")
    x = np.concatenate([xa, xb])
    y = np.concatenate([ya, yb])
    if np.ptp(y) == 0:
        return TestResult("proportionality", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          f"constant at {y[0]:.3g} in both phases: nothing to compare")
    phase = np.concatenate([np.zeros(len(xa)), np.ones(len(xb))])
    fit = sm.OLS(y, np.column_stack([np.ones_like(x), x, phase])).fit()
    baseline, slope, gap = (float(v) for v in fit.params)
    predicted = baseline + slope * float(np.mean(xb))
    margin = PROPORTIONAL_MARGIN * abs(slope * float(np.mean(xb)))
    low90, high90 = (float(v) for v in fit.conf_int(0.10)[2])
    low95, high95 = (float(v) for v in fit.conf_int(0.05)[2])
    extra = {"baseline": _r(baseline), "slope_per_task_rps": _r(slope), "phase_effect": _r(gap),
             "predicted_b": _r(predicted), "margin": _r(margin), "interval_95": [_r(low95), _r(high95)]}
    if -margin < low90 and high90 < margin:
        verdict = PASS
        detail = (f"{tasks_b} tasks fall on the {tasks_a}-task line against rate per task: phase effect "
                  f"{gap:+.3g} within +-{margin:.3g}")
    elif (low95 > 0 or high95 < 0) and abs(gap) > margin:
        verdict = FAIL
        detail = (f"not proportional to capacity: with {tasks_b} tasks the metric sits {gap:+.3g} off the "
                  f"{tasks_a}-task line (allowed +-{margin:.3g})")
    else:
        verdict = INCONCLUSIVE
        detail = f"phase effect {gap:+.3g}, interval too wide to decide (+-{margin:.3g} allowed)"
    return TestResult("proportionality", method, inputs, _r(gap), None, (_r(low90), _r(high90)), threshold,
                      verdict, detail, extra)


def capacity_ratio(pairs: Sequence[tuple[float, float, float]], *, baseline: float | None,
                   tasks_a: int, tasks_b: int) -> TestResult:
    """Value with more tasks over value with fewer, at the same offered rates: plain and with
    the idle baseline removed, and an equivalence test that the baseline-removed ratio is the
    ideal tasks_a/tasks_b within a factor 0.8-1.25.

    The steps are matched by rate, so the test is paired (``ttost_paired`` on logs): an
    unpaired ``ttost_ind`` would compare the spread across rates instead of the ratio."""
    from statsmodels.stats.weightstats import ttost_paired

    ideal = tasks_a / tasks_b
    method = "ratios of step means at matched rates; paired TOST on log window means (baseline removed)"
    threshold = f"ratio of geometric means / {ideal:g} within [0.8, 1.25], p < {ALPHA}"
    rates = [p[0] for p in pairs]
    a = np.array([p[1] for p in pairs], float)
    b = np.array([p[2] for p in pairs], float)
    inputs = {"rate_rps": _round(rates), "values_a": _round(a), "values_b": _round(b), "baseline": baseline,
              "tasks_a": tasks_a, "tasks_b": tasks_b, "ideal": ideal}
    if len(pairs) < 2:
        return TestResult("capacity_ratio", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          "fewer than 2 rates were run at both task counts")
    with np.errstate(divide="ignore", invalid="ignore"):
        plain = float(np.exp(np.mean(np.log(b / a)))) if np.all(a > 0) and np.all(b > 0) else float("nan")
    base = baseline if baseline is not None else 0.0
    net_a, net_b = a - base, b - base
    extra = {"ratio": _r(plain), "ideal": ideal}
    if np.any(net_a <= 0) or np.any(net_b <= 0):
        return TestResult("capacity_ratio", method, inputs, _r(plain), None, None, threshold, INCONCLUSIVE,
                          "values do not rise above the baseline at every matched rate", extra)
    log_ratios = np.log(net_b / (net_a * ideal))
    net_ratio = float(np.exp(np.mean(np.log(net_b / net_a))))
    if np.ptp(log_ratios) == 0:  # identical ratios: the interval is a point
        p = 0.0 if math.log(0.8) < log_ratios[0] < math.log(1.25) else 1.0
    else:
        p, _, _ = ttost_paired(net_b, net_a * ideal, 0.8, 1.25, transform=np.log)
    extra["ratio_without_baseline"] = _r(net_ratio)
    if p < ALPHA:
        verdict = PASS
        detail = f"with {tasks_b} tasks the metric is {plain:.2f} of its value (net of baseline {net_ratio:.2f}, ideal {ideal:.2f})"
    elif plain >= 0.8 or net_ratio >= ideal * 1.6:
        verdict = FAIL
        detail = f"does not fall with more tasks: ratio {plain:.2f} (net of baseline {net_ratio:.2f}, ideal {ideal:.2f})"
    else:
        verdict = INCONCLUSIVE
        detail = f"ratio {plain:.2f} (net {net_ratio:.2f}), not shown equivalent to {ideal:.2f}"
    return TestResult("capacity_ratio", method, inputs, _r(net_ratio), _r(float(p)), None, threshold, verdict,
                      detail, extra)


# -- time trend ----------------------------------------------------------------------------------
def time_trend(holds: Sequence[tuple[int, np.ndarray, np.ndarray]],
               steps: tuple[Sequence[float], Sequence[float], Sequence[float]] | None = None, *,
               alpha: float = ALPHA) -> TestResult:
    """Does the metric follow time rather than load? Two views, either of which decides, each at
    half the level (Bonferroni: either one alone may fail the metric, so together they keep
    the false "follows time" rate within ``alpha``):

    * inside each constant-load hold of at least ``MIN_TREND_HOLD_SAMPLES`` kept samples, the
      HAC OLS slope on time (per hour): growth in at least two consecutive holds, significant
      after Holm's correction and at least 2% of the level within the hold;
    * across steps, ``m = b + k*(rate per task) + c*hours``: once the load falls (the replay at
      twice the tasks halves the load per task) time and load separate, and a significant ``c``
      adding up to at least 10% of the level over the run means memory that is never freed.
      Short holds (seconds) are too short for the first view to see a slow leak.

    ``holds`` and ``steps`` (rate per task, step value, step mid-time in hours) are the steps
    below saturation of every task count: an overloaded hold grows legitimately (requests
    queue up, and the memory that holds them), which says nothing about time."""
    import statsmodels.api as sm

    method = ("OLS slope on time within each hold (HAC, Holm across holds); OLS of step values on load per "
              "task and time across steps")
    threshold = (f">= {TREND_MIN_HOLDS} consecutive holds of >= {MIN_TREND_HOLD_SAMPLES} samples growing (Holm "
                 f"p < {alpha / 2:g}, >= {TREND_MIN_GROWTH:.0%} of the level within the hold), or a time effect "
                 f"across steps with p < {alpha / 2:g} adding up to "
                 f">= {TREND_MIN_RUN_GROWTH:.0%} of the level over the run")
    rows = _hold_slopes(holds, sm)
    across = _time_across_steps(steps, sm) if steps is not None else None
    inputs = {"holds": len(rows), "steps": len(steps[0]) if steps is not None else 0}
    extra: dict[str, Any] = {"holds": rows, "across_steps": across}
    run = count = 0
    if len(rows) >= TREND_MIN_HOLDS:
        adjusted = holm([r["p"] for r in rows])
        growing = []
        for row, p in zip(rows, adjusted):
            row["p_adjusted"] = _r(float(p))
            growing.append(p < alpha / 2 and row["growth"] >= TREND_MIN_GROWTH)
        run, count = _longest_run(growing), int(sum(growing))
        extra.update(growing_holds=count, longest_run=run)
    median_slope = _r(float(np.median([r["slope_per_hour"] for r in rows]))) if rows else None
    if run >= TREND_MIN_HOLDS:
        return TestResult("time_trend", method, inputs, median_slope, None, None, threshold, FAIL,
                          f"grows with time at constant load in {count} of {len(rows)} holds "
                          f"({run} in a row; median {median_slope:+.3g} per hour)", extra)
    if across is not None and across["p"] < alpha / 2 and across["growth_over_run"] >= TREND_MIN_RUN_GROWTH:
        return TestResult("time_trend", method, inputs, across["per_hour"], across["p"], None, threshold, FAIL,
                          f"grows with time whatever the load: {across['per_hour']:+.3g} per hour at equal load "
                          f"(p={format_p(across['p'])}), {across['growth_over_run']:+.0%} of its level over the run", extra)
    if len(rows) < TREND_MIN_HOLDS and across is None:
        return TestResult("time_trend", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          "holds too short and too few steps to separate time from load", extra)
    return TestResult("time_trend", method, inputs, median_slope, across["p"] if across else None, None, threshold,
                      PASS, f"no sustained growth with time at constant load ({count} of {len(rows)} holds grew)",
                      extra)


def _hold_slopes(holds, sm) -> list[dict[str, Any]]:
    rows = []
    for step_id, times, values in holds:
        if len(times) < MIN_TREND_HOLD_SAMPLES or np.ptp(times) <= 0:
            continue
        lags = newey_west_lags(len(times))
        fit = sm.OLS(values, sm.add_constant(times - times[0])).fit(cov_type="HAC", cov_kwds={"maxlags": lags},
                                                                    use_t=True)
        slope_s = float(fit.params[1])
        p_one = float(fit.pvalues[1]) / 2 if slope_s > 0 else 1.0
        growth = slope_s * float(np.ptp(times)) / max(abs(float(np.mean(values))), 1e-9)
        rows.append({"step_id": int(step_id), "slope_per_hour": _r(slope_s * 3600), "p": p_one, "growth": _r(growth)})
    return rows


def _time_across_steps(steps, sm) -> dict[str, Any] | None:
    rate, values, hours = (np.asarray(a, float) for a in steps)
    # Time and load must vary apart (a load that falls while time goes on) to be told apart.
    if len(rate) < 6 or np.ptp(hours) <= 0 or np.ptp(rate) <= 0 or abs(np.corrcoef(rate, hours)[0, 1]) > 0.9:
        return None
    # HC3 errors: the noise of a step value grows with its level, and with ten or so steps plain
    # OLS errors then call a time effect far more often than the level allows.
    fit = sm.OLS(values, np.column_stack([np.ones_like(rate), rate, hours - hours.min()])).fit(cov_type="HC3",
                                                                                                use_t=True)
    per_hour = float(fit.params[2])
    p_one = float(fit.pvalues[2]) / 2 if per_hour > 0 else 1.0
    growth = per_hour * float(np.ptp(hours)) / max(abs(float(np.mean(values))), 1e-9)
    return {"per_hour": _r(per_hour), "p": _r(p_one), "growth_over_run": _r(growth), "steps": len(rate)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (the same as statsmodels' ``multipletests(method="holm")``,
    which also runs a full garbage collection on every call; that cost dominates a run's analysis)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p)
    scaled = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    out = np.empty(len(p))
    out[order] = np.minimum(scaled, 1.0)
    return out.tolist()


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate)."""
    p = np.asarray(p_values, float)
    count = len(p)
    order = np.argsort(p)[::-1]
    ranks = count - np.arange(count)
    scaled = np.minimum.accumulate(p[order] * count / ranks)
    out = np.empty(count)
    out[order] = np.minimum(scaled, 1.0)
    return out.tolist()


def _longest_run(flags: Sequence[bool]) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


# -- flat near the limit -------------------------------------------------------------------------
def flat_near_limit(rate_rps: Sequence[float], values: Sequence[float], *, limit: float | None) -> TestResult:
    """A metric already near its limit at the lowest load and flat across the steps below
    saturation (a heap reserved up front) says nothing about load."""
    x, y = np.asarray(rate_rps, float), np.asarray(values, float)
    method = "level at the lowest-load step against the limit; spread across steps below saturation"
    threshold = "first step >= 60% of the limit and spread <= 10% of the level"
    inputs = {"steps": len(x), "limit": limit}
    if limit is None or len(x) < 2:
        return TestResult("flat_near_limit", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          "no known limit or too few steps")
    first = float(y[np.argmin(x)])
    spread = float(np.ptp(y)) / max(abs(float(np.mean(y))), 1e-9)
    extra = {"first_value": _r(first), "spread": _r(spread)}
    if first >= 0.6 * limit and spread <= 0.10:
        return TestResult("flat_near_limit", method, inputs, _r(first), None, None, threshold, FAIL,
                          f"flat near the limit from the first step: {first:.3g} of {limit:g}, spread {spread:.1%}",
                          extra)
    return TestResult("flat_near_limit", method, inputs, _r(first), None, None, threshold, PASS,
                      f"starts at {first:.3g} of {limit:g} and spreads {spread:.1%}", extra)


# -- backlog growth -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Hold:
    """One constant-load step of a queue metric: its rate per task, level and kept samples."""

    step_id: int
    per_task_rps: float
    level: float
    times_s: np.ndarray
    values: np.ndarray


def backlog_growth(holds: Sequence[Hold], *, breach_per_task_rps: float | None, one_job: float = 1.0,
                   alpha: float = ALPHA) -> TestResult:
    """A queue that saturates: empty on the steps below some rate and growing (or full) within
    every hold from that rate up, with growth starting no later than the SLO breach.

    Growth within a hold is a Mann-Kendall test (Kendall's tau of the samples against time,
    one-sided, Holm across holds) with Sen's slope in jobs per second, and must add at least one
    job over the hold. ``holds`` are the valid steps at one task count. ``one_job`` is what one
    job of the queue is in the series' unit: 1 for the queue's depth, 1/tasks for the depth per
    task, so both series count the same jobs as empty and the same rise as growth."""
    ordered = sorted(holds, key=lambda h: h.per_task_rps)
    method = ("Mann-Kendall trend within each hold (Kendall tau on time, one-sided, Holm across holds), "
              "Sen's slope per second; step level against an empty threshold")
    threshold = (f"at least {MIN_EMPTY_STEPS} steps empty (level <= max({EMPTY_BACKLOG_JOBS:g} job, "
                 f"{EMPTY_BACKLOG_SHARE:.0%} of the peak), not growing), then every step growing (Holm p < {alpha}, "
                 f">= {MIN_BACKLOG_RISE_JOBS:g} job over the hold) or full (>= {FULL_BACKLOG_SHARE:.0%} of the peak), "
                 "growth starting no later than the SLO breach")
    rows = [_backlog_row(h) for h in ordered]
    tested = [r for r in rows if r["p"] is not None]
    # A hold that never changes cannot grow; only the holds that move share the Holm correction.
    moving = [r for r in tested if r["tau"] != 0.0]
    for row, p in zip(moving, holm([r["p"] for r in moving]) if moving else []):
        row["p_adjusted"] = _r(float(p))
    peak = max((h.level for h in ordered), default=0.0)
    empty_below = max(EMPTY_BACKLOG_JOBS * one_job, EMPTY_BACKLOG_SHARE * peak)
    for row in rows:
        row["growing"] = bool(row.get("p_adjusted", 1.0) < alpha and row["rise"] >= MIN_BACKLOG_RISE_JOBS * one_job)
        row["empty"] = bool(row["level"] <= empty_below and not row["growing"])
        row["full"] = bool(peak > empty_below and row["level"] >= FULL_BACKLOG_SHARE * peak)
    inputs = {"steps": len(rows), "breach_per_task_rps": breach_per_task_rps, "empty_below": _r(empty_below),
              "one_job": _r(one_job), "alpha": alpha}
    extra: dict[str, Any] = {"holds": rows, "peak": _r(peak)}
    # Levels need one sample a hold; growth within a hold needs MIN_HOLD_SAMPLES. With 1-minute
    # data a hold keeps three or four samples, too few for a trend test, so only the levels can
    # speak: empty below some rate and full from it is still an overflow.
    measured = [r for r in rows if r["samples"] > 0]
    if len(measured) < MIN_EMPTY_STEPS + 1:
        return TestResult("backlog_growth", method, inputs, None, None, None, threshold, INCONCLUSIVE,
                          f"only {len(measured)} hold(s) with samples ({len(tested)} with {MIN_HOLD_SAMPLES}+ for a "
                          "trend test)", extra)
    rows = measured
    onset = _overflow_start(rows)
    fills = MIN_EMPTY_STEPS <= onset < len(rows) and all(r["empty"] for r in rows[:onset])
    if not any(r["growing"] for r in rows) and not fills:
        return TestResult("backlog_growth", method, inputs, None, None, None, threshold, FAIL,
                          f"the backlog never grows within a hold (peak level {peak:.3g})", extra)
    if onset == len(rows):
        top = rows[-1]
        return TestResult("backlog_growth", method, inputs, None, None, None, threshold, FAIL,
                          f"grows at some rates but neither grows nor fills at the highest, "
                          f"{top['per_task_rps']:.3g} req/s per task (level {top['level']:.3g})", extra)
    start = rows[onset]
    # A bounded queue held long enough fills during the warm-up and then sits at its bound: no
    # hold grows, yet going from empty to full between two rates is the overflow itself.
    growing = next((r for r in rows[onset:] if r["growing"]), None)
    extra.update(onset_step=start["step_id"], onset_per_task_rps=start["per_task_rps"],
                 slope_per_s_at_onset=growing["slope_per_s"] if growing else None,
                 full_at_bound=growing is None)
    statistic, p_value = (growing["slope_per_s"], growing["p_adjusted"]) if growing else (_r(start["level"]), None)
    held = [r["step_id"] for r in rows[:onset] if not r["empty"]]
    if held or onset < MIN_EMPTY_STEPS:
        why = (f"steps {held} below it hold a backlog (> {empty_below:.3g})" if held else
               f"only {onset} step(s) below it, {MIN_EMPTY_STEPS} needed")
        return TestResult("backlog_growth", method, inputs, statistic, p_value, None, threshold, FAIL,
                          f"not empty below capacity: the queue overflows from {start['per_task_rps']:.3g} req/s per "
                          f"task but {why}", extra)
    if breach_per_task_rps is not None and start["per_task_rps"] > breach_per_task_rps * 1.001:
        return TestResult("backlog_growth", method, inputs, statistic, p_value, None, threshold, FAIL,
                          f"starts growing at {start['per_task_rps']:.3g} req/s per task, after the SLO broke at "
                          f"{breach_per_task_rps:.3g}: not the saturation signal", extra)
    how = (f"{growing['slope_per_s']:+.3g} jobs/s in the first growing hold" if growing else
           f"full at about {start['level']:.3g} from the first of them: a bounded queue at its bound")
    return TestResult("backlog_growth", method, inputs, statistic, p_value, None, threshold, PASS,
                      f"empty (<= {empty_below:.3g}) on {onset} steps up to {rows[onset - 1]['per_task_rps']:.3g} "
                      f"req/s per task; grows or stays full in every hold from {start['per_task_rps']:.3g} "
                      f"({how})", extra)


def _overflow_start(rows: list[dict[str, Any]]) -> int:
    """Index of the lowest rate from which every hold grows or is full (len(rows) if the top
    one does neither). A hold at exactly capacity keeps the queue its predecessor filled."""
    start = len(rows)
    while start > 0 and (rows[start - 1]["growing"] or rows[start - 1]["full"]):
        start -= 1
    return start


def _backlog_row(hold: Hold) -> dict[str, Any]:
    times, values = np.asarray(hold.times_s, float), np.asarray(hold.values, float)
    row: dict[str, Any] = {"step_id": hold.step_id, "per_task_rps": _r(hold.per_task_rps), "level": _r(hold.level),
                           "samples": len(values), "tau": None, "p": None, "slope_per_s": None, "rise": 0.0}
    if len(values) < MIN_HOLD_SAMPLES or np.ptp(times) <= 0:
        return row
    if np.ptp(values) == 0:
        row.update(tau=0.0, p=1.0, slope_per_s=0.0)
        return row
    trend = stats.kendalltau(times, values, alternative="greater")
    slope = float(stats.theilslopes(values, times).slope)
    row.update(tau=_r(float(trend.statistic)), p=float(trend.pvalue) if np.isfinite(trend.pvalue) else 1.0,
               slope_per_s=_r(slope), rise=_r(max(slope, 0.0) * float(np.ptp(times))))
    return row


# -- helpers -------------------------------------------------------------------------------------
def _r(value: float | None, digits: int = 6) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _round(values: Sequence[float] | np.ndarray) -> list[float | None]:
    return [_r(v, 5) for v in values]


