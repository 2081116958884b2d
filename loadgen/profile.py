"""Experiment profiles: a TOML file parsed once into frozen, validated dataclasses.

Every mistake is reported as one ``ProfileError`` naming the file, the key and what was
expected, so a user can fix a profile without reading code. Source and controller tables are
checked by their own modules (``validate_config``), imported only when a profile names them.
"""

from __future__ import annotations

import difflib
import importlib
import ipaddress
import logging
import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from scalefinder.loadgen.capacity import CONTROLLER_KINDS
from scalefinder.loadgen.kind_config import split_url
from scalefinder.loadgen.sources import SOURCE_KINDS
from scalefinder.core.errors import InputError, ProfileError, printable
from scalefinder.core.models import (
    AVAILABILITY_ZONES_RANGE,
    HEADROOM_RANGE,
    AnalysisOptions,
    GateCriteria,
    KubernetesSettings,
    ModelError,
    Slo,
)
from scalefinder.core.redact import check_references, expand_references, redact_profile

logger = logging.getLogger(__name__)

PRODUCTION_NAMES = {"production", "prod", "prd", "live"}
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
BALANCERS = {"least_outstanding", "round_robin"}
RAMP_KEYS = ("start_rps", "step_rps", "step_factor", "hold_s", "min_hold_s", "warmup_s", "max_rps",
             "max_duration_s", "refine", "refine_tolerance_pct", "replay_steps", "beyond", "beyond_factor",
             "abort_error_pct", "abort_latency_ms", "scale_timeout_s", "confirm_breach", "abort", "max_aborts",
             "recovery_timeout_s", "recovery_probe_s")
# What a hard abort ends: the step (the run waits for the target to recover and goes on) or the run.
ABORT_SCOPES = {"step", "run"}
# How many aborted steps a run recovers from before the next one ends it. A remote target is
# usually a shared staging environment: it should be overloaded as few times as possible, so one
# recovery is allowed there and the run then stays below the rate that aborted.
DEFAULT_MAX_ABORTS_LOCAL = 3
DEFAULT_MAX_ABORTS_URL = 1
# Retrospective sources deliver one datapoint per period; a hold must span several of them.
MIN_DATAPOINTS_PER_HOLD = 3

# Ranges and limits (docs/profiles.md, "Ranges and limits"). Rates are planned to 0.01 req/s
# (loadgen.plan.round_rate): a lower rate, or a smaller step, would plan zero or one rate twice.
MIN_RATE_RPS = 0.01
# A profile name becomes part of a run id and a directory name.
PROFILE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
MAX_RATE_RPS = 1_000_000.0
MAX_HOLD_S = 3600.0
MAX_RUN_S = 86400.0  # max_duration_s: a run lasts at most a day
MAX_LATENCY_MS = 3_600_000.0
MAX_TIMEOUT_S = 3600.0
# The size of a plan: a profile beyond these is almost always a typo (a rate in the wrong unit, a
# step a thousand times too small), and building its plan would exhaust memory before it said so.
MAX_RAMP_STEPS = 1000
MAX_PLANNED_REQUESTS = 1_000_000_000
# Whatever the key, no number in a profile is larger than this; no setting needs more, beyond
# 2**53 a whole number is not even exact as a float, and Python refuses to print one of more
# than 4,300 digits.
MAX_MAGNITUDE = 1e15
# Tables and arrays nest a few levels in any real profile; this is far deeper, and still far
# from the recursion limit of the code that walks a profile.
MAX_NESTING = 16
# A profile is a short TOML file; this much text still parses in a fraction of a second.
MAX_PROFILE_CHARS = 1_000_000
# No real path is this long; a longer file name is shown cut short in the error.
MAX_SHOWN_PATH_CHARS = 1000


@dataclass(frozen=True)
class Target:
    kind: str  # "local" | "url"
    archetype: str | None = None
    command: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    health_path: str | None = "/health"  # None: a url target that declares none
    metrics_path: str = "/metrics"
    cpu_units: int = 256
    memory_mib: int = 512
    balancer: str = "least_outstanding"
    url: str | None = None
    environment: str | None = None
    allowed_hosts: tuple[str, ...] = ()

    @property
    def is_local(self) -> bool:
        return self.kind == "local"


@dataclass(frozen=True)
class RequestSpec:
    name: str
    path: str
    method: str = "GET"
    weight: int = 1
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Workload:
    requests: tuple[RequestSpec, ...] = ()
    locustfile: str | None = None  # absolute path
    user_classes: tuple[str, ...] = ()
    max_in_flight: int = 500
    timeout_s: float = 10.0
    late_tolerance_ms: float = 25.0


