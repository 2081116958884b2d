"""The live progress line of ``scalefinder run``: phase, step, rates, latency against the SLO."""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

logger = logging.getLogger(__name__)


class ProgressDisplay:
    """Shows the latest ``Progress`` on the terminal's error stream; logs it when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._live: Live | None = None

    def __enter__(self) -> "ProgressDisplay":
        if self.enabled:
            self._live = Live(Text("starting"), console=Console(stderr=True), refresh_per_second=4,
                              transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def update(self, progress: Any) -> None:
        text = describe(progress)
        if self._live is not None:
            self._live.update(Text(text))
        else:
            logger.info(text)


def describe(progress: Any) -> str:
    if progress.step_id is None:
        return f"{progress.phase} ({progress.tasks} tasks)"
    slo = f"p{progress.slo_percentile:g} <= {progress.slo_latency_ms:g} ms"
    latency = "-" if progress.p95_ms is None else f"{progress.p95_ms:.0f} ms"
    left = max(progress.max_duration_s - progress.elapsed_s, 0.0)
    capacity = "" if progress.capacity_rps is None else f" | capacity {progress.capacity_rps:g} req/s"
    return (f"{progress.phase} step {progress.step_id} | {progress.tasks} tasks | {progress.elapsed_s:.0f} s elapsed, "
            f"at most {left:.0f} s left{capacity}\n"
            f"  offered {progress.offered_rps:g} req/s, achieved {progress.achieved_rps:.0f} | p95 {latency} "
            f"(SLO {slo}) | errors {progress.errors}")
