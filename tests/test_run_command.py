"""``scalefinder run profiles/demo.toml`` end to end, and what ``run`` refuses to do."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from scalefinder.cli import cli
from scalefinder.core.rundir import RunDirectory

DEMO = Path(__file__).resolve().parent.parent / "profiles" / "demo.toml"


@pytest.mark.load
def test_demo_run_writes_a_complete_run_directory_with_both_phases(demo_run):
    # `scalefinder demo` runs `scalefinder run profiles/demo.toml` (shared fixture, see conftest.py)
    out = demo_run.path
    assert demo_run.returncode == 0, demo_run.stderr
    assert f"Run directory: {out}" in demo_run.stdout

    run = RunDirectory.open(out)
    assert run.status == "complete" and not run.is_partial
    manifest = run.manifest.data
    phases = [p["name"] for p in manifest["phases"]]
    assert phases[0] == "ramp" and "replay" in phases and phases[-1] == "restore"
    assert all(p["end_utc"] for p in manifest["phases"])
    assert {p["tasks"] for p in manifest["phases"] if p["name"] in ("replay", "beyond")} == {4}
    assert manifest["capacity"]["original"]["tasks"] == 2
    assert manifest["environment"]["cgroup_mode"] in ("cgroup-v1", "cgroup-v2", "unenforced")
    assert manifest["environment"]["libraries"]["locust"]
    assert manifest["target"]["ground_truth"]["archetype"] == "cpu"
    assert manifest["profile"]["name"] == "demo" and manifest["generator"]["mode"] == "local"

    steps = run.steps()
    ramp = steps[steps["phase"] == "ramp"]
    assert ramp["slo_met"].sum() >= 5, ramp[["offered_rps", "p95_ms", "slo_met"]]
    replay = steps[steps["phase"] == "replay"]
    assert len(replay) >= 4 and set(replay["tasks"]) == {4}
    capacity = manifest["capacity_result"]["capacity_rps"]
    assert capacity and replay["offered_rps"].max() == pytest.approx(capacity)
    assert set(steps["end_reason"]) <= {"held", "steady", "slo_breach", "retried"}

    load = run.load()
    assert len(load) >= 0.8 * (steps["end_unix_s"].max() - steps["start_unix_s"].min())
    metrics = run.metrics()
    cpu = metrics[metrics["metric"] == "cpu_utilization"]
    assert {"task-1", "task-2", "task-3", "task-4"} <= set(cpu["task"])

    log = run.events()
    assert [e["tasks"] for e in log if e["kind"] == "scale"] == [4, 2]
    assert [e["tasks"] for e in log if e["kind"] == "restore"] == [2]
    pids = [e["pid"] for e in log if e["kind"] == "task_start"]
    assert not [pid for pid in pids if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


REMOTE = """
name = "staging"
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


def test_a_remote_target_needs_confirmation(tmp_path):
    profile = tmp_path / "remote.toml"
    profile.write_text(REMOTE.replace("max_rps = 2", "max_rps = 2\nhold_s = 200\nmin_hold_s = 200"))
    result = CliRunner().invoke(cli, ["run", str(profile), "--out", str(tmp_path / "r")], input="")
    assert result.exit_code == 2, result.output
    assert "refusing to send load to http://127.0.0.1:9 without confirmation; pass --yes" in result.output
    assert not (tmp_path / "r").exists()


def start_at_the_confirmation(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """`scalefinder run` of a remote profile with a terminal as its input, as a user starts it.
    Returns the process and the terminal's other end, to answer through."""
    profile = tmp_path / "remote.toml"
    profile.write_text(REMOTE.replace("max_rps = 2", "max_rps = 2\nhold_s = 200\nmin_hold_s = 200"))
    answers, terminal = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "scalefinder.cli", "run", str(profile), "--out",
                                str(tmp_path / "r")], stdin=terminal, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    os.close(terminal)
    return process, answers


def wait_for_the_question(process: subprocess.Popen, timeout_s: float = 30) -> str:
    shown, deadline = b"", time.monotonic() + timeout_s
    while b"[y/N]" not in shown:
        assert time.monotonic() < deadline and process.poll() is None, shown
        if select.select([process.stdout], [], [], 0.1)[0]:
            shown += os.read(process.stdout.fileno(), 4096)
    return shown.decode()


@pytest.mark.load
def test_answering_no_at_the_confirmation_runs_nothing_and_exits_0(tmp_path):
    process, answers = start_at_the_confirmation(tmp_path)
    try:
        assert "Send up to 2 req/s to http://127.0.0.1:9 (staging)?" in wait_for_the_question(process)
        os.write(answers, b"n\n")
        stdout, stderr = process.communicate(timeout=30)
    finally:
        os.close(answers)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert stdout.strip() == "Nothing was run: sending load was not confirmed."
    assert stderr == ""
    assert not (tmp_path / "r").exists()


@pytest.mark.load
def test_ctrl_c_at_the_confirmation_is_an_interruption(tmp_path):
    process, answers = start_at_the_confirmation(tmp_path)
    try:
        wait_for_the_question(process)
        # The question is shown just before the answer is read; a signal in between is only seen
        # once the read returns, so give the process time to block in the read first.
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        os.close(answers)
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert stderr.strip() == "Interrupted."
    assert not (tmp_path / "r").exists()


def test_run_refuses_a_non_empty_out_directory(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    result = CliRunner().invoke(cli, ["run", str(DEMO), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "already exists and is not empty" in result.output
