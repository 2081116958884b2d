"""The embedded local cluster: archetype tasks with CPU and memory reservations behind a load balancer.

``from loadgen.cluster import ClusterSpec, LocalCluster``::

    spec = ClusterSpec(archetype="cpu", command=None, params={"cpu_ms": 10}, tasks=2,
                       cpu_units=256, memory_mib=256)
    with LocalCluster(spec, on_event=print) as cluster:
        ...  # send load to cluster.url; cluster.scale_to(4); cluster.metric_source()
"""

from loadgen.cluster.cluster import LocalCluster
from loadgen.cluster.spec import ClusterSpec

__all__ = ["ClusterSpec", "LocalCluster"]
