"""The ground-truth archetypes: what each one does, its parameters and its expected capacity.

Each archetype is a known application pattern (see docs/archetypes.md). Its parameters fully
determine which resource runs out first and at what request rate, so every claim the analyzer
makes about a local run can be checked against the numbers computed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from scalefinder.core.errors import InputError

# Exit status of a task whose requests would take its heap past its cap (a JVM started with
# -XX:+ExitOnOutOfMemoryError exits with the same code).
HEAP_EXHAUSTED_EXIT = 3

# Resident memory of an idle archetype task (Python, aiohttp, the archetype module), measured on
# the reference machine. Used until the running cluster measures its own tasks.
IDLE_TASK_MIB = 40.0
# CPU an archetype task spends per request outside the archetype's own work (HTTP parsing and
# answering, the event loop, the kernel's loopback networking), measured on the reference machine
# by running the cpu archetype at two values of cpu_ms and extrapolating to zero.
SERVING_CPU_MS = 0.8


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int or float
    default: float
    minimum: float
    description: str
    exclusive_minimum: bool = False
    maximum: float | None = None

    def coerce(self, raw: Any, archetype: str) -> float | int:
        """The value as the right type, or an InputError naming the parameter and the rule."""
        where = f"archetype '{archetype}' parameter {self.name}"
        if isinstance(raw, bool):
            raise InputError(f"{where} must be a number, got {raw!r}")
        try:
            if isinstance(raw, str):
                value = float(raw.strip())
            else:
                value = float(raw)
        except (TypeError, ValueError, OverflowError):  # OverflowError: a whole number too large for a float
            raise InputError(f"{where} must be a number, got {_shown(raw)}") from None
        # before the whole-number check: int() of an infinite or NaN value raises
        if value != value or value in (float("inf"), float("-inf")):
            raise InputError(f"{where} must be a finite number, got {_shown(raw)}")
        if self.kind is int:
            if value != int(value):
                raise InputError(f"{where} must be a whole number, got {raw!r}")
            value = int(value)
        if self.exclusive_minimum and value <= self.minimum:
            raise InputError(f"{where} must be greater than {self.minimum:g}, got {raw!r}")
        if not self.exclusive_minimum and value < self.minimum:
            raise InputError(f"{where} must be at least {self.minimum:g}, got {raw!r}")
        if self.maximum is not None and value > self.maximum:
            raise InputError(f"{where} must be at most {self.maximum:g}, got {raw!r}")
        return value


def _shown(raw: Any) -> str:
    """repr() of a parameter's value, except a whole number too long for repr() (4,300 digits)."""
    if isinstance(raw, int) and raw.bit_length() > 1000:
        return f"a whole number of about {int(raw.bit_length() * math.log10(2)) + 1} digits"
    return repr(raw)


@dataclass(frozen=True)
class Sizing:
    """What a task is given: its reservations, the service's task count, its measured idle memory."""

    cpu_units: int
    memory_mib: int
    tasks: int
    idle_mib: float = IDLE_TASK_MIB

    @property
    def cores(self) -> float:
        return self.cpu_units / 1024.0


@dataclass(frozen=True)
class Limit:
    """One resource's ceiling, as a request rate per task, with the formula that gives it."""

    resource: str
    rate_rps: float
    formula: str


