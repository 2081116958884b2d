"""Bottleneck and pattern: which resource runs out first, and which of the guide's patterns fits.

A metric is a *candidate* when it tracks demand (rank test) and is proportional to capacity
(equivalence test), and is not disqualified by growing with time or sitting flat near its
limit. Among candidates with a known limit, the *exhausted* resource is one that flattens at a
high level (at least 60% of its limit) or reaches its limit or crashes there; the first to do
so is the bottleneck. When nothing with a known limit runs out at the knee, the limit is
outside the measured resources (a worker pool, a downstream connection pool, a lock), and
request concurrency, a queue's backlog or the request rate per task is the metric that sees it.
When capacity does not grow with the task count, no task-level metric can scale the service.
A queue's backlog that is empty below capacity and grows past it (``backlog_growth``) makes the
service a job processor, scaled on backlog per task whatever else ran out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scalefinder.analysis.properties import FAIL, INCONCLUSIVE, PASS, TestResult
from scalefinder.core import catalog
from scalefinder.core.models import RunManifest

HIGH_LEVEL = 0.6  # a plateau below 60% of the limit is not a resource running out
# "The limit is outside the task" is claimed only when every resource with a limit stood below
# this share of it at the knee: between it and HIGH_LEVEL a resource is not shown to have run
# out, but not shown clear either (one core of two, a noisy step), and the answer stays open.
CLEAR_LEVEL = 0.45
QUEUE_BACKLOGS = (catalog.QUEUE_BACKLOG, catalog.QUEUE_BACKLOG_PER_TASK)

LABELS = {
    "cpu_utilization": "Average CPU utilization",
    "memory_utilization": "Average memory utilization",
    "memory_used_mib": "Memory used",
    "concurrency_per_task": "Average concurrency per task",
    "requests_per_task": "Requests per task",
    "queue_backlog": "Queue backlog",
    "queue_backlog_per_task": "Queue backlog per task",
    "network_rx_bytes_per_s": "Network received",
    "network_tx_bytes_per_s": "Network sent",
    "storage_read_bytes_per_s": "Storage read",
    "storage_write_bytes_per_s": "Storage written",
}

PATTERNS = {
    "cpu_bound": "Efficient CPU-bound server",
    "memory_bound": "Efficient memory-bound server",
    "memory_not_freed": "Server that does not free memory after a request",
    "worker_based": "Worker-based server",
    "waiting": "Waiting server (bounded by a downstream)",
    "gc_runtime": "Java or other garbage-collected runtime",
    "job_processor": "Job processor",
    "shared_bottleneck": "Shared bottleneck outside the tasks",
    "unknown": "No known pattern",
}


@dataclass(frozen=True)
class Decision:
    verdict: str
    metric: str | None
    pattern: dict[str, Any]
    bottleneck: dict[str, Any]
    inconclusive_reasons: tuple[str, ...] = ()
    next_steps: tuple[str, ...] = ()
    evidence: tuple[str, ...] = field(default_factory=tuple)


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def is_queue_backlog(name: str) -> bool:
    return name in QUEUE_BACKLOGS


def metric_verdict(tests: dict[str, TestResult]) -> tuple[str, list[str]]:
    """(verdict, plain-language reasons) of one metric from its tests."""
    demand, prop, ratio = tests["demand_correlation"], tests["proportionality"], tests["capacity_ratio"]
    backlog = tests.get("backlog_growth")
    if backlog is not None and backlog.verdict == PASS:
        # A queue near zero below capacity and unbounded past it defeats the rank and equivalence
        # tests (a flat zero, then a jump), yet it is the clearest saturation signal there is.
        return "candidate", [backlog.detail, demand.detail, prop.detail]
    trend, flat = tests["time_trend"], tests["flat_near_limit"]
    # The ratio test is the guide's own check (twice the tasks, half the value); when it fails,
    # a passing line fit does not overrule it: the metric did not fall with more tasks.
    proportional = ratio.verdict != FAIL and (prop.verdict == PASS or (prop.verdict == INCONCLUSIVE
                                                                       and ratio.verdict == PASS))
    not_proportional = prop.verdict == FAIL or ratio.verdict == FAIL
    failures = []
    if flat.verdict == FAIL:
        failures.append(flat.detail)
    if trend.verdict == FAIL:
        failures.append(f"follows time, not load: {trend.detail}")
    if demand.verdict == FAIL:
        failures.append(demand.detail)
    if not_proportional:
        failures.append(prop.detail if prop.verdict == FAIL else f"{ratio.detail} (although {prop.detail})")
    if failures:
        return "rejected", failures + _supporting(tests, exclude_failed=True)
    reasons = [demand.detail, prop.detail]
    if ratio.verdict != INCONCLUSIVE:
        reasons.append(ratio.detail)
    reasons.append(tests["saturation"].detail)
    if demand.verdict == INCONCLUSIVE or not proportional:
        return "inconclusive", reasons
    return "candidate", reasons


def _supporting(tests: dict[str, TestResult], exclude_failed: bool) -> list[str]:
    return [t.detail for name, t in tests.items()
            if name in ("demand_correlation", "proportionality") and not (exclude_failed and t.verdict == FAIL)]


def decide(metric_data, results, verdicts, knee, doubling, capacity, first_steps, manifest) -> Decision:
    candidates = [name for name, (verdict, _) in verdicts.items() if verdict == "candidate"]
    if doubling.get("verdict") == "does_not_scale":
        return _shared(results, candidates, doubling)
    if catalog.QUEUE_BACKLOG_PER_TASK in candidates and _backlog_passed(results, catalog.QUEUE_BACKLOG_PER_TASK):
        return _job_processor(metric_data, results, knee)
    undecided_queue = _undecided_backlog(results)
    if undecided_queue is not None:
        # A job processor is scaled on its queue whatever else runs out, so a queue that might
        # have overflowed leaves every other answer a guess.
        return undecided_queue
    vcpus = _vcpus(manifest)
    exhausted = _exhausted(metric_data, results, candidates, knee, vcpus)
    undecided = _possibly_exhausted(metric_data, results, verdicts, knee, vcpus,
                                    exclude={item[0] for item in exhausted})
    if exhausted:
        name, rate, kind, span = exhausted[0]
        bottleneck = _bottleneck(name, rate, knee, f"{label(name)} {kind} at {rate:.3g} req/s per task", span)
        if bottleneck["aligned_with_knee"] is False:
            return _misaligned(name, rate, kind, knee, bottleneck)
        earlier = [u for u in undecided if u[1] is not None and u[1] < rate * 0.95]
        if earlier:
            return _undecided_resources(metric_data, earlier, knee, bottleneck,
                                        f"{label(name)} {kind}, but another resource may have run out first")
        tied = [other for other, other_rate, _, other_span in exhausted[1:]
                if _bottleneck(other, other_rate, knee, "", other_span)["aligned_with_knee"]]
        tied += [u[0] for u in undecided if u[2]]
        # A resource rejected as a scaling metric (it grows with time, say) may still have run
        # out at this knee; the tie is about what ran out, so it is named too, with why it is
        # not the metric to scale on.
        tied_rejected = [u[0] for u in _possibly_exhausted(metric_data, results, verdicts, knee, vcpus,
                                                            exclude={name, *tied}, include_rejected=True)
                         if verdicts[u[0]][0] == "rejected" and _aligned_if_known(u[0], u[1], knee)]
        tied += tied_rejected
        pattern = _pattern_for(name, verdicts, results)
        evidence = [f"{label(name)} {kind} at {rate:.3g} req/s per task"] + _pattern_evidence(pattern, verdicts, results)
        if tied:
            evidence.append(_tie_note(name, tied, metric_data, knee,
                                      {other: verdicts[other][1][0] for other in tied_rejected if verdicts[other][1]}))
            bottleneck["evidence"] = f"{bottleneck['evidence']}; tied with {', '.join(label(t) for t in tied)}"
        bottleneck["tied_with"] = tied
        return Decision("recommended", name, {"name": pattern, "label": PATTERNS[pattern], "evidence": evidence},
                        bottleneck, evidence=tuple(evidence))
    # Before answering "the limit is outside the task", every resource with a known limit must be
    # shown not to have run out: one rejected as a scaling metric (it grows with time, say) may
    # still be what ran out.
    undecided += _possibly_exhausted(metric_data, results, verdicts, knee, vcpus,
                                     exclude={u[0] for u in undecided}, include_rejected=True, share=CLEAR_LEVEL)
    if undecided:
        return _undecided_resources(metric_data, undecided, knee, _bottleneck(None, None, knee, ""),
                                    "a resource with a known limit may be the bottleneck, but the run does not settle it")
    return _outside_the_task(metric_data, results, verdicts, candidates, knee, first_steps)


def _vcpus(manifest: RunManifest) -> float | None:
    """vCPUs of one task (1024 CPU units to a vCPU), when the run recorded its reservation."""
    units = manifest.target.get("cpu_units")
    return float(units) / 1024.0 if isinstance(units, (int, float)) and units > 0 else None


def _one_core(name: str, level: float, vcpus: float | None) -> bool:
    """A single-threaded process saturates one vCPU: on a task of N vCPUs its CPU utilization
    flattens at 100/N percent, far below the 60% that marks an exhausted resource."""
    if name != catalog.CPU_UTILIZATION or vcpus is None or vcpus < 1.5:
        return False
    core = 100.0 / vcpus
    return 0.85 * core <= level <= 1.1 * core


def _tie_note(name: str, tied: list[str], metric_data, knee, not_scaling: dict[str, str] | None = None) -> str:
    levels = []
    for other in [name, *tied]:
        value = _value_at_knee(metric_data, other, knee)
        if value is not None:
            levels.append(f"{label(other)} {value:.3g}")
    note = (f"tie: {', '.join(label(t) for t in [name, *tied])} all ran out at the knee within the resolution of the "
            f"steps ({'; '.join(levels)} at the last step that met the SLO); {label(name)} is chosen because it "
            "crashed or flattened first on the point estimates, and a policy on either would act at about the same "
            "load: watch both")
    for other, why in (not_scaling or {}).items():
        note += f"; {label(other)} is not a scaling metric here ({why})"
    return note


def _aligned_if_known(name: str, rate: float | None, knee) -> bool:
    """True unless the resource is known to have run out away from the knee."""
    return rate is None or _bottleneck(name, rate, knee, "")["aligned_with_knee"] is not False


def _value_at_knee(metric_data, name: str, knee) -> float | None:
    data = metric_data.get(name)
    if data is None or knee is None or knee.last_good_step is None:
        return None
    row = data.steps[data.steps["step_id"] == knee.last_good_step]
    return float(row["value"].iloc[0]) if len(row) else None


def _knee_level(metric_data, name: str, knee, sat) -> float | None:
    """The metric's level at the knee: the higher of the last good step's value and the line
    fitted before the knee read there, so one noisy step cannot hide a resource near its limit."""
    values = (_value_at_knee(metric_data, name, knee), sat.extra.get("level_at_knee"))
    return max((v for v in values if v is not None), default=None)


def _possibly_exhausted(metric_data, results, verdicts, knee, vcpus, exclude, include_rejected: bool = False,
                        share: float = HIGH_LEVEL) -> list[tuple[str, float | None, bool, str, tuple]]:
    """Resources with a known limit that may have run out, but whose tests could not show it:
    (name, per-task rate, near the knee, why, the tests left open). A metric not rejected for a cause, whose
    saturation test is undecided or passed, and that stood at a high share of its limit (or at
    one vCPU) at the last step that met the SLO. Picking another metric over one of these would
    be a guess, so the verdict waits for the run that decides. Still rising past the knee does
    not clear it: latency can break from queueing before a resource is full. ``include_rejected`` also counts
    metrics rejected as scaling metrics for a reason other than ignoring load."""
    found = []
    knee_rate = knee.last_good_per_task_rps if knee else None
    for name, (verdict, _) in verdicts.items():
        info = catalog.info(name)
        if info.limit is None or name in exclude:
            continue
        tests = results[name]
        if verdict == "rejected" and (not include_rejected or tests["flat_near_limit"].verdict == FAIL
                                      or tests["demand_correlation"].verdict == FAIL):
            continue  # a heap reserved up front, or a level that ignores load, is not running out
        sat = results[name]["saturation"]
        level = _knee_level(metric_data, name, knee, sat)
        plateau = sat.extra.get("plateau_value") if sat.extra.get("kind") == "plateau" else None
        # a plateau at one vCPU's share counts even when noise put the knee's own step above it
        single_core = any(_one_core(name, v, vcpus) for v in (level, plateau) if v is not None)
        if level is None or not (level >= share * info.limit or single_core):
            continue
        rate = sat.extra.get("breakpoint_rps") if sat.verdict == PASS else knee_rate
        open_tests = [t for t in ("saturation", "demand_correlation", "proportionality", "capacity_ratio")
                      if tests[t].verdict == INCONCLUSIVE and not (t == "capacity_ratio"
                                                                   and tests["proportionality"].verdict == PASS)]
        if verdict == "rejected":
            open_tests.append("rejected")
        found.append((name, rate, True, _undecided_why(name, level, info.limit, tests, verdicts[name], open_tests),
                      tuple(open_tests)))
    return found


def _undecided_why(name, level, limit, tests, verdict, open_tests) -> str:
    lead = f"{label(name)} stood at about {level:.3g} of {limit:g} at the last step that met the SLO"
    parts = []
    saturation = tests["saturation"]
    if "saturation" in open_tests:
        parts.append(f"whether it ran out is open ({saturation.detail})")
    elif saturation.verdict == FAIL:
        parts.append(f"it kept rising past the knee, as a resource does when latency breaks from queueing before "
                     f"it is full ({saturation.detail})")
    else:
        parts.append(f"it ran out ({saturation.detail})")
    for test in ("demand_correlation", "proportionality", "capacity_ratio"):
        if test in open_tests:
            parts.append(f"as a scaling metric its {test.replace('_', ' ')} is undecided ({tests[test].detail})")
    if "rejected" in open_tests:
        parts.append(f"it is not a scaling metric ({verdict[1][0] if verdict[1] else 'rejected'}), but what ran "
                     "out is still unknown")
    return f"{lead}; " + "; ".join(parts)


def _undecided_resources(metric_data, undecided, knee, bottleneck, lead: str) -> Decision:
    """Inconclusive, naming each resource that may have run out and the run that would settle it."""
    knee_rate = knee.last_good_per_task_rps if knee else None
    breach = (knee.slo_breach_rps / knee.tasks) if knee and knee.slo_breach_rps else None
    reasons = [f"{lead}: " + "; ".join(u[3] for u in undecided)]
    open_tests = {t for u in undecided for t in u[4]}
    names = ", ".join(label(u[0]) for u in undecided)
    steps = []
    if "saturation" in open_tests:
        where = f"past {breach:.3g} req/s per task" if breach else "past the knee"
        steps.append(f"run at least two more steps {where} (raise ramp.max_rps, or let the 'beyond' phase at twice "
                     f"the tasks go further) so the curve of {names} past the knee shows whether it flattens")
    if "demand_correlation" in open_tests and knee_rate is not None:
        steps.append(f"add steps below {knee_rate:.3g} req/s per task (a smaller ramp.step_rps) so the rank test "
                     "has at least 6 steps below capacity")
    if open_tests & {"proportionality", "capacity_ratio"}:
        steps.append("replay more rates at twice the tasks (ramp.replay_steps) and hold each longer: with 60-second "
                     "metrics, holds of at least 5 minutes give 4 or more samples per step after the warm-up")
    if not steps:
        steps.append("collect the limiting resource's own gauge (a pool, a queue, connections) and run again")
    return Decision("inconclusive", None, {"name": "unknown", "label": PATTERNS["unknown"], "evidence": reasons},
                    {**bottleneck, "candidates": [u[0] for u in undecided]}, tuple(reasons), tuple(steps))


def _misaligned(name: str, rate: float, kind: str, knee, bottleneck) -> Decision:
    knee_rate = knee.last_good_per_task_rps
    reason = (f"{label(name)} {kind} at {rate:.3g} req/s per task, well before the SLO broke (last good step "
              f"{knee_rate:.3g} req/s per task): the service kept taking load after it ran out, so it is not what "
              "limits the service, and what does was not measured")
    step = ("check the metric's source and the task's reservation (a limit the service can run past is not a "
            "limit), and collect the limiting resource's own gauge (concurrency, a pool, a queue), then run again")
    return Decision("inconclusive", None, {"name": "unknown", "label": PATTERNS["unknown"], "evidence": [reason]},
                    bottleneck, (reason,), (step,))


def _undecided_backlog(results) -> Decision | None:
    """Inconclusive when a queue backlog was recorded but its overflow test could not decide."""
    for name in QUEUE_BACKLOGS:
        growth = results.get(name, {}).get("backlog_growth")
        if growth is None or growth.verdict != INCONCLUSIVE:
            continue
        reason = (f"{label(name)} was recorded, but whether the queue overflows past capacity is undecided "
                  f"({growth.detail}); if it does, the service is a job processor to scale on its backlog")
        step = ("hold each step long enough for several samples of the queue after the warm-up (with 60-second "
                "metrics, at least 5 minutes), or collect the queue's depth more often")
        return Decision("inconclusive", None, {"name": "unknown", "label": PATTERNS["unknown"], "evidence": [reason]},
                        {"metric": None, "saturation_rps": None, "aligned_with_knee": None, "evidence": reason,
                         "tied_with": []}, (reason,), (step,))
    return None


def _backlog_passed(results, name: str) -> bool:
    growth = results[name].get("backlog_growth")
    return growth is not None and growth.verdict == PASS


def _job_processor(metric_data, results, knee) -> Decision:
    """The guide's job processor: the queue's depth per task is the scaling metric."""
    name = catalog.QUEUE_BACKLOG_PER_TASK
    growth = results[name]["backlog_growth"]
    onset = growth.extra.get("onset_per_task_rps")
    evidence = [f"{label(name)}: {growth.detail}",
                "a growing queue means the backlog exceeds processing capacity; an empty one means spare capacity"]
    evidence += _utilization_at_knee(metric_data, knee)
    note = f"the queue starts to grow at {onset:.3g} req/s per task" if onset else growth.detail
    return Decision("recommended", name, {"name": "job_processor", "label": PATTERNS["job_processor"],
                                          "evidence": evidence},
                    _bottleneck(name, onset, knee, note), evidence=tuple(evidence))


def _exhausted(metric_data, results, candidates, knee, vcpus=None) -> list[tuple[str, float, str, tuple]]:
    """Candidates with a known limit that ran out, as (name, per-task rate, how, rate interval),
    earliest first."""
    found = []
    knee_rate = knee.last_good_per_task_rps if knee else None
    for name in candidates:
        info = catalog.info(name)
        if info.limit is None:
            continue
        tests = results[name]
        crash, sat = tests["crash_at_limit"], tests["saturation"]
        if crash.verdict == PASS and knee_rate is not None:
            found.append((name, knee_rate, f"reached its limit ({crash.statistic:.3g} of {info.limit:g}) and tasks "
                          "crashed", (knee_rate, knee_rate)))
            continue
        if sat.verdict != PASS:
            # Not shown to flatten, yet near its limit when latency broke: the guide's example of
            # a CPU-bound service whose latency breaks at 75% CPU, from queueing, before the CPU
            # is full. It is the resource closest to running out whether or not it flattened.
            level = _knee_level(metric_data, name, knee, sat)
            if level is None or knee_rate is None:
                continue
            # One vCPU's share is a single-threaded process's 100%. Still rising well past the
            # knee would rule that out, so only an open saturation test lets it count.
            if sat.verdict == INCONCLUSIVE and _one_core(name, level, vcpus):
                found.append((name, knee_rate, f"stood at about {level:.3g}% when the SLO broke, one of its {vcpus:g} "
                              "vCPUs (a single-threaded process is full there; whether it flattened past it is open)",
                              (knee_rate, knee_rate)))
                continue
            if level < HIGH_LEVEL * info.limit:
                continue
            how = (f"stood at about {level:.3g} of {info.limit:g} when the SLO broke and kept rising past it "
                   "(latency broke from queueing before it ran out)" if sat.verdict == FAIL else
                   f"stood at about {level:.3g} of {info.limit:g} when the SLO broke (whether it flattened "
                   "past it is open)")
            found.append((name, knee_rate, how, (knee_rate, knee_rate)))
            continue
        plateau = sat.extra.get("kind") == "plateau"
        level = (max(sat.extra.get("plateau_value") or 0.0, sat.extra.get("level_at_break") or 0.0) if plateau
                 else sat.extra.get("peak")) or 0.0
        single_core = plateau and _one_core(name, level, vcpus)
        if plateau and level < HIGH_LEVEL * info.limit and not single_core:
            continue
        rate = sat.extra.get("breakpoint_rps") if plateau else sat.extra.get("limit_reached_rps")
        rate = rate or knee_rate
        if rate is None:
            continue
        span = tuple(sat.extra.get("breakpoint_interval_rps") or (rate, rate)) if plateau else (rate, rate)
        if single_core:
            how = f"flattened at {level:.3g}%, one of its {vcpus:g} vCPUs (a single-threaded process)"
        elif plateau:
            how = f"flattened at {level:.3g} of {info.limit:g}"
        else:
            how = f"reached {level:.3g} of {info.limit:g}"
        found.append((name, float(rate), how, span))
    return sorted(found, key=lambda item: (0 if "crashed" in item[2] else 1, item[1]))


def _pattern_for(name: str, verdicts, results) -> str:
    if name == catalog.MEMORY_UTILIZATION:
        return "memory_bound"
    if name == catalog.CPU_UTILIZATION:
        memory = results.get(catalog.MEMORY_UTILIZATION)
        if memory is not None and memory["time_trend"].verdict == FAIL:
            return "memory_not_freed"
        if memory is not None and memory["flat_near_limit"].verdict == FAIL:
            return "gc_runtime"
        return "cpu_bound"
    return "unknown"


def _pattern_evidence(pattern: str, verdicts, results) -> list[str]:
    memory = results.get(catalog.MEMORY_UTILIZATION)
    if pattern == "memory_not_freed" and memory is not None:
        return [f"memory rejected: {memory['time_trend'].detail}"]
    if pattern == "gc_runtime" and memory is not None:
        return [f"memory rejected: {memory['flat_near_limit'].detail}"]
    if pattern == "cpu_bound" and memory is not None:
        return [f"memory: {verdicts[catalog.MEMORY_UTILIZATION][0]} ({verdicts[catalog.MEMORY_UTILIZATION][1][0]})"]
    return []


def _bottleneck(name: str | None, per_task_rate: float | None, knee, evidence: str,
                span: tuple | None = None) -> dict[str, Any]:
    """Where the bottleneck ran out, and whether that lines up with the knee: within about one
    step of the last step that met the SLO, using the breakpoint's interval where there is one."""
    knee_rate = knee.last_good_per_task_rps if knee else None
    aligned = None
    if per_task_rate is not None and knee_rate is not None and knee and knee.slo_breach_rps:
        step = (knee.slo_breach_rps - knee.last_good_rps) / knee.tasks
        window = max(step, 0.10 * knee_rate) * 1.5
        low, high = span if span else (per_task_rate, per_task_rate)
        aligned = bool(high >= knee_rate - window and low <= knee_rate + window)
    tasks = knee.tasks if knee else 1
    return {"metric": name, "saturation_rps": round(per_task_rate * tasks, 3) if per_task_rate else None,
            "aligned_with_knee": aligned, "evidence": evidence, "tied_with": []}


