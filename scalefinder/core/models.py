"""The typed contract between the run side and the read side.

The run side writes a run directory; the analysis, the report and the gate read it back. What
both halves must agree on is defined here once, as frozen dataclasses with their defaults and
ranges: the SLO, the analysis options, the gate criteria, the verdicts and one test's result.
Each model reads itself from the mapping it is stored as (a profile table, a manifest entry, a
findings entry) and writes itself back, so a reader never digs through ``.get(...) or {}``
chains and a default cannot differ between the two sides.

Validation raises :class:`ModelError` with the offending key, which each side turns into its own
kind of error: a located ``ProfileError`` when a profile loads, an ``InputError`` naming the flag
or file when a command reads a run.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Mapping

from scalefinder.core import quantity
from scalefinder.core import slo as slos
from scalefinder.core.errors import InputError, RunDirectoryError


class ModelError(InputError):
    """A value outside a model's range; ``key`` names the field, ``expected`` says what fits."""

    def __init__(self, key: str, expected: str, value: Any):
        self.key = key
        self.expected = expected
        self.value = value
        super().__init__(f"{key} must be {expected}, not {value!r}")


# -- verdicts -------------------------------------------------------------------------------------
class Verdict(StrEnum):
    """The answer of a whole analysis (``findings.json``'s ``verdict``)."""

    RECOMMENDED = "recommended"
    NO_TASK_LEVEL_METRIC = "no_task_level_metric"
    INCONCLUSIVE = "inconclusive"


class TestVerdict(StrEnum):
    """The outcome of one statistical test of one metric."""

    __test__ = False  # not a pytest test class

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


# -- the SLO --------------------------------------------------------------------------------------
DEFAULT_SLO_PERCENTILE = 95.0


@dataclass(frozen=True)
class Slo:
    """The service level the ramp breaks: ``percentile`` latency at most ``latency_ms`` and at
    most ``error_budget_pct`` of arrivals failed or dropped (see ``scalefinder.core.slo``)."""

    percentile: float
    latency_ms: float
    error_budget_pct: float = slos.DEFAULT_ERROR_BUDGET_PCT

    def met(self, latency_ms: float | None, failures: float, dropped: float, sent: float) -> bool | None:
        """Whether one step met this SLO: True, False, or None when it cannot be told."""
        return slos.step_met(latency_ms, failures, dropped, sent, self)

    @property
    def label(self) -> str:
        return slos.percentile_label(self.percentile)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "the SLO") -> "Slo":
        """The SLO recorded in a manifest; an error names ``source`` when it is unusable."""
        if not isinstance(data, Mapping):
            raise InputError(f"{source} is missing or not a table")
        try:
            slo = cls(percentile=float(data.get("percentile", DEFAULT_SLO_PERCENTILE)),
                      latency_ms=float(data["latency_ms"]),
                      error_budget_pct=float(data.get("error_budget_pct", slos.DEFAULT_ERROR_BUDGET_PCT)))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{source} lacks a numeric latency_ms, percentile or error_budget_pct") from None
        if not all(math.isfinite(v) for v in (slo.percentile, slo.latency_ms, slo.error_budget_pct)):
            raise InputError(f"{source} holds a value that is not a finite number")
        return slo


# -- analysis options ----------------------------------------------------------------------------
HEADROOM_RANGE = (0.6, 0.8)  # the guide's advice: a target at 60-80% of the saturation level
AVAILABILITY_ZONES_RANGE = (1, 10)


