"""The experiment's safety: whatever ends a run, load stops, the task count is restored, and the
partial run directory stays readable. Real runs of ``scalefinder run`` on the local cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from scalefinder.rundir import RunDirectory

pytestmark = pytest.mark.load

TARGET = Path(__file__).with_name("test_engine_target.py")

# One task of a light CPU archetype; two short steps well below capacity, then the replay at 2.
LIGHT_PROFILE = """
name = "light"
[target]
kind = "local"
cpu_units = 256
memory_mib = 128
{target}
[workload]
requests = [{{ path = "/work" }}]
max_in_flight = 50
timeout_s = 3
[slo]
percentile = 95
latency_ms = 500
[ramp]
start_rps = 4
step_rps = 4
max_rps = 8
hold_s = 4
min_hold_s = 4
warmup_s = 0.5
beyond = false
max_duration_s = 120
abort_error_pct = 50
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 1
"""


def write_profile(tmp_path: Path, target: str) -> Path:
    path = tmp_path / "light.toml"
    path.write_text(LIGHT_PROFILE.format(target=target))
    return path


def start_run(profile: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scalefinder.cli", "run", str(profile), "--out", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def events(out: Path) -> list[dict]:
    path = out / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def wait_for_event(process: subprocess.Popen, out: Path, predicate, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in events(out):
            if predicate(event):
                return event
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"no such event within {timeout_s} s: {events(out)}")


def assert_restored_and_clean(out: Path, tasks: int) -> RunDirectory:
    run = RunDirectory.open(out)
    log = run.events()
    restores = [e for e in log if e["kind"] == "restore"]
    assert restores and restores[-1]["tasks"] == tasks
    scales = [e for e in log if e["kind"] == "scale"]
    if scales:
        assert scales[-1]["tasks"] == tasks
    assert run.manifest["phases"][-1]["name"] == "restore"
    # nothing the run started is left behind
    pids = [e["pid"] for e in log if e["kind"] == "task_start"]
    time.sleep(0.5)
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive
    return run


def test_sigint_during_replay_restores_tasks_and_leaves_a_readable_partial_run(tmp_path):
    out = tmp_path / "run"
    process = start_run(write_profile(tmp_path, 'archetype = "cpu"\n[target.params]\ncpu_ms = 1'), out)
    try:
        wait_for_event(process, out, lambda e: e["kind"] == "phase_start" and e["phase"] == "replay")
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    run = assert_restored_and_clean(out, tasks=1)
    assert run.status == "interrupted" and run.is_partial
    assert "SIGINT" in run.manifest["status_reason"]
    assert {"ramp", "replay"} <= {p["name"] for p in run.manifest["phases"]}
    assert any(e["kind"] == "interrupt" for e in run.events())
    assert len(run.steps()) >= 2 and len(run.load()) > 0 and len(run.metrics()) > 0


def test_sigterm_during_ramp_restores_and_exits_130(tmp_path):
    out = tmp_path / "run"
    process = start_run(write_profile(tmp_path, 'archetype = "cpu"\n[target.params]\ncpu_ms = 1'), out)
    try:
        wait_for_event(process, out, lambda e: e["kind"] == "step_start")
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    run = assert_restored_and_clean(out, tasks=1)
    assert run.status == "interrupted" and "SIGTERM" in run.manifest["status_reason"]


def test_errors_above_the_abort_threshold_stop_the_load_within_two_seconds(tmp_path):
    out = tmp_path / "run"
    command = f'command = "{sys.executable} {TARGET} {{port}} fail"'
    process = start_run(write_profile(tmp_path, command), out)
    try:
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, stderr
    assert "aborted" in stderr and str(out) in stdout
    run = assert_restored_and_clean(out, tasks=1)
    assert run.status == "aborted" and not run.is_partial
    abort = next(e for e in run.events() if e["kind"] == "abort")
    assert "errors" in abort["reason"]
    load = run.load()
    first_failing = load.loc[load["failures"] > 0, "time_unix_s"].min()
    # the rule needs two seconds of evidence; the load stops within two seconds of the decision
    assert abort["time_unix_s"] - first_failing <= 4.0
    after = load[load["time_unix_s"] > abort["time_unix_s"] + 2.0]
    assert after["sent"].sum() == 0
    assert list(run.steps()["end_reason"]) == ["abort"]
