"""At the edge of capacity: a hard abort ends a step, not the run, and a stall of the load
generator ends neither. Real runs on the local cluster (127.0.0.1), short holds."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from scalefinder.analysis.command import analyze
from scalefinder.loadgen.experiment import ABORT_DRAIN_S, Experiment, RunOptions
from scalefinder.loadgen.profile import load_profile
from scalefinder.core.rundir import RunDirectory

pytestmark = pytest.mark.load

# One task of the worker archetype: 4 threads of 160 ms each carry 25 req/s; past that the
# backlog of 8 fills within a couple of seconds and the excess is answered 503 at once. With
# the abort threshold at 10% of errors the first step past capacity (30 req/s: a sixth of the
# arrivals refused) aborts, long before its hold is over. The ramp 6, 9, 13.5, 20.25, 30 and
# the refinement (one or two steps at 20% tolerance) give the five steps below capacity the
# analysis needs; beyond_factor 10 makes the beyond phase one step (39.8 req/s at two tasks,
# the next, 63, is past twice max_rps), which keeps the run near a minute.
EDGE_PROFILE = """
name = "edge"
[target]
kind = "local"
archetype = "workers"
cpu_units = 256
memory_mib = 256
[target.params]
workers = 4
work_ms = 160
backlog = 8
[workload]
requests = [{ path = "/work" }]
max_in_flight = 100
timeout_s = 3
[slo]
percentile = 95
latency_ms = 600
[ramp]
start_rps = 6
step_factor = 1.5
max_rps = 30
hold_s = 5
min_hold_s = 5
warmup_s = 2
refine_tolerance_pct = 20
beyond_factor = 10
confirm_breach = false
abort_error_pct = 10
max_duration_s = 300
recovery_timeout_s = 30
recovery_probe_s = 3
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 1
"""


def test_an_abort_in_the_ramp_is_followed_by_recovery_refine_replay_and_beyond(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(EDGE_PROFILE)
    out = tmp_path / "run"
    began = time.monotonic()
    result = Experiment(load_profile(path), RunOptions(out=out), None).run()
    wall_s = time.monotonic() - began

    assert result.status == "complete", result.reason
    run = RunDirectory.open(out)
    steps = run.steps()
    events = run.events()
    measured = steps[steps["phase"] != "recovery"]
    summary = steps[["step_id", "phase", "tasks", "offered_rps", "valid", "slo_met", "end_reason", "failures",
                     "dropped", "sent"]]

    # the first aborted step ended the ramp and counts as its breach: valid, SLO not met
    aborts = [e for e in events if e["kind"] == "abort"]
    assert aborts and all(e["scope"] == "step" for e in aborts), aborts
    first = aborts[0]
    aborted = steps[steps["step_id"] == first["step_id"]].iloc[0]
    assert aborted["phase"] == "ramp" and aborted["end_reason"] == "abort", summary
    assert bool(aborted["valid"]) and not bool(aborted["slo_met"]), summary
    assert "errors at" in first["reason"]
    failing_rps = float(aborted["offered_rps"])
    ramp = measured[measured["phase"] == "ramp"]
    assert ramp["offered_rps"].max() == failing_rps  # the ramp stopped at the abort

    # the load stopped within two seconds of the decision: nothing was sent for the aborted step
    # after that, and the next load was the recovery probe
    load = run.load()
    after = load[(load["time_unix_s"] > first["time_unix_s"] + 2.0)
                 & (load["step_id"] == first["step_id"])]
    assert after["sent"].sum() == 0, after
    ended = next(e for e in events if e["kind"] == "step_end" and e["step_id"] == first["step_id"])
    assert ended["abort_reason"] == first["reason"]
    # arrivals stop at once; requests in flight get ABORT_DRAIN_S, then the engine cuts them (<= 1 s)
    assert ended["halted_after_s"] <= ABORT_DRAIN_S + 1.0 + 0.5, ended
    recoveries = [e for e in events if e["kind"] == "recovery"]
    assert recoveries and recoveries[0]["step_id"] == first["step_id"], events
    probes = steps[steps["step_id"].isin(recoveries[0]["probe_step_ids"])]
    assert len(probes) >= 1 and set(probes["phase"]) == {"recovery"}
    assert not probes["valid"].any() and bool(probes["slo_met"].iloc[-1]), summary
    assert (probes["offered_rps"] == 6).all()  # the ramp's start rate
    assert not any(e["kind"] == "recovery_failed" for e in events)
    assert recoveries[0]["elapsed_s"] <= 30

    # then the phases went on: refine below the failing rate, replay at 2n, beyond
    refine = measured[measured["phase"] == "refine"]
    assert len(refine) >= 1 and (refine["offered_rps"] < failing_rps).all(), summary
    replay = measured[measured["phase"] == "replay"]
    assert len(replay) >= 4 and set(replay["tasks"]) == {2}, summary
    assert len(measured[measured["phase"] == "beyond"]) >= 1, summary
    capacity = result.capacity_rps
    assert capacity is not None and capacity < failing_rps
    assert [p["name"] for p in run.manifest.phases][-1] == "restore"
    assert [e["tasks"] for e in events if e["kind"] == "restore"] == [1]

    findings = analyze(out)
    recommended = (findings.get("recommendation") or {}).get("metric")
    assert recommended in ("concurrency_per_task", "requests_per_task"), (
        findings["headline"], findings["inconclusive"], summary)
    # the analysis took the aborted step as the breach of the ramp (or refined it further down)
    assert findings["knee"]["slo_breach_rps"] <= failing_rps
    print(f"\nedge run: {wall_s:.0f} s; abort at {failing_rps:g} req/s ({first['reason']}); "
          f"load gone {ended['halted_after_s']:.2f} s after the decision; "
          f"recovered in {recoveries[0]['elapsed_s']:.1f} s with {len(probes)} probe(s); "
          f"capacity {capacity:g} req/s; {findings['headline']}")


# One task of the waiting archetype: each request holds a connection for 300 ms, so a few are
# always in flight. The abort rule's latency threshold (1.2 s) lies far above what the target
# takes and below the 3 s the generator is frozen for.
STALL_PROFILE = """
name = "stall"
[target]
kind = "local"
archetype = "waiting"
cpu_units = 256
memory_mib = 128
[target.params]
pool_size = 5
latency_ms = 300
[workload]
requests = [{ path = "/work" }]
max_in_flight = 100
timeout_s = 5
[slo]
percentile = 95
latency_ms = 800
[ramp]
start_rps = 6
step_rps = 2
max_rps = 8
hold_s = 6
min_hold_s = 5
warmup_s = 2
refine = false
beyond = false
abort_latency_ms = 1200
max_duration_s = 120
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 1
"""
FREEZE_S = 3.0
FREEZE_AFTER_S = 1.5  # into the first step, so the generator is back well before its 6 s hold ends


class _RampOnly(Experiment):
    """The real ramp on the real local cluster, without the phases this test does not need."""

    def _run_phases(self, controller):
        good, first_bad = self._ramp(self.profile.capacity.tasks)
        self.capacity_rps = max(good) if good else None


def _engine_process(experiment: Experiment) -> psutil.Process:
    me = psutil.Process(os.getpid())
    engine = psutil.Process(experiment.engine.pids[0])
    assert engine in me.children(recursive=True) and "scalefinder.loadgen.engine" in " ".join(engine.cmdline())
    return engine


def test_a_stalled_generator_repeats_the_step_instead_of_ending_the_run(tmp_path):
    path = tmp_path / "stall.toml"
    path.write_text(STALL_PROFILE)
    out = tmp_path / "run"
    experiment = _RampOnly(load_profile(path), RunOptions(out=out), None)
    frozen: dict[str, float] = {}

    def freeze_the_generator_once() -> None:
        deadline = time.monotonic() + 120
        while (experiment.engine is None or experiment.recorder.step is None) and time.monotonic() < deadline:
            time.sleep(0.05)
        if experiment.engine is None or experiment.recorder.step is None:
            return
        time.sleep(FREEZE_AFTER_S)
        engine = _engine_process(experiment)
        engine.send_signal(signal.SIGSTOP)
        frozen["at"] = time.time()
        try:
            time.sleep(FREEZE_S)
        finally:
            engine.send_signal(signal.SIGCONT)
            frozen["until"] = time.time()

    freezer = threading.Thread(target=freeze_the_generator_once, daemon=True)
    freezer.start()
    try:
        result = experiment.run()
    finally:
        freezer.join(timeout=30)
    assert frozen.get("until"), "the generator was never frozen"

    assert result.status == "complete", result.reason
    run = RunDirectory.open(out)
    steps = run.steps()
    summary = steps[["step_id", "phase", "offered_rps", "valid", "slo_met", "end_reason", "invalid_reason"]]
    stalls = [e for e in run.events() if e["kind"] == "generator_stall"]
    assert len(stalls) == 1, (run.events(), summary)
    stall = stalls[0]
    assert stall["action"] == "repeat" and stall["step_id"] == 0
    assert "a request has waited" in stall["abort_rule"]
    # the measured gap covers the freeze, within the second a tick may move
    assert FREEZE_S - 1 <= stall["gap_s"] <= FREEZE_S + 2, stall
    assert not any(e["kind"] in ("abort", "recovery") for e in run.events())

    first, repeat = steps.iloc[0], steps.iloc[1]
    assert first["end_reason"] == "retried" and not bool(first["valid"]), summary
    assert "the load generator stalled" in first["invalid_reason"], summary
    # the stalled attempt ended soon after the generator came back, long before its hold was over
    assert first["end_unix_s"] - frozen["until"] < 2.5, (first["end_unix_s"], frozen)
    assert repeat["offered_rps"] == first["offered_rps"] and bool(repeat["valid"]), summary
    assert repeat["end_reason"] in ("held", "steady") and bool(repeat["slo_met"]), summary
    assert list(steps["offered_rps"]) == [6, 6, 8], summary
    assert result.capacity_rps == 8
    print(f"\nstall: tick gap {stall['gap_s']:g} s, {stall['late_share']:.0%} late, "
          f"up to {stall['max_send_delay_ms']:.0f} ms; step {stall['step_id']} repeated")
