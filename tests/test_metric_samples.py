"""metrics.csv reduced a block at a time gives what a whole-file read gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scalefinder.analysis import analyzer
from scalefinder.analysis.samples import read_service_samples
from scalefinder.core import catalog
from scalefinder.core.rundir import RunDirectory
from tests.synthetic import write_synthetic_run

SMALL_BLOCK = 8 << 10  # a few hundred rows: every run below is read in many blocks


def whole_file_reference(run: RunDirectory, steps: pd.DataFrame, crash_steps: list[int]):
    """The service series and crash peaks computed from the whole table at once."""
    rows = run.metric_samples()
    rows = rows.assign(metric=rows["metric"].astype(str), task=rows["task"].astype(str))
    rows = rows[[catalog.info(m).role == "utilization" for m in rows["metric"]]]
    service = rows[rows["task"] == ""]
    if catalog.QUEUE_BACKLOG in set(service["metric"]) and catalog.QUEUE_BACKLOG_PER_TASK not in set(rows["metric"]):
        total = service[service["metric"] == catalog.QUEUE_BACKLOG]
        ordered = steps.sort_values("start_unix_s")
        index = np.searchsorted(ordered["start_unix_s"].to_numpy(float), total["time_unix_s"].to_numpy(), "right") - 1
        tasks = ordered["tasks"].to_numpy(float)[np.clip(index, 0, len(ordered) - 1)]
        service = pd.concat([service, total.assign(metric=catalog.QUEUE_BACKLOG_PER_TASK,
                                                   value=total["value"].to_numpy() / tasks)])
    only_tasks = rows[~rows["metric"].isin(set(service["metric"]))]
    averaged = (only_tasks.assign(time_unix_s=np.floor(only_tasks["time_unix_s"]))
                .groupby(["metric", "time_unix_s"], as_index=False)["value"].mean().assign(task=""))
    service = pd.concat([service, averaged], ignore_index=True)
    peaks: dict[str, dict[int, float]] = {}
    everything = pd.concat([rows, averaged], ignore_index=True)
    for step in steps[steps["step_id"].isin(crash_steps)].itertuples():
        inside = everything[(everything["time_unix_s"] >= step.start_unix_s)
                            & (everything["time_unix_s"] < step.end_unix_s)]
        for metric, value in inside.groupby("metric")["value"].max().items():
            if catalog.info(metric).limit is not None:
                peaks.setdefault(metric, {})[int(step.step_id)] = float(value)
    return service, peaks


def ordered(frame: pd.DataFrame) -> pd.DataFrame:
    return (frame.assign(metric=frame["metric"].astype(str), task=frame["task"].astype(str))
            [["metric", "task", "time_unix_s", "value"]].sort_values(["metric", "time_unix_s"]).reset_index(drop=True))


def without_service_rows(run_path) -> None:
    """Leave only per-task rows, as a Prometheus scrape records them."""
    path = run_path / "metrics.csv"
    table = pd.read_csv(path, dtype={"task": "string"}, keep_default_na=False)
    table[table["task"] != ""].to_csv(path, index=False)


def reduce(run: RunDirectory, block_bytes: int):
    steps = analyzer._steps(run, analyzer._slo(run.manifest))
    crash_steps = analyzer._crash_steps(run, steps)
    return steps, crash_steps, read_service_samples(run.metric_batches(block_bytes), steps, crash_steps)


@pytest.mark.parametrize("kind", ["memory", "queue"])
def test_blocks_give_the_whole_file_answer_with_service_rows(tmp_path, kind):
    run = RunDirectory.open(write_synthetic_run(tmp_path / "run", kind, seed=4))
    steps, crash_steps, reduced = reduce(run, SMALL_BLOCK)
    service, peaks = whole_file_reference(run, steps, crash_steps)
    pd.testing.assert_frame_equal(ordered(reduced.rows), ordered(service))
    assert reduced.peaks == peaks
    if kind == "memory":
        assert crash_steps and peaks  # the memory archetype crashes at its limit: peaks are exercised
    # and the block size does not matter, to the last bit and the row order
    whole = read_service_samples(run.metric_batches(), steps, crash_steps)
    pd.testing.assert_frame_equal(reduced.rows.assign(metric=reduced.rows["metric"].astype(str)),
                                  whole.rows.assign(metric=whole.rows["metric"].astype(str)))


def test_blocks_average_per_task_only_metrics_per_second(tmp_path):
    path = write_synthetic_run(tmp_path / "run", "memory", seed=5)
    without_service_rows(path)
    run = RunDirectory.open(path)
    steps, crash_steps, reduced = reduce(run, SMALL_BLOCK)
    service, peaks = whole_file_reference(run, steps, crash_steps)
    mine, theirs = ordered(reduced.rows), ordered(service)
    pd.testing.assert_frame_equal(mine.drop(columns="value"), theirs.drop(columns="value"))
    # a mean's last bit depends on the order pandas sums a group in, which is not specified
    np.testing.assert_allclose(mine["value"], theirs["value"], rtol=1e-12)
    assert reduced.peaks == peaks and peaks


def test_a_run_without_utilization_metrics_reduces_to_nothing(tmp_path):
    path = write_synthetic_run(tmp_path / "run", "cpu", replay=False, beyond=False)
    table = pd.read_csv(path / "metrics.csv", dtype={"task": "string"}, keep_default_na=False)
    table[[catalog.info(m).role != "utilization" for m in table["metric"]]].to_csv(path / "metrics.csv", index=False)
    run = RunDirectory.open(path)
    _, _, reduced = reduce(run, SMALL_BLOCK)
    assert reduced.rows.empty and reduced.peaks == {}


def test_a_row_that_is_not_utf8_is_one_error_without_a_traceback(tmp_path, capfd):
    from scalefinder.core.errors import RunDirectoryError

    path = write_synthetic_run(tmp_path / "run", "cpu", replay=False, beyond=False)
    with open(path / "metrics.csv", "ab") as handle:
        handle.write(b"1795000100.0,local,cpu\xe9,task-1\n")  # too few columns, and not UTF-8
    with pytest.raises(RunDirectoryError, match="cannot be read as CSV"):
        list(RunDirectory.open(path).metric_batches())
    assert "Traceback" not in capfd.readouterr().err
