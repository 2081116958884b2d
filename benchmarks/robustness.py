"""Robustness: the real analyzer on a family of synthetic services whose answer is known.

Each *class* is a synthetic service (``tests/synthetic.py``) with a stated truth: the verdict,
the metrics that are right, and for some classes one more thing the findings must say. Each
class is written as a run directory under a grid of settings — sampling regime, noise, number
of ramp steps, seed — analysed with ``analysis.analyzer.analyze_run`` exactly as ``scalefinder
analyze`` does, and judged:

- **right**: the verdict is the expected one, the metric is in the right set and the class's
  extra condition holds (``tie``: the bottleneck names the other resource in ``tied_with``;
  ``partial``: capacity doubling is judged ``partial``);
- **inconclusive**: the analyzer said ``inconclusive`` (not wrong: it declined to answer);
- **wrong**: anything else, a right metric without the extra condition included;
- **error**: the generator or the analysis raised; recorded with the exception, never fatal.

Settings: regimes ``1s`` (1-second samples, 20-s holds) and ``60s`` (1-minute CloudWatch-like
averages, 5-minute holds), relative noise of 5% or 15% per reported sample, ramps of 5, 6, 8 or
12 steps (``ramp_fractions``), and seeds; the seed also moves the run's start within its minute,
so the 60-s buckets straddle the steps by a different share in each. The ECS designs
(``ecs-7m-r4``, ``ecs-7m-r3``, ``ecs-5m-r4``, ``ecs-5m-r3``: 1-minute data, holds of 7 or 5
minutes ending on minute boundaries as the experiment ends them with a CloudWatch source, 4 or 3
replay steps, no beyond phase; ``ecs-7m-r4-beyond`` with one) are regimes too, for weighing an
ECS run's length against the answers it would lose; they are not in the default grid. One JSON
line per run is written as soon as it is known. Usage:

    python -m benchmarks.robustness [--classes cpu90,tie] [--regimes 1s,60s] [--cv 0.05,0.15]
                                    [--steps 5,6,8,12] [--seeds 20] [--jobs 2]
                                    [--out docs/benchmarks/robustness.jsonl] [--quick]
    python -m benchmarks.robustness --markdown [--out FILE.jsonl]

It is a measurement, not a test: the exit code is 0 whatever the outcomes (2 for a mistake in
the arguments).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from benchmarks.experiments import REPO, machine, utc_now
from tests.synthetic import DEFAULT_START_UNIX_S, ECS_REGIMES, REGIMES, ramp_fractions

DEFAULT_OUT = REPO / "docs" / "benchmarks" / "robustness.jsonl"
# The two regimes of the standing sweep, and the ECS designs compared for time to answer.
ALL_REGIMES = {**REGIMES, **ECS_REGIMES}
QUICK_OUT = Path(tempfile.gettempdir()) / "robustness-quick.jsonl"
DEFAULT_CV = (0.05, 0.15)
DEFAULT_STEPS = (5, 6, 8, 12)
DEFAULT_SEEDS = 20
QUICK = {"seeds": 3, "steps": (6, 8)}
OUTCOMES = ("right", "inconclusive", "wrong", "error")

CPU = "cpu_utilization"
MEMORY = "memory_utilization"
# The leak class adds this many points of memory over the whole run whatever the holds and
# steps; the generator's default leak, a fixed amount per request, would drive memory past its
# limit on 5-minute holds and turn the class into a different service.
LEAK_PCT = 45.0
# A bounded queue small enough to be full within seconds of an overloaded hold.
SMALL_QUEUE_JOBS = 10.0


@dataclass(frozen=True)
class Check:
    """An extra condition on the findings: ``holds(findings, metric)`` and what to say if not."""

    holds: Callable[[dict, str | None], bool]
    missing: str


def _tie_named(findings: dict, metric: str | None) -> bool:
    other = MEMORY if metric == CPU else CPU
    return other in ((findings.get("bottleneck") or {}).get("tied_with") or [])


def _partial_flagged(findings: dict, metric: str | None) -> bool:
    return ((findings.get("capacity") or {}).get("doubling") or {}).get("verdict") == "partial"


@dataclass(frozen=True)
class ServiceClass:
    name: str
    description: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)  # write_synthetic_run keyword arguments
    verdict: str = "recommended"
    right: frozenset = frozenset({CPU})
    check: Check | None = None
    hold_factor: int = 1  # holds this many times the regime's
    # A class whose data cannot single out one answer even when clean and long enough. None is
    # so today; set it with the reason beside the class when one is added.
    ambiguous: bool = False


CLASSES: tuple[ServiceClass, ...] = (
    ServiceClass("cpu100", "CPU-bound, CPU rises to 98-100% and stays there", "cpu", {"cpu_plateau": 100.0}),
    ServiceClass("cpu90", "CPU-bound, CPU settles near 90% at capacity (the default)", "cpu"),
    ServiceClass("cpu75", "latency breaks with CPU at 75%: the guide's latency-limited example", "cpu",
                 {"cpu_plateau": 75.0}),
    ServiceClass("cpu50_single", "single-threaded process on a 2-vCPU task: CPU stops at 50%", "cpu",
                 {"cpu_plateau": 50.0, "cpu_units": 2048}),
    ServiceClass("thrashing", "CPU peaks near 92% at capacity and falls past it (contention)", "thrashing"),
    ServiceClass("memory", "memory linear in concurrency, freed, the task dies at its limit", "memory",
                 right=frozenset({MEMORY})),
    ServiceClass("leak", "CPU-bound, memory grows with requests served and is never freed", "retaining",
                 {"leak_pct": LEAK_PCT}),
    ServiceClass("highwater", "CPU-bound, memory keeps a high-water mark from a 60% baseline", "highwater"),
    ServiceClass("jvm", "CPU-bound, memory flat near its limit from the start (a reserved heap)", "jvm"),
    ServiceClass("workers", "a fixed worker pool per task; 503s past capacity", "workers",
                 right=frozenset({"concurrency_per_task", "requests_per_task"})),
    ServiceClass("waiting", "waits on a per-task downstream connection pool; little CPU", "waiting",
                 right=frozenset({"concurrency_per_task", "requests_per_task"})),
    ServiceClass("queue_short", "job processor, backlog grows past capacity, holds as the regime's", "queue",
                 right=frozenset({"queue_backlog_per_task"})),
    ServiceClass("queue_long", "job processor with holds three times the regime's", "queue",
                 right=frozenset({"queue_backlog_per_task"}), hold_factor=3),
    ServiceClass("queue_full", f"job processor whose {SMALL_QUEUE_JOBS:g}-job queue sits full through long holds",
                 "queue", {"queue_bound": SMALL_QUEUE_JOBS}, right=frozenset({"queue_backlog_per_task"}),
                 hold_factor=3),
    ServiceClass("shared", "one downstream shared by all tasks: capacity does not grow with tasks", "shared",
                 verdict="no_task_level_metric", right=frozenset({None})),
    ServiceClass("partial", "CPU-bound per task, a shared downstream caps twice the tasks at 1.5x", "partial",
                 check=Check(_partial_flagged, "partial scaling not flagged")),
    ServiceClass("tie", "CPU and memory both reach ~90% at the same knee", "tie",
                 right=frozenset({CPU, MEMORY}), check=Check(_tie_named, "tie not named")),
)
BY_NAME = {c.name: c for c in CLASSES}


@dataclass(frozen=True)
class Scenario:
    cls: str
    regime: str
    cv: float
    steps: int
    seed: int

    def label(self) -> str:
        return f"{self.cls}/{self.regime}/cv{self.cv:g}/{self.steps}steps/seed{self.seed}"


def answerable(scenario: Scenario) -> bool:
    """Whether a right answer can be asked of the analyzer for this scenario: the class is not
    inherently ambiguous, and the ramp has at least 6 steps — 5 below capacity, the fewest for
    which the exact rank test can reach p < 0.05. A 5-step ramp leaves 4; it reaches 5 only
    through the refine phase's step at exactly capacity, which a real run cannot count on, so
    an answer there is welcome but not owed."""
    return not BY_NAME[scenario.cls].ambiguous and scenario.steps >= 6


def clean(scenario: Scenario) -> bool:
    """Low noise and enough steps: a wrong answer here is the analyzer's fault, not the data's."""
    return scenario.cv <= 0.05 + 1e-12 and scenario.steps >= 6


def start_unix_s(seed: int) -> float:
    """When a scenario's run starts. The minute buckets of the 60-s regime are wall-clock
    minutes and the holds are whole minutes, so the start's second within its minute fixes how
    much of the next step every hold's last sample holds. A fixed start would measure one such
    share only; stepping it by 23 s a seed (prime to 60) spreads 20 seeds over 20 of them."""
    return DEFAULT_START_UNIX_S + (23 * seed) % 60


def generator_kwargs(scenario: Scenario) -> dict[str, Any]:
    """What ``write_synthetic_run`` is called with for a scenario (besides the path and kind)."""
    cls = BY_NAME[scenario.cls]
    regime = dict(ALL_REGIMES[scenario.regime])
    regime["hold_s"] = regime["hold_s"] * cls.hold_factor
    return {**regime, "steps": ramp_fractions(scenario.steps), "noise_cv": scenario.cv, "seed": scenario.seed,
            "start_unix_s": start_unix_s(scenario.seed), **cls.params}


def judge(cls: ServiceClass, findings: dict) -> tuple[str, str]:
    """``(outcome, reason)`` of one run's findings against the class's truth."""
    verdict = findings.get("verdict")
    metric = (findings.get("recommendation") or {}).get("metric")
    pattern = (findings.get("pattern") or {}).get("name")
    if verdict == "inconclusive":
        reasons = (findings.get("inconclusive") or {}).get("reasons") or []
        return "inconclusive", _short(reasons[0]) if reasons else ""
    if verdict != cls.verdict:
        return "wrong", f"verdict {verdict} ({metric or 'no metric'}, {pattern})"
    if metric not in cls.right:
        return "wrong", f"metric {metric} ({pattern})"
    if cls.check is not None and not cls.check.holds(findings, metric):
        return "wrong", cls.check.missing
    return "right", ""


def run_scenario(scenario: Scenario) -> dict[str, Any]:
    """Write, analyse and judge one scenario in a temporary directory, deleted afterwards. Any
    exception becomes an ``error`` record: one bad run must not end the benchmark."""
    import warnings

    from scalefinder.analysis.analyzer import analyze_run
    from scalefinder.core.models import AnalysisOptions
    from scalefinder.core.rundir import RunDirectory
    from tests.synthetic import write_synthetic_run

    cls = BY_NAME[scenario.cls]
    record: dict[str, Any] = {"class": scenario.cls, "regime": scenario.regime, "cv": scenario.cv,
                              "steps": scenario.steps, "seed": scenario.seed}
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="robustness-") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numerical warnings on small samples are the analyzer's business
            run = write_synthetic_run(Path(tmp) / "run", cls.kind, **generator_kwargs(scenario))
            findings = analyze_run(RunDirectory.open(run), AnalysisOptions())
        outcome, reason = judge(cls, findings)
        record.update(outcome=outcome, verdict=findings.get("verdict"),
                      metric=(findings.get("recommendation") or {}).get("metric"),
                      pattern=(findings.get("pattern") or {}).get("name"), reason=reason,
                      headline=findings.get("headline"))
    except Exception as error:  # noqa: BLE001 - recorded, counted and shown, never fatal
        where = traceback.extract_tb(error.__traceback__)[-1]
        record.update(outcome="error", verdict=None, metric=None, pattern=None,
                      reason=f"{type(error).__name__}: {error} ({Path(where.filename).name}:{where.lineno})",
                      headline=None)
    record["seconds"] = round(time.perf_counter() - started, 2)
    return record


def scenarios(classes: Iterable[str], regimes: Iterable[str], cvs: Iterable[float], steps: Iterable[int],
              seeds: int) -> list[Scenario]:
    return [Scenario(c, r, cv, s, seed) for c in classes for r in regimes for cv in cvs for s in steps
            for seed in range(seeds)]


def run_all(todo: list[Scenario], jobs: int, out: Path, progress_every: int) -> list[dict[str, Any]]:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("")
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    counts: Counter = Counter()

    def keep(record: dict[str, Any]) -> None:
        records.append(record)
        counts[record["outcome"]] += 1
        with out.open("a") as handle:  # as soon as known, so an interrupted benchmark keeps its runs
            handle.write(json.dumps(record) + "\n")
        done = len(records)
        if done % progress_every == 0 or done == len(todo):
            elapsed = time.perf_counter() - started
            left = elapsed / done * (len(todo) - done)
            print(f"[{done}/{len(todo)}] {_clock(elapsed)} elapsed, about {_clock(left)} left; "
                  + ", ".join(f"{k} {counts[k]}" for k in OUTCOMES if counts[k]), file=sys.stderr, flush=True)

    if jobs == 1:
        for scenario in todo:
            keep(run_scenario(scenario))
    else:
        # fork: the workers inherit the imports; one task per scenario keeps the load even
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            for record in pool.imap_unordered(run_scenario, todo, chunksize=1):
                keep(record)
    return records


# -- the summary ---------------------------------------------------------------------------------
def _tally(records: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["outcome"] for r in records)
    total = len(records)
    return {"runs": total, **{k: counts[k] for k in OUTCOMES},
            **{f"{k}%": (100.0 * counts[k] / total if total else 0.0) for k in OUTCOMES}}


def _table(header: list[str], rows: list[list[Any]], markdown: bool) -> str:
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |",
                 "|" + "|".join("---" if i == 0 or "answer" in header[i] else "---:" for i in range(len(header)))
                 + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    left = {0} | {i for i, name in enumerate(header) if "answer" in name}
    return "\n".join("  ".join(row[i].ljust(widths[i]) if i in left else row[i].rjust(widths[i])
                               for i in range(len(header))).rstrip() for row in cells)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}%" if value == value else "-"
    return str(value)


def summary(records: list[dict[str, Any]], *, markdown: bool = False, meta: dict[str, Any] | None = None) -> str:
    """The per-class and per-setting tables and the three headline figures, as text."""
    records = sorted(records, key=lambda r: (r["class"], r["regime"], r["cv"], r["steps"], r["seed"]))
    out: list[str] = []
    if meta:
        host = meta.get("machine") or {}
        out.append(f"Measured {meta.get('date', '?')} on {host.get('host', '?')} ({host.get('cpus', '?')} CPUs, "
                   f"{host.get('memory_gib', '?')} GiB, Python {host.get('python', '?')}, "
                   f"kernel {host.get('kernel', '?')}); {meta.get('jobs', '?')} jobs, "
                   f"{_clock(meta['wall_s']) if 'wall_s' in meta else '?'} wall clock.")
        version = meta.get("analyzer") or {}
        if version:
            changed = version.get("uncommitted") or []
            out.append(f"Analyzer at commit {version.get('commit') or '?'}"
                       + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")
                       + f" (code sha256 {version.get('code_sha256', '?')}).")
        out.append("")
    header = ["class", "runs", "right", "inconclusive", "wrong", "error", "right %", "inconcl. %", "wrong %",
              "most common wrong answer"]
    rows = []
    order = [c.name for c in CLASSES] + sorted({r["class"] for r in records} - set(BY_NAME))
    for name in order:
        mine = [r for r in records if r["class"] == name]
        if not mine:
            continue
        t = _tally(mine)
        wrong = Counter(r["reason"] for r in mine if r["outcome"] == "wrong").most_common(1)
        rows.append([name, t["runs"], t["right"], t["inconclusive"], t["wrong"], t["error"], t["right%"],
                     t["inconclusive%"], t["wrong%"], f"{wrong[0][0]} ({wrong[0][1]})" if wrong else ""])
    overall = _tally(records)
    rows.append(["all", overall["runs"], overall["right"], overall["inconclusive"], overall["wrong"],
                 overall["error"], overall["right%"], overall["inconclusive%"], overall["wrong%"], ""])
    out += ["Per class:", _table(header, rows, markdown), ""]

    header = ["regime", "cv", "steps", "runs", "right", "inconclusive", "wrong", "error", "right %",
              "inconcl. %", "wrong %"]
    rows = []
    for key in sorted({(r["regime"], r["cv"], r["steps"]) for r in records}):
        t = _tally([r for r in records if (r["regime"], r["cv"], r["steps"]) == key])
        rows.append([key[0], f"{key[1]:g}", key[2], t["runs"], t["right"], t["inconclusive"], t["wrong"], t["error"],
                     t["right%"], t["inconclusive%"], t["wrong%"]])
    out += ["Per setting (regime x noise cv x ramp steps):", _table(header, rows, markdown), ""]

    def scenario_of(r: dict[str, Any]) -> Scenario:
        return Scenario(r["class"], r["regime"], r["cv"], r["steps"], r["seed"])

    known = [r for r in records if r["class"] in BY_NAME]
    clean_runs = [r for r in known if clean(scenario_of(r))]
    answerable_runs = [r for r in known if answerable(scenario_of(r))]
    wrong_clean = sum(r["outcome"] == "wrong" for r in clean_runs)
    out.append("Headline:")
    out.append(f"- wrong answers on clean scenarios (cv 0.05, >= 6 steps): {wrong_clean} of {len(clean_runs)}"
               f" ({_pct(wrong_clean, len(clean_runs))})")
    out.append(f"- wrong overall: {overall['wrong']} of {overall['runs']} ({_pct(overall['wrong'], overall['runs'])})")
    right_answerable = sum(r["outcome"] == "right" for r in answerable_runs)
    out.append(f"- right on answerable scenarios (>= 6 steps, class not ambiguous): {right_answerable} of "
               f"{len(answerable_runs)} ({_pct(right_answerable, len(answerable_runs))})")
    if overall["error"]:
        errors = Counter(r["reason"] for r in records if r["outcome"] == "error").most_common(3)
        out.append(f"- errors: {overall['error']}; most common: "
                   + "; ".join(f"{reason} ({n})" for reason, n in errors))
    return "\n".join(out)


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def analyzer_version() -> dict[str, Any]:
    """The commit measured and whether the analyzer's files differed from it: the analyzer
    changes often, and a figure means little without the code it came from. Read-only git
    (no optional locks), so a benchmark never touches the repository's index."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=30)
        return done.stdout.strip() if done.returncode == 0 else ""

    import hashlib

    status = git("status", "--porcelain", "--", "analysis", "scalefinder")
    changed = [line.split(maxsplit=1)[1] for line in status.splitlines() if line.strip()]
    # the code itself, so two results can be told apart even between commits
    digest = hashlib.sha256()
    for path in sorted((REPO / "analysis").rglob("*.py")) + sorted((REPO / "scalefinder").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "uncommitted": changed,
            "code_sha256": digest.hexdigest()[:16]}


