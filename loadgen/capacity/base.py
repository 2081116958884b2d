"""What every capacity controller provides to the experiment.

The experiment records ``snapshot()`` in the manifest before it changes anything, so that
``restore(snapshot)`` can put the service back as it was found after success, failure, Ctrl-C,
SIGTERM, or (from the run directory) after the process was killed hard.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class CapacityController(ABC):
    #: "local", "ecs", "command"
    kind: str = "controller"

    @abstractmethod
    def current(self) -> int:
        """The number of tasks running and receiving traffic now."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The original state, JSON-serialisable, enough for ``restore``."""

    def prepare(self) -> None:
        """Make the service safe to resize by hand (e.g. suspend its autoscaler). Default: nothing.

        Called after the snapshot is recorded and before the first change of the task count. The
        experiment has registered ``restore`` by then, so ``restore`` also runs when ``prepare``
        fails part-way and must undo whatever part of it took effect.
        """

    @abstractmethod
    def scale_to(self, count: int, timeout_s: float) -> None:
        """Set the task count and block until that many tasks are healthy and taking traffic.

        Raises ``InfrastructureError`` when that does not happen within ``timeout_s``.
        """

    @abstractmethod
    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put back everything ``snapshot`` recorded. Idempotent; safe after a failure."""
