"""Load-generator fidelity: does scalefinder's engine send what it is asked to, and how far can it go?

Against a fast endpoint on 127.0.0.1 (``benchmarks/endpoint.py``) it offers a ladder of constant
arrival rates and prints, per step, offered and achieved rate, latency, late and dropped
arrivals, and the generator's CPU (all its processes) per 1,000 req/s. The ladder stops at the
first rate that is not sustained: achieved below 98% of offered, the step marked invalid (the
generator's own rule), or the SLO of the endpoint (p95 <= 250 ms, errors <= 1%) broken. It runs
the ladder for the engine in one process, for the engine with local workers (``--workers``), and
for plain Locust (FastHttpUser with constant_throughput, headless, in a subprocess) in the same
run, and prints the ratio of the maximum sustained rates. Usage:

    python -m benchmarks.generator_fidelity [--rates 10,20,50,...] [--hold-s 8] [--workers 2]
                                            [--skip-plain] [--out docs/benchmarks/generator_fidelity.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.experiments import REPO, load_average, machine, utc_now
from scalefinder.loadgen.engine.client import EngineProcess
from scalefinder.loadgen.engine.protocol import engine_config
from scalefinder.loadgen.engine.recorder import LoadRecorder, StepInfo
from scalefinder.loadgen.profile import RequestSpec, Slo, Workload
from scalefinder.core.errors import InfrastructureError
from scalefinder.core.models import StepRow

DEFAULT_RATES = (10, 20, 50, 100, 200, 300, 450, 650, 900, 1200, 1600, 2100, 2800, 3700, 5000)
SLO = Slo(percentile=95, latency_ms=250, error_budget_pct=1.0)
WORKLOAD = Workload(requests=(RequestSpec(name="fetch", path="/"),), max_in_flight=500, timeout_s=5,
                    late_tolerance_ms=25)
SUSTAINED_SHARE = 0.98
# Users of plain Locust each pace themselves at this rate at most, so the user count stays small.
PLAIN_USER_MAX_RPS = 5
DRAIN_S = 10


class Endpoint:
    """The fast endpoint in a child process, for the benchmark's lifetime."""

    def __enter__(self) -> "Endpoint":
        self.process = subprocess.Popen([sys.executable, "-m", "benchmarks.endpoint"], cwd=REPO,
                                        stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            self.process.kill()
            raise InfrastructureError("the benchmark endpoint did not start")
        self.url = f"http://127.0.0.1:{line[1]}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_s(self) -> float:
        return _cpu_s([self.process.pid])


def engine_ladder(url: str, rates: list[float], hold_s: float, warmup_s: float, workers: int) -> list[dict[str, Any]]:
    """Offer each rate for ``hold_s`` with scalefinder's engine; stop after the first unsustained step."""
    profile = _ProfileView(WORKLOAD)
    config = engine_config(profile, url, workers=workers, master_port=_free_port())
    rows = []
    with EngineProcess(config) as engine:
        recorder = LoadRecorder(SLO, WORKLOAD.late_tolerance_ms)
        for step_id, rate in enumerate(rates):
            recorder.begin_step(StepInfo(step_id, "ramp", 1, float(rate)))
            cpu_before, load_before = _cpu_s(engine.pids), load_average()
            start = time.time()
            engine.set_rate(step_id, float(rate))
            _pump(engine, recorder, lambda start=start: time.time() - start >= hold_s)
            end = time.time()
            cpu_used = _cpu_s(engine.pids) - cpu_before
            engine.pause()
            deadline = time.time() + WORKLOAD.timeout_s + DRAIN_S
            _pump(engine, recorder,
                  lambda step_id=step_id, deadline=deadline: step_id in recorder.drained or time.time() > deadline)
            summary = recorder.summarize(step_id, start, end, warmup_s, "held")
            recorder.forget(step_id)
            row = _engine_row(summary, cpu_used / (end - start) * 100, load_before)
            rows.append(row)
            print(_row_text("engine" if not workers else f"engine+{workers}w", row), flush=True)
            if not row["sustained"]:
                break
    return rows


class _ProfileView:
    """What ``engine_config`` reads from a profile: its workload."""

    def __init__(self, workload: Workload):
        self.workload = workload


def _pump(engine: EngineProcess, recorder: LoadRecorder, done) -> None:
    while not done():
        for message in engine.messages(time.monotonic() + 0.2):
            recorder.feed(message)


def _engine_row(summary: StepRow, cpu_pct_all: float, load_before: str) -> dict[str, Any]:
    offered, achieved = summary.offered_rps, summary.achieved_rps
    sent = summary.sent + summary.dropped
    sustained = (summary.valid and summary.slo_met and achieved >= SUSTAINED_SHARE * offered)
    return {"offered_rps": offered, "achieved_rps": round(achieved, 2), "achieved_share": round(achieved / offered, 4),
            "p50_ms": _round(summary.p50_ms), "p95_ms": _round(summary.p95_ms),
            "late_pct": round(100 * summary.late / sent, 2) if sent else 0.0,
            "dropped": summary.dropped, "failures": summary.failures,
            "busiest_process_cpu_pct": summary.generator_cpu_pct, "cpu_pct_all_processes": round(cpu_pct_all, 1),
            "cpu_pct_per_1000_rps": round(cpu_pct_all / achieved * 1000, 1) if achieved else None,
            "valid": summary.valid, "invalid_reason": summary.invalid_reason, "sustained": sustained,
            "load_average": load_before}


def plain_locust_ladder(url: str, rates: list[float], hold_s: float, warmup_s: float) -> list[dict[str, Any]]:
    """The same ladder with plain Locust, one headless subprocess per rate."""
    rows = []
    for rate in rates:
        row = _plain_locust_step(url, float(rate), hold_s, warmup_s)
        rows.append(row)
        print(_row_text("plain locust", row), flush=True)
        if not row["sustained"]:
            break
    return rows


def _plain_locust_step(url: str, rate: float, hold_s: float, warmup_s: float) -> dict[str, Any]:
    users = max(1, math.ceil(rate / PLAIN_USER_MAX_RPS))
    run_s = math.ceil(hold_s + 2)
    with tempfile.TemporaryDirectory(prefix="scalefinder-plain-") as folder:
        prefix = Path(folder) / "plain"
        argv = [sys.executable, "-m", "locust", "-f", str(REPO / "benchmarks" / "plain_locustfile.py"),
                "--headless", "-u", str(users), "-r", str(users), "-t", f"{run_s}s", "--host", url,
                "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5"]
        env = {**os.environ, "PLAIN_LOCUST_USER_RPS": repr(rate / users)}
        load_before = load_average()
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        try:
            time.sleep(1 + warmup_s)
            cpu_before, wall_before = _cpu_s([process.pid]), time.time()
            time.sleep(max(1.0, hold_s - warmup_s - 1))
            cpu_used, wall = _cpu_s([process.pid]) - cpu_before, time.time() - wall_before
            _, stderr = process.communicate(timeout=run_s + 30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        history = _read_history(Path(f"{prefix}_stats_history.csv"))
    achieved, failures, p50, p95 = _history_window(history, users, warmup_s)
    cpu_pct = cpu_used / wall * 100
    sustained = achieved >= SUSTAINED_SHARE * rate and failures == 0 and (p95 or 0) <= SLO.latency_ms
    return {"offered_rps": rate, "users": users, "achieved_rps": round(achieved, 2),
            "achieved_share": round(achieved / rate, 4), "p50_ms": p50, "p95_ms": p95, "late_pct": None,
            "dropped": None, "failures": failures, "busiest_process_cpu_pct": round(cpu_pct, 1),
            "cpu_pct_all_processes": round(cpu_pct, 1),
            "cpu_pct_per_1000_rps": round(cpu_pct / achieved * 1000, 1) if achieved else None,
            "valid": None, "invalid_reason": None, "sustained": sustained, "load_average": load_before,
            "locust_exit_code": process.returncode,
            "stderr_tail": stderr.strip().splitlines()[-1:] if process.returncode not in (0, 1) else []}


def _read_history(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as handle:
        return [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]


def _history_window(history: list[dict[str, str]], users: int, warmup_s: float) -> tuple[float, int, Any, Any]:
    """Rate from the cumulative request count, once every user runs and the warm-up is over."""
    full = [row for row in history if int(row["User Count"]) >= users]
    if len(full) < 2:
        return 0.0, 0, None, None
    first_time = int(full[0]["Timestamp"]) + warmup_s
    window = [row for row in full if int(row["Timestamp"]) >= first_time] or full
    first, last = window[0], window[-1]
    seconds = int(last["Timestamp"]) - int(first["Timestamp"])
    count = int(last["Total Request Count"]) - int(first["Total Request Count"])
    failures = int(last["Total Failure Count"])
    return (count / seconds if seconds > 0 else 0.0), failures, _number(last.get("50%")), _number(last.get("95%"))


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _row_text(who: str, row: dict[str, Any]) -> str:
    per_1000 = row["cpu_pct_per_1000_rps"]
    return (f"{who:<13} {row['offered_rps']:>7g} {row['achieved_rps']:>9.1f} {row['achieved_share'] * 100:>6.1f}% "
            f"{_text(row['p50_ms']):>7} {_text(row['p95_ms']):>7} {_text(row['late_pct']):>6} "
            f"{row['cpu_pct_all_processes']:>6.0f}% {_text(per_1000):>8} {row['load_average'].split()[0]:>5}  "
            f"{'ok' if row['sustained'] else 'NOT SUSTAINED ' + (row['invalid_reason'] or '')}")


def _text(value: Any) -> str:
    return "-" if value is None else f"{value:g}"


def max_sustained(rows: list[dict[str, Any]]) -> float | None:
    good = [row["offered_rps"] for row in rows if row["sustained"]]
    return max(good) if good else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default=",".join(str(rate) for rate in DEFAULT_RATES))
    parser.add_argument("--hold-s", type=float, default=8.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2, help="local workers for the distributed ladder (0: skip)")
    parser.add_argument("--skip-plain", action="store_true", help="do not run plain Locust")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "generator_fidelity.json")
    args = parser.parse_args(argv)
    rates = [float(rate) for rate in args.rates.split(",")]
    if not rates or min(rates) <= 0 or max(rates) > 5000 or not 2 <= args.hold_s <= 60 or args.warmup_s >= args.hold_s:
        parser.error("rates must be between 0 and 5000 req/s, hold 2-60 s, warm-up shorter than the hold")
    started = time.perf_counter()
    result: dict[str, Any] = {"kind": "generator_fidelity", "started_utc": utc_now(), "machine": machine(),
                              "load_average_start": load_average(), "hold_s": args.hold_s,
                              "warmup_s": args.warmup_s}
    print(f"{'generator':<13} {'offered':>7} {'achieved':>9} {'share':>7} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'late%':>6} {'CPU':>7} {'CPU/1k':>8} {'load':>5}")
    with Endpoint() as endpoint:
        endpoint_cpu = endpoint.cpu_s()
        result["engine"] = engine_ladder(endpoint.url, rates, args.hold_s, args.warmup_s, workers=0)
        if args.workers:
            result["engine_workers"] = engine_ladder(endpoint.url, rates, args.hold_s, args.warmup_s,
                                                     workers=args.workers)
            result["workers"] = args.workers
        if not args.skip_plain:
            result["plain_locust"] = plain_locust_ladder(endpoint.url, rates, args.hold_s, args.warmup_s)
        result["endpoint_cpu_s"] = round(endpoint.cpu_s() - endpoint_cpu, 1)
    summary = {name: max_sustained(result[name]) for name in ("engine", "engine_workers", "plain_locust")
               if name in result}
    result["max_sustained_rps"] = summary
    if summary.get("engine") and summary.get("plain_locust"):
        result["engine_to_plain_ratio"] = round(summary["engine"] / summary["plain_locust"], 3)
        # plain Locust still sustained the top of the ladder: its limit, so the ratio, is unknown
        result["engine_to_plain_ratio_is_upper_bound"] = summary["plain_locust"] == max(rates)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    result["load_average_end"] = load_average()
    for name, value in summary.items():
        capped = " (the top of the ladder: the limit is higher)" if value == max(rates) else ""
        print(f"max sustained rate, {name}: {_text(value)} req/s{capped}")
    if "engine_to_plain_ratio" in result:
        bound = "at most " if result["engine_to_plain_ratio_is_upper_bound"] else ""
        print(f"engine / plain Locust: {bound}{result['engine_to_plain_ratio']:.2f}")
    print(f"took {result['elapsed_s']:.0f} s, load average now {result['load_average_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if summary.get("engine") else 1


if __name__ == "__main__":
    sys.exit(main())