@dataclass(frozen=True)
class AnalysisOptions:
    """How the analysis turns a measured capacity into a target: the profile's ``[analysis]``
    table, overridden by ``scalefinder analyze`` flags."""

    headroom: float = 0.7
    availability_zones: int = 3
    peak_rps: float | None = None

    def __post_init__(self) -> None:
        low, high = HEADROOM_RANGE
        if _not_number(self.headroom) or not low <= self.headroom <= high:
            raise ModelError("headroom", f"a number between {low:g} and {high:g}", self.headroom)
        low_zones, high_zones = AVAILABILITY_ZONES_RANGE
        if (isinstance(self.availability_zones, bool) or not isinstance(self.availability_zones, int)
                or not low_zones <= self.availability_zones <= high_zones):
            raise ModelError("availability_zones", f"a whole number from {low_zones} to {high_zones}",
                             self.availability_zones)
        if self.peak_rps is not None and (_not_number(self.peak_rps) or self.peak_rps <= 0):
            raise ModelError("peak_rps", "a positive number", self.peak_rps)

    @classmethod
    def from_mapping(cls, table: Any) -> "AnalysisOptions":
        """The ``[analysis]`` table as recorded in a manifest (absent keys take the defaults)."""
        if not isinstance(table, Mapping):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: _whole(v) if k == "availability_zones" else v
                      for k, v in table.items() if k in known and v is not None})

    def overridden(self, **values: Any) -> "AnalysisOptions":
        """These options with every value that is not None replaced (command-line flags win)."""
        changes = {k: _whole(v) if k == "availability_zones" else v for k, v in values.items() if v is not None}
        return replace(self, **changes) if changes else self


# -- gate criteria -------------------------------------------------------------------------------
DEFAULT_CAPACITY_TOLERANCE_PCT = 10.0
DEFAULT_TARGET_TOLERANCE_PCT = 15.0


@dataclass(frozen=True)
class GateCriteria:
    """The profile's ``[gate]`` table or the gate's flags; None means "not asked for"."""

    slo_rate_rps: float | None = None
    capacity_tolerance_pct: float | None = None
    target_tolerance_pct: float | None = None
    metric_unchanged: bool | None = None

    def __post_init__(self) -> None:
        rate = self.slo_rate_rps
        if rate is not None and (_not_number(rate) or rate <= 0):
            raise ModelError("slo_rate_rps", "a positive number", rate)
        for key in ("capacity_tolerance_pct", "target_tolerance_pct"):
            value = getattr(self, key)
            if value is not None and (_not_number(value) or not 0 <= value < 100):
                raise ModelError(key, "a number from 0 to below 100", value)
        if self.metric_unchanged is not None and not isinstance(self.metric_unchanged, bool):
            raise ModelError("metric_unchanged", "true or false", self.metric_unchanged)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, table: Any, *, source: str = "the [gate] table") -> "GateCriteria":
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise InputError(f"{source} is not a table")
        unknown = sorted(set(table) - set(cls.keys()))
        if unknown:
            raise InputError(f"unknown key(s) in {source}: {', '.join(unknown)}")
        return cls(**{k: table.get(k) for k in cls.keys()})

    def merged(self, overrides: "GateCriteria") -> "GateCriteria":
        """``overrides``' set values win (flags given on the command line over the profile's)."""
        return replace(self, **{k: getattr(overrides, k) for k in self.keys() if getattr(overrides, k) is not None})

    def to_dict(self) -> dict[str, Any]:
        """Only the criteria that were asked for, as a profile's table holds them."""
        return {k: v for k, v in asdict(self).items() if v is not None}


# -- samples a hold needs ------------------------------------------------------------------------
#: A hold with fewer samples than this after its warm-up is too short to judge steady. The
#: analysis applies it (``analysis/steady.py``); ``scalefinder plan`` warns a profile whose holds
#: give a source fewer.
MIN_STEADY_SAMPLES = 6
# The phases whose steps run at the initial task count at the ramp's own rates: the curve of
# every metric and of latency against load comes from these.
RAMP_PHASES = ("ramp", "refine")


# -- Kubernetes renderings -----------------------------------------------------------------------
#: workload kinds an HPA or a ScaledObject can scale (the ``scale`` subresource), as a team writes them
WORKLOAD_KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet"}
#: KEDA triggers rendered for a queue's backlog, besides ``prometheus`` for any query
KEDA_QUEUE_TRIGGERS = ("aws-sqs-queue", "rabbitmq", "kafka", "redis", "prometheus")
_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


