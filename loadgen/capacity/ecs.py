"""Change an ECS service's task count without fighting its autoscaler, and always put it back.

Order of operations (the autoscaler would otherwise undo a manual doubling): record the desired
count and the scalable target; re-register the target with dynamic and scheduled scaling
suspended and room for twice the planned tasks; then change the desired count and wait until the
deployment is steady, running equals desired and exactly that many of the service's own targets
are healthy behind the load balancer. ``restore`` sets the desired count back while scaling is
still suspended and then re-registers the original minimum, maximum and suspension flags.

Steady means, by the service's deployment controller: ``ECS``, one deployment (the
``services_stable`` waiter's rule); ``CODE_DEPLOY`` and ``EXTERNAL``, whose ``deployments`` list
stays empty, running equals desired (and for ``CODE_DEPLOY`` the PRIMARY task set runs them all).
Healthy targets are counted in one target group (``discovery.choose_load_balancer``), and only
those that are this service's tasks: a target group may be shared with other services.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable

from scalefinder.loadgen.aws import discovery
from scalefinder.loadgen.aws.options import service_table
from scalefinder.loadgen.kind_config import flag, seconds, whole_number
from scalefinder.loadgen.aws.session import AwsClients, call
from scalefinder.loadgen.capacity.base import CapacityController
from scalefinder.loadgen.context import RunContext
from scalefinder.core.errors import InfrastructureError, InputError, ProfileError
from scalefinder.core.waiting import wait_until

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {"region": None, "poll_s": 15.0, "max_tasks": 50, "wait_for_targets": True,
                            "container_name": None, "container_port": None}
# The service's deployment controller types (botocore: DeploymentControllerType).
ECS_CONTROLLER, CODE_DEPLOY, EXTERNAL = "ECS", "CODE_DEPLOY", "EXTERNAL"
# How an ECS cluster or service name is cut into words to look for a production name: "web-prod",
# "prd_api" and "live.web" are production; "product-api" and "delivery" are not.
_WORD_SEPARATORS = re.compile(r"[-_./:\s]+")


def validate_config(table: dict, where: str) -> dict:
    """Check ``[capacity.ecs]``: cluster and service are required."""
    config = service_table(table, where, DEFAULTS)
    if config["region"] is not None and not isinstance(config["region"], str):
        raise ProfileError("expected a region name such as \"eu-west-1\"", key=f"{where}.region")
    config["poll_s"] = seconds(config["poll_s"], 0, 300, f"{where}.poll_s", low_open=True)
    whole_number(config["max_tasks"], 1, f"{where}.max_tasks")
    flag(config["wait_for_targets"], f"{where}.wait_for_targets")
    # which of the service's load balancer entries to watch, when it has several
    name = config["container_name"]
    if name is not None and (not isinstance(name, str) or not name):
        raise ProfileError("expected the container's name as in the service's load balancer entry",
                           key=f"{where}.container_name")
    port = config["container_port"]
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ProfileError(f"expected a port from 1 to 65535, got {port!r}", key=f"{where}.container_port")
    return config


def production_word(name: str, production_names: Iterable[str]) -> str | None:
    """The word of an ECS name that says production, or None.

    Words are split on '-', '_', '.', and on ':' and '/' as in an ARN; a word counts when it is
    one of ``production_names`` (case aside), also with a number after it ("prd01"), never as a
    mere substring ("product", "delivery").
    """
    names = {n.lower() for n in production_names}
    for word in _WORD_SEPARATORS.split(name.lower()):
        if word in names or (word.rstrip("0123456789") in names and word[-1:].isdigit()):
            return word
    return None


def check_service_names(controller: dict[str, Any] | None, source: dict[str, Any] | None,
                        production_names: Iterable[str]) -> None:
    """Refuse, when a profile loads, ECS names that look like production, and a controller that
    would resize another service than the one the CloudWatch source measures.

    ``controller`` is the ``[capacity.ecs]`` table, ``source`` the ``[sources.cloudwatch]`` one
    (either may be None). Raises ``ProfileError`` located at the key.
    """
    production_names = tuple(production_names)
    for table, where in ((controller, "capacity.ecs"), (source, "sources.cloudwatch")):
        for key in ("cluster", "service"):
            value = (table or {}).get(key)
            word = production_word(value, production_names) if isinstance(value, str) else None
            if word is not None:
                raise ProfileError(f"{value!r} looks like production (the word {word!r}); scalefinder refuses "
                                   "to load-test or resize production", key=f"{where}.{key}")
    if controller is None or source is None:
        return
    for key in ("cluster", "service"):
        if controller.get(key) != source.get(key):
            raise ProfileError(
                f"capacity.ecs.{key} = {controller.get(key)!r} but sources.cloudwatch.{key} = {source.get(key)!r}: "
                "the controller would resize another service than the one measured; name the same one in both",
                key=f"capacity.ecs.{key}")


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
        container_name=config.get("container_name"), container_port=config.get("container_port"),
    )


class EcsCapacityController(CapacityController):
    kind = "ecs"

    def __init__(self, clients: AwsClients, cluster: str, service: str, *, poll_s: float = 15.0,
                 max_tasks: int = 50, planned_max_tasks: int | None = None, wait_for_targets: bool = True,
                 container_name: str | None = None, container_port: int | None = None):
        self.clients = clients
        self.cluster = cluster
        self.service = service
        self.poll_s = poll_s
        self.max_tasks = max_tasks
        self.planned_max_tasks = planned_max_tasks
        self.wait_for_targets = wait_for_targets
        self.container_name = container_name
        self.container_port = container_port
        self._scalable: discovery.ScalableTarget | None = None
        self._choice: discovery.LoadBalancerChoice | None = None
        self._choice_made = False
        self._fallback_logged = False

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
        choice = self._load_balancer(described)
        return {
            "cluster": self.cluster,
            "service": self.service,
            "region": self.clients.region,
            "tasks": int(described.get("desiredCount", 0)),  # the desired count, as the experiment calls it
            "scalable_target": scalable,
            "deployment_controller": _controller_type(described),
            # which target group the run waits on for healthy tasks, and why (not needed to restore)
            "target_group": choice.as_dict() if choice is not None else None,
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
            is_steady = _is_steady(described, count)
            # the targets only once the service itself is there: fewer calls while it gets there
            healthy = self._healthy_targets(described, count) if is_steady else None
            last.update(described=described, healthy=healthy, checked=is_steady)
            if is_steady and (healthy is None or healthy[0] == count):
                return True
            _raise_if_failing(described)  # a failed deployment will not get there: stop now
            return False

        def timed_out() -> InfrastructureError:
            described, healthy = last["described"], last["healthy"]
            if healthy is not None:
                targets = (f"healthy targets {healthy[0]} of this service ({healthy[1]} healthy in "
                           f"{discovery.arn_dimension(healthy[2])})")
            else:
                targets = "healthy targets " + ("n/a" if last["checked"] else "not checked until the service is steady")
            return InfrastructureError(
                f"ECS service '{self.service}' did not reach {count} healthy tasks within {timeout_s:.0f} s "
                f"(running {described.get('runningCount')}, pending {described.get('pendingCount')}, "
                f"{_progress_text(described)}, {targets}); latest service event: {_latest_event(described)}")

        wait_until(steady, timeout_s=timeout_s, interval_s=self.poll_s, what=f"{count} healthy ECS tasks",
                   on_timeout=timed_out)

    def _load_balancer(self, described: dict[str, Any]) -> discovery.LoadBalancerChoice | None:
        """The load balancer entry to watch, chosen once per controller (see ``choose_load_balancer``)."""
        if not self._choice_made:
            self._choice = discovery.choose_load_balancer(described.get("loadBalancers") or [],
                                                          self.container_name, self.container_port)
            self._choice_made = True
            if self._choice is not None:
                log.info("watching target group %s of ECS service %s: %s",
                         discovery.arn_dimension(self._choice.target_group_arn), self.service, self._choice.reason)
        return self._choice

    def _healthy_targets(self, described: dict[str, Any], count: int) -> tuple[int, int, str] | None:
        """(healthy targets that are this service's tasks, healthy targets in all, target group ARN),
        or None without a balancer or with ``wait_for_targets = false``."""
        if not self.wait_for_targets:
            return None
        choice = self._load_balancer(described)
        if choice is None:
            return None
        health = call(self.clients.client("elbv2"), "describe_target_health", TargetGroupArn=choice.target_group_arn)
        descriptions = health.get("TargetHealthDescriptions", [])
        total = sum(1 for t in descriptions if (t.get("TargetHealth") or {}).get("State") == "healthy")
        tasks = discovery.service_tasks(self.clients, self.cluster, self.service)
        if not tasks and count > 0:
            # The service says it runs `count` tasks, yet none can be listed (ECS answering from two
            # views not yet in step; moto, which runs no tasks): nothing to tell its targets from
            # others' by, so count them all, as before, and say so once.
            if not self._fallback_logged:
                log.warning("ECS service %s lists no tasks although %s are running; counting every healthy target "
                            "of %s", self.service, described.get("runningCount"),
                            discovery.arn_dimension(choice.target_group_arn))
                self._fallback_logged = True
            return total, total, choice.target_group_arn
        bridged = any(c.get("networkBindings") for task in tasks for c in task.get("containers") or [])
        instances = discovery.container_instance_ids(self.clients, self.cluster, tasks) if bridged else {}
        addresses = discovery.task_target_addresses(tasks, choice, instances)
        return discovery.healthy_own_targets(descriptions, addresses), total, choice.target_group_arn


def _controller_type(described: dict[str, Any]) -> str:
    return str((described.get("deploymentController") or {}).get("type") or ECS_CONTROLLER)


def _is_steady(described: dict[str, Any], count: int) -> bool:
    """Whether a described service runs ``count`` tasks and is done deploying.

    ``ECS``: the services_stable waiter's rule (one deployment), plus the count asked for.
    ``CODE_DEPLOY`` and ``EXTERNAL`` services have no ``deployments`` (a CodeDeploy or external
    deployment manages task sets instead), so desired and running must equal the count; for
    ``CODE_DEPLOY`` the PRIMARY task set must also be running all of them (no replacement task
    set still holding tasks).
    """
    if int(described.get("desiredCount", -1)) != count or int(described.get("runningCount", -1)) != count:
        return False
    kind = _controller_type(described)
    if kind == ECS_CONTROLLER:
        return len(described.get("deployments") or []) == 1
    if kind == CODE_DEPLOY:
        sets = described.get("taskSets") or []
        if not sets:
            return True
        primary = [s for s in sets if s.get("status") == "PRIMARY"]
        return len(primary) == 1 and int(primary[0].get("runningCount", -1)) == count
    return True  # EXTERNAL: running == desired == count


def _progress_text(described: dict[str, Any]) -> str:
    """The deployment state for an error message, as the service's controller type has it."""
    kind = _controller_type(described)
    if kind == ECS_CONTROLLER:
        return f"deployments {len(described.get('deployments') or [])}"
    sets = ", ".join(f"{s.get('status')} {s.get('runningCount')}" for s in described.get("taskSets") or [])
    return f"{kind} controller, task sets: {sets or 'none'}"


def _raise_if_failing(described: dict[str, Any]) -> None:
    for deployment in described.get("deployments", []):
        if deployment.get("rolloutState") == "FAILED":
            raise InfrastructureError(
                f"ECS deployment {deployment.get('id')} failed: {deployment.get('rolloutStateReason')}")


def _latest_event(described: dict[str, Any]) -> str:
    events = described.get("events") or []
    return events[0].get("message", "none") if events else "none"
