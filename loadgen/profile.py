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
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from loadgen.capacity import CONTROLLER_KINDS
from loadgen.sources import SOURCE_KINDS
from scalefinder.errors import InputError, ProfileError

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
class Slo:
    percentile: float
    latency_ms: float
    error_budget_pct: float = 1.0


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
class Analysis:
    headroom: float = 0.7
    availability_zones: int = 3
    peak_rps: float | None = None


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
    analysis: Analysis
    gate: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The profile as resolved (defaults filled in), JSON-serialisable, for the manifest."""
        data = asdict(self)
        data["profile_path"] = data.pop("path")
        return data


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
        if not name:
            return self.key
        return f"{self.key}.{name}" if self.key else name

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


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a whole number", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    kind = next((text for cls, text in kinds.items() if type(value) is cls), type(value).__name__)
    shown = repr(value) if not isinstance(value, (dict, list)) else ""
    return f"{shown} ({kind})" if shown else kind


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
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError("no such file", path=shown) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot be read ({exc})", path=shown) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"is not valid TOML ({exc})", path=shown) from None
    return _parse(data, path)


def _parse(data: dict[str, Any], path: Path) -> Profile:
    shown = str(path)
    top = _Table(data, "", shown).expect("name", "description", "target", "workload", "slo", "ramp", "capacity",
                                        "sources", "analysis", "gate")
    name = top.string("name", default=path.stem)
    description = top.string("description", default="")
    target = _parse_target(top.table("target", required=True))
    workload = _parse_workload(top.table("workload", required=True), path.parent)
    slo_table = top.table("slo")
    if slo_table is None:
        raise ProfileError("missing the [slo] table: a profile must declare its SLO "
                           "(percentile and latency_ms)", path=shown, key="slo")
    slo = _parse_slo(slo_table)
    ramp = _parse_ramp(top.table("ramp", required=True), target)
    capacity = _parse_capacity(top.table("capacity", required=True))
    sources = _parse_sources(top.table("sources", required=True))
    analysis = _parse_analysis(top.table("analysis") or _Table({}, "analysis", shown))
    gate_table = top.table("gate")
    gate = _parse_gate(gate_table) if gate_table else {}
    profile = Profile(name=name, description=description, path=str(path.resolve()), target=target,
                      workload=workload, slo=slo, ramp=ramp, capacity=capacity, sources=sources,
                      analysis=analysis, gate=gate)
    _check_holds_cover_datapoints(profile)
    _check_rate_window_within_warmup(profile)
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
        cpu_units=table.integer("cpu_units", 256, low=16, high=16384),
        memory_mib=table.integer("memory_mib", 512, low=16, high=131072),
        balancer=table.string("balancer", "least_outstanding", choices=BALANCERS),
    )
    return replace(target, params=_resolved_cluster_params(target, table))


def _resolved_cluster_params(target: Target, table: _Table) -> dict[str, Any]:
    """Let the cluster check the archetype and its parameters now, not minutes into a run."""
    from loadgen.cluster import ClusterSpec

    try:
        spec = ClusterSpec(archetype=target.archetype, command=target.command, params=dict(target.params),
                           cpu_units=target.cpu_units, memory_mib=target.memory_mib, balancer=target.balancer,
                           health_path=target.health_path, metrics_path=target.metrics_path)
    except InputError as exc:
        raise table.error(str(exc)) from None
    return dict(spec.params)


def _parse_url_target(table: _Table) -> Target:
    url = table.string("url", required=True)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise table.error(f"expected an http:// or https:// URL with a host, got {url!r}", "url")
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
        candidate = (base / locustfile).resolve()
        if not candidate.is_file():
            raise table.error(f"no such file {str(candidate)!r}", "locustfile")
        resolved = str(candidate)
        user_classes = table.strings("user_classes")
    workload = Workload(
        requests=requests,
        locustfile=resolved,
        user_classes=user_classes,
        max_in_flight=table.integer("max_in_flight", 500, low=1, high=100000),
        timeout_s=table.number("timeout_s", 10.0, low=0, low_open=True, high=600),
        late_tolerance_ms=table.number("late_tolerance_ms", 25.0, low=0, low_open=True),
    )
    return workload


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
        body = entry.raw("body")
        if body is not None and not isinstance(body, str):
            raise entry.error(f"expected a string, got {_describe(body)}", "body")
        specs.append(RequestSpec(
            name=entry.string("name", default=path),
            path=path,
            method=entry.string("method", "GET", choices=HTTP_METHODS),
            weight=entry.integer("weight", 1, low=1),
            body=body,
            headers=headers,
        ))
    return tuple(specs)


def _parse_slo(table: _Table) -> Slo:
    table.expect("percentile", "latency_ms", "error_budget_pct")
    slo = Slo(
        percentile=table.number("percentile", required=True, low=0, low_open=True, high=100),
        latency_ms=table.number("latency_ms", required=True, low=0, low_open=True),
        error_budget_pct=table.number("error_budget_pct", 1.0, low=0, high=100),
    )
    return slo


def _parse_ramp(table: _Table, target: Target) -> Ramp:
    table.expect(*RAMP_KEYS)
    start = table.number("start_rps", required=True, low=0, low_open=True)
    step_rps = table.number("step_rps", low=0, low_open=True)
    step_factor = table.number("step_factor", low=1, low_open=True)
    if (step_rps is None) == (step_factor is None):
        raise table.error("needs exactly one of 'step_rps' (additive) or 'step_factor' (geometric)")
    hold = table.number("hold_s", 20.0, low=1)
    min_hold = table.number("min_hold_s", min(hold, 10.0), low=1)
    if min_hold > hold:
        raise table.error(f"must not exceed hold_s ({hold:g}), got {min_hold:g}", "min_hold_s")
    warmup = table.number("warmup_s", min(4.0, min_hold / 2), low=0)
    if warmup >= min_hold:
        raise table.error(f"must be shorter than min_hold_s ({min_hold:g}), got {warmup:g}", "warmup_s")
    max_rps = table.number("max_rps", required=True, low=0, low_open=True)
    if max_rps < start:
        raise table.error(f"must be at least start_rps ({start:g}), got {max_rps:g}", "max_rps")
    ramp = Ramp(
        start_rps=start,
        max_rps=max_rps,
        step_rps=step_rps,
        step_factor=step_factor,
        hold_s=hold,
        min_hold_s=min_hold,
        warmup_s=warmup,
        max_duration_s=table.number("max_duration_s", 900.0, low=10),
        refine=table.boolean("refine", True),
        refine_tolerance_pct=table.number("refine_tolerance_pct", 5.0, low=0.5, high=50),
        replay_steps=table.integer("replay_steps", 4, low=4, high=50),
        beyond=table.boolean("beyond", target.is_local),
        beyond_factor=table.number("beyond_factor", 2.5, low=1, low_open=True, high=10),
        abort_error_pct=table.number("abort_error_pct", 50.0, low=0, low_open=True, high=100),
        abort_latency_ms=table.number("abort_latency_ms", 10000.0, low=0, low_open=True),
        scale_timeout_s=table.number("scale_timeout_s", 120.0, low=1),
        confirm_breach=table.boolean("confirm_breach", True),
        **_parse_abort_rules(table, target),
    )
    return ramp


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


def _parse_analysis(table: _Table) -> Analysis:
    table.expect("headroom", "availability_zones", "peak_rps")
    analysis = Analysis(
        headroom=table.number("headroom", 0.7, low=0.6, high=0.8),
        availability_zones=table.integer("availability_zones", 3, low=1, high=10),
        peak_rps=table.number("peak_rps", low=0, low_open=True),
    )
    return analysis


def _parse_gate(table: _Table) -> dict[str, Any]:
    """Check the [gate] table when the profile loads, not only when `gate` runs after a long run.

    The table is kept as written (the gate reads it back from the manifest and fills its own
    defaults); the ranges are those `scalefinder gate` enforces.
    """
    table.expect("slo_rate_rps", "capacity_tolerance_pct", "target_tolerance_pct", "metric_unchanged")
    table.number("slo_rate_rps", low=0, low_open=True)
    for name in ("capacity_tolerance_pct", "target_tolerance_pct"):
        value = table.number(name, low=0, high=100)
        if value is not None and value >= 100:
            raise table.error(f"expected a number from 0 to below 100, got {value:g}", name)
    if table.has("metric_unchanged"):
        table.boolean("metric_unchanged", True)
    return dict(table.data)


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


def _check_rate_window_within_warmup(profile: Profile) -> None:
    config = profile.sources.get("prometheus")
    if not config:
        return
    from loadgen.sources.prometheus import rate_window_s

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
