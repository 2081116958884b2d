"""What "the step met its SLO" means, for the run side and the analysis alike.

The run side decides from a step's own latencies whether to keep ramping; the analysis decides
from ``steps.csv`` where the capacity is. If the two judged differently, the capacity the run
bisected towards and the capacity the analysis reports would disagree for no reason a reader
could see, so both call the functions here.

A step is judged on its outcomes: every arrival scheduled in its measured window, whether it was
sent or dropped because the in-flight cap was reached. A dropped arrival is an error: the user
who would have sent it got no answer. Three answers are possible:

* ``False`` - errors beyond the budget, or the latency at the SLO percentile above the limit;
* ``True``  - errors within the budget and the latency at or below the limit;
* ``None``  - unknown: the errors are within the budget but there is no latency value to judge
  (none was recorded, or the run directory does not hold the SLO's percentile), or the step had
  no outcomes at all. An unknown step is neither good nor bad; the caller decides what to do
  with it and should say so.

The latency at the SLO percentile is written per step to ``steps.csv`` as ``slo_latency_ms``.
Run directories written before that column existed hold only p50/p90/p95/p99; for those the
analysis can judge an SLO on exactly one of these percentiles and nothing else (a p99.9 SLO is
not approximated by p99).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

SLO_LATENCY_COLUMN = "slo_latency_ms"

# The latency columns the run side writes for every step, by percentile.
WRITTEN_PERCENTILES: dict[float, str] = {50.0: "p50_ms", 90.0: "p90_ms", 95.0: "p95_ms", 99.0: "p99_ms"}

DEFAULT_ERROR_BUDGET_PCT = 1.0


def slo_value(slo: Any, name: str, default: Any = None) -> Any:
    """A field of an SLO given either as a mapping (the manifest's) or an object (the profile's)."""
    if isinstance(slo, Mapping):
        return slo.get(name, default)
    return getattr(slo, name, default)


def error_pct(failures: float, dropped: float, sent: float) -> float | None:
    """Failed or dropped arrivals as a percentage of all outcomes (sent + dropped).

    ``None`` when the step had no outcomes: there is no rate to speak of."""
    failures, dropped, sent = _count(failures), _count(dropped), _count(sent)
    outcomes = sent + dropped
    if outcomes <= 0:
        return None
    return 100.0 * (failures + dropped) / outcomes


def step_met(latency_ms: float | None, failures: float, dropped: float, sent: float, slo: Any) -> bool | None:
    """Whether one step met ``slo`` (percentile, latency_ms, error_budget_pct).

    ``latency_ms`` is the step's latency at the SLO's percentile over its sent requests; ``sent``
    counts requests sent (failed ones included) and ``dropped`` the arrivals never sent.
    """
    errors = error_pct(failures, dropped, sent)
    if errors is None:
        return None
    # Errors are counted, not estimated: too many of them is a breach whatever the latency.
    if errors > float(slo_value(slo, "error_budget_pct", DEFAULT_ERROR_BUDGET_PCT)):
        return False
    if latency_ms is None or not math.isfinite(float(latency_ms)):
        return None
    return float(latency_ms) <= float(slo_value(slo, "latency_ms"))


def percentile_column(percentile: float) -> str | None:
    """The ``pNN_ms`` column holding exactly this percentile, or None when none does."""
    try:
        value = float(percentile)
    except (TypeError, ValueError):
        return None
    return WRITTEN_PERCENTILES.get(value)


def percentile_label(percentile: float) -> str:
    return f"p{float(percentile):g}"


# -- the step table (analysis) --------------------------------------------------------------------
def latency_at_slo(steps, slo: Any):
    """Each step's latency at the SLO percentile: ``slo_latency_ms`` where the run recorded it,
    else the ``pNN_ms`` column only when the percentile is exactly NN, else NaN (unknown)."""
    import numpy as np
    import pandas as pd

    latency = pd.Series(np.nan, index=steps.index, dtype="float64")
    if SLO_LATENCY_COLUMN in steps.columns:
        latency = pd.to_numeric(steps[SLO_LATENCY_COLUMN], errors="coerce").astype("float64")
    column = percentile_column(slo_value(slo, "percentile", 95.0))
    if column is not None and column in steps.columns:
        latency = latency.fillna(pd.to_numeric(steps[column], errors="coerce").astype("float64"))
    return latency


def slo_flags(steps, slo: Any):
    """``step_met`` over a step table: a pandas nullable boolean Series, ``<NA>`` for unknown."""
    import numpy as np
    import pandas as pd

    def counts(name: str):
        if name not in steps.columns:
            return pd.Series(0.0, index=steps.index)
        return pd.to_numeric(steps[name], errors="coerce").fillna(0.0).clip(lower=0.0).astype("float64")

    sent, dropped, failures = counts("sent"), counts("dropped"), counts("failures")
    outcomes = sent + dropped
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = 100.0 * (failures + dropped) / outcomes.where(outcomes > 0)
    budget = float(slo_value(slo, "error_budget_pct", DEFAULT_ERROR_BUDGET_PCT))
    limit = float(slo_value(slo, "latency_ms"))
    latency = latency_at_slo(steps, slo)

    judged = errors.notna() & latency.notna()
    met = (latency <= limit).astype("boolean").where(judged, pd.NA)
    return met.mask(errors.notna() & (errors > budget), False)


def unjudged_reason(steps, slo: Any) -> str | None:
    """Why some steps' SLO state is unknown, in one sentence, or None when every step was judged
    (or the only unknown steps are those with no outcomes or no latency at all)."""
    import pandas as pd

    percentile = slo_value(slo, "percentile", 95.0)
    recorded = steps[SLO_LATENCY_COLUMN].notna() if SLO_LATENCY_COLUMN in steps.columns \
        else pd.Series(False, index=steps.index)
    if percentile_column(percentile) is not None or recorded.all():
        return None
    missing = int((~recorded).sum())
    written = ", ".join(percentile_label(p) for p in WRITTEN_PERCENTILES)
    return (f"the SLO is on {percentile_label(percentile)}, which {missing} step(s) did not record "
            f"({SLO_LATENCY_COLUMN} is empty and only {written} are written per step): their SLO "
            "was not judged, so they count neither as good nor as breaches")


def _count(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0