@dataclass(frozen=True)
class KubernetesSettings:
    """The profile's ``[kubernetes]`` table: what the HPA and KEDA renderings cannot learn from a
    run. Every field is optional; a name left out stays a placeholder in the manifests."""

    namespace: str | None = None
    #: ``deployment/web`` or ``statefulset/db``
    workload: str | None = None
    #: the container's requests as its pod spec gives them (``"250m"``, ``"512Mi"``); the HPA's
    #: utilization is a share of these, not of the limit the run measured against
    cpu_request: str | None = None
    memory_request: str | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    #: the KEDA trigger for a queue's backlog, and its connection metadata (host, queue URL...)
    keda_trigger: str | None = None
    trigger_metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.namespace is not None and (not isinstance(self.namespace, str)
                                           or not re.match(_K8S_NAME, self.namespace)):
            raise ModelError("namespace", "a Kubernetes namespace name (lower-case letters, digits, '-')",
                             self.namespace)
        if self.workload is not None:
            kind, _, name = self.workload.partition("/") if isinstance(self.workload, str) else ("", "", "")
            if kind.lower() not in WORKLOAD_KINDS or not re.match(_K8S_NAME, name):
                raise ModelError("workload", "deployment/NAME or statefulset/NAME", self.workload)
        for key in ("cpu_request", "memory_request"):
            value = getattr(self, key)
            if value is not None:
                try:
                    quantity.parse(value)
                except quantity.QuantityError:
                    raise ModelError(key, 'a Kubernetes quantity such as "250m" (CPU) or "512Mi" (memory)',
                                     value) from None
        for key in ("min_replicas", "max_replicas"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000):
                raise ModelError(key, "a whole number from 1 to 10000", value)
        if self.min_replicas is not None and self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ModelError("max_replicas", f"at least min_replicas ({self.min_replicas})", self.max_replicas)
        if self.keda_trigger is not None and self.keda_trigger not in KEDA_QUEUE_TRIGGERS:
            raise ModelError("keda_trigger", f"one of {', '.join(KEDA_QUEUE_TRIGGERS)}", self.keda_trigger)
        metadata = self.trigger_metadata
        if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and k for k, v in metadata.items()):
            raise ModelError("trigger_metadata", "a table of text values (KEDA reads every value as a string)",
                             metadata)
        for key, value in metadata.items():
            if re.search(r"://[^/]*@", value) or key.lower() in ("password", "username", "sasl", "token"):
                # the table is written into the run directory and the manifests get pasted around
                raise ModelError(f"trigger_metadata.{key}", "free of credentials: KEDA reads them from a "
                                 "TriggerAuthentication, which the rendering references",
                                 "(a value holding credentials, not shown)")
        object.__setattr__(self, "trigger_metadata", dict(metadata))  # a copy: the caller's table stays its own

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @property
    def workload_kind(self) -> str | None:
        return WORKLOAD_KINDS[self.workload.partition("/")[0].lower()] if self.workload else None

    @property
    def workload_name(self) -> str | None:
        return self.workload.partition("/")[2] if self.workload else None

    @classmethod
    def from_mapping(cls, table: Any) -> "KubernetesSettings":
        """The table as a manifest recorded it; an old manifest without one gives the defaults."""
        if not isinstance(table, Mapping):
            return cls()
        return cls(**{k: v for k, v in table.items() if k in cls.keys() and v is not None})

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.keys()}
        data["trigger_metadata"] = dict(self.trigger_metadata)
        return data


