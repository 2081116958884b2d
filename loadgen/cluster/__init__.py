"""The embedded local cluster: archetype tasks with CPU and memory reservations behind a load balancer.

``from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster``::

    spec = ClusterSpec(archetype="cpu", command=None, params={"cpu_ms": 10}, tasks=2,
                       cpu_units=256, memory_mib=256)
    with LocalCluster(spec, on_event=print) as cluster:
        ...  # send load to cluster.url; cluster.scale_to(4); cluster.metric_source()

The names are resolved on first use, so a task process (``python -m scalefinder.loadgen.cluster.task``)
imports only what it serves with, not the supervisor side.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"ClusterSpec": "scalefinder.loadgen.cluster.spec", "LocalCluster": "scalefinder.loadgen.cluster.cluster"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scalefinder.loadgen.cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
