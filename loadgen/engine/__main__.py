"""The engine process: ``python -m scalefinder.loadgen.engine`` (driven by the orchestrator over a pipe)
or ``python -m scalefinder.loadgen.engine --worker --master-host H`` (a Locust worker of a distributed run).

Importing locust patches the standard library for gevent, so this module imports it before
anything else and nothing outside ``scalefinder.loadgen.engine`` ever runs in this process.
"""

import locust  # noqa: F401  (first: patches the standard library for gevent)

import argparse
import json
import logging
import os
import signal
import sys
from typing import Any

import gevent
from gevent.fileobject import FileObjectPosix
from gevent.lock import Semaphore

from scalefinder.loadgen.engine.protocol import DEFAULT_MASTER_PORT

logger = logging.getLogger("scalefinder.loadgen.engine")
# The niceness the generator asks for (negative is more favoured; needs privilege).
GENERATOR_NICENESS = -5
_write_lock = Semaphore()


def emit(message: dict[str, Any]) -> None:
    line = json.dumps(message, separators=(",", ":")) + "\n"
    with _write_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def read_commands():
    """Commands from the orchestrator, one JSON object a line, until it closes the pipe."""
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    while True:
        line = stdin.readline()
        if not line:
            return
        if line.strip():
            yield json.loads(line)


def run_orchestrated() -> None:
    commands = read_commands()
    config = next(commands)
    if config.get("workers") or config.get("expect_workers"):
        from scalefinder.loadgen.engine.distributed import Coordinator as Driver
    else:
        from scalefinder.loadgen.engine.local import LocalDriver as Driver
    try:
        driver = Driver(config, emit)
    except (ValueError, OSError, ImportError, SyntaxError) as exc:
        emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
        return
    try:
        emit({"type": "ready", "pids": driver.pids()})
        for command in commands:
            if command["cmd"] == "quit":
                break
            driver.handle(command)
    finally:
        driver.close()


def _raise_priority() -> None:
    """Ask the OS to run the generator ahead of ordinary processes, where that is allowed.

    Latency counts from each arrival's due time, so every millisecond the scheduler keeps the
    generator waiting is charged to the target; a higher priority keeps those delays small on a
    busy machine. Without the privilege the engine runs as it is and late arrivals are counted.
    """
    try:
        current = os.nice(0)
        if current > GENERATOR_NICENESS:
            os.nice(GENERATOR_NICENESS - current)
    except OSError:
        logger.debug("cannot raise the generator's priority; running at normal priority")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scalefinder.loadgen.engine")
    parser.add_argument("--worker", action="store_true", help="join a distributed run as a worker")
    parser.add_argument("--master-host", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=DEFAULT_MASTER_PORT)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process is gone (workers started by a local master)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _raise_priority()
    if not args.worker or args.parent_pid:
        # The orchestrator decides when load stops; a Ctrl-C in the terminal must reach it alone.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.worker:
        from scalefinder.loadgen.engine.distributed import run_worker

        run_worker(args.master_host, args.master_port, args.parent_pid)
    else:
        run_orchestrated()
    gevent.get_hub().destroy(destroy_loop=True)


if __name__ == "__main__":
    main()
