"""Steady-state windows: one value per metric, task and step.

Samples inside a hold are autocorrelated and the first seconds of a hold are a transient, so
the analyzer never treats raw samples as independent. Each hold is cut in two stages:

1. the warm-up the run side declared for the step (``steps.warmup_s``) is dropped;
2. MSER (White's marginal standard error rule) picks a further truncation ``d`` (in batches)
   that minimises ``sum((Y_j - mean)^2) / (k - d)^2`` over the remaining batch means. Batches
   are 5 samples (MSER-5) when the hold has at least 30 samples after the warm-up, else single
   samples, so that short holds of 1-second data still get a rule. The cut is searched in the
   first half of the hold only: searched further, MSER often truncates a steady series near its
   end by chance (a third of steady AR(1) holds in our checks).

A hold is flagged ``steady = False`` when it still drifts after the cut: the means of the two
halves of what remains differ by more than 3 standard errors (widened for lag-1
autocorrelation) *and* by more than 5% of the level, or when fewer than 6 samples remain.

Everything is vectorised over all series at once (sort by series, ``bincount`` for sums, suffix
sums for MSER), so tens of millions of samples take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalefinder.core.models import MIN_STEADY_SAMPLES


MSER_BATCH = 5
MSER_MIN_SAMPLES_FOR_BATCHES = 30
MIN_SAMPLES = MIN_STEADY_SAMPLES  # fewer samples than this after the warm-up: the hold is too short to judge


@dataclass(frozen=True)
class Windows:
    """The steady-state part of every hold.

    ``values``: one row per (metric, task, step_id) with ``value`` (mean after the cut), ``sd``,
    ``n``, ``ci_low``/``ci_high`` (95%, widened for lag-1 autocorrelation), ``cut_s`` (seconds
    dropped from the start of the hold, warm-up included) and ``steady``.
    ``samples``: the kept samples: metric, task, step_id, time_unix_s, value.
    """

    values: pd.DataFrame
    samples: pd.DataFrame


def build_windows(metrics: pd.DataFrame, steps: pd.DataFrame) -> Windows:
    """Cut each hold's warm-up and aggregate the rest, for every metric and task."""
    kept = _assign_steps(metrics, steps)
    if kept.empty:
        return Windows(_empty_values(), kept)
    order, group, position, sizes = _group_positions(kept)
    kept = kept.iloc[order].reset_index(drop=True)
    values = kept["value"].to_numpy(dtype=float)
    cut = _mser_cut(values, group, position, sizes)
    stay = position >= cut[group]
    summary = _summarise(values[stay], group[stay], len(sizes))
    first = np.searchsorted(group, np.arange(len(sizes)))
    heads = kept.iloc[first][["metric", "task", "step_id", "time_unix_s", "step_start_unix_s"]]
    table = heads.reset_index(drop=True)
    table["value"] = summary["mean"]
    table["sd"] = summary["sd"]
    table["n"] = summary["n"]
    table["ci_low"] = summary["mean"] - summary["half_width"]
    table["ci_high"] = summary["mean"] + summary["half_width"]
    # The cut in seconds, from the hold's start, of the first sample kept.
    first_kept = kept["time_unix_s"].to_numpy()[np.searchsorted(group, np.arange(len(sizes))) + cut]
    table["cut_s"] = np.round(first_kept - table["step_start_unix_s"].to_numpy(), 3)
    table["steady"] = ~_drifts(values[stay], group[stay], position[stay] - cut[group[stay]], sizes - cut) & (
        summary["n"] >= MIN_SAMPLES)
    table = table.drop(columns=["time_unix_s", "step_start_unix_s"])
    samples = kept.loc[stay, ["metric", "task", "step_id", "time_unix_s", "value"]].reset_index(drop=True)
    return Windows(table, samples)


