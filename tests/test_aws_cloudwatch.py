"""The CloudWatch source against a moto server on 127.0.0.1: values, units, timestamps, cost."""

from __future__ import annotations

import time

import pytest
from botocore.awsrequest import AWSResponse

from scalefinder.loadgen.context import RunContext
from scalefinder.loadgen.sources import cloudwatch
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError
from tests.moto_server import CLUSTER, SERVICE, client, seed_world

SERVICE_DIMS = [{"Name": "ClusterName", "Value": CLUSTER}, {"Name": "ServiceName", "Value": SERVICE}]


def _minute_ago(minutes: int) -> int:
    return int(time.time()) // 60 * 60 - 60 * minutes


def _put(namespace: str, points: list[dict]) -> None:
    cw = client("cloudwatch")
    for first in range(0, len(points), 500):
        cw.put_metric_data(Namespace=namespace, MetricData=points[first:first + 500])


def _point(name: str, dims: list[dict], stamp: float, value: float) -> dict:
    return {"MetricName": name, "Dimensions": dims, "Timestamp": stamp, "Value": value}


def _seed_recent() -> None:
    """Container Insights data of the last minutes: the preflight (``check``) refuses a service without."""
    stamp = _minute_ago(2) + 5
    _put("ECS/ContainerInsights", [_point(name, SERVICE_DIMS, stamp, 1.0) for name in (
        "RunningTaskCount", "CpuUtilized", "CpuReserved", "MemoryUtilized", "MemoryReserved")])


def _source(**config):
    _seed_recent()
    table = {"cluster": CLUSTER, "service": SERVICE, "settle_s": 0, **config}
    return cloudwatch.build(cloudwatch.validate_config(table, "sources.cloudwatch"), RunContext(profile=None))


def _custom(count: int) -> list[dict]:
    return [{"name": f"app_gauge_{i}", "namespace": "App", "metric_name": f"Gauge{i}",
             "dimensions": {"Service": SERVICE}, "unit": "things"} for i in range(count)]


