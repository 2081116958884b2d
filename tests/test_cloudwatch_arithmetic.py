"""The CloudWatch source's arithmetic and queries: per-task values whichever way Container Insights
writes its service datapoints, cumulative storage counters, one valid period per query, ListMetrics
limited to recent tasks, and the preflight before any load.

The first tests are pure (no server); the rest run against the moto server on 127.0.0.1 (the
``aws`` fixture, a thread of this process), seeded with ``put_metric_data``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from scalefinder.core.errors import InputError, ProfileError
from scalefinder.loadgen.context import RunContext
from scalefinder.loadgen.sources import cloudwatch
from scalefinder.loadgen.sources.cloudwatch import (
    PER_TASK,
    TOTAL,
    UNDETERMINED,
    UNRECOGNIZED,
    counter_rates,
    per_task_series,
    period_for_age,
    service_datapoint_mode,
    time_segments,
)
from tests.moto_server import CLUSTER, SERVICE, client, seed_world

SERVICE_DIMS = [{"Name": "ClusterName", "Value": CLUSTER}, {"Name": "ServiceName", "Value": SERVICE}]
HOUR, DAY = 3600, 86400

# Three tasks, each with its own value: the per-task figures every reading must give.
TASK_VALUES = {
    "CpuUtilized": (100.0, 150.0, 200.0), "CpuReserved": (256.0, 256.0, 256.0),
    "MemoryUtilized": (200.0, 300.0, 400.0), "MemoryReserved": (512.0, 512.0, 512.0),
    "NetworkRxBytes": (1000.0, 2000.0, 3000.0), "NetworkTxBytes": (500.0, 500.0, 2000.0),
}
#: bytes read per second by each task: the storage counters grow by 60 × this a minute
READ_RATES = (1000.0, 2000.0, 3000.0)
EXPECTED = {
    "cpu_utilization": 100 * 150 / 256, "memory_utilization": 100 * 300 / 512, "memory_used_mib": 300.0,
    "network_rx_bytes_per_s": 2000.0, "network_tx_bytes_per_s": 1000.0, "storage_read_bytes_per_s": 2000.0,
    "running_task_count": 3.0,
}


# -- pure helpers ------------------------------------------------------------------------------


def _series(values: dict[int, float], period: int = 60) -> dict[int, tuple[float, int]]:
    return {start: (value, period) for start, value in values.items()}


@pytest.mark.parametrize("period", [60, 120])
def test_both_readings_of_a_service_datapoint_give_the_same_per_task_value(period):
    minutes = period // 60
    tasks = _series({0: 3.0, period: 3.0}, period)
    per_task_values = (200.0, 300.0, 400.0)
    # one datapoint per task per minute: Sum adds the tasks and the minutes
    per_task_sums = _series({0: sum(per_task_values) * minutes, period: sum(per_task_values) * minutes}, period)
    per_task_counts = _series({0: 3.0 * minutes, period: 3.0 * minutes}, period)
    # one service total per minute
    total_sums = _series({0: sum(per_task_values) * minutes, period: sum(per_task_values) * minutes}, period)
    total_counts = _series({0: 1.0 * minutes, period: 1.0 * minutes}, period)

    assert service_datapoint_mode(per_task_counts, tasks) == (PER_TASK, pytest.approx(1.0))
    assert service_datapoint_mode(total_counts, tasks) == (TOTAL, pytest.approx(1 / 3))
    one = per_task_series(per_task_sums, per_task_counts, tasks, PER_TASK)
    other = per_task_series(total_sums, total_counts, tasks, TOTAL)
    assert one == other == _series({0: 300.0, period: 300.0}, period)
    # What the old code did (Average / RunningTaskCount) is right for the total reading only:
    average = per_task_sums[0][0] / per_task_counts[0][0]
    assert average / 3 == pytest.approx(100.0) != one[0][0]


def test_one_task_cannot_tell_and_a_ratio_near_neither_reading_gives_nothing():
    one_task = _series({0: 1.0})
    assert service_datapoint_mode(_series({0: 1.0}), one_task) == (UNDETERMINED, None)
    # with one task both readings are the same number
    assert per_task_series(_series({0: 250.0}), _series({0: 1.0}), one_task, UNDETERMINED) == _series({0: 250.0})
    # a publisher writing a service total every second (60 a minute) with two tasks
    mode, ratio = service_datapoint_mode(_series({0: 60.0}), _series({0: 2.0}))
    assert mode == UNRECOGNIZED and ratio == pytest.approx(30.0)
    assert per_task_series(_series({0: 6000.0}), _series({0: 60.0}), _series({0: 2.0}), mode) == {}
    # a task missing a minute's event still reads as per task
    assert service_datapoint_mode(_series({0: 3.0, 60: 2.0}), _series({0: 3.0, 60: 3.0}))[0] == PER_TASK


def test_cumulative_counters_become_per_task_rates_only_across_unchanged_tasks():
    values = _series({0: 1000.0, 60: 7000.0, 120: 13000.0, 180: 500.0, 240: 6500.0, 360: 9000.0, 420: 9100.0})
    counts = _series({s: 2.0 for s in values})
    running = _series({0: 2.0, 60: 2.0, 120: 2.0, 180: 2.0, 240: 2.0, 360: 2.0, 420: 3.0})
    rates = counter_rates(values, counts, running)
    # 60 → 0..60 and 120: +6000 bytes a minute = 100 bytes/s per task; the fall at 180 (a task
    # replaced: its counter restarted) is dropped, 240 counts again; 360 follows a gap (no 300);
    # 420 has another task count.
    assert rates == {60: (100.0, 60, 0), 120: (100.0, 60, 60), 240: (100.0, 60, 180)}


def test_periods_by_namespace_and_by_age():
    hi_res = cloudwatch.MetricQuery("App", "InFlight", (), "Average", high_resolution=True)
    standard = cloudwatch.MetricQuery("App", "InFlight", (), "Average")
    for namespace in (cloudwatch.INSIGHTS, cloudwatch.ALB, cloudwatch.SQS):
        query = cloudwatch.MetricQuery(namespace, "M", (), "Sum")
        assert [query.base_period(p) for p in (10, 60, 120, 90)] == [60, 60, 120, 60]
    assert [hi_res.base_period(p) for p in (10, 60)] == [10, 60]
    assert standard.base_period(10) == 60
    assert [period_for_age(10, age) for age in (HOUR, 4 * HOUR, 16 * DAY, 70 * DAY)] == [10, 60, 300, 3600]
    assert [period_for_age(120, age) for age in (4 * HOUR, 16 * DAY)] == [120, 300]

    now = 1_000_008_030.0  # 30 s into a minute
    start, end = 1_000_008_000 - 5 * HOUR, 1_000_008_000 - HOUR
    segments = time_segments(start, end, 10, now)
    assert [p for _, _, p in segments] == [60, 10]
    (old_start, old_end, _), (new_start, new_end, _) = segments
    assert old_start == start and old_end == new_start and new_end == end
    assert now - old_end <= 3 * HOUR - cloudwatch.AGE_MARGIN_S  # the 10 s part is younger than 3 hours
    assert all((e - s) % p == 0 and s % p == 0 for s, e, p in segments)
    # a standard metric three weeks back: 300 s past 15 days, then 60 s
    old = time_segments(int(now - 21 * DAY) // 300 * 300, int(now - 10 * DAY) // 60 * 60, 60, now)
    assert [p for _, _, p in old] == [300, 60]
    # recent data keeps the base period
    assert time_segments(600, 1200, 60, 1300.0) == [(600, 1200, 60)]


def test_short_periods_need_a_high_resolution_custom_metric():
    base = {"cluster": "c", "service": "s"}
    with pytest.raises(ProfileError, match=r"sources.cloudwatch.period_s.*high_resolution = true"):
        cloudwatch.validate_config({**base, "period_s": 10}, "sources.cloudwatch")
    custom = {"name": "app_in_flight_per_task", "namespace": "Web/App", "metric_name": "InFlight",
              "high_resolution": True}
    config = cloudwatch.validate_config({**base, "period_s": 10, "custom_metrics": [custom]}, "sources.cloudwatch")
    assert config["custom_metrics"][0]["high_resolution"] is True
    with pytest.raises(ProfileError, match=r"custom_metrics\[0\].high_resolution"):
        cloudwatch.validate_config({**base, "custom_metrics": [{**custom, "namespace": "AWS/SQS"}]},
                                   "sources.cloudwatch")
    # the AWS metrics stay at 60 s, so the holds must cover three minutes of them
    profile = SimpleNamespace(ramp=SimpleNamespace(min_hold_s=40.0, warmup_s=10.0), path="p.toml")
    with pytest.raises(ProfileError, match=r"ramp.min_hold_s.*at least 190 s"):
        cloudwatch._check_holds(config, profile)
    cloudwatch._check_holds(config, SimpleNamespace(ramp=SimpleNamespace(min_hold_s=190.0, warmup_s=10.0)))


# -- against moto ------------------------------------------------------------------------------


def _minute_ago(minutes: int) -> int:
    return int(time.time()) // 60 * 60 - 60 * minutes


def _put(namespace: str, points: list[dict]) -> None:
    cw = client("cloudwatch")
    for first in range(0, len(points), 500):
        cw.put_metric_data(Namespace=namespace, MetricData=points[first:first + 500])


def _point(name: str, dims: list[dict], stamp: float, value: float, **extra) -> dict:
    return {"MetricName": name, "Dimensions": dims, "Timestamp": stamp, "Value": value, **extra}


def _seed_insights(first_minute: int, minutes: int, reading: str) -> None:
    """Three tasks' Container Insights metrics, ``reading`` = "per_task" (one datapoint per task per
    minute for the service dimensions) or "total" (one service total per minute)."""
    points = []
    for m in range(minutes):
        stamp = first_minute + 60 * m + 7
        points.append(_point("RunningTaskCount", SERVICE_DIMS, stamp, 3.0))
        values = dict(TASK_VALUES)
        values["StorageReadBytes"] = tuple(10_000.0 * (i + 1) + 60 * rate * m for i, rate in enumerate(READ_RATES))
        values["StorageWriteBytes"] = tuple(5_000.0 for _ in READ_RATES)
        for name, per_task in values.items():
            if reading == PER_TASK:
                points += [_point(name, SERVICE_DIMS, stamp, value) for value in per_task]
            else:
                points.append(_point(name, SERVICE_DIMS, stamp, sum(per_task)))
    _put(cloudwatch.INSIGHTS, points)


def _seed_recent(minutes: int = 4) -> None:
    """Container Insights data in the last minutes, for the preflight."""
    _seed_insights(_minute_ago(minutes), minutes, TOTAL)


def _source(**config) -> cloudwatch.CloudWatchSource:
    table = {"cluster": CLUSTER, "service": SERVICE, "settle_s": 0, **config}
    return cloudwatch.build(cloudwatch.validate_config(table, "sources.cloudwatch"), RunContext(profile=None))


def _capture(source: cloudwatch.CloudWatchSource, operation: str) -> list[dict]:
    sent: list[dict] = []
    source.clients.client("cloudwatch").meta.events.register(
        f"before-parameter-build.cloudwatch.{operation}", lambda params, **_: sent.append(dict(params)))
    return sent


def test_per_task_and_total_service_datapoints_give_the_same_per_task_values(aws):
    seed_world()
    _seed_recent()
    per_task_start, total_start = _minute_ago(40), _minute_ago(25)
    _seed_insights(per_task_start, 5, PER_TASK)
    _seed_insights(total_start, 5, TOTAL)
    source = _source(load_balancer=False)

    found = {}
    for reading, start in ((PER_TASK, per_task_start), (TOTAL, total_start)):
        rows = source.fetch(start, start + 300)
        assert source.describe()["service_datapoint"] == reading
        by_metric: dict[str, list[float]] = {}
        for row in rows:
            by_metric.setdefault(row["metric"], []).append(row["value"])
        found[reading] = by_metric
        for metric, expected in EXPECTED.items():
            count = 4 if metric.startswith("storage_") else 5  # a rate needs the minute before
            assert by_metric[metric] == [pytest.approx(expected)] * count, (reading, metric)
        # the write counters did not move: zero bytes/s, not 5,000 × 3 / 60 / 3
        assert by_metric["storage_write_bytes_per_s"] == [0.0] * 4
    assert found[PER_TASK].keys() == found[TOTAL].keys()
    described = source.describe()["service_datapoint_by_metric"]
    assert described["MemoryUtilized"] == {"mode": TOTAL, "samples_per_task_minute": pytest.approx(1 / 3, abs=1e-3)}


def test_each_namespace_is_asked_at_its_own_period(aws):
    world = seed_world()
    _seed_recent()
    t0 = _minute_ago(20)
    group = [{"Name": "TargetGroup", "Value": world.target_group_dimension}]
    alb = [_point("RequestCountPerTarget", group, t0 + 60 * m + 5, 600.0) for m in range(3)]
    app = [_point("InFlight", [{"Name": "Service", "Value": SERVICE}], t0 + s + 1, 8.0, StorageResolution=1)
           for s in range(0, 180, 10)]
    _put(cloudwatch.ALB, alb)
    _put("App", app)
    source = _source(period_s=10, queue_name="jobs", custom_metrics=[
        {"name": "app_in_flight_per_task", "namespace": "App", "metric_name": "InFlight",
         "dimensions": {"Service": SERVICE}, "high_resolution": True, "unit": "requests"}])
    sent = _capture(source, "GetMetricData")
    rows = source.fetch(t0, t0 + 180)

    periods: dict[str, set[int]] = {}
    for params in sent:
        for query in params["MetricDataQueries"]:
            stat = query["MetricStat"]
            periods.setdefault(stat["Metric"]["Namespace"], set()).add(stat["Period"])
    assert periods == {cloudwatch.INSIGHTS: {60}, cloudwatch.ALB: {60}, cloudwatch.SQS: {60}, "App": {10}}
    # 600 requests a minute per target is 10 per second; Sum of a minute ÷ 10 s said 60
    assert [r["value"] for r in rows if r["metric"] == "requests_per_task"] == [pytest.approx(10.0)] * 3
    assert [r["value"] for r in rows if r["metric"] == "app_in_flight_per_task"] == [8.0] * 18
    assert source.describe()["periods_s"] == {"aws": [60], "custom": [10]}


def test_a_window_older_than_three_hours_is_asked_at_sixty_seconds(aws):
    seed_world()
    _seed_recent()
    t0 = _minute_ago(4 * 60)
    _put("App", [_point("InFlight", [], t0 + s + 1, 5.0, StorageResolution=1) for s in range(0, 180, 10)])
    source = _source(period_s=10, load_balancer=False, custom_metrics=[
        {"name": "app_in_flight_per_task", "namespace": "App", "metric_name": "InFlight", "high_resolution": True}])
    sent = _capture(source, "GetMetricData")
    rows = source.fetch(t0, t0 + 180)
    assert {q["MetricStat"]["Period"] for params in sent for q in params["MetricDataQueries"]} == {60}
    assert [r["value"] for r in rows if r["metric"] == "app_in_flight_per_task"] == [5.0] * 3


def test_list_metrics_asks_only_for_recently_active_tasks(aws):
    seed_world(insights="enhanced")
    _seed_recent()
    dims = SERVICE_DIMS + [{"Name": "TaskId", "Value": "a1"}]
    t0 = _minute_ago(20)
    _put(cloudwatch.INSIGHTS, [_point("TaskCpuUtilization", dims, t0 + 5, 40.0)])
    source = _source(load_balancer=False)
    sent = _capture(source, "ListMetrics")
    rows = source.fetch(t0, t0 + 60)
    assert [params.get("RecentlyActive") for params in sent] == ["PT3H"]  # moto accepts it
    assert {(r["metric"], r["task"]): r["value"] for r in rows if r["task"]} == {("cpu_utilization", "a1"): 40.0}
    # a window that began more than three hours ago also lists the tasks that have stopped since
    old = _minute_ago(5 * 60)
    source.fetch(old, old + 60)
    assert "RecentlyActive" not in sent[-1]


def test_preflight_refuses_a_service_without_container_insights_data(aws):
    seed_world()  # Container Insights "enabled", but no datapoint yet
    with pytest.raises(InputError) as error:
        _source()
    message = str(error.value)
    assert error.value.exit_code == 2
    for part in ("RunningTaskCount", "CpuUtilized", f"ClusterName={CLUSTER}", f"ServiceName={SERVICE}",
                 f"aws ecs update-cluster-settings --cluster {CLUSTER} --settings name=containerInsights,value=enabled",
                 "wait a few minutes", "no load was sent"):
        assert part in message, part


def test_container_insights_off_names_the_command_that_turns_it_on(aws):
    seed_world(insights="disabled")
    with pytest.raises(InputError) as error:
        _source()
    message = str(error.value)
    assert error.value.exit_code == 2
    assert f"aws ecs update-cluster-settings --cluster {CLUSTER} --settings name=containerInsights,value=enabled" \
        in message
    assert "container_insights = false" not in message  # a key the profile refuses


def test_per_task_metrics_without_enhanced_observability_suggest_a_key_that_exists(aws):
    seed_world(insights="enabled")
    _seed_recent()
    with pytest.raises(InputError, match=r'value=enhanced.*task_metrics = "auto"') as error:
        _source(task_metrics=True)
    assert "task_metrics" in cloudwatch.DEFAULTS and error.value.exit_code == 2
    assert cloudwatch.validate_config({"cluster": "c", "service": "s", "task_metrics": "auto"},
                                      "sources.cloudwatch")["task_metrics"] == "auto"


def test_preflight_lets_metrics_that_come_only_under_load_pass_with_a_warning(aws):
    seed_world()
    _seed_recent()
    source = _source(queue_name="jobs")  # no ALB or SQS datapoint: no traffic before the run
    preflight = source.describe()["preflight"]
    assert preflight["get_metric_data_calls"] == 1
    assert preflight["without_recent_data"] == [
        "AWS/ApplicationELB/ActiveConnectionCount", "AWS/ApplicationELB/HTTPCode_Target_5XX_Count",
        "AWS/ApplicationELB/RequestCountPerTarget", "AWS/ApplicationELB/TargetResponseTime",
        "AWS/SQS/ApproximateNumberOfMessagesVisible"]
    assert preflight["metrics_checked"] == 9 + 4 + 1


RUN_PROFILE = f"""
name = "preflight"
[target]
kind = "url"
url = "http://127.0.0.1:9"
environment = "staging"
allowed_hosts = ["127.0.0.1"]
[workload]
requests = [{{ path = "/work" }}]
[slo]
percentile = 95
latency_ms = 250
[ramp]
start_rps = 1
step_rps = 1
max_rps = 2
hold_s = 200
min_hold_s = 200
[capacity]
controller = "ecs"
tasks = 2
[capacity.ecs]
cluster = "{CLUSTER}"
service = "{SERVICE}"
[sources.cloudwatch]
cluster = "{CLUSTER}"
service = "{SERVICE}"
"""


def test_run_stops_with_exit_2_before_any_load_when_the_service_has_no_container_insights_data(aws, tmp_path):
    from click.testing import CliRunner

    from scalefinder.cli import cli
    from tests.moto_server import service_state

    seed_world()
    found = service_state()
    profile = tmp_path / "preflight.toml"
    profile.write_text(RUN_PROFILE)
    result = CliRunner().invoke(cli, ["run", str(profile), "--yes", "--no-progress", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "Error: Container Insights has no data in the last 15 minutes for CpuUtilized" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # stopped before the run directory, the engine and any load
    assert service_state() == found


def test_a_compressed_minute_is_for_a_local_endpoint_only():
    def clients(endpoint):
        return SimpleNamespace(client=lambda name: SimpleNamespace(meta=SimpleNamespace(endpoint_url=endpoint)))

    table = {"cluster": "staging", "service": "web", "period_s": 1, "minute_s": 1}
    config = cloudwatch.validate_config(dict(table), "sources.cloudwatch")  # 1 s periods: a one-second minute
    cloudwatch._check_compressed_minute(config, clients("http://127.0.0.1:5000"))
    with pytest.raises(InputError, match="compresses CloudWatch's minute"):
        cloudwatch._check_compressed_minute(config, clients("https://monitoring.eu-west-1.amazonaws.com"))
    with pytest.raises(ProfileError, match="minute_s"):
        cloudwatch.validate_config({**table, "minute_s": 7}, "sources.cloudwatch")
    with pytest.raises(ProfileError, match="period_s"):
        cloudwatch.validate_config({**table, "minute_s": 60}, "sources.cloudwatch")  # 1 s needs high_resolution
    # the datapoint reading counts compressed minutes: one total a second is "total" with two tasks
    counts = {t: (1.0, 1) for t in range(100, 110)}
    running = {t: (2.0, 1) for t in range(100, 110)}
    assert cloudwatch.service_datapoint_mode(counts, running, minute_s=1)[0] == cloudwatch.TOTAL
