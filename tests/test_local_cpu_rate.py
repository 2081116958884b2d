"""The local source's CPU utilization is a rate over the time between two reads of the counter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from scalefinder.core import catalog
from scalefinder.loadgen.sources.local import LocalMetricSource, Reading


def reading(sampled_s: float, cpu_s: float, cpu_read_s: float, incarnation: int = 1) -> Reading:
    return Reading(sampled_s, incarnation, cpu_s, cpu_read_s, rss_bytes=0, read_bytes=0, write_bytes=0, balancer={})


def test_cpu_is_divided_by_the_time_between_the_counter_reads_not_between_the_samplings():
    # Half a vCPU. The sampling asked every second, but on a busy machine the second read of the
    # task's counter came 1.5 s after the first: 0.75 CPU seconds in that time is all of half a
    # core, not the 150% that dividing by the sampling's second would report.
    cluster = SimpleNamespace(spec=SimpleNamespace(cpu_units=512, memory_mib=256))
    source = LocalMetricSource(cluster)
    try:
        values = source._task_values(reading(101.0, 10.75, 101.6), reading(100.0, 10.0, 100.1))
        assert values[catalog.CPU_UTILIZATION] == pytest.approx(100.0)
        # no rate across a restart, nor without time between the reads
        assert catalog.CPU_UTILIZATION not in source._task_values(reading(101.0, 0.2, 101.1, incarnation=2),
                                                                  reading(100.0, 10.0, 100.1))
        assert catalog.CPU_UTILIZATION not in source._task_values(reading(101.0, 10.0, 100.1),
                                                                  reading(100.0, 10.0, 100.1))
    finally:
        source.stop()