def meta_path(out: Path) -> Path:
    """Where the run's machine, date and arguments are kept, beside the JSON lines."""
    return out.with_name(out.stem + ".meta.json")


# -- the command line ----------------------------------------------------------------------------
def _list(kind: Callable[[str], Any], allowed: Iterable[Any] | None = None) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if not values:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if allowed is not None:
            unknown = [v for v in values if v not in allowed]
            if unknown:
                raise argparse.ArgumentTypeError(f"unknown {', '.join(map(str, unknown))}; "
                                                 f"expected some of {', '.join(map(str, allowed))}")
        return values
    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def _cv(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"a coefficient of variation must be >= 0, got {text}")
    return value


def _ramp_steps(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"a ramp needs at least 2 steps, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.robustness",
                                description="The analyzer on synthetic services with known answers: "
                                            "right, inconclusive or wrong, per class and setting.")
    p.add_argument("--classes", type=_list(str, list(BY_NAME)), default=tuple(BY_NAME),
                   help="comma-separated classes (default: all): " + ", ".join(BY_NAME))
    p.add_argument("--regimes", type=_list(str, list(ALL_REGIMES)), default=tuple(REGIMES),
                   help="comma-separated sampling regimes (default: 1s,60s; the ECS designs: "
                        + ", ".join(ECS_REGIMES) + ")")
    p.add_argument("--cv", type=_list(_cv), default=None, help="noise coefficients of variation (default: 0.05,0.15)")
    p.add_argument("--steps", type=_list(_ramp_steps), default=None, help="ramp step counts (default: 5,6,8,12)")
    p.add_argument("--seeds", type=_positive_int, default=None, help=f"seeds per setting (default: {DEFAULT_SEEDS})")
    p.add_argument("--jobs", type=_positive_int, default=2, help="processes (default: 2)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"JSON-lines output (default: {DEFAULT_OUT.relative_to(REPO)}; with --quick {QUICK_OUT})")
    p.add_argument("--quick", action="store_true",
                   help=f"a development preset: {QUICK['seeds']} seeds, steps {','.join(map(str, QUICK['steps']))}")
    p.add_argument("--progress", type=_positive_int, default=None,
                   help="report progress every N runs (default: about every 2%%)")
    p.add_argument("--markdown", action="store_true",
                   help="print the summary of an existing --out file as Markdown tables; runs nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    if args.markdown:
        if not out.is_file():
            parser().error(f"no results at {out}: run the benchmark first or give --out")
        meta = json.loads(meta_path(out).read_text()) if meta_path(out).is_file() else None
        print(summary(read_records(out), markdown=True, meta=meta))
        return 0
    seeds = args.seeds or (QUICK["seeds"] if args.quick else DEFAULT_SEEDS)
    steps = args.steps or (QUICK["steps"] if args.quick else DEFAULT_STEPS)
    cvs = args.cv or DEFAULT_CV
    todo = scenarios(args.classes, args.regimes, cvs, steps, seeds)
    host = machine()
    date = utc_now()
    # Imported here, before the workers fork, so every run of the benchmark uses the same code
    # even when the analyzer's files change while it runs.
    import scalefinder.analysis.analyzer  # noqa: F401
    import tests.synthetic  # noqa: F401

    version = analyzer_version()
    print(f"{len(todo)} runs: {len(args.classes)} classes x regimes {','.join(args.regimes)} x cv "
          f"{','.join(f'{c:g}' for c in cvs)} x steps {','.join(map(str, steps))} x {seeds} seeds, {args.jobs} jobs; "
          f"results to {out}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    records = run_all(todo, args.jobs, out, args.progress or max(1, len(todo) // 50))
    wall_s = time.perf_counter() - started
    meta = {"date": date, "machine": host, "analyzer": version, "jobs": args.jobs, "wall_s": round(wall_s, 1),
            "argv": sys.argv[1:] if argv is None else list(argv), "runs": len(records)}
    meta_path(out).write_text(json.dumps(meta, indent=2) + "\n")
    print(summary(records, meta=meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
