"""Does the simulator predict what the policy really does? `scalefinder validate` per archetype and curve.

For each archetype: `scalefinder run profiles/<archetype>.toml` and `analyze` (or a kept run
under --keep), then `scalefinder validate` on each curve, which applies the recommended target
tracking policy to the local cluster on a compressed clock and compares minute by minute with
`scalefinder simulate`'s prediction. Prints a table, appends one JSON line per case to --out.

    python -m benchmarks.closed_loop                        # cpu, workers, queue x spike, daily
    python -m benchmarks.closed_loop --archetypes cpu --curves spike --keep /tmp/closed-loop
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.experiments import (PROFILES, REPO, append_jsonl, load_average, machine, run_and_analyze,
                                    scalefinder_command, utc_now)

ARCHETYPES = ("cpu", "workers", "queue")
CURVES = ("spike", "daily")
# Real seconds per simulated minute: the spike's hour in 3 minutes; the day's 1440 minutes in 12.
MINUTE_S = {"spike": 3.0, "daily": 0.5, "step": 3.0, "ramp": 3.0}
# The queue's backlog fills in real seconds, which the compressed clock does not compress: past
# capacity it needs some 8 s to reach the 100 jobs at which the queue refuses work, so at 3 s a
# minute the loop breaches three minutes later than a real minute would. Its spike runs at 10 s.
MINUTE_S_BY_ARCHETYPE = {("queue", "spike"): 10.0}


def analyzed_run(archetype: str, keep: Path) -> tuple[Path, float | None]:
    run = keep / archetype
    if (run / "findings.json").is_file():
        return run, None
    outcome = run_and_analyze(PROFILES / f"{archetype}.toml", run)
    if outcome.analyze_exit_code != 0:
        raise SystemExit(f"{archetype}: the run or its analysis failed ({outcome.error_line})")
    return run, outcome.run_wall_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archetypes", default=",".join(ARCHETYPES))
    parser.add_argument("--curves", default=",".join(CURVES))
    parser.add_argument("--minute-s", type=float, default=None, help="Real seconds per minute for every case.")
    parser.add_argument("--keep", type=Path, default=Path("/tmp/scalefinder-closed-loop"),
                        help="Folder of the analyzed runs, reused when present.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "closed_loop.jsonl")
    args = parser.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    print(f"machine {machine()}, load {load_average()}", flush=True)
    header = (f"{'archetype':<9} {'curve':<6} {'min':>5} {'min_s':>5} {'tasks±1':>8} {'breach pred':>11} "
              f"{'breach real':>11} {'task-h pred':>11} {'task-h real':>11} {'delay s':>7} {'wall min':>8}  verdict")
    rows = []
    runs = {}
    # every archetype's first curve before any second one: the short curves report first
    for curve in args.curves.split(","):
        for archetype in args.archetypes.split(","):
            if archetype not in runs:
                runs[archetype] = analyzed_run(archetype, args.keep)
            run, run_wall_s = runs[archetype]
            findings = json.loads((run / "findings.json").read_text())
            minute_s = args.minute_s or MINUTE_S_BY_ARCHETYPE.get((archetype, curve), MINUTE_S[curve])
            load_before = load_average()
            code, wall_s, error = scalefinder_command(
                ["validate", str(PROFILES / f"{archetype}.toml"), "--run", str(run), "--demand", curve,
                 "--minute-s", str(minute_s)], timeout_s=3 * 3600)
            path = run / f"validation-{curve}.json"
            if code != 0 or not path.is_file():
                print(f"{archetype} {curve}: validate failed (exit {code}): {error}", flush=True)
                continue
            validation = json.loads(path.read_text())
            comparison = validation["comparison"]
            record = {"archetype": archetype, "curve": curve, "minute_s": minute_s, "finished_utc": utc_now(),
                      "metric": findings["recommendation"]["metric"], "target": validation["policy"]["target"],
                      "run_wall_s": run_wall_s, "validate_wall_s": round(wall_s, 1), "load_average_before": load_before,
                      "load_average_after": load_average(), "demand": validation["demand"], "clock": validation["clock"],
                      "bounds": validation["bounds"], "comparison": comparison, "actions": validation["actions"]}
            append_jsonl(args.out, record)
            rows.append(record)
            print(header if len(rows) == 1 else "", end="\n" if len(rows) == 1 else "")
            print(_row(record), flush=True)
    print()
    print(header)
    for record in rows:
        print(_row(record))


def _row(record: dict) -> str:
    c = record["comparison"]
    return (f"{record['archetype']:<9} {record['curve']:<6} {c['minutes']:>5} {record['minute_s']:>5g} "
            f"{c['tasks_within_1_share']:>8.0%} {c['breach_minutes_predicted']:>11} {c['breach_minutes_actual']:>11} "
            f"{c['task_hours_predicted']:>11.2f} {c['task_hours_actual']:>11.2f} "
            f"{record['clock']['measured_start_delay_s']:>7g} {record['validate_wall_s'] / 60:>8.1f}  {c['verdict']}")


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"{(time.monotonic() - started) / 60:.1f} min in all")