def test_seeded_insights_alb_and_sqs_metrics_come_back_with_values_units_and_times(aws):
    world = seed_world()
    t0 = _minute_ago(30)
    lb_dims = [{"Name": "LoadBalancer", "Value": world.load_balancer_dimension}]
    both = lb_dims + [{"Name": "TargetGroup", "Value": world.target_group_dimension}]
    insights, alb, sqs, app = [], [], [], []
    for i in range(4):
        stamp = t0 + 60 * i + 7  # inside minute i
        for name, value in [("CpuUtilized", 100.0 + 10 * i), ("CpuReserved", 512.0), ("MemoryUtilized", 300.0),
                            ("MemoryReserved", 1024.0), ("NetworkRxBytes", 4000.0), ("NetworkTxBytes", 8000.0),
                            ("StorageReadBytes", 1200.0), ("StorageWriteBytes", 600.0), ("RunningTaskCount", 2.0)]:
            insights.append(_point(name, SERVICE_DIMS, stamp, value))
        alb += [_point("RequestCountPerTarget", [{"Name": "TargetGroup", "Value": world.target_group_dimension}],
                       stamp, 600.0 + 60 * i),
                _point("ActiveConnectionCount", lb_dims, stamp, 30.0),
                _point("TargetResponseTime", both, stamp, 0.125),
                _point("HTTPCode_Target_5XX_Count", both, stamp, 12.0)]
        sqs.append(_point("ApproximateNumberOfMessagesVisible", [{"Name": "QueueName", "Value": "jobs"}], stamp, 5.0 * i))
        app.append(_point("InFlight", [{"Name": "Service", "Value": SERVICE}], stamp, 8.0))
    for namespace, points in [("ECS/ContainerInsights", insights), ("AWS/ApplicationELB", alb),
                              ("AWS/SQS", sqs), ("App", app)]:
        _put(namespace, points)

    source = _source(queue_name="jobs", custom_metrics=[
        {"name": "concurrency_app", "namespace": "App", "metric_name": "InFlight",
         "dimensions": {"Service": SERVICE}, "per_task": True, "unit": "requests"}])
    assert source.live is False
    # The window starts mid-minute: the first, partly covered minute must not be returned.
    rows = source.fetch(t0 - 20, t0 + 240)
    by_metric: dict[str, list[dict]] = {}
    for row in rows:
        by_metric.setdefault(row["metric"], []).append(row)

    expected_units = {
        "cpu_utilization": "percent", "memory_utilization": "percent", "memory_used_mib": "MiB",
        "network_rx_bytes_per_s": "bytes/s", "network_tx_bytes_per_s": "bytes/s",
        "storage_read_bytes_per_s": "bytes/s", "storage_write_bytes_per_s": "bytes/s",
        "running_task_count": "tasks", "requests_per_task": "requests/s", "concurrency_per_task": "requests",
        "target_response_time_ms": "ms", "http_5xx_per_s": "errors/s", "queue_backlog": "jobs",
        "concurrency_app": "requests",
    }
    assert set(by_metric) == set(expected_units)
    for name, series in by_metric.items():
        if name.startswith("storage_"):  # a rate of a cumulative counter: from the second minute on, at its start
            assert [r["time_unix_s"] for r in series] == [t0 + 60 * i for i in range(1, 4)], name
            continue
        assert [r["time_unix_s"] for r in series] == [t0 + 60 * i + 30 for i in range(4)], name
        assert {r["unit"] for r in series} == {expected_units[name]}
        assert {r["source"] for r in series} == {"cloudwatch"} and {r["task"] for r in series} == {""}

    def values(name):
        return [pytest.approx(r["value"]) for r in by_metric[name]]

    assert values("cpu_utilization") == [100 * (100 + 10 * i) / 512 for i in range(4)]
    assert values("memory_utilization") == [100 * 300 / 1024] * 4
    assert values("memory_used_mib") == [150.0] * 4
    assert values("network_rx_bytes_per_s") == [2000.0] * 4
    assert values("storage_read_bytes_per_s") == [0.0] * 3  # the cumulative counter stood still
    assert values("running_task_count") == [2.0] * 4
    assert values("requests_per_task") == [(600 + 60 * i) / 60 for i in range(4)]
    assert values("concurrency_per_task") == [15.0] * 4
    assert values("target_response_time_ms") == [125.0] * 4
    assert values("http_5xx_per_s") == [12 / 60 / 2] * 4
    assert values("queue_backlog") == [5.0 * i for i in range(4)]
    assert values("concurrency_app") == [4.0] * 4
    assert [r["time_unix_s"] for r in rows] == sorted(r["time_unix_s"] for r in rows)

    described = source.describe()
    preflight = described["preflight"]
    assert preflight["get_metric_data_calls"] == 1 and preflight["metrics_requested"] == 9 + 4 + 1
    assert described["api_calls_by_operation"]["cloudwatch:GetMetricData"] == 1 + 1
    # 8 Container Insights metrics as Sum and SampleCount + RunningTaskCount, 4 ALB, SQS, custom
    fetched = 17 + 4 + 1 + 1
    assert described["metrics_requested"] == fetched + preflight["metrics_requested"]
    assert described["estimated_cost_usd"] == pytest.approx(described["metrics_requested"] * 0.01 / 1000)
    assert described["service_datapoint"] == "total"  # one datapoint a minute for two tasks


def test_one_hour_with_twenty_metrics_costs_the_fewest_calls(aws):
    seed_world()
    t0 = _minute_ago(70)
    points = [_point(f"Gauge{i}", [{"Name": "Service", "Value": SERVICE}], t0 + 60 * m + 5, float(m))
              for i in range(6) for m in range(60)]
    _put("App", points)
    source = _source(queue_name="jobs", custom_metrics=_custom(6))
    steps = [(t0 + 300 * k, t0 + 300 * (k + 1)) for k in range(12)]  # twelve five-minute steps
    rows = source.fetch_windows(steps)
    described = source.describe()
    preflight = described["preflight"]
    queries = 17 + 4 + 1 + 6
    assert described["metrics_requested"] - preflight["metrics_requested"] == queries == 28
    bound = cloudwatch.lower_bound_calls(queries, 60)
    assert bound == 1
    assert described["api_calls_by_operation"]["cloudwatch:GetMetricData"] - preflight["get_metric_data_calls"] \
        <= bound + 1
    gauge = [r for r in rows if r["metric"] == "app_gauge_3"]
    assert [r["value"] for r in gauge] == [float(m) for m in range(60)]


