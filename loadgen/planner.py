"""The experiment's phase strategy, as a pure planner: ramp, refine, replay at 2n, beyond.

The planner decides what to do next from the results it is fed, the way Locust's
``LoadTestShape.tick()`` decides the next load: it has no clock, sends nothing and starts no
process, so every phase decision can be tested in microseconds. The experiment performs each
action against the engine and the capacity controller and feeds every step's result back;
``scalefinder plan`` drives the same planner with results that always meet the SLO, which is the
longest run a profile allows.

    planner = PhasePlanner(profile.ramp, profile.capacity.tasks)
    while not isinstance(action := planner.next_action(), Done):
        if isinstance(action, RunStep):
            planner.record(result_of(action))
        ...

Running a step (its hold, the hard abort, the recovery after it, the repeat after a stall of
the load generator, the repeat of a failed step that ``confirm`` asks for) and the run's time
budget, which needs a clock, stay with the experiment. What an abort means for the run (the
abort budget) is decided here, when the experiment reports one (``on_abort``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Union

from scalefinder.loadgen.plan import beyond_rates, refine_rate, replay_rates, ramp_rates
from scalefinder.loadgen.profile import Ramp
from scalefinder.core.errors import ScalefinderError

RAMP, REFINE, REPLAY, BEYOND = "ramp", "refine", "replay", "beyond"
# A rate this close to the lowest aborted one counts as that rate (rates are planned to 0.01 req/s).
RATE_EPSILON = 1e-9


# -- what the planner is fed --------------------------------------------------------------------
@dataclass(frozen=True)
class StepResult:
    """What the phase logic needs to know about a step once it is over (the attempt that decided
    it, when the rate was repeated).

    ``valid = False`` means the result is unknown: the load generator, not the target, was the
    limit (``invalid_reason`` says how), so the step says nothing about the capacity.
    ``aborted``: the hard abort ended the step (the experiment reported it to ``on_abort`` and
    recovered). ``crashed``: a task crashed while the rate was offered."""

    step_id: int
    phase: str
    tasks: int
    offered_rps: float
    slo_met: bool
    valid: bool = True
    aborted: bool = False
    crashed: bool = False
    invalid_reason: str | None = None

    @property
    def good(self) -> bool:
        """The target carried the rate within the SLO, as far as anyone can tell."""
        return self.valid and self.slo_met


@dataclass(frozen=True)
class StepAbort:
    """The hard abort ended a measured step (not a recovery probe): reported while the step ends."""

    step_id: int
    phase: str
    offered_rps: float
    reason: str


# -- what the planner asks for ------------------------------------------------------------------
@dataclass(frozen=True)
class StartPhase:
    name: str
    tasks: int


@dataclass(frozen=True)
class RunStep:
    """Offer ``offered_rps`` to ``tasks`` tasks. With ``confirm`` a step that breaks the SLO (or is
    invalid) is repeated once at the same rate and the repeat decides (``ramp.confirm_breach``)."""

    phase: str
    tasks: int
    offered_rps: float
    confirm: bool = False


@dataclass(frozen=True)
class Warn:
    """Something the run's reader must know: a warning in the manifest and the event log."""

    message: str


@dataclass(frozen=True)
class CapacityFound:
    """The capacity at n tasks is known: the highest rate that met the SLO."""

    capacity_rps: float


@dataclass(frozen=True)
class ScaleTo:
    tasks: int


@dataclass(frozen=True)
class Done:
    """No more steps: the run ends (complete; warnings say what was left out)."""

    reason: str


@dataclass(frozen=True)
class Recover:
    """After an aborted step: wait for the target to recover, then go on. ``resume_phase`` is the
    phase that goes on after the recovery (None: the abort ended its phase, the ramp)."""

    resume_phase: str | None


@dataclass(frozen=True)
class EndRun:
    """After an aborted step: the run ends ``aborted`` with ``reason``. ``whole_run``: the profile
    says an abort ends the run (``abort = "run"``), so the load is stopped for good at once."""

    reason: str
    whole_run: bool = False


Action = Union[StartPhase, RunStep, Warn, CapacityFound, ScaleTo, Done]
AbortVerdict = Union[Recover, EndRun]
# A phase is a generator: it yields actions and is sent the result of each RunStep it yields.
Phase = Generator[Action, StepResult, None]