# -- one test of one metric ----------------------------------------------------------------------
@dataclass(frozen=True)
class TestResult:
    """One test of one metric: everything needed to check the verdict by hand."""

    __test__ = False  # not a pytest test class

    name: str
    method: str
    inputs: dict[str, Any]
    statistic: float | None
    p_value: float | None
    interval: tuple[float | None, float | None] | None  # a bound that is not finite is stored as None
    threshold: str
    verdict: str  # a TestVerdict, or "" while a test is being judged
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = list(self.interval) if self.interval is not None else None
        data["verdict"] = str(self.verdict)
        return jsonable(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TestResult":
        """A test as stored in ``findings.json`` (missing fields read as empty)."""
        interval = data.get("interval")
        verdict = data.get("verdict") or ""
        return cls(
            name=str(data.get("name", "")), method=str(data.get("method", "")),
            inputs=dict(data.get("inputs") or {}), statistic=data.get("statistic"), p_value=data.get("p_value"),
            interval=(_bound(interval[0]), _bound(interval[1])) if isinstance(interval, (list, tuple))
            and len(interval) == 2 else None,
            threshold=str(data.get("threshold", "")),
            verdict=TestVerdict(verdict) if verdict in TestVerdict._value2member_map_ else str(verdict),
            detail=str(data.get("detail", "")), extra=dict(data.get("extra") or {}),
        )

    def describe(self) -> str:
        parts = [f"{self.name}: {self.verdict}", self.detail]
        if self.p_value is not None:
            parts.append(f"p={format_p(self.p_value)}")
        low, high = self.interval or (None, None)
        if low is not None and high is not None:
            parts.append(f"interval [{format_p(low)}, {format_p(high)}]")
        parts.append(f"threshold: {self.threshold}")
        return "; ".join(p for p in parts if p)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, tuples and non-finite floats made JSON-safe (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, (bool, str)) or value is None:
        return value
    if hasattr(value, "item") and hasattr(value, "dtype"):
        value = value.item()  # a numpy scalar: numpy stays out of the foundation's imports
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None  # JSON has no NaN; times keep every digit
    return value


# -- the findings --------------------------------------------------------------------------------
FINDINGS_SCHEMA_VERSION = 1
FINDINGS_KIND = "scalefinder-findings"


@dataclass(frozen=True)
class Recommendation:
    """The metric to scale on and its target, with how it was found and the policies to apply.

    Both ways of finding a target (a fitted line below saturation, or the backlog one task clears
    within the acceptable latency) produce this, so the findings hold the same fields either way.
    """

    metric: str
    label: str
    target: float
    target_interval: tuple[float, float]
    unit: str
    headroom: float
    target_rate_per_task_rps: float
    saturation_value: float | None
    value_at_capacity: float | None
    capped: bool  # the fitted value was lowered to stay below the value at capacity and saturation
    fitted: Mapping[str, Any] | None  # the fitted line's own target and interval, before the caps
    method: str
    aws_metric: Mapping[str, Any]
    aws_target_value: float
    step_scaling: Mapping[str, Any]
    policies: Mapping[str, Any]
    pattern: str

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["target_interval"] = list(self.target_interval)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recommendation":
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        interval = values["target_interval"] or (values["target"], values["target"])
        values["target_interval"] = (interval[0], interval[1])
        return cls(**values)


@dataclass(frozen=True)
class Findings:
    """``findings.json``: the answer, with everything it rests on.

    The answer itself is typed (the verdict, the headline, the recommendation, why it is
    inconclusive); the evidence stays in the nested mappings the report shows, each documented
    in docs/findings.md. ``from_dict`` refuses other files, newer schema versions and unknown
    verdicts; ``to_dict`` writes the file's keys in their documented order.
    """

    tool_version: str | None
    run: Mapping[str, Any]
    verdict: Verdict
    headline: str
    recommendation: Recommendation | None
    capacity: Mapping[str, Any]
    pattern: Mapping[str, Any]
    bottleneck: Mapping[str, Any] | None
    knee: Mapping[str, Any] | None
    steps: tuple[Mapping[str, Any], ...]
    metrics: tuple[Mapping[str, Any], ...]
    warnings: tuple[str, ...]
    inconclusive_reasons: tuple[str, ...] = ()
    next_steps: tuple[str, ...] = ()

    REQUIRED_KEYS = ("schema_version", "verdict", "recommendation", "capacity", "pattern", "metrics")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": FINDINGS_SCHEMA_VERSION,
            "kind": FINDINGS_KIND,
            "tool_version": self.tool_version,
            "run": dict(self.run),
            "verdict": self.verdict,
            "headline": self.headline,
            "recommendation": self.recommendation.to_dict() if self.recommendation else None,
            "capacity": dict(self.capacity),
            "pattern": dict(self.pattern),
            "bottleneck": self.bottleneck,
            "knee": self.knee,
            "steps": list(self.steps),
            "metrics": list(self.metrics),
            "warnings": list(self.warnings),
            "inconclusive": {"reasons": list(self.inconclusive_reasons), "next_steps": list(self.next_steps)},
        }

    @classmethod
    def check(cls, data: Any, *, source: str) -> None:
        """Refuse what is not findings this version can read, with one line naming ``source``."""
        if not isinstance(data, dict) or data.get("kind", FINDINGS_KIND) != FINDINGS_KIND:
            raise RunDirectoryError(f"{source} is not a scalefinder findings file")
        check_schema_version(data.get("schema_version"), FINDINGS_SCHEMA_VERSION, source=source, what="findings")
        missing = [key for key in cls.REQUIRED_KEYS if key not in data]
        if missing:
            raise RunDirectoryError(f"{source} lacks {', '.join(missing)}")
        if data["verdict"] not in Verdict._value2member_map_:
            raise RunDirectoryError(f"{source} has an unknown verdict {data['verdict']!r}")
        problem = _findings_shape_problem(data)
        if problem:
            # every reader (report, gate, runs) relies on these shapes: a damaged file is refused
            # here, once, rather than crashing one renderer or passing the gate on nonsense
            raise RunDirectoryError(f"{source} is damaged: {problem}")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "findings.json") -> "Findings":
        cls.check(data, source=source)
        recommendation = data.get("recommendation")
        inconclusive = data.get("inconclusive") or {}
        return cls(
            tool_version=data.get("tool_version"), run=MappingProxyType(dict(data.get("run") or {})),
            verdict=Verdict(data["verdict"]), headline=str(data.get("headline") or ""),
            recommendation=Recommendation.from_dict(recommendation) if isinstance(recommendation, dict) else None,
            capacity=MappingProxyType(dict(data.get("capacity") or {})),
            pattern=MappingProxyType(dict(data.get("pattern") or {})),
            bottleneck=data.get("bottleneck"), knee=data.get("knee"),
            steps=tuple(data.get("steps") or ()), metrics=tuple(data.get("metrics") or ()),
            warnings=tuple(str(w) for w in data.get("warnings") or ()),
            inconclusive_reasons=tuple(str(r) for r in inconclusive.get("reasons") or ()),
            next_steps=tuple(str(n) for n in inconclusive.get("next_steps") or ()),
        )


