"""One rule for "the step met its SLO", applied alike by the run side (the recorder's step row)
and the analysis (the step table), and the knee and doubling built on it."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from scalefinder.analysis import knee as knees
from scalefinder.loadgen.engine.protocol import DROPPED
from scalefinder.loadgen.engine.recorder import LoadRecorder, StepInfo
from scalefinder.core import slo as slos
from scalefinder.core.errors import RunDirectoryError
from scalefinder.core.rundir import STEP_COLUMNS, RunDirectory, RunWriter

SLO = {"percentile": 95, "latency_ms": 200.0, "error_budget_pct": 1.0}


# -- one step ------------------------------------------------------------------------------------
@pytest.mark.parametrize("latency, failures, dropped, sent, expected", [
    (150.0, 0, 0, 100, True),
    (200.0, 1, 0, 100, True),  # at the limit and at the budget: met
    (201.0, 0, 0, 100, False),
    (150.0, 2, 0, 100, False),
    (150.0, 0, 2, 98, False),  # dropped arrivals are errors: 2 of 100 outcomes
    (150.0, 1, 1, 99, False),
    (float("nan"), 0, 0, 100, None),  # sent, but no latency to judge
    (None, 0, 0, 100, None),
    (None, 5, 0, 100, False),  # the errors alone are a breach
    (None, 0, 10, 0, False),  # nothing sent, all dropped
    (None, 0, 0, 0, None),  # no outcomes at all
])
def test_step_met(latency, failures, dropped, sent, expected):
    assert slos.step_met(latency, failures, dropped, sent, SLO) is expected


def test_the_slo_may_be_an_object_or_a_mapping():
    as_object = SimpleNamespace(**SLO)
    assert slos.step_met(150.0, 0, 0, 100, as_object) is True
    assert slos.step_met(250.0, 0, 0, 100, as_object) is False


def test_error_pct_counts_dropped_over_all_outcomes():
    assert slos.error_pct(failures=1, dropped=3, sent=97) == pytest.approx(4.0)
    assert slos.error_pct(0, 0, 0) is None


def test_percentile_columns_are_exact_only():
    assert slos.percentile_column(95) == "p95_ms"
    assert slos.percentile_column(99.0) == "p99_ms"
    assert slos.percentile_column(99.9) is None
    assert slos.percentile_column(97.5) is None


def test_vectorised_rule_agrees_with_the_scalar_one():
    rng = np.random.default_rng(7)
    rows = []
    for _ in range(300):
        sent = int(rng.integers(0, 50))
        rows.append({"sent": sent, "dropped": int(rng.integers(0, 3)), "failures": int(rng.integers(0, 2)),
                     "p95_ms": float(rng.choice([np.nan, rng.uniform(50, 350)])) if sent else np.nan})
    steps = pd.DataFrame(rows)
    flags = slos.slo_flags(steps, SLO)
    assert str(flags.dtype) == "boolean"
    for row, flag in zip(rows, flags):
        expected = slos.step_met(row["p95_ms"], row["failures"], row["dropped"], row["sent"], SLO)
        assert (None if flag is pd.NA else bool(flag)) is expected


# -- both halves ---------------------------------------------------------------------------------
def _record(slo, latencies_ms, dropped=0, failures=0, start=1000.0):
    """The recorder's step row for arrivals spread over 10 s: ``failures`` of the latencies are errors."""
    recorder = LoadRecorder(slo, late_tolerance_ms=25.0)
    recorder.begin_step(StepInfo(0, "ramp", 2, 10.0))
    count = len(latencies_ms) + dropped
    dues = start + np.linspace(0.0, 9.9, count)
    rows = []
    for index, latency in enumerate(latencies_ms):
        rows.append([0, float(dues[index]), 0.0, float(latency), "http_503" if index < failures else None])
    rows += [[0, float(due), None, None, DROPPED] for due in dues[len(latencies_ms):]]
    recorder.feed({"type": "done", "rows": rows})
    return recorder.summarize(0, start, start + 10.0, 0.0, "held")


