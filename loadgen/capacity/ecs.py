"""Change an ECS service's task count without fighting its autoscaler, and always put it back.

Order of operations (the autoscaler would otherwise undo a manual doubling): record the desired
count and the scalable target; re-register the target with dynamic and scheduled scaling
suspended and room for twice the planned tasks; then change the desired count and wait until the
deployment is steady, running equals desired and exactly that many targets are healthy behind
the load balancer. ``restore`` sets the desired count back while scaling is still suspended and
then re-registers the original minimum, maximum and suspension flags.
"""

from __future__ import annotations

import logging
from typing import Any

from scalefinder.loadgen.aws import discovery
from scalefinder.loadgen.aws.options import service_table
from scalefinder.loadgen.kind_config import flag, seconds, whole_number
from scalefinder.loadgen.aws.session import AwsClients, call
from scalefinder.loadgen.capacity.base import CapacityController
from scalefinder.loadgen.context import RunContext
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError
from scalefinder.core.waiting import wait_until

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"region": None, "poll_s": 15.0, "max_tasks": 50, "wait_for_targets": True}


def validate_config(table: dict, where: str) -> dict:
    """Check ``[capacity.ecs]``: cluster and service are required."""
    config = service_table(table, where, DEFAULTS)
    if config["region"] is not None and not isinstance(config["region"], str):
        raise ProfileError("expected a region name such as \"eu-west-1\"", key=f"{where}.region")
    config["poll_s"] = seconds(config["poll_s"], 0, 300, f"{where}.poll_s", low_open=True)
    whole_number(config["max_tasks"], 1, f"{where}.max_tasks")
    flag(config["wait_for_targets"], f"{where}.wait_for_targets")
    return config


def build(config: dict, context: RunContext) -> "EcsCapacityController":
    clients = AwsClients(region=context.options.get("aws_region") or config.get("region"),
                         profile=context.options.get("aws_profile"))
    capacity = getattr(context.profile, "capacity", None)
    planned = 2 * int(capacity.tasks) if getattr(capacity, "tasks", None) else None
    if planned is not None and planned > config["max_tasks"]:
        raise InputError(f"the replay phase needs {planned} tasks (twice capacity.tasks) but "
                         f"[capacity.ecs] max_tasks is {config['max_tasks']}; raise it or lower capacity.tasks")
    return EcsCapacityController(
        clients, config["cluster"], config["service"], poll_s=float(config["poll_s"]),
        max_tasks=int(config["max_tasks"]), planned_max_tasks=planned,
        wait_for_targets=bool(config["wait_for_targets"]),
    )