def _findings_shape_problem(data: Mapping[str, Any]) -> str | None:
    """What in ``data`` does not have the shape findings.json documents, or None."""
    problem = _shape_problem(data, "", {
        "capacity": dict, "pattern": dict, "metrics": list, "run": (dict, None), "inconclusive": (dict, None),
        "knee": (dict, None), "bottleneck": (dict, None), "steps": (list, None), "warnings": (list, None),
        "headline": (str, None), "recommendation": (dict, None)})
    if problem:
        return problem
    capacity = data["capacity"]
    problem = _shape_problem(capacity, "capacity.", {
        "per_task_rps": NUMBER_OR_NONE, "service_rps": NUMBER_OR_NONE, "tasks": (int, None),
        "per_task_rps_interval": (list, None), "doubling": (dict, None), "tasks_for_peak": (dict, None),
        "slo": (dict, None)})
    if problem:
        return problem
    for index, metric in enumerate(data["metrics"]):
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            return "an entry of metrics is not an object with a name"
        problem = _shape_problem(metric, f"metrics[{index}].", {
            "label": (str, None), "unit": (str, None), "verdict": (str, None), "reasons": (list, None),
            "tests": (list, None), "step_values": (list, None), "fit": (dict, None)})
        if problem:
            return problem
        if any(not isinstance(entry, dict) for entry in (metric.get("tests") or []) + (metric.get("step_values") or [])):
            return f"metrics[{index}] has a test or step value that is not an object"
    if any(not isinstance(step, dict) for step in data.get("steps") or ()):
        return "an entry of steps is not an object"
    recommendation = data["recommendation"]
    if recommendation is None:
        return None
    problem = _shape_problem(recommendation, "recommendation.", {
        "metric": str, "target": NUMBER, "label": (str, None), "unit": (str, None), "target_interval": (list, None),
        "policies": (dict, None), "step_scaling": (dict, None), "aws_metric": (dict, None)})
    if problem:
        return problem
    interval = recommendation.get("target_interval")
    if interval is not None and (len(interval) != 2 or any(_not_number(v) for v in interval)):
        return "recommendation.target_interval is not two numbers"
    return None


NUMBER = "number"
NUMBER_OR_NONE = "number or null"


