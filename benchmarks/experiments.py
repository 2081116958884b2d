"""Running a profile end to end from a benchmark: variant profiles, `run` and `analyze` as a user would.

The benchmarks drive the public command line in a child process, so what they time and judge is
exactly what a user gets, and a crash in one run cannot take the whole benchmark down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scalefinder.core.errors import InputError

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"


@dataclass(frozen=True)
class RunOutcome:
    """What one `scalefinder run` + `scalefinder analyze` produced, and how long each took."""

    run_dir: Path
    run_exit_code: int
    analyze_exit_code: int | None
    run_wall_s: float
    analyze_wall_s: float | None
    error_line: str | None

    def manifest(self) -> dict[str, Any]:
        path = self.run_dir / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def findings(self) -> dict[str, Any] | None:
        path = self.run_dir / "findings.json"
        return json.loads(path.read_text()) if path.is_file() else None


def read_profile(name_or_path: str | Path) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES / f"{name_or_path}.toml"
    if not path.is_file():
        raise InputError(f"no profile {path}")
    return tomllib.loads(path.read_text())


def write_profile(data: dict[str, Any], path: Path) -> Path:
    """Write ``data`` as TOML: scalars first, then each sub-table under its dotted header."""
    lines: list[str] = []
    _write_table(data, (), lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_table(table: dict[str, Any], prefix: tuple[str, ...], lines: list[str]) -> None:
    if prefix:
        lines.append(f"[{'.'.join(prefix)}]")
    for key, value in table.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            _write_table(value, prefix + (key,), lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + " }"
    raise InputError(f"cannot write {value!r} to TOML")


def run_and_analyze(profile_path: Path, run_dir: Path, *, workers: int = 0,
                    timeout_s: float = 1200, env: dict[str, str] | None = None) -> RunOutcome:
    """`scalefinder run PROFILE --out RUN_DIR` then `scalefinder analyze RUN_DIR`, each timed.

    A profile with a URL target is confirmed (``--yes``): the benchmarks' targets are local."""
    run_argv = ["run", str(profile_path), "--out", str(run_dir), "--no-progress", "--yes"]
    if workers:
        run_argv += ["--workers", str(workers)]
    run_code, run_wall_s, run_error = scalefinder_command(run_argv, timeout_s, env)
    if not (run_dir / "manifest.json").is_file():
        return RunOutcome(run_dir, run_code, None, run_wall_s, None, run_error)
    analyze_code, analyze_wall_s, analyze_error = scalefinder_command(["analyze", str(run_dir)], timeout_s)
    return RunOutcome(run_dir, run_code, analyze_code, run_wall_s, analyze_wall_s, run_error or analyze_error)


def scalefinder_command(argv: list[str], timeout_s: float,
                        env: dict[str, str] | None = None) -> tuple[int, float, str | None]:
    """``env`` is added to this process's environment (e.g. the ECS emulator's AWS endpoint)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "scalefinder.cli", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s,
                          env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
    wall_s = time.perf_counter() - started
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    if done.returncode != 0 and not errors:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        errors = tail
    return done.returncode, wall_s, errors[-1] if errors else None


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, Any]:
    import platform

    import psutil

    return {"host": platform.node(), "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One record a line, flushed at once, so an interrupted benchmark keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
