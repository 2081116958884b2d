"""The capacity controller of the embedded local cluster: task count changes through LocalCluster."""

from __future__ import annotations

from typing import Any

from scalefinder.loadgen.capacity.base import CapacityController
from scalefinder.loadgen.kind_config import seconds, with_defaults
from scalefinder.core.errors import InputError

DEFAULT_TIMEOUT_S = 60.0


class LocalCapacityController(CapacityController):
    kind = "local"

    def __init__(self, cluster: Any, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.cluster = cluster
        self.timeout_s = timeout_s

    def current(self) -> int:
        return len(self._running_cluster().running_tasks())

    def snapshot(self) -> dict[str, Any]:
        return {"kind": self.kind, "tasks": self.current()}

    def scale_to(self, count: int, timeout_s: float | None = None) -> None:
        self._running_cluster().scale_to(count, timeout_s=timeout_s if timeout_s is not None else self.timeout_s)

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Back to the recorded count while the cluster runs; a stopped cluster has nothing to undo
        (its processes and cgroups went with it)."""
        tasks = snapshot.get("tasks")
        if not isinstance(tasks, int) or tasks < 1:
            raise InputError(f"the local snapshot has no valid task count: {snapshot!r}")
        if self.cluster is None or not self.cluster.running_tasks():
            return
        if self.current() != tasks:
            self.scale_to(tasks)

    def _running_cluster(self) -> Any:
        if self.cluster is None:
            raise InputError("the local cluster of this run is not running; there is nothing to scale")
        return self.cluster


def validate_config(table: dict, where: str) -> dict:
    """Check ``[capacity.local]``: only ``timeout_s`` (how long a scale may take, default 60)."""
    config = with_defaults(table, where, {"timeout_s": DEFAULT_TIMEOUT_S})
    return {"timeout_s": seconds(config["timeout_s"], 1, 3600, f"{where}.timeout_s")}


def build(config: dict, context: Any) -> CapacityController:
    # Without a cluster (``scalefinder restore`` after the run's process died) the controller
    # can only restore, and a stopped local cluster has nothing left to restore.
    return LocalCapacityController(context.cluster, timeout_s=config.get("timeout_s", DEFAULT_TIMEOUT_S))