def test_batches_respect_the_limits_and_stay_near_the_lower_bound():
    query = cloudwatch.MetricQuery("App", "G", (), "Average")
    cases = [(20, 60), (1200, 60), (500, 1440), (37, 20160), (3, 150_000)]
    for count, periods in cases:
        queries = [cloudwatch.MetricQuery("App", f"G{i}", (), "Average") for i in range(count)]
        batches = cloudwatch.plan_batches(queries, 0, periods * 60, 60)
        for batch in batches:
            assert len(batch.queries) <= cloudwatch.MAX_QUERIES_PER_CALL
            assert len(batch.queries) * (batch.end_s - batch.start_s) // 60 <= cloudwatch.MAX_DATAPOINTS_PER_CALL
        covered = sum(len(b.queries) * (b.end_s - b.start_s) // 60 for b in batches)
        assert covered == count * periods
        assert {q for b in batches for q in b.queries} == set(queries)
        assert len(batches) <= cloudwatch.lower_bound_calls(count, periods) + 1, (count, periods)
    assert cloudwatch.plan_batches([query], 0, 30, 60) == []


def test_throttling_is_retried_and_counted(aws):
    seed_world()
    t0 = _minute_ago(20)
    _put("ECS/ContainerInsights", [_point("RunningTaskCount", SERVICE_DIMS, t0 + 5, 2.0)])
    source = _source()
    throttles = {"left": 2}

    def throttle(request, **_):
        if throttles["left"] > 0:
            throttles["left"] -= 1
            response = AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0",
                                                      "x-amzn-query-error": "Throttling;Sender"}, None)
            response._content = b'{"__type": "Throttling", "message": "Rate exceeded"}'
            return response
        return None

    source.clients.client("cloudwatch").meta.events.register("before-send.cloudwatch.GetMetricData", throttle)
    rows = source.fetch(t0, t0 + 60)
    assert [r["value"] for r in rows if r["metric"] == "running_task_count"] == [2.0]
    described = source.describe()
    assert described["throttled"] == 2
    assert described["retries"] == 2
    assert described["api_calls_by_operation"]["cloudwatch:GetMetricData"] == 1 + 1  # and the preflight's


def test_partial_data_is_requested_again(aws):
    seed_world()
    t0 = _minute_ago(20)
    _put("ECS/ContainerInsights", [_point("RunningTaskCount", SERVICE_DIMS, t0 + 5, 3.0)])
    source = _source()
    first = {"done": False}

    def cut_short(parsed, **_):
        if not first["done"]:
            first["done"] = True
            for result in parsed.get("MetricDataResults", []):
                result.update(StatusCode="PartialData", Timestamps=[], Values=[])

    source.clients.client("cloudwatch").meta.events.register("after-call.cloudwatch.GetMetricData", cut_short)
    rows = source.fetch(t0, t0 + 60)
    assert [r["value"] for r in rows if r["metric"] == "running_task_count"] == [3.0]
    described = source.describe()
    assert described["partial_data_requeries"] == 1
    assert described["api_calls_by_operation"]["cloudwatch:GetMetricData"] == 2 + 1  # and the preflight's
    assert described["incomplete_queries"] == []


