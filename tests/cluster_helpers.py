"""Shared test tools for the local cluster: a bounded constant-rate client and metric collection."""

from __future__ import annotations

import asyncio
import collections
import statistics
import threading
import time
from dataclasses import dataclass, field

import aiohttp

MAX_RATE_RPS = 400  # tests share a 2-core machine
MAX_DURATION_S = 60


@dataclass
class LoadResult:
    sent: int = 0
    dropped: int = 0  # arrivals skipped because the in-flight cap was reached
    statuses: collections.Counter = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)


class ConstantLoad:
    """Open-loop load on 127.0.0.1 at ``rate_rps`` in a background thread, bounded in rate,
    duration and requests in flight. Use as a context manager; ``result`` holds the outcome."""

    def __init__(self, url: str, rate_rps: float, duration_s: float = MAX_DURATION_S,
                 max_in_flight: int = 200, path: str = "/work", timeout_s: float = 10.0):
        assert url.startswith("http://127.0.0.1:"), "test load goes to loopback only"
        assert 0 < rate_rps <= MAX_RATE_RPS and 0 < duration_s <= MAX_DURATION_S
        self.url = url + path
        self.rate_rps = rate_rps
        self.duration_s = duration_s
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> "ConstantLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 5)
        return self.result

    async def _run(self) -> None:
        in_flight: set[asyncio.Task] = set()
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.monotonic()
            number = 0
            while not self._stop.is_set():
                due = started + number / self.rate_rps
                if due - started > self.duration_s:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                number += 1
                if len(in_flight) >= self.max_in_flight:
                    self.result.dropped += 1
                    continue
                request = asyncio.create_task(self._one(session))
                in_flight.add(request)
                request.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(in_flight, timeout=self.timeout_s)

    async def _one(self, session: aiohttp.ClientSession) -> None:
        self.result.sent += 1
        started = time.perf_counter()
        try:
            async with session.get(self.url) as reply:
                await reply.read()
                self.result.statuses[reply.status] += 1
        except (aiohttp.ClientError, asyncio.TimeoutError):
            self.result.statuses["error"] += 1
            return
        self.result.latencies_ms.append((time.perf_counter() - started) * 1000.0)


class Collector:
    """A metric sink keeping every row."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, rows: list[dict]) -> None:
        with self._lock:
            self.rows.extend(rows)

    def values(self, metric: str, task: str | None = None, since: float = 0.0) -> list[float]:
        with self._lock:
            return [row["value"] for row in self.rows
                    if row["metric"] == metric and row["time_unix_s"] >= since
                    and (task is None or row["task"] == task)]

    def mean(self, metric: str, task: str | None = None, since: float = 0.0) -> float:
        values = self.values(metric, task, since)
        assert values, f"no samples of {metric} (task {task!r})"
        return statistics.fmean(values)


def within(measured: float, expected: float, tolerance: float) -> bool:
    return abs(measured - expected) <= tolerance * abs(expected)
