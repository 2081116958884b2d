"""Poll until a condition holds or a deadline passes: the one waiting loop of scalefinder.

Scaling a service, starting a task, draining one, removing a cgroup, waiting for engine workers:
each is "check, and if not yet, sleep a little and check again, but not for ever". Written by
hand each time, such loops drift apart (one sleeps past its deadline, another gives up a whole
interval before it, another forgets the monotonic clock). ``wait_until`` is that loop once:

* the deadline is measured on ``time.monotonic()``, so a clock change cannot shorten or stretch it;
* the condition is checked at once, then every ``interval_s``, and one last time at the deadline
  itself (the last sleep is cut to what is left): a wait neither gives up early nor overruns;
* on success it returns the condition's (truthy) value; at the deadline it raises the caller's
  own error (``on_timeout``) or ``WaitTimedOut``, a ``TimeoutError`` (so also an ``OSError``)
  saying what was awaited and for how long;
* an exception raised by the condition ends the wait at once and propagates unchanged (a task
  that exited, a failed deployment: no point waiting for the deadline);
* ``sleep`` and ``clock`` can be replaced: the Locust engine sleeps with ``gevent.sleep``, and
  the unit tests use a fake clock that the fake sleep advances, so they never really wait.

Why not tenacity: it retries *calls that fail*; waiting for a *state* through it means a
``retry_if_result`` predicate, a ``stop_after_delay``/``stop_before_delay`` choice and a
``RetryError`` to unwrap into each caller's own error. This is one short loop with none of that
to learn, and no dependency for the foundation package.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class WaitTimedOut(TimeoutError):
    """The condition did not hold by the deadline. ``last`` is the condition's last (falsy) value."""

    def __init__(self, what: str, timeout_s: float, polls: int, last: object = None):
        super().__init__(f"timed out after {timeout_s:g} s waiting for {what}")
        self.what = what
        self.timeout_s = timeout_s
        self.polls = polls
        self.last = last


def wait_until(condition: Callable[[], T], *, timeout_s: float, interval_s: float, what: str,
               on_timeout: Callable[[], BaseException] | None = None,
               started_at: float | None = None,
               sleep: Callable[[float], object] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> T:
    """Call ``condition()`` until it returns something truthy, and return that.

    ``timeout_s`` counts from ``started_at`` (a ``clock()`` reading, for a wait whose time began
    before it, e.g. before the command that started the change) or else from now. The condition
    is always checked at least once, even with no time left. At the deadline, raise
    ``on_timeout()`` when given (built only then, so its message can describe the last check),
    else ``WaitTimedOut``.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be greater than 0, got {interval_s!r}")
    deadline = (clock() if started_at is None else started_at) + timeout_s
    polls = 0
    while True:
        value = condition()
        polls += 1
        if value:
            return value
        left = deadline - clock()
        if left <= 0:
            log.debug("gave up waiting for %s after %d checks in %g s", what, polls, timeout_s)
            if on_timeout is not None:
                raise on_timeout()
            raise WaitTimedOut(what, timeout_s, polls, value)
        sleep(min(interval_s, left))