def _through_run_directory(tmp_path, row):
    writer = RunWriter.create(tmp_path / "run", {"slo": SLO})
    writer.append_step(row)
    writer.finish("complete")
    return RunDirectory.open(tmp_path / "run").steps()


@pytest.mark.parametrize("dropped, failures, met", [(0, 0, True), (1, 0, True), (2, 0, False), (1, 1, False)])
def test_dropped_arrivals_count_the_same_in_both_halves(tmp_path, dropped, failures, met):
    row = _record(SimpleNamespace(**SLO), [50.0] * (100 - dropped), dropped=dropped, failures=failures)
    assert row.slo_met is met
    assert row.error_pct == pytest.approx(100.0 * (dropped + failures) / 100)
    steps = _through_run_directory(tmp_path, row)
    ok, known = knees.slo_columns(steps, SLO)
    assert bool(ok.iloc[0]) is met and bool(known.iloc[0])


def test_a_99_9_percentile_slo_is_judged_on_its_own_percentile(tmp_path):
    slo = {"percentile": 99.9, "latency_ms": 200.0, "error_budget_pct": 1.0}
    # p99 is 50 ms, p99.9 is 500 ms: only the SLO's own percentile shows the breach
    latencies = [50.0] * 995 + [500.0] * 5
    row = _record(SimpleNamespace(**slo), latencies)
    assert row.p99_ms == pytest.approx(50.0)
    assert row.slo_latency_ms == pytest.approx(500.0)
    assert row.slo_met is False
    steps = _through_run_directory(tmp_path, row)
    ok, known = knees.slo_columns(steps, slo)
    assert not ok.iloc[0] and known.iloc[0]
    assert slos.unjudged_reason(steps, slo) is None
    # an older run directory has no slo_latency_ms: p99 is not taken for p99.9, the step is unknown
    old = steps.drop(columns=[slos.SLO_LATENCY_COLUMN])
    ok, known = knees.slo_columns(old, slo)
    assert not ok.iloc[0] and not known.iloc[0]
    reason = slos.unjudged_reason(old, slo)
    assert "p99.9" in reason and "not judged" in reason


def test_a_step_the_recorder_cannot_judge_is_written_not_met():
    row = _record(SimpleNamespace(**SLO), [])
    assert row.slo_met is False and row.slo_latency_ms is None


def test_early_breach_uses_the_same_rule():
    slo = SimpleNamespace(**SLO)
    recorder = LoadRecorder(slo, late_tolerance_ms=25.0)
    recorder.begin_step(StepInfo(3, "ramp", 2, 10.0))
    ok = [[3, 1000.0 + i * 0.01, 0.0, 50.0, None] for i in range(100)]
    recorder.feed({"type": "done", "rows": ok})
    assert not recorder.breaching(3, 1000.0)
    recorder.feed({"type": "done", "rows": [[3, 1001.5 + i * 0.01, None, None, DROPPED] for i in range(3)]})
    assert recorder.breaching(3, 1000.0)  # 3 dropped of 103 outcomes: over the 1% budget


# -- older run directories -------------------------------------------------------------------------
def _old_run(tmp_path, rows, drop=(slos.SLO_LATENCY_COLUMN,)):
    path = tmp_path / "old"
    writer = RunWriter.create(path, {"slo": SLO})
    writer.finish("complete")
    columns = [c for c in STEP_COLUMNS if c not in drop]
    with open(path / "steps.csv", "w", newline="", encoding="utf-8") as handle:
        out = csv.DictWriter(handle, fieldnames=columns)
        out.writeheader()
        for row in rows:
            out.writerow({c: row.get(c, "") for c in columns})
    return path


