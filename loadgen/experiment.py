"""The staged-ramp experiment: ramp at n tasks, refine, replay at 2n, beyond, restore.

This is the orchestrator. It runs without gevent: the load comes from the engine process
(``scalefinder.loadgen.engine``), metrics from the profile's sources, task counts from its capacity
controller. Which step comes next is the phase planner's decision (``planner.py``): the
experiment asks it for the next action, performs it and feeds each step's result back. What it
keeps is running the steps: the hold, the hard abort and the recovery after it, the repeat after
a stall of the load generator or to confirm a breach, and the run's time budget. Everything is
written to the run directory (``manifest.py`` creates it) as it happens, so a run stopped at any
point leaves a readable partial run, and the original task count is put back whatever ends the
run: success, an error, a safety abort, Ctrl-C or SIGTERM (``signals.py``).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from scalefinder.loadgen.capacity import CONTROLLER_KINDS
from scalefinder.loadgen.context import RunContext
from scalefinder.loadgen.engine.client import EngineProcess, check_master_port
from scalefinder.loadgen.engine.protocol import ANY_FREE_PORT, choose_master_port, engine_config
from scalefinder.loadgen.engine.recorder import ABORT_WINDOW_S, LoadRecorder, Safety, StepInfo
from scalefinder.loadgen.manifest import create_run_writer, source_descriptions
from scalefinder.loadgen.plan import aligned_hold_end, hold_period_s
from scalefinder.loadgen.planner import (CapacityFound, Done, EndRun, PhasePlanner, RunStep, ScaleTo, StartPhase,
                                         StepAbort, StepResult, Warn)
from scalefinder.loadgen.profile import Profile, with_secrets
from scalefinder.loadgen.signals import RunSignals, Stopped
from scalefinder.loadgen.sources import SOURCE_KINDS
from scalefinder.core import catalog
from scalefinder.core.errors import InfrastructureError, Interrupted, ScalefinderError
from scalefinder.core.models import StepRow
from scalefinder.core.redact import redact_url
from scalefinder.core.rundir import (STATUS_ABORTED, STATUS_COMPLETE, STATUS_FAILED, STATUS_INTERRUPTED,
                                RunWriter, utc_now)

logger = logging.getLogger(__name__)

# How often the hold loop looks at steadiness and the clock between engine messages.
CHECK_INTERVAL_S = 0.25
# Steadiness: the second half of a hold's measured part must agree with the first half within
# this share of the first half's mean (latency; utilization metrics), or within the floor.
STEADY_LATENCY_SHARE = 0.2
STEADY_LATENCY_FLOOR_MS = 5.0
STEADY_METRIC_SHARE = 0.1
STEADY_METRIC_FLOOR = {"percent": 2.0, "requests": 1.0, "requests/s": 1.0, "jobs": 1.0}
STEADY_MIN_SECONDS = 4
# end_reason of a failed step that is repeated at once at the same rate (ramp.confirm_breach),
# or of a step the load generator's own stall cut short, repeated likewise.
END_RETRIED = "retried"
# end_reason of a step stopped by the abort rule, and of one cut short by a stall of the load
# generator that could not be repeated again (it stays invalid).
END_ABORT = "abort"
END_STALLED = "generator_stall"
# The phase (and step phase) of the probes that check a target has recovered from an abort.
RECOVERY = "recovery"
PROBE_INVALID_REASON = "recovery probe, not a measurement"
# Extra time allowed for a step's last requests to finish, beyond the request timeout.
DRAIN_SLACK_S = 2.0
# After an abort, requests in flight get this long to finish before they are cut: with the one
# second the engine takes to cut them, the load is gone within two seconds of the decision.
ABORT_DRAIN_S = 1.0
HALT_POLL_S = 0.05
# How often recovery looks at the target's health, and how long one health request may take.
HEALTH_POLL_S = 1.0
HEALTH_REQUEST_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class RunOptions:
    out: Path | None = None
    workers: int = 0
    expect_workers: int = 0
    master_bind_host: str = "127.0.0.1"
    master_port: int | None = None  # None: not chosen (see ``choose_master_port``)
    reports_dir: Path = Path("reports")
    context_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """What the live display shows: sent every second during steps, and as a note between them."""

    phase: str
    step_id: int | None
    tasks: int
    offered_rps: float
    achieved_rps: float
    p95_ms: float | None
    slo_percentile: float
    slo_latency_ms: float
    errors: int
    elapsed_s: float
    max_duration_s: float
    capacity_rps: float | None


@dataclass(frozen=True)
class RunResult:
    path: Path
    status: str
    reason: str | None
    capacity_rps: float | None
    steps: tuple[StepRow, ...]
    warnings: tuple[str, ...]


class _Aborted(Exception):
    """A safety rule ended the run."""


class _StepAborted(Exception):
    """The abort rule fired during a step: the target is failing at this rate."""


class _GeneratorStalled(Exception):
    """The abort rule fired, but only because the load generator itself stalled."""

    def __init__(self, safety: Safety):
        super().__init__(safety.reason)
        self.safety = safety


class _OutOfTime(Exception):
    """The profile's max_duration_s would be exceeded by another step."""


def run_experiment(profile: Profile, options: RunOptions = RunOptions(),
                   on_progress: Callable[[Progress], None] | None = None) -> RunResult:
    """Run the profile's experiment into a new run directory and return where and how it ended."""
    return Experiment(profile, options, on_progress).run()


