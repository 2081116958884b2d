"""How long ``scalefinder analyze`` takes on large runs, and how much memory it needs.

Writes synthetic run directories of about 1M, 10M and 30M metric samples (a CPU-bound run
with many tasks, 1-second samples), then analyses each in a fresh child process and prints
the wall time and the child's peak resident memory. Each size is written in two layouts:
``service``, where every metric has a service-level series beside the per-task ones (the local
and CloudWatch sources), and ``tasks``, where metrics are per task only and the analysis must
average them itself (a Prometheus scrape). Usage:

    python benchmarks/analysis_speed.py [--sizes 1,10,30] [--layouts service,tasks] [--keep DIR]

With ``--keep DIR`` the runs are written there and, when they are already there, reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synthetic import write_synthetic_run  # noqa: E402


LAYOUTS = ("service", "tasks")


def write_large_run(path: Path, samples: int, seed: int = 0, layout: str = "service") -> int:
    """A synthetic CPU run whose metrics.csv is widened to about ``samples`` rows.

    The base run has two tasks; every per-task series is copied to more tasks, each with its
    own noise, so the step structure (and the right answer) stays that of the base run. In the
    ``tasks`` layout the service-level rows are left out.
    """
    write_synthetic_run(path, "cpu", seed=seed, hold_s=60, warmup_s=6)
    base = pd.read_csv(path / "metrics.csv", dtype={"task": "string"}, keep_default_na=False)
    per_task = base[base["task"] != ""]
    copies = max(1, int(np.ceil(samples / len(per_task))))
    rng = np.random.default_rng(seed)
    chunk_rows = []
    for copy in range(copies):
        frame = per_task.copy()
        frame["task"] = frame["task"] + f"-{copy}"
        frame["value"] = np.round(frame["value"].to_numpy() * (1 + rng.normal(0, 0.01, len(frame))), 4)
        chunk_rows.append(frame)
    service = [base[base["task"] == ""]] if layout == "service" else []
    wide = pd.concat(chunk_rows + service, ignore_index=True).sort_values("time_unix_s",
                                                                                                kind="stable")
    table = pa.Table.from_pandas(wide[["time_unix_s", "source", "metric", "task", "value", "unit"]],
                                 preserve_index=False)
    pacsv.write_csv(table, path / "metrics.csv")
    return len(wide)


def measure(run: Path) -> dict:
    """Analyse ``run`` in a child process; its peak memory is then the analysis' alone."""
    code = (
        "import json, resource, sys, time\n"
        "start = time.perf_counter()\n"
        "from scalefinder.analysis.command import analyze\n"
        "findings = analyze(sys.argv[1])\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, "
        "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "'verdict': findings['verdict'], 'metric': (findings['recommendation'] or {}).get('metric')}))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, cwd=root, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rows(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b"")) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,30", help="millions of samples, comma separated")
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help=f"comma separated, of {', '.join(LAYOUTS)} (see the module's help)")
    parser.add_argument("--keep", type=Path, default=None, help="write the runs here and keep them")
    args = parser.parse_args()
    layouts = args.layouts.split(",")
    if not set(layouts) <= set(LAYOUTS):
        parser.error(f"--layouts: each of {', '.join(LAYOUTS)}")
    root = args.keep or Path(tempfile.mkdtemp(prefix="scalefinder-speed-"))
    try:
        print(f"{'layout':<8} {'samples':>12} {'csv MiB':>8} {'write s':>8} {'analyze s':>10} {'peak MiB':>9}  answer")
        for millions in (float(s) for s in args.sizes.split(",")):
            for layout in layouts:
                run = root / f"run-{millions:g}M" if layout == "service" else root / f"run-{millions:g}M-{layout}"
                started = time.perf_counter()
                if args.keep and (run / "metrics.csv").exists():
                    rows, written = _rows(run / "metrics.csv"), float("nan")
                else:
                    rows = write_large_run(run, int(millions * 1_000_000), layout=layout)
                    written = time.perf_counter() - started
                result = measure(run)
                size = (run / "metrics.csv").stat().st_size / 2**20
                print(f"{layout:<8} {rows:>12,} {size:>8.0f} {written:>8.1f} {result['seconds']:>10.1f} "
                      f"{result['peak_rss_mib']:>9.0f}  {result['verdict']} {result['metric']}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
