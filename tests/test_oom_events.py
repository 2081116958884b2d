"""OOM kills and process restarts inside a running task, as events: the kernel's counters, the
process-tree watch, the exporter's series and the Prometheus source. No processes are started."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scalefinder.loadgen.cluster import supervisor as supervisor_module
from scalefinder.loadgen.cluster.cgroups import MODE_V1, MODE_V2, TaskCgroup, parse_oom_kills
from scalefinder.loadgen.cluster.supervisor import Supervisor
from scalefinder.loadgen.exporter import render_metrics
from scalefinder.loadgen.sources import prometheus
from scalefinder.loadgen.sources.prometheus import PrometheusSource, events_from, validate_config
from scalefinder.core.errors import InfrastructureError, ProfileError
from scalefinder.core.rundir import RunDirectory, RunWriter

V1_OOM_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
V2_MEMORY_EVENTS = "low 0\nhigh 0\nmax 41\noom 5\noom_kill 2\noom_group_kill 1\n"


# -- the kernel's counter ---------------------------------------------------------------------


def test_the_oom_kill_line_is_read_from_v1_and_v2_files():
    assert parse_oom_kills(V1_OOM_CONTROL) == 3
    # v2's "oom" (the limit was hit) and "oom_group_kill" are other counts
    assert parse_oom_kills(V2_MEMORY_EVENTS) == 2
    assert parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n") is None  # a kernel before 4.13
    assert parse_oom_kills("oom_kill x\n") is None


def test_a_task_cgroup_reads_its_own_file_by_mode(tmp_path):
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    (v1 / "memory.oom_control").write_text(V1_OOM_CONTROL)
    (v2 / "memory.events").write_text(V2_MEMORY_EVENTS)
    assert TaskCgroup(MODE_V1, {"memory": v1, "cpu": tmp_path}).oom_kills() == 3
    assert TaskCgroup(MODE_V2, {"unified": v2}).oom_kills() == 2
    assert TaskCgroup(MODE_V1, {"memory": tmp_path / "gone"}).oom_kills() == 0  # removed meanwhile


def fake_task(cgroup=None, pid=100):
    return SimpleNamespace(task_id="task-1", incarnation=2, cgroup=cgroup, oom_kills_seen=0, members=None,
                           ended=supervisor_module.deque(), process=SimpleNamespace(pid=pid))


def test_an_oom_kill_event_only_when_the_count_goes_up(tmp_path):
    (tmp_path / "memory.oom_control").write_text("oom_kill 0\n")
    task = fake_task(TaskCgroup(MODE_V1, {"memory": tmp_path}))
    watch = Supervisor(None, None, None, tmp_path, None)
    assert watch.oom_events(task) == []
    (tmp_path / "memory.oom_control").write_text("oom_kill 2\n")
    assert watch.oom_events(task) == [("oom_kill", {"task": "task-1", "incarnation": 2, "count": 2, "total": 2})]
    assert watch.oom_events(task) == []
    (tmp_path / "memory.oom_control").write_text("oom_kill 3\n")
    assert watch.oom_events(task)[0][1]["count"] == 1
    assert watch.oom_events(fake_task(cgroup=None)) == []  # unenforced: no kernel counter


# -- process restarts in the tree ---------------------------------------------------------------


def proc(pid, parent):
    return SimpleNamespace(pid=pid, ppid=lambda: parent)


def test_a_worker_replaced_by_its_parent_is_a_process_restart(monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr(supervisor_module.time, "monotonic", lambda: clock["now"])
    watch = Supervisor(None, None, None, None, None)
    task = fake_task(pid=100)
    master, workers = proc(100, 1), [proc(101, 100), proc(102, 100)]

    def look(processes, after_s=0.2):
        clock["now"] += after_s
        return watch._restarts(task, processes)

    assert look([master, *workers]) == []  # the first look only learns the tree
    assert look([master, *workers], after_s=2.0) == []
    # a helper run for one request comes and goes: no restart, neither when it ends
    assert look([master, *workers, proc(150, 101)]) == []
    assert look([master, *workers, proc(151, 101)]) == []
    # worker 101 is killed and the master forks 103
    events = look([master, workers[1], proc(103, 100)])
    assert events == [("process_restart", {"task": "task-1", "incarnation": 2, "pid_gone": 101, "pid_new": 103,
                                           "parent_pid": 100})]
    # a worker that ends, replaced a look later, is still paired
    assert look([master, proc(103, 100)], after_s=1.5) == []
    assert look([master, proc(103, 100), proc(104, 100)])[0][1]["pid_gone"] == 102
    # a process that ends with no replacement within the window is not a restart
    assert look([master], after_s=1.5) == []
    assert look([master, proc(105, 100)], after_s=supervisor_module.REPLACEMENT_WITHIN_S + 1) == []


# -- the exporter ---------------------------------------------------------------------------------


def test_the_exporter_serves_oom_and_restart_counters_per_task():
    view = SimpleNamespace(task_id="task-1", port=1)
    cluster = SimpleNamespace(
        spec=SimpleNamespace(cpu_units=256, memory_mib=256),
        balancer_report=lambda: {"targets": {}}, task_views=lambda: [view],
        usage=lambda v: SimpleNamespace(cpu_s=1.0, rss_bytes=2**20, read_bytes=0, write_bytes=0),
        task_counters=lambda task_id: {"oom_kills": 4, "restarts": 1})
    text = render_metrics(cluster)
    assert "# TYPE container_oom_events_total counter" in text
    labels = {"pod": "task-1", "task": "task-1", "container": "task"}
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    # the series names the Prometheus source's event queries ask for, "_total" included
    assert samples[("container_oom_events_total", tuple(sorted(labels.items())))] == 4.0
    assert samples[("kube_pod_container_status_restarts_total", tuple(sorted(labels.items())))] == 1.0


# -- the Prometheus source ------------------------------------------------------------------------


def test_increases_of_a_counter_become_events():
    series = [
        # present from the start at 2: the baseline, then +1, a reset to 1 (a new container), +2
        {"metric": {"pod": "web-1", "container": "web"}, "values": [[100, "2"], [115, "3"], [130, "3"], [145, "1"],
                                                                    [160, "3"]]},
        # the pod's own cgroup repeats the container's counts: ignored beside a container series
        {"metric": {"pod": "web-1", "container": ""}, "values": [[100, "2"], [115, "3"]]},
        # a pod started during the window: its first value counts from zero
        {"metric": {"pod": "web-2", "container": "web"}, "values": [[130, "1"], [145, "1"]]},
        {"metric": {"pod": "web-3", "container": "web"}, "values": [[100, "0"], [115, "NaN"], [130, "0"]]},
    ]
    events = events_from("oom_kill", series, "pod", first_s=100.0)
    assert [(e["task"], e["time_unix_s"], e["count"], e["earliest_unix_s"]) for e in events] == [
        ("web-1", 115.0, 1, 100.0), ("web-2", 130.0, 1, 100.0), ("web-1", 145.0, 1, 130.0),
        ("web-1", 160.0, 2, 145.0)]
    assert all(e["kind"] == "oom_kill" and e["source"] == "prometheus" and e["container"] == "web" for e in events)
    # a task with only pod-level series is still read
    only_pod = [{"metric": {"pod": "web-4", "container": ""}, "values": [[100, "0"], [115, "1"]]}]
    assert [e["task"] for e in events_from("oom_kill", only_pod, "pod", 100.0)] == ["web-4"]


def matrix(*series):
    return {"resultType": "matrix", "result": list(series)}


def canned_source(answers, on_event, **extra):
    """A source whose API answers from ``answers`` (a query-substring -> data) and records the calls."""
    config = validate_config({"url": "http://127.0.0.1:9", "step_s": 15, "settle_s": 0, "rate_window": "15s",
                              "selector": 'namespace="shop"', "metrics": ["memory_used_mib"], **extra}, "p")
    source = PrometheusSource(config, on_event=on_event)
    calls = []

    def api(endpoint, params, query):
        calls.append(params["query"])
        source.api_calls += 1
        for needle, data in answers.items():
            if needle in params["query"]:
                if isinstance(data, Exception):
                    raise data
                return data
        return matrix()

    source._api = api
    return source, calls


def test_the_source_turns_an_increase_of_container_oom_events_total_into_events(tmp_path):
    memory = matrix({"metric": {"pod": "web-1"}, "values": [[1005, "200"], [1020, "250"], [1035, "120"]]})
    ooms = matrix({"metric": {"pod": "web-1", "container": "web", "namespace": "shop"},
                   "values": [[1005, "0"], [1020, "0"], [1035, "1"]]})
    restarts = matrix({"metric": {"pod": "web-1", "container": "web"}, "values": [[1005, "4"], [1035, "5"]]})
    writer = RunWriter.create(tmp_path / "run", {})
    source, calls = canned_source({"working_set": memory, "container_oom_events_total": ooms,
                                   "kube_pod_container_status_restarts_total": restarts}, writer.event)
    rows = source.fetch(1000.0, 1040.0)
    writer.close()
    assert {row["metric"] for row in rows} == {"memory_used_mib"}
    assert 'container_oom_events_total{namespace="shop"}' in calls
    assert 'kube_pod_container_status_restarts_total{namespace="shop"}' in calls
    events = RunDirectory.open(tmp_path / "run").events()
    assert [(e["kind"], e["task"], e["count"], e["time_unix_s"]) for e in events] == [
        ("oom_kill", "web-1", 1, 1035.0), ("task_restart", "web-1", 1, 1035.0)]
    # written at the time of the sample that showed the increase, not when the run read it back
    assert events[0]["time_utc"].startswith("1970-01-01T00:17:15")
    assert events[0]["source"] == "prometheus" and events[0]["earliest_unix_s"] == 1020.0
    assert source.describe()["events"] == 2 and "oom_kill" in source.describe()["event_queries"]
    json.dumps(source.describe())


def test_missing_or_failing_event_series_cost_nothing_but_a_warning():
    memory = matrix({"metric": {"pod": "web-1"}, "values": [[1005, "200"]]})
    received = []
    source, _ = canned_source({"working_set": memory,
                               "container_oom_events_total": InfrastructureError("HTTP 503")},
                              lambda kind, **detail: received.append(kind))
    assert source.fetch(1000.0, 1010.0)  # the metric is kept
    assert received == []  # restarts: no kube-state-metrics series, so nothing
    assert len(source.warnings) == 1 and "oom_kill events could not be read" in source.warnings[0]


def test_without_an_event_log_or_with_events_off_no_event_query_is_sent():
    memory = matrix({"metric": {"pod": "web-1"}, "values": [[1005, "200"]]})
    for on_event, extra in ((None, {}), (lambda kind, **detail: None, {"events": False})):
        source, calls = canned_source({"working_set": memory}, on_event, **extra)
        source.fetch(1000.0, 1010.0)
        assert calls == [q.promql for q in source.queries], calls
    with pytest.raises(ProfileError, match="true or false"):
        validate_config({"url": "http://h", "events": "yes"}, "p")


def test_build_passes_the_runs_event_log_to_the_source(monkeypatch):
    monkeypatch.setattr(PrometheusSource, "check", lambda self: None)
    sink = lambda kind, **detail: None  # noqa: E731
    config = validate_config({"url": "http://127.0.0.1:9"}, "p")
    assert prometheus.build(config, SimpleNamespace(cluster=None, on_event=sink)).on_event is sink
    assert prometheus.build(config, SimpleNamespace(cluster=None)).event_queries == []