def _row(step_id, rate, p95, **extra):
    return {"step_id": step_id, "phase": "ramp", "tasks": 2, "offered_rps": rate, "start_unix_s": 1000 + 10 * step_id,
            "end_unix_s": 1010 + 10 * step_id, "warmup_s": 0, "achieved_rps": rate, "sent": 10 * rate,
            "completed": 10 * rate, "failures": 0, "dropped": 0, "late": 0, "p50_ms": p95 / 2, "p90_ms": p95 * 0.9,
            "p95_ms": p95, "p99_ms": p95 * 1.2, "valid": "true", "slo_met": str(p95 <= 200).lower(),
            "end_reason": "held", **extra}


def test_old_run_directories_without_the_column_stay_readable(tmp_path):
    path = _old_run(tmp_path, [_row(0, 10, 100.0), _row(1, 20, 300.0)])
    assert slos.SLO_LATENCY_COLUMN not in open(path / "steps.csv").readline()
    steps = RunDirectory.open(path).steps()
    assert slos.SLO_LATENCY_COLUMN in steps.columns and steps[slos.SLO_LATENCY_COLUMN].isna().all()
    ok, known = knees.slo_columns(steps, SLO)
    assert list(ok) == [True, False] and list(known) == [True, True]
    assert slos.unjudged_reason(steps, SLO) is None


def test_a_missing_required_column_is_still_refused(tmp_path):
    path = _old_run(tmp_path, [_row(0, 10, 100.0)], drop=(slos.SLO_LATENCY_COLUMN, "p95_ms"))
    with pytest.raises(RunDirectoryError, match="p95_ms"):
        RunDirectory.open(path).steps()


def test_the_recorded_column_wins_over_the_p_columns_row_by_row():
    steps = pd.DataFrame([_row(0, 10, 100.0, slo_latency_ms=250.0), _row(1, 20, 100.0, slo_latency_ms=np.nan)])
    ok, known = knees.slo_columns(steps, SLO)
    assert list(ok) == [False, True] and list(known) == [True, True]


# -- the knee --------------------------------------------------------------------------------------
def _ramp(rates, p95, tasks=2, start_id=0, failures=None):
    rows = []
    for index, (rate, latency) in enumerate(zip(rates, p95)):
        rows.append({"step_id": start_id + index, "tasks": tasks, "offered_rps": float(rate),
                     "achieved_rps": float(rate), "sent": 10.0 * rate, "dropped": 0.0,
                     "failures": float(failures[index]) if failures else 0.0, "p95_ms": latency,
                     "per_task_rps": rate / tasks})
    return pd.DataFrame(rows)


def _judged(steps, slo=SLO):
    ok, known = knees.slo_columns(steps, slo)
    return steps.assign(slo_ok=ok, slo_known=known)


def test_a_step_without_latency_below_capacity_does_not_cut_it():
    rates = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]
    p95 = [50, 55, 60, 65, 70, 80, 90, 110, np.nan, 180, 400]  # capacity 100, no p95 at 90 (0.9x)
    steps = _judged(_ramp(rates, p95))
    knee = knees.find_knee(steps, 2)
    assert knee.last_good_rps == 100 and knee.slo_breach_rps == 110
    assert knee.unknown_steps == (8,)
    warnings = knees.slo_warnings(steps, SLO, knee)
    assert len(warnings) == 1 and "step(s) 8" in warnings[0]
    # read as a plain bool, the unknown step would be the first breach and cut the capacity to 80
    old = knees.find_knee(steps.drop(columns=["slo_known"]), 2)
    assert old.last_good_rps == 80 and old.unknown_steps == ()


def test_a_nullable_slo_ok_column_is_understood_too():
    steps = _ramp([10, 20, 30, 40], [50, np.nan, 60, 400])
    knee = knees.find_knee(steps.assign(slo_ok=slos.slo_flags(steps, SLO)), 2)
    assert knee.last_good_rps == 30 and knee.slo_breach_rps == 40 and knee.unknown_steps == (1,)