@dataclass(frozen=True)
class Ramp:
    start_rps: float
    max_rps: float
    step_rps: float | None = None
    step_factor: float | None = None
    hold_s: float = 20.0
    min_hold_s: float = 10.0
    warmup_s: float = 4.0
    max_duration_s: float = 900.0
    refine: bool = True
    refine_tolerance_pct: float = 5.0
    replay_steps: int = 4
    beyond: bool = True
    beyond_factor: float = 2.5
    abort_error_pct: float = 50.0
    abort_latency_ms: float = 10000.0
    scale_timeout_s: float = 120.0
    confirm_breach: bool = True
    abort: str = "step"  # "step" | "run"
    max_aborts: int = DEFAULT_MAX_ABORTS_LOCAL
    recovery_timeout_s: float = 60.0
    recovery_probe_s: float = 5.0


@dataclass(frozen=True)
class Capacity:
    controller: str
    tasks: int
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    path: str
    target: Target
    workload: Workload
    slo: Slo
    ramp: Ramp
    capacity: Capacity
    sources: dict[str, dict[str, Any]]
    analysis: AnalysisOptions
    gate: GateCriteria
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

    def to_dict(self) -> dict[str, Any]:
        """The profile as resolved (defaults filled in), JSON-serialisable, for the manifest:
        header values, bodies, user info and query values redacted (see ``scalefinder.core.redact``),
        environment references kept as written."""
        data = asdict(self)
        data["profile_path"] = data.pop("path")
        data["gate"] = self.gate.to_dict()  # the criteria asked for, as the table held them
        data["kubernetes"] = self.kubernetes.to_dict()
        return redact_profile(data)


# -- reading typed values ------------------------------------------------------------------


