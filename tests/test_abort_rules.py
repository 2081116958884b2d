"""The abort rules without a process: the profile keys that set them, what ``plan`` says about
them, how the recorder tells a failing target from a stall of the load generator itself, and
what the experiment does after an aborted step (against a stand-in for the engine)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from scalefinder.loadgen.engine.recorder import LoadRecorder, StepInfo
from scalefinder.loadgen.experiment import Experiment, RunOptions, _Aborted
from scalefinder.loadgen.plan import plan_profile
from scalefinder.loadgen.profile import load_profile
from scalefinder.cli import cli
from scalefinder.core.errors import ProfileError
from scalefinder.core.rundir import RunDirectory

SLO = SimpleNamespace(percentile=95, latency_ms=500.0, error_budget_pct=1.0)

LOCAL = """
name = "rules"
[target]
kind = "local"
archetype = "cpu"
[workload]
requests = [{ path = "/work" }]
[slo]
percentile = 95
latency_ms = 250
[ramp]
start_rps = 4
step_rps = 4
max_rps = 12
hold_s = 6
min_hold_s = 5
warmup_s = 2
[capacity]
controller = "local"
tasks = 1
[sources.local]
interval_s = 1
"""

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
start_rps = 2
step_rps = 2
max_rps = 6
hold_s = 6
min_hold_s = 5
warmup_s = 2
[capacity]
controller = "command"
tasks = 2
[capacity.command]
scale = "true {count}"
current = "echo 2"
[sources.prometheus]
url = "http://127.0.0.1:9090"
rate_window = "2s"
step_s = 1
"""


def write(tmp_path: Path, text: str, extra: str = "", name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("warmup_s = 2\n", "warmup_s = 2\n" + extra))
    return path


# -- profile keys -----------------------------------------------------------------------------

def test_defaults_abort_the_step_and_allow_three_recoveries_locally_one_remotely(tmp_path):
    local = load_profile(write(tmp_path, LOCAL)).ramp
    assert (local.abort, local.max_aborts, local.recovery_timeout_s, local.recovery_probe_s) == ("step", 3, 60, 5)
    remote = load_profile(write(tmp_path, REMOTE, name="r.toml"))
    assert remote.ramp.abort == "step" and remote.ramp.max_aborts == 1
    # a remote target waits for its health path only when the profile names one
    assert remote.target.health_path is None


def test_the_keys_can_be_set(tmp_path):
    ramp = load_profile(write(tmp_path, LOCAL, 'abort = "run"\nmax_aborts = 2\nrecovery_timeout_s = 30\n'
                                               'recovery_probe_s = 3\n')).ramp
    assert (ramp.abort, ramp.max_aborts, ramp.recovery_timeout_s, ramp.recovery_probe_s) == ("run", 2, 30, 3)


@pytest.mark.parametrize("extra, message", [
    ('abort = "steps"\n', "[ramp.abort] expected one of run, step, got 'steps' (did you mean 'step'?)"),
    ("abort = true\n", "[ramp.abort] expected a non-empty string, got True (a boolean)"),
    ("max_aborts = 0\n", "[ramp.max_aborts] expected a whole number between 1 and 100, got 0"),
    ("max_aborts = 1.5\n", "[ramp.max_aborts] expected a whole number, got 1.5 (a number)"),
    ("recovery_timeout_s = nan\n", "[ramp.recovery_timeout_s] expected a finite number, got nan"),
    ("recovery_probe_s = inf\n", "[ramp.recovery_probe_s] expected a finite number, got inf"),
    ("recovery_probe_s = 0.5\n", "[ramp.recovery_probe_s] expected a number between 1 and 600, got 0.5"),
    ("recovery_timeout_s = 4\nrecovery_probe_s = 5\n",
     "[ramp.recovery_timeout_s] must be at least recovery_probe_s (5 s): no probe could finish in it, got 4"),
    ("max_abort = 2\n", "[ramp.max_abort] unknown key (did you mean 'max_aborts'?)"),
    ("abort_latency_ms = nan\n", "[ramp.abort_latency_ms] expected a finite number, got nan"),
])
def test_bad_values_give_one_clear_error(tmp_path, extra, message):
    with pytest.raises(ProfileError) as caught:
        load_profile(write(tmp_path, LOCAL, extra))
    text = str(caught.value)
    assert message in text and "p.toml" in text and "\n" not in text


