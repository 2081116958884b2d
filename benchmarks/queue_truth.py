"""Where the `queue` archetype's SLO breaks under random arrivals: the share of jobs refused
against the offered rate, for the archetype's own numbers.

The ground truth the accuracy benchmarks judge `queue` against is its service rate,
``tasks * jobs_at_once / job_ms`` (20 jobs/s a task by default). Whether a run that breaks its
SLO a little below or above that rate is right depends on what arrivals do to a bounded queue:
with Poisson arrivals a backlog of ``max_backlog`` jobs overflows now and then even below the
service rate. This script simulates exactly that queue (Poisson arrivals; ``tasks *
jobs_at_once`` workers taking jobs first come, first served, each for ``job_ms``; one shared
backlog of at most ``max_backlog`` waiting jobs, as the emulator's broker holds; a job that finds
it full is refused with a 503) and prints the refused share at each rate, and the rate where that
share reaches the SLO's error budget. It is a model of the archetype, not a run of it: the
service's own overheads (the broker's round trips, the event loop) are left out.

    python -m benchmarks.queue_truth [--tasks 2] [--jobs-at-once 2] [--job-ms 100]
                                     [--max-backlog 100] [--budget-pct 1] [--arrivals 400000]
"""

from __future__ import annotations

import argparse
import collections
import heapq

import numpy as np


def refused_share(rate: float, *, workers: int, job_s: float, max_backlog: int, arrivals: int,
                  seed: int) -> float:
    """Share of ``arrivals`` Poisson arrivals at ``rate`` a second that find the backlog full."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate, arrivals))
    free_at = [0.0] * workers  # when each worker is next free (a heap)
    waiting: collections.deque[float] = collections.deque()  # start times of accepted jobs not yet started
    refused = 0
    for arrival in times:
        while waiting and waiting[0] <= arrival:
            waiting.popleft()
        if len(waiting) >= max_backlog:
            refused += 1
            continue
        # first come, first served: start times never decrease, so the deque stays ordered
        start = max(arrival, free_at[0])
        heapq.heapreplace(free_at, start + job_s)
        if start > arrival:
            waiting.append(start)
    return refused / arrivals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.queue_truth", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=2)
    p.add_argument("--jobs-at-once", type=int, default=2)
    p.add_argument("--job-ms", type=float, default=100.0)
    p.add_argument("--max-backlog", type=int, default=100)
    p.add_argument("--budget-pct", type=float, default=1.0)
    p.add_argument("--arrivals", type=int, default=400_000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if min(args.tasks, args.jobs_at_once, args.max_backlog, args.arrivals) < 1 or args.job_ms <= 0:
        p.error("every number must be positive")
    workers = args.tasks * args.jobs_at_once
    service_rate = workers * 1000.0 / args.job_ms
    print(f"{args.tasks} tasks x {args.jobs_at_once} jobs at once x {args.job_ms:g} ms, backlog {args.max_backlog}: "
          f"service rate {service_rate:g} jobs/s ({service_rate / args.tasks:g} a task); "
          f"{args.arrivals:,} Poisson arrivals a rate, seed {args.seed}")
    print(f"{'offered/service':>15} {'jobs/s':>8} {'a task':>7} {'refused %':>10}")
    crossing = None
    previous = None
    for fraction in (0.90, 0.95, 0.975, 0.99, 1.0, 1.0125, 1.025, 1.05):
        rate = fraction * service_rate
        share = 100 * refused_share(rate, workers=workers, job_s=args.job_ms / 1000.0,
                                    max_backlog=args.max_backlog, arrivals=args.arrivals, seed=args.seed)
        print(f"{fraction:>15.4f} {rate:>8.2f} {rate / args.tasks:>7.2f} {share:>10.3f}")
        if crossing is None and share >= args.budget_pct and previous is not None:
            low_rate, low_share = previous
            # linear between the two rates that bracket the budget
            crossing = low_rate + (rate - low_rate) * (args.budget_pct - low_share) / (share - low_share)
        previous = (rate, share)
    if crossing is None:
        print(f"the refused share did not reach {args.budget_pct:g}% in this range")
    else:
        print(f"refused share reaches the {args.budget_pct:g}% budget at about {crossing:.2f} jobs/s, "
              f"{crossing / args.tasks:.2f} a task ({crossing / service_rate:.3f} of the service rate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
