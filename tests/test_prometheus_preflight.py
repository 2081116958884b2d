"""The Prometheus source's preflight: what ``check`` refuses before any load is sent.

Fast tests answer the source's API calls from canned data (``_api`` replaced, as in
test_oom_events.py); the last test runs ``scalefinder run`` against a real Prometheus server.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scalefinder.loadgen.cluster.process import free_port
from scalefinder.loadgen.exporter import render_metrics
from scalefinder.loadgen.sources import prometheus
from scalefinder.loadgen.sources.prometheus import (
    PrometheusSource,
    range_selectors,
    validate_config,
)
from scalefinder.core import catalog
from scalefinder.core.errors import InfrastructureError, InputError
from tests.prometheus_server import PrometheusServer

ROOT = Path(__file__).resolve().parents[1]
SELECTOR = 'namespace="shop", container="web"'


def config(**extra) -> dict:
    return validate_config({"url": "http://127.0.0.1:9", "step_s": 15, "settle_s": 0, "rate_window": "1m",
                            "selector": SELECTOR, **extra}, "sources.prometheus")


def range_answer(params: dict, value: float = 1.0, pods=("web-1", "web-2")) -> dict:
    """A matrix over the query_range's whole span, one series per pod (a service series without pods)."""
    start, end, step = float(params["start"]), float(params["end"]), float(params["step"])
    stamps = [start + i * step for i in range(int(round((end - start) / step)) + 1)]
    labels = [{"pod": pod} for pod in pods] or [{}]
    return {"resultType": "matrix",
            "result": [{"metric": label, "values": [[t, str(value)] for t in stamps]} for label in labels]}


def raw_samples(interval_s: float, count: int = 20, now: float = 1_000_000.0) -> dict:
    """What ``selector[5m]`` answers: each pod's raw samples, ``interval_s`` apart."""
    return {"resultType": "matrix",
            "result": [{"metric": {"pod": pod}, "values": [[now - i * interval_s + offset, "7"]
                                                           for i in reversed(range(count))]}
                       for pod, offset in (("web-1", 0.0), ("web-2", 0.4))]}


def vector(*values_and_labels) -> dict:
    return {"resultType": "vector",
            "result": [{"metric": labels, "value": [1_000_000.0, str(value)]} for value, labels in values_and_labels]}


class Canned:
    """Stands in for ``PrometheusSource._api``: ``respond(endpoint, promql, params)`` answers, and
    every call is kept as ``(endpoint, promql)``."""

    def __init__(self, source: PrometheusSource, respond):
        self.calls: list[tuple[str, str]] = []
        self.respond = respond
        source._api = self

    def __call__(self, endpoint, params, query):
        self.calls.append((endpoint, params["query"]))
        answer = self.respond(endpoint, params["query"], params)
        if isinstance(answer, Exception):
            raise answer
        return answer


def healthy(interval_s: float = 15.0, resources=None):
    """A Prometheus whose every query has data, scraping every ``interval_s``."""
    resources = resources or {}

    def respond(endpoint, promql, params):
        if endpoint == "query_range":
            return range_answer(params, value=2.0 if promql.startswith("count(") else 1.0,
                                pods=() if promql.startswith("count(") else ("web-1", "web-2"))
        if promql.endswith("[5m]"):
            return raw_samples(interval_s)
        for needle, answer in resources.items():
            if needle in promql:
                return answer
        return vector()
    return respond


# -- every query has recent data ---------------------------------------------------------------


def test_a_healthy_server_passes_and_each_query_is_asked_once_over_a_recent_window():
    source = PrometheusSource(config())
    api = Canned(source, healthy())
    source.check()
    ranges = [(promql, endpoint) for endpoint, promql in api.calls if endpoint == "query_range"]
    assert [promql for promql, _ in ranges] == [q.promql for q in source.queries]
    # the three rates read three distinct series: one raw read each
    raw = [promql for endpoint, promql in api.calls if promql.endswith("[5m]")]
    assert raw == [f"container_cpu_usage_seconds_total{{{SELECTOR}}}[5m]",
                   f"container_network_receive_bytes_total{{{SELECTOR}}}[5m]",
                   f"container_network_transmit_bytes_total{{{SELECTOR}}}[5m]"]
    assert source.describe()["scrape_interval_s"] == {catalog.CPU_UTILIZATION: 15.0, "network_rx_bytes_per_s": 15.0,
                                                      "network_tx_bytes_per_s": 15.0}


