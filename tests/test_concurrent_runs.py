"""Two runs at once on one machine: each gets a run directory and a Locust master port of its own."""

from __future__ import annotations

import socket
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from scalefinder.loadgen.engine.client import EngineProcess, check_master_port
from scalefinder.loadgen.engine.protocol import ANY_FREE_PORT, DEFAULT_MASTER_PORT, choose_master_port
from scalefinder.loadgen.experiment import Experiment, RunOptions
from scalefinder.loadgen.profile import load_profile
from scalefinder.cli import cli
from scalefinder.core.errors import InfrastructureError, InputError, RunDirectoryError
from scalefinder.core.rundir import RunDirectory, create_run_directory

PROFILE = """
name = "pair"
[target]
kind = "local"
archetype = "cpu"
cpu_units = 256
memory_mib = 128
[workload]
requests = [{ path = "/work" }]
[slo]
percentile = 95
latency_ms = 250
[ramp]
start_rps = 4
step_rps = 4
max_rps = 8
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 1
"""


# The same run against a remote target: no cluster to start, so its run directory can be made
# without starting anything.
REMOTE_PROFILE = """
name = "pair"
[target]
kind = "url"
url = "http://127.0.0.1:9"
environment = "staging"
allowed_hosts = ["127.0.0.1"]
[workload]
requests = [{ path = "/work" }]
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
cluster = "c"
service = "s"
[sources.cloudwatch]
cluster = "c"
service = "s"
"""


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    path = tmp_path / "pair.toml"
    path.write_text(PROFILE)
    return path


@pytest.fixture
def remote_profile_path(tmp_path: Path) -> Path:
    path = tmp_path / "remote-pair.toml"
    path.write_text(REMOTE_PROFILE)
    return path


