"""Each statistical test on series with a known answer, negatives included."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from scalefinder.analysis import properties as props
from scalefinder.analysis.recommend import tasks_for_peak
from scalefinder.analysis.steady import build_windows

RATES = np.array([5.0, 10, 15, 20, 25, 30])


def test_demand_rising_metric_passes_with_the_exact_p_value():
    result = props.demand_correlation(RATES, 4 + 2.5 * RATES)
    assert result.verdict == props.PASS
    assert result.statistic == pytest.approx(1.0)
    assert result.p_value == pytest.approx(1 / 720, rel=1e-3)  # one ordering in 6!
    assert result.extra["sign"] == "positive"
    assert "Kendall" in result.describe()


def test_demand_flat_and_negative_metrics_fail_and_noise_alone_is_not_enough_evidence():
    rng = np.random.default_rng(3)
    flat = props.demand_correlation(RATES, 50 + rng.normal(0, 0.05, 6))
    noisy = props.demand_correlation(RATES, 50 + rng.normal(0, 10, 6))
    falling = props.demand_correlation(RATES, 100 - 2 * RATES)
    tiny = props.demand_correlation(RATES, 90 + 0.01 * RATES)  # significant but < 10% change
    assert flat.verdict == falling.verdict == tiny.verdict == props.FAIL
    assert falling.extra["sign"] == "negative"
    assert "only" in tiny.detail
    # Six noisy steps that move by more than 10% without a significant rank order prove
    # neither tracking nor its absence.
    assert abs(noisy.extra["change"]) >= props.MIN_CHANGE
    assert noisy.verdict == props.INCONCLUSIVE and "not enough evidence" in noisy.detail


def test_demand_change_comes_from_sens_slope_not_the_end_steps():
    # Flat but for one wild last step: the end-to-end difference is 30%, Sen's slope about 0.
    values = np.array([50.0, 50.5, 49.6, 50.2, 49.9, 72.0])
    result = props.demand_correlation(RATES, values)
    assert abs(result.extra["change"]) < props.MIN_CHANGE
    assert result.verdict == props.FAIL


def test_demand_with_too_few_steps_is_inconclusive():
    result = props.demand_correlation(RATES[:4], RATES[:4])
    assert result.verdict == props.INCONCLUSIVE
    assert "only 4 step(s)" in result.detail


def test_demand_slope_hac_interval():
    rng = np.random.default_rng(0)
    x = np.repeat(RATES, 20)
    rising = props.demand_slope(x, 3 + 2 * x + rng.normal(0, 1, len(x)))
    flat = props.demand_slope(x, 40 + rng.normal(0, 1, len(x)))
    assert rising.verdict == props.PASS and rising.interval[0] < 2 < rising.interval[1]
    assert flat.verdict == props.FAIL
    assert rising.inputs["maxlags"] == props.newey_west_lags(len(x))


def test_saturation_finds_plateau_and_breakpoint():
    x = np.array([2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20, 22.5, 25])
    y = np.where(x <= 15, 4 + 5 * x, 79) + np.array([0.3, -0.2, 0.1, -0.3, 0.2, 0.1, -0.1, 0.2, -0.2, 0.1])
    result = props.saturation(x, y, limit=100.0)
    assert result.verdict == props.PASS
    assert result.extra["kind"] == "plateau"
    assert result.extra["breakpoint_rps"] == pytest.approx(15, abs=2.5)
    low, high = result.extra["breakpoint_interval_rps"]
    assert low <= 15 <= high


def test_saturation_rejects_a_straight_line_and_needs_points():
    x = np.arange(1.0, 11.0)
    assert props.saturation(x, 2 * x + 1, limit=None).verdict == props.FAIL
    assert props.saturation(x[:4], x[:4], limit=None).verdict == props.INCONCLUSIVE


def test_crash_at_limit():
    assert props.crash_at_limit([7], {7: 97.0}, limit=100.0, last_good_rps=40).verdict == props.PASS
    assert props.crash_at_limit([7], {7: 35.0}, limit=100.0, last_good_rps=40).verdict == props.FAIL
    assert props.crash_at_limit([], {}, limit=100.0, last_good_rps=40).verdict == props.FAIL
    assert props.crash_at_limit([7], {7: 97.0}, limit=None, last_good_rps=40).verdict == props.INCONCLUSIVE


def _phases(value_at, noise=0.2, seed=0):
    rng = np.random.default_rng(seed)
    rates_a = np.array([10.0, 20, 30, 40, 50])
    rates_b = np.array([20.0, 30, 40, 50])
    a = np.array([value_at(r, 2) for r in rates_a]) + rng.normal(0, noise, 5)
    b = np.array([value_at(r, 4) for r in rates_b]) + rng.normal(0, noise, 4)
    return rates_a, a, rates_b, b


def test_proportional_metric_passes_and_one_that_does_not_halve_fails():
    proportional = props.proportionality(*_phases(lambda r, n: 5 + 3 * r / n), tasks_a=2, tasks_b=4)
    assert proportional.verdict == props.PASS
    assert proportional.extra["baseline"] == pytest.approx(5, abs=1)
    stuck = props.proportionality(*_phases(lambda r, n: 5 + 1.5 * r), tasks_a=2, tasks_b=4)
    assert stuck.verdict == props.FAIL
    noisy = props.proportionality(*_phases(lambda r, n: 5 + 3 * r / n, noise=15, seed=2), tasks_a=2, tasks_b=4)
    assert noisy.verdict in (props.INCONCLUSIVE, props.FAIL)
    few = props.proportionality([10, 20], [1, 2], [10, 20], [1, 2], tasks_a=2, tasks_b=4)
    assert few.verdict == props.INCONCLUSIVE


def test_capacity_ratio_plain_and_net_of_baseline():
    halves = [(r, 5 + 3 * r / 2, 5 + 3 * r / 4) for r in (20.0, 30, 40, 50)]
    result = props.capacity_ratio(halves, baseline=5.0, tasks_a=2, tasks_b=4)
    assert result.verdict == props.PASS
    assert result.extra["ratio_without_baseline"] == pytest.approx(0.5, abs=0.01)
    assert 0.5 < result.extra["ratio"] < 0.7
    same = [(r, 40.0 + r / 10, 40.0 + r / 10) for r in (20.0, 30, 40, 50)]
    assert props.capacity_ratio(same, baseline=0.0, tasks_a=2, tasks_b=4).verdict == props.FAIL


def _holds(slope_per_s, count=5, length=20, seed=0):
    rng = np.random.default_rng(seed)
    holds = []
    for step in range(count):
        t = step * 100.0 + np.arange(length)
        holds.append((step, t, 30 + slope_per_s * t + rng.normal(0, 0.3, length)))
    return holds


def test_time_trend_detects_a_leak_and_passes_a_flat_metric():
    leak = props.time_trend(_holds(0.05, length=40))
    assert leak.verdict == props.FAIL
    assert leak.statistic == pytest.approx(0.05 * 3600, rel=0.2)  # per hour
    assert props.time_trend(_holds(0.0, length=40)).verdict == props.PASS
    assert props.time_trend(_holds(0.05, count=1, length=40)).verdict == props.INCONCLUSIVE
    # Twenty samples are too few for Newey-West errors: such holds are not judged on their own.
    assert props.time_trend(_holds(0.05, length=20)).extra["holds"] == []


def test_time_trend_false_alarms_on_flat_autocorrelated_holds_stay_within_the_level():
    # Flat AR(1) series (phi 0.5), as the noise of a steady hold: "follows time" must be rare.
    alarms = 0
    trials = 200
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        holds = []
        for step in range(6):
            noise = np.zeros(40)
            for i in range(1, 40):
                noise[i] = 0.5 * noise[i - 1] + rng.normal(0, 1)
            holds.append((step, step * 100.0 + np.arange(40.0), 30 + noise))
        alarms += props.time_trend(holds).verdict == props.FAIL
    assert alarms / trials <= props.ALPHA


def test_flat_near_limit():
    assert props.flat_near_limit(RATES, 91 + 0.1 * np.sin(RATES), limit=100.0).verdict == props.FAIL
    assert props.flat_near_limit(RATES, 10 + 2 * RATES, limit=100.0).verdict == props.PASS


def test_multiple_testing_adjustments_match_statsmodels():
    p = [0.001, 0.02, 0.04, 0.3, 0.0004]
    assert np.allclose(props.holm(p), multipletests(p, method="holm")[1])
    assert np.allclose(props.benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1])


def test_result_as_dict_is_json_ready():
    result = props.demand_correlation(RATES, RATES)
    data = result.as_dict()
    for key in ("name", "method", "inputs", "statistic", "p_value", "interval", "threshold", "verdict", "detail"):
        assert key in data


def _series(values, start=0.0):
    return pd.DataFrame({"time_unix_s": start + np.arange(len(values), dtype=float), "metric": "m", "task": "",
                         "value": values})


def test_mser_cuts_a_transient_and_flags_a_drift():
    rng = np.random.default_rng(1)
    transient = 50 - 40 * np.exp(-np.arange(60) / 4.0) + rng.normal(0, 0.5, 60)
    drift = np.arange(60) * 1.0 + rng.normal(0, 0.5, 60)
    metrics = pd.concat([_series(transient), _series(drift, 100.0)])
    steps = pd.DataFrame({"step_id": [0, 1], "start_unix_s": [0.0, 100.0], "end_unix_s": [60.0, 160.0],
                          "warmup_s": [0, 0]})
    values = build_windows(metrics, steps).values.set_index("step_id")
    assert values.loc[0, "cut_s"] >= 5
    assert values.loc[0, "value"] == pytest.approx(50, abs=1)
    assert bool(values.loc[0, "steady"])
    assert not bool(values.loc[1, "steady"])


def test_tasks_for_peak_with_the_zone_factor():
    result = tasks_for_peak(1000, 25.0, 0.7, 3)
    assert result["tasks_without_zone_spare"] == 58  # ceil(1000 / 17.5)
    assert result["tasks"] == 87  # 58 x 3/2
    assert tasks_for_peak(1000, 25.0, 0.7, 2)["tasks"] == 116
    assert tasks_for_peak(1000, 25.0, 0.7, 1)["tasks"] == 58


def test_time_trend_across_steps_separates_time_from_load():
    # Load rises, then falls (twice the tasks) while memory keeps growing with time.
    rate = np.array([5.0, 10, 15, 20, 2.5, 5, 7.5, 10])
    hours = np.arange(8) / 60.0
    leak = props.time_trend([], (rate, 20 + 0.2 * rate + 60 * hours, hours))
    assert leak.verdict == props.FAIL and "whatever the load" in leak.detail
    follows_load = props.time_trend([], (rate, 20 + 2 * rate + np.sin(np.arange(8)) * 0.05, hours))
    assert follows_load.verdict == props.PASS


def _queue_holds(depth_at, rates=(4, 8, 12, 16, 20, 24, 28), seconds=10):
    """One hold per rate; ``depth_at(rate, t)`` is the backlog t seconds into the hold."""
    times = np.arange(seconds, dtype=float)
    holds = []
    for step, rate in enumerate(rates):
        values = np.array([depth_at(rate, t) for t in times])
        holds.append(props.Hold(step, float(rate), float(values.mean()), times, values))
    return holds


def test_backlog_growth_passes_for_a_queue_empty_below_capacity_and_growing_past_it():
    capacity = 20.0
    result = props.backlog_growth(_queue_holds(lambda r, t: max(r - capacity, 0.0) * (t + 1)),
                                  breach_per_task_rps=24.0)
    assert result.verdict == props.PASS, result.detail
    assert result.extra["onset_per_task_rps"] == 24.0
    assert result.statistic == pytest.approx(4.0)  # Sen's slope, jobs per second
    assert result.p_value < 0.05
    assert "Mann-Kendall" in result.method


def test_backlog_growth_fails_for_flat_and_always_growing_backlogs():
    flat = props.backlog_growth(_queue_holds(lambda r, t: 7.0), breach_per_task_rps=24.0)
    always = props.backlog_growth(_queue_holds(lambda r, t: 0.2 * r * (t + 1)), breach_per_task_rps=24.0)
    assert flat.verdict == always.verdict == props.FAIL
    assert "never grows" in flat.detail
    assert "not empty below capacity" in always.detail


def test_backlog_growth_after_the_slo_broke_is_not_the_saturation_signal():
    late = props.backlog_growth(_queue_holds(lambda r, t: max(r - 26.0, 0.0) * (t + 1)), breach_per_task_rps=20.0)
    assert late.verdict == props.FAIL
    assert "after the SLO broke" in late.detail


def test_backlog_growth_counts_whole_jobs_in_a_per_task_backlog():
    # A queue shared by two tasks: at capacity (15 req/s per task) the first overflowing hold adds
    # under two jobs to a queue of about five. Per task that is under one job, on half the level.
    def depth(rate, t):
        if rate < 15:
            return 0.0
        return 4.3 + 0.2 * t if rate == 15 else min(100.0, 30.0 + 7.0 * t)
    rates = (1.5, 3, 4.5, 6, 7.5, 9, 10.5, 12, 13.5, 15, 16.5, 18)
    queue = _queue_holds(depth, rates=rates)
    per_task = [props.Hold(h.step_id, h.per_task_rps, h.level / 2, h.times_s, h.values / 2) for h in queue]
    whole = props.backlog_growth(queue, breach_per_task_rps=18.0)
    halved = props.backlog_growth(per_task, breach_per_task_rps=18.0, one_job=0.5)
    assert whole.verdict == halved.verdict == props.PASS, (whole.detail, halved.detail)
    assert whole.extra["onset_per_task_rps"] == halved.extra["onset_per_task_rps"] == 15.0
    # Counted as if each unit were a job, the per-task queue "holds a backlog" below its onset.
    assert props.backlog_growth(per_task, breach_per_task_rps=18.0).verdict == props.FAIL


def test_backlog_growth_passes_for_a_bounded_queue_that_sits_full_past_capacity():
    # Long holds: the queue fills during the warm-up and every kept sample sits at its bound of 10.
    full = props.backlog_growth(_queue_holds(lambda r, t: 10.0 if r > 20 else 0.0), breach_per_task_rps=28.0)
    assert full.verdict == props.PASS, full.detail
    assert full.extra["full_at_bound"] is True
    assert full.extra["onset_per_task_rps"] == 24.0
    assert "bound" in full.detail


def test_saturation_is_undecided_with_too_little_past_the_knee_and_fails_when_still_rising():
    x = np.array([2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20])
    wobble = np.array([1.5, -2.0, 1.0, -1.0, 2.0, -1.5, 1.0, 0.0])
    # Linear to 17.5, then one noisy point half way between the line and a plateau: neither a
    # plateau nor its absence can be shown.
    undecided = props.saturation(x, np.where(x <= 17.5, 4 + 4 * x, 79) + wobble, limit=100.0)
    assert undecided.verdict == props.INCONCLUSIVE, undecided.detail
    assert "not enough evidence" in undecided.detail
    rising = props.saturation(x, 4 + 2 * x + 0.2 * np.maximum(x - 10, 0) ** 2 + wobble / 10, limit=100.0)
    assert rising.verdict == props.FAIL and rising.extra["kind"] == "rising"


def test_saturation_counts_a_fall_past_the_knee_and_places_the_knee_between_steps():
    x = np.array([2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20, 22.5])
    thrashing = props.saturation(x, np.where(x <= 17.5, 4 + 5 * x, 91.5 - 6 * (x - 17.5)), limit=100.0)
    assert thrashing.verdict == props.PASS and thrashing.extra["kind"] == "plateau"
    assert "falls" in thrashing.detail
    # A knee at 18.75, between the observed 17.5 and 20: the fit finds it there.
    between = props.saturation(x, np.minimum(4 + 4 * x, 4 + 4 * 18.75) + 0.3 * np.sin(3 * x), limit=100.0)
    assert 17.5 < between.extra["breakpoint_rps"] < 20
    low, high = between.extra["breakpoint_interval_rps"]
    assert low < high
