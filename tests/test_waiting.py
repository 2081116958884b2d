"""wait_until on a fake clock: no processes, no real sleeping."""

from __future__ import annotations

import time

import pytest

from scalefinder.core.errors import InfrastructureError
from scalefinder.core.waiting import WaitTimedOut, wait_until


class FakeClock:
    """A monotonic clock that only the fake sleep moves; every sleep is recorded."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def _wait(clock: FakeClock, condition, **options):
    options = {"timeout_s": 10.0, "interval_s": 2.0, "what": "the thing", **options}
    return wait_until(condition, sleep=clock.sleep, clock=clock, **options)


def test_returns_at_once_without_sleeping_when_the_condition_already_holds():
    clock = FakeClock()
    assert _wait(clock, lambda: "ready") == "ready"
    assert clock.sleeps == []


def test_polls_every_interval_and_returns_the_truthy_value():
    clock = FakeClock()
    answers = iter([0, None, "", 3])
    assert _wait(clock, lambda: next(answers)) == 3
    assert clock.sleeps == [2.0, 2.0, 2.0]


def test_the_last_check_is_at_the_deadline_neither_before_nor_after():
    clock = FakeClock()
    checked_at: list[float] = []

    def never() -> bool:
        checked_at.append(clock.now - 1000.0)
        return False

    with pytest.raises(WaitTimedOut) as caught:
        _wait(clock, never, timeout_s=5.0, interval_s=2.0)
    assert checked_at == [0.0, 2.0, 4.0, 5.0]  # the last sleep is cut to the second that is left
    assert clock.sleeps == [2.0, 2.0, 1.0]
    assert str(caught.value) == "timed out after 5 s waiting for the thing"
    assert caught.value.polls == 4 and caught.value.timeout_s == 5.0 and caught.value.what == "the thing"


def test_the_timeout_is_a_timeout_error_and_an_os_error_and_keeps_the_last_value():
    clock = FakeClock()
    with pytest.raises(OSError) as caught:
        _wait(clock, lambda: [], timeout_s=1.0)
    assert isinstance(caught.value, TimeoutError) and caught.value.last == []


def test_the_callers_own_error_is_built_at_the_deadline_from_the_last_check():
    clock = FakeClock()
    seen = {"count": 0}

    def grows() -> bool:
        seen["count"] += 1
        return False

    with pytest.raises(InfrastructureError, match="stuck at 3 checks"):
        _wait(clock, grows, timeout_s=4.0, on_timeout=lambda: InfrastructureError(f"stuck at {seen['count']} checks"))


def test_the_condition_is_checked_once_even_with_no_time_left():
    clock = FakeClock()
    calls = []
    with pytest.raises(WaitTimedOut):
        _wait(clock, lambda: calls.append(1), timeout_s=0.0)
    assert calls == [1] and clock.sleeps == []
    assert _wait(clock, lambda: True, timeout_s=-1.0) is True


def test_started_at_counts_time_spent_before_the_wait():
    clock = FakeClock()
    began = clock()
    clock.now += 7.0  # e.g. the command that started the change took 7 s
    with pytest.raises(WaitTimedOut) as caught:
        _wait(clock, lambda: False, timeout_s=10.0, interval_s=2.0, started_at=began)
    assert clock.sleeps == [2.0, 1.0] and caught.value.polls == 3


def test_an_error_in_the_condition_ends_the_wait_unchanged():
    clock = FakeClock()

    def broken() -> bool:
        raise InfrastructureError("the task exited")

    with pytest.raises(InfrastructureError, match="the task exited"):
        _wait(clock, broken)
    assert clock.sleeps == []


def test_a_non_positive_interval_is_refused():
    with pytest.raises(ValueError):
        wait_until(lambda: True, timeout_s=1.0, interval_s=0.0, what="x")


def test_by_default_it_uses_the_monotonic_clock_and_really_sleeps_briefly():
    started = time.monotonic()
    answers = iter([False, True])
    assert wait_until(lambda: next(answers), timeout_s=1.0, interval_s=0.01, what="x") is True
    assert time.monotonic() - started < 0.5
