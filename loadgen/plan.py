"""The staged ramp: which rates an experiment offers, and what a run will cost at most.

Pure functions of the profile: the rates of each phase, used by the phase planner
(``planner.py``), which the experiment drives with real results and ``scalefinder plan`` (which
sends nothing) with results that always meet the SLO.
"""

from __future__ import annotations

import logging
import math
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
            "aborted, refines the capacity no further (a refinement step lies above a rate that held and could "
            "abort), and one more abort, or a failed recovery, ends it with status aborted (exit code 3).",
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


# -- what a run costs: samples, waits, wall time ---------------------------------------------------
# Time a remote controller is assumed to take for one change when estimating the expected wall
# time: half its timeout. A Fargate task that starts, passes its first health checks and joins
# the target group takes one to three minutes; the worst case counts the whole timeout.
EXPECTED_SHARE_OF_SCALE_TIMEOUT = 0.5


@dataclass(frozen=True)
class SourceSamples:
    """What one metric source gives a step after the warm-up, at the worst alignment of the hold
    to the source's clock: its period, and its samples in a full hold and in one ended at
    ``min_hold_s``."""

    kind: str
    period_s: float
    full_hold: int
    shortest_hold: int
    settle_s: float


# Sources whose samples aggregate a period and are kept only when the whole period lies inside a
# step (CloudWatch); the others sample at instants (the local source, Prometheus' evaluations).
WHOLE_PERIOD_SOURCES = ("cloudwatch",)
# How far a hold aligned to period boundaries lets its warm-up fall short, so that a step starting
# just after a boundary (the step before ended on it, then drained and was recorded: about a
# quarter of a second, the engine's flush interval) still counts the next period as its first:
# 2 s, or half of a short warm-up (a compressed minute's).
STEP_CHANGE_S = 2.0


