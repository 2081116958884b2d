"""The latency knee, the capacity at the SLO, and whether capacity doubles with twice the tasks.

Capacity is the highest offered rate that met the SLO below the first rate that broke it, at a
fixed task count; the run's refine phase bisects between the two, so the bracket
``[last good, first bad]`` is the capacity's interval. Kneedle (Satopaa et al., 2011, via the
``kneed`` package) is computed on the latency curve as a cross-check only: it has no
uncertainty, so it corroborates and never decides.

Whether a step met the SLO is judged by ``scalefinder.core.slo``, the rule the run side applies
too. A step it cannot judge (no latency at the SLO percentile) is neither good nor a breach:
it is left out of the knee and reported in ``Knee.unknown_steps``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from scalefinder.core import slo as slos


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
    unknown_steps: tuple[int, ...] = ()  # steps whose SLO state could not be judged, left out

    # Two per-task rates, each defined here once. Steps are placed on the offered rate per task
    # (the axis every per-metric test uses), so comparisons with the knee use the offered rate;
    # the capacity reported is what the last good step served, never more than was offered.
    @property
    def last_good_per_task_rps(self) -> float | None:
        """The last good step's offered rate per task, on the axis the steps are placed on."""
        return self.last_good_rps / self.tasks if self.last_good_rps else None

    @property
    def served_rps(self) -> float | None:
        """The rate the last good step served: achieved, capped at the offered rate."""
        if self.last_good_rps is None:
            return None
        return min(self.last_good_achieved_rps or self.last_good_rps, self.last_good_rps)

    @property
    def capacity_per_task_rps(self) -> float | None:
        """Capacity per task as reported: the served rate of the last good step per task."""
        served = self.served_rps
        return served / self.tasks if served is not None else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slo_columns(steps: pd.DataFrame, slo: dict[str, Any]) -> tuple[pd.Series, pd.Series]:
    """``(slo_ok, slo_known)``, two plain bool Series: whether each step met the SLO, and whether
    that could be judged at all. An unknown step has ``slo_ok`` False, so a filter on ``slo_ok``
    never takes it as good; a breach is ``slo_known & ~slo_ok``."""
    met = slos.slo_flags(steps, slo)
    return met.fillna(False).astype(bool), met.notna().astype(bool)


def slo_flags(steps: pd.DataFrame, slo: dict[str, Any]) -> pd.Series:
    """Whether each step met the SLO, as a plain bool: an unknown step counts as not met. Use
    ``slo_columns`` to tell an unknown step from a breach."""
    return slo_columns(steps, slo)[0]


def slo_warnings(steps: pd.DataFrame, slo: dict[str, Any], *found: Knee | None) -> list[str]:
    """What the findings should say about steps whose SLO could not be judged: why (once), and
    which steps each knee left out."""
    out = []
    reason = slos.unjudged_reason(steps, slo)
    if reason:
        out.append(reason)
    for knee in found:
        if knee is not None and knee.unknown_steps:
            ids = ", ".join(str(i) for i in knee.unknown_steps)
            out.append(f"at {knee.tasks} tasks the SLO of step(s) {ids} could not be judged (no latency at "
                       f"{slos.percentile_label(slo.get('percentile', 95))}); they were left out of the knee, "
                       "neither good nor breaching")
    return out