def test_pages_are_followed_and_each_page_is_counted_as_a_call_and_its_metrics(aws):
    seed_world(insights="enhanced")
    t0 = _minute_ago(20)
    dims = SERVICE_DIMS + [{"Name": "TaskId", "Value": "a1"}]
    _put("ECS/ContainerInsights", [_point("RunningTaskCount", SERVICE_DIMS, t0 + 5, 2.0),
                                   _point("TaskCpuUtilization", dims, t0 + 5, 40.0),
                                   _point("TaskMemoryUtilization", dims, t0 + 5, 20.0)])
    source = _source(load_balancer=False)
    client_events = source.clients.client("cloudwatch").meta.events
    sent_tokens: dict[str, list] = {"GetMetricData": [], "ListMetrics": []}
    answered = {"GetMetricData": 0, "ListMetrics": 0}

    def remember_token(params, model, **_):
        # taken off before the request is sent: moto would refuse a token it did not issue
        sent_tokens[model.name].append(params.pop("NextToken", None))

    def split_in_two(parsed, model, **_):
        # CloudWatch pages long answers: the first answer says there is more, the second does not
        answered[model.name] += 1
        parsed.pop("NextToken", None)
        if answered[model.name] == 1:
            parsed["NextToken"] = "page-2"
            if model.name == "GetMetricData":
                parsed["MetricDataResults"] = []  # the data comes on the second page

    for operation in sent_tokens:
        client_events.register(f"before-parameter-build.cloudwatch.{operation}", remember_token)
        client_events.register(f"after-call.cloudwatch.{operation}", split_in_two)
    rows = source.fetch(t0, t0 + 60)
    assert sent_tokens == {"GetMetricData": [None, "page-2"], "ListMetrics": [None, "page-2"]}
    assert [r["value"] for r in rows if r["metric"] == "running_task_count"] == [2.0]
    assert {(r["metric"], r["task"]): r["value"] for r in rows if r["task"]} == {
        ("cpu_utilization", "a1"): 40.0, ("memory_utilization", "a1"): 20.0}
    described = source.describe()
    preflight = described["preflight"]
    assert described["api_calls_by_operation"]["cloudwatch:GetMetricData"] == 2 + preflight["get_metric_data_calls"]
    assert described["api_calls_by_operation"]["cloudwatch:ListMetrics"] == 2
    queries = 17 + 2  # Container Insights and the task's two; each page asks for every one of them
    assert described["metrics_requested"] == 2 * queries + preflight["metrics_requested"]
    assert described["get_metric_data_calls_planned"] == 1


def test_task_level_metrics_with_enhanced_observability(aws):
    seed_world(insights="enhanced")
    t0 = _minute_ago(20)
    points = []
    for task, cpu in (("a1", 40.0), ("b2", 60.0)):
        dims = SERVICE_DIMS + [{"Name": "TaskId", "Value": task}]
        points += [_point("TaskCpuUtilization", dims, t0 + 5, cpu), _point("TaskMemoryUtilization", dims, t0 + 5, 20.0)]
    _put("ECS/ContainerInsights", points)
    rows = _source().fetch(t0, t0 + 60)
    per_task = {(r["metric"], r["task"]): r["value"] for r in rows if r["task"]}
    assert per_task == {("cpu_utilization", "a1"): 40.0, ("memory_utilization", "a1"): 20.0,
                        ("cpu_utilization", "b2"): 60.0, ("memory_utilization", "b2"): 20.0}


def test_container_insights_off_names_the_fix(aws):
    seed_world(insights="disabled")
    with pytest.raises(InputError) as error:
        _source()
    assert "aws ecs update-cluster-settings --cluster staging" in str(error.value)
    assert "containerInsights" in str(error.value)


def test_missing_service_or_cluster_is_one_clear_error(aws):
    seed_world()
    with pytest.raises(InfrastructureError, match="service 'nope' does not exist"):
        cloudwatch.build(cloudwatch.validate_config({"cluster": CLUSTER, "service": "nope"}, "sources.cloudwatch"),
                         RunContext(profile=None))
    with pytest.raises(InfrastructureError, match="cluster 'gone' does not exist"):
        cloudwatch.build(cloudwatch.validate_config({"cluster": "gone", "service": SERVICE}, "sources.cloudwatch"),
                         RunContext(profile=None))


def test_bad_config_names_the_key():
    with pytest.raises(ProfileError, match=r"sources.cloudwatch.period_s"):
        cloudwatch.validate_config({"cluster": "c", "service": "s", "period_s": 45}, "sources.cloudwatch")
    with pytest.raises(ProfileError, match=r"custom_metrics\[0\].statistic"):
        cloudwatch.validate_config({"cluster": "c", "service": "s", "custom_metrics": [
            {"name": "x", "namespace": "N", "metric_name": "M", "statistic": "Median"}]}, "sources.cloudwatch")
    with pytest.raises(ProfileError, match=r"sources.cloudwatch.servce"):
        cloudwatch.validate_config({"cluster": "c", "servce": "s"}, "sources.cloudwatch")
