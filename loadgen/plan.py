"""The staged ramp: which rates an experiment offers, and what a run will cost at most.

Pure functions of the profile: the rates of each phase, used by the phase planner
(``planner.py``), which the experiment drives with real results and ``scalefinder plan`` (which
sends nothing) with results that always meet the SLO.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from scalefinder.loadgen.profile import MAX_RAMP_STEPS, Profile, Ramp
from scalefinder.core.errors import InputError

logger = logging.getLogger(__name__)

# The "beyond" phase climbs from the capacity at n tasks to beyond_factor x capacity in this
# many geometric steps, enough to see whether capacity doubled without a long tail of steps.
BEYOND_STEPS = 5
# Time allowed in the plan for scaling to 2n and back, when the controller's speed is unknown.
SCALE_ESTIMATE_S = 10.0


@dataclass(frozen=True)
class PlannedStep:
    phase: str
    tasks: int
    offered_rps: float
    hold_s: float

    @property
    def requests(self) -> int:
        return round(self.offered_rps * self.hold_s)


@dataclass(frozen=True)
class Plan:
    """The longest run a profile allows: the ramp never breaks the SLO below ``max_rps``, and,
    with ``confirm_breach``, any ramp step may still fail once and be repeated (``repeats``).

    ``recoveries`` bound the time after aborted steps: each of the ``max_aborts`` recoveries may
    last ``recovery_timeout_s``, offering at most ``start_rps`` all along (its probes)."""

    profile_name: str
    steps: tuple[PlannedStep, ...]
    max_duration_s: float
    repeats: tuple[PlannedStep, ...] = ()
    recoveries: tuple[PlannedStep, ...] = ()

    @property
    def duration_s(self) -> float:
        total = sum(step.hold_s for step in self.steps + self.repeats + self.recoveries) + 2 * SCALE_ESTIMATE_S
        return min(total, self.max_duration_s)

    @property
    def peak_rps(self) -> float:
        return max(step.offered_rps for step in self.steps)

    @property
    def request_count(self) -> int:
        """Requests of the measured steps and their repeats (recovery probes: ``recovery_requests``)."""
        return sum(step.requests for step in self.steps + self.repeats)

    @property
    def recovery_requests(self) -> int:
        return sum(step.requests for step in self.recoveries)


@dataclass(frozen=True)
class AbortRules:
    """What the hard abort does under a profile, in words ``scalefinder plan`` prints."""

    mode: str  # "step" | "run"
    error_pct: float
    latency_ms: float
    max_aborts: int
    recovery_timeout_s: float
    recovery_probe_s: float
    probe_rps: float
    remote: bool

    def lines(self) -> list[str]:
        trigger = (f"Hard abort: errors above {self.error_pct:g}% of the last 2 s, or a request waiting longer "
                   f"than {self.latency_ms:g} ms, stop the load within 2 s.")
        stall = ("A stall of the load generator (a missing tick, or late arrivals) that alone sets off the rule "
                 "ends the step early and repeats it once; it never ends the run.")
        if self.mode == "run":
            return [trigger, 'On an abort (abort = "run"): the run ends at once with status aborted (exit code 3).',
                    stall]
        why = (" (the default for a remote target: a shared environment should be overloaded as few times as "
               "possible)" if self.remote and self.max_aborts == 1 else "")
        return [
            trigger,
            'On an abort (abort = "step"): the step counts as the SLO breach; the run waits up to '
            f"{self.recovery_timeout_s:g} s for the target to recover (healthy, then a {self.recovery_probe_s:g} s "
            f"probe at {self.probe_rps:g} req/s within the SLO), then goes on with the next step of the plan "
            "(in the ramp: refine below the failing rate), each protected the same way.",
            f"max_aborts = {self.max_aborts}{why}: the run recovers from {self.max_aborts} aborted "
            f"step{'s' if self.max_aborts != 1 else ''}; after that it offers no rate at or above the lowest one that "
            "aborted, and one more abort, or a failed recovery, ends it with status aborted (exit code 3).",
            stall,
        ]


def abort_rules(profile: Profile) -> AbortRules:
    ramp = profile.ramp
    return AbortRules(ramp.abort, ramp.abort_error_pct, ramp.abort_latency_ms, ramp.max_aborts,
                      ramp.recovery_timeout_s, ramp.recovery_probe_s, ramp.start_rps,
                      remote=not profile.target.is_local)


def round_rate(rate_rps: float) -> float:
    return round(rate_rps, 2)


def ramp_rates(ramp: Ramp) -> list[float]:
    """Rates of the ramp from ``start_rps`` up to ``max_rps`` inclusive."""
    rates = []
    rate = ramp.start_rps
    while rate < ramp.max_rps - 1e-9:
        rates.append(round_rate(rate))
        if len(rates) > MAX_RAMP_STEPS:  # load_profile refuses such a ramp; one built otherwise must not fill memory
            raise InputError(f"the ramp from {ramp.start_rps:g} to {ramp.max_rps:g} req/s has more than "
                             f"{MAX_RAMP_STEPS} steps; use a larger step_rps or step_factor")
        rate = rate + ramp.step_rps if ramp.step_rps else rate * ramp.step_factor
    rates.append(round_rate(ramp.max_rps))
    return rates


def refine_rate(good_rps: float, bad_rps: float, tolerance_pct: float) -> float | None:
    """The next rate to try between the last good and first bad rate, or None when known well enough.

    Capacity lies in [good, bad); once that interval is within ``tolerance_pct`` of the good
    rate, reporting the good rate is accurate to that tolerance.
    """
    if bad_rps - good_rps <= good_rps * tolerance_pct / 100.0:
        return None
    return round_rate((good_rps + bad_rps) / 2.0)


def replay_rates(good_rates: list[float], capacity_rps: float, count: int) -> list[float]:
    """``count`` of the earlier rates that met the SLO, spread from the lowest to the capacity.

    Replaying the very rates measured at n tasks lets the analysis compare a metric at the same
    demand with twice the tasks. With fewer earlier rates than ``count``, even fractions of the
    capacity fill the gap.
    """
    earlier = sorted({r for r in good_rates if r <= capacity_rps + 1e-9} | {capacity_rps})
    if len(earlier) >= count:
        picks = [earlier[round(i * (len(earlier) - 1) / (count - 1))] for i in range(count)]
    else:
        fractions = [capacity_rps * (i + 1) / count for i in range(count)]
        picks = earlier + [round_rate(f) for f in fractions if all(abs(f - e) > 0.05 * f for e in earlier)]
        picks = sorted(picks)[-count:] if len(picks) > count else picks
    return sorted(set(picks))


def beyond_rates(capacity_rps: float, ramp: Ramp) -> list[float]:
    """Rates past the capacity at n tasks, offered at 2n to see whether capacity doubles."""
    rates = []
    for step in range(1, BEYOND_STEPS + 1):
        rate = round_rate(capacity_rps * ramp.beyond_factor ** (step / BEYOND_STEPS))
        if rate > 2 * ramp.max_rps:  # max_rps bounds n tasks; twice the tasks may take twice the rate
            break
        rates.append(rate)
    return rates


def plan_profile(profile: Profile) -> Plan:
    """The worst case: the phase planner fed a result that meets the SLO at every step, so the
    ramp climbs to ``max_rps`` and the replay and beyond phases follow at 2n tasks; every step
    held fully (and each step that confirms a failure counted twice), and every recovery the
    abort rules allow lasting as long as they allow."""
    # the planner builds on this module's rates: import it late
    from scalefinder.loadgen.planner import PhasePlanner, RunStep, StepResult

    ramp = profile.ramp
    planner = PhasePlanner(ramp, profile.capacity.tasks)
    runs: list[RunStep] = []

    def met_the_slo(step: RunStep) -> StepResult:
        return StepResult(step_id=len(runs), phase=step.phase, tasks=step.tasks, offered_rps=step.offered_rps,
                          slo_met=True)

    for action in planner.actions(met_the_slo):
        if isinstance(action, RunStep):
            runs.append(action)
    steps = tuple(PlannedStep(run.phase, run.tasks, run.offered_rps, ramp.hold_s) for run in runs)
    repeats = tuple(step for step, run in zip(steps, runs) if run.confirm)
    recoveries = tuple(PlannedStep("recovery", profile.capacity.tasks, ramp.start_rps, ramp.recovery_timeout_s)
                       for _ in range(planner.recoveries_allowed))
    return Plan(profile.name, steps, ramp.max_duration_s, repeats, recoveries)