def test_a_remote_health_path_must_be_a_path(tmp_path):
    text = REMOTE.replace('allowed_hosts = ["127.0.0.1"]', 'allowed_hosts = ["127.0.0.1"]\nhealth_path = "ready"')
    with pytest.raises(ProfileError, match=r"\[target.health_path\] expected a path starting with '/'"):
        load_profile(write(tmp_path, text))
    text = text.replace('"ready"', '"/ready"')
    assert load_profile(write(tmp_path, text)).target.health_path == "/ready"


# -- plan -------------------------------------------------------------------------------------

def test_plan_shows_the_abort_rules_and_bounds_the_recoveries(tmp_path):
    result = CliRunner().invoke(cli, ["plan", str(write(tmp_path, LOCAL))])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Hard abort: errors above 50% of the last 2 s, or a request waiting longer than 10000 ms" in out
    assert 'On an abort (abort = "step")' in out and "up to 60 s for the target to recover" in out
    assert "5 s probe at 4 req/s within the SLO" in out
    assert "max_aborts = 3: the run recovers from 3 aborted steps" in out
    assert "never ends the run" in out
    assert "including 3 recoveries of up to 60 s" in out
    planned = plan_profile(load_profile(write(tmp_path, LOCAL)))
    assert len(planned.recoveries) == 3 and planned.recovery_requests == 3 * 4 * 60
    assert f"plus at most {planned.recovery_requests} in recovery probes" in out


@pytest.mark.parametrize("extra, expected, absent", [
    ("", "max_aborts = 1 (the default for a remote target: a shared environment should be overloaded as few "
         "times as possible): the run recovers from 1 aborted step;", None),
    ('abort = "run"\n', 'On an abort (abort = "run"): the run ends at once with status aborted (exit code 3).',
     "max_aborts"),
])
def test_plan_for_a_remote_target(tmp_path, extra, expected, absent):
    path = write(tmp_path, REMOTE, extra)
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert expected in result.output
    if absent:
        assert absent not in result.output
        assert plan_profile(load_profile(path)).recoveries == ()


# -- the recorder: a failing target or a stalled generator --------------------------------------

T0 = 1_800_000_000.0


class Feed:
    """Messages shaped like the engine's (see loadgen/engine/protocol.py) for one step."""

    def __init__(self, step_id: int = 0, rate: float = 10.0, late_tolerance_ms: float = 25.0):
        self.recorder = LoadRecorder(SLO, late_tolerance_ms=late_tolerance_ms)
        self.recorder.begin_step(StepInfo(step_id, "ramp", 1, rate))
        self.step_id = step_id

    def done(self, *rows) -> None:
        """rows: (due offset s, send delay ms or None, latency ms or None, error or None)"""
        self.recorder.feed({"type": "done", "rows": [[self.step_id, T0 + due, delay, latency, error]
                                                     for due, delay, latency, error in rows]})

    def tick(self, second: float, sent: int = 10, late: int = 0, oldest_s: float = 0.1, in_flight: int = 1):
        counters = {str(self.step_id): {"sent": sent, "late": late}} if sent else {}
        return self.recorder.feed({"type": "tick", "time_unix_s": T0 + second, "counters": counters,
                                   "in_flight": in_flight, "oldest_in_flight_s": oldest_s, "cpu_pct": 5.0})

    def healthy_seconds(self, seconds) -> None:
        for second in seconds:
            self.done(*[(second - 1 + i / 10, 1.0, 20.0, None) for i in range(10)])
            self.tick(second)

    def check(self, error_pct: float = 50.0, latency_ms: float = 1500.0):
        return self.recorder.safety_check(error_pct, latency_ms)