def test_a_built_in_query_without_data_is_an_input_error_naming_the_metric_and_its_query():
    source = PrometheusSource(config(metrics=[catalog.CPU_UTILIZATION, catalog.MEMORY_UTILIZATION]))
    respond = healthy()
    api = Canned(source, lambda e, q, p: {"resultType": "matrix", "result": []} if "working_set" in q
                 else respond(e, q, p))
    with pytest.raises(InputError) as caught:
        source.check()
    message = str(caught.value)
    assert caught.value.exit_code == 2
    memory = next(q for q in source.queries if q.metric == catalog.MEMORY_UTILIZATION)
    assert f"{catalog.MEMORY_UTILIZATION} (query: {memory.promql})" in message
    assert "selector" in message and "task_label" in message and "scrape" in message
    assert f"{catalog.CPU_UTILIZATION} (" not in message  # only the empty one is named
    assert not [promql for _, promql in api.calls if promql.endswith("[5m]")]  # nothing more is asked


def test_an_own_query_without_data_yet_is_only_logged(caplog):
    """A profile's own query may have data only under load (errors, a queue empty when idle):
    the run goes on, and the read after the run warns if it stays empty."""
    source = PrometheusSource(config(queries={"ghost": "sum(no_such_metric{$selector})"}))
    respond = healthy()
    Canned(source, lambda e, q, p: {"resultType": "matrix", "result": []} if "no_such" in q
           else respond(e, q, p))
    with caplog.at_level("WARNING"):
        source.check()
    assert "no data before the load for ghost" in caplog.text
    assert not source.warnings  # the warning that reaches the run comes from the read after it


def test_a_selector_matching_nothing_names_every_query():
    source = PrometheusSource(config(metrics=[catalog.CPU_UTILIZATION, catalog.RUNNING_TASK_COUNT]))
    Canned(source, lambda e, q, p: {"resultType": "matrix", "result": []})
    with pytest.raises(InputError) as caught:
        source.check()
    assert all(f"{q.metric} (query: {q.promql})" in str(caught.value) for q in source.queries)


def test_a_rejected_query_is_still_an_infrastructure_error_even_when_others_are_empty():
    source = PrometheusSource(config(queries={"broken": "sum(rate(x[1m]"}))
    Canned(source, lambda e, q, p: InfrastructureError("Prometheus rejected the query for broken: parse error")
           if q.startswith("sum(rate(x") else {"resultType": "matrix", "result": []})
    with pytest.raises(InfrastructureError, match="rejected the query for broken"):
        source.check()


def test_with_the_local_exporter_it_waits_for_the_first_scrapes(monkeypatch):
    monkeypatch.setattr(prometheus, "FIRST_DATA_POLL_S", 0.01)
    exporter = SimpleNamespace(url="http://127.0.0.1:9101", stop=lambda: None)
    source = PrometheusSource(config(metrics=[catalog.MEMORY_UTILIZATION, catalog.RUNNING_TASK_COUNT]),
                              exporter=exporter)
    assert source.first_data_wait_s >= prometheus.FIRST_DATA_WAIT_S
    respond = healthy()
    polls = {"n": 0}

    def counted_from_the_third_poll(endpoint, promql, params):
        if endpoint == "query_range" and promql.startswith("count("):
            polls["n"] += 1
            if polls["n"] < 3:
                return {"resultType": "matrix", "result": []}
        return respond(endpoint, promql, params)

    api = Canned(source, counted_from_the_third_poll)
    source.check()
    assert polls["n"] == 3
    # a query that has its data is not asked again while the others are awaited
    assert sum(1 for e, q in api.calls if e == "query_range" and not q.startswith("count(")) == 1

    source = PrometheusSource(config(metrics=[catalog.MEMORY_UTILIZATION]), exporter=exporter)
    source.first_data_wait_s = 0.05
    Canned(source, lambda e, q, p: {"resultType": "matrix", "result": []})
    with pytest.raises(InputError, match=r"after waiting 0\.05 s for Prometheus to scrape the exporter at "
                                         r"http://127\.0\.0\.1:9101\) for memory_utilization"):
        source.check()