@dataclass(frozen=True)
class Archetype:
    name: str
    pattern: str  # the pattern name findings.json uses
    summary: str
    params: tuple[Param, ...]
    bottleneck: str  # the resource meant to run out first
    expected_metric: str | None  # None: no task-level metric can scale this service
    limits: Callable[[dict[str, float], Sizing], list[Limit]]
    helper: str | None = None  # a process the cluster starts beside the tasks: "broker" or "downstream"

    def param(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def resolve(self, given: dict[str, Any]) -> dict[str, float | int]:
        """Defaults filled in, every value checked; unknown names are an InputError."""
        known = {p.name for p in self.params}
        unknown = sorted(set(given) - known)
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise InputError(
                f"archetype '{self.name}' has no parameter {', '.join(unknown)} (its parameters: {allowed})"
            )
        return {p.name: p.coerce(given.get(p.name, p.default), self.name) for p in self.params}


def _cpu_limit(params: dict[str, float], sizing: Sizing) -> Limit:
    cpu_ms = params["cpu_ms"]
    return Limit(
        "cpu",
        sizing.cores * 1000.0 / (cpu_ms + SERVING_CPU_MS),
        f"reserved cores / (cpu_ms + serving_cpu_ms) = "
        f"({sizing.cpu_units}/1024) x 1000 / ({cpu_ms:g} + {SERVING_CPU_MS:g})",
    )


def _cpu_limits(params: dict[str, float], sizing: Sizing) -> list[Limit]:
    return [_cpu_limit(params, sizing)]


def heap_cap_mib(params: dict[str, Any], memory_mib: int) -> float | None:
    """The memory archetype's heap cap, or None when ``reserve_mib`` is 0 (only the container's limit)."""
    reserve = params["reserve_mib"]
    return memory_mib - reserve if reserve > 0 else None


def _memory_limits(params: dict[str, float], sizing: Sizing) -> list[Limit]:
    mib, hold_ms = params["mib_per_request"], params["hold_ms"]
    # A task holds whole requests: the one that does not fit is the one that ends the task, so the
    # mean count in flight (rate x hold) may reach the whole number that fits, no more. What fits
    # is set by the task's own heap cap, unless the idle task is so large that the kernel's limit
    # on the whole cgroup comes first. The epsilon keeps an exact fit from rounding down.
    cap = heap_cap_mib(params, sizing.memory_mib)
    heap = max(sizing.memory_mib if cap is None else cap, 0.0)
    room = max(sizing.memory_mib - sizing.idle_mib, 0.0)
    in_flight = math.floor(min(heap, room) / mib + 1e-9)
    memory = Limit(
        "memory",
        in_flight * 1000.0 / hold_ms,
        f"floor(min(memory_mib - reserve_mib, memory_mib - idle_mib) / mib_per_request) / (hold_ms/1000) = "
        f"floor(min({heap:g}, {room:.1f}) / {mib:g}) / ({hold_ms:g}/1000)",
    )
    return [memory, _cpu_limit(params, sizing)]


def _prefork_limits(params: dict[str, float], sizing: Sizing) -> list[Limit]:
    mib, hold_ms, workers = params["mib_per_request"], params["hold_ms"], params["workers"]
    # No heap cap here: the kernel's limit on the whole cgroup decides. What the requests can
    # hold is the limit less the idle tree (master and workers), and the request that does not
    # fit gets a worker OOM-killed, so the mean count in flight may reach the whole number that
    # fits, no more.
    room = max(sizing.memory_mib - sizing.idle_mib, 0.0)
    in_flight = math.floor(room / mib + 1e-9)
    return [
        Limit("memory", in_flight * 1000.0 / hold_ms,
              f"floor((memory_mib - idle_mib) / mib_per_request) / (hold_ms/1000) = "
              f"floor(({sizing.memory_mib} - {sizing.idle_mib:.1f}) / {mib:g}) / ({hold_ms:g}/1000)"),
        Limit("concurrency", workers * 1000.0 / hold_ms,
              f"workers / (hold_ms/1000) = {workers:g} / ({hold_ms:g}/1000)"),
        _cpu_limit(params, sizing),
    ]


def _worker_limits(params: dict[str, float], sizing: Sizing) -> list[Limit]:
    workers, work_ms = params["workers"], params["work_ms"]
    return [
        Limit("concurrency", workers * 1000.0 / work_ms,
              f"workers / (work_ms/1000) = {workers:g} / ({work_ms:g}/1000)"),
        _cpu_limit(params, sizing),
    ]


def _waiting_limits(params: dict[str, float], sizing: Sizing) -> list[Limit]:
    pool, latency_ms = params["pool_size"], params["latency_ms"]
    return [
        Limit("concurrency", pool * 1000.0 / latency_ms,
              f"pool_size / (latency_ms/1000) = {pool:g} / ({latency_ms:g}/1000)"),
        _cpu_limit(params, sizing),
    ]


def _queue_limits(params: dict[str, float], sizing: Sizing) -> list[Limit]:
    jobs, job_ms = params["jobs_at_once"], params["job_ms"]
    return [
        Limit("queue", jobs * 1000.0 / job_ms,
              f"jobs_at_once / (job_ms/1000) = {jobs:g} / ({job_ms:g}/1000)"),
        _cpu_limit(params, sizing),
    ]


def _shared_limits(params: dict[str, float], sizing: Sizing) -> list[Limit]:
    capacity, call_ms = params["downstream_capacity"], params["downstream_ms"]
    return [
        Limit("shared_downstream", capacity * 1000.0 / call_ms / sizing.tasks,
              f"downstream_capacity / (downstream_ms/1000) / tasks = "
              f"{capacity:g} / ({call_ms:g}/1000) / {sizing.tasks}"),
        _cpu_limit(params, sizing),
    ]


def _cpu_param(default: float) -> Param:
    return Param("cpu_ms", float, default, 0.0, "CPU time burnt per request (ms of CPU, not wall time)",
                 exclusive_minimum=True, maximum=10_000)


ARCHETYPES: dict[str, Archetype] = {
    a.name: a
    for a in [
        Archetype(
            "cpu", "cpu_bound",
            "every request burns cpu_ms of CPU on one event loop; memory small and constant",
            (_cpu_param(10.0),),
            "cpu", "cpu_utilization", _cpu_limits,
        ),
        Archetype(
            "memory", "memory_bound",
            "every in-flight request holds mib_per_request MiB (resident) for hold_ms, freed at the end; "
            "the request that would take the heap past memory_mib - reserve_mib ends the task",
            (
                Param("mib_per_request", float, 16.0, 0.0, "memory held by each in-flight request (MiB)",
                      exclusive_minimum=True, maximum=4096),
                Param("hold_ms", float, 1000.0, 0.0, "how long each request holds its memory (ms)",
                      exclusive_minimum=True, maximum=600_000),
                Param("reserve_mib", float, 48.0, 0.0,
                      "memory kept out of the heap for the runtime itself (MiB); the heap cap is "
                      "memory_mib - reserve_mib, as a JVM's -Xmx sits below its container's limit; "
                      "0 = no cap, only the container's limit",
                      maximum=65_536),
                _cpu_param(1.0),
            ),
            "memory", "memory_utilization", _memory_limits,
        ),
        Archetype(
            "prefork", "memory_bound",
            "a master forks `workers` synchronous worker processes sharing one socket; each request holds "
            "mib_per_request MiB in its worker for hold_ms; past the memory limit the kernel OOM-kills "
            "a worker, the master starts another and the task keeps running",
            (
                Param("workers", int, 16, 1, "worker processes, each serving one request at a time",
                      maximum=256),
                # 18 MiB: the room an idle tree of 16 workers leaves in 256 MiB (about 226 MiB)
                # holds 12.5 requests, so the kernel's kill point sits half a request from the
                # whole number on either side, whatever it charges beyond what the tree measures.
                Param("mib_per_request", float, 18.0, 0.0, "memory held by each in-flight request (MiB)",
                      exclusive_minimum=True, maximum=4096),
                Param("hold_ms", float, 1000.0, 0.0, "how long each request holds its memory and worker (ms)",
                      exclusive_minimum=True, maximum=600_000),
                _cpu_param(1.0),
            ),
            "memory", "memory_utilization", _prefork_limits,
        ),
        Archetype(
            "retaining", "memory_not_freed",
            "like cpu, plus retained_kib_per_request KiB kept for ever after each request",
            (
                _cpu_param(10.0),
                Param("retained_kib_per_request", float, 8.0, 0.0, "memory kept after each request (KiB)",
                      maximum=1_048_576),
            ),
            "cpu", "cpu_utilization", _cpu_limits,
        ),
        Archetype(
            "workers", "worker_based",
            "workers threads, each request holds one for work_ms (mostly waiting); up to backlog requests "
            "wait for a worker; beyond that the task answers 503",
            (
                Param("workers", int, 4, 1, "worker threads", maximum=256),
                Param("work_ms", float, 200.0, 0.0, "time a request holds its worker (ms)",
                      exclusive_minimum=True, maximum=600_000),
                Param("backlog", int, 8, 0, "requests allowed to wait for a worker", maximum=100_000),
                _cpu_param(1.0),
            ),
            "concurrency", "concurrency_per_task", _worker_limits,
        ),
        Archetype(
            "waiting", "waiting",
            "asynchronous; each request waits latency_ms on one of pool_size downstream connections",
            (
                Param("pool_size", int, 5, 1, "downstream connections per task", maximum=10_000),
                Param("latency_ms", float, 200.0, 0.0, "downstream wait per request (ms)",
                      exclusive_minimum=True, maximum=600_000),
                _cpu_param(0.5),
            ),
            "concurrency", "concurrency_per_task", _waiting_limits,
        ),
        Archetype(
            "jvm", "gc_runtime",
            "a heap of heap_fraction x memory_mib is reserved and touched at start; CPU per request",
            (
                _cpu_param(10.0),
                Param("heap_fraction", float, 0.75, 0.0, "share of the memory reservation taken as heap",
                      exclusive_minimum=True, maximum=0.95),
            ),
            "cpu", "cpu_utilization", _cpu_limits,
        ),
        Archetype(
            "queue", "job_processor",
            "each request enqueues a job in a queue shared by all tasks and returns 202 (503 when the "
            "queue holds max_backlog jobs); each task processes jobs_at_once jobs at a time, job_ms each",
            (
                Param("jobs_at_once", int, 2, 1, "jobs a task processes concurrently", maximum=1000),
                Param("job_ms", float, 100.0, 0.0, "time to process one job (ms)",
                      exclusive_minimum=True, maximum=600_000),
                _cpu_param(1.0),
                Param("max_backlog", int, 100, 1, "jobs the shared queue holds; a full queue refuses new jobs (503)",
                      maximum=10_000_000),
            ),
            "queue", "queue_backlog_per_task", _queue_limits, helper="broker",
        ),
        Archetype(
            "shared", "shared_bottleneck",
            "every request calls one downstream shared by all tasks, which serves downstream_capacity "
            "calls at a time, downstream_ms each",
            (
                Param("downstream_capacity", int, 4, 1, "calls the shared downstream serves at once",
                      maximum=10_000),
                Param("downstream_ms", float, 100.0, 0.0, "time of one downstream call (ms)",
                      exclusive_minimum=True, maximum=600_000),
                _cpu_param(1.0),
            ),
            "shared_downstream", None, _shared_limits, helper="downstream",
        ),
    ]
}


def get(name: str) -> Archetype:
    try:
        return ARCHETYPES[name]
    except KeyError:
        raise InputError(
            f"unknown archetype '{name}' (choose one of: {', '.join(ARCHETYPES)})"
        ) from None


def ground_truth(name: str, params: dict[str, Any], sizing: Sizing) -> dict[str, Any]:
    """The archetype's own statement of its bottleneck and capacity per task."""
    archetype = get(name)
    resolved = archetype.resolve(params)
    limits = archetype.limits(resolved, sizing)
    intended = next(limit for limit in limits if limit.resource == archetype.bottleneck)
    first = min(limits, key=lambda limit: limit.rate_rps)
    truth: dict[str, Any] = {
        "archetype": name,
        "pattern": archetype.pattern,
        "params": resolved,
        "cpu_units": sizing.cpu_units,
        "memory_mib": sizing.memory_mib,
        "tasks": sizing.tasks,
        "idle_mib": round(sizing.idle_mib, 1),
        "bottleneck": first.resource,
        "capacity_rps_per_task": round(first.rate_rps, 3),
        "capacity_formula": first.formula,
        "expected_metric": archetype.expected_metric,
        "limits": {limit.resource: {"rate_rps": round(limit.rate_rps, 3), "formula": limit.formula}
                   for limit in limits},
        "warnings": [],
    }
    if first is not intended:
        truth["warnings"].append(
            f"with these parameters {first.resource} runs out before {intended.resource} "
            f"({first.rate_rps:.1f} < {intended.rate_rps:.1f} req/s per task), so the task no longer "
            f"behaves like the '{name}' pattern"
        )
    if archetype.expected_metric is None:
        truth["expected_verdict"] = "no_task_level_metric"
        truth["capacity_rps_service"] = round(first.rate_rps * sizing.tasks, 3)
    else:
        truth["expected_verdict"] = "recommended"
    return truth
