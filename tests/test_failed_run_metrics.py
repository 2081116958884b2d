"""A failure must not lose a run's CloudWatch data, and recovery must work.

* a run whose scale-up to 2n fails still fetches CloudWatch for the steps it recorded, keeps
  its status ``failed`` and can be analyzed;
* a second SIGINT stops the fetch of an interrupted run, which stays valid and says so, and
  ``scalefinder fetch-metrics`` then fetches what was skipped;
* ``fetch-metrics`` replaces a retrospective source's rows and keeps the others; it refuses a
  run still running;
* an expired or invalid credential has its own message (exit 3), not "grant the policy";
* ``restore`` after the run's own restore failed needs no --force, and is refused again once
  it succeeded.

The AWS side is the moto server of ``tests/moto_server.py`` (the ``aws`` fixture).
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import botocore.exceptions
import pytest
from click.testing import CliRunner

from scalefinder.cli import cli
from scalefinder.core.errors import InfrastructureError
from scalefinder.core.rundir import METRIC_COLUMNS, RunDirectory, RunWriter
from scalefinder.loadgen.aws.session import call
from scalefinder.loadgen.sources import cloudwatch
from tests.moto_server import CLUSTER, SERVICE, client, seed_world

SERVICE_DIMS = [{"Name": "ClusterName", "Value": CLUSTER}, {"Name": "ServiceName", "Value": SERVICE}]
INSIGHTS = {"CpuUtilized": 128.0, "CpuReserved": 256.0, "MemoryUtilized": 64.0, "MemoryReserved": 128.0,
            "RunningTaskCount": 1.0}


APP_DIMS = [{"Name": "Service", "Value": SERVICE}]
IN_FLIGHT = 3.0


class InsightsPublisher:
    """Publishes, twice a second while the run goes, constant Container Insights datapoints for the
    service (which the source's preflight wants to see) and the application's own high-resolution
    in-flight gauge, which a one-second ``period_s`` reads inside holds of a few seconds."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, name="insights", daemon=True)

    def __enter__(self):
        self._put(client("cloudwatch"))  # before the run's preflight looks
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(timeout=30)

    def _publish(self) -> None:
        cw = client("cloudwatch")
        while not self._stop.wait(0.5):
            try:
                self._put(cw)
            except Exception as exc:  # surfaced by the test
                self.errors.append(exc)
                return

    @staticmethod
    def _put(cw) -> None:
        stamp = time.time()
        cw.put_metric_data(Namespace="ECS/ContainerInsights", MetricData=[
            {"MetricName": name, "Dimensions": SERVICE_DIMS, "Timestamp": stamp, "Value": value}
            for name, value in INSIGHTS.items()])
        cw.put_metric_data(Namespace="App", MetricData=[
            {"MetricName": "InFlight", "Dimensions": APP_DIMS, "Timestamp": stamp, "Value": IN_FLIGHT,
             "StorageResolution": 1}])


LOCAL_WITH_CLOUDWATCH = """
name = "failed-scale-up"
[target]
kind = "local"
archetype = "cpu"
cpu_units = 256
memory_mib = 128
[target.params]
cpu_ms = 1
[workload]
requests = [{{ path = "/work" }}]
max_in_flight = 20
[slo]
percentile = 95
latency_ms = 500
[ramp]
start_rps = 2
step_rps = 2
max_rps = {max_rps}
hold_s = 4
min_hold_s = 4
warmup_s = 0.5
refine = false
beyond = false
max_duration_s = 120
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 1
[sources.cloudwatch]
cluster = "{cluster}"
service = "{service}"
period_s = 1
minute_s = 1                 # CloudWatch's minute compressed to a second: moto on 127.0.0.1 only
settle_s = {settle_s}
load_balancer = false
[[sources.cloudwatch.custom_metrics]]
name = "app_in_flight"
namespace = "App"
metric_name = "InFlight"
dimensions = {{ Service = "{service}" }}
unit = "requests"
"""


def _profile(tmp_path: Path, *, max_rps: int = 6, settle_s: float = 0) -> Path:
    path = tmp_path / "failed-scale-up.toml"
    path.write_text(LOCAL_WITH_CLOUDWATCH.format(max_rps=max_rps, settle_s=settle_s, cluster=CLUSTER,
                                                 service=SERVICE))
    return path


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- a failed scale-up keeps the ramp's CloudWatch rows ----------------------------------------------


@pytest.mark.load
def test_a_failed_scale_up_keeps_the_ramps_cloudwatch_rows_and_can_be_analyzed(aws, tmp_path, monkeypatch):
    seed_world(desired=1)
    from scalefinder.loadgen.capacity.local import LocalCapacityController

    scale_to = LocalCapacityController.scale_to

    def no_room_for_a_second_task(self, count, timeout_s=None):
        if count > 1:
            raise InfrastructureError(f"no room to start {count} tasks (injected)")
        return scale_to(self, count, timeout_s)

    monkeypatch.setattr(LocalCapacityController, "scale_to", no_room_for_a_second_task)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    with InsightsPublisher() as publisher:
        result = CliRunner().invoke(cli, ["run", str(_profile(tmp_path)), "--yes", "--no-progress",
                                          "--out", str(run_dir)])
    print(f"failed run took {time.monotonic() - started:.0f} s")
    assert not publisher.errors, publisher.errors
    assert result.exit_code == 3, result.output
    assert "no room to start 2 tasks" in result.output

    run = RunDirectory.open(run_dir)
    assert run.status == "failed" and "no room to start 2 tasks" in run.manifest.status_reason
    steps = run.steps()
    assert list(steps["phase"]) == ["ramp"] * 3 and set(steps["tasks"]) == {1}
    metrics = run.metrics()
    cloud = metrics[metrics["source"] == "cloudwatch"]
    assert "app_in_flight" in set(cloud["metric"])
    assert set(metrics["source"]) == {"local", "cloudwatch"}
    # every CloudWatch row lies inside a recorded step: the ramp's windows, nothing after them
    inside = [any(start <= t <= end for start, end in zip(steps["start_unix_s"], steps["end_unix_s"]))
              for t in cloud["time_unix_s"]]
    assert all(inside) and len(inside) >= 6
    gauge = cloud[cloud["metric"] == "app_in_flight"]["value"].tolist()
    assert gauge == pytest.approx([IN_FLIGHT] * len(gauge))
    assert run.manifest.sources["cloudwatch"]["metrics"]  # the description was brought up to date
    assert run.manifest.capacity["restored"] is True  # the run put its capacity back itself

    analyzed = CliRunner().invoke(cli, ["analyze", str(run_dir)])
    assert analyzed.exit_code == 0, analyzed.output
    findings = json.loads((run_dir / "findings.json").read_text())
    assert any("the run is partial (status failed)" in warning for warning in findings["warnings"])


# -- a second SIGINT stops the fetch; fetch-metrics fetches it later ---------------------------------


def _wait_for(predicate, process: subprocess.Popen, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.load
def test_a_second_sigint_stops_the_fetch_and_fetch_metrics_recovers_it(aws, tmp_path):
    seed_world(desired=1)
    run_dir = tmp_path / "run"
    with InsightsPublisher() as publisher:
        process = subprocess.Popen(
            [sys.executable, "-m", "scalefinder.cli", "-v", "run",
             str(_profile(tmp_path, max_rps=20, settle_s=300)), "--yes", "--no-progress", "--out", str(run_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: any(e["kind"] == "step_end" for e in _events(run_dir)), process, "the first step")
            process.send_signal(signal.SIGINT)
            _wait_for(lambda: any(e["kind"] == "restore" for e in _events(run_dir)), process, "the restore")
            time.sleep(1.0)  # into the 300 s settle wait of the CloudWatch fetch
            stopped = time.monotonic()
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=60)
            took = time.monotonic() - stopped
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert not publisher.errors, publisher.errors
    assert process.returncode == 130, stderr
    assert took < 30, f"the second SIGINT took {took:.0f} s to end the run"
    assert "fetching cloudwatch metrics" in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"Error: the run was stopped by SIGINT; the partial run is in {run_dir}; its cloudwatch metrics were not "
        f"fetched: run `scalefinder fetch-metrics {run_dir}` to fetch them")

    run = RunDirectory.open(run_dir)
    assert run.status == "interrupted" and run.manifest.status_reason == "stopped by SIGINT"
    [warning] = [w for w in run.manifest.warnings if "were not fetched" in w]
    assert warning.startswith("cloudwatch metrics were not fetched: stopped by SIGINT")
    assert f"scalefinder fetch-metrics {run_dir}" in warning
    assert set(run.metrics()["source"]) == {"local"}
    assert len(run.steps()) >= 1 and _events(run_dir)[-1]["kind"] == "run_end"

    # Later: no settle wait any more (the test does not wait five minutes), and fetch-metrics
    # reads what the second SIGINT skipped.
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["profile"]["sources"]["cloudwatch"]["settle_s"] = 0
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    local_before = [row for row in _rows(run_dir) if row["source"] == "local"]
    result = CliRunner().invoke(cli, ["fetch-metrics", str(run_dir)])
    assert result.exit_code == 0, result.output
    run = RunDirectory.open(run_dir)
    assert run.status == "interrupted"
    assert not [w for w in run.manifest.warnings if "were not fetched" in w]
    rows = _rows(run_dir)
    assert [row for row in rows if row["source"] == "local"] == local_before
    assert "app_in_flight" in {row["metric"] for row in rows if row["source"] == "cloudwatch"}


# -- fetch-metrics on a finished run -------------------------------------------------------------------


def _minute_ago(minutes: int) -> int:
    return int(time.time()) // 60 * 60 - 60 * minutes


def _finished_run(path: Path, *, status: str = "failed", steps: int = 3, t0: int | None = None) -> Path:
    """A finished run with a local source and a CloudWatch source (one-minute periods): one step a
    minute from ``t0``, local rows, stale CloudWatch rows and the warning of a failed fetch."""
    t0 = _minute_ago(20) if t0 is None else t0
    config = cloudwatch.validate_config({"cluster": CLUSTER, "service": SERVICE, "settle_s": 0,
                                         "load_balancer": False}, "sources.cloudwatch")
    writer = RunWriter.create(path, {
        "profile": {"capacity": {"controller": "local", "tasks": 1, "config": {"timeout_s": 60.0}},
                    "sources": {"local": {"interval_s": 1.0}, "cloudwatch": config}},
        "target": {"kind": "local", "archetype": "cpu"},
        "capacity": {"controller": "local", "original": {"kind": "local", "tasks": 1}, "initial_tasks": 1},
        "sources": {"local": {"kind": "local", "interval_s": 1.0}, "cloudwatch": {"kind": "cloudwatch",
                                                                                  "region": "eu-west-1"}},
    })
    for i in range(steps):
        writer.append_step({"step_id": i, "phase": "ramp", "tasks": 1, "offered_rps": 2.0 * (i + 1),
                            "start_unix_s": t0 + 60 * i, "end_unix_s": t0 + 60 * (i + 1), "warmup_s": 0.5,
                            "valid": True, "slo_met": True})
        writer.append_metrics([{"time_unix_s": t0 + 60 * i + 30, "source": "local", "metric": "cpu_utilization",
                                "task": "", "value": 10.0 * (i + 1), "unit": "percent"}])
    writer.append_metrics([{"time_unix_s": t0 + 30, "source": "cloudwatch", "metric": "cpu_utilization", "task": "",
                            "value": 999.0, "unit": "percent"}])
    writer.add_warning("cloudwatch metrics could not be fetched: AWS refused the credentials (injected)")
    writer.add_warning("an unrelated warning that stays")
    writer.finish(status, "injected")
    return path


def _seed_minutes(t0: int, cpu: list[float]) -> None:
    points = []
    for i, utilized in enumerate(cpu):
        stamp = t0 + 60 * i + 7
        for name, value in [("CpuUtilized", utilized), ("CpuReserved", 256.0), ("MemoryUtilized", 64.0),
                            ("MemoryReserved", 128.0), ("RunningTaskCount", 1.0)]:
            points.append({"MetricName": name, "Dimensions": SERVICE_DIMS, "Timestamp": stamp, "Value": value})
    client("cloudwatch").put_metric_data(Namespace="ECS/ContainerInsights", MetricData=points)


def test_fetch_metrics_replaces_the_cloudwatch_rows_and_keeps_the_local_ones(aws, tmp_path):
    seed_world(desired=1)
    t0 = _minute_ago(20)
    _seed_minutes(t0, [64.0, 128.0, 192.0])
    run_dir = _finished_run(tmp_path / "run", t0=t0)
    before = _rows(run_dir)
    (run_dir / "findings.json").write_text("{}")

    result = CliRunner().invoke(cli, ["fetch-metrics", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert f"Replaced the cloudwatch metrics of {run_dir}:" in result.output
    assert "Its findings are now out of date" in result.output

    rows = _rows(run_dir)
    assert [r for r in rows if r["source"] == "local"] == [r for r in before if r["source"] == "local"]
    cpu = [(float(r["time_unix_s"]), float(r["value"])) for r in rows
           if r["source"] == "cloudwatch" and r["metric"] == "cpu_utilization"]
    assert cpu == [(t0 + 60 * i + 30, pytest.approx(25.0 * (i + 1))) for i in range(3)]  # 999 is gone
    assert list(rows[0]) == METRIC_COLUMNS and not (run_dir / "metrics.csv.refetch.tmp").exists()

    run = RunDirectory.open(run_dir)
    assert run.status == "failed"
    warnings = list(run.manifest.warnings)
    assert warnings[0] == "an unrelated warning that stays" and not [w for w in warnings if "injected" in w]
    assert all(w.startswith("cloudwatch metrics incomplete: ") for w in warnings[1:])  # this fetch's own word
    described = run.manifest.sources["cloudwatch"]
    assert described["refetched_utc"] and described["api_calls_by_operation"]["cloudwatch:GetMetricData"] == 1
    assert "cpu_utilization" in described["metrics"] and run.manifest.sources["local"]["kind"] == "local"
    assert run.events()[-1]["kind"] == "metrics_refetch" and run.events()[-1]["rows"]["cloudwatch"] == len(
        [r for r in rows if r["source"] == "cloudwatch"])


class _FakePrometheus(BaseHTTPRequestHandler):
    """Just enough of the Prometheus HTTP API: every range query has one service-level series of 7."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length") or 0)
        form = {key: values[0] for key, values in parse_qs(self.rfile.read(length).decode()).items()}
        data: dict = {"resultType": "vector", "result": []}
        if self.path.endswith("/query_range"):
            start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
            data = {"resultType": "matrix", "result": [
                {"metric": {}, "values": [[start + i * step, "7"] for i in range(int((end - start) / step) + 1)]}]}
        body = json.dumps({"status": "success", "data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args) -> None:
        pass


def test_fetch_metrics_replaces_the_prometheus_rows_without_the_preflight(tmp_path):
    from scalefinder.loadgen.sources import prometheus

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakePrometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = _minute_ago(30)  # older than any preflight's "recent data"
        config = prometheus.validate_config({"url": f"http://127.0.0.1:{server.server_address[1]}", "step_s": 15,
                                             "settle_s": 0, "rate_window": "1m"}, "sources.prometheus")
        run_dir = tmp_path / "run"
        writer = RunWriter.create(run_dir, {
            "profile": {"sources": {"local": {"interval_s": 1.0}, "prometheus": config}},
            "sources": {"prometheus": {"kind": "prometheus", "resources": {"cpu_request_cores": 0.5}}}})
        writer.append_step({"step_id": 0, "phase": "ramp", "tasks": 1, "offered_rps": 2.0, "start_unix_s": t0,
                            "end_unix_s": t0 + 120, "valid": True, "slo_met": True})
        writer.append_metrics([
            {"time_unix_s": t0 + 10, "source": "local", "metric": "cpu_utilization", "task": "", "value": 1.0,
             "unit": "percent"},
            {"time_unix_s": t0 + 10, "source": "prometheus", "metric": "cpu_utilization", "task": "", "value": 999.0,
             "unit": "percent"}])
        writer.finish("interrupted", "stopped by SIGINT")
        result = CliRunner().invoke(cli, ["fetch-metrics", str(run_dir)])
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    rows = _rows(run_dir)
    assert [r["value"] for r in rows if r["source"] == "local"] == ["1.0"]
    fetched = [r for r in rows if r["source"] == "prometheus"]
    assert fetched and "999.0" not in {r["value"] for r in fetched}
    assert all(t0 <= float(r["time_unix_s"]) <= t0 + 120 for r in fetched)
    described = RunDirectory.open(run_dir).manifest.sources["prometheus"]
    assert described["refetched_utc"] and described["resources"] == {"cpu_request_cores": 0.5}


def test_fetch_metrics_that_fails_leaves_the_run_as_it_was(aws, tmp_path):
    run_dir = _finished_run(tmp_path / "run")  # no ECS service in moto: discovery fails
    before = (run_dir / "metrics.csv").read_bytes(), (run_dir / "manifest.json").read_bytes()
    result = CliRunner().invoke(cli, ["fetch-metrics", str(run_dir)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 3 and len(lines) == 1 and lines[0].startswith("Error: cloudwatch metrics could not "
                                                                             "be fetched: "), result.output
    assert lines[0].endswith(f"{run_dir} is unchanged")
    assert ((run_dir / "metrics.csv").read_bytes(), (run_dir / "manifest.json").read_bytes()) == before


def test_fetch_metrics_refuses_a_run_still_running(tmp_path):
    run_dir = _finished_run(tmp_path / "run")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest.update(status="running", finished_utc=None)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["fetch-metrics", str(run_dir)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and "is still running" in lines[0]


# -- expired credentials -----------------------------------------------------------------------------


class _RefusingClient:
    """Just what ``call`` looks at, and an operation that fails with ``code``."""

    class meta:  # noqa: N801 - botocore's attribute name
        region_name = "eu-west-1"

        class service_model:  # noqa: N801
            service_name = "cloudwatch"

    def __init__(self, code: str):
        self.code = code

    def get_metric_data(self, **_):
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": self.code, "Message": "The security token included in the request is expired"}},
            "GetMetricData")


@pytest.mark.parametrize("code", ["ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId"])
def test_expired_or_invalid_credentials_say_refresh_them_not_grant_a_policy(code):
    with pytest.raises(InfrastructureError) as raised:
        call(_RefusingClient(code), "get_metric_data")
    message = str(raised.value)
    assert raised.value.exit_code == 3
    assert f"cloudwatch:GetMetricData ({code}:" in message
    assert "expired or are not valid" in message and "aws sso login" in message
    assert "iam-policy" not in message


def test_access_denied_still_names_the_policy():
    with pytest.raises(InfrastructureError, match="grant the policy printed by `scalefinder iam-policy PROFILE`"):
        call(_RefusingClient("AccessDenied"), "get_metric_data")


def test_fetch_metrics_with_an_expired_token_is_one_error_line_exit_3(aws, tmp_path, monkeypatch):
    seed_world(desired=1)
    run_dir = _finished_run(tmp_path / "run")

    def expired(self, operation_name, api_params):
        raise botocore.exceptions.ClientError(
            {"Error": {"Code": "ExpiredToken", "Message": "The security token included in the request is expired"}},
            operation_name)

    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", expired)
    result = CliRunner().invoke(cli, ["fetch-metrics", str(run_dir)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 3 and len(lines) == 1, result.output
    assert "have expired or are not valid; refresh them (e.g. `aws sso login`" in lines[0]


# -- restore after a failed restore ------------------------------------------------------------------


class _Controller:
    def __init__(self, fails: bool):
        self.fails = fails

    def restore(self, snapshot):
        if self.fails:
            raise InfrastructureError("UpdateService timed out (injected)")

    def current(self):
        return 1


def _experiment_restore(tmp_path: Path, fails: bool) -> Path:
    """The experiment's own restore (``Experiment._restore``) into its run directory, which then
    finishes as the run would: failed when the restore raised."""
    from scalefinder.loadgen.experiment import Experiment, RunOptions
    from scalefinder.loadgen.profile import load_profile

    tmp_path.mkdir(parents=True, exist_ok=True)
    run_dir = tmp_path / "run"
    experiment = Experiment(load_profile(_profile(tmp_path)), RunOptions(out=run_dir), None)
    snapshot = {"kind": "local", "tasks": 1}
    experiment.writer = RunWriter.create(run_dir, {
        "profile": {"capacity": {"controller": "local", "tasks": 1, "config": {"timeout_s": 60.0}}},
        "target": {"kind": "local", "archetype": "cpu"},
        "capacity": {"controller": "local", "original": snapshot, "initial_tasks": 1}})
    if fails:
        with pytest.raises(InfrastructureError):
            experiment._restore(_Controller(fails=True), snapshot)
        experiment.writer.finish("failed", "restoring the task count failed: UpdateService timed out (injected)")
    else:
        experiment._restore(_Controller(fails=False), snapshot)
        experiment.writer.finish("complete")
    return run_dir


def test_restore_after_a_failed_restore_needs_no_force_and_is_refused_once_it_worked(tmp_path, monkeypatch):
    monkeypatch.setattr("scalefinder.loadgen.restore._remove_leftover_cgroups", lambda manifest: ([], []))
    run_dir = _experiment_restore(tmp_path, fails=True)
    capacity = RunDirectory.open(run_dir).manifest.capacity
    assert capacity["restored"] is False and "UpdateService timed out (injected)" in capacity["restore_error"]

    result = CliRunner().invoke(cli, ["restore", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Restored the local capacity recorded in {run_dir}")
    assert RunDirectory.open(run_dir).manifest.capacity["restored"] is True

    again = CliRunner().invoke(cli, ["restore", str(run_dir)])
    assert again.exit_code == 2 and "pass --force" in again.output, again.output


def test_restore_of_a_run_whose_own_restore_worked_still_takes_force(tmp_path, monkeypatch):
    monkeypatch.setattr("scalefinder.loadgen.restore._remove_leftover_cgroups", lambda manifest: ([], []))
    run_dir = _experiment_restore(tmp_path / "ok", fails=False)
    assert RunDirectory.open(run_dir).manifest.capacity["restored"] is True
    result = CliRunner().invoke(cli, ["restore", str(run_dir)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "pass --force" in lines[0], result.output
    assert CliRunner().invoke(cli, ["restore", str(run_dir), "--force"]).exit_code == 0
