"""What the analysis reads of ``metrics.csv``, reduced one block at a time.

``metrics.csv`` holds a row per task for every sample of a per-task metric, so it grows with the
task count, while the verdicts rest on the service-level series, the one an autoscaler acts on.
Reading the file whole kept every per-task row in memory several times over (30M rows needed
5.4 GiB). Each block is instead reduced as it is read; what is kept is:

* the service-level rows (task "") of every utilization metric, as they are;
* the per-task rows of a utilization metric only until its first service-level row is seen:
  a source that reports a metric per task alone (a Prometheus scrape, say) still needs a
  service series, the mean over tasks of the samples taken in the same second;
* the highest per-task value of each metric with a limit in each step in which a task crashed
  (a task that dies at its limit may do so in the first seconds of a hold, so warm-up included).

The service rows and the peaks are exactly those a whole-file read gave, and do not depend on the
block size. The per-second means are taken one metric at a time; pandas may add a group's values
in another order than it does in a groupby over the whole table, so such a mean can differ in its
last bit from the whole-table one (relative 1e-16; findings differ, if at all, in the last digits
of a step value or a p-value, up to 1e-11 relative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from scalefinder.core import catalog

SERVICE = ""  # the task of a service-level row


@dataclass(frozen=True)
class ServiceSamples:
    """``rows``: time_unix_s, metric (category), task (always ""), value, in file order, then
    the derived per-task backlog, then the per-second means of per-task-only metrics.
    ``peaks``: metric -> step_id -> highest sample of a metric with a limit in a crash step."""

    rows: pd.DataFrame
    peaks: dict[str, dict[int, float]]


@dataclass
class _Reduction:
    crash_steps: pd.DataFrame
    names: dict[str, int] = field(default_factory=dict)  # metric name -> id, in order of first appearance
    utilization: list[bool] = field(default_factory=list)  # by id
    limited: list[bool] = field(default_factory=list)  # by id
    with_service: set[int] = field(default_factory=set)  # ids that have service-level rows
    service: list[pd.DataFrame] = field(default_factory=list)  # time_unix_s, metric (id), value
    # metric id -> (times, values) blocks of its per-task rows, held until it has a service row
    per_task: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    per_task_ids: set[int] = field(default_factory=set)  # ids seen in per-task rows
    peaks: list[pd.Series] = field(default_factory=list)  # (metric id, step_id) -> max

    def ids(self, categories: pd.Index) -> np.ndarray:
        """The global ids of a block's metric categories, adding the names seen for the first time."""
        for name in categories:
            if name not in self.names:
                self.names[name] = len(self.names)
                info = catalog.info(str(name))
                self.utilization.append(info.role == "utilization")
                self.limited.append(info.limit is not None)
        return np.array([self.names[name] for name in categories], dtype=np.int32)

    def add(self, block: pd.DataFrame) -> None:
        metric = block["metric"].cat
        ids = self.ids(metric.categories)[metric.codes.to_numpy()] if len(metric.categories) else \
            np.zeros(0, dtype=np.int32)
        useful = np.asarray(self.utilization, dtype=bool)[ids] if len(ids) else np.zeros(0, dtype=bool)
        if not useful.any():
            return
        service = (block["task"] == SERVICE).to_numpy()
        times = block["time_unix_s"].to_numpy()
        values = block["value"].to_numpy()
        here = useful & service
        if here.any():
            self.service.append(pd.DataFrame({"time_unix_s": times[here], "metric": ids[here], "value": values[here]}))
            self.with_service |= set(np.unique(ids[here]).tolist())
            for metric_id in self.with_service & set(self.per_task):
                del self.per_task[metric_id]  # no longer needed for a service mean
        tasks = useful & ~service
        if not tasks.any():
            return
        self.per_task_ids |= set(np.unique(ids[tasks]).tolist())
        self._add_peaks(ids[tasks], times[tasks], values[tasks])
        pending = tasks & ~np.isin(ids, list(self.with_service))
        if pending.any():
            for metric_id in np.unique(ids[pending]).tolist():
                rows = pending & (ids == metric_id)
                self.per_task.setdefault(metric_id, []).append((times[rows], values[rows]))

    def _add_peaks(self, ids: np.ndarray, times: np.ndarray, values: np.ndarray) -> None:
        if self.crash_steps.empty:
            return
        limited = np.asarray(self.limited, dtype=bool)[ids]
        if not limited.any():
            return
        step_id = _crash_step_of(self.crash_steps, times[limited])
        inside = step_id >= 0
        if inside.any():
            frame = pd.DataFrame({"metric": ids[limited][inside], "step_id": step_id[inside],
                                  "value": values[limited][inside]})
            self.peaks.append(frame.groupby(["metric", "step_id"])["value"].max())

    def result(self, steps: pd.DataFrame) -> ServiceSamples:
        names = list(self.names)
        categories = pd.CategoricalDtype(names)

        def named(frame: pd.DataFrame) -> pd.DataFrame:
            return frame.assign(metric=pd.Categorical.from_codes(frame["metric"].to_numpy(), dtype=categories),
                                task=SERVICE)[["time_unix_s", "metric", "task", "value"]]

        service = named(pd.concat(self.service, ignore_index=True)) if self.service else _empty()
        service = _per_task_backlog(service, steps, present={names[i] for i in self.with_service | self.per_task_ids})
        if self.per_task:
            # One metric at a time, so that only one metric's rows are ever copied; their
            # order here does not matter, since the windows sort rows by metric and time.
            averaged = [self._averaged(metric_id) for metric_id in sorted(self.per_task)]
            service = pd.concat([service, named(pd.concat(averaged, ignore_index=True))], ignore_index=True)
        return ServiceSamples(service, self._peaks(service, names))

    def _averaged(self, metric_id: int) -> pd.DataFrame:
        """The mean over tasks of one metric's samples taken in the same second."""
        blocks = self.per_task.pop(metric_id)
        seconds = np.floor(np.concatenate([times for times, _ in blocks]))
        values = np.concatenate([values for _, values in blocks])
        del blocks
        means = pd.Series(values).groupby(seconds, sort=False).mean()
        return pd.DataFrame({"time_unix_s": means.index.to_numpy(float), "metric": metric_id,
                             "value": means.to_numpy()})

    def _peaks(self, service: pd.DataFrame, names: list[str]) -> dict[str, dict[int, float]]:
        """The blocks' per-task maxima and the service rows' own, in one table, maximised once."""
        tagged = [part.reset_index().assign(metric=lambda f: np.asarray(names, dtype=object)[f["metric"]])
                  for part in self.peaks]
        if not self.crash_steps.empty and len(service):
            with_limit = [m for m in service["metric"].unique() if catalog.info(str(m)).limit is not None]
            limited = service[service["metric"].isin(with_limit).to_numpy()]
            step_id = _crash_step_of(self.crash_steps, limited["time_unix_s"].to_numpy(float))
            inside = step_id >= 0
            tagged.append(pd.DataFrame({"metric": limited["metric"].astype(str).to_numpy()[inside],
                                        "step_id": step_id[inside], "value": limited["value"].to_numpy()[inside]}))
        found: dict[str, dict[int, float]] = {}
        if tagged:
            table = pd.concat(tagged, ignore_index=True)
            for (metric, step_id), value in table.groupby(["metric", "step_id"])["value"].max().items():
                found.setdefault(str(metric), {})[int(step_id)] = float(value)
        return found