def samples_in(window_s: float, period_s: float) -> int:
    """The fewest samples a window of ``window_s`` holds, however it is aligned: as many periods
    as fit. For instants every ``period_s`` that is true of any window; for whole periods it is
    true because holds end on the periods' boundaries (``aligned_hold_end``), while a window
    ending anywhere would lose the period it ends in at an unlucky alignment."""
    if period_s <= 0 or window_s < period_s:
        return 0
    return int(window_s // period_s + 1e-9)


def _period_of(kind: str, config: dict) -> float | None:
    """The period a source's samples come at, as its table in the profile sets it."""
    period = config.get("period_s") or config.get("interval_s") or config.get("step_s")
    if not isinstance(period, (int, float)) or isinstance(period, bool) or period <= 0:
        return None
    if kind in WHOLE_PERIOD_SOURCES:
        # AWS's own metrics come at the source's standard period whatever a shorter period_s asks
        # for (it is only for high-resolution custom metrics); the minute may be compressed for tests
        from scalefinder.loadgen.sources.cloudwatch import STANDARD_PERIOD_S, standard_period

        return float(standard_period(int(period), int(config.get("minute_s") or STANDARD_PERIOD_S)))
    return float(period)


def hold_period_s(profile: Profile) -> float | None:
    """The period whose boundaries every hold ends on: the longest of the whole-period sources'
    (None: no source aggregates periods, holds end when their seconds are up).

    A whole period is only kept when it lies inside a step, so a hold that ends anywhere else
    loses the part of a period it ends in, and a step ended at ``min_hold_s`` at an unlucky
    alignment has one sample fewer than the same hold ending on a boundary. At CloudWatch's
    minute that is a whole minute a step: ending each hold on the boundary gives every step the
    samples of its hold at any alignment, and the next step starts on a boundary too."""
    periods = [_period_of(kind, config) for kind, config in profile.sources.items() if kind in WHOLE_PERIOD_SOURCES]
    return max((p for p in periods if p is not None), default=None)


def step_change_slack_s(warmup_s: float) -> float:
    return min(STEP_CHANGE_S, warmup_s / 2.0)


def aligned_hold_end(start_s: float, hold_s: float, warmup_s: float, period_s: float) -> float:
    """When a hold that starts at ``start_s`` ends, on a period boundary, so that it holds the
    whole periods after the warm-up that ``hold_s`` gives at best: ``(hold_s - warmup_s) // period_s``
    of them, at least one.

    The first of them starts once the warm-up is over, give or take the fraction of a second a
    change of step takes (``step_change_slack_s``). So a step that starts just after a boundary,
    as a step following another does, lasts ``hold_s`` to within that fraction, and one that
    starts elsewhere in a period lasts up to a period longer."""
    samples = max(1, int((hold_s - warmup_s) // period_s + 1e-9))
    earliest = start_s + warmup_s - step_change_slack_s(warmup_s)
    first = math.ceil(earliest / period_s - 1e-9) * period_s
    return first + samples * period_s


def step_seconds(hold_s: float, warmup_s: float, period_s: float | None) -> float:
    """How long a step held for ``hold_s`` lasts when it follows another step: ``hold_s``, or
    with holds ending on period boundaries, what ``aligned_hold_end`` makes of it for a step
    starting just after a boundary (the end of the step before, then its drain)."""
    if period_s is None:
        return hold_s
    start = 1000 * period_s + step_change_slack_s(warmup_s) / 2
    return aligned_hold_end(start, hold_s, warmup_s, period_s) - start


def source_samples(profile: Profile) -> list[SourceSamples]:
    ramp = profile.ramp
    result = []
    for kind, config in profile.sources.items():
        period = _period_of(kind, config)
        if period is None:
            continue
        settle = config.get("settle_s") or 0.0
        result.append(SourceSamples(kind, period, samples_in(ramp.hold_s - ramp.warmup_s, period),
                                    samples_in(ramp.min_hold_s - ramp.warmup_s, period),
                                    float(settle) if isinstance(settle, (int, float)) else 0.0))
    return result


@dataclass(frozen=True)
class WallTime:
    expected_s: float
    worst_s: float
    scale_wait_s: float
    settle_s: float
    expected_steps: int
    confirmations: int = 0  # of the expected steps, repeats that confirm a breach


def wall_time(profile: Profile, plan: Plan) -> WallTime:
    """The expected wall time (the SLO breaks halfway up the ramp, capacity doubles with twice
    the tasks, steps end at ``min_hold_s`` once steady, a scaling takes half its timeout) and the
    worst (``plan``: every step held in full up to ``max_rps``, every scaling and recovery using
    its whole timeout), both with the settle wait of the slowest retrospective source."""
    from scalefinder.loadgen.planner import PhasePlanner, RunStep, StartPhase, StepResult

    ramp = profile.ramp
    local = profile.capacity.controller == "local"
    scale_wait = ramp.scale_timeout_s
    expected_scale = SCALE_ESTIMATE_S if local else EXPECTED_SHARE_OF_SCALE_TIMEOUT * scale_wait
    settle = max((s.settle_s for s in source_samples(profile)), default=0.0)
    breaking_point = ramp.max_rps / 2.0  # per n tasks; twice the tasks carry twice as much
    planner = PhasePlanner(ramp, profile.capacity.tasks)
    count = 0
    confirmations = 0  # a failed step with ``confirm`` is held a second time before it counts

    def halfway(step: RunStep) -> StepResult:
        nonlocal count, confirmations
        count += 1
        capacity = breaking_point * step.tasks / profile.capacity.tasks
        met = step.offered_rps <= capacity
        confirmations += int(step.confirm and not met)
        return StepResult(step_id=count - 1, phase=step.phase, tasks=step.tasks, offered_rps=step.offered_rps,
                          slo_met=met)

    period = hold_period_s(profile)
    shortest, full = (step_seconds(hold, ramp.warmup_s, period) for hold in (ramp.min_hold_s, ramp.hold_s))
    phases = 0  # a step that starts a phase may start anywhere in a period, and end up to one later
    for action in planner.actions(halfway):
        phases += isinstance(action, StartPhase)
    count += confirmations
    expected = min(count * shortest + phases * (period or 0.0) / 2 + 2 * expected_scale,
                   ramp.max_duration_s) + settle
    loaded = (len(plan.steps) + len(plan.repeats)) * full + sum(step.hold_s for step in plan.recoveries)
    # the first step of each phase, and the step after each recovery, may start anywhere in a period
    loaded += (len({step.phase for step in plan.steps}) + len(plan.recoveries)) * (period or 0.0)
    # The plan that holds every rate up to max_rps can have fewer steps than one that breaks
    # halfway and then refines and goes beyond at twice the tasks; the worst case covers both.
    loaded = max(loaded, count * full + phases * (period or 0.0))
    worst = min(loaded + 2 * scale_wait, ramp.max_duration_s) + settle
    return WallTime(expected, worst, scale_wait, settle, count, confirmations)


def cost_lines(profile: Profile, plan: Plan) -> list[str]:
    """What ``scalefinder plan`` prints about samples, waits and wall time."""
    from scalefinder.core.models import MIN_STEADY_SAMPLES

    ramp = profile.ramp
    period = hold_period_s(profile)
    lines = []
    for source in source_samples(profile):
        whole = source.kind in WHOLE_PERIOD_SOURCES
        alignment = ("whole periods only; holds end on a period boundary, so at any alignment" if whole
                     else "at the worst alignment")
        lines.append(f"Samples per step from {source.kind} (one every {source.period_s:g} s after the "
                     f"{ramp.warmup_s:g} s warm-up, {alignment}): "
                     f"{source.full_hold} in a full hold ({ramp.hold_s:g} s), {source.shortest_hold} in one ended "
                     f"at min_hold_s ({ramp.min_hold_s:g} s).")
        if source.shortest_hold < MIN_STEADY_SAMPLES:
            needed = ramp.warmup_s + MIN_STEADY_SAMPLES * source.period_s
            lines.append(f"Warning: the analysis judges a step steady from {MIN_STEADY_SAMPLES} samples; steps "
                         f"ended at min_hold_s get {source.shortest_hold} from {source.kind}, so their values "
                         f"count as not steady. A min_hold_s of {needed:g} s gives {MIN_STEADY_SAMPLES} at any "
                         "alignment.")
    if period is not None:
        lines.append(f"Holds end on the {period:g} s boundaries of the metrics' periods: a step that follows another "
                     f"lasts about {step_seconds(ramp.min_hold_s, ramp.warmup_s, period):g} s at min_hold_s, the first "
                     f"of a phase or after a recovery up to {period:g} s longer.")
    times = wall_time(profile, plan)
    controller = profile.capacity.controller
    waits = [f"scaling to {2 * profile.capacity.tasks} tasks and back, up to {times.scale_wait_s:g} s each "
             f"(scale_timeout_s{'; the local cluster usually takes seconds' if controller == 'local' else ''})"]
    if times.settle_s:
        waits.append(f"{times.settle_s:g} s after the last step for the metrics to settle before they are read")
    lines.append("Waits: " + "; ".join(waits) + ".")
    repeats = f", {times.confirmations} of them repeats that confirm a breach" if times.confirmations else ""
    lines.append(f"Wall time: about {_minutes_text(times.expected_s)} expected ({times.expected_steps} steps{repeats}, if the "
                 f"SLO breaks halfway up the ramp, capacity doubles at {2 * profile.capacity.tasks} tasks and steps "
                 f"end at min_hold_s); at most {_minutes_text(times.worst_s)}.")
    return lines


def _minutes_text(seconds: float) -> str:
    minutes = int(round(seconds / 60.0))
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if hours else f"{max(minutes, 1)} min"


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