class _Table:
    """One TOML table being validated: unknown keys rejected, then typed reads with located errors."""

    def __init__(self, data: Any, key: str, path: str):
        self.key = key
        self.path = path
        if not isinstance(data, dict):
            raise self.error(f"expected a table, got {_describe(data)}")
        self.data = data

    def where(self, name: str | None = None) -> str:
        if name is None:
            return self.key
        return _key_path(self.key, name)

    def error(self, message: str, name: str | None = None) -> ProfileError:
        return ProfileError(message, path=self.path, key=self.where(name) or None)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = None, required: bool = False) -> Any:
        if name not in self.data:
            if required:
                raise self.error("is required but missing", name)
            return default
        return self.data[name]

    def string(self, name: str, default: str | None = None, required: bool = False,
               choices: set[str] | None = None) -> str | None:
        value = self.raw(name, default, required)
        if name not in self.data:
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"expected a non-empty string, got {_describe(value)}", name)
        if choices is not None and value not in choices:
            raise self.error(f"expected one of {', '.join(sorted(choices))}, got {value!r}"
                             + _suggestion(value, choices), name)
        return value

    def number(self, name: str, default: float | None = None, required: bool = False,
               low: float | None = None, high: float | None = None, low_open: bool = False) -> float | None:
        value = self.raw(name, default, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"expected a number, got {_describe(value)}", name)
        if not math.isfinite(value):
            # TOML allows nan and inf; neither is a rate, a duration or a share, and NaN would
            # slip through every range check below (all comparisons with it are false).
            raise self.error(f"expected a finite number, got {value}", name)
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise self.error(f"expected a number {_range_text(low, high, low_open)}, got {value}", name)
        return float(value)

    def integer(self, name: str, default: int | None = None, required: bool = False,
                low: int | None = None, high: int | None = None) -> int | None:
        value = self.raw(name, default, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"expected a whole number, got {_describe(value)}", name)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.error(f"expected a whole number {_range_text(low, high, False)}, got {value}", name)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {_describe(value)}", name)
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.raw(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(f"expected a list of strings, got {_describe(value)}", name)
        return tuple(value)

    def table(self, name: str, required: bool = False) -> "_Table | None":
        value = self.raw(name, None, required)
        if value is None:
            return None
        return _Table(value, self.where(name), self.path)

    def expect(self, *known: str) -> "_Table":
        """Reject unknown keys first: almost always a typo, so suggest the closest known key."""
        for name in self.data:
            if name not in known:
                raise self.error(f"unknown key{_suggestion(name, set(known))}", name)
        return self


def _key_path(parent: str, name: str) -> str:
    """``parent.name`` as an error shows it; an empty key as TOML writes it."""
    name = name or '""'
    return f"{parent}.{name}" if parent else name


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a whole number", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    kind = next((text for cls, text in kinds.items() if type(value) is cls), type(value).__name__)
    shown = _shown_value(value) if not isinstance(value, (dict, list)) else ""
    return f"{shown} ({kind})" if shown else kind


def _shown_value(value: Any) -> str:
    """repr() of a value as an error line can show it: a huge whole number by its size (repr()
    refuses one of more than 4,300 digits), a long string cut short."""
    if type(value) is int and abs(value) > MAX_MAGNITUDE:
        return f"a {_digit_count(value)}-digit number"
    return printable(repr(value))


def _digit_count(value: int) -> int:
    return len(str(abs(value))) if value.bit_length() < 10_000 else int(value.bit_length() * math.log10(2)) + 1


def _range_text(low: float | None, high: float | None, low_open: bool) -> str:
    if low is not None and high is not None:
        return f"between {low:g} and {high:g}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"<= {high:g}"


def _suggestion(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- the sections ---------------------------------------------------------------------------


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile; raise ``ProfileError`` (exit 2) on the first problem."""
    path = Path(path)
    shown = printable(str(path), MAX_SHOWN_PATH_CHARS)
    text = _read_text(path, shown)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"is not valid TOML ({exc})", path=shown) from None
    except ValueError:  # Python refuses to read a whole number of more than 4,300 digits
        raise ProfileError(f"{_long_number_line(text)}holds a whole number too long to read; no setting takes "
                           f"more than {MAX_MAGNITUDE:g}", path=shown) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ProfileError(f"nests arrays or tables too deeply (a profile needs a few levels; at most "
                           f"{MAX_NESTING} are allowed)", path=shown) from None
    _check_values(data, shown)
    return _parse(data, path)


def _long_number_line(text: str) -> str:
    """Where the first run of more than 4,300 digits is, as "line N "; tomllib does not say."""
    found = re.search(r"[=\[,]\s*[+-]?(?:0[xob])?[0-9a-fA-F_]{4301,}", text)
    return f"line {text.count(chr(10), 0, found.start()) + 1} " if found else ""


def _read_text(path: Path, shown: str) -> str:
    try:
        with path.open(encoding="utf-8") as stream:
            # a bounded read: a huge file, or a device such as /dev/zero, must not fill the memory
            text = stream.read(MAX_PROFILE_CHARS + 1)
    except FileNotFoundError:
        raise ProfileError("no such file", path=shown) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the file name
        reason = getattr(exc, "strerror", None) or str(exc)  # strerror: without the file name again
        raise ProfileError(f"cannot be read ({printable(reason)})", path=shown) from None
    if len(text) > MAX_PROFILE_CHARS:
        raise ProfileError(f"is longer than {MAX_PROFILE_CHARS:,} characters; a profile is a short TOML file",
                           path=shown)
    return text


def _check_values(data: dict[str, Any], shown: str) -> None:
    """Refuse, wherever it is, a value no setting can take: one nested too deeply, a number that is
    not finite or beyond ``MAX_MAGNITUDE``, a string with a NUL character.

    This covers the tables other modules check (params, sources, controllers) before any of
    them sees a value; each key's own range is checked where the key is read. The walk uses its
    own stack: a deeply nested value must not exhaust Python's.
    """
    pending: list[tuple[str, Any, int]] = [("", data, 0)]
    while pending:
        key, value, depth = pending.pop()
        if depth > MAX_NESTING:
            raise ProfileError(f"nests arrays or tables more than {MAX_NESTING} levels deep", path=shown, key=key)
        if isinstance(value, dict):
            pending.extend((_key_path(key, name), item, depth + 1) for name, item in value.items())
        elif isinstance(value, list):
            pending.extend((f"{key}[{index}]", item, depth + 1) for index, item in enumerate(value))
        else:
            _check_scalar(value, key, shown)


def _check_scalar(value: Any, key: str, shown: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        # TOML allows nan and inf; neither is a rate, a duration or a share, and NaN would slip
        # through every range check (all comparisons with it are false).
        raise ProfileError(f"expected a finite number, got {value}", path=shown, key=key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MAGNITUDE:
        raise ProfileError(f"expected a number between {-MAX_MAGNITUDE:g} and {MAX_MAGNITUDE:g} (no setting takes "
                           f"more), got {_shown_value(value)}", path=shown, key=key)
    if isinstance(value, str) and "\0" in value:
        raise ProfileError("contains a NUL character, which no file name, command line or HTTP request can "
                           "carry", path=shown, key=key)


def _parse(data: dict[str, Any], path: Path) -> Profile:
    shown = str(path)
    top = _Table(data, "", shown).expect("name", "description", "target", "workload", "slo", "ramp", "capacity",
                                        "sources", "analysis", "gate", "kubernetes")
    # without a name, the file's: made safe, since any character may stand in a file name
    name = top.string("name", default=re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem)[:100].strip("-") or "profile")
    if not PROFILE_NAME.fullmatch(name):
        # the name becomes part of the run id and of the run directory's name
        raise top.error(f"expected letters, digits, '.', '_' or '-' (at most 100), got {_shown_value(name)}", "name")
    description = top.string("description", default="")
    target = _parse_target(top.table("target", required=True))
    workload = _parse_workload(top.table("workload", required=True), path.parent)
    slo_table = top.table("slo")
    if slo_table is None:
        raise ProfileError("missing the [slo] table: a profile must declare its SLO "
                           "(percentile and latency_ms)", path=shown, key="slo")
    slo = _parse_slo(slo_table)
    capacity = _parse_capacity(top.table("capacity", required=True))
    ramp = _parse_ramp(top.table("ramp", required=True), target, capacity.controller)
    sources = _parse_sources(top.table("sources", required=True))
    analysis = _parse_analysis(top.table("analysis") or _Table({}, "analysis", shown))
    gate_table = top.table("gate")
    gate = _parse_gate(gate_table) if gate_table else GateCriteria()
    kubernetes_table = top.table("kubernetes")
    kubernetes = _parse_kubernetes(kubernetes_table) if kubernetes_table else KubernetesSettings()
    profile = Profile(name=name, description=description, path=str(path.resolve()), target=target,
                      workload=workload, slo=slo, ramp=ramp, capacity=capacity, sources=sources,
                      analysis=analysis, gate=gate, kubernetes=kubernetes)
    _check_holds_cover_datapoints(profile)
    _check_ecs_names(profile)
    _check_rate_window_within_warmup(profile)
    _check_planned_requests(profile)
    return profile


def _parse_target(table: _Table) -> Target:
    kind = table.string("kind", required=True, choices={"local", "url"})
    if kind == "local":
        table.expect("kind", "archetype", "command", "params", "health_path", "metrics_path", "cpu_units",
                     "memory_mib", "balancer")
        target = _parse_local_target(table)
    else:
        table.expect("kind", "url", "environment", "allowed_hosts", "health_path")
        target = _parse_url_target(table)
    return target


def _parse_local_target(table: _Table) -> Target:
    from scalefinder.loadgen.cluster import spec  # imported when a local target is read, like the cluster itself

    archetype = table.string("archetype")
    command = table.string("command")
    if (archetype is None) == (command is None):
        raise table.error("a local target needs exactly one of 'archetype' or 'command'")
    params_table = table.table("params")
    params = dict(params_table.data) if params_table else {}
    target = Target(
        kind="local",
        archetype=archetype,
        command=command,
        params=params,
        health_path=table.string("health_path", "/health"),
        metrics_path=table.string("metrics_path", "/metrics"),
        # the local cluster's own ranges, so the error names the profile's key
        cpu_units=table.integer("cpu_units", 256, low=spec.MIN_CPU_UNITS, high=spec.MAX_CPU_UNITS),
        memory_mib=table.integer("memory_mib", 512, low=spec.MIN_MEMORY_MIB, high=spec.MAX_MEMORY_MIB),
        balancer=table.string("balancer", "least_outstanding", choices=BALANCERS),
    )
    return replace(target, params=_resolved_cluster_params(target, table))


def _resolved_cluster_params(target: Target, table: _Table) -> dict[str, Any]:
    """Let the cluster check the archetype and its parameters now, not minutes into a run."""
    from scalefinder.loadgen.cluster import ClusterSpec

    try:
        spec = ClusterSpec(archetype=target.archetype, command=target.command, params=dict(target.params),
                           cpu_units=target.cpu_units, memory_mib=target.memory_mib, balancer=target.balancer,
                           health_path=target.health_path, metrics_path=target.metrics_path)
    except InputError as exc:
        raise table.error(str(exc)) from None
    return dict(spec.params)


def _parse_url_target(table: _Table) -> Target:
    url = table.string("url", required=True)
    parts = split_url(url)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise table.error(f"expected an http:// or https:// URL with a host, got {_shown_value(url)}", "url")
    check_references(url, table.where("url"), table.path)
    if "${" in parts.netloc.rpartition("@")[2]:
        # The allowlist is checked on the host as written; a host read from the environment
        # would escape it.
        raise table.error("may refer to the environment in its user info, path and query, not in its host", "url")
    environment = table.string("environment")
    if environment is None:
        raise table.error("a remote target must declare its environment (e.g. \"staging\"); "
                          "scalefinder never sends load to production", "environment")
    if environment.strip().lower() in PRODUCTION_NAMES:
        raise table.error(f"is {environment!r}: scalefinder refuses to load-test production", "environment")
    allowed = table.strings("allowed_hosts")
    if parts.hostname not in allowed:
        raise table.error(f"the target host {parts.hostname!r} is not listed; add it to allowed_hosts "
                          "to confirm this host may receive load", "allowed_hosts")
    # A remote target has a health path only when the profile names one: recovery after an
    # abort then waits for it, and it must not wait for a path the service may not serve.
    health_path = table.string("health_path")
    if health_path is not None and not health_path.startswith("/"):
        raise table.error(f"expected a path starting with '/', got {health_path!r}", "health_path")
    return Target(kind="url", url=url.rstrip("/"), environment=environment, allowed_hosts=allowed,
                  health_path=health_path)


def _parse_workload(table: _Table, base: Path) -> Workload:
    table.expect("requests", "locustfile", "user_classes", "max_in_flight", "timeout_s", "late_tolerance_ms")
    has_requests = table.has("requests")
    locustfile = table.string("locustfile")
    if has_requests == (locustfile is not None):
        raise table.error("needs exactly one of 'requests' (a weighted request mix) or 'locustfile'")
    requests: tuple[RequestSpec, ...] = ()
    user_classes: tuple[str, ...] = ()
    resolved: str | None = None
    if has_requests:
        requests = _parse_requests(table)
    else:
        candidate = _existing_file(base / locustfile)
        if candidate is None:
            shown = printable(repr(os.path.abspath(base / locustfile)), MAX_SHOWN_PATH_CHARS)
            raise table.error(f"no such file {shown}", "locustfile")
        resolved = str(candidate)
        user_classes = table.strings("user_classes")
    workload = Workload(
        requests=requests,
        locustfile=resolved,
        user_classes=user_classes,
        max_in_flight=table.integer("max_in_flight", 500, low=1, high=100000),
        timeout_s=table.number("timeout_s", 10.0, low=0, low_open=True, high=600),
        late_tolerance_ms=table.number("late_tolerance_ms", 25.0, low=0, low_open=True, high=60000),
    )
    return workload


def _existing_file(path: Path) -> Path | None:
    """The resolved path of a file, or None when there is none; a name the system refuses (too
    long, say) is no file either."""
    try:
        resolved = path.resolve()
        return resolved if resolved.is_file() else None
    except (OSError, ValueError):
        return None


def _parse_requests(table: _Table) -> tuple[RequestSpec, ...]:
    items = table.raw("requests")
    if not isinstance(items, list) or not items:
        raise table.error(f"expected a non-empty list of request tables, got {_describe(items)}", "requests")
    specs = []
    for index, item in enumerate(items):
        entry = _Table(item, f"{table.where('requests')}[{index}]", table.path).expect(
            "name", "method", "path", "weight", "body", "headers")
        path = entry.string("path", required=True)
        if not path.startswith("/"):
            raise entry.error(f"expected a path starting with '/', got {path!r}", "path")
        headers_table = entry.table("headers")
        headers = dict(headers_table.data) if headers_table else {}
        if not all(isinstance(v, str) for v in headers.values()):
            raise entry.error("expected header values to be strings", "headers")
        for text, key in [(path, "path"), *((f"{n}: {v}", "headers") for n, v in headers.items())]:
            if any(c in text for c in "\r\n"):
                # a line break would end the header or request line and start another (header injection)
                raise entry.error("must not contain a line break (CR or LF)", key)
        body = entry.raw("body")
        if body is not None and not isinstance(body, str):
            raise entry.error(f"expected a string, got {_describe(body)}", "body")
        for key, text in _secret_fields(path, headers, body):
            check_references(text, entry.where(key), entry.path)
        specs.append(RequestSpec(
            name=entry.string("name", default=path),
            path=path,
            method=entry.string("method", "GET", choices=HTTP_METHODS),
            weight=entry.integer("weight", 1, low=1, high=1_000_000),
            body=body,
            headers=headers,
        ))
    return tuple(specs)


def _secret_fields(path: str, headers: dict[str, str], body: str | None) -> list[tuple[str, str]]:
    """The fields of one request that may refer to the environment, by their key in the table."""
    fields = [("path", path)] + [(f"headers.{name}", value) for name, value in headers.items()]
    return fields + ([("body", body)] if body is not None else [])


def with_secrets(profile: Profile, environ: Mapping[str, str] | None = None) -> Profile:
    """The profile to send with: every ``${NAME}`` in the target URL and in the requests' paths,
    header values and bodies replaced by the environment's value.

    Only for sending, and only in memory: what is recorded or printed is ``profile`` itself,
    whose ``to_dict`` keeps the references. A variable that is not set is a ``ProfileError``
    naming the key and the variable.
    """
    environ = os.environ if environ is None else environ
    target = profile.target
    if target.url is not None:
        url = expand_references(target.url, "target.url", environ, profile.path)
        _check_same_host(target.url, url, profile.path)
        target = replace(target, url=url)
    requests = []
    for index, spec in enumerate(profile.workload.requests):
        where = f"workload.requests[{index}]"
        values = {key: expand_references(text, f"{where}.{key}", environ, profile.path)
                  for key, text in _secret_fields(spec.path, spec.headers, spec.body)}
        requests.append(replace(spec, path=values["path"], body=values.get("body"),
                                headers={name: values[f"headers.{name}"] for name in spec.headers}))
    return replace(profile, target=target, workload=replace(profile.workload, requests=tuple(requests)))


def _check_same_host(written: str, expanded: str, path: str) -> None:
    """A value from the environment must not move the load to another host or port than the
    one ``allowed_hosts`` was checked against (a user info holding an '@', for one)."""
    try:
        before, after = urlsplit(written), urlsplit(expanded)
        same = (before.hostname, before.port) == (after.hostname, after.port)
    except ValueError:
        same = False
    if not same:
        raise ProfileError("the values of its environment references change its host or port; "
                           "they may only fill in the user info, path and query", path=path, key="target.url")


def _parse_slo(table: _Table) -> Slo:
    table.expect("percentile", "latency_ms", "error_budget_pct")
    slo = Slo(
        percentile=table.number("percentile", required=True, low=0, low_open=True, high=100),
        latency_ms=table.number("latency_ms", required=True, low=0, low_open=True, high=MAX_LATENCY_MS),
        error_budget_pct=table.number("error_budget_pct", 1.0, low=0, high=100),
    )
    return slo


# How long one change of the task count may take by default. An ECS service's new Fargate task
# must be placed, pull its image, start and pass the load balancer's first health checks, which
# often takes two to four minutes; the local cluster and most commands take seconds.
SCALE_TIMEOUT_S = {"ecs": 300.0}
DEFAULT_SCALE_TIMEOUT_S = 120.0


def _parse_ramp(table: _Table, target: Target, controller: str | None = None) -> Ramp:
    table.expect(*RAMP_KEYS)
    start = table.number("start_rps", required=True, low=MIN_RATE_RPS, high=MAX_RATE_RPS)
    step_rps = table.number("step_rps", low=MIN_RATE_RPS, high=MAX_RATE_RPS)
    step_factor = table.number("step_factor", low=1, low_open=True, high=10)
    if (step_rps is None) == (step_factor is None):
        raise table.error("needs exactly one of 'step_rps' (additive) or 'step_factor' (geometric)")
    hold = table.number("hold_s", 20.0, low=1, high=MAX_HOLD_S)
    min_hold = table.number("min_hold_s", min(hold, 10.0), low=1, high=MAX_HOLD_S)
    if min_hold > hold:
        raise table.error(f"must not exceed hold_s ({hold:g}), got {min_hold:g}", "min_hold_s")
    warmup = table.number("warmup_s", min(4.0, min_hold / 2), low=0, high=MAX_HOLD_S)
    if warmup >= min_hold:
        raise table.error(f"must be shorter than min_hold_s ({min_hold:g}), got {warmup:g}", "warmup_s")
    max_rps = table.number("max_rps", required=True, low=MIN_RATE_RPS, high=MAX_RATE_RPS)
    if max_rps < start:
        raise table.error(f"must be at least start_rps ({start:g}), got {max_rps:g}", "max_rps")
    _check_ramp_steps(table, start, max_rps, step_rps, step_factor)
    ramp = Ramp(
        start_rps=start,
        max_rps=max_rps,
        step_rps=step_rps,
        step_factor=step_factor,
        hold_s=hold,
        min_hold_s=min_hold,
        warmup_s=warmup,
        max_duration_s=_max_duration(table),
        refine=table.boolean("refine", True),
        refine_tolerance_pct=table.number("refine_tolerance_pct", 5.0, low=0.5, high=50),
        replay_steps=table.integer("replay_steps", 4, low=4, high=50),
        beyond=table.boolean("beyond", target.is_local),
        beyond_factor=table.number("beyond_factor", 2.5, low=1, low_open=True, high=10),
        abort_error_pct=table.number("abort_error_pct", 50.0, low=0, low_open=True, high=100),
        abort_latency_ms=table.number("abort_latency_ms", 10000.0, low=0, low_open=True, high=MAX_LATENCY_MS),
        scale_timeout_s=table.number("scale_timeout_s", SCALE_TIMEOUT_S.get(controller or "", DEFAULT_SCALE_TIMEOUT_S),
                                     low=1, high=MAX_TIMEOUT_S),
        confirm_breach=table.boolean("confirm_breach", True),
        **_parse_abort_rules(table, target),
    )
    return ramp


def _check_ramp_steps(table: _Table, start: float, max_rps: float, step_rps: float | None,
                      step_factor: float | None) -> None:
    """Count the ramp's steps before anyone builds them: a step far too small for the span
    (step_rps = 0.01 up to 1e6 req/s, step_factor = 1.0000001) would plan millions of steps."""
    steps = ramp_step_count(start, max_rps, step_rps, step_factor)
    if steps <= MAX_RAMP_STEPS:
        return
    if step_rps is not None:
        how, key, change = f"in steps of {step_rps:.10g} req/s", "step_rps", "raise step_rps"
    else:
        how, key, change = f"by a factor of {step_factor:.10g}", "step_factor", "raise step_factor"
    raise table.error(f"the ramp from start_rps {start:.10g} to max_rps {max_rps:.10g} req/s {how} would have "
                      f"{steps:,} steps, more than the {MAX_RAMP_STEPS:,} a plan may have; {change}, "
                      f"or bring start_rps and max_rps closer", key)


def ramp_step_count(start: float, max_rps: float, step_rps: float | None, step_factor: float | None) -> int:
    """How many rates ``loadgen.plan.ramp_rates`` offers, computed without listing them."""
    span = max_rps - start
    if span <= 1e-9:
        return 1
    if step_rps is not None:
        return math.ceil(span / step_rps) + 1
    return math.ceil(math.log(max_rps / start) / math.log(step_factor)) + 1


def _max_duration(table: _Table) -> float:
    max_duration = table.number("max_duration_s", 900.0, low=10)
    if max_duration > MAX_RUN_S:
        raise table.error(f"must be at most {MAX_RUN_S:g} s (a day): it bounds the run, and a longer one is "
                          f"better split into several profiles; got {max_duration:g}", "max_duration_s")
    return max_duration


def _parse_abort_rules(table: _Table, target: Target) -> dict[str, Any]:
    """What a hard abort ends, and how the run recovers from one (see docs/profiles.md)."""
    probe = table.number("recovery_probe_s", 5.0, low=1, high=600)
    timeout = table.number("recovery_timeout_s", 60.0, low=1, high=3600)
    if timeout < probe:
        raise table.error(f"must be at least recovery_probe_s ({probe:g} s): no probe could finish in it, "
                          f"got {timeout:g}", "recovery_timeout_s")
    default_aborts = DEFAULT_MAX_ABORTS_LOCAL if target.is_local else DEFAULT_MAX_ABORTS_URL
    return {
        "abort": table.string("abort", "step", choices=ABORT_SCOPES),
        "max_aborts": table.integer("max_aborts", default_aborts, low=1, high=100),
        "recovery_timeout_s": timeout,
        "recovery_probe_s": probe,
    }


def _parse_capacity(table: _Table) -> Capacity:
    controller = table.string("controller", required=True, choices=set(CONTROLLER_KINDS))
    table.expect("controller", "tasks", controller)
    tasks = table.integer("tasks", required=True, low=1, high=10000)
    sub = table.raw(controller, {})
    config = _validate_kind("controller", controller, CONTROLLER_KINDS[controller], sub,
                            table.where(controller), table.path)
    return Capacity(controller=controller, tasks=tasks, config=config)


def _parse_sources(table: _Table) -> dict[str, dict[str, Any]]:
    if not table.data:
        raise table.error("declares no metric source; add e.g. [sources.local]")
    sources = {}
    for kind in table.data:
        if kind not in SOURCE_KINDS:
            raise table.error(f"unknown source kind; expected one of {', '.join(sorted(SOURCE_KINDS))}"
                              + _suggestion(kind, set(SOURCE_KINDS)), kind)
        sources[kind] = _validate_kind("source", kind, SOURCE_KINDS[kind], table.raw(kind),
                                       table.where(kind), table.path)
    return sources


def _validate_kind(role: str, kind: str, module_name: str, config: Any, where: str, path: str) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ProfileError(f"expected a table, got {_describe(config)}", path=path, key=where)
    validate = _kind_validator(role, kind, module_name, path, where)
    try:
        return validate(dict(config), where)
    except ProfileError as exc:
        if exc.path is None:  # the kind module knows the key, not the file
            raise ProfileError(str(exc), path=path) from None
        raise


def _kind_validator(role: str, kind: str, module_name: str, path: str, where: str) -> Callable:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ProfileError(f"the {role} kind {kind!r} is not available in this build",
                               path=path, key=where) from None
        raise ProfileError(f"the {role} kind {kind!r} needs the Python package {exc.name!r}; install it",
                           path=path, key=where) from None
    return module.validate_config


def _parse_analysis(table: _Table) -> AnalysisOptions:
    """The defaults and ranges are the model's, shared with `scalefinder analyze`."""
    table.expect(*(f.name for f in fields(AnalysisOptions)))
    defaults = AnalysisOptions()
    headroom_low, headroom_high = HEADROOM_RANGE
    zones_low, zones_high = AVAILABILITY_ZONES_RANGE
    return _as_model(table, AnalysisOptions,
                     headroom=table.number("headroom", defaults.headroom, low=headroom_low, high=headroom_high),
                     availability_zones=table.integer("availability_zones", defaults.availability_zones,
                                                      low=zones_low, high=zones_high),
                     peak_rps=table.number("peak_rps", low=0, low_open=True, high=MAX_MAGNITUDE))


def _parse_gate(table: _Table) -> GateCriteria:
    """Check the [gate] table when the profile loads, not only when `gate` runs after a long run.

    The types are read here, with the file and key in the error; the ranges are the model's,
    the same `scalefinder gate` enforces on its flags.
    """
    table.expect(*GateCriteria.keys())
    return _as_model(table, GateCriteria,
                     slo_rate_rps=table.number("slo_rate_rps"),
                     capacity_tolerance_pct=table.number("capacity_tolerance_pct"),
                     target_tolerance_pct=table.number("target_tolerance_pct"),
                     metric_unchanged=table.boolean("metric_unchanged", None) if table.has("metric_unchanged") else None)


def _parse_kubernetes(table: _Table) -> KubernetesSettings:
    """What the HPA and KEDA renderings need and a run cannot measure; the ranges are the model's."""
    table.expect(*KubernetesSettings.keys())
    requests = {}
    for key in ("cpu_request", "memory_request"):
        value = table.raw(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            raise table.error(f'expected a quantity such as "250m" or "512Mi", got {_describe(value)}', key)
        requests[key] = str(value) if isinstance(value, (int, float)) else value
    metadata = table.table("trigger_metadata")
    return _as_model(table, KubernetesSettings,
                     namespace=table.string("namespace"), workload=table.string("workload"), **requests,
                     min_replicas=table.integer("min_replicas"), max_replicas=table.integer("max_replicas"),
                     keda_trigger=table.string("keda_trigger"),
                     trigger_metadata=metadata.data if metadata is not None else {})


def _as_model(table: _Table, model: Any, **values: Any) -> Any:
    """``model(**values)`` with a range error located at its key in the profile."""
    try:
        return model(**values)
    except ModelError as exc:
        raise table.error(f"expected {exc.expected}, got {_describe(table.data.get(exc.key, exc.value))}", exc.key) from None


def _check_holds_cover_datapoints(profile: Profile) -> None:
    """A metric sampled once a period needs several datapoints inside the shortest hold."""
    for kind, config in profile.sources.items():
        period_s = config.get("period_s") or config.get("interval_s") or config.get("step_s")
        if isinstance(period_s, (int, float)) and not isinstance(period_s, bool):
            needed = MIN_DATAPOINTS_PER_HOLD * period_s + profile.ramp.warmup_s
            if profile.ramp.min_hold_s < needed:
                raise ProfileError(
                    f"must be at least {needed:g} s: warm-up plus {MIN_DATAPOINTS_PER_HOLD} datapoints "
                    f"of [sources.{kind}] (one every {period_s:g} s), got {profile.ramp.min_hold_s:g}",
                    path=profile.path, key="ramp.min_hold_s")


def _check_ecs_names(profile: Profile) -> None:
    """No ECS cluster or service that looks like production, and the controller resizes the
    service the CloudWatch source measures (see docs/security.md)."""
    controller = profile.capacity.config if profile.capacity.controller == "ecs" else None
    source = profile.sources.get("cloudwatch")
    if controller is None and source is None:
        return
    from scalefinder.loadgen.capacity.ecs import check_service_names  # imported when a profile uses ECS

    try:
        check_service_names(controller, source, PRODUCTION_NAMES)
    except ProfileError as exc:
        raise ProfileError(str(exc).removeprefix(f"[{exc.key}] "), path=profile.path, key=exc.key) from None


def _check_planned_requests(profile: Profile) -> None:
    """The most requests a run may send, as ``scalefinder plan`` counts them, within the limit."""
    from scalefinder.loadgen.plan import plan_profile  # the plan is built from a profile: import it late

    plan = plan_profile(profile)
    requests = plan.request_count + plan.recovery_requests
    if requests > MAX_PLANNED_REQUESTS:
        raise ProfileError(
            f"the plan would send up to {requests:,} requests, more than the {MAX_PLANNED_REQUESTS:,} a plan may "
            f"send; lower max_rps or hold_s, or use fewer steps (a larger step_rps or step_factor)",
            path=profile.path, key="ramp")


def _check_rate_window_within_warmup(profile: Profile) -> None:
    config = profile.sources.get("prometheus")
    if not config:
        return
    from scalefinder.loadgen.sources.prometheus import rate_window_s

    window_s = rate_window_s(config)
    if window_s is not None and window_s > profile.ramp.warmup_s:
        raise ProfileError(
            f"must be no longer than ramp.warmup_s ({profile.ramp.warmup_s:g} s), got "
            f"{config['rate_window']!r}: a rate over a longer window mixes the previous step's load "
            f"into samples the analysis keeps", path=profile.path, key="sources.prometheus.rate_window")


def is_loopback(url: str) -> bool:
    """True when a URL's host is a loopback address (127.0.0.0/8, ::1) or localhost."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