class EcsCapacityController(CapacityController):
    kind = "ecs"

    def __init__(self, clients: AwsClients, cluster: str, service: str, *, poll_s: float = 15.0,
                 max_tasks: int = 50, planned_max_tasks: int | None = None, wait_for_targets: bool = True):
        self.clients = clients
        self.cluster = cluster
        self.service = service
        self.poll_s = poll_s
        self.max_tasks = max_tasks
        self.planned_max_tasks = planned_max_tasks
        self.wait_for_targets = wait_for_targets
        self._scalable: discovery.ScalableTarget | None = None

    # -- state ----------------------------------------------------------------------------
    def current(self) -> int:
        return int(self._describe().get("runningCount", 0))

    def snapshot(self) -> dict[str, Any]:
        described = self._describe()
        self._scalable = discovery.find_scalable_target(self.clients, self.cluster, self.service)
        scalable = None
        if self._scalable is not None:
            scalable = {
                "min_capacity": self._scalable.min_capacity,
                "max_capacity": self._scalable.max_capacity,
                "scale_in_suspended": self._scalable.scale_in_suspended,
                "scale_out_suspended": self._scalable.scale_out_suspended,
                "scheduled_suspended": self._scalable.scheduled_suspended,
                "policies": list(self._scalable.policies),
            }
        return {
            "cluster": self.cluster,
            "service": self.service,
            "region": self.clients.region,
            "tasks": int(described.get("desiredCount", 0)),  # the desired count, as the experiment calls it
            "scalable_target": scalable,
        }

    # -- changes --------------------------------------------------------------------------
    def prepare(self) -> None:
        """Suspend the autoscaler and make room for the planned task counts."""
        if self._scalable is None:
            self._scalable = discovery.find_scalable_target(self.clients, self.cluster, self.service)
        if self._scalable is None:
            log.info("service %s has no scalable target; nothing to suspend", self.service)
            return
        wanted_max = max(self._scalable.max_capacity, self.planned_max_tasks or 0)
        self._register(self._scalable.min_capacity, wanted_max, suspended=True)
        log.info("suspended dynamic and scheduled scaling of %s; max capacity %d", self.service, wanted_max)

    def scale_to(self, count: int, timeout_s: float) -> None:
        if count < 0 or count > self.max_tasks:
            raise InfrastructureError(
                f"refusing to scale ECS service '{self.service}' to {count} tasks: the limit is "
                f"max_tasks = {self.max_tasks} in [capacity.ecs]")
        self._widen_range(count)
        call(self.clients.client("ecs"), "update_service", cluster=self.cluster, service=self.service,
             desiredCount=count)
        log.info("set desired count of %s to %d; waiting for it to be steady", self.service, count)
        self._wait_steady(count, timeout_s)

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put back the desired count, then the scalable target's range and suspension flags."""
        call(self.clients.client("ecs"), "update_service", cluster=snapshot["cluster"],
             service=snapshot["service"], desiredCount=int(snapshot["tasks"]))
        original = snapshot.get("scalable_target")
        if original is not None:
            call(self.clients.client("application-autoscaling"), "register_scalable_target",
                 ServiceNamespace="ecs", ResourceId=discovery.resource_id(snapshot["cluster"], snapshot["service"]),
                 ScalableDimension=discovery.ECS_DIMENSION,
                 MinCapacity=int(original["min_capacity"]), MaxCapacity=int(original["max_capacity"]),
                 SuspendedState={
                     "DynamicScalingInSuspended": bool(original["scale_in_suspended"]),
                     "DynamicScalingOutSuspended": bool(original["scale_out_suspended"]),
                     "ScheduledScalingSuspended": bool(original["scheduled_suspended"]),
                 })
        self._scalable = None
        log.info("restored ECS service %s to %s tasks and its original scaling settings",
                 snapshot["service"], snapshot["tasks"])

    # -- helpers --------------------------------------------------------------------------
    def _describe(self) -> dict[str, Any]:
        return discovery.describe_service(self.clients, self.cluster, self.service)

    def _register(self, min_capacity: int, max_capacity: int, *, suspended: bool) -> None:
        call(self.clients.client("application-autoscaling"), "register_scalable_target",
             ServiceNamespace="ecs", ResourceId=discovery.resource_id(self.cluster, self.service),
             ScalableDimension=discovery.ECS_DIMENSION, MinCapacity=min_capacity, MaxCapacity=max_capacity,
             SuspendedState={"DynamicScalingInSuspended": suspended, "DynamicScalingOutSuspended": suspended,
                             "ScheduledScalingSuspended": suspended})
        self._scalable = discovery.ScalableTarget(
            self._scalable.resource_id if self._scalable else discovery.resource_id(self.cluster, self.service),
            min_capacity, max_capacity, suspended, suspended, suspended,
            self._scalable.policies if self._scalable else ())

    def _widen_range(self, count: int) -> None:
        """Re-registering clamps the desired count into [min, max], so the range must hold it."""
        target = self._scalable
        if target is None or target.min_capacity <= count <= target.max_capacity:
            return
        self._register(min(target.min_capacity, count), max(target.max_capacity, count), suspended=True)

    def _wait_steady(self, count: int, timeout_s: float) -> None:
        last: dict[str, Any] = {}

        def steady() -> bool:
            described = self._describe()
            healthy = self._healthy_targets(described)
            last.update(described=described, healthy=healthy)
            if _is_steady(described, count) and (healthy is None or healthy == count):
                return True
            _raise_if_failing(described)  # a failed deployment will not get there: stop now
            return False

        def timed_out() -> InfrastructureError:
            described, healthy = last["described"], last["healthy"]
            return InfrastructureError(
                f"ECS service '{self.service}' did not reach {count} healthy tasks within {timeout_s:.0f} s "
                f"(running {described.get('runningCount')}, pending {described.get('pendingCount')}, "
                f"deployments {len(described.get('deployments', []))}, healthy targets "
                f"{'n/a' if healthy is None else healthy}); latest service event: {_latest_event(described)}")

        wait_until(steady, timeout_s=timeout_s, interval_s=self.poll_s, what=f"{count} healthy ECS tasks",
                   on_timeout=timed_out)

    def _healthy_targets(self, described: dict[str, Any]) -> int | None:
        """Healthy targets in the service's emptiest target group, or None without a balancer."""
        arns = sorted({lb["targetGroupArn"] for lb in described.get("loadBalancers", []) if lb.get("targetGroupArn")})
        if not arns or not self.wait_for_targets:
            return None
        counts = []
        for arn in arns:
            health = call(self.clients.client("elbv2"), "describe_target_health", TargetGroupArn=arn)
            counts.append(sum(1 for t in health.get("TargetHealthDescriptions", [])
                              if t.get("TargetHealth", {}).get("State") == "healthy"))
        return min(counts)


def _is_steady(described: dict[str, Any], count: int) -> bool:
    """The services_stable waiter's rule, plus the count we asked for."""
    return (len(described.get("deployments", [])) == 1
            and int(described.get("desiredCount", -1)) == count
            and int(described.get("runningCount", -1)) == count)


def _raise_if_failing(described: dict[str, Any]) -> None:
    for deployment in described.get("deployments", []):
        if deployment.get("rolloutState") == "FAILED":
            raise InfrastructureError(
                f"ECS deployment {deployment.get('id')} failed: {deployment.get('rolloutStateReason')}")


def _latest_event(described: dict[str, Any]) -> str:
    events = described.get("events") or []
    return events[0].get("message", "none") if events else "none"
