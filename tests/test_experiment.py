"""The experiment's safety: whatever ends a run, load stops, the task count is restored, and the
partial run directory stays readable. Real runs of ``scalefinder run`` on the local cluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from scalefinder.loadgen.experiment import Experiment, RunOptions
from scalefinder.loadgen.profile import load_profile
from scalefinder.core.errors import Interrupted
from scalefinder.core.rundir import RunDirectory
from tests.processes import reaped

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
    assert run.manifest.phases[-1]["name"] == "restore"
    # nothing the run started is left behind
    pids = [e["pid"] for e in log if e["kind"] == "task_start"]
    time.sleep(0.5)
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive
    return run


def test_sigint_during_replay_restores_tasks_and_leaves_a_readable_partial_run(tmp_path):
    out = tmp_path / "run"
    process = start_run(write_profile(tmp_path, 'archetype = "cpu"\n[target.params]\ncpu_ms = 1'), out)
    with reaped(process):
        wait_for_event(process, out, lambda e: e["kind"] == "phase_start" and e["phase"] == "replay")
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    run = assert_restored_and_clean(out, tasks=1)
    assert run.status == "interrupted" and run.is_partial
    assert "SIGINT" in run.manifest.status_reason
    assert {"ramp", "replay"} <= {p["name"] for p in run.manifest.phases}
    assert any(e["kind"] == "interrupt" for e in run.events())
    assert len(run.steps()) >= 2 and len(run.load()) > 0 and len(run.metrics()) > 0


def test_sigterm_during_ramp_restores_and_exits_130(tmp_path):
    out = tmp_path / "run"
    process = start_run(write_profile(tmp_path, 'archetype = "cpu"\n[target.params]\ncpu_ms = 1'), out)
    with reaped(process):
        wait_for_event(process, out, lambda e: e["kind"] == "step_start")
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    run = assert_restored_and_clean(out, tasks=1)
    assert run.status == "interrupted" and "SIGTERM" in run.manifest.status_reason


def test_errors_above_the_abort_threshold_stop_the_load_within_two_seconds(tmp_path):
    out = tmp_path / "run"
    command = f'command = "{sys.executable} {TARGET} {{port}} fail"'
    process = start_run(write_profile(tmp_path, command), out)
    with reaped(process):
        stdout, stderr = process.communicate(timeout=90)
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


# A target with a real capacity of 10 req/s (one request at a time, 100 ms each) that stalls
# once for 0.8 s, like a busy host, when its STALL_AT-th request arrives.
STALLING_TARGET = '''
import asyncio, sys
from aiohttp import web

STALL_AT = int(sys.argv[2])
state = {"count": 0}

async def work(request):
    state["count"] += 1
    number = state["count"]
    async with request.app["serial"]:
        await asyncio.sleep(0.8 if number == STALL_AT else 0.1)
    return web.Response(text="ok")

async def ok(request):
    return web.Response(text="")

async def make_app():
    app = web.Application()
    app["serial"] = asyncio.Lock()
    app.router.add_get("/work", work)
    app.router.add_get("/health", ok)
    app.router.add_get("/metrics", ok)
    return app

web.run_app(make_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''

CONFIRM_PROFILE = """
name = "confirm"
[target]
kind = "local"
cpu_units = 256
memory_mib = 128
command = "{python} {script} {{port}} 18"
[workload]
requests = [{{ path = "/work" }}]
max_in_flight = 50
timeout_s = 3
[slo]
percentile = 95
latency_ms = 300
[ramp]
start_rps = 4
step_rps = 4
max_rps = 16
hold_s = 3
min_hold_s = 3
warmup_s = 0.5
refine = false
beyond = false
max_duration_s = 120
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 0.5
"""


class _RampOnly(Experiment):
    """The real ramp on the real local cluster, without the replay at 2n that this test does not need."""

    def _run_phases(self, controller):
        good, first_bad = self._ramp(self.profile.capacity.tasks)
        self.capacity_rps = max(good) if good else None


def test_a_single_stall_is_repeated_and_a_real_breach_is_confirmed(tmp_path):
    script = tmp_path / "stalling_target.py"
    script.write_text(STALLING_TARGET)
    profile_path = tmp_path / "confirm.toml"
    profile_path.write_text(CONFIRM_PROFILE.format(python=sys.executable, script=script))
    result = _RampOnly(load_profile(profile_path), RunOptions(out=tmp_path / "run"), None).run()
    steps = [(s.offered_rps, s.end_reason, s.valid, s.slo_met) for s in result.steps]
    # 8 req/s: the stall broke the first attempt, the repeat met the SLO, so the ramp went on;
    # 12 req/s is above the real capacity: both attempts broke the SLO and the ramp ended there.
    assert [s[0] for s in steps] == [4, 8, 8, 12, 12], steps
    assert steps[1][1] == "retried" and not steps[1][2] and not steps[1][3]
    assert steps[2][2] and steps[2][3]
    assert steps[3][1] == "retried" and not steps[3][2]
    assert not (steps[4][2] and steps[4][3]) and steps[4][1] != "retried"
    assert result.capacity_rps == 8
    run = RunDirectory.open(tmp_path / "run")
    checks = [e for e in run.events() if e["kind"] == "breach_check"]
    assert [(c["offered_rps"], c["confirmed"]) for c in checks] == [(8, False), (12, True)]
    assert "repeated at the same rate" in run.steps()["invalid_reason"].iloc[1]


class _StoppedWhileRestoring(Experiment):
    """Scales up without sending load, then gets a SIGTERM in the middle of putting the task count
    back, as a `kill` from another terminal would send it."""

    def _run_phases(self, controller):
        self._scale(controller, 2 * self.profile.capacity.tasks)

    def _restore(self, controller, snapshot):
        restore = controller.restore

        def restore_after_a_sigterm(snapshot):
            os.kill(os.getpid(), signal.SIGTERM)
            restore(snapshot)

        controller.restore = restore_after_a_sigterm
        super()._restore(controller, snapshot)


def test_sigterm_during_the_restore_lets_it_finish_and_the_run_ends_interrupted(tmp_path):
    out = tmp_path / "run"
    profile = load_profile(write_profile(tmp_path, 'archetype = "cpu"\n[target.params]\ncpu_ms = 1'))
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=f"stopped by SIGTERM; the partial run is in {out}$") as stopped:
        _StoppedWhileRestoring(profile, RunOptions(out=out), None).run()
    assert stopped.value.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) is handler_before
    run = assert_restored_and_clean(out, tasks=1)  # the restore was not cut short
    assert [e["tasks"] for e in run.events() if e["kind"] == "scale"] == [2, 1]
    assert run.status == "interrupted" and run.manifest.status_reason == "stopped by SIGTERM"
    assert [e["signal"] for e in run.events() if e["kind"] == "interrupt"] == ["SIGTERM"]


class _StoppedWhileStarting(Experiment):
    """Gets a SIGINT while its target starts, before the run directory exists."""

    @contextlib.contextmanager
    def _open_target(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the signal ends this at once
        yield None


def test_sigint_before_the_run_directory_exists_says_none_was_created(tmp_path):
    profile = load_profile(write_profile(tmp_path, 'archetype = "cpu"'))
    with pytest.raises(Interrupted) as stopped:
        _StoppedWhileStarting(profile, RunOptions(reports_dir=tmp_path / "reports"), None).run()
    assert str(stopped.value) == "the run was stopped by SIGINT; no run directory was created"
    assert not (tmp_path / "reports").exists()
