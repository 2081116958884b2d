"""The open-model arrival generator: a constant arrival rate whatever the target does.

Arrival k of a step is due at ``start + (offset + k * stride) / rate``. A scheduler greenlet
sleeps until each due time and hands the arrival to a runner greenlet of its own, so a slow
target never slows the schedule down (no coordinated omission): an arrival that finds
``max_in_flight`` requests outstanding is dropped and counted, one started after its due time by
more than the lateness tolerance is counted late, and every latency is measured from the due time.

At thousands of arrivals a second, what each arrival costs beyond its request is a visible share
of the generator's CPU, so two things are shared rather than made per arrival. A runner greenlet
that has finished its arrival waits for the next one instead of dying: creating and destroying a
greenlet costs about ten times handing work to a waiting one. And an arrival still running past
the request timeout (plus slack) is cut off by a watchdog that looks every quarter second, not by
a timer armed for each arrival.

Everything is reported through ``emit(message)``: ``done`` batches (one row per finished
arrival), a ``tick`` every second with the second's counters, ``drained`` when a step that has
ended has no request left in flight, and ``stopped`` after a hard stop. A tick counts the
arrivals *due* in the second it closes, not those launched between two wake-ups of the tick
loop: on a busy machine that loop wakes tens of milliseconds late, which would move arrivals
from one second's row to the next (and, with several workers, by a different amount in each).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from typing import Any, Callable

import gevent
import psutil
from gevent import Greenlet, GreenletExit
from locust.env import Environment
from locust.exception import InterruptTaskSet, RescheduleTask, RescheduleTaskImmediately, StopUser

from scalefinder.loadgen.engine.workload import UserPool, build_user_classes, run_one_task

logger = logging.getLogger(__name__)

# Finished arrivals are sent in batches at least this often (seconds), and at once when a
# step drains, so the orchestrator can close a step without waiting for the next tick.
FLUSH_INTERVAL_S = 0.25
# Slack beyond the request timeout before an arrival's greenlet is cut off (user tasks may
# make several requests or sleep).
TASK_TIMEOUT_SLACK_S = 1.0

Emit = Callable[[dict[str, Any]], None]


class Generator:
    def __init__(self, config: dict[str, Any], emit: Emit):
        self.config = config
        self.emit = emit
        self.max_in_flight = int(config["max_in_flight"])
        self.late_tolerance_s = float(config["late_tolerance_ms"]) / 1000.0
        self.task_timeout_s = float(config["timeout_s"]) + TASK_TIMEOUT_SLACK_S
        classes = build_user_classes(config)
        self.environment = Environment(user_classes=classes, host=config["host"])
        self.environment.events.request.add_listener(self._on_request)
        self.pool = UserPool(self.environment, classes)
        self._scheduler: Greenlet | None = None
        self._current_step: int | None = None
        self._hub = gevent.get_hub()
        self._idle_runners: list[Any] = []
        # runner -> (step, due time, deadline) of the arrival it runs; in launch order, so the
        # deadlines only grow. The tuple's identity tells this arrival from the runner's next one.
        self._in_flight: dict[Any, tuple[int, float, float]] = {}
        self._in_flight_by_step: Counter = Counter()
        self._ended_steps: set[int] = set()
        self._errors: dict[Any, str] = {}  # runner -> the first failed request of its arrival
        self._done: list[list[Any]] = []
        # due second -> step -> counters; a tick takes every second it has closed
        self._counters: dict[int, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        self._greenlets = [gevent.spawn(self._tick_loop), gevent.spawn(self._flush_loop)]

    # -- commands -------------------------------------------------------------------------
    def set_rate(self, step_id: int, rate_rps: float, start_unix_s: float | None = None,
                 offset: int = 0, stride: int = 1) -> None:
        """Offer ``rate_rps`` from ``start_unix_s`` (now by default) as step ``step_id``.

        With several generators, each takes every ``stride``-th arrival starting at ``offset``,
        so together they offer the rate with evenly interleaved arrivals.
        """
        self._end_schedule()
        self._current_step = step_id
        if rate_rps > 0:
            start = start_unix_s if start_unix_s is not None else time.time()
            self._scheduler = gevent.spawn(self._schedule, step_id, rate_rps, start, offset, stride)

    def pause(self) -> None:
        """Stop starting arrivals; requests in flight finish normally."""
        self._end_schedule()

    def stop(self) -> None:
        """Stop all load now: no new arrivals, and every request in flight is cut off."""
        self._end_schedule()
        for runner, arrival in list(self._in_flight.items()):
            self._hub.loop.run_callback(self._cut_off, runner, arrival, GreenletExit)
        deadline = time.monotonic() + 1.0
        while self._in_flight and time.monotonic() < deadline:
            gevent.sleep(0.01)
        self._flush()
        self.emit({"type": "stopped"})

    def close(self) -> None:
        self.stop()
        gevent.killall(self._greenlets, block=False)

    # -- the schedule -------------------------------------------------------------------------
    def _end_schedule(self) -> None:
        if self._scheduler is not None:
            self._scheduler.kill(block=True)
            self._scheduler = None
        if self._current_step is not None:
            self._ended_steps.add(self._current_step)
            self._report_if_drained(self._current_step)
            self._current_step = None

    def _schedule(self, step_id: int, rate_rps: float, start: float, offset: int, stride: int) -> None:
        index = offset
        while True:
            due = start + index / rate_rps
            wait = due - time.time()
            if wait > 0:
                gevent.sleep(wait)
            self._launch(step_id, due)
            index += stride

    def _launch(self, step_id: int, due: float) -> None:
        counters = self._counters[int(due)][str(step_id)]
        if len(self._in_flight) >= self.max_in_flight:
            counters["dropped"] += 1
            self._done.append([step_id, round(due, 6), None, None, "dropped"])
            return
        delay = time.time() - due
        counters["sent"] += 1
        if delay > self.late_tolerance_s:
            counters["late"] += 1
        self._in_flight_by_step[step_id] += 1
        arrival = (step_id, due, due + delay + self.task_timeout_s)
        if self._idle_runners:
            runner = self._idle_runners.pop()
            self._hub.loop.run_callback(runner.switch, arrival, delay)
        else:
            runner = gevent.spawn_raw(self._runner, arrival, delay)
        self._in_flight[runner] = arrival

    def _runner(self, arrival: tuple[int, float, float], delay_s: float) -> None:
        """Run arrivals one after another, waiting in the hub between them."""
        me = gevent.getcurrent()
        while True:
            self._run_arrival(me, arrival[0], arrival[1], delay_s)
            self._idle_runners.append(me)
            # _cut_off throws only into a runner still running the arrival it names, so nothing
            # but the next arrival (or, at exit, the runner's own end) reaches it here
            arrival, delay_s = self._hub.switch()

    def _cut_off(self, runner: Any, arrival: tuple[int, float, float], exception: type[BaseException]) -> None:
        """In the hub: end ``arrival`` with ``exception`` if ``runner`` is still running it.

        Callbacks run in the order they were queued, so the one that handed the runner its
        arrival has run by now: the exception lands inside the arrival, never before it.
        """
        if self._in_flight.get(runner) is arrival:
            runner.throw(exception)

    def _run_arrival(self, me: Any, step_id: int, due: float, delay_s: float) -> None:
        error: str | None = None
        user = None
        try:
            user = self.pool.acquire(self.pool.pick_class())
            run_one_task(user)
        except gevent.Timeout:  # thrown in by _cut_off, from _cut_off_overdue
            error = "timeout"
        except GreenletExit:  # thrown in by _cut_off, from stop
            error = "aborted"
        except (StopUser, InterruptTaskSet, RescheduleTask, RescheduleTaskImmediately):
            pass
        except Exception as exc:  # a user task failing is a measured outcome, not an engine fault
            error = type(exc).__name__
        finally:
            latency_ms = (time.time() - due) * 1000.0
            error = self._errors.pop(me, None) or error
            if user is not None and error is None:
                self.pool.release(user)  # a user whose task failed may hold a broken connection
            self._done.append([step_id, round(due, 6), round(delay_s * 1000.0, 3), round(latency_ms, 3), error])
            del self._in_flight[me]
            self._in_flight_by_step[step_id] -= 1
            self._report_if_drained(step_id)

    def _on_request(self, request_type=None, name=None, response_time=None, response_length=None,
                    response=None, exception=None, **_: Any) -> None:
        if exception is None:
            return
        me = gevent.getcurrent()
        if me in self._errors:
            return
        status = getattr(response, "status_code", 0) or 0
        self._errors[me] = f"http_{status}" if status >= 400 else _error_kind(exception)

    def _report_if_drained(self, step_id: int) -> None:
        if step_id in self._ended_steps and self._in_flight_by_step[step_id] <= 0:
            self._ended_steps.discard(step_id)
            del self._in_flight_by_step[step_id]
            self._flush()
            self.emit({"type": "drained", "step_id": step_id})

    # -- reporting ------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._done:
            batch, self._done = self._done, []
            self.emit({"type": "done", "rows": batch})

    def _flush_loop(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            self._cut_off_overdue(time.time())
            self._flush()

    def _cut_off_overdue(self, now: float) -> None:
        """End every arrival past its deadline with a timeout. The cut-off runs from the hub a
        moment later; an arrival that survives it (a task that swallows the exception) is cut
        again at the next check."""
        for runner, arrival in self._in_flight.items():
            if arrival[2] > now:
                break  # launch order: every later arrival's deadline is later still
            self._hub.loop.run_callback(self._cut_off, runner, arrival, gevent.Timeout)

    def _tick_loop(self) -> None:
        while True:
            now = time.time()
            gevent.sleep(1.0 - (now % 1.0))  # ticks on whole seconds, so ticks of workers line up
            self._flush()
            self.emit(self._tick(time.time()))

    def _tick(self, now: float) -> dict[str, Any]:
        """The tick that closes the second ending at about ``now`` (the loop may wake a little early)."""
        second = round(now)
        counters: dict[str, Counter] = defaultdict(Counter)
        for due_second in [s for s in self._counters if s < second]:
            for step, values in self._counters.pop(due_second).items():
                counters[step].update(values)
        oldest = min((due for _, due, _ in self._in_flight.values()), default=now)
        return {
            "type": "tick",
            "time_unix_s": second,
            "counters": {step: dict(c) for step, c in counters.items()},
            "in_flight": len(self._in_flight),
            "oldest_in_flight_s": round(now - oldest, 3),
            "cpu_pct": self._process.cpu_percent(None),
        }


def _error_kind(exception: BaseException) -> str:
    name = type(exception).__name__
    text = str(exception).lower()
    if "timed out" in text or "timeout" in name.lower():
        return "timeout"
    if "refused" in text:
        return "connection_refused"
    if "reset" in text:
        return "connection_reset"
    return name
