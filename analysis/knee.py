"""The latency knee, the capacity at the SLO, and whether capacity doubles with twice the tasks.

Capacity is the highest offered rate that met the SLO below the first rate that broke it, at a
fixed task count; the run's refine phase bisects between the two, so the bracket
``[last good, first bad]`` is the capacity's interval. Kneedle (Satopaa et al., 2011, via the
``kneed`` package) is computed on the latency curve as a cross-check only: it has no
uncertainty, so it corroborates and never decides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd


SCALES_RATIO = 1.7  # capacity with 2n tasks at least 1.7x: it doubled, within the +-15% of a noisy run
DOES_NOT_SCALE_RATIO = 1.3  # at most 1.3x: the bottleneck is not in the tasks


@dataclass(frozen=True)
class Knee:
    tasks: int
    breached: bool  # some step broke the SLO
    slo_breach_step: int | None
    slo_breach_rps: float | None
    last_good_step: int | None
    last_good_rps: float | None  # offered
    last_good_achieved_rps: float | None
    kneedle_rps: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slo_flags(steps: pd.DataFrame, slo: dict[str, Any]) -> pd.Series:
    """Whether each step met the SLO, judged from its own latency percentile and error rate."""
    percentile = int(slo.get("percentile", 95))
    column = f"p{percentile}_ms" if f"p{percentile}_ms" in steps.columns else "p95_ms"
    latency = pd.to_numeric(steps[column], errors="coerce")
    sent = pd.to_numeric(steps["sent"], errors="coerce").replace(0, np.nan)
    errors_pct = 100.0 * pd.to_numeric(steps["failures"], errors="coerce").fillna(0) / sent
    met = (latency <= float(slo.get("latency_ms", np.inf))) & (errors_pct.fillna(0) <= float(slo.get("error_budget_pct", 100)))
    return met.fillna(False)


def find_knee(steps: pd.DataFrame, tasks: int) -> Knee:
    """The knee among ``steps`` (valid steps at one task count, with an ``slo_ok`` column)."""
    ordered = steps.sort_values("offered_rps")
    bad = ordered[~ordered["slo_ok"]]
    first_bad = bad.iloc[0] if len(bad) else None
    good = ordered[ordered["slo_ok"]]
    if first_bad is not None:
        good = good[good["offered_rps"] < first_bad["offered_rps"]]
    last_good = good.iloc[-1] if len(good) else None
    return Knee(
        tasks=tasks,
        breached=first_bad is not None,
        slo_breach_step=int(first_bad["step_id"]) if first_bad is not None else None,
        slo_breach_rps=float(first_bad["offered_rps"]) if first_bad is not None else None,
        last_good_step=int(last_good["step_id"]) if last_good is not None else None,
        last_good_rps=float(last_good["offered_rps"]) if last_good is not None else None,
        last_good_achieved_rps=float(last_good["achieved_rps"]) if last_good is not None else None,
        kneedle_rps=_kneedle(ordered),
    )


def at_queue_overflow(steps: pd.DataFrame, tasks: int, onset_per_task_rps: float) -> Knee:
    """A job processor's knee: the rate from which its queue overflows is its breach.

    Its requests are answered once the job is queued, so their latency stays low while the
    backlog grows, until the queue is full and refuses jobs. Where that SLO breach lands depends
    on how long each step is held and how many jobs the queue holds, not on how fast the tasks
    work; the rate from which the backlog grows is the capacity the guide means."""
    below_onset = steps["per_task_rps"] < onset_per_task_rps * (1 - 1e-6)
    return find_knee(steps.assign(slo_ok=steps["slo_ok"] & below_onset), tasks)


def _kneedle(steps: pd.DataFrame) -> float | None:
    if len(steps) < 4:
        return None
    from kneed import KneeLocator

    column = "p95_ms" if "p95_ms" in steps.columns else "p50_ms"
    frame = steps[["offered_rps", column]].dropna().groupby("offered_rps", as_index=False).mean()
    if len(frame) < 4 or frame[column].nunique() < 2:
        return None
    locator = KneeLocator(frame["offered_rps"].to_numpy(float), frame[column].to_numpy(float),
                          curve="convex", direction="increasing")
    return float(locator.knee) if locator.knee is not None else None


def doubling(first: Knee, second: Knee | None, second_steps: pd.DataFrame, invalid_beyond: int = 0) -> dict[str, Any]:
    """Did capacity roughly double with twice the tasks? Needs the ``beyond`` phase's valid steps;
    ``invalid_beyond`` counts steps past the first capacity that the run side marked invalid."""
    if second is None or first.last_good_rps is None or second_steps.empty or \
            second_steps["offered_rps"].max() <= first.last_good_rps * 1.05:
        detail = ("the run did not go past the first capacity with more tasks (no 'beyond' phase)" if not invalid_beyond
                  else f"the {invalid_beyond} step(s) past the first capacity with more tasks were invalid")
        return {"tested": False, "tasks": second.tasks if second else None, "service_rps": None, "ratio": None,
                "verdict": "inconclusive", "detail": detail}
    base = first.last_good_achieved_rps or first.last_good_rps
    good = second.last_good_achieved_rps or second.last_good_rps or 0.0
    ratio = good / base if base else None
    scale = second.tasks / first.tasks
    if ratio is None:
        verdict, detail = "inconclusive", "no step met the SLO with more tasks"
    elif ratio >= SCALES_RATIO * scale / 2:
        verdict = "scales"
        detail = f"{second.tasks} tasks carried {good:.3g} req/s at the SLO, {ratio:.2f}x the {base:.3g} of {first.tasks}"
    elif second.breached and ratio <= DOES_NOT_SCALE_RATIO * scale / 2:
        verdict = "does_not_scale"
        detail = (f"{second.tasks} tasks broke the SLO at {second.slo_breach_rps:.3g} req/s and carried only "
                  f"{good:.3g} req/s ({ratio:.2f}x the {base:.3g} of {first.tasks} tasks)")
    elif not second.breached:
        verdict = "inconclusive"
        detail = f"{second.tasks} tasks met the SLO up to {good:.3g} req/s ({ratio:.2f}x); the run stopped before a breach"
    else:
        verdict = "inconclusive"
        detail = f"capacity grew {ratio:.2f}x with {second.tasks} tasks: between scaling and not"
    return {"tested": True, "tasks": second.tasks, "service_rps": round(good, 3),
            "ratio": round(ratio, 3) if ratio is not None else None, "verdict": verdict, "detail": detail}