class PhasePlanner:
    """The staged ramp at n tasks, the refinement, the replay and the beyond phase at 2n tasks.

    ``next_action()`` returns what to do next; after a ``RunStep``, ``record()`` must be given its
    result before the next action is asked for. ``on_abort()`` is asked, while an aborted step
    ends, whether the run recovers from it. ``ramp_only`` plans the ramp alone (then ``Done``).
    """

    def __init__(self, ramp: Ramp, tasks: int, ramp_only: bool = False):
        self.ramp = ramp
        self.tasks = tasks
        self.ramp_only = ramp_only
        self.good_rates: list[float] = []  # every rate that met the SLO at n tasks, in the order measured
        self.first_bad_rps: float | None = None  # where the ramp broke (None: it never did)
        self.capacity_rps: float | None = None
        self.aborts = 0  # aborted measured steps so far (recovery probes never count)
        self.lowest_aborted_rps: float | None = None
        self._ramp_rate_met_slo = False
        self._phases = self._plan()
        self._waiting_for: RunStep | None = None
        self._result: StepResult | None = None
        self._done: Done | None = None

    # -- driving ------------------------------------------------------------------------------
    def next_action(self) -> Action:
        if self._done is not None:
            return self._done
        if self._waiting_for is not None and self._result is None:
            raise ScalefinderError(f"the planner needs the result of the {self._waiting_for.phase} step at "
                                   f"{self._waiting_for.offered_rps:g} req/s before it can plan the next one")
        result, self._result, self._waiting_for = self._result, None, None
        try:
            action = self._phases.send(result)  # None, after anything but a step (and at the start)
        except StopIteration as finished:
            self._done = finished.value
            return self._done
        if isinstance(action, RunStep):
            self._waiting_for = action
        return action

    def record(self, result: StepResult) -> None:
        if self._waiting_for is None or self._result is not None:
            raise ScalefinderError("the planner was given a step result it did not ask for")
        self._result = result

    def actions(self, result_of) -> Generator[Action, None, Done]:
        """Every action until ``Done``, each step's result taken from ``result_of(step)``: for a
        caller that knows the results in advance (``scalefinder plan``, tests)."""
        while not isinstance(action := self.next_action(), Done):
            if isinstance(action, RunStep):
                self.record(result_of(action))
            yield action
        return action

    # -- the abort budget -----------------------------------------------------------------------
    @property
    def recoveries_allowed(self) -> int:
        """How many aborted steps a run may recover from: none when an abort ends the run."""
        return self.ramp.max_aborts if self.ramp.abort == "step" else 0

    def on_abort(self, abort: StepAbort) -> AbortVerdict:
        """The hard abort ended a measured step: recover and go on, or end the run."""
        if self.ramp.abort == "run":
            return EndRun(abort.reason, whole_run=True)
        self.aborts += 1
        self.lowest_aborted_rps = min(abort.offered_rps, self.lowest_aborted_rps or float("inf"))
        if self.aborts > self.ramp.max_aborts:
            return EndRun(f"step {abort.step_id} at {abort.offered_rps:g} req/s was aborted ({abort.reason}); that "
                          f"is {self.aborts} aborted steps, more than ramp.max_aborts ({self.ramp.max_aborts})")
        if abort.phase == RAMP and not self._ramp_rate_met_slo:
            # Nothing below this rate was measured, and the recovery probe would offer this very rate.
            return EndRun(f"{abort.reason}, at the ramp's first rate ({abort.offered_rps:g} req/s): there is no "
                          "lower rate to go on from; lower ramp.start_rps")
        # an abort is the ramp's first breach, and ends it; every other phase goes on where it was
        return Recover(resume_phase=None if abort.phase == RAMP else abort.phase)

    def past_the_edge(self, rate_rps: float) -> bool:
        """With no aborted step left to recover from, the run offers no rate at or above the
        lowest one that aborted: it would likely trip the rule again and end the run."""
        return (self.aborts >= self.ramp.max_aborts and self.lowest_aborted_rps is not None
                and rate_rps >= self.lowest_aborted_rps - RATE_EPSILON)

    def _edge_text(self) -> str:
        return (f"{self.aborts} step(s) were aborted (ramp.max_aborts = {self.ramp.max_aborts}), so the "
                f"run stays below {self.lowest_aborted_rps:g} req/s, the lowest rate that aborted")

    # -- the phases -----------------------------------------------------------------------------
    def _plan(self) -> Generator[Action, StepResult, Done]:
        n = self.tasks
        yield from self._ramp_phase(n)
        if self.ramp_only:
            return Done("the ramp is over")
        if not self.good_rates:
            yield Warn(f"the SLO was not met even at {self.ramp.start_rps:g} req/s; lower ramp.start_rps")
            return Done("no rate met the SLO")
        yield from self._refine_phase(n)
        yield CapacityFound(self.capacity_rps)
        yield ScaleTo(2 * n)
        yield from self._replay_phase(2 * n)
        if self.ramp.beyond:
            yield from self._beyond_phase(2 * n)
        return Done("every phase is over")

    def _ramp_phase(self, tasks: int) -> Phase:
        """Up from start_rps until the first step that breaks the SLO (an aborted step included:
        the run has recovered from it) or crashes a task; an invalid step ends the ramp with no
        breach found."""
        yield StartPhase(RAMP, tasks)
        for rate in ramp_rates(self.ramp):
            result = yield RunStep(RAMP, tasks, rate, confirm=self.ramp.confirm_breach)
            self._ramp_rate_met_slo = self._ramp_rate_met_slo or result.good
            if result.crashed:
                self.first_bad_rps = rate
                yield Warn(f"tasks crashed at {rate:g} req/s: the ramp stopped there")
                return
            if not result.valid:
                yield Warn(f"step {result.step_id} at {rate:g} req/s is invalid ({result.invalid_reason}); the ramp "
                           "stopped there, so the capacity found is only a lower bound")
                return
            if not result.slo_met:
                self.first_bad_rps = rate
                return
            self.good_rates.append(rate)
        yield Warn(f"the SLO held up to max_rps ({self.ramp.max_rps:g} req/s); the capacity is at least that: "
                   "raise ramp.max_rps to find it")

    def _refine_phase(self, tasks: int) -> Phase:
        """Bisect between the last good and the first bad rate until within the tolerance; a step
        that is not good (invalid, aborted or over the SLO) is a bad rate.

        Every refinement rate lies above a rate that held, and at long holds a rate only a little
        past the capacity overloads the target far enough to abort. Once the run has no abort
        left to recover from, such a step would more likely end the whole run, before the replay
        at 2n, than narrow the capacity, so the refinement stops there and the last rate that
        held is the capacity (a warning gives the interval).
        """
        good_rps, bad_rps = max(self.good_rates), self.first_bad_rps
        if bad_rps is not None and self.ramp.refine:
            tolerance = self.ramp.refine_tolerance_pct
            rate = refine_rate(good_rps, bad_rps, tolerance)
            if rate is not None and not self._abort_budget_spent():
                yield StartPhase(REFINE, tasks)
            while rate is not None:
                if self._abort_budget_spent():
                    yield Warn(self._refinement_stopped_text(good_rps, bad_rps))
                    break
                result = yield RunStep(REFINE, tasks, rate, confirm=self.ramp.confirm_breach)
                if result.good:
                    good_rps = rate
                    self.good_rates.append(rate)
                else:
                    bad_rps = rate
                rate = refine_rate(good_rps, bad_rps, tolerance)
        self.capacity_rps = good_rps

    def _abort_budget_spent(self) -> bool:
        """The next abort would end the run (``abort = "run"`` ends it at the first in any case)."""
        return self.ramp.abort == "step" and self.aborts >= self.ramp.max_aborts

    def _refinement_stopped_text(self, good_rps: float, bad_rps: float) -> str:
        return (f"the refinement stopped with the capacity between {good_rps:g} and {bad_rps:g} req/s: "
                f"{self.aborts} step(s) were aborted (ramp.max_aborts = {self.ramp.max_aborts}), and a step above "
                f"{good_rps:g} req/s that aborted too would end the run before the replay; the capacity is taken "
                f"as {good_rps:g} req/s, up to {100.0 * (bad_rps - good_rps) / good_rps:.0f}% low (raise "
                "ramp.max_aborts to refine it)")

    def _replay_phase(self, tasks: int) -> Phase:
        """Earlier good rates again at twice the tasks. An abort there is unexpected (n tasks
        carried these rates): the run has recovered, warns and replays the next rate."""
        yield StartPhase(REPLAY, tasks)
        for rate in replay_rates(self.good_rates, self.capacity_rps, self.ramp.replay_steps):
            if self.past_the_edge(rate):
                yield Warn(f"the replay at {rate:g} req/s was skipped: {self._edge_text()}")
                continue
            result = yield RunStep(REPLAY, tasks, rate)
            if result.aborted:
                yield Warn(f"step {result.step_id} of the replay at {rate:g} req/s and {tasks} tasks was aborted, "
                           "below the capacity found with fewer tasks; the target recovered and the replay went on")

    def _beyond_phase(self, tasks: int) -> Phase:
        """Past the capacity at twice the tasks until the SLO breaks (an abort included) or a step
        is invalid: did the capacity double?"""
        yield StartPhase(BEYOND, tasks)
        for rate in beyond_rates(self.capacity_rps, self.ramp):
            if self.past_the_edge(rate):
                yield Warn(f"the beyond phase stopped before {rate:g} req/s: {self._edge_text()}")
                return
            result = yield RunStep(BEYOND, tasks, rate)
            if not result.good:
                return
