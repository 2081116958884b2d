"""Archetype parameters, ground truth and cluster specs: validation without starting processes."""

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily

from scalefinder.loadgen.cluster import ClusterSpec, archetypes, task
from scalefinder.loadgen.sources.local import parse_gauges
from scalefinder.core.errors import InputError


def spec(**changes):
    fields = dict(archetype="cpu", command=None, params={}, tasks=2, cpu_units=256, memory_mib=256)
    fields.update(changes)
    return ClusterSpec(**fields)


def test_every_archetype_states_a_ground_truth_with_its_intended_bottleneck():
    sizing = archetypes.Sizing(cpu_units=256, memory_mib=256, tasks=2)
    for name, archetype in archetypes.ARCHETYPES.items():
        truth = archetypes.ground_truth(name, {}, sizing)
        assert truth["bottleneck"] == archetype.bottleneck, name
        assert truth["capacity_rps_per_task"] > 0
        assert truth["warnings"] == [], (name, truth["warnings"])
        # modest capacities, so two tasks plus the generator fit a small machine
        assert 5 <= truth["capacity_rps_per_task"] <= 40, (name, truth["capacity_rps_per_task"])


def test_capacity_formulas_follow_the_parameters():
    sizing = archetypes.Sizing(cpu_units=512, memory_mib=512, tasks=4, idle_mib=50)
    cpu = archetypes.ground_truth("cpu", {"cpu_ms": 5}, sizing)
    assert cpu["capacity_rps_per_task"] == pytest.approx(0.5 * 1000 / (5 + archetypes.SERVING_CPU_MS), rel=1e-3)
    assert "512/1024" in cpu["capacity_formula"] and "5" in cpu["capacity_formula"]
    memory = archetypes.ground_truth("memory", {"mib_per_request": 23, "hold_ms": 500}, sizing)
    assert memory["capacity_rps_per_task"] == pytest.approx(20 / 0.5)  # 20 whole requests of 23 MiB fit in 462
    exact = archetypes.ground_truth("memory", {"mib_per_request": 21, "hold_ms": 1000}, sizing)
    assert exact["capacity_rps_per_task"] == pytest.approx(22.0)  # 22 x 21 = 462: an exact fit counts
    capped = archetypes.ground_truth("memory", {"mib_per_request": 23, "hold_ms": 500, "reserve_mib": 112}, sizing)
    assert capped["capacity_rps_per_task"] == pytest.approx(17 / 0.5)  # the 400 MiB heap cap comes first
    assert "min(400, 462.0)" in capped["capacity_formula"]
    workers = archetypes.ground_truth("workers", {"workers": 8, "work_ms": 400}, sizing)
    assert workers["capacity_rps_per_task"] == pytest.approx(20.0)
    waiting = archetypes.ground_truth("waiting", {"pool_size": 3, "latency_ms": 100}, sizing)
    assert waiting["capacity_rps_per_task"] == pytest.approx(30.0)
    queue = archetypes.ground_truth("queue", {"jobs_at_once": 3, "job_ms": 200}, sizing)
    assert queue["capacity_rps_per_task"] == pytest.approx(15.0)
    shared = archetypes.ground_truth("shared", {"downstream_capacity": 8, "downstream_ms": 100}, sizing)
    assert shared["capacity_rps_per_task"] == pytest.approx(20.0)  # 80 req/s shared by 4 tasks
    assert shared["capacity_rps_service"] == pytest.approx(80.0)
    assert shared["expected_metric"] is None and shared["expected_verdict"] == "no_task_level_metric"


def test_parameters_that_change_the_pattern_are_flagged():
    sizing = archetypes.Sizing(cpu_units=256, memory_mib=256, tasks=2)
    truth = archetypes.ground_truth("workers", {"cpu_ms": 100}, sizing)
    assert truth["bottleneck"] == "cpu"
    assert "no longer behaves like the 'workers' pattern" in truth["warnings"][0]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"archetype": "nope"}, "unknown archetype 'nope'"),
        ({"archetype": "workers", "params": {"workers": -1}}, "workers must be at least 1"),
        ({"archetype": "workers", "params": {"workers": "2.5"}}, "must be a whole number"),
        ({"params": {"cpu_ms": 0}}, "cpu_ms must be greater than 0"),
        ({"params": {"cpu_ms": "fast"}}, "must be a number"),
        ({"params": {"speed": 1}}, "has no parameter speed"),
        ({"archetype": None, "command": "python -m http.server"}, "must contain {port}"),
        ({"archetype": None, "command": "serve --port {port} --db {db}"}, "uses {db}"),
        ({"archetype": None, "command": None}, "exactly one"),
        ({"tasks": 0}, "tasks must be between 1"),
        ({"cpu_units": 4}, "cpu_units must be between"),
        ({"memory_mib": True}, "memory_mib must be a whole number"),
        ({"balancer": "random"}, "balancer must be one of"),
        ({"host": "0.0.0.0"}, "127.0.0.1 only"),
        ({"health_path": "health"}, "health_path must be a path"),
    ],
)
def test_bad_specs_are_input_errors(changes, message):
    with pytest.raises(InputError, match=message.replace("{", r"\{").replace("(", r"\(")):
        spec(**changes)


def test_spec_resolves_defaults_and_builds_commands():
    resolved = spec(archetype="workers", params={"workers": "6"})
    assert resolved.params == {"workers": 6, "work_ms": 200.0, "backlog": 8, "cpu_ms": 1.0}
    argv = resolved.task_argv(8123, "http://127.0.0.1:9")
    assert argv[1:6] == ["-m", "scalefinder.loadgen.cluster.task", "serve", "--port", "8123"]
    pairs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--param"]
    assert pairs == ["workers=6", "work_ms=200.0", "backlog=8", "cpu_ms=1.0"]
    assert argv[-2:] == ["--helper-url", "http://127.0.0.1:9"]
    custom = spec(archetype=None, command="gunicorn app:app -b {host}:{port} -w {workers}", params={"workers": 3})
    assert custom.task_argv(9000, None) == ["gunicorn", "app:app", "-b", "127.0.0.1:9000", "-w", "3"]


def test_prometheus_gauges_are_parsed_and_service_wide_ones_marked():
    text = (
        "# HELP requests_total Requests.\n# TYPE requests_total counter\nrequests_total 12\n"
        "# TYPE workers_busy gauge\nworkers_busy 3\n"
        'queue_backlog{scope="service",queue="jobs"} 42 1700000000000\n'
        "untyped_thing 1.5e2\nbroken line\nnan_gauge NaN\n"
    )
    gauges = {(g.name, g.service_wide): g.value for g in parse_gauges(text)}
    assert gauges == {("workers_busy", False): 3.0, ("queue_backlog", True): 42.0, ("untyped_thing", False): 150.0}


def test_a_task_serves_its_counters_and_gauges_through_prometheus_client():
    gauges = task.Gauges()
    gauges.requests_total = 7
    gauges.gauge("workers_busy", "Workers serving a request.", lambda: 3)
    backlog = GaugeMetricFamily("queue_backlog", "Jobs waiting.", labels=["scope"])
    backlog.add_metric(["service"], 42)
    response = task.metrics_response([*gauges.families(), backlog])
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = response.body.decode()
    # the series names the local source and Prometheus read: the counter keeps its "_total"
    assert "requests_total 7.0\n" in text and "# TYPE requests_total counter" in text
    assert {(g.name, g.service_wide): g.value for g in parse_gauges(text)} == {
        ("workers_busy", False): 3.0, ("queue_backlog", True): 42.0}