def test_unknown_steps_are_never_good():
    steps = _judged(_ramp([10, 20, 30, 40], [50, 60, np.nan, np.nan]))
    knee = knees.find_knee(steps, 2)
    assert knee.last_good_rps == 20 and not knee.breached and knee.unknown_steps == (2, 3)
    assert not steps["slo_ok"].iloc[2:].any()


def test_errors_are_a_breach_even_without_latency():
    steps = _judged(_ramp([10, 20, 30], [50, 60, np.nan], failures=[0, 0, 50]))
    knee = knees.find_knee(steps, 2)
    assert knee.slo_breach_rps == 30 and knee.last_good_rps == 20 and knee.unknown_steps == ()


def test_slo_flags_stays_a_plain_bool():
    flags = knees.slo_flags(_ramp([10, 20], [50, np.nan]), SLO)
    assert flags.dtype == bool and list(flags) == [True, False]


def test_queue_overflow_counts_steps_from_the_onset_as_judged():
    steps = _judged(_ramp([10, 20, 30, 40, 50], [50, 50, 50, np.nan, 50]))
    knee = knees.at_queue_overflow(steps, 2, onset_per_task_rps=20.0)
    assert knee.last_good_rps == 30 and knee.slo_breach_rps == 40 and knee.unknown_steps == ()


# -- capacity doubling ---------------------------------------------------------------------------
def _doubling(second_capacity, breached=True, first_capacity=100.0, tasks=(2, 4)):
    first_rates = [20, 40, 60, 80, first_capacity, first_capacity * 1.1]
    first = knees.find_knee(_judged(_ramp(first_rates, [50] * 5 + [400], tasks=tasks[0])), tasks[0])
    second_rates = list(np.linspace(0.3, 1.0, 5) * second_capacity) + ([second_capacity * 1.1] if breached else [])
    latency = [50] * 5 + ([400] if breached else [])
    second_steps = _judged(_ramp(second_rates, latency, tasks=tasks[1], start_id=100))
    second = knees.find_knee(second_steps, tasks[1])
    return knees.doubling(first, second, second_steps)


def test_partial_scaling_is_measured_when_twice_the_tasks_broke_the_slo():
    result = _doubling(150.0)
    assert result["verdict"] == "partial" and result["tested"]
    assert result["ratio"] == pytest.approx(1.5)
    assert "grew only 1.50x with twice the tasks" in result["detail"]
    assert "part of the limit is shared" in result["detail"]
    assert result["per_task_rps_at_second"] == pytest.approx(150.0 / 4)


def test_partial_needs_a_breach_at_twice_the_tasks():
    result = _doubling(150.0, breached=False)
    assert result["verdict"] == "inconclusive" and "stopped before a breach" in result["detail"]
    assert result["per_task_rps_at_second"] is None


@pytest.mark.parametrize("second_capacity, verdict", [(180.0, "scales"), (170.0, "scales"), (169.0, "partial"),
                                                      (131.0, "partial"), (130.0, "does_not_scale"),
                                                      (110.0, "does_not_scale")])
def test_doubling_thresholds(second_capacity, verdict):
    result = _doubling(second_capacity)
    assert result["verdict"] == verdict, result["detail"]
    assert result["per_task_rps_at_second"] == pytest.approx(second_capacity / 4)


def test_partial_thresholds_follow_the_task_ratio():
    # 3 tasks after 2: "scales" from 1.7 x 1.5 / 2 = 1.275x, "does not scale" up to 0.975x
    assert _doubling(120.0, tasks=(2, 3))["verdict"] == "partial"
    detail = _doubling(120.0, tasks=(2, 3))["detail"]
    assert "1.5x the tasks" in detail
    assert _doubling(130.0, tasks=(2, 3))["verdict"] == "scales"


def test_untested_doubling_has_the_same_keys():
    first = knees.find_knee(_judged(_ramp([20, 40], [50, 400])), 2)
    result = knees.doubling(first, None, pd.DataFrame())
    assert result["verdict"] == "inconclusive" and result["per_task_rps_at_second"] is None
    assert set(result) == set(_doubling(150.0))
