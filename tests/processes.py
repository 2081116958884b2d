"""Child processes in tests: never left running when a test fails half way."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Iterator


@contextlib.contextmanager
def reaped(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Kill ``process`` on the way out if it is still running (the test failed or timed out before
    the process ended the way the test expected)."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