def test_a_healthy_step_trips_nothing():
    feed = Feed()
    feed.healthy_seconds(range(1, 8))
    assert feed.check() is None and feed.recorder.generator_stall() is None


def test_errors_from_the_target_abort():
    feed = Feed()
    feed.healthy_seconds(range(1, 4))
    for second in (4, 5):
        feed.done(*[(second - 1 + i / 10, 1.0, 5.0, "http_503" if i % 2 else None) for i in range(10)])
        feed.tick(second)
    safety = feed.check(error_pct=40)
    assert safety.action == "abort" and safety.stall is None
    assert safety.reason == "errors at 50% over the last 2 s (abort threshold 40%)"


def test_a_request_stuck_on_the_target_aborts():
    feed = Feed()
    feed.healthy_seconds(range(1, 4))
    feed.tick(4, oldest_s=2.0)
    safety = feed.check(latency_ms=1500)
    assert safety.action == "abort" and "a request has waited 2000 ms" in safety.reason


def test_a_gap_in_the_ticks_is_a_stall_and_its_wait_does_not_abort():
    # The generator was frozen from just after second 3 until second 6.3: no tick for seconds
    # 4 and 5, and the request sent at 2.9 (or the burst of overdue arrivals) has waited 3.4 s.
    feed = Feed()
    feed.healthy_seconds(range(1, 4))
    assert feed.recorder.abort_reason(50, 1500) is None
    feed.tick(6, sent=30, late=28, oldest_s=3.4, in_flight=30)
    assert feed.recorder.abort_reason(50, 1500) == "a request has waited 3400 ms (abort threshold 1500 ms)"
    stall = feed.recorder.generator_stall()
    assert stall is not None and stall.gaps == ((T0 + 3, T0 + 6),) and stall.gap_s == 3
    safety = feed.check(latency_ms=1500)
    assert safety.action == "stall", safety
    assert "two of its once-a-second ticks came 3 s apart" in safety.stall.describe()
    assert safety.stall.as_event()["gap_s"] == 3


def test_the_burst_after_a_stall_does_not_abort_on_errors_either():
    # overdue arrivals sent at once on resuming overflow the cap on requests in flight (dropped)
    # or time out: all of them were due, or in flight, while the generator was frozen
    feed = Feed()
    feed.healthy_seconds(range(1, 4))
    feed.tick(6, sent=30, late=28, oldest_s=0.3)
    feed.done(*[(3.1 + i / 10, None, None, "dropped") for i in range(20)],   # due in the gap
              (2.8, 1.0, 3400.0, "timeout"),                                # in flight through it
              *[(6.1 + i / 10, 2.0, 30.0, None) for i in range(5)])         # after it, fine
    feed.tick(7, oldest_s=0.2)
    assert feed.recorder.abort_reason(50, 1500).startswith("errors at 81%")
    safety = feed.check(error_pct=50)
    assert safety.action == "stall" and safety.stall.explained == 21


def test_late_arrivals_without_a_gap_are_a_stall():
    # a starved generator: every tick arrives, but most arrivals go out 400 ms late and the
    # requests waiting longest waited that long for the generator, not for the target
    feed = Feed()
    feed.healthy_seconds(range(1, 3))
    for second in (3, 4):
        feed.done(*[(second - 1 + i / 10, 400.0, 450.0, None) for i in range(10)])
        feed.tick(second, sent=10, late=8, oldest_s=0.6)
    stall = feed.recorder.generator_stall()
    assert stall is not None and not stall.gaps and stall.late_share == pytest.approx(0.8)
    assert stall.max_send_delay_ms == 400.0
    assert feed.check(latency_ms=500).action == "stall"
    assert "80% of the arrivals of the last 2 s were sent late" in stall.describe()


