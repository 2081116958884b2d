"""``scalefinder restore`` of a run on the local cluster that was killed hard: the capacity, and the
cgroups its cluster left behind."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from scalefinder.loadgen.cluster.cgroups import remove_groups_left_by
from scalefinder.cli import cli
from scalefinder.core.rundir import RunDirectory, RunWriter

# Above the largest pid Linux can hand out (2**22), so no process ever has it.
GONE_PID = 2**22 + 1


@pytest.fixture
def fake_hierarchies(tmp_path, monkeypatch) -> dict[str, Path]:
    """Two cgroup v1 hierarchies in a temporary folder, in place of the machine's."""
    mounts = {controller: tmp_path / "cgroup" / controller for controller in ("cpu", "memory")}
    for mount in mounts.values():
        (mount / "scalefinder").mkdir(parents=True)
    monkeypatch.setattr("scalefinder.loadgen.cluster.cgroups._mounts", lambda: mounts)
    return mounts


def make_groups(mounts: dict[str, Path], cluster: str) -> list[Path]:
    groups = [mount / "scalefinder" / cluster for mount in mounts.values()]
    for group in groups:
        (group / "task-1").mkdir(parents=True)
    return groups


def killed_local_run(path: Path, cgroup_mode: str, pid: int = GONE_PID) -> Path:
    """A run directory as a local-cluster run killed with SIGKILL leaves it: still "running"."""
    RunWriter.create(path, {
        "pid": pid,
        "profile": {"capacity": {"controller": "local", "tasks": 1, "config": {"timeout_s": 60.0}}},
        "environment": {"cgroup_mode": cgroup_mode},
        "target": {"kind": "local", "archetype": "cpu"},
        "capacity": {"controller": "local", "original": {"kind": "local", "tasks": 1}, "initial_tasks": 1},
    }).close()
    return path


def test_the_groups_of_a_process_that_is_gone_are_removed_and_no_others(fake_hierarchies):
    gone = make_groups(fake_hierarchies, f"{GONE_PID}-0a1b2c3d")
    running = make_groups(fake_hierarchies, f"{os.getpid()}-4e5f6a7b")
    other_gone = make_groups(fake_hierarchies, f"{GONE_PID}0-8c9d0e1f")  # another pid with the same digits first
    removed, left = remove_groups_left_by(GONE_PID)
    assert sorted(removed) == sorted(gone) and left == []
    assert not any(group.exists() for group in gone)
    assert all(group.is_dir() for group in running + other_gone)
    assert all((mount / "scalefinder").is_dir() for mount in fake_hierarchies.values())


def test_the_groups_of_a_process_still_running_are_left_in_place(fake_hierarchies):
    running = make_groups(fake_hierarchies, f"{os.getpid()}-4e5f6a7b")
    removed, left = remove_groups_left_by(os.getpid())
    assert removed == [] and sorted(left) == sorted(running)
    assert all(group.is_dir() for group in running)


def test_restore_removes_the_cgroups_a_killed_run_left(tmp_path, fake_hierarchies):
    groups = make_groups(fake_hierarchies, f"{GONE_PID}-0a1b2c3d")
    run_dir = killed_local_run(tmp_path / "run", "cgroup-v1")
    result = CliRunner().invoke(cli, ["restore", str(run_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"Restored the local capacity recorded in {run_dir}")
    assert lines[1] == f"Removed the cgroups the run's local cluster left behind: {', '.join(map(str, groups))}"
    assert not any(group.exists() for group in groups)
    event = RunDirectory.open(run_dir).events()[-1]
    assert event["kind"] == "restore" and event["cgroups_removed"] == [str(group) for group in groups]


@pytest.mark.parametrize("cgroup_mode, hierarchies", [("unenforced", True), ("cgroup-v1", False)])
def test_restore_without_cgroups_says_there_was_nothing_to_remove(tmp_path, monkeypatch, cgroup_mode, hierarchies):
    if not hierarchies:  # a machine without cgroups
        monkeypatch.setattr("scalefinder.loadgen.cluster.cgroups._mounts", lambda: {})
    run_dir = killed_local_run(tmp_path / "run", cgroup_mode)
    result = CliRunner().invoke(cli, ["restore", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[1] == (
        "The run's local cluster left no cgroups behind; there was nothing to remove.")


LIGHT_PROFILE = """
name = "killed"
[target]
kind = "local"
archetype = "cpu"
cpu_units = 256
memory_mib = 128
[target.params]
cpu_ms = 1
[workload]
requests = [{ path = "/work" }]
max_in_flight = 20
[slo]
percentile = 95
latency_ms = 500
[ramp]
start_rps = 2
step_rps = 2
max_rps = 4
hold_s = 20
min_hold_s = 20
warmup_s = 0.5
beyond = false
max_duration_s = 120
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 1
"""


def wait_for_the_first_step(process: subprocess.Popen, out: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = out / "events.jsonl"
        if events.exists() and '"step_start"' in events.read_text():
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    raise AssertionError(f"the run did not reach its first step within {timeout_s} s")


@pytest.mark.load
def test_restore_after_a_sigkill_removes_the_cgroups_of_the_run(tmp_path):
    profile = tmp_path / "killed.toml"
    profile.write_text(LIGHT_PROFILE)
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "scalefinder.cli", "run", str(profile), "--out", str(out),
                                "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_the_first_step(process, out)  # 2 req/s for at most a few seconds
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["pid"] == process.pid
    if manifest["environment"]["cgroup_mode"] == "unenforced":
        pytest.skip("cgroups are not writable here")
    left = glob.glob(f"/sys/fs/cgroup/*/scalefinder/{process.pid}-*") + \
        glob.glob(f"/sys/fs/cgroup/scalefinder/{process.pid}-*")
    assert left, "the killed run left no cgroups to test with"

    result = CliRunner().invoke(cli, ["restore", str(out)])
    assert result.exit_code == 0, result.output
    assert "Removed the cgroups the run's local cluster left behind:" in result.output
    assert not [group for group in left if os.path.exists(group)]