def find_knee(steps: pd.DataFrame, tasks: int) -> Knee:
    """The knee among ``steps`` (valid steps at one task count, with an ``slo_ok`` column and,
    optionally, ``slo_known``; without it every step counts as judged).

    Steps whose SLO state is unknown are skipped: they neither end the good range nor extend it,
    so one step without a latency value cannot cut the capacity."""
    ordered = steps.sort_values("offered_rps", kind="stable")
    # a nullable slo_ok (scalefinder.core.slo.slo_flags as is) carries the unknown steps as <NA>
    known = ordered["slo_ok"].notna()
    if "slo_known" in ordered.columns:
        known &= ordered["slo_known"].astype(bool)
    ok = ordered["slo_ok"].fillna(False).astype(bool)
    bad = ordered[known & ~ok]
    first_bad = bad.iloc[0] if len(bad) else None
    good = ordered[known & ok]
    if first_bad is not None:
        good = good[good["offered_rps"] < first_bad["offered_rps"]]
    last_good = good.iloc[-1] if len(good) else None
    unknown = tuple(int(i) for i in ordered.loc[~known, "step_id"])
    return Knee(
        tasks=tasks,
        breached=first_bad is not None,
        slo_breach_step=int(first_bad["step_id"]) if first_bad is not None else None,
        slo_breach_rps=float(first_bad["offered_rps"]) if first_bad is not None else None,
        last_good_step=int(last_good["step_id"]) if last_good is not None else None,
        last_good_rps=float(last_good["offered_rps"]) if last_good is not None else None,
        last_good_achieved_rps=float(last_good["achieved_rps"]) if last_good is not None else None,
        kneedle_rps=_kneedle(ordered),
        unknown_steps=unknown,
    )


def at_queue_overflow(steps: pd.DataFrame, tasks: int, onset_per_task_rps: float) -> Knee:
    """A job processor's knee: the rate from which its queue overflows is its breach.

    Its requests are answered once the job is queued, so their latency stays low while the
    backlog grows, until the queue is full and refuses jobs. Where that SLO breach lands depends
    on how long each step is held and how many jobs the queue holds, not on how fast the tasks
    work; the rate from which the backlog grows is the capacity the guide means."""
    below_onset = steps["per_task_rps"] < onset_per_task_rps * (1 - 1e-6)
    # from the onset on a step is a breach whatever its latency said, so it counts as judged
    known = (steps["slo_known"] if "slo_known" in steps.columns else True) | ~below_onset
    return find_knee(steps.assign(slo_ok=steps["slo_ok"] & below_onset, slo_known=known), tasks)


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
    ``invalid_beyond`` counts steps past the first capacity that the run side marked invalid.

    The ratio is the capacity at the second task count over the capacity at the first, and the
    thresholds are scaled to the task ratio (written here for twice the tasks):

    * ``scales`` - at least 1.7x;
    * ``does_not_scale`` - at most 1.3x, with the second count past its own breach;
    * ``partial`` - strictly between, with the second count past its own breach: the ratio is
      measured, so part of the limit is in the tasks and part is shared by all of them. The
      per-task capacity measured at the second count (``per_task_rps_at_second``) is then what
      sizing for more tasks should use, not the one at the first count;
    * ``inconclusive`` - the second count never broke the SLO (its capacity, so the ratio, is
      only a lower bound), or the phase was not run.

    ``per_task_rps_at_second`` is set whenever the second count broke the SLO, else None.
    """
    if second is None or first.last_good_rps is None or second_steps.empty or \
            second_steps["offered_rps"].max() <= first.last_good_rps * 1.05:
        detail = ("the run did not go past the first capacity with more tasks (no 'beyond' phase)" if not invalid_beyond
                  else f"the {invalid_beyond} step(s) past the first capacity with more tasks were invalid")
        return {"tested": False, "tasks": second.tasks if second else None, "service_rps": None, "ratio": None,
                "per_task_rps_at_second": None, "verdict": "inconclusive", "detail": detail}
    base = first.last_good_achieved_rps or first.last_good_rps
    good = second.last_good_achieved_rps or second.last_good_rps or 0.0
    ratio = good / base if base else None
    scale = second.tasks / first.tasks
    more = "twice the tasks" if scale == 2 else f"{scale:g}x the tasks"
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
        verdict = "partial"
        detail = (f"capacity grew only {ratio:.2f}x with {more} ({good:.3g} req/s at {second.tasks} tasks against "
                  f"{base:.3g} at {first.tasks}): part of the limit is shared")
    at_second = round(good / second.tasks, 3) if second.breached and ratio is not None and second.tasks else None
    return {"tested": True, "tasks": second.tasks, "service_rps": round(good, 3),
            "ratio": round(ratio, 3) if ratio is not None else None, "per_task_rps_at_second": at_second,
            "verdict": verdict, "detail": detail}