def test_a_target_that_fails_on_its_own_during_a_stall_still_aborts():
    # A gap of 2 s, but a request has been stuck on the target for 12 s: 10 s of it are the
    # target's own, past the 5 s threshold.
    feed = Feed()
    feed.healthy_seconds(range(1, 4))
    feed.tick(5, oldest_s=12.0)
    safety = feed.check(latency_ms=5000)
    assert safety.action == "abort" and safety.stall is not None
    assert "a request has waited 10000 ms" in safety.reason and "leaving out" in safety.reason
    # ... and 503s to arrivals sent on time after the gap are the target's too
    feed = Feed()
    feed.healthy_seconds(range(1, 4))
    feed.tick(5, sent=10, late=0, oldest_s=0.1)
    feed.done(*[(5.0 + i / 10, 1.0, 4.0, "http_503") for i in range(10)])
    feed.tick(6, oldest_s=0.1)
    safety = feed.check(error_pct=50)
    assert safety.action == "abort" and safety.stall is not None and safety.reason.startswith("errors at 100%")


def test_a_late_wake_of_the_tick_loop_is_not_a_stall():
    feed = Feed()
    feed.healthy_seconds([1, 2, 3])
    feed.tick(4)  # a tick may be stamped a second off when the loop wakes late, never two
    assert feed.recorder.generator_stall() is None


def test_forgetting_the_window_after_a_halted_step():
    feed = Feed()
    for second in (1, 2):
        feed.done(*[(second - 1 + i / 10, 1.0, 5.0, "http_503") for i in range(10)])
        feed.tick(second)
    assert feed.check().action == "abort"
    feed.recorder.reset_safety()
    assert feed.check() is None
    feed.tick(3)
    assert feed.check() is None  # no gap is seen across the reset either


# -- the experiment's abort handling, against an engine stand-in -------------------------------

class FakeEngine:
    """Stands in for the engine process: offers the rate in real time and answers each arrival
    after 5 ms, with ``http_503`` from ``fail_from_rps`` up, in the engine's messages."""

    def __init__(self, fail_from_rps: float = 0.0):
        self.fail_from_rps = fail_from_rps
        self.rate = 0.0
        self.step_id: int | None = None
        self.start = 0.0
        self.index = 0
        self.rows: list[list] = []
        self.sent: dict[int, int] = {}
        self.queue: list[dict] = []
        self.next_tick = float(int(time.time()) + 1)
        self.rates: list[tuple[int, float]] = []

    def set_rate(self, step_id: int, rate_rps: float) -> None:
        self.step_id, self.rate, self.start, self.index = step_id, rate_rps, time.time(), 0
        self.rates.append((step_id, rate_rps))

    def pause(self) -> None:
        self._launch(time.time())
        self.queue += [{"type": "done", "rows": self.rows}, {"type": "drained", "step_id": self.step_id}]
        self.rows, self.rate = [], 0.0

    def stop(self) -> None:
        self.pause()
        self.queue.append({"type": "stopped"})

    def _launch(self, now: float) -> None:
        while self.rate > 0 and self.start + self.index / self.rate <= now:
            due = self.start + self.index / self.rate
            self.index += 1
            error = "http_503" if self.rate >= self.fail_from_rps else None
            self.rows.append([self.step_id, due, 1.0, 5.0, error])
            self.sent[int(due)] = self.sent.get(int(due), 0) + 1

    def messages(self, until_monotonic: float):
        while True:
            while self.queue:
                yield self.queue.pop(0)
            now = time.time()
            self._launch(now)
            if now >= self.next_tick:
                second = self.next_tick
                self.next_tick += 1
                yield {"type": "done", "rows": self.rows}
                self.rows = []
                sent = sum(self.sent.pop(s) for s in [s for s in self.sent if s < second])
                yield {"type": "tick", "time_unix_s": second, "counters": {"0": {"sent": sent}}, "in_flight": 0,
                       "oldest_in_flight_s": 0.0, "cpu_pct": 1.0}
            left = until_monotonic - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.02))


FAST = LOCAL.replace("start_rps = 4\nstep_rps = 4\nmax_rps = 12", "start_rps = 20\nstep_rps = 20\nmax_rps = 60")


