"""The Prometheus source and the cluster exporter, against a real Prometheus server on loopback."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster
from scalefinder.loadgen.cluster.process import free_port
from scalefinder.loadgen.exporter import FAMILIES, ClusterExporter
from scalefinder.loadgen.profile import load_profile
from scalefinder.loadgen.sources import prometheus
from scalefinder.loadgen.sources.prometheus import PrometheusSource, auth_headers, build, chunks, queries_for, rows_from, validate_config
from scalefinder.core import catalog
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError
from tests.cluster_helpers import Collector, ConstantLoad
from tests.prometheus_server import PrometheusServer, require_prometheus

WHERE = "sources.prometheus"
# bcrypt (cost 4) of "s3cret", for the server that demands basic auth
S3CRET_BCRYPT = "$2b$04$jGRJugt2KOfG.vOYj.sPhOgpOUybjL1oylizxI11mysdXX9np86z2"


def config(url: str, **extra) -> dict:
    return validate_config({"url": url, "step_s": 1, "settle_s": 2, "rate_window": "4s",
                            "selector": 'job="scalefinder-exporter"', **extra}, WHERE)


def local_profile_queries() -> dict:
    """The request-based queries of profiles/prometheus-local.toml."""
    profile = load_profile(Path(__file__).resolve().parents[1] / "profiles" / "prometheus-local.toml")
    return profile.sources["prometheus"]["queries"]


# -- configuration and row shaping (no server) -------------------------------------------------


def test_defaults_and_templates_fill_in():
    checked = validate_config({"url": "http://127.0.0.1:9090/", "selector": 'namespace="shop"'}, WHERE)
    assert checked["url"] == "http://127.0.0.1:9090"
    assert checked["step_s"] == 15.0 and checked["rate_window"] == "1m" and checked["task_label"] == "pod"
    queries = {q.metric: q.promql for q in queries_for(checked)}
    assert set(queries) == set(prometheus.TEMPLATES)
    assert queries[catalog.CPU_UTILIZATION].startswith(
        '100 * sum by (pod) (rate(container_cpu_usage_seconds_total{namespace="shop"}[1m]))')
    assert "$" not in "".join(queries.values())


def test_own_queries_override_and_extend_the_built_ins():
    checked = validate_config({
        "url": "http://127.0.0.1:9090", "metrics": ["cpu_utilization"], "task_label": "task",
        "queries": {"cpu_utilization": "avg by ($task_label) (my_cpu{$selector})",
                    "queue_backlog": {"query": "sum(jobs_waiting)", "unit": "jobs"}}}, WHERE)
    queries = queries_for(checked)
    assert [(q.metric, q.promql, q.unit) for q in queries] == [
        ("cpu_utilization", "avg by (task) (my_cpu{})", "percent"), ("queue_backlog", "sum(jobs_waiting)", "jobs")]


@pytest.mark.parametrize("table, key, text", [
    ({}, "url", "http:// or https://"),
    ({"url": "ftp://x"}, "url", "http:// or https://"),
    ({"url": "http://h", "rate_window": "5 minutes"}, "rate_window", "Prometheus duration"),
    ({"url": "http://h", "selector": "{job='x'}"}, "selector", "without braces"),
    ({"url": "http://h", "metrics": ["queue_backlog"]}, "metrics", "no built-in query"),
    ({"url": "http://h", "step_s": 0}, "step_s", "seconds from"),
    ({"url": "http://h", "basic_auth_user_env": "U"}, "basic_auth_user_env", "needs both"),
    ({"url": "http://h", "queries": {"x": 3}}, "queries.x", "PromQL string"),
    ({"url": "http://h", "stepp_s": 1}, "stepp_s", "unknown key"),
    ({"url": "http://admin:s3cret@h:9090"}, "url", "credentials do not belong in the URL"),
])
def test_profile_mistakes_name_the_key(table, key, text):
    with pytest.raises(ProfileError) as caught:
        validate_config(table, WHERE)
    assert f"[{WHERE}.{key}]" in str(caught.value) and text in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_per_task_series_give_task_rows_and_a_derived_service_row():
    query = prometheus.MetricQuery(catalog.CPU_UTILIZATION, "q", "percent")
    series = [{"metric": {"pod": "task-1"}, "values": [[10, "40"], [11, "NaN"]]},
              {"metric": {"pod": "task-2"}, "values": [[10, "60"], [11, "50"]]}]
    rows = rows_from(query, series, "pod")
    assert [(r["time_unix_s"], r["task"], r["value"]) for r in rows] == [
        (10.0, "", 50.0), (10.0, "task-1", 40.0), (10.0, "task-2", 60.0), (11.0, "", 50.0), (11.0, "task-2", 50.0)]
    backlog = prometheus.MetricQuery(catalog.QUEUE_BACKLOG, "q", "jobs")
    assert [r["value"] for r in rows_from(backlog, series[1:] + [{"metric": {"pod": "task-3"}, "values": [[11, "5"]]}],
                                          "pod") if not r["task"]] == [60.0, 55.0]


def test_long_windows_are_split_below_the_point_limit():
    spans = chunks(0.5, 25_000, 1.0)
    assert spans[0] == (1.0, 10_000.0) and spans[-1][1] == 25_000.0
    assert all((end - start) / 1.0 + 1 <= prometheus.MAX_POINTS_PER_QUERY for start, end in spans)
    assert sum((end - start) + 1 for start, end in spans) == 25_000


def test_credentials_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PROM_TOKEN", "abc")
    assert auth_headers(validate_config({"url": "http://h", "bearer_token_env": "PROM_TOKEN"}, WHERE)) == {
        "Authorization": "Bearer abc"}
    missing = validate_config({"url": "http://h", "basic_auth_user_env": "NO_SUCH_USER_VAR",
                               "basic_auth_password_env": "NO_SUCH_PASSWORD_VAR"}, WHERE)
    with pytest.raises(InputError, match="NO_SUCH_USER_VAR"):
        auth_headers(missing)


def test_unreachable_server_is_an_infrastructure_error():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InfrastructureError, match=f"the Prometheus server at {url} does not answer"):
        build(config(url), SimpleNamespace(cluster=None))


# -- against a real server scraping a real cluster ----------------------------------------------


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    require_prometheus()
    spec = ClusterSpec(archetype="cpu", command=None, params={"cpu_ms": 10}, tasks=2, cpu_units=256, memory_mib=256)
    with LocalCluster(spec) as cluster, ClusterExporter(cluster) as exporter:
        port = int(exporter.url.rsplit(":", 1)[1])
        with PrometheusServer(tmp_path_factory.mktemp("prom"), port) as server:
            server.wait_for_targets(3)  # the exporter and both tasks through service discovery
            yield SimpleNamespace(cluster=cluster, exporter=exporter, server=server)


@pytest.mark.prometheus
@pytest.mark.load
def test_prometheus_agrees_with_the_local_source(scraped):
    cluster, server = scraped.cluster, scraped.server
    collector = Collector()
    local = cluster.metric_source(interval_s=1.0)
    local.start(collector)
    try:
        started = time.time()
        with ConstantLoad(cluster.url, rate_rps=24, duration_s=12):
            time.sleep(12)
    finally:
        local.stop()
    window = (started + 5, started + 11)
    source = build(config(server.url, queries=local_profile_queries()), SimpleNamespace(cluster=None))
    rows = source.fetch(*window)
    assert source.settle_s == 2 and {row["source"] for row in rows} == {"prometheus"}

    def mean(table, metric, task=""):
        values = [r["value"] for r in table if r["metric"] == metric and r["task"] == task
                  and window[0] <= r["time_unix_s"] <= window[1]]
        assert values, f"no {metric} rows for task {task!r}"
        return statistics.fmean(values)

    for metric in (catalog.CPU_UTILIZATION, catalog.MEMORY_UTILIZATION, "network_rx_bytes_per_s",
                   catalog.REQUESTS_PER_TASK, catalog.CONCURRENCY_PER_TASK):
        for task in ["", *cluster.running_tasks()]:
            measured, expected = mean(rows, metric, task), mean(collector.rows, metric, task)
            assert abs(measured - expected) <= 0.05 * expected, (metric, task, measured, expected)
    assert 20 < mean(collector.rows, catalog.CPU_UTILIZATION) < 95  # the load was really measured
    assert mean(rows, catalog.RUNNING_TASK_COUNT) == 2 and mean(rows, "memory_used_mib") > 0
    described = source.describe()
    # the preflight: one range each, one raw read per rate's series (5), four resource queries;
    # then the fetch: one range each
    assert described["api_calls"] == 2 * (len(prometheus.TEMPLATES) + 2) + 5 + 4
    assert set(described["scrape_interval_s"].values()) == {1.0}
    assert described["resources"]["cpu_limit_cores"] == 0.25


@pytest.mark.prometheus
def test_task_gauges_are_scraped_through_service_discovery(scraped):
    with urllib.request.urlopen(scraped.cluster.task_views()[0].url + "/metrics", timeout=2) as reply:
        gauges = reply.read().decode()
    name = next(line.split()[2] for line in gauges.splitlines() if line.startswith("# TYPE"))
    source = PrometheusSource(config(scraped.server.url, metrics=[],
                                     queries={name: f'{name}{{job="scalefinder-tasks"}}'}))
    scraped.server.wait_for_targets(3)
    expected = {"", *scraped.cluster.running_tasks()}
    # A target just discovered has its first scrape up to a scrape interval later.
    deadline, tasks = time.monotonic() + 15, set()
    while tasks != expected and time.monotonic() < deadline:
        try:
            tasks = {row["task"] for row in source.fetch(time.time() - 8, time.time())}
        except InfrastructureError:
            pass  # no sample yet
        time.sleep(0.5)
    assert tasks == expected


@pytest.mark.prometheus
def test_a_bad_query_shows_prometheus_own_message(scraped):
    with pytest.raises(InfrastructureError) as caught:
        build(config(scraped.server.url, queries={"broken": "sum(rate(x[1m]"}), SimpleNamespace(cluster=None))
    assert "rejected the query for broken" in str(caught.value) and "parse error" in str(caught.value)
    assert "sum(rate(x[1m]" in str(caught.value)


@pytest.mark.prometheus
def test_an_empty_result_names_the_query(scraped):
    source = PrometheusSource(config(scraped.server.url, metrics=[], queries={"ghost": "no_such_metric_at_all"}))
    with pytest.raises(InfrastructureError, match="no data for ghost.*Query: no_such_metric_at_all"):
        source.fetch(time.time() - 5, time.time())


@pytest.mark.prometheus
def test_one_metric_without_data_costs_only_that_metric(scraped):
    source = PrometheusSource(config(scraped.server.url, metrics=["memory_used_mib"],
                                     queries={"ghost": "no_such_metric_at_all"}))
    scraped.server.wait_for_targets(3)
    rows = source.fetch(time.time() - 8, time.time())
    assert {row["metric"] for row in rows} == {"memory_used_mib"}
    assert len(source.warnings) == 1 and "no data for ghost" in source.warnings[0]


@pytest.mark.prometheus
def test_the_exporter_serves_cadvisor_names_and_discovery(scraped):
    with urllib.request.urlopen(scraped.exporter.url + "/metrics", timeout=2) as reply:
        assert reply.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = reply.read().decode()
    samples = {(sample.name, sample.labels["pod"], sample.labels["task"], sample.labels["container"]): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    for name in FAMILIES:  # the exact series names the built-in queries ask for, "_total" included
        for task in scraped.cluster.running_tasks():
            assert (name, task, task, "task") in samples, name
    assert {name for name, *_ in samples} == set(FAMILIES)
    assert samples[("container_spec_cpu_quota", "task-1", "task-1", "task")] == 25000.0
    assert samples[("container_spec_memory_limit_bytes", "task-1", "task-1", "task")] == 256 * 2**20
    with urllib.request.urlopen(scraped.exporter.url + "/targets", timeout=2) as reply:
        groups = json.loads(reply.read())
    assert [g["labels"]["pod"] for g in groups] == scraped.cluster.running_tasks()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(scraped.exporter.url + "/nothing", timeout=2)


@pytest.mark.prometheus
def test_basic_auth_from_the_environment(tmp_path, monkeypatch):
    with PrometheusServer(tmp_path, free_port(), users={"scalefinder": ("s3cret", S3CRET_BCRYPT)}) as server:
        monkeypatch.setenv("PROM_USER", "scalefinder")
        monkeypatch.setenv("PROM_PASSWORD", "s3cret")
        table = config(server.url, metrics=[], queries={"one": "vector(1)"},
                       basic_auth_user_env="PROM_USER", basic_auth_password_env="PROM_PASSWORD")
        source = build(table, SimpleNamespace(cluster=None))
        assert "s3cret" not in json.dumps(source.describe())
        monkeypatch.setenv("PROM_PASSWORD", "wrong")
        with pytest.raises(InfrastructureError, match="refused the credentials"):
            build(table, SimpleNamespace(cluster=None))


@pytest.mark.processes
def test_run_with_an_unreachable_server_exits_3_before_any_load(tmp_path):
    root = Path(__file__).resolve().parents[1]
    text = (root / "profiles" / "prometheus-local.toml").read_text()
    dead = free_port()
    text = text.replace('url = "http://127.0.0.1:9090"', f'url = "http://127.0.0.1:{dead}"')
    text = text.replace("exporter_port = 9101", f"exporter_port = {free_port()}")
    profile = tmp_path / "profile.toml"
    profile.write_text(text)
    result = subprocess.run([sys.executable, "-m", "scalefinder.cli", "run", str(profile), "--out",
                             str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"the Prometheus server at http://127.0.0.1:{dead} does not answer" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