def _shared(results, candidates, doubling) -> Decision:
    evidence = [doubling["detail"]]
    for name in candidates:
        prop = results[name]["proportionality"]
        if prop.verdict == PASS:
            evidence.append(f"{label(name)} is proportional to the task count, yet capacity did not grow with it")
    evidence.append("the limit is shared by all tasks (a database, a downstream, a lock): adding tasks adds no capacity")
    return Decision(
        "no_task_level_metric", None,
        {"name": "shared_bottleneck", "label": PATTERNS["shared_bottleneck"], "evidence": evidence},
        {"metric": None, "saturation_rps": None, "aligned_with_knee": None, "evidence": evidence[0], "tied_with": []},
        evidence=tuple(evidence),
    )


def _outside_the_task(metric_data, results, verdicts, candidates, knee, first_steps) -> Decision:
    knee_rate = knee.last_good_per_task_rps if knee else None
    note = "nothing with a known limit (CPU, memory) ran out at the knee: the limit is outside those resources"
    # Concurrency sees a worker or connection pool directly; the request rate per task is the
    # guide's alternative for the same patterns (requests per target).
    for name in (catalog.CONCURRENCY_PER_TASK, catalog.REQUESTS_PER_TASK):
        if name not in candidates:
            continue
        pattern = "worker_based" if _rejects_at_breach(first_steps, knee) else "waiting"
        evidence = [note] + _utilization_at_knee(metric_data, knee) + [
            f"{label(name)} tracks demand and is proportional to the task count"]
        evidence += _worker_precondition(first_steps) if pattern == "worker_based" else []
        return Decision("recommended", name, {"name": pattern, "label": PATTERNS[pattern], "evidence": evidence},
                        _bottleneck(name, knee_rate, knee, note), evidence=tuple(evidence))
    pending = [n for n, (v, _) in verdicts.items() if v == "inconclusive"]
    reasons = ["no metric both tracks demand and is proportional to capacity"]
    if pending:
        reasons.append(f"undecided: {', '.join(pending)}")
    return Decision("inconclusive", None, {"name": "unknown", "label": PATTERNS["unknown"], "evidence": reasons},
                    _bottleneck(None, None, knee, note), tuple(reasons),
                    ("collect request concurrency per task (the load balancer's active requests) or an "
                     "application gauge of the limiting resource, then run again",))