def _shape_problem(table: Mapping[str, Any], prefix: str, expected: Mapping[str, Any]) -> str | None:
    """The first key of ``table`` whose value is not of its expected kind: a type, a tuple of
    types with None standing for "absent or null", or NUMBER / NUMBER_OR_NONE."""
    names = {dict: "an object", list: "a list", str: "text", int: "a whole number"}
    for key, kinds in expected.items():
        value = table.get(key)
        if kinds == NUMBER or kinds == NUMBER_OR_NONE:
            if (value is not None or kinds == NUMBER) and _not_number(value):
                return f"{prefix}{key} is not a number"
            continue
        allowed = kinds if isinstance(kinds, tuple) else (kinds,)
        if value is None and None in allowed:
            continue
        types = tuple(k for k in allowed if k is not None)
        if isinstance(value, bool) or not isinstance(value, types):
            what = " or ".join(names[k] for k in types) + (" or null" if None in allowed else "")
            return f"{prefix}{key} is not {what}"
    return None


# -- one step of the run --------------------------------------------------------------------------
@dataclass(frozen=True)
class StepRow:
    """One row of ``steps.csv``: a constant-rate step as the run side measured and judged it.

    The fields, in order, are the file's columns (``scalefinder.core.rundir.STEP_COLUMNS``).
    Latencies count from each arrival's scheduled time, over the step's measured window (after
    ``warmup_s``); ``sent`` includes failed requests and ``dropped`` counts the arrivals never
    sent because the in-flight cap was reached.
    """

    step_id: int  # 0, 1, 2 ... in the order run
    phase: str | None  # ramp | refine | replay | beyond | recovery (a probe after an aborted step)
    tasks: int | None  # task count during the step
    offered_rps: float  # the constant arrival rate the step offered
    start_unix_s: float
    end_unix_s: float
    warmup_s: float  # seconds at the start the run side considers warm-up
    achieved_rps: float  # successful completions per second in the measured window
    sent: int
    completed: int
    failures: int
    dropped: int
    late: int  # arrivals sent later than their schedule by more than the lateness tolerance
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    error_kinds: str  # JSON object: kind -> count
    generator_cpu_pct: float  # load generator CPU, % of one core, max over its processes
    valid: bool  # false when the generator, not the target, limited the step
    invalid_reason: str | None
    slo_met: bool
    end_reason: str  # held | steady | slo_breach | abort | interrupted | retried | generator_stall
    # Added to schema 1 after runs had been recorded with it: a reader fills it with an empty
    # value when an older run lacks it (see ``OPTIONAL_STEP_COLUMNS``).
    slo_latency_ms: float | None  # latency at the SLO's own percentile (any percentile, e.g. 99.9)

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def error_pct(self) -> float:
        """Failed or dropped arrivals as a percentage of all of them (0 for a step without any)."""
        return slos.error_pct(self.failures, self.dropped, self.sent) or 0.0

    def judged(self, slo: Slo) -> bool | None:
        """Whether this step met ``slo`` by the shared rule (None: it cannot be told)."""
        return slo.met(self.slo_latency_ms, self.failures, self.dropped, self.sent)

    def to_row(self) -> dict[str, Any]:
        """The row as ``steps.csv`` holds it."""
        return asdict(self)


# -- the run manifest ----------------------------------------------------------------------------
RUN_SCHEMA_VERSION = 1
RUN_KIND = "scalefinder-run"


