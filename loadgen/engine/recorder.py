"""Turns the engine's messages into the run directory's load rows and step rows.

Runs in the orchestrator (no locust). Each finished arrival carries its step and its due time,
so a step's statistics cover exactly the arrivals scheduled inside its measured window, even
when they finish after the next step has begun.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from scalefinder.loadgen.engine.protocol import DROPPED
from scalefinder.core.models import StepRow
from scalefinder.core.slo import step_met

logger = logging.getLogger(__name__)

# A step is invalid when the generator's busiest process used this much of one core (mean over
# the step). On a machine shared with other work, the generator-fidelity benchmark sustained
# 1,200 req/s at about 61% of a core and missed 1,600 req/s by 11% at 82% with few arrivals late,
# so the line sits between the two. On a quiet machine 79% was still on rate: it errs safe.
GENERATOR_CPU_LIMIT_PCT = 75.0
# ... or fell short of the offered rate (below this share of it), or broke the SLO, with more
# than LATE_SHARE_MAX of its arrivals sent late: then the generator's own delay explains the step.
# A shortfall with arrivals sent on time is not the generator's: a target that falls behind
# shows it in latency, which is measured from each arrival's due time and judged by the SLO.
ACHIEVED_SHARE_MIN = 0.98
LATE_SHARE_MAX = 0.10
# The abort rule on errors looks at this many seconds and needs this many outcomes in them.
ABORT_WINDOW_S = 2
ABORT_MIN_OUTCOMES = 5
# The generator ticks once a second. Two ticks this many seconds apart or more mean its loop
# missed at least one whole second: the process was stopped, swapped out or starved of CPU. A
# loop that merely wakes late moves a tick by a fraction of a second, and at most one second.
STALL_TICK_GAP_S = 2
# A stall is remembered for this many ticks: when the generator resumes it sends every overdue
# arrival at once, and that burst takes a moment to be answered (or to fail).
STALL_MEMORY_TICKS = ABORT_WINDOW_S + 2
# A step is judged breaching before the end of its hold only on at least this many outcomes.
BREACH_MIN_OUTCOMES = 20


@dataclass(frozen=True)
class StepInfo:
    step_id: int | None  # None between steps (e.g. while the target recovers): no load is offered
    phase: str
    tasks: int
    offered_rps: float


@dataclass(frozen=True)
class Outcome:
    step_id: int
    due_unix_s: float
    send_delay_ms: float | None
    latency_ms: float | None
    error: str | None

    @property
    def dropped(self) -> bool:
        return self.error == DROPPED

    @property
    def finished_unix_s(self) -> float:
        return self.due_unix_s + (self.latency_ms or 0.0) / 1000.0


@dataclass(frozen=True)
class _TickRecord:
    """What one tick brought: its second, the gap since the previous tick, the arrivals due in
    the seconds it closed (sent, late) and the outcomes reported since the previous tick."""

    second: float
    gap_s: float
    sent: int
    late: int
    outcomes: tuple[Outcome, ...]


@dataclass(frozen=True)
class Stall:
    """Evidence that the load generator itself stalled in the last few seconds."""

    gaps: tuple[tuple[float, float], ...]  # (previous tick, tick) pairs at least STALL_TICK_GAP_S apart
    late_share: float  # arrivals sent late over all sent, last ABORT_WINDOW_S seconds
    sent: int
    max_send_delay_ms: float  # the latest an arrival reported in the window was sent
    explained: int = 0  # outcomes left out of the abort rule because the stall explains them

    @property
    def gap_s(self) -> float:
        return max((end - start for start, end in self.gaps), default=0.0)

    def describe(self) -> str:
        parts = []
        if self.gaps:
            parts.append(f"two of its once-a-second ticks came {self.gap_s:g} s apart")
        if self.sent and self.late_share > LATE_SHARE_MAX:
            parts.append(f"{100.0 * self.late_share:.0f}% of the arrivals of the last {ABORT_WINDOW_S} s "
                         "were sent late")
        if not self.gaps and self.max_send_delay_ms > 0:  # with a gap, the gap measures the stall
            parts.append(f"arrivals were sent up to {self.max_send_delay_ms:.0f} ms after their due time")
        return "; ".join(parts) or "no detail"

    def as_event(self) -> dict[str, Any]:
        return {"gap_s": self.gap_s, "late_share": round(self.late_share, 4), "sent": self.sent,
                "max_send_delay_ms": round(self.max_send_delay_ms, 1), "explained_outcomes": self.explained}


@dataclass(frozen=True)
class Safety:
    """What the safety rules decided after a tick: ``abort`` the load (the target is failing),
    or ``stall`` (the rule fired, but only because the generator itself stalled)."""

    action: str  # "abort" | "stall"
    reason: str
    stall: Stall | None = None


class LoadRecorder:
    def __init__(self, slo: Any, late_tolerance_ms: float):
        self.slo = slo
        self.late_tolerance_ms = late_tolerance_ms
        self.step: StepInfo | None = None
        self.drained: set[int] = set()
        self.stopped = False
        self._outcomes: dict[int, list[Outcome]] = defaultdict(list)
        self._second: list[Outcome] = []
        self._cpu: list[tuple[float, float]] = []
        self._ticks: deque[_TickRecord] = deque(maxlen=STALL_MEMORY_TICKS)
        self._previous_second: float | None = None
        self.last_tick: dict[str, Any] = {}

    def begin_step(self, step: StepInfo | None) -> None:
        self.step = step

    # -- messages -------------------------------------------------------------------------
    def feed(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Take one engine message; return a load row when the message closes a second."""
        kind = message["type"]
        if kind == "done":
            for row in message["rows"]:
                outcome = Outcome(*row)
                self._outcomes[outcome.step_id].append(outcome)
                self._second.append(outcome)
        elif kind == "drained":
            self.drained.add(message["step_id"])
        elif kind == "stopped":
            self.stopped = True
        elif kind == "tick":
            return self._load_row(message)
        return None

    def _load_row(self, tick: dict[str, Any]) -> dict[str, Any]:
        outcomes, self._second = self._second, []
        finished = [o for o in outcomes if not o.dropped]
        failures = sum(1 for o in finished if o.error)
        totals: Counter = Counter()
        for counters in tick["counters"].values():
            totals.update(counters)
        second = float(tick["time_unix_s"])
        # Ticks are stamped with the generator's own clock, so a gap is the generator's, however
        # late the orchestrator reads the messages.
        gap = second - self._previous_second if self._previous_second is not None else 1.0
        self._previous_second = second
        self._ticks.append(_TickRecord(second, gap, int(totals["sent"]), int(totals["late"]), tuple(outcomes)))
        latencies = np.array([o.latency_ms for o in finished], dtype=float)
        self._cpu.append((tick["time_unix_s"], tick["cpu_pct"]))
        self.last_tick = tick
        step = self.step
        return {
            "time_unix_s": tick["time_unix_s"],
            "step_id": step.step_id if step else None,
            "phase": step.phase if step else None,
            "tasks": step.tasks if step else None,
            "offered_rps": step.offered_rps if step else 0.0,
            "sent": totals["sent"],
            "completed": len(finished),
            "failures": failures,
            "dropped": totals["dropped"],
            "late": totals["late"],
            "in_flight": tick["in_flight"],
            **_percentiles(latencies, {"p50_ms": 50, "p95_ms": 95, "p99_ms": 99}),
            "max_ms": float(latencies.max()) if latencies.size else None,
            "generator_cpu_pct": tick["cpu_pct"],
        }

    # -- safety ---------------------------------------------------------------------------
    def abort_reason(self, abort_error_pct: float, abort_latency_ms: float) -> str | None:
        """Why load must stop now, or None, on every outcome of the window. Checked after every tick."""
        return self._rule(abort_error_pct, abort_latency_ms, self._window_outcomes(), 0.0)

    def safety_check(self, abort_error_pct: float, abort_latency_ms: float) -> Safety | None:
        """The abort rule, with the load generator's own stalls taken out.

        When the rule fires and the generator stalled in the last seconds, the rule is applied
        again without what the stall explains: outcomes of arrivals sent late or in flight while
        the generator was frozen, and, for the request waiting longest, the part of its wait the
        gap covers. If it still fires the target is failing on its own (``abort``); if not, the
        step says nothing about the target (``stall``).
        """
        reason = self.abort_reason(abort_error_pct, abort_latency_ms)
        if reason is None:
            return None
        stall = self.generator_stall()
        if stall is None:
            return Safety("abort", reason)
        outcomes = self._window_outcomes()
        kept = [o for o in outcomes if not self._explained(o, stall)]
        stall = replace(stall, explained=len(outcomes) - len(kept))
        remaining = self._rule(abort_error_pct, abort_latency_ms, kept, self._stalled_wait_s(stall))
        if remaining is not None:
            return Safety("abort", f"{remaining}, leaving out what the load generator's own stall explains", stall)
        return Safety("stall", reason, stall)

    def generator_stall(self) -> Stall | None:
        """Evidence that the generator stalled in the last few seconds: a gap between its ticks,
        or more than LATE_SHARE_MAX of the arrivals of the abort window sent late."""
        records = list(self._ticks)
        gaps = tuple((r.second - r.gap_s, r.second) for r in records if r.gap_s >= STALL_TICK_GAP_S)
        window = records[-ABORT_WINDOW_S:]
        sent = sum(r.sent for r in window)
        late_share = sum(r.late for r in window) / sent if sent else 0.0
        running_late = sent >= ABORT_MIN_OUTCOMES and late_share > LATE_SHARE_MAX
        if not gaps and not running_late:
            return None
        delays = [o.send_delay_ms for r in records for o in r.outcomes if o.send_delay_ms is not None]
        return Stall(gaps, late_share, sent, max(delays, default=0.0))

    def reset_safety(self) -> None:
        """Forget the abort window: after a step was halted, its last seconds must not count
        against the next one (the probe of a recovering target, or a repeated step)."""
        self._ticks.clear()

    def _window_outcomes(self) -> list[Outcome]:
        return [o for r in list(self._ticks)[-ABORT_WINDOW_S:] for o in r.outcomes]

    def _rule(self, abort_error_pct: float, abort_latency_ms: float, outcomes: list[Outcome],
              excused_wait_s: float) -> str | None:
        failed = sum(1 for o in outcomes if o.error)  # a dropped arrival carries the error "dropped"
        total = len(outcomes)
        if total >= ABORT_MIN_OUTCOMES and 100.0 * failed / total > abort_error_pct:
            return (f"errors at {100.0 * failed / total:.0f}% over the last {ABORT_WINDOW_S} s "
                    f"(abort threshold {abort_error_pct:g}%)")
        oldest_ms = 1000.0 * (self.last_tick.get("oldest_in_flight_s", 0.0) - excused_wait_s)
        if oldest_ms > abort_latency_ms:
            return f"a request has waited {oldest_ms:.0f} ms (abort threshold {abort_latency_ms:g} ms)"
        return None

    def _explained(self, outcome: Outcome, stall: Stall) -> bool:
        """The outcome says nothing about the target: it was sent late, or it was due or in flight
        while the generator was frozen (its latency and a timeout both count the frozen time)."""
        if outcome.send_delay_ms is not None and outcome.send_delay_ms > self.late_tolerance_ms:
            return True
        start, end = outcome.due_unix_s, outcome.finished_unix_s
        return any(start <= gap_end and end >= gap_start for gap_start, gap_end in stall.gaps)

    def _stalled_wait_s(self, stall: Stall) -> float:
        """How much of the longest wait now in flight the generator's stall covers: the overlap of
        the gaps with that request's life so far, and at least the latest send seen, since it may
        have been sent that late itself."""
        now = float(self.last_tick.get("time_unix_s", 0.0))
        due = now - float(self.last_tick.get("oldest_in_flight_s", 0.0))
        overlap = sum(max(0.0, min(end, now) - max(start, due)) for start, end in stall.gaps)
        return max(overlap, stall.max_send_delay_ms / 1000.0)

    # -- steps ----------------------------------------------------------------------------
    def latency_by_second(self, step_id: int, since_unix_s: float) -> list[float]:
        """Mean latency of the step's arrivals per second of due time, from ``since_unix_s``."""
        buckets: dict[int, list[float]] = defaultdict(list)
        for o in self._outcomes.get(step_id, []):
            if o.due_unix_s >= since_unix_s and not o.dropped:
                buckets[int(o.due_unix_s - since_unix_s)].append(o.latency_ms)
        if not buckets:
            return []
        last = max(buckets)
        # the newest second may still have requests in flight; leave it out
        return [float(np.mean(buckets[s])) for s in sorted(buckets) if s < last]

    def outcomes(self, step_id: int) -> list[Outcome]:
        """Every finished or dropped arrival of a step so far."""
        return list(self._outcomes.get(step_id, []))

    def forget(self, step_id: int) -> None:
        self._outcomes.pop(step_id, None)

    def breaching(self, step_id: int, since_unix_s: float) -> bool:
        """True when the step already breaks its SLO for certain, before its hold is over.

        Requests still in flight are mostly the slow ones, so a percentile over the finished
        requests understates rather than overstates; errors already counted stay counted. The
        requests in flight are counted as sent and not (yet) failed, so the error rate is the
        lowest the step can still end with.
        """
        outcomes = [o for o in self._outcomes.get(step_id, []) if o.due_unix_s >= since_unix_s]
        if len(outcomes) < BREACH_MIN_OUTCOMES:
            return False
        sent = [o for o in outcomes if not o.dropped]
        latencies = np.array([o.latency_ms for o in sent], dtype=float)
        met = step_met(_percentile(latencies, self.slo.percentile), failures=sum(1 for o in sent if o.error),
                       dropped=len(outcomes) - len(sent), sent=len(sent) + self.last_tick.get("in_flight", 0),
                       slo=self.slo)
        return met is False

    def summarize(self, step_id: int, start_unix_s: float, end_unix_s: float, warmup_s: float,
                  end_reason: str) -> StepRow:
        """The step's row of steps.csv, over arrivals due in [start + warmup, end)."""
        step = self.step if self.step and self.step.step_id == step_id else None
        window_start = start_unix_s + warmup_s
        outcomes = [o for o in self._outcomes.get(step_id, [])
                    if window_start <= o.due_unix_s < end_unix_s]
        sent = [o for o in outcomes if not o.dropped]
        dropped = len(outcomes) - len(sent)
        failures = [o for o in sent if o.error]
        successes = [o for o in sent if not o.error]
        late = sum(1 for o in sent if o.send_delay_ms is not None and o.send_delay_ms > self.late_tolerance_ms)
        latencies = np.array([o.latency_ms for o in sent], dtype=float)
        cpu = [c for t, c in self._cpu if window_start <= t <= end_unix_s + 1]
        generator_cpu = float(np.mean(cpu)) if cpu else 0.0
        offered = step.offered_rps if step else 0.0
        achieved = _achieved_rps(successes, end_unix_s - window_start)
        slo_value = _percentile(latencies, self.slo.percentile)
        # The run side must decide now, so a step it cannot judge (no outcomes, no latency)
        # counts as not met: the ramp stops there rather than push on blind. The analysis
        # judges the same step unknown from the row, with the same rule.
        slo_met = step_met(slo_value, len(failures), dropped, len(sent), self.slo) is True
        kept_up = offered <= 0 or achieved >= ACHIEVED_SHARE_MIN * offered
        invalid = _invalid_reason(offered, achieved, generator_cpu, late, len(sent), slo_met, kept_up)
        percentiles = _percentiles(latencies, {"p50_ms": 50, "p90_ms": 90, "p95_ms": 95, "p99_ms": 99})
        return StepRow(
            step_id=step_id,
            phase=step.phase if step else None,
            tasks=step.tasks if step else None,
            offered_rps=offered,
            start_unix_s=start_unix_s,
            end_unix_s=end_unix_s,
            warmup_s=warmup_s,
            achieved_rps=achieved,
            sent=len(sent),
            completed=len(sent),
            failures=len(failures),
            dropped=dropped,
            late=late,
            **percentiles,
            max_ms=float(latencies.max()) if latencies.size else None,
            mean_ms=float(latencies.mean()) if latencies.size else None,
            error_kinds=json.dumps(dict(Counter(o.error for o in failures)), sort_keys=True) if failures else "{}",
            generator_cpu_pct=round(generator_cpu, 1),
            valid=invalid is None,
            invalid_reason=invalid,
            slo_met=slo_met,
            end_reason=end_reason,
            slo_latency_ms=slo_value,
        )