def _rejects_at_breach(steps, knee) -> bool:
    """Worker pools with a bounded backlog reject (503) when full; a waiting server gets slow."""
    if knee is None or knee.slo_breach_step is None:
        return False
    row = steps[steps["step_id"] == knee.slo_breach_step]
    if row.empty:
        return False
    sent = float(row["sent"].iloc[0] or 0)
    return sent > 0 and float(row["failures"].iloc[0] or 0) / sent > 0.01


def _utilization_at_knee(metric_data, knee) -> list[str]:
    lines = []
    for name in (catalog.CPU_UTILIZATION, catalog.MEMORY_UTILIZATION):
        value = _value_at_knee(metric_data, name, knee)
        if value is not None:
            lines.append(f"{label(name)} was {value:.3g}% at the last step that met the SLO")
    return lines


def _worker_precondition(steps) -> list[str]:
    """The guide asks for mean latency close to p95 at low rates before scaling on concurrency."""
    good = steps[steps["slo_ok"]].sort_values("offered_rps")
    if good.empty or "mean_ms" not in good.columns:
        return []
    row = good.iloc[0]
    mean, p95 = float(row.get("mean_ms") or 0), float(row.get("p95_ms") or 0)
    if p95 <= 0:
        return []
    if mean >= 0.5 * p95:
        return [f"at low load the mean latency ({mean:.3g} ms) is close to p95 ({p95:.3g} ms), as concurrency scaling needs"]
    return [f"warning: at low load the mean latency ({mean:.3g} ms) is far below p95 ({p95:.3g} ms); the backlog "
            "may overflow before scaling reacts, so keep more headroom"]