@dataclass(frozen=True)
class RunManifest:
    """``manifest.json`` of a run directory, as the read side sees it.

    The entries every reader needs are typed fields; the tables the run side records for people
    (the resolved profile, the target, the environment, the sources) stay mappings, read-only,
    and ``data`` keeps the whole file so that a renderer can show what this version does not
    model. ``from_dict`` refuses other kinds of file and newer schema versions, and brings an
    older one up to date.
    """

    run_id: str
    status: str
    status_reason: str | None
    started_utc: str | None
    finished_utc: str | None
    pid: int | None
    slo: Slo | None
    profile: Mapping[str, Any]
    target: Mapping[str, Any]
    environment: Mapping[str, Any]
    capacity: Mapping[str, Any]
    sources: Mapping[str, Any]
    generator: Mapping[str, Any]
    phases: tuple[Mapping[str, Any], ...]
    warnings: tuple[str, ...]
    data: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "manifest.json") -> "RunManifest":
        if not isinstance(data, dict) or data.get("kind") != RUN_KIND:
            raise RunDirectoryError(f"{source} is not a scalefinder run manifest")
        check_schema_version(data.get("schema_version"), RUN_SCHEMA_VERSION, source=source, what="run")
        data = _upgrade_run_manifest(data)
        problem = _shape_problem(data, "", {
            "run_id": (str, None), "status": (str, None), "status_reason": (str, None), "started_utc": (str, None),
            "finished_utc": (str, None), "profile": (dict, None), "target": (dict, None),
            "environment": (dict, None), "capacity": (dict, None), "sources": (dict, None),
            "generator": (dict, None), "slo": (dict, None), "phases": (list, None), "warnings": (list, None)})
        if problem:
            raise RunDirectoryError(f"{source} is damaged: {problem}")

        def table(name: str) -> Mapping[str, Any]:
            value = data.get(name)
            return MappingProxyType(value) if isinstance(value, dict) else MappingProxyType({})

        profile = table("profile")
        try:  # an unusable SLO is reported by the reader that needs one (the analysis)
            slo = Slo.from_mapping(data.get("slo") or profile.get("slo"))
        except InputError:
            slo = None
        pid = data.get("pid")
        return cls(
            run_id=str(data.get("run_id") or ""), status=str(data.get("status")),
            status_reason=data.get("status_reason"), started_utc=data.get("started_utc"),
            finished_utc=data.get("finished_utc"), pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            slo=slo,
            profile=profile, target=table("target"), environment=table("environment"), capacity=table("capacity"),
            sources=table("sources"), generator=table("generator"),
            phases=tuple(p for p in data.get("phases") or () if isinstance(p, dict)),
            warnings=tuple(str(w) for w in data.get("warnings") or ()), data=MappingProxyType(data),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as read (upgraded), ready to be written back."""
        return dict(self.data)

    @property
    def profile_name(self) -> str | None:
        return self.profile.get("name")

    @property
    def analysis_options(self) -> AnalysisOptions:
        """The profile's ``[analysis]`` table (defaults where the profile was silent)."""
        try:
            return AnalysisOptions.from_mapping(self.profile.get("analysis"))
        except ModelError as exc:
            raise RunDirectoryError(f"the manifest's profile has a damaged [analysis] table: {exc}") from None

    @property
    def kubernetes_settings(self) -> KubernetesSettings:
        """The profile's ``[kubernetes]`` table (empty for a run recorded before there was one)."""
        try:
            return KubernetesSettings.from_mapping(self.profile.get("kubernetes"))
        except ModelError as exc:
            raise RunDirectoryError(f"the manifest's profile has a damaged [kubernetes] table: {exc}") from None

    def gate_criteria(self) -> GateCriteria:
        """The profile's ``[gate]`` table; raises when it is not one (only the gate needs it)."""
        return GateCriteria.from_mapping(self.profile.get("gate"), source="the profile's [gate] table")

    @property
    def initial_tasks(self) -> Any:
        """The task count the profile declared (as recorded; the analysis checks it)."""
        return self.capacity.get("initial_tasks")

    @property
    def target_kind(self) -> str | None:
        return self.target.get("kind")

    @property
    def cgroup_mode(self) -> str | None:
        return self.environment.get("cgroup_mode")


def check_schema_version(version: Any, supported: int, *, source: str, what: str) -> None:
    """Refuse a file without an integer schema version or written by a newer scalefinder."""
    if not isinstance(version, int) or isinstance(version, bool):
        raise RunDirectoryError(f"{source} has no integer schema_version")
    if version > supported:
        raise RunDirectoryError(
            f"{source} was written by a newer scalefinder ({what} schema {version}; this version reads "
            f"up to {supported}). Upgrade scalefinder to read it."
        )


def _upgrade_run_manifest(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older manifest up to the current schema one version at a time (none yet)."""
    return data


# -- helpers -------------------------------------------------------------------------------------
def _not_number(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)


def _bound(value: Any) -> float | None:
    """One end of a stored interval: a bound that was not finite is stored as null."""
    return None if value is None else float(value)


def _whole(value: Any) -> Any:
    """A float holding a whole number (JSON has no integers of its own) as an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def format_p(value: float) -> str:
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
