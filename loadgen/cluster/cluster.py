"""The embedded local cluster: tasks with reservations behind a load balancer, like an ECS service.

``LocalCluster`` starts the balancer, any helper process the archetype shares between tasks (a
job broker, a downstream), and the tasks; it restarts a task that dies and reports every
crash, restart and scale change through ``on_event(kind, **detail)``, and what happens inside a
task that keeps running: processes the kernel's OOM killer killed (``oom_kill``) and processes
of its tree replaced by new ones (``process_restart``, a pre-forking server's worker).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from scalefinder.loadgen.cluster import archetypes
from scalefinder.loadgen.cluster.cgroups import Cgroups
from scalefinder.loadgen.cluster.process import Spawner, free_port, port_in_use, stop_process, wait_healthy
from scalefinder.loadgen.cluster.spec import MAX_TASKS, ClusterSpec
from scalefinder.loadgen.cluster.supervisor import MIB, Supervisor, TaskProcess, TaskView
from scalefinder.core.errors import InfrastructureError, InputError
from scalefinder.core.waiting import WaitTimedOut, wait_until

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 30.0
MONITOR_INTERVAL_S = 0.2
RESTART_DELAYS_S = (1.0, 2.0, 4.0, 8.0)  # back-off between restarts of a task that keeps failing
DRAIN_TIMEOUT_S = 30.0
POLL_S = 0.05  # between checks while waiting for tasks to drain or to be in rotation

EventSink = Callable[..., None]


class LocalCluster:
    def __init__(self, spec: ClusterSpec, on_event: EventSink | None = None):
        self.spec = spec
        self._on_event = on_event or (lambda kind, **detail: None)
        self.url = ""
        self.cgroup_mode = ""
        self.cgroup_detail = ""
        self.crashes: list[dict[str, Any]] = []
        # Per task id across incarnations, as cAdvisor and kube-state-metrics count per container:
        # processes the kernel's OOM killer killed, and restarts of the task.
        self._oom_kills_total: dict[str, int] = {}
        self._restarts_total: dict[str, int] = {}
        self._lock = threading.RLock()
        self._tasks: dict[str, TaskProcess] = {}  # every task the service should have, by id
        self._in_rotation: set[str] = set()  # tasks registered with the balancer and healthy
        self._next_number = 1
        self._stopping = threading.Event()
        self._started = False
        self._threads: list[threading.Thread] = []
        self._idle_mib = archetypes.IDLE_TASK_MIB
        self._workdir: Path | None = None
        self._spawner: Spawner | None = None
        self._cgroups: Cgroups | None = None
        self._supervisor: Supervisor | None = None
        self._balancer: Any = None
        self._helper: Any = None
        self._admin_url = ""

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "LocalCluster":
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
        spec = self.spec
        if spec.port is not None and port_in_use(spec.port, spec.host):
            raise InfrastructureError(f"port {spec.port} on {spec.host} is already in use; choose another")
        self._workdir = Path(tempfile.mkdtemp(prefix="scalefinder-cluster-"))
        self._spawner = Spawner()
        self._cgroups = Cgroups.create(f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.cgroup_mode, self.cgroup_detail = self._cgroups.mode, self._cgroups.detail
        if not self._cgroups.enforced:
            log.warning("CPU and memory reservations are not enforced: %s", self.cgroup_detail)
        # The balancer, the helper and the tasks start side by side: each spends its first
        # seconds importing, and the tasks do it under their CPU quota.
        helper = self._spawn_helper()
        balancer = self._spawn_balancer()
        self._supervisor = Supervisor(spec, self._cgroups, self._spawner, self._workdir,
                                      helper[1] if helper else None)
        tasks = self._launch_tasks(spec.tasks, HEALTH_TIMEOUT_S)
        for process, url, what, log_path in [balancer, *([helper] if helper else [])]:
            wait_healthy(url + "/health", process, HEALTH_TIMEOUT_S, what, log_path)
        self._admit(tasks)
        self._measure_idle_memory()
        monitor = threading.Thread(target=self._monitor, name="cluster-monitor", daemon=True)
        monitor.start()
        self._threads.append(monitor)

    def stop(self) -> None:
        """Stop every process the cluster started and remove its cgroups. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
        with self._lock:
            tasks = list(self._tasks.values())
            self._tasks.clear()
            self._in_rotation.clear()
        stops: list[Callable[[], None]] = [
            lambda process=process: stop_process(process, grace_s=3.0)
            for process in (self._balancer, self._helper) if process is not None
        ]
        if self._supervisor is not None:
            stops += [lambda task=task: self._supervisor.stop(task) for task in tasks]
        if stops:
            with ThreadPoolExecutor(max_workers=min(len(stops), 16)) as pool:
                list(pool.map(lambda stop: stop(), stops))
        if self._cgroups is not None and not self._cgroups.remove():
            log.error("some cgroups of this cluster could not be removed")
        if self._spawner is not None:
            self._spawner.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # -- the public view --------------------------------------------------------------------
    def running_tasks(self) -> list[str]:
        """Ids of the tasks that are healthy and receiving traffic."""
        with self._lock:
            return sorted(self._in_rotation, key=_task_number)

    def task_views(self) -> list[TaskView]:
        with self._lock:
            return [self._tasks[task_id].view() for task_id in sorted(self._in_rotation, key=_task_number)]

    def usage(self, view: TaskView):
        assert self._supervisor is not None
        return self._supervisor.usage(view)

    def task_counters(self, task_id: str) -> dict[str, int]:
        """Counts of a task id since the cluster started: ``oom_kills`` (kernel OOM kills in its
        cgroups; none when unenforced) and ``restarts``."""
        with self._lock:
            return {"oom_kills": self._oom_kills_total.get(task_id, 0),
                    "restarts": self._restarts_total.get(task_id, 0)}

    def balancer_report(self) -> dict[str, Any]:
        """Per-target counters of the balancer (see balancer.Target.report)."""
        return self._admin("GET", "/targets")

    def ground_truth(self) -> dict[str, Any]:
        if self.spec.archetype is None:
            return {"archetype": None, "command": self.spec.command, "bottleneck": "unknown",
                    "capacity_rps_per_task": None, "capacity_formula": None, "expected_metric": None,
                    "note": "a custom command has no known ground truth"}
        sizing = archetypes.Sizing(self.spec.cpu_units, self.spec.memory_mib,
                                   max(len(self.running_tasks()), 1), self._idle_mib)
        return archetypes.ground_truth(self.spec.archetype, dict(self.spec.params), sizing)

    def metric_source(self, interval_s: float = 1.0):
        from scalefinder.loadgen.sources.local import LocalMetricSource

        return LocalMetricSource(self, interval_s=interval_s)

    def capacity_controller(self):
        from scalefinder.loadgen.capacity.local import LocalCapacityController

        return LocalCapacityController(self)

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "cgroup_mode": self.cgroup_mode, "cgroup_detail": self.cgroup_detail,
                "tasks": self.running_tasks(), **self.spec.describe()}

    # -- scaling ----------------------------------------------------------------------------
    def scale_to(self, count: int, timeout_s: float = 30.0) -> None:
        """Add tasks (healthy before they get traffic) or drain and stop tasks, then wait until
        ``count`` tasks are in rotation."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_TASKS:
            raise InputError(f"task count must be a whole number from 1 to {MAX_TASKS}, got {count!r}")
        self._require_running()
        with self._lock:
            before = len(self._tasks)
        if count > before:
            self._add_tasks(count - before, timeout_s)
        elif count < before:
            self._remove_tasks(before - count, timeout_s)
        self._wait_in_rotation(count, timeout_s)
        if count != before:
            self._event("scale", previous_tasks=before, tasks=count, task_ids=self.running_tasks())

    def _add_tasks(self, how_many: int, timeout_s: float) -> None:
        self._admit(self._launch_tasks(how_many, timeout_s))

    def _launch_tasks(self, how_many: int, timeout_s: float) -> list[TaskProcess]:
        """Start tasks under new ids and wait until each is healthy; none gets traffic yet."""
        assert self._supervisor is not None
        with self._lock:
            ids = [f"task-{self._next_number + offset}" for offset in range(how_many)]
            self._next_number += how_many
        with ThreadPoolExecutor(max_workers=min(how_many, 8)) as pool:
            futures = [pool.submit(self._supervisor.launch, task_id, 1, timeout_s) for task_id in ids]
        tasks, errors = [], []
        for future in futures:
            try:
                tasks.append(future.result())
            except InfrastructureError as exc:
                errors.append(str(exc))
        if errors:
            for task in tasks:
                self._supervisor.stop(task)
            raise InfrastructureError(errors[0])
        with self._lock:  # from here on stop() knows them, even before they take traffic
            self._tasks.update((task.task_id, task) for task in tasks)
        return tasks

    def _admit(self, tasks: list[TaskProcess]) -> None:
        """Put healthy tasks in rotation."""
        for task in tasks:
            self._register(task)
            self._event("task_start", task=task.task_id, pid=task.process.pid, port=task.port)

    def _remove_tasks(self, how_many: int, timeout_s: float) -> None:
        with self._lock:
            victims = sorted(self._tasks, key=_task_number)[-how_many:]
            tasks = [self._tasks.pop(task_id) for task_id in victims]
        with ThreadPoolExecutor(max_workers=min(len(tasks), 8)) as pool:
            list(pool.map(lambda task: self._drain_and_stop(task, timeout_s), tasks))

    def _drain_and_stop(self, task: TaskProcess, timeout_s: float) -> None:
        assert self._supervisor is not None
        with self._lock:
            self._in_rotation.discard(task.task_id)
        try:
            self._admin("POST", f"/targets/{task.task_id}/drain")

            def drained() -> bool:
                target = self.balancer_report()["targets"].get(task.task_id)
                return target is None or target["in_flight"] == 0

            try:
                wait_until(drained, timeout_s=min(timeout_s, DRAIN_TIMEOUT_S), interval_s=POLL_S,
                           what=f"{task.task_id} to drain")
            except WaitTimedOut:  # requests that outlive the drain fail; the scale-in goes on
                log.warning("%s still had requests in flight after draining; stopping it anyway", task.task_id)
            self._admin("DELETE", f"/targets/{task.task_id}")
        finally:
            self._supervisor.stop(task)

    def _wait_in_rotation(self, count: int, timeout_s: float) -> None:
        def reached() -> bool:
            if len(self.running_tasks()) == count:
                return True
            self._require_running()  # a cluster stopped meanwhile will not get there: say so now
            return False

        wait_until(reached, timeout_s=timeout_s, interval_s=POLL_S, what=f"{count} healthy tasks",
                   on_timeout=lambda: InfrastructureError(
                       f"the cluster did not reach {count} healthy tasks within {timeout_s:g} s "
                       f"(running: {', '.join(self.running_tasks()) or 'none'})"))

    # -- crash handling ---------------------------------------------------------------------
    def _monitor(self) -> None:
        assert self._supervisor is not None
        balancer_reported = False
        while not self._stopping.wait(MONITOR_INTERVAL_S):
            if not balancer_reported and self._balancer.poll() is not None:
                balancer_reported = True
                message = (f"the load balancer exited with code {self._balancer.returncode}; "
                           "no traffic reaches the tasks")
                log.error(message)
                self._event("warning", message=message)
            with self._lock:
                tasks = [task for task in self._tasks.values() if task.task_id in self._in_rotation]
            for task in tasks:
                if task.process.poll() is None:
                    try:
                        events, killed = self._supervisor.look(task)
                    except Exception:  # one bad reading must not end the watch over every task
                        log.exception("looking at %s failed", task.task_id)
                        continue
                    self._report_inside(events)
                    if not killed:
                        continue
                task.process.wait()
                self._on_crash(task)

    def _on_crash(self, task: TaskProcess) -> None:
        assert self._supervisor is not None
        with self._lock:
            if self._tasks.get(task.task_id) is not task:
                return  # stopped on purpose meanwhile
            self._in_rotation.discard(task.task_id)
        try:
            self._admin("DELETE", f"/targets/{task.task_id}")
        except InfrastructureError:
            pass
        # Kills the last look did not see (the one that ended the task, most often) are
        # recorded before the crash, while the cgroup still holds its count.
        self._report_inside(self._supervisor.oom_events(task))
        reason = self._supervisor.exit_reason(task)
        crash = {"task": task.task_id, "incarnation": task.incarnation, "pid": task.process.pid,
                 "exit_code": task.process.returncode, "reason": reason,
                 "uptime_s": round(time.time() - task.started_unix_s, 3), "time_unix_s": time.time()}
        self.crashes.append(crash)
        log.warning("%s crashed: %s", task.task_id, reason)
        self._event("task_crash", **{k: v for k, v in crash.items() if k != "time_unix_s"})
        if task.cgroup is not None:
            task.cgroup.remove()
        restarter = threading.Thread(target=self._restart, args=(task,), name=f"restart-{task.task_id}",
                                     daemon=True)
        restarter.start()
        self._threads.append(restarter)

    def _restart(self, crashed: TaskProcess) -> None:
        assert self._supervisor is not None
        crashed_at = time.monotonic()
        for attempt, delay in enumerate(_delays(), 1):
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._tasks.get(crashed.task_id) is not crashed:
                    return  # scaled in meanwhile
            try:
                task = self._supervisor.launch(crashed.task_id, crashed.incarnation + attempt, HEALTH_TIMEOUT_S)
            except InfrastructureError as exc:
                log.warning("restart of %s failed: %s", crashed.task_id, exc)
                continue
            with self._lock:
                still_wanted = self._tasks.get(crashed.task_id) is crashed and not self._stopping.is_set()
                if still_wanted:
                    self._tasks[crashed.task_id] = task
            if not still_wanted:
                self._supervisor.stop(task)
                return
            self._register(task)
            with self._lock:
                self._restarts_total[task.task_id] = self._restarts_total.get(task.task_id, 0) + 1
            self._event("task_restart", task=task.task_id, incarnation=task.incarnation, pid=task.process.pid,
                        port=task.port, downtime_s=round(time.monotonic() - crashed_at, 3))
            return

    def _report_inside(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Events from inside a task (OOM kills, process restarts): counted, then reported."""
        for kind, detail in events:
            if kind == "oom_kill":
                with self._lock:
                    self._oom_kills_total[detail["task"]] = self._oom_kills_total.get(detail["task"], 0) + detail["count"]
            self._event(kind, **detail)

    # -- helpers ----------------------------------------------------------------------------
    def _register(self, task: TaskProcess) -> None:
        self._admin("PUT", f"/targets/{task.task_id}", {"url": task.url})
        with self._lock:
            if self._tasks.get(task.task_id) is task:
                self._in_rotation.add(task.task_id)

    def _spawn_helper(self) -> tuple[Any, str, str, Path] | None:
        """Start the archetype's shared process, if it has one: (process, url, name, log)."""
        if self.spec.archetype is None:
            return None
        role = archetypes.get(self.spec.archetype).helper
        if role is None:
            return None
        assert self._spawner is not None and self._workdir is not None
        port = free_port(self.spec.host)
        argv = [sys.executable, "-m", "scalefinder.loadgen.cluster.task", role, "--port", str(port)]
        shared_params = {"downstream": ("downstream_capacity", "downstream_ms"), "broker": ("max_backlog",)}
        for name in shared_params[role]:
            argv += ["--param", f"{name}={self.spec.params[name]}"]
        log_path = self._workdir / f"{role}.log"
        self._helper = self._spawner.spawn(argv, log_path, self._shared_procs())
        url = f"http://{self.spec.host}:{port}"
        return self._helper, url, f"the {role}", log_path

    def _spawn_balancer(self) -> tuple[Any, str, str, Path]:
        """Start the balancer: (process, admin url, name, log)."""
        assert self._spawner is not None and self._workdir is not None
        port = self.spec.port or free_port(self.spec.host)
        admin_port = free_port(self.spec.host)
        argv = [sys.executable, "-m", "scalefinder.loadgen.cluster.balancer", "--port", str(port),
                "--admin-port", str(admin_port), "--policy", self.spec.balancer]
        log_path = self._workdir / "balancer.log"
        self._balancer = self._spawner.spawn(argv, log_path, self._shared_procs())
        self._admin_url = f"http://{self.spec.host}:{admin_port}"
        self.url = f"http://{self.spec.host}:{port}"
        return self._balancer, self._admin_url, "the load balancer", log_path

    def _shared_procs(self) -> list[Path]:
        assert self._cgroups is not None
        group = self._cgroups.shared_group("shared")
        return group.procs_files if group is not None else []

    def _admin(self, method: str, path: str, body: dict | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self._admin_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5.0) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return {}
            raise InfrastructureError(f"the load balancer refused {method} {path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise InfrastructureError(f"the load balancer does not answer ({exc})") from None

    def _measure_idle_memory(self) -> None:
        assert self._supervisor is not None
        samples = [self._supervisor.usage(view).rss_bytes / MIB for view in self.task_views()]
        samples = [sample for sample in samples if sample > 0]
        if samples:
            self._idle_mib = sum(samples) / len(samples)

    def _require_running(self) -> None:
        if self._stopping.is_set() or not self._started:
            raise InfrastructureError("the local cluster is not running")

    def _event(self, kind: str, **detail: Any) -> None:
        try:
            self._on_event(kind, **detail)
        except Exception:  # a broken event sink must not take the cluster down
            log.exception("event handler failed for %s", kind)


def _task_number(task_id: str) -> int:
    return int(task_id.rsplit("-", 1)[1])


def _delays():
    yield from RESTART_DELAYS_S
    while True:
        yield RESTART_DELAYS_S[-1]