class Experiment:
    def __init__(self, profile: Profile, options: RunOptions, on_progress: Callable[[Progress], None] | None):
        self.profile = profile
        # What is sent: the profile with its environment references filled in. It stays in
        # memory; everything recorded or shown comes from ``profile``, which keeps them.
        self._sending = with_secrets(profile)
        self.options = options
        self.on_progress = on_progress or (lambda progress: None)
        self.writer: RunWriter | None = None
        self.engine: EngineProcess | None = None
        self.recorder = LoadRecorder(profile.slo, profile.workload.late_tolerance_ms)
        self.steps: list[StepRow] = []
        self.capacity_rps: float | None = None
        self._pending_events: list[tuple[str, dict[str, Any]]] = []
        self._events_lock = threading.Lock()
        self._crashes = 0
        self._metric_rows: deque[dict[str, Any]] = deque(maxlen=20000)
        self._metric_lock = threading.Lock()
        self._phase = "starting"
        self._tasks = profile.capacity.tasks
        self._step_id = 0
        self._started_monotonic = time.monotonic()
        self._hold_period_s = hold_period_s(profile)  # holds end on its boundaries (None: anywhere)
        self._controller: Any = None
        # what to do next, from the results so far; it also keeps the abort budget
        self.planner = PhasePlanner(profile.ramp, profile.capacity.tasks)
        self._stalled_steps: set[int] = set()  # cut short by a generator stall and to be repeated
        self._signals = RunSignals()
        self._fetched: set[str] = set()  # retrospective sources fetched (or failed) after the run

    # -- the run as a whole ---------------------------------------------------------------------
    def run(self) -> RunResult:
        sources: dict[str, Any] = {}
        with self._signals.stop_the_run():
            stack = contextlib.ExitStack()
            try:
                self._set_up_and_run(stack, sources)
                status, reason, error = STATUS_COMPLETE, None, None
            except (_Aborted, Stopped, Exception) as exc:
                status, reason, error = self._outcome(exc)
            finally:
                self._signals.defer()  # nothing may cut the restore short
                try:
                    stack.close()
                except Exception as exc:  # restoring failed: the most important thing to say
                    status, reason = STATUS_FAILED, f"restoring the task count failed: {exc}"
                    error = exc if isinstance(exc, ScalefinderError) else InfrastructureError(reason)
            # a failed or interrupted run asked to stop again during its clean-up fetches nothing
            stopped_twice = self._signals.during_cleanup if status in (STATUS_FAILED, STATUS_INTERRUPTED) else None
            if self._signals.during_cleanup and status in (STATUS_COMPLETE, STATUS_ABORTED):
                # the restore was let finish, but the run was still asked to stop
                status, reason, error = self._outcome(Stopped(self._signals.during_cleanup))
            if self.writer is not None:
                # Every run fetches what its recorded steps measured: an abort leaves valid steps,
                # and so does a failed scale-up or an interruption (the ramp before it).
                status, reason, error = self._fetch_after_the_run(sources, status, reason, error, stopped_twice)
            if self.writer is not None:
                self.writer.update_manifest(capacity_result={"capacity_rps": self.capacity_rps})
                self.writer.finish(status, reason)
        if error is not None:
            raise error
        return RunResult(self.writer.path, status, reason, self.capacity_rps, tuple(self.steps),
                         tuple(self.writer.manifest.get("warnings", [])))

    def _set_up_and_run(self, stack: contextlib.ExitStack, sources: dict[str, Any]) -> None:
        """Start everything, each with its undo on ``stack``, then run the phases."""
        if self._distributed and self._master_port != ANY_FREE_PORT:  # fail before the cluster starts
            check_master_port(self.options.master_bind_host, self._master_port)
        cluster = stack.enter_context(self._open_target())
        context = RunContext(profile=self.profile, cluster=cluster, on_event=self._on_event,
                             options=dict(self.options.context_options))
        controller = _build(CONTROLLER_KINDS, self.profile.capacity.controller, self.profile.capacity.config,
                            context)
        sources.update({kind: _build(SOURCE_KINDS, kind, config, context)
                        for kind, config in self.profile.sources.items()})
        self._controller = controller
        snapshot = controller.snapshot()
        self._create_writer(cluster, snapshot, sources)
        # Registered before prepare(), so that a prepare failing part-way (an autoscaler already
        # held, then an error) is undone too.
        stack.callback(self._restore, controller, snapshot)
        controller.prepare()
        if controller.current() != self.profile.capacity.tasks:
            self._scale(controller, self.profile.capacity.tasks)
        self._start_sources(sources, stack)
        self.engine = stack.enter_context(EngineProcess(self._engine_config(cluster)))
        stack.callback(self._stop_load)
        self._run_phases(controller)

    def _outcome(self, exc: BaseException) -> tuple[str, str, ScalefinderError | None]:
        """The run's final status, reason and the error to raise, for what ended it."""
        if isinstance(exc, _Aborted):
            self._event("abort", scope="run", reason=str(exc))
            return STATUS_ABORTED, str(exc), None
        if isinstance(exc, Stopped):
            self._event("interrupt", signal=exc.signal_name)
            return STATUS_INTERRUPTED, f"stopped by {exc.signal_name}", Interrupted(
                f"the run was stopped by {exc.signal_name}; {self._partial_run_text()}")
        if isinstance(exc, ScalefinderError):
            return STATUS_FAILED, str(exc), exc
        logger.exception("the run failed")
        reason = f"{type(exc).__name__}: {exc}"
        return STATUS_FAILED, reason, InfrastructureError(
            f"the run failed ({reason}); {self._partial_run_text()}")

    @contextlib.contextmanager
    def _open_target(self) -> Iterator[Any]:
        target = self.profile.target
        if not target.is_local:
            yield None
            return
        from scalefinder.loadgen.cluster import LocalCluster

        self._progress_note("starting the local cluster")
        with LocalCluster(local_cluster_spec(self.profile, self.profile.capacity.tasks),
                          on_event=self._on_event) as cluster:
            yield cluster

    def _create_writer(self, cluster: Any, snapshot: dict[str, Any], sources: dict[str, Any]) -> None:
        """The run directory and its manifest; the events that came before it are written first."""
        self.writer = create_run_writer(self.profile, started=utc_now(), out=self.options.out,
                                        reports_dir=self.options.reports_dir, cluster=cluster, snapshot=snapshot,
                                        sources=sources, distributed=self._distributed,
                                        workers=self.options.workers + self.options.expect_workers)
        with self._events_lock:
            pending, self._pending_events = self._pending_events, []
        for kind, detail in pending:
            self.writer.event(kind, **detail)

    @property
    def _distributed(self) -> bool:
        return bool(self.options.workers or self.options.expect_workers)

    @property
    def _master_port(self) -> int:
        return choose_master_port(self.options.master_port, self.options.expect_workers)

    def _engine_config(self, cluster: Any) -> dict[str, Any]:
        url = cluster.url if cluster is not None else self._sending.target.url
        return engine_config(self._sending, url, workers=self.options.workers,
                             expect_workers=self.options.expect_workers,
                             master_bind_host=self.options.master_bind_host, master_port=self._master_port)

    def _start_sources(self, sources: dict[str, Any], stack: contextlib.ExitStack) -> None:
        for source in sources.values():
            if source.live:
                source.start(self._on_metrics)
            # Retrospective sources may hold resources too (the local Prometheus exporter);
            # they are fetched from their servers after the run, so stopping them here is safe.
            stack.callback(source.stop)

    def _fetch_after_the_run(self, sources: dict[str, Any], status: str, reason: str | None,
                             error: ScalefinderError | None,
                             stopped_twice: str | None) -> tuple[str, str | None, ScalefinderError | None]:
        """Fetch the retrospective sources for the recorded steps, whatever ended the run; return
        the run's status, reason and error.

        A signal stops the fetch (CloudWatch waits ``settle_s``, 180 s by default, before it reads):
        the sources not fetched are named in a warning with the command that fetches them later,
        and the run directory is finished whole. A complete or aborted run stopped here ends as
        interrupted, as before; a failed or interrupted run keeps its status and error.
        ``stopped_twice`` names the signal that already asked a failed or interrupted run to stop
        during its clean-up: then nothing is fetched.
        """
        self._signals.during_cleanup = None  # accounted for in the status already
        try:
            if stopped_twice:
                raise Stopped(stopped_twice)
            self._signals.resume()
            self._fetch_retrospective(sources, stopped_once=status == STATUS_INTERRUPTED)
        except Stopped as exc:
            self._signals.defer()  # the run directory is finished whole
            not_fetched = self._note_not_fetched(sources, exc.signal_name)
            if status in (STATUS_COMPLETE, STATUS_ABORTED):
                status, reason, error = self._outcome(exc)
            else:
                self._event("interrupt", signal=exc.signal_name, during="metrics fetch")
            if isinstance(error, Interrupted) and not_fetched:
                error = Interrupted(f"{error}; {not_fetched}")
        finally:
            self._signals.defer()
        return status, reason, error

    def _fetch_retrospective(self, sources: dict[str, Any], stopped_once: bool = False) -> None:
        """Append each retrospective source's rows for the windows of the recorded steps.

        A source's rows are appended only once it has them all, and with signals deferred, so a
        fetch stopped part-way leaves nothing of that source behind.
        """
        windows = [(step.start_unix_s, step.end_unix_s) for step in self.steps]
        for kind, source in sources.items():
            if source.live or not windows or kind in self._fetched:
                continue
            hint = f"; Ctrl-C{' again' if stopped_once else ''} skips it" if source.settle_s else ""
            self._progress_note(f"fetching {kind} metrics (waiting {source.settle_s:g} s for them to settle{hint})")
            try:
                rows = source.fetch_windows(windows)
            except ScalefinderError as exc:
                self._fetched.add(kind)
                self.writer.add_warning(f"{kind} metrics could not be fetched: {exc}; run "
                                        f"`scalefinder fetch-metrics {self.writer.path}` to fetch them again")
                continue
            self._signals.defer()  # the rows, warnings and description are written whole
            try:
                self.writer.append_metrics(rows)
                self._fetched.add(kind)
                for warning in source.warnings:
                    self.writer.add_warning(f"{kind} metrics incomplete: {warning}")
                self.writer.update_manifest(sources=source_descriptions(sources))
            finally:
                self._signals.resume()
            if self._signals.during_cleanup:  # a signal came while writing: stop now
                name, self._signals.during_cleanup = self._signals.during_cleanup, None
                raise Stopped(name)

    def _note_not_fetched(self, sources: dict[str, Any], signal_name: str) -> str | None:
        """Warn that the retrospective sources not fetched yet were skipped; return what to do."""
        pending = [kind for kind, source in sources.items() if not source.live and kind not in self._fetched]
        if not pending or not self.steps:
            return None
        todo = f"run `scalefinder fetch-metrics {self.writer.path}` to fetch them"
        self.writer.add_warning(f"{', '.join(pending)} metrics were not fetched: stopped by {signal_name}; {todo}")
        return f"its {', '.join(pending)} metrics were not fetched: {todo}"

    def _stop_load(self) -> None:
        """Stop all load (within two seconds) before anything else is undone."""
        engine = self.engine
        if engine is None or self.recorder.stopped:
            return
        try:
            engine.stop()
            deadline = time.monotonic() + 2.0
            for message in engine.messages(deadline):
                self._feed(message, check_abort=False)  # the load is already being stopped
                if self.recorder.stopped:
                    break
        except ScalefinderError as exc:
            logger.warning("stopping the load generator: %s", exc)

    def _halt(self, step_id: int) -> None:
        """End a step that must not go on, within two seconds, and leave the engine ready for the
        next step: no new arrivals at once, requests in flight given ABORT_DRAIN_S to finish (so
        what the target answered is measured), then cut."""
        self.engine.pause()
        deadline = time.monotonic() + ABORT_DRAIN_S
        while step_id not in self.recorder.drained and time.monotonic() < deadline:
            self._pump(min(deadline, time.monotonic() + HALT_POLL_S), check_abort=False)
        if step_id not in self.recorder.drained:
            self._stop_load()
            self.recorder.stopped = False  # a cut is not the end of the run: later steps may stop again
        self.recorder.reset_safety()

    def _restore(self, controller: Any, snapshot: dict[str, Any]) -> None:
        self._phase = "restore"
        if self.writer is not None:
            self.writer.start_phase("restore", snapshot.get("tasks", self.profile.capacity.tasks))
        self._progress_note("restoring the original task count")
        try:
            controller.restore(snapshot)
            tasks = controller.current()
        except BaseException as exc:
            # recorded, so that `scalefinder restore RUN_DIR` may try again without --force
            self._record_restore(False, f"{type(exc).__name__}: {exc}" if not isinstance(exc, ScalefinderError)
                                 else str(exc))
            raise
        self._record_restore(True)
        self._tasks = tasks
        self._event("restore", tasks=tasks, snapshot=snapshot)

    def _record_restore(self, restored: bool, error: str | None = None) -> None:
        """The manifest's capacity entry says whether the run put its capacity back itself."""
        if self.writer is None:
            return
        capacity = dict(self.writer.manifest.get("capacity") or {})
        capacity.update(restored=restored, restore_error=error)
        self.writer.update_manifest(capacity=capacity)

    # -- phases: the planner decides, the experiment performs ----------------------------------------
    def _run_phases(self, controller: Any) -> None:
        try:
            self._perform_plan(controller)
        except _OutOfTime as exc:
            self.writer.add_warning(str(exc))

    def _ramp(self, tasks: int) -> tuple[list[float], float | None]:
        """The ramp alone: the rates that met the SLO and the first that did not (None if the ramp
        never broke)."""
        self.planner = PhasePlanner(self.profile.ramp, tasks, ramp_only=True)
        self._perform_plan(self._controller)
        return self.planner.good_rates, self.planner.first_bad_rps

    def _perform_plan(self, controller: Any) -> None:
        """Ask the planner what to do next and do it, until it says it is done."""
        while not isinstance(action := self.planner.next_action(), Done):
            if isinstance(action, RunStep):
                self.planner.record(self._planned_step(action))
            elif isinstance(action, StartPhase):
                self._begin_phase(action.name, action.tasks)
            elif isinstance(action, Warn):
                self.writer.add_warning(action.message)
            elif isinstance(action, CapacityFound):
                self.capacity_rps = action.capacity_rps
                self.writer.update_manifest(capacity_result={"capacity_rps": self.capacity_rps})
            elif isinstance(action, ScaleTo):
                self._scale(controller, action.tasks)
            else:
                raise InfrastructureError(f"the experiment cannot perform {action!r}")
        logger.debug("phases over: %s", action.reason)

    def _planned_step(self, step: RunStep) -> StepResult:
        crashes_before = self._crashes
        row = self._measured_step(step.phase, step.tasks, step.offered_rps, confirm=step.confirm)
        return StepResult(step_id=row.step_id, phase=step.phase, tasks=step.tasks, offered_rps=step.offered_rps,
                          slo_met=bool(row.slo_met), valid=bool(row.valid),
                          aborted=row.end_reason == END_ABORT, crashed=self._crashes > crashes_before,
                          invalid_reason=row.invalid_reason)

    @property
    def _aborts(self) -> int:
        """Aborted steps so far (recovery probes not counted)."""
        return self.planner.aborts

    def _past_the_edge(self, rate_rps: float) -> bool:
        return self.planner.past_the_edge(rate_rps)

    def _begin_phase(self, name: str, tasks: int, **detail: Any) -> None:
        self._phase, self._tasks = name, tasks
        self.writer.start_phase(name, tasks, **detail)

    def _scale(self, controller: Any, tasks: int) -> None:
        self._progress_note(f"scaling to {tasks} tasks")
        before = controller.current()
        controller.scale_to(tasks, self.profile.ramp.scale_timeout_s)
        self._tasks = tasks
        if self.profile.target.kind != "local":  # the local cluster reports its own scale events
            self._event("scale", previous_tasks=before, tasks=tasks)

    # -- one step ---------------------------------------------------------------------------------
    def _measured_step(self, phase: str, tasks: int, rate_rps: float, confirm: bool = False) -> StepRow:
        """One rate of any phase, repeated when its first attempt says nothing about the target.

        A step cut short by a stall of the load generator is repeated once, in every phase.
        With ``confirm`` (``ramp.confirm_breach``, for a step whose failure ends the ramp or
        bounds the refinement) a failed step is also repeated once: a busy host can stall for a
        fraction of a second, and that alone can break one step's SLO or make its arrivals late
        far below the real capacity. A step with a task crash is never repeated (see ``_step``):
        a crash is the target's own limit, not a transient. Neither is an aborted step: the abort
        rule protects the target, and repeating the rate would overload it again. So a rate is
        offered at most three times, and the last attempt decides.
        """
        stall_repeats, confirm_repeats = 1, int(confirm)
        failed_first: StepRow | None = None
        while True:
            row = self._step(phase, tasks, rate_rps, confirm=confirm_repeats > 0, stall_repeat=stall_repeats > 0)
            if row.end_reason != END_RETRIED:
                break
            if row.step_id in self._stalled_steps:
                stall_repeats -= 1
            else:
                confirm_repeats -= 1
                failed_first = row
        if failed_first is not None:
            self._event("breach_check", step_id=failed_first.step_id, repeat_step_id=row.step_id,
                        offered_rps=rate_rps, confirmed=not (row.valid and row.slo_met))
        return row

    def _step(self, phase: str, tasks: int, rate_rps: float, confirm: bool = False, stall_repeat: bool = False,
              probe_s: float | None = None) -> StepRow:
        """Offer one rate and record the step. ``probe_s``: a recovery probe held that long (no early
        end, never repeated, not a measurement)."""
        ramp = self.profile.ramp
        elapsed = time.monotonic() - self._started_monotonic
        now = time.time()
        if elapsed + self._hold_ends(now, probe_s)[0] - now > ramp.max_duration_s:
            raise _OutOfTime(f"max_duration_s ({ramp.max_duration_s:g} s) reached during the {phase} phase; "
                             "the remaining steps were skipped")
        step_id = self._step_id
        self._step_id += 1
        crashes_before = self._crashes
        self.recorder.begin_step(StepInfo(step_id, phase, tasks, rate_rps))
        self._event("step_start", step_id=step_id, phase=phase, tasks=tasks, offered_rps=rate_rps)
        start = time.time()
        end: float | None = None  # set when the hold is over; a stop before that ends the step now
        self.engine.set_rate(step_id, rate_rps)
        try:
            end_reason = self._hold(step_id, start, probe_s)
            end = time.time()
            self.engine.pause()
            self._wait_drained(step_id)
        except _StepAborted as exc:
            return self._aborted_step(step_id, start, end or time.time(), str(exc), probe=probe_s is not None)
        except _GeneratorStalled as exc:
            repeat = stall_repeat and self._crashes == crashes_before
            return self._stalled_step(step_id, start, end or time.time(), exc.safety, repeat, probe_s is not None)
        except Stopped:
            end = end or time.time()
            self._stop_load()
            self._record_step(step_id, start, end, "interrupted", probe=probe_s is not None)
            raise
        return self._record_step(step_id, start, end, end_reason, probe=probe_s is not None,
                                 repeat_failure=confirm and self._crashes == crashes_before)

    def _aborted_step(self, step_id: int, start: float, end: float, reason: str, probe: bool) -> StepRow:
        """The abort rule fired: stop the load, record the step as the breach it is, and either
        end the run or wait for the target to recover and go on, as the planner's abort budget
        says. A probe that trips the rule is a failed probe: recovery goes on trying."""
        info = self.recorder.step
        decided = time.monotonic()
        self._event("abort", scope="step", step_id=step_id, phase=info.phase, tasks=info.tasks,
                    offered_rps=info.offered_rps, reason=reason)
        verdict = None if probe else self.planner.on_abort(StepAbort(step_id, info.phase, info.offered_rps, reason))
        if isinstance(verdict, EndRun) and verdict.whole_run:
            self._stop_load()
            self._record_step(step_id, start, end, END_ABORT, abort_reason=reason,
                              halted_after_s=time.monotonic() - decided)
            raise _Aborted(verdict.reason)
        self._halt(step_id)
        row = self._record_step(step_id, start, end, END_ABORT, abort_reason=reason, probe=probe,
                                halted_after_s=time.monotonic() - decided)
        if verdict is None:
            return row
        if isinstance(verdict, EndRun):
            raise _Aborted(verdict.reason)
        self._recover(row, reason, verdict.resume_phase)
        return row

    def _stalled_step(self, step_id: int, start: float, end: float, safety: Safety, repeat: bool,
                      probe: bool) -> StepRow:
        """The abort rule fired only because the load generator stalled: the step says nothing
        about the target. It ends now, stays in steps.csv as measured but invalid, and is
        repeated once at the same rate (``_measured_step``); a second stall is kept invalid."""
        info = self.recorder.step
        decided = time.monotonic()
        self._halt(step_id)
        halted_after_s = time.monotonic() - decided
        stall = safety.stall
        why = (f"the load generator stalled ({stall.describe()}), which alone set off the abort rule "
               f"({safety.reason})")
        action = "repeat" if repeat and not probe else "invalid"
        self._event("generator_stall", step_id=step_id, phase=info.phase, tasks=info.tasks,
                    offered_rps=info.offered_rps, action=action, abort_rule=safety.reason, **stall.as_event())
        logger.warning("step %d: %s", step_id, why)
        if action == "repeat":
            self._stalled_steps.add(step_id)
            invalid = {"end_reason": END_RETRIED, "invalid_reason": f"{why}; repeated at the same rate"}
        else:
            invalid = {"end_reason": END_STALLED, "invalid_reason": why}
        return self._record_step(step_id, start, end, END_STALLED, probe=probe, override={"valid": False, **invalid},
                                 halted_after_s=halted_after_s)

    def _record_step(self, step_id: int, start: float, end: float, end_reason: str, repeat_failure: bool = False,
                     abort_reason: str | None = None, probe: bool = False,
                     override: dict[str, Any] | None = None, halted_after_s: float | None = None) -> StepRow:
        warmup = self.profile.ramp.warmup_s
        if probe:
            warmup = 0.0  # a probe offers the lowest rate to an idle target: every arrival counts
        elif end_reason == END_ABORT and end - start < warmup + ABORT_WINDOW_S:
            # Cut short before its measured part held the abort window: the whole step is the
            # evidence, or the row would be empty and the analysis could not take it as the breach.
            warmup = 0.0
        row = self.recorder.summarize(step_id, start, end, warmup, end_reason)
        self.recorder.forget(step_id)
        if not row.slo_met and end_reason in ("held", "steady"):
            row = replace(row, end_reason="slo_breach")
        if end_reason == END_ABORT:
            # the abort thresholds lie past the SLO: the run side takes it as the breach
            row = replace(row, slo_met=False)
        if repeat_failure and not (row.valid and row.slo_met):
            row = _marked_for_repeat(row)
        if override:
            row = replace(row, **override)
        if probe:
            # kept as measured (slo_met says whether the target answered within the SLO again),
            # but never a measurement of the service: the analysis leaves it out
            row = replace(row, valid=False, invalid_reason=PROBE_INVALID_REASON)
        self.writer.append_step(row)
        self.steps.append(row)
        detail: dict[str, Any] = {"abort_reason": abort_reason} if abort_reason else {}
        if halted_after_s is not None:  # from the decision to stop until no request was left
            detail["halted_after_s"] = round(halted_after_s, 3)
        self._event("step_end", step_id=step_id, phase=row.phase, tasks=row.tasks,
                    offered_rps=row.offered_rps, achieved_rps=round(row.achieved_rps, 3),
                    slo_met=row.slo_met, valid=row.valid, end_reason=row.end_reason, **detail)
        return row

    # -- recovery after an aborted step --------------------------------------------------------------
    def _recover(self, aborted: StepRow, reason: str, resume_phase: str | None) -> None:
        """Wait until the target is healthy and answers a low-rate probe within the SLO, then let
        ``resume_phase`` go on (if any); within ``recovery_timeout_s``, or the run ends ``aborted``.

        Healthy means every task the run expects is running and taking traffic (as the capacity
        controller counts them) and, for a remote target whose profile names a health path, that
        path answers 2xx. The probe offers ``start_rps`` for ``recovery_probe_s``; a failed probe
        is followed by a pause as long as a probe, so a struggling target is never loaded more
        than half of the time, and only at the lowest rate of the ramp.
        """
        ramp = self.profile.ramp
        tasks = self._tasks
        self._begin_phase(RECOVERY, tasks, after_step=aborted.step_id)
        self._progress_note(f"step {aborted.step_id} aborted; waiting for the target to recover")
        began = time.monotonic()
        deadline = began + ramp.recovery_timeout_s
        probes: list[StepRow] = []
        healthy_after: float | None = None
        while True:
            problem = self._wait_healthy(tasks, deadline)
            if problem is not None:
                failure = f"the target was not healthy within {ramp.recovery_timeout_s:g} s ({problem})"
                break
            healthy_after = healthy_after if healthy_after is not None else time.monotonic() - began
            if time.monotonic() + ramp.recovery_probe_s > deadline:
                last = probes[-1] if probes else None
                failure = (f"no probe at {ramp.start_rps:g} req/s met the SLO within {ramp.recovery_timeout_s:g} s"
                           + (f" (last: {_probe_text(last, self.profile.slo.percentile)})" if last else ""))
                break
            probe = self._step(RECOVERY, tasks, ramp.start_rps, probe_s=ramp.recovery_probe_s)
            probes.append(probe)
            if probe.slo_met and probe.end_reason not in (END_ABORT, END_STALLED):
                failure = None
                break
            self._idle(min(ramp.recovery_probe_s, max(deadline - time.monotonic(), 0.0)), tasks)
        detail = {"step_id": aborted.step_id, "offered_rps": aborted.offered_rps, "abort_reason": reason,
                  "elapsed_s": round(time.monotonic() - began, 3), "probe_step_ids": [p.step_id for p in probes],
                  "healthy_after_s": None if healthy_after is None else round(healthy_after, 3)}
        if failure is not None:
            self._event("recovery_failed", reason=failure, **detail)
            raise _Aborted(f"step {aborted.step_id} at {aborted.offered_rps:g} req/s was aborted ({reason}) "
                           f"and the target did not recover: {failure}")
        self._event("recovery", **detail)
        self.recorder.reset_safety()
        if resume_phase is not None:
            self._begin_phase(resume_phase, tasks, resumed=True)

    def _wait_healthy(self, tasks: int, deadline: float) -> str | None:
        """None once the target is healthy; else, at the deadline, what was still wrong."""
        while True:
            problem = self._health_problem(tasks)
            if problem is None:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return problem
            self._idle(min(HEALTH_POLL_S, left), tasks)

    def _health_problem(self, tasks: int) -> str | None:
        try:
            running = self._controller.current()
        except ScalefinderError as exc:
            return f"the task count could not be read: {exc}"
        if running < tasks:
            return f"{running} of {tasks} tasks running and healthy"
        target = self._sending.target
        if target.is_local or not target.health_path:
            return None  # the local cluster's tasks were health-checked before taking traffic
        url = target.url + target.health_path
        shown = redact_url(url)
        try:
            with _HEALTH_OPENER.open(_health_request(url), timeout=HEALTH_REQUEST_TIMEOUT_S) as reply:
                status = reply.status
        except urllib.error.HTTPError as exc:  # also a redirect, which is not followed
            status = exc.code
        except (OSError, ValueError) as exc:
            return f"{shown} did not answer ({exc})"
        return None if 200 <= status < 300 else f"{shown} answered {status}"

    def _idle(self, seconds: float, tasks: int) -> None:
        """Wait with no load offered, still recording the generator's seconds (as no step's)."""
        self.recorder.begin_step(StepInfo(None, RECOVERY, tasks, 0.0))
        self._pump(time.monotonic() + seconds, check_abort=False)

    def _hold(self, step_id: int, start: float, probe_s: float | None = None) -> str:
        """Hold the rate until the full hold, or earlier once steady (or clearly breaching). A
        probe is held for ``probe_s``, whatever it shows.

        With a source that aggregates whole periods (CloudWatch's minute), a hold ends only on a
        period boundary (``hold_period_s``), so that no step loses a sample to the period it
        would end in, and the next step starts on a boundary too."""
        ramp = self.profile.ramp
        period = None if probe_s is not None else self._hold_period_s
        shortest, full = self._hold_ends(start, probe_s)
        next_check = shortest
        while True:
            # wake at the end itself, not up to a check interval after it
            wake_in = min(CHECK_INTERVAL_S, min(next_check, full) - time.time())
            self._pump(time.monotonic() + max(0.0, wake_in))
            now = time.time()
            if now >= full:
                return "held"
            if probe_s is not None or now < next_check:
                continue
            if self.recorder.breaching(step_id, start + ramp.warmup_s):
                return "slo_breach"
            if self._steady(step_id, start + ramp.warmup_s):
                return "steady"
            # the next chance to end early: the next check, or with aligned holds the next boundary
            next_check = now + CHECK_INTERVAL_S if period is None else (math.floor(now / period) + 1) * period

    def _hold_ends(self, start: float, probe_s: float | None = None) -> tuple[float, float]:
        """When a hold starting at ``start`` may end at the earliest (``min_hold_s``) and when it
        ends at the latest (``hold_s``); a probe ends after ``probe_s`` either way."""
        ramp = self.profile.ramp
        if probe_s is not None:
            return start + probe_s, start + probe_s
        if self._hold_period_s is None:
            return start + ramp.min_hold_s, start + ramp.hold_s
        return (aligned_hold_end(start, ramp.min_hold_s, ramp.warmup_s, self._hold_period_s),
                aligned_hold_end(start, ramp.hold_s, ramp.warmup_s, self._hold_period_s))

    def _pump(self, until_monotonic: float, check_abort: bool = True) -> None:
        for message in self.engine.messages(until_monotonic):
            self._feed(message, check_abort)

    def _feed(self, message: dict[str, Any], check_abort: bool = True) -> None:
        row = self.recorder.feed(message)
        if row is None:
            return
        self.writer.append_load(row)
        self._report_progress(row)
        if not check_abort:
            return
        ramp = self.profile.ramp
        safety = self.recorder.safety_check(ramp.abort_error_pct, ramp.abort_latency_ms)
        if safety is None:
            return
        if safety.action == "stall":
            raise _GeneratorStalled(safety)
        raise _StepAborted(safety.reason)

    def _wait_drained(self, step_id: int) -> None:
        deadline = time.monotonic() + self.profile.workload.timeout_s + DRAIN_SLACK_S
        while step_id not in self.recorder.drained:
            if time.monotonic() > deadline:
                raise InfrastructureError(f"step {step_id} still had requests in flight "
                                          f"{self.profile.workload.timeout_s + DRAIN_SLACK_S:g} s after it ended")
            self._pump(min(deadline, time.monotonic() + CHECK_INTERVAL_S))

    def _steady(self, step_id: int, since_unix_s: float) -> bool:
        """The step has settled: latency and every sampled utilization metric agree across halves."""
        latency = self.recorder.latency_by_second(step_id, since_unix_s)
        if len(latency) < STEADY_MIN_SECONDS or not _halves_agree(latency, STEADY_LATENCY_SHARE,
                                                                  STEADY_LATENCY_FLOOR_MS):
            return False
        with self._metric_lock:
            rows = [r for r in self._metric_rows if r["time_unix_s"] >= since_unix_s]
        by_metric: dict[str, list[float]] = {}
        for row in rows:
            by_metric.setdefault(row["metric"], []).append(float(row["value"]))
        for name, values in by_metric.items():
            floor = STEADY_METRIC_FLOOR.get(catalog.info(name).unit)
            if floor is not None and len(values) >= STEADY_MIN_SECONDS and not _halves_agree(
                    values, STEADY_METRIC_SHARE, floor):
                return False
        return True

    # -- events, metrics, progress ------------------------------------------------------------------
    def _on_event(self, kind: str, **detail: Any) -> None:
        """Events from the cluster or controllers (any thread)."""
        if kind == "task_crash":
            self._crashes += 1
        self._event(kind, **detail)

    def _event(self, kind: str, **detail: Any) -> None:
        with self._events_lock:
            if self.writer is None:
                self._pending_events.append((kind, detail))
                return
        self.writer.event(kind, **detail)

    def _on_metrics(self, rows: list[dict[str, Any]]) -> None:
        self.writer.append_metrics(rows)
        service_rows = [r for r in rows if not r.get("task") and catalog.info(r["metric"]).role == "utilization"]
        with self._metric_lock:
            self._metric_rows.extend(service_rows)

    def _report_progress(self, load_row: dict[str, Any]) -> None:
        self.on_progress(Progress(
            phase=self._phase, step_id=load_row["step_id"], tasks=self._tasks,
            offered_rps=load_row["offered_rps"] or 0.0,
            achieved_rps=float(load_row["completed"] - load_row["failures"]),
            p95_ms=load_row["p95_ms"], slo_percentile=self.profile.slo.percentile,
            slo_latency_ms=self.profile.slo.latency_ms, errors=load_row["failures"] + load_row["dropped"],
            elapsed_s=time.monotonic() - self._started_monotonic,
            max_duration_s=self.profile.ramp.max_duration_s, capacity_rps=self.capacity_rps,
        ))

    def _progress_note(self, note: str) -> None:
        logger.info(note)
        self.on_progress(Progress(
            phase=note, step_id=None, tasks=self._tasks, offered_rps=0.0, achieved_rps=0.0, p95_ms=None,
            slo_percentile=self.profile.slo.percentile, slo_latency_ms=self.profile.slo.latency_ms, errors=0,
            elapsed_s=time.monotonic() - self._started_monotonic, max_duration_s=self.profile.ramp.max_duration_s,
            capacity_rps=self.capacity_rps,
        ))

    def _partial_run_text(self) -> str:
        if self.writer is None:
            return "no run directory was created"
        return f"the partial run is in {self.writer.path}"


