"""Task processes: start one in its cgroup, wait for health, read its usage, watch it, stop it,
explain an exit."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from scalefinder.loadgen.cluster import archetypes
from scalefinder.loadgen.cluster.cgroups import Cgroups, TaskCgroup
from scalefinder.loadgen.cluster.process import Spawner, free_port, stop_process, wait_healthy
from scalefinder.loadgen.cluster.spec import ClusterSpec
from scalefinder.core.errors import InfrastructureError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
START_ATTEMPTS = 3  # a port taken between choosing and binding it is retried with another
# A process of a task's tree counts as one of its long-lived processes (a worker) once it has
# been seen this long; one that comes and goes faster is taken for a helper run per request,
# whose successor is no restart. Short, because far past capacity a respawned worker may be
# killed again within a second or two.
MEMBER_AFTER_S = 0.5
# A process that appears within this long of a sibling's end, started by the same parent, is
# taken as that sibling's replacement.
REPLACEMENT_WITHIN_S = 5.0

Event = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class TaskView:
    """A running task incarnation as readers (the metric source) may see it."""

    task_id: str
    incarnation: int
    pid: int
    port: int
    url: str
    cgroup: TaskCgroup | None
    started_unix_s: float


@dataclass(frozen=True)
class Usage:
    """Cumulative counters of one task incarnation's process tree at one moment.

    ``cpu_read_unix_s`` is when the CPU counter was read: a rate over two readings must divide by
    the time between those reads, not between the samplings that asked for them (reading a
    process tree can take a good part of a second on a busy machine, and a limit of half a core
    would then seem to be passed)."""

    cpu_s: float
    rss_bytes: int
    read_bytes: int
    write_bytes: int
    cpu_read_unix_s: float


class TaskProcess:
    """One incarnation of a task: its process, its cgroup and its log."""

    def __init__(self, task_id: str, incarnation: int, port: int, process: subprocess.Popen,
                 cgroup: TaskCgroup | None, log_path: Path, host: str):
        self.task_id = task_id
        self.incarnation = incarnation
        self.port = port
        self.process = process
        self.cgroup = cgroup
        self.log_path = log_path
        self.url = f"http://{host}:{port}"
        self.started_unix_s = time.time()
        self.memory_kill = False  # killed by the emulated memory limit (unenforced mode)
        # What the last look at the task saw: the kernel's OOM-kill count of its cgroup, and
        # the processes of its tree (pid -> (parent pid, monotonic time first seen)).
        self.oom_kills_seen = 0
        self.members: dict[int, tuple[int, float]] | None = None
        self.ended: deque[tuple[int, int, float]] = deque()  # (pid, parent pid, when) of long-lived ones

    def view(self) -> TaskView:
        return TaskView(self.task_id, self.incarnation, self.process.pid, self.port, self.url,
                        self.cgroup, self.started_unix_s)


class Supervisor:
    def __init__(self, spec: ClusterSpec, cgroups: Cgroups, spawner: Spawner, workdir: Path,
                 helper_url: str | None):
        self.spec = spec
        self.cgroups = cgroups
        self.spawner = spawner
        self.workdir = workdir
        self.helper_url = helper_url

    def launch(self, task_id: str, incarnation: int, timeout_s: float) -> TaskProcess:
        """Start a task and return it once its health check answers 200."""
        attempt = 1
        while True:
            task = self._start(task_id, incarnation)
            try:
                wait_healthy(task.url + self.spec.health_path, task.process, timeout_s,
                             f"task {task_id}", task.log_path)
                return task
            except InfrastructureError:
                exited = task.process.poll() is not None
                self.stop(task)
                # An exit may be a port taken since it was chosen; a silent task will not improve.
                if not exited or attempt >= START_ATTEMPTS:
                    raise
                attempt += 1

    def _start(self, task_id: str, incarnation: int) -> TaskProcess:
        port = free_port(self.spec.host)
        name = f"{task_id}.{incarnation}"
        group = self.cgroups.task_group(name, self.spec.cpu_units, self.spec.memory_mib)
        log_path = self.workdir / f"{name}.log"
        argv = self.spec.task_argv(port, self.helper_url)
        try:
            process = self.spawner.spawn(argv, log_path, group.procs_files if group else ())
        except InfrastructureError:
            if group is not None:
                group.remove()
            raise
        log.info("started %s (pid %s) on port %s", name, process.pid, port)
        return TaskProcess(task_id, incarnation, port, process, group, log_path, self.spec.host)

    def stop(self, task: TaskProcess, grace_s: float = 5.0) -> None:
        kill_rest = task.cgroup.kill_all if task.cgroup else None
        stop_process(task.process, grace_s, kill_rest)
        if task.cgroup is not None:
            task.cgroup.remove()

    def usage(self, view: TaskView, processes: list[psutil.Process] | None = None) -> Usage:
        """Counters of the task's whole process tree (or the cgroup's, when enforced).

        Memory is the resident set of the task's own process plus the private memory (USS) of
        every other process in its tree. Forked workers share most of their pages with the
        process that forked them, and summing every process's RSS would count those pages once
        per worker: a Gunicorn-like server with 16 workers would seem to use seven times what
        the kernel charges it.
        """
        processes = _tree(view) if processes is None else processes
        cpu_s = 0.0
        rss = read = write = 0
        for process in processes:
            try:
                with process.oneshot():
                    if view.cgroup is None:
                        times = process.cpu_times()
                        cpu_s += times.user + times.system
                    rss += _resident(process, own=process.pid == view.pid)
                    try:
                        io = process.io_counters()
                        read += io.read_bytes
                        write += io.write_bytes
                    except (psutil.AccessDenied, AttributeError):
                        pass
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        if view.cgroup is not None:
            cpu_s = view.cgroup.cpu_seconds()
        return Usage(cpu_s, rss, read, write, time.time())

    def look(self, task: TaskProcess) -> tuple[list[Event], bool]:
        """One look at a running task: what happened inside it since the last look, and whether
        it is over its emulated memory limit (unenforced mode; then it has just been killed).

        Events: ``oom_kill`` when the kernel's OOM-kill count of its cgroup went up, and
        ``process_restart`` for each long-lived process of its tree that ended and was replaced
        by a new one from the same parent while the task itself kept running.
        """
        processes = _tree(task.view())
        events = self.oom_events(task) + self._restarts(task, processes)
        return events, self.over_memory(task, processes)

    def oom_events(self, task: TaskProcess) -> list[Event]:
        """An ``oom_kill`` event when the cgroup's OOM-kill count went up since the last reading."""
        if task.cgroup is None:
            return []  # no kernel counter: the emulated limit ends the whole task instead
        count = task.cgroup.oom_kills()
        if count <= task.oom_kills_seen:
            return []
        new, task.oom_kills_seen = count - task.oom_kills_seen, count
        log.info("%s: the kernel's OOM killer killed %d process(es) in its cgroup", task.task_id, new)
        return [("oom_kill", {"task": task.task_id, "incarnation": task.incarnation, "count": new,
                              "total": count})]

    def _restarts(self, task: TaskProcess, processes: list[psutil.Process]) -> list[Event]:
        now = time.monotonic()
        previous = task.members
        current: dict[int, tuple[int, float]] = {}
        for process in processes:
            if process.pid == task.process.pid:
                continue  # the task's own process ending is a crash, not a restart
            known = previous.get(process.pid) if previous else None
            if known is not None:
                current[process.pid] = known
                continue
            try:
                current[process.pid] = (process.ppid(), now)
            except psutil.Error:  # gone between the listing and the read
                continue
        task.members = current
        if previous is None:
            return []
        for pid, (parent, first_seen) in previous.items():
            if pid not in current and now - first_seen >= MEMBER_AFTER_S:
                task.ended.append((pid, parent, now))
        while task.ended and now - task.ended[0][2] > REPLACEMENT_WITHIN_S:
            task.ended.popleft()
        events: list[Event] = []
        for pid in sorted(set(current) - set(previous or {})):
            parent = current[pid][0]
            match = next((item for item in task.ended if item[1] == parent), None)
            if match is None:
                continue
            task.ended.remove(match)
            log.info("%s: process %s ended and %s (parent %s) took its place", task.task_id, match[0], pid, parent)
            events.append(("process_restart", {"task": task.task_id, "incarnation": task.incarnation,
                                               "pid_gone": match[0], "pid_new": pid, "parent_pid": parent}))
        return events

    def over_memory(self, task: TaskProcess, processes: list[psutil.Process] | None = None) -> bool:
        """Whether an unenforced task's tree is over its limit; if so kill it as the kernel would."""
        if task.cgroup is not None:
            return False
        rss = self.usage(task.view(), processes).rss_bytes
        if rss <= self.spec.memory_mib * MIB:
            return False
        log.warning("%s uses %.0f MiB, over its %s MiB limit: killing it", task.task_id, rss / MIB,
                    self.spec.memory_mib)
        task.memory_kill = True
        stop_process(task.process, grace_s=0.0)
        return True

    def exit_reason(self, task: TaskProcess) -> str:
        code = task.process.returncode
        if task.memory_kill:
            return f"killed: process tree over its {self.spec.memory_mib} MiB memory limit (emulated)"
        if task.cgroup is not None and task.cgroup.oom_kills() > 0:
            return f"OOM-killed: over its {self.spec.memory_mib} MiB memory limit"
        if self.spec.archetype == "memory" and code == archetypes.HEAP_EXHAUSTED_EXIT:
            heap = archetypes.heap_cap_mib(self.spec.params, self.spec.memory_mib)
            return (f"out of memory: requests in flight would pass its {heap:g} MiB heap cap "
                    f"({self.spec.memory_mib} MiB memory limit less reserve_mib)")
        if code is not None and code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exited with code {code}"


def _resident(process: psutil.Process, own: bool) -> int:
    """The task's own process: its RSS. Any other: its private pages, the rest being shared."""
    if own:
        return process.memory_info().rss
    try:
        return process.memory_full_info().uss
    except psutil.AccessDenied:
        return process.memory_info().rss


def _tree(view: TaskView) -> list[psutil.Process]:
    pids = view.cgroup.pids() if view.cgroup is not None else []
    if pids:
        processes = []
        for pid in pids:
            try:
                processes.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        return processes
    try:
        root = psutil.Process(view.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
