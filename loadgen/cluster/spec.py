"""What a local cluster runs: an archetype or any HTTP server command, with its reservations."""

from __future__ import annotations

import shlex
import string
import sys
from dataclasses import dataclass, field
from typing import Any

from scalefinder.loadgen.cluster import archetypes
from scalefinder.core.errors import InputError

POLICIES = ("least_outstanding", "round_robin")  # how the balancer picks a task
MAX_TASKS = 64
MIN_CPU_UNITS, MAX_CPU_UNITS = 16, 16 * 1024
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 32, 64 * 1024


@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster description. ``params`` come back resolved (defaults filled in)."""

    archetype: str | None
    command: str | None
    params: dict = field(default_factory=dict)
    tasks: int = 2
    cpu_units: int = 256
    memory_mib: int = 256
    balancer: str = "least_outstanding"
    health_path: str = "/health"
    metrics_path: str = "/metrics"
    host: str = "127.0.0.1"
    port: int | None = None  # the balancer's port; None picks a free one

    def __post_init__(self) -> None:
        if (self.archetype is None) == (self.command is None):
            raise InputError("give either an archetype or a command (exactly one)")
        if self.archetype is not None:
            resolved = archetypes.get(self.archetype).resolve(dict(self.params or {}))
        else:
            resolved = _check_command(self.command, dict(self.params or {}))
        object.__setattr__(self, "params", resolved)
        _check_int("tasks", self.tasks, 1, MAX_TASKS)
        _check_int("cpu_units", self.cpu_units, MIN_CPU_UNITS, MAX_CPU_UNITS)
        _check_int("memory_mib", self.memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB)
        if self.archetype == "memory":
            _check_heap_cap(resolved, self.memory_mib)
        if self.balancer not in POLICIES:
            raise InputError(f"balancer must be one of {', '.join(POLICIES)}, got {self.balancer!r}")
        for name in ("health_path", "metrics_path"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.startswith("/"):
                raise InputError(f"{name} must be a path starting with '/', got {value!r}")
        if self.host != "127.0.0.1":
            raise InputError(f"the local cluster serves on 127.0.0.1 only, got host {self.host!r}")
        if self.port is not None:
            _check_int("port", self.port, 1, 65535)

    def task_argv(self, port: int, helper_url: str | None) -> list[str]:
        """The command line of one task listening on ``port``."""
        if self.command is not None:
            values = {name: str(value) for name, value in self.params.items()}
            return shlex.split(self.command.format(port=port, host=self.host, **values))
        # The pre-forking server has its own module: its master must not import aiohttp.
        module = "scalefinder.loadgen.cluster.prefork" if self.archetype == "prefork" else "scalefinder.loadgen.cluster.task"
        argv = [sys.executable, "-m", module, "serve", "--port", str(port),
                "--archetype", self.archetype, "--memory-mib", str(self.memory_mib)]
        for name, value in self.params.items():
            argv += ["--param", f"{name}={value}"]
        if helper_url:
            argv += ["--helper-url", helper_url]
        return argv

    def describe(self) -> dict[str, Any]:
        return {
            "archetype": self.archetype, "command": self.command, "params": dict(self.params),
            "tasks": self.tasks, "cpu_units": self.cpu_units, "memory_mib": self.memory_mib,
            "balancer": self.balancer, "health_path": self.health_path, "metrics_path": self.metrics_path,
        }


def _check_heap_cap(params: dict, memory_mib: int) -> None:
    """A memory task whose heap cap cannot hold one request would end at its first request."""
    cap, per_request = archetypes.heap_cap_mib(params, memory_mib), params["mib_per_request"]
    if cap is not None and cap < per_request:
        raise InputError(
            f"archetype 'memory': its heap cap, memory_mib - reserve_mib = {memory_mib} - {params['reserve_mib']:g} MiB, "
            f"cannot hold one request of mib_per_request = {per_request:g} MiB; lower reserve_mib or "
            f"mib_per_request, or raise memory_mib")


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {value}")


def _check_command(command: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The command must be a template with ``{port}``; other fields come from ``params``."""
    if not isinstance(command, str) or not command.strip():
        raise InputError("command must be a non-empty string")
    if "\0" in command:
        raise InputError("command contains a NUL character, which no command line can carry")
    fields = _template_fields(command)
    if "port" not in fields:
        raise InputError(f"command must contain {{port}} where the task's port goes, got {command!r}")
    reserved = sorted({"port", "host"} & set(params))
    if reserved:
        raise InputError(f"a parameter may not be named {reserved[0]!r}: the cluster fills in "
                         f"{{{reserved[0]}}} itself")
    missing = sorted(fields - {"port", "host"} - set(params))
    if missing:
        names = ", ".join("{" + name + "}" for name in missing)
        raise InputError(f"command uses {names} but no such parameter was given")
    try:
        argv = shlex.split(command.format(port=1, host="127.0.0.1", **{k: str(v) for k, v in params.items()}))
    except ValueError as exc:
        raise InputError(f"command {command!r} cannot be parsed ({exc})") from None
    if not argv:
        raise InputError("command is empty")
    return dict(params)


def _template_fields(command: str) -> set[str]:
    """The names of a command's ``{fields}``, each a plain name.

    Indexing, attributes, conversions and format specs are refused: the values are strings
    filled in as they are, and ``str.format`` would otherwise index them ({port[0]}), look up
    attributes ({port.real}) or pad them to any width ({port:999999999}, a string of that size).
    """
    try:
        parsed = list(string.Formatter().parse(command))
    except ValueError as exc:
        raise InputError(
            f"command {command!r} is not a valid template ({exc}); write literal braces as {{{{ }}}}"
        ) from None
    fields = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise InputError(f"command field {shown!r} must be a plain name such as {{port}} (no index, attribute "
                             f"or format); write literal braces as {{{{ }}}}")
        fields.add(name)
    return fields