@pytest.fixture
def taken_port():
    """A port on 127.0.0.1 that something is listening on, as another run's master would be."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


# -- run ids and directories ------------------------------------------------------------------
def test_a_run_id_taken_in_the_same_second_gets_the_next_suffix(tmp_path):
    claimed = [create_run_directory(tmp_path / "reports", "20260101T120000Z-pair") for _ in range(3)]
    assert [run_id for run_id, _ in claimed] == ["20260101T120000Z-pair", "20260101T120000Z-pair-2",
                                                "20260101T120000Z-pair-3"]
    assert all(path.is_dir() and path.name == run_id and not any(path.iterdir()) for run_id, path in claimed)


def test_a_file_in_the_way_is_skipped_like_a_run(tmp_path):
    (tmp_path / "20260101T120000Z-pair").write_text("not a run")
    assert create_run_directory(tmp_path, "20260101T120000Z-pair")[0] == "20260101T120000Z-pair-2"


def test_runs_claiming_the_same_id_at_once_never_share_a_directory(tmp_path):
    claimed: list[str] = []
    start = threading.Barrier(8)

    def claim() -> None:
        start.wait()
        claimed.append(create_run_directory(tmp_path, "20260101T120000Z-pair")[0])

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(claimed) == sorted(["20260101T120000Z-pair"] + [f"20260101T120000Z-pair-{n}" for n in range(2, 9)])


def test_a_reports_folder_that_cannot_be_made_is_one_error(tmp_path):
    (tmp_path / "reports").write_text("a file where the folder should be")
    with pytest.raises(InfrastructureError, match=r"cannot create a run directory in .*reports"):
        create_run_directory(tmp_path / "reports", "20260101T120000Z-pair")


def test_every_suffix_taken_is_one_error(tmp_path, monkeypatch):
    monkeypatch.setattr("scalefinder.core.rundir.MAX_SAME_SECOND_RUNS", 2)
    create_run_directory(tmp_path, "x")
    create_run_directory(tmp_path, "x")
    with pytest.raises(RunDirectoryError, match="already holds 2 runs named x; choose an --out"):
        create_run_directory(tmp_path, "x")


def test_two_runs_started_in_the_same_second_with_the_default_output_get_their_own_directories(
        tmp_path, remote_profile_path, monkeypatch):
    second = datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
    monkeypatch.setattr("scalefinder.loadgen.experiment.utc_now", lambda: second)
    runs = [Experiment(load_profile(remote_profile_path), RunOptions(reports_dir=tmp_path / "reports"), None)
            for _ in range(2)]
    for run in runs:  # what a run does once it knows the original capacity, before any load
        run._create_writer(None, {"kind": "ecs", "tasks": 2}, {})
        run.writer.close()
    first, other = (RunDirectory.open(run.writer.path) for run in runs)
    assert first.path != other.path and first.path.parent == other.path.parent == tmp_path / "reports"
    assert (first.manifest.run_id, other.manifest.run_id) == ("20260101T120000Z-pair", "20260101T120000Z-pair-2")
    assert first.path.name == first.manifest.run_id and other.path.name == other.manifest.run_id


# -- the Locust master's port -----------------------------------------------------------------
def test_the_master_port_is_free_unless_chosen_or_remote_workers_look_for_the_default():
    assert choose_master_port(None, expect_workers=0) == ANY_FREE_PORT
    assert choose_master_port(None, expect_workers=2) == DEFAULT_MASTER_PORT
    assert choose_master_port(6000, expect_workers=0) == 6000
    assert choose_master_port(6000, expect_workers=2) == 6000


def test_a_taken_master_port_is_named(taken_port):
    with pytest.raises(InfrastructureError, match=f"the Locust master port {taken_port} on 127.0.0.1 is already "
                                                  "in use .*; choose another --master-port"):
        check_master_port("127.0.0.1", taken_port)


def test_a_free_master_port_passes_and_a_bad_bind_host_is_an_input_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_master_port("127.0.0.1", port)
    with pytest.raises(InputError, match="--master-bind-host no-such-host.invalid cannot be resolved"):
        check_master_port("no-such-host.invalid", port)


def test_run_refuses_a_chosen_master_port_that_is_taken_before_anything_starts(tmp_path, profile_path, taken_port):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(profile_path), "--out", str(out), "--workers", "1",
                                      "--master-port", str(taken_port), "--no-progress"])
    assert result.exit_code == 3, result.output
    assert result.output.strip().splitlines() == [
        f"Error: the Locust master port {taken_port} on 127.0.0.1 is already in use (by another run?); "
        "choose another --master-port"]
    assert not out.exists()


ENGINE_CONFIG = {"host": "http://127.0.0.1:9", "max_in_flight": 10, "timeout_s": 1.0, "late_tolerance_ms": 25.0,
                 "requests": [{"name": "work", "method": "GET", "path": "/", "weight": 1, "body": None,
                               "headers": {}}],
                 "workers": 1, "expect_workers": 0, "master_bind_host": "127.0.0.1"}


@pytest.mark.load
def test_two_distributed_engines_without_a_chosen_port_both_start():
    # No rate is ever set: the engines start, connect their workers and quit without sending a request.
    engines = [EngineProcess({**ENGINE_CONFIG, "master_port": ANY_FREE_PORT}) for _ in range(2)]
    try:
        starts = [threading.Thread(target=engine.start) for engine in engines]
        for thread in starts:
            thread.start()
        for thread in starts:
            thread.join(timeout=60)
        assert all(len(engine.pids) == 2 for engine in engines), [engine.pids for engine in engines]
    finally:
        for engine in engines:
            engine.close()


@pytest.mark.load
def test_an_engine_whose_master_port_was_taken_meanwhile_names_it(taken_port):
    with pytest.raises(InfrastructureError, match=f"the Locust master port {taken_port} on 127.0.0.1 is already "
                                                  "in use"):
        EngineProcess({**ENGINE_CONFIG, "master_port": taken_port}).start(timeout_s=30)
