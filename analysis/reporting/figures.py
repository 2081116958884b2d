"""The key figures of one analyzed run, shared by the summaries, the gate and the runs index."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from scalefinder.core.models import Findings, RunManifest


@dataclass(frozen=True)
class RunFigures:
    run_id: str
    profile_name: str
    status: str
    started_utc: str | None
    duration_s: float | None
    verdict: str
    headline: str
    metric: str | None
    metric_label: str | None
    target: float | None
    target_interval: tuple[float, float] | None
    unit: str | None
    per_task_rps: float | None
    per_task_rps_interval: tuple[float, float] | None
    service_rps: float | None
    tasks: int | None
    pattern: str | None
    pattern_label: str | None
    warnings: tuple[str, ...]


def extract_figures(findings: Findings | Mapping[str, Any], manifest: RunManifest | None = None) -> RunFigures:
    """Pick the figures a reader looks at first from findings (and the manifest, when at hand)."""
    model = findings if isinstance(findings, Findings) else Findings.from_dict(findings)
    recorded: Mapping[str, Any] = manifest.data if manifest is not None else {}
    run = model.run
    recommendation = model.recommendation
    capacity = model.capacity
    profile = recorded.get("profile") or {}
    started = run.get("started_utc") or recorded.get("started_utc")
    finished = run.get("finished_utc") or recorded.get("finished_utc")
    return RunFigures(
        run_id=str(run.get("run_id") or recorded.get("run_id") or ""),
        profile_name=str(run.get("profile_name") or profile.get("name") or ""),
        status=str(run.get("status") or recorded.get("status") or ""),
        started_utc=started,
        duration_s=duration_between(started, finished),
        verdict=str(model.verdict),
        headline=model.headline,
        metric=recommendation.metric if recommendation else None,
        metric_label=recommendation.label if recommendation else None,
        target=as_float(recommendation.target) if recommendation else None,
        target_interval=as_interval(list(recommendation.target_interval)) if recommendation else None,
        unit=recommendation.unit if recommendation else None,
        per_task_rps=as_float(capacity.get("per_task_rps")),
        per_task_rps_interval=as_interval(capacity.get("per_task_rps_interval")),
        service_rps=as_float(capacity.get("service_rps")),
        tasks=as_int(capacity.get("tasks")),
        pattern=model.pattern.get("name"),
        pattern_label=model.pattern.get("label"),
        warnings=model.warnings,
    )


def duration_between(start_iso: str | None, end_iso: str | None) -> float | None:
    if start_iso is None or end_iso is None:
        return None
    try:
        return (datetime.fromisoformat(end_iso) - datetime.fromisoformat(start_iso)).total_seconds()
    except (TypeError, ValueError):
        return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return None if number is None else int(number)


def as_interval(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    low, high = as_float(value[0]), as_float(value[1])
    if low is None or high is None:
        return None
    return (low, high)


def format_number(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant figures, without scientific notation for everyday sizes."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** digits:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def with_unit(value: float | None, unit: str | None) -> str:
    return with_unit_text(format_number(value), unit)


def format_interval(interval: tuple[float, float] | None, unit: str | None = None) -> str:
    if interval is None:
        return ""
    return with_unit_text(f"{format_number(interval[0])}–{format_number(interval[1])}", unit)


def with_unit_text(number_text: str, unit: str | None) -> str:
    if unit == "percent":
        return f"{number_text}%"
    return f"{number_text} {unit or ''}".strip()


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