class _RedirectNotFollowed(urllib.request.HTTPRedirectHandler):
    """The health check takes a redirect as its answer (not 2xx: not healthy) and never follows
    it: its Location may name a host that is not in ``allowed_hosts``."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_HEALTH_OPENER = urllib.request.build_opener(_RedirectNotFollowed)


def _health_request(url: str) -> urllib.request.Request:
    """A GET of ``url`` with its user info sent as Basic credentials, as the load generator sends
    it; urllib would take a user info left in the URL for part of the host."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return urllib.request.Request(url)
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
    return urllib.request.Request(bare, headers={"Authorization": "Basic " + base64.b64encode(credentials).decode()})


def local_cluster_spec(profile: Profile, tasks: int) -> Any:
    """The local cluster a profile with a local target describes, at ``tasks`` tasks."""
    from scalefinder.loadgen.cluster import ClusterSpec

    target = profile.target
    return ClusterSpec(archetype=target.archetype, command=target.command, params=dict(target.params), tasks=tasks,
                       cpu_units=target.cpu_units, memory_mib=target.memory_mib, balancer=target.balancer,
                       health_path=target.health_path, metrics_path=target.metrics_path)


def _marked_for_repeat(row: StepRow) -> StepRow:
    """A failed first attempt that the next step repeats: kept as measured, but invalid, so the
    analysis counts the rate once, from the repeat, and never takes this attempt as the breach."""
    failure = row.invalid_reason or "SLO breach"
    return replace(row, valid=False, end_reason=END_RETRIED,
                   invalid_reason=f"repeated at the same rate before ending the ramp (first attempt: {failure})")


def _probe_text(row: StepRow, percentile: float) -> str:
    latency = row.slo_latency_ms
    shown = "no latency" if latency is None else f"p{percentile:g} {latency:.0f} ms"
    return f"step {row.step_id}, {shown}, errors {row.error_pct:.1f}%, {row.end_reason}"


def _halves_agree(values: list[float], share: float, floor: float) -> bool:
    half = len(values) // 2
    first, second = float(np.mean(values[:half])), float(np.mean(values[half:]))
    return abs(second - first) <= max(share * abs(first), floor)


def _build(registry: dict[str, str], kind: str, config: dict[str, Any], context: RunContext) -> Any:
    module = importlib.import_module(registry[kind])
    return module.build(config, context)