# -- the replica count -------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    "zero",      # the count is 0 now
    "ended",     # the count had a value, but its series ended before now
])
def test_a_replica_count_below_one_now_is_an_input_error(answer):
    source = PrometheusSource(config(metrics=[catalog.MEMORY_UTILIZATION, catalog.RUNNING_TASK_COUNT]))
    respond = healthy()

    def replicas(endpoint, promql, params):
        if endpoint == "query_range" and promql.startswith("count("):
            data = range_answer(params, value=0.0 if answer == "zero" else 2.0, pods=())
            if answer == "ended":
                data["result"][0]["values"] = data["result"][0]["values"][:-2]
            return data
        return respond(endpoint, promql, params)

    Canned(source, replicas)
    with pytest.raises(InputError) as caught:
        source.check()
    count_query = next(q.promql for q in source.queries if q.metric == catalog.RUNNING_TASK_COUNT)
    assert "running_task_count answers 0 now" in str(caught.value)
    assert str(caught.value).endswith(f"Query: {count_query}")


def test_a_replica_count_from_per_task_series_is_their_total():
    source = PrometheusSource(config(metrics=[catalog.RUNNING_TASK_COUNT],
                                     queries={catalog.RUNNING_TASK_COUNT: "up{$selector}"}))
    Canned(source, lambda e, q, p: range_answer(p, value=1.0) if e == "query_range" else vector())
    source.check()  # two pods up: 2


# -- the rate window against the measured scrape interval ----------------------------------------


def test_range_selectors_are_found_after_substitution():
    cpu = [q.promql for q in prometheus.queries_for(config()) if q.metric == catalog.CPU_UTILIZATION][0]
    assert range_selectors(cpu, "1m") == [f"container_cpu_usage_seconds_total{{{SELECTOR}}}"]
    promql = ('rate(a[1m]) + rate(a[1m]) + rate({__name__="b", x="}["}[1m]) '
              '+ max_over_time(c[1m:15s]) + rate(d[10m]) + rate(e{f="g"} [ 1m ])')
    assert range_selectors(promql, "1m") == ["a", '{__name__="b", x="}["}', 'e{f="g"}']


@pytest.mark.parametrize("interval_s, window, refused", [
    (15.0, "1m", False),     # exactly four scrapes
    (15.0, "2m", False),
    (15.0, "45s", True),
    (15.2, "1m", False),     # a measured 15.2 s is within the 2% of slack
    (30.0, "1m", True),
    (1.0, "3s", True),       # the local cluster's one-second scrapes
    (1.0, "4s", False),
])
def test_the_rate_window_must_span_four_measured_scrape_intervals(interval_s, window, refused):
    source = PrometheusSource(config(rate_window=window, metrics=[catalog.CPU_UTILIZATION]))
    api = Canned(source, healthy(interval_s))
    if not refused:
        source.check()
        assert source.describe()["scrape_interval_s"] == {catalog.CPU_UTILIZATION: interval_s}
        return
    with pytest.raises(InputError) as caught:
        source.check()
    message = str(caught.value)
    needed = prometheus.prometheus_duration(4 * interval_s)
    assert f"the rate window {window} " in message
    assert (f"cpu_utilization reads container_cpu_usage_seconds_total{{{SELECTOR}}}, scraped every {interval_s:g} s"
            in message)
    assert f'set sources.prometheus.rate_window to at least "{needed}"' in message
    assert f"(query: {source.queries[0].promql})" in message
    assert not [q for e, q in api.calls if "resource" in q]  # refused before the resources are read