def _achieved_rps(successes: list[Outcome], window_s: float) -> float:
    """Successful completions per second, from the spacing of the completions themselves.

    n completions spread over a span take (n - 1) intervals; counting them against the window
    instead would be off by one request, which is 5% of a 4-second step at 5 req/s.
    """
    if len(successes) < 2:
        return len(successes) / window_s if window_s > 0 else 0.0
    finished = sorted(o.finished_unix_s for o in successes)
    span = finished[-1] - finished[0]
    return (len(finished) - 1) / span if span > 0 else 0.0


def _invalid_reason(offered: float, achieved: float, cpu_pct: float, late: int, sent: int,
                    slo_met: bool, kept_up: bool) -> str | None:
    if cpu_pct >= GENERATOR_CPU_LIMIT_PCT:
        return f"load generator CPU at {cpu_pct:.0f}% of a core: the generator, not the target, was the limit"
    running_late = bool(sent) and late / sent > LATE_SHARE_MAX
    if not slo_met and running_late:
        # latency counts from the schedule, so a generator running late can cause the breach itself
        return (f"{100.0 * late / sent:.0f}% of arrivals were sent late: the SLO breach may be the "
                "generator's own delay")
    if not kept_up and running_late:
        return (f"achieved {achieved:.1f} of {offered:g} req/s with {100.0 * late / sent:.0f}% of arrivals "
                "sent late: the shortfall is the generator's")
    return None


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def _percentiles(values: np.ndarray, wanted: dict[str, float]) -> dict[str, float | None]:
    return {name: _percentile(values, q) for name, q in wanted.items()}
