"""SIGINT and SIGTERM during a run: stop the load and keep the data, but never cut the restore short.

While the run goes, either signal raises ``Stopped`` in the main thread, so the experiment stops
the load, restores the task count and keeps the partial run directory. Once the restore has
begun, a signal is remembered instead (``RunSignals.during_cleanup``): the run still ends as
stopped by it, after the task count is back.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Iterator

logger = logging.getLogger(__name__)

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """Raised in the main thread by SIGINT or SIGTERM: stop the load, restore, keep the data.

    A BaseException, so no library's ``except Exception`` swallows it."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


class RunSignals:
    """The run's handlers for SIGINT and SIGTERM. Signal handlers belong to the main thread: run
    from any other thread (a test, an embedding program), none is installed."""

    def __init__(self) -> None:
        self.during_cleanup: str | None = None  # SIGINT or SIGTERM, once the restore began

    @contextlib.contextmanager
    def stop_the_run(self) -> Iterator[None]:
        """SIGINT and SIGTERM end the run cleanly (see ``Stopped``); the handlers that were there
        before are put back afterwards."""
        if not _in_main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in STOPPING_SIGNALS}
        self.resume()
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def resume(self) -> None:
        """From now on a signal stops the run at once."""
        if _in_main_thread():
            for signum in STOPPING_SIGNALS:
                signal.signal(signum, _stop_on_signal)

    def defer(self) -> None:
        """From now on a signal is remembered and the run goes on (to restore, or to finish the run
        directory whole)."""
        if _in_main_thread():
            for signum in STOPPING_SIGNALS:
                signal.signal(signum, self._stop_after_cleanup)

    def _stop_after_cleanup(self, signum: int, frame: Any) -> None:
        """A signal during the clean-up must not cut the restore short, nor be forgotten: the run
        still ends as stopped by it once the task count is back."""
        name = signal.Signals(signum).name
        logger.warning("%s received during the clean-up; finishing it first", name)
        self.during_cleanup = self.during_cleanup or name


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _stop_on_signal(signum: int, frame: Any) -> None:
    # the clean-up that Stopped sets off must not be cut short by a second signal
    for stopping in STOPPING_SIGNALS:
        signal.signal(stopping, _ignore_during_cleanup)
    raise Stopped(signal.Signals(signum).name)


def _ignore_during_cleanup(signum: int, frame: Any) -> None:
    logger.warning("%s received while restoring; finishing the clean-up first", signal.Signals(signum).name)