def test_the_interval_is_the_median_spacing_so_one_gap_does_not_move_it():
    source = PrometheusSource(config(rate_window="1m", metrics=["network_rx_bytes_per_s"]))
    samples = raw_samples(15.0)
    values = samples["result"][0]["values"]
    samples["result"][0]["values"] = values[:5] + values[9:]  # a minute of missed scrapes
    respond = healthy()
    Canned(source, lambda e, q, p: samples if q.endswith("[5m]") else respond(e, q, p))
    source.check()
    assert source.scrape_intervals_s == {"network_rx_bytes_per_s": 15.0}


def test_own_queries_over_the_window_are_checked_and_other_windows_are_not():
    own = {"requests_per_task": "sum by (pod) (rate(http_requests_total{$selector}[$window]))",
           "errors": "sum(rate(http_errors_total[5m]))"}
    source = PrometheusSource(config(rate_window="1m", metrics=[], queries=own))
    api = Canned(source, healthy(interval_s=30.0))
    with pytest.raises(InputError, match=r"rate window 1m .* requests_per_task reads .* every 30 s") as caught:
        source.check()
    assert "errors" not in str(caught.value)
    assert [q for e, q in api.calls if q.endswith("[5m]")] == [f"http_requests_total{{{SELECTOR}}}[5m]"]


def test_without_raw_samples_the_window_is_not_checked_and_a_line_is_logged(caplog):
    source = PrometheusSource(config(rate_window="15s", metrics=[catalog.CPU_UTILIZATION]))
    respond = healthy()
    single = {"resultType": "matrix", "result": [{"metric": {"pod": "web-1"}, "values": [[1000.0, "1"]]}]}
    for raw in ({"resultType": "matrix", "result": []}, single, InfrastructureError("HTTP 503")):
        Canned(source, lambda e, q, p, raw=raw: raw if q.endswith("[5m]") else respond(e, q, p))
        with caplog.at_level(logging.INFO, logger=prometheus.__name__):
            caplog.clear()
            source.check()
        assert "no raw samples to measure the scrape interval of cpu_utilization" in caplog.text
        assert source.scrape_intervals_s == {}


# -- requests and limits ---------------------------------------------------------------------------


def test_requests_and_limits_are_read_from_kube_state_metrics():
    resources = {
        'requests{resource="cpu"': vector((0.25, {"pod": "web-1", "container": "web"}),
                                          (0.25, {"pod": "web-2", "container": "web"}),
                                          (0.5, {"pod": "web-0", "container": "web"})),  # an older spec
        'requests{resource="memory"': vector((268435456, {"pod": "web-1", "container": "web"})),
        'limits{resource="cpu"': vector((1, {"pod": "web-1", "container": "web"})),
        'limits{resource="memory"': vector((536870912, {"pod": "web-1", "container": "web"})),
    }
    source = PrometheusSource(config(metrics=[catalog.MEMORY_UTILIZATION]))
    api = Canned(source, healthy(resources=resources))
    source.check()
    assert source.describe()["resources"] == {
        "cpu_request_cores": 0.25, "memory_request_bytes": 268435456.0, "cpu_limit_cores": 1.0,
        "memory_limit_bytes": 536870912.0, "source": "kube-state-metrics via Prometheus"}
    asked = [q for e, q in api.calls if "resource=" in q]
    assert asked[0] == f'kube_pod_container_resource_requests{{resource="cpu", {SELECTOR}}}'
    assert not [q for e, q in api.calls if e == "query" and "container_spec" in q]  # no fallback needed