def read_service_samples(blocks: Iterable[pd.DataFrame], steps: pd.DataFrame,
                         crash_steps: list[int]) -> ServiceSamples:
    """Reduce ``metrics.csv``'s blocks (``RunDirectory.metric_batches``) to the service series
    of every utilization metric and the per-task peaks in ``crash_steps``."""
    crash = steps[steps["step_id"].isin(crash_steps)].sort_values("start_unix_s")
    reduction = _Reduction(crash[["step_id", "start_unix_s", "end_unix_s"]].reset_index(drop=True))
    for block in blocks:
        reduction.add(block)
    return reduction.result(steps)


def _crash_step_of(crash_steps: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    """The crash step each time falls in (start inclusive, end exclusive), else -1."""
    starts = crash_steps["start_unix_s"].to_numpy(float)
    ends = crash_steps["end_unix_s"].to_numpy(float)
    index = np.searchsorted(starts, times, "right") - 1
    safe = np.clip(index, 0, len(starts) - 1)
    inside = (index >= 0) & (times < ends[safe])
    return np.where(inside, crash_steps["step_id"].to_numpy()[safe], -1)


def _per_task_backlog(service: pd.DataFrame, steps: pd.DataFrame, present: set[str]) -> pd.DataFrame:
    """A service-total queue is compared across task counts per task: depth / running tasks."""
    total = service[(service["metric"] == catalog.QUEUE_BACKLOG).to_numpy()]
    if total.empty or catalog.QUEUE_BACKLOG_PER_TASK in present:
        return service
    ordered = steps.sort_values("start_unix_s")
    index = np.searchsorted(ordered["start_unix_s"].to_numpy(float), total["time_unix_s"].to_numpy(float), "right") - 1
    tasks = ordered["tasks"].to_numpy(float)[np.clip(index, 0, len(ordered) - 1)]
    derived = total.assign(metric=catalog.QUEUE_BACKLOG_PER_TASK, value=total["value"].to_numpy() / tasks)
    return pd.concat([service, derived], ignore_index=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"time_unix_s": pd.Series(dtype="float64"), "metric": pd.Series(dtype="category"),
                         "task": pd.Series(dtype="object"), "value": pd.Series(dtype="float64")})