def experiment(tmp_path: Path, engine: FakeEngine, tasks_running: int = 1, extra: str = "") -> Experiment:
    profile = load_profile(write(tmp_path, FAST, "recovery_timeout_s = 2\nrecovery_probe_s = 1\n" + extra))
    run = Experiment(profile, RunOptions(out=tmp_path / "run"), None)
    run._create_writer(None, {"kind": "local", "tasks": 1}, {})
    run.engine = engine
    run._controller = SimpleNamespace(current=lambda: tasks_running)
    return run


def kinds(run: Experiment) -> list[str]:
    run.writer.close()
    return [e["kind"] for e in RunDirectory.open(run.writer.path).events()
            if e["kind"] not in ("step_start", "step_end", "phase_start")]


def test_a_target_that_keeps_failing_probes_ends_the_run_aborted(tmp_path):
    run = experiment(tmp_path, FakeEngine(fail_from_rps=0))
    with pytest.raises(_Aborted, match=r"step 0 at 40 req/s was aborted \(errors at 100% .*\) and the target "
                                       r"did not recover: no probe at 20 req/s met the SLO within 2 s \(last: step 1"):
        run._measured_step("refine", 1, 40.0)
    assert [(r.phase, r.end_reason, r.valid, r.slo_met) for r in run.steps][:2] == [
        ("refine", "abort", True, False), ("recovery", "abort", False, False)]  # the probe trips the rule too
    assert run.steps[1].invalid_reason == "recovery probe, not a measurement"
    assert kinds(run) == ["abort", "abort", "recovery_failed"]  # the probe's own abort stops its load too
    events = RunDirectory.open(run.writer.path).events()
    probe_abort = [e for e in events if e["kind"] == "abort"][1]
    assert probe_abort["phase"] == "recovery" and probe_abort["scope"] == "step"
    assert run._aborts == 1  # a probe never counts as an aborted step


def test_a_target_that_does_not_come_back_healthy_ends_the_run_aborted(tmp_path):
    run = experiment(tmp_path, FakeEngine(fail_from_rps=0), tasks_running=0)
    with pytest.raises(_Aborted, match=r"the target was not healthy within 2 s \(0 of 1 tasks running and healthy\)"):
        run._measured_step("refine", 1, 40.0)
    assert len(run.steps) == 1  # no probe without a healthy target
    assert kinds(run) == ["abort", "recovery_failed"]


def test_the_run_recovers_then_ends_on_one_abort_more_than_max_aborts(tmp_path):
    engine = FakeEngine(fail_from_rps=40)
    run = experiment(tmp_path, engine, extra="max_aborts = 1\n")
    row = run._measured_step("refine", 1, 40.0)
    assert row.end_reason == "abort" and row.valid and not row.slo_met
    assert run.steps[-1].phase == "recovery" and run.steps[-1].slo_met  # the probe at 20 req/s passed
    assert run._past_the_edge(40.0) and run._past_the_edge(50.0) and not run._past_the_edge(39.0)
    assert [rate for _, rate in engine.rates] == [40.0, 20.0]
    with pytest.raises(_Aborted, match=r"that is 2 aborted steps, more than ramp.max_aborts \(1\)"):
        run._measured_step("refine", 1, 45.0)
    assert kinds(run) == ["abort", "recovery", "abort"]


def test_an_abort_at_the_first_rate_of_the_ramp_ends_the_run_without_a_probe(tmp_path):
    run = experiment(tmp_path, FakeEngine(fail_from_rps=0))
    with pytest.raises(_Aborted, match=r"at the ramp's first rate \(20 req/s\): there is no lower rate"):
        run._measured_step("ramp", 1, 20.0)
    assert len(run.steps) == 1 and kinds(run) == ["abort"]


def test_abort_run_ends_the_run_at_the_first_abort(tmp_path):
    run = experiment(tmp_path, FakeEngine(fail_from_rps=0), extra='abort = "run"\n')
    with pytest.raises(_Aborted, match=r"^errors at 100% over the last 2 s"):
        run._measured_step("refine", 1, 40.0)
    assert [r.end_reason for r in run.steps] == ["abort"]
    assert kinds(run) == ["abort"]  # the run-level abort event is written by Experiment.run