def test_absent_resources_are_none_and_limits_fall_back_to_cadvisor():
    source = PrometheusSource(config(metrics=[catalog.MEMORY_UTILIZATION]))
    Canned(source, healthy())
    source.check()
    assert source.describe()["resources"] == {
        "cpu_request_cores": None, "memory_request_bytes": None, "cpu_limit_cores": None,
        "memory_limit_bytes": None, "source": "kube-state-metrics via Prometheus"}

    cadvisor = {"container_spec_cpu_quota": vector((0.5, {"pod": "web-1", "container": "web"}),
                                                   (2.0, {"pod": "web-1", "container": ""})),  # the pod's own cgroup
                "container_spec_memory_limit_bytes": vector((1e9, {"pod": "web-1", "container": "web"}))}
    source = PrometheusSource(config(metrics=[catalog.MEMORY_UTILIZATION], selector=""))
    api = Canned(source, healthy(resources=cadvisor))
    source.check()
    assert source.describe()["resources"] == {
        "cpu_request_cores": None, "memory_request_bytes": None, "cpu_limit_cores": 0.5,
        "memory_limit_bytes": 1e9, "source": "cAdvisor via Prometheus"}
    assert 'kube_pod_container_resource_limits{resource="cpu"}' in [q for _, q in api.calls]  # no stray comma


def test_a_failing_resource_query_is_a_warning_never_fatal():
    respond = healthy(resources={'limits{resource="memory"': vector((1e9, {"pod": "web-1", "container": "web"}))})
    source = PrometheusSource(config(metrics=[catalog.MEMORY_UTILIZATION]))
    Canned(source, lambda e, q, p: InfrastructureError("Prometheus failed the query: timeout")
           if 'requests{resource="cpu"' in q else respond(e, q, p))
    source.check()
    assert source.describe()["resources"]["cpu_request_cores"] is None
    assert source.describe()["resources"]["memory_limit_bytes"] == 1e9
    assert len(source.warnings) == 1 and "cpu_request_cores could not be read" in source.warnings[0]


def test_the_local_exporter_publishes_limits_as_kube_state_metrics_does():
    view = SimpleNamespace(task_id="task-1", port=1)
    cluster = SimpleNamespace(spec=SimpleNamespace(cpu_units=512, memory_mib=256),
                              balancer_report=lambda: {"targets": {}}, task_views=lambda: [view],
                              usage=lambda v: SimpleNamespace(cpu_s=1.0, rss_bytes=1000),
                              task_counters=lambda task: {"oom_kills": 0, "restarts": 0})
    limits = {(sample.labels["resource"], sample.labels["unit"]): (sample.labels, sample.value)
              for family in text_string_to_metric_families(render_metrics(cluster))
              if family.name == "kube_pod_container_resource_limits" for sample in family.samples}
    assert {key: value for key, (_, value) in limits.items()} == {("cpu", "core"): 0.5,
                                                                  ("memory", "byte"): 256 * 2**20}
    assert all(labels["pod"] == labels["task"] == "task-1" and labels["container"] == "task"
               for labels, _ in limits.values())
    assert "kube_pod_container_resource_requests" not in render_metrics(cluster)


# -- a real run: refused before any load ------------------------------------------------------------


@pytest.mark.prometheus
@pytest.mark.processes
def test_a_run_whose_selector_matches_nothing_exits_2_before_any_load(tmp_path):
    exporter_port = free_port()
    with PrometheusServer(tmp_path, exporter_port) as server:
        text = (ROOT / "profiles" / "prometheus-local.toml").read_text()
        text = text.replace('url = "http://127.0.0.1:9090"', f'url = "{server.url}"')
        text = text.replace("exporter_port = 9101", f"exporter_port = {exporter_port}")
        text = text.replace("selector = 'job=\"scalefinder-exporter\"'", "selector = 'job=\"no-such-job\"'")
        profile = tmp_path / "profile.toml"
        profile.write_text(text)
        result = subprocess.run([sys.executable, "-m", "scalefinder.cli", "run", str(profile), "--out",
                                 str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert 'cpu_utilization (query: 100 * sum by (pod) (rate(container_cpu_usage_seconds_total{job="no-such-job"}[4s]))' \
        in errors[0] and "no load was sent" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # no run directory: the run never got to its first step
