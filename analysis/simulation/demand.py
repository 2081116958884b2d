"""Demand curves: the service's total request rate (req/s) as a function of the minute.

Built-in shapes are multiples of a base rate, by default the rate at which the run's initial
tasks sit at the recommended target (so the service starts where the policy wants it):

* ``step``: the base for 10 minutes, then twice the base to minute 60;
* ``spike``: the base for 10 minutes, three times the base reached over 2 minutes and held to
  minute 30, back to the base over 2 minutes, to minute 60;
* ``ramp``: from the base up to three times the base, linearly over 60 minutes;
* ``daily``: one day (1440 minutes) from half the base at midnight to 2.5 times the base at noon
  and back, a cosine.

A CSV file gives the requests of each minute instead (``load_csv``), e.g. an export of the load
balancer's ``RequestCount`` (Sum, 1-minute period).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from scalefinder.core.errors import InputError

# Columns a CSV's request counts may be named by (requests per minute).
CSV_COLUMNS = ("requests", "requests_per_minute", "RequestCount", "Sum")
MAX_CSV_MINUTES = 7 * 24 * 60  # a week of minutes


@dataclass(frozen=True)
class Demand:
    name: str
    minutes: int
    rate: Callable[[float], float]  # req/s at a moment (in minutes from the start)
    description: str

    def minute_means(self, samples: int = 12) -> list[float]:
        """The mean rate of each minute, from ``samples`` equal parts of it (the simulator's ticks)."""
        return [sum(self.rate(minute + (k + 0.5) / samples) for k in range(samples)) / samples
                for minute in range(self.minutes)]

    def held_per_minute(self) -> "Demand":
        """The same curve offered a minute at a time, each minute at its mean rate: what a load
        generator that changes its rate once a minute sends."""
        return per_minute(self.name, self.minute_means(), f"{self.description}, each minute at its mean")


def per_minute(name: str, rates: list[float], description: str) -> Demand:
    """A curve that holds each minute's rate (req/s) for the whole minute."""
    held = list(rates)
    return Demand(name, len(held), lambda t: held[min(max(int(t), 0), len(held) - 1)], description)


def _ramp_between(start: float, end: float, low: float, high: float, moment: float) -> float:
    if moment <= start:
        return low
    if moment >= end:
        return high
    return low + (high - low) * (moment - start) / (end - start)


def built_in(name: str, base_rps: float) -> Demand:
    if not base_rps > 0:
        raise InputError(f"the base demand must be above 0 req/s, got {base_rps:g}")
    b = base_rps
    shapes: dict[str, tuple[int, Callable[[float], float], str]] = {
        "step": (60, lambda t: b if t < 10 else 2 * b, f"{b:.3g} req/s, x2 at minute 10"),
        "spike": (60, lambda t: (_ramp_between(10, 12, b, 3 * b, t) if t < 30 else _ramp_between(30, 32, 3 * b, b, t)),
                  f"{b:.3g} req/s, x3 over minutes 10-12, back at minutes 30-32"),
        "ramp": (60, lambda t: _ramp_between(0, 60, b, 3 * b, t), f"{b:.3g} to {3 * b:.3g} req/s over an hour"),
        "daily": (1440, lambda t: b * (1.5 - math.cos(2 * math.pi * t / 1440)),
                  f"{0.5 * b:.3g} req/s at midnight to {2.5 * b:.3g} at noon"),
    }
    if name not in shapes:
        raise InputError(f"unknown demand curve {name!r}: one of {', '.join(BUILT_IN)}, or a CSV file")
    minutes, rate, description = shapes[name]
    return Demand(name, minutes, rate, description)


BUILT_IN = ("step", "spike", "ramp", "daily")


def load_csv(path: str | Path) -> Demand:
    """Requests per minute, one row a minute in order, under a header naming the column
    (``requests``, ``requests_per_minute``, ``RequestCount`` or ``Sum``); other columns, such as
    a timestamp, are ignored."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise InputError(f"{path}: no such demand file (or a built-in curve: {', '.join(BUILT_IN)})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} cannot be read as CSV ({exc})") from None
    if not rows:
        raise InputError(f"{path} has no rows under its header")
    column = next((c for c in CSV_COLUMNS if c in rows[0]), None)
    if column is None:
        raise InputError(f"{path} has no column named {', '.join(CSV_COLUMNS)} (requests per minute)")
    if len(rows) > MAX_CSV_MINUTES:
        raise InputError(f"{path} has {len(rows)} minutes; at most {MAX_CSV_MINUTES} (a week) are simulated")
    rates = []
    for number, row in enumerate(rows, 2):
        try:
            value = float(row[column])
        except (TypeError, ValueError):
            raise InputError(f"{path}:{number}: {column} is {row[column]!r}, not a number") from None
        if not math.isfinite(value) or value < 0:
            raise InputError(f"{path}:{number}: {column} must be a count of requests (>= 0), got {row[column]!r}")
        rates.append(value / 60.0)
    return per_minute(path.name, rates, f"{len(rates)} minutes from {path.name}")
