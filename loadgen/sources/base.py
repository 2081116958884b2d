"""What every metric source provides to the experiment.

A *live* source samples while the run goes (the local source reads process counters every
second) and hands rows to a sink. A *retrospective* source (CloudWatch, Prometheus) is asked
for a finished window, after ``settle_s`` seconds, because its newest data is still changing.

Rows are dicts with the run directory's metric columns: ``time_unix_s``, ``source``,
``metric``, ``task`` ("" for service-level), ``value``, ``unit``. Metric names follow
``scalefinder.core.catalog``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

MetricRow = dict[str, Any]
MetricSink = Callable[[list[MetricRow]], Any]


class MetricSource(ABC):
    """A source of utilization samples."""

    #: short name written in the ``source`` column, e.g. "local", "cloudwatch", "prometheus"
    name: str = "source"
    #: True when the source pushes samples while running (start/stop); False when it is fetched
    live: bool = True
    #: seconds to wait after a window ends before fetching it (retrospective sources)
    settle_s: float = 0.0
    #: problems that cost part of the data but not all of it (e.g. one query without data);
    #: the experiment copies them into the manifest's warnings after a fetch
    warnings: tuple[str, ...] | list[str] = ()

    def start(self, sink: MetricSink) -> None:
        """Begin sampling into ``sink`` (live sources)."""

    def stop(self) -> None:
        """Stop sampling; must be safe to call twice."""

    def fetch(self, start_unix_s: float, end_unix_s: float) -> list[MetricRow]:
        """Return the samples of a finished window (retrospective sources)."""
        return []

    def fetch_windows(self, windows: list[tuple[float, float]]) -> list[MetricRow]:
        """Return the samples of several finished windows (the steps of a run).

        By default one fetch spans them all; a source whose datapoints cover whole periods
        (CloudWatch) overrides this so no period mixes two load levels.
        """
        if not windows:
            return []
        return self.fetch(min(start for start, _ in windows), max(end for _, end in windows))

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-serialisable facts for the manifest (kind, interval, what it reads, cost counters)."""