def _assign_steps(metrics: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Keep the samples inside a step's hold after its declared warm-up, tagged with the step."""
    ordered = steps.sort_values("start_unix_s")
    starts = ordered["start_unix_s"].to_numpy(dtype=float)
    ends = ordered["end_unix_s"].to_numpy(dtype=float)
    warmups = ordered["warmup_s"].fillna(0).to_numpy(dtype=float)
    ids = ordered["step_id"].to_numpy()
    times = metrics["time_unix_s"].to_numpy(dtype=float)
    index = np.searchsorted(starts, times, side="right") - 1
    safe = np.clip(index, 0, max(len(starts) - 1, 0))
    inside = (index >= 0) & (times < ends[safe]) & (times >= starts[safe] + warmups[safe]) if len(starts) else (
        np.zeros(len(times), dtype=bool))
    kept = metrics.loc[inside, ["metric", "task", "time_unix_s", "value"]].copy()
    kept["step_id"] = ids[safe[inside]]
    kept["step_start_unix_s"] = starts[safe[inside]]
    return kept


def _group_positions(kept: pd.DataFrame):
    """Sort samples by (metric, task, step, time); return the order, group ids, positions, sizes."""
    metric_code, _ = pd.factorize(kept["metric"])
    task_code, task_levels = pd.factorize(kept["task"])
    step_code, step_levels = pd.factorize(kept["step_id"])
    key = (metric_code.astype(np.int64) * len(task_levels) + task_code) * len(step_levels) + step_code
    order = np.lexsort((kept["time_unix_s"].to_numpy(), key))
    sorted_key = key[order]
    boundaries = np.flatnonzero(np.diff(sorted_key)) + 1
    starts = np.concatenate(([0], boundaries))
    sizes = np.diff(np.concatenate((starts, [len(sorted_key)])))
    group = np.repeat(np.arange(len(starts)), sizes)
    position = np.arange(len(sorted_key)) - starts[group]
    return order, group, position, sizes


def _mser_cut(values: np.ndarray, group: np.ndarray, position: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The MSER truncation of every group, in samples from the group's start."""
    groups = len(sizes)
    batch_size = np.where(sizes >= MSER_MIN_SAMPLES_FOR_BATCHES, MSER_BATCH, 1)
    batches_per_group = sizes // batch_size
    batch_index = position // batch_size[group]
    full = batch_index < batches_per_group[group]
    offsets = np.concatenate(([0], np.cumsum(batches_per_group)[:-1]))
    batch_id = offsets[group[full]] + batch_index[full]
    total = int(batches_per_group.sum())
    means = np.bincount(batch_id, weights=values[full], minlength=total) / np.repeat(batch_size, batches_per_group)
    owner = np.repeat(np.arange(groups), batches_per_group)
    local = np.arange(total) - offsets[owner]
    # Suffix sums within each group: what remains after cutting the first ``local`` batches.
    s1 = _suffix_sum(means, owner, offsets, batches_per_group)
    s2 = _suffix_sum(means**2, owner, offsets, batches_per_group)
    remaining = batches_per_group[owner] - local
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = (s2 - s1**2 / remaining) / remaining.astype(float) ** 2
    statistic[(remaining < 3) | (local > batches_per_group[owner] // 2)] = np.inf
    best = pd.Series(statistic).groupby(owner).idxmin()
    cut_batches = np.zeros(groups, dtype=np.int64)
    valid = np.isfinite(pd.Series(statistic).groupby(owner).min().to_numpy())
    owners = best.index.to_numpy()
    cut_batches[owners[valid]] = local[best.to_numpy()[valid]]
    return cut_batches * batch_size


def _drifts(values: np.ndarray, group: np.ndarray, position: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """True for groups whose kept window's two halves differ significantly and materially."""
    groups = len(sizes)
    late = position >= sizes[group] // 2
    half = group * 2 + late
    parts = _summarise(values, half, groups * 2)
    early_mean, late_mean = parts["mean"][0::2], parts["mean"][1::2]
    se = np.sqrt((parts["half_width"][0::2] / 1.96) ** 2 + (parts["half_width"][1::2] / 1.96) ** 2)
    gap = np.abs(late_mean - early_mean)
    level = np.maximum(np.abs(early_mean + late_mean) / 2, 1e-9)
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(gap > 3 * se) & np.nan_to_num(gap > 0.05 * level) & (sizes >= MIN_SAMPLES)


def _suffix_sum(values: np.ndarray, owner: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    prefix = np.cumsum(values)
    group_end = prefix[offsets + counts - 1][owner] if len(values) else prefix
    before = np.concatenate(([0.0], prefix[:-1]))
    return group_end - before


def _summarise(values: np.ndarray, group: np.ndarray, groups: int) -> dict[str, np.ndarray]:
    n = np.bincount(group, minlength=groups).astype(float)
    total = np.bincount(group, weights=values, minlength=groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / n
        centred = values - mean[group]
        var = np.bincount(group, weights=centred**2, minlength=groups) / np.maximum(n - 1, 1)
        same = np.concatenate(([False], group[1:] == group[:-1]))
        lagged = np.where(same, centred * np.concatenate(([0.0], centred[:-1])), 0.0)
        autocov = np.bincount(group, weights=lagged, minlength=groups) / np.maximum(n - 1, 1)
        rho = np.clip(np.nan_to_num(autocov / var), 0.0, 0.9)
        # Standard error of a mean of an AR(1)-like series: inflate by sqrt((1 + r) / (1 - r)).
        se = np.sqrt(var / np.maximum(n, 1) * (1 + rho) / (1 - rho))
    sd = np.sqrt(var)
    return {"mean": mean, "sd": np.nan_to_num(sd), "n": n.astype(int), "half_width": np.nan_to_num(1.96 * se)}


def _empty_values() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in
                         ["metric", "task", "step_id", "value", "sd", "n", "ci_low", "ci_high", "cut_s", "steady"]})
