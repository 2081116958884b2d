"""An ECS service on this machine: the local cluster's tasks, AWS's APIs from moto, and the
metrics Container Insights and the load balancer would write, at CloudWatch's own minute.

``EcsEmulator`` starts a moto server on 127.0.0.1, seeds an ECS service world into it (see
``world``), starts the local cluster with as many tasks as the service desires, and runs two
threads that play AWS:

* the **ECS agent** follows the service's ``desiredCount``: new tasks start after
  ``start_delay_s`` (a Fargate task pulls its image and boots) and pass the cluster's health check
  before their targets turn healthy in the target group; tasks to stop leave the target group
  first and are drained;
* the **metrics publisher** groups the cluster's one-second samples by minute and, once a minute
  has ended and ``publish_delay_minutes`` more have passed (Container Insights lands its data a
  minute or two late), writes that minute's datapoints (``insights.MinuteBook``).

A run then reaches it exactly as it reaches AWS: boto3 through ``AWS_ENDPOINT_URL``
(``environment()``), the load through the cluster's balancer (``url``). The minute is 60 s unless
compressed for tests (``minute_s``; the CloudWatch source accepts a compressed minute only against
a loopback endpoint, which this always is).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from scalefinder.core.errors import InfrastructureError, InputError
from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster
from scalefinder.loadgen.cluster.spec import MAX_TASKS
from scalefinder.loadgen.emulator import insights, world
from scalefinder.loadgen.sources.cloudwatch import MINUTE_CHOICES

log = logging.getLogger(__name__)

#: a Fargate task's start (image pull, boot, first health checks) as a share of the minute
START_DELAY_MINUTES = 0.5
PUBLISH_DELAY_MINUTES = 1.0


class EcsEmulator:
    def __init__(self, spec: ClusterSpec, *, mode: str = insights.PER_TASK, minute_s: int = 60,
                 start_delay_s: float | None = None, publish_delay_minutes: float = PUBLISH_DELAY_MINUTES,
                 endpoint_port: int = 0, enhanced: bool = True, region: str = world.REGION,
                 keep_samples: bool = False, on_event: Callable[..., None] | None = None):
        if mode not in insights.MODES:
            raise InputError(f"the service datapoint mode must be one of {', '.join(insights.MODES)}, got {mode!r}")
        if minute_s not in MINUTE_CHOICES:
            raise InputError(f"the emulated minute must be one of {', '.join(map(str, MINUTE_CHOICES))} s, "
                             f"got {minute_s!r}")
        if start_delay_s is not None and not 0 <= start_delay_s <= 600:
            raise InputError(f"the task start delay must be from 0 to 600 s, got {start_delay_s!r}")
        self.spec, self.mode, self.minute_s, self.enhanced, self.region = spec, mode, minute_s, enhanced, region
        self.start_delay_s = START_DELAY_MINUTES * minute_s if start_delay_s is None else float(start_delay_s)
        self.publish_delay_s = publish_delay_minutes * minute_s
        self.endpoint_port = endpoint_port
        self._on_event = on_event or (lambda kind, **detail: None)
        self.endpoint = ""
        self.world: world.World | None = None
        self.cluster: LocalCluster | None = None
        self.errors: list[str] = []
        self.minutes_published = 0
        # the local source's rows the metrics were made from (keep_samples), to compare the two paths
        self.samples: list[dict[str, Any]] | None = [] if keep_samples else None
        self.first_published = threading.Event()
        self._server: Any = None
        self._book: insights.MinuteBook | None = None
        self._book_lock = threading.Lock()
        self._source: Any = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "EcsEmulator":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        try:
            self._server, self.endpoint = world.start_server(self.endpoint_port)
        except ImportError:
            raise InputError("the ECS emulator needs moto: pip install 'scalefinder[emulator]'") from None
        except OSError as exc:
            raise InfrastructureError(f"the AWS endpoint could not start on 127.0.0.1:{self.endpoint_port} "
                                      f"({exc}); choose another port") from None
        # moto keeps one state per process, shared by every server in it: start from a clean one
        world.reset(self.endpoint)
        self.world = world.seed_world(desired=self.spec.tasks, min_capacity=1,
                                      max_capacity=max(2 * self.spec.tasks, 3), cpu_units=self.spec.cpu_units,
                                      memory_mib=self.spec.memory_mib, region=self.region,
                                      endpoint_url=self.endpoint)
        self.cluster = LocalCluster(self.spec, on_event=self._cluster_event)
        self.cluster.start()
        names = insights.Names(self.world.cluster, self.world.service, self.world.target_group_dimension,
                               self.world.load_balancer_dimension,
                               self.world.queue_name if self.spec.archetype == "queue" else None)
        interval_s = min(1.0, float(self.minute_s))
        self._book = insights.MinuteBook(names, cpu_units=self.spec.cpu_units, memory_mib=self.spec.memory_mib,
                                         minute_s=self.minute_s, interval_s=interval_s, mode=self.mode,
                                         enhanced=self.enhanced)
        self._source = self.cluster.metric_source(interval_s=interval_s)
        self._source.start(self._collect)
        for name, target in (("ecs-agent", self._follow_desired_count), ("insights-publisher", self._publish)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the threads, the cluster and the endpoint. Safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._source is not None:
            self._source.stop()
        for thread in self._threads:
            thread.join(timeout=90)
        if self.cluster is not None:
            self.cluster.stop()
        if self._server is not None:
            self._server.stop()

    # -- the public view --------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.cluster.url if self.cluster is not None else ""

    def environment(self) -> dict[str, str]:
        """What boto3 needs to reach this emulator instead of AWS."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **world.DUMMY_CREDENTIALS,
                "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}

    def ground_truth(self) -> dict[str, Any]:
        assert self.cluster is not None
        return self.cluster.ground_truth()

    def wait_for_data(self, timeout_s: float) -> bool:
        """Wait until the first minute of metrics is in CloudWatch (a run's preflight looks for it)."""
        return self.first_published.wait(timeout_s)

    def describe(self) -> dict[str, Any]:
        assert self.cluster is not None and self.world is not None
        return {"endpoint": self.endpoint, "region": self.region, "cluster": self.world.cluster,
                "service": self.world.service, "mode": self.mode, "minute_s": self.minute_s,
                "start_delay_s": self.start_delay_s, "publish_delay_s": self.publish_delay_s,
                "enhanced": self.enhanced, "queue": self.world.queue_name, **self.cluster.describe()}

    # -- the ECS agent ----------------------------------------------------------------------
    def _follow_desired_count(self) -> None:
        assert self.cluster is not None and self.world is not None
        poll_s = min(0.5, self.minute_s / 4)
        current = self.spec.tasks
        while not self._stop.wait(poll_s):
            try:
                desired = world.desired_count(self.region, self.endpoint)
                if desired == current:
                    continue
                if not 1 <= desired <= MAX_TASKS:
                    self._report_error(f"the service desires {desired} tasks; the emulator runs 1 to {MAX_TASKS}")
                    continue
                self._event("ecs_desired_count", previous_tasks=current, tasks=desired)
                if desired > current:
                    if self._stop.wait(self.start_delay_s):  # provisioning and image pull
                        return
                    self.cluster.scale_to(desired, timeout_s=120)
                    world.register_targets(self.world.target_group_arn, desired, self.region, self.endpoint)
                else:  # out of the target group first, then drained and stopped
                    world.register_targets(self.world.target_group_arn, desired, self.region, self.endpoint)
                    self.cluster.scale_to(desired, timeout_s=120)
                current = desired
            except Exception as exc:  # noqa: BLE001 - reported, and the agent keeps following
                if self._stop.is_set():
                    return
                self._report_error(f"the ECS agent could not follow the desired count: {exc}")
                self._stop.wait(2.0)

    # -- the metrics publisher --------------------------------------------------------------
    def _collect(self, rows: list[dict[str, Any]]) -> None:
        assert self._book is not None
        with self._book_lock:
            self._book.add(rows)
            if self.samples is not None:
                self.samples.extend(rows)

    def _publish(self) -> None:
        assert self._book is not None
        cloudwatch = world.client("cloudwatch", self.region, self.endpoint)
        while not self._stop.wait(min(0.25, self.minute_s / 4)):
            with self._book_lock:
                minutes = [(m, self._book.take(m))
                           for m in self._book.ended_minutes(time.time() - self.publish_delay_s)]
            for minute, by_namespace in minutes:
                try:
                    for namespace, data in by_namespace.items():
                        for start in range(0, len(data), 1000):  # PutMetricData takes 1,000 at a time
                            cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start:start + 1000])
                except Exception as exc:  # noqa: BLE001 - reported; the next minute is tried anyway
                    self._report_error(f"publishing the metrics of minute {minute} failed: {exc}")
                    continue
                if by_namespace:
                    self.minutes_published += 1
                    self.first_published.set()

    # -- helpers ----------------------------------------------------------------------------
    def _cluster_event(self, kind: str, **detail: Any) -> None:
        if kind == "task_restart" and self._book is not None:
            with self._book_lock:  # a replaced task is a new ECS task: its counters start at zero
                self._book.forget_task(detail.get("task", ""))
        self._event(kind, **detail)

    def _report_error(self, message: str) -> None:
        log.error(message)
        self.errors.append(message)
        self._event("warning", message=message)

    def _event(self, kind: str, **detail: Any) -> None:
        try:
            self._on_event(kind, **detail)
        except Exception:  # a broken event sink must not stop the emulator
            log.exception("event handler failed for %s", kind)
