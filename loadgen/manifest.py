"""The run directory's creation and the manifest it starts with: the profile, the environment,
the target, the SLO, the capacity controller's snapshot (so ``scalefinder restore`` can undo a run
killed hard), the sources and the load generator's layout."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from scalefinder import __version__
from scalefinder.core.redact import redact_urls_in
from scalefinder.core.rundir import RunWriter, create_run_directory
from scalefinder.loadgen.profile import Profile

# Versions recorded in the manifest: what the measurements and the analysis depend on.
LIBRARIES = ("locust", "gevent", "geventhttpclient", "pandas", "numpy", "scipy", "statsmodels",
             "psutil", "aiohttp", "boto3")


def create_run_writer(profile: Profile, *, started: datetime, out: Path | None, reports_dir: Path, cluster: Any,
                      snapshot: dict[str, Any], sources: dict[str, Any], distributed: bool,
                      workers: int) -> RunWriter:
    """A new run directory, ``out`` or ``reports_dir/<run_id>``, with its first manifest.

    ``cluster`` is the local cluster (None for a url target), ``snapshot`` the capacity
    controller's, ``workers`` the load generator's worker processes (local and remote)."""
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{profile.name}"
    if out is not None:
        path = out
    else:  # a run started in the same second may hold this id already: claim the next free one
        run_id, path = create_run_directory(reports_dir, run_id)
    return RunWriter.create(path, {
        "run_id": run_id,
        "profile": profile.to_dict(),
        "environment": environment(cluster),
        "target": redact_urls_in(target_description(profile, cluster)),
        "slo": {"percentile": profile.slo.percentile, "latency_ms": profile.slo.latency_ms,
                "error_budget_pct": profile.slo.error_budget_pct},
        "capacity": {"controller": profile.capacity.controller, "original": snapshot,
                     "initial_tasks": profile.capacity.tasks},
        "sources": source_descriptions(sources),
        "generator": {"mode": "distributed" if distributed else "local", "workers": workers},
    })


def environment(cluster: Any) -> dict[str, Any]:
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "tool_version": __version__,
        "python": sys.version.split()[0],
        "libraries": libraries,
        "host": {"name": platform.node(), "cpus": os.cpu_count(),
                 "memory_mib": round(psutil.virtual_memory().total / 2**20)},
        "cgroup_mode": cluster.cgroup_mode if cluster is not None else None,
    }


def target_description(profile: Profile, cluster: Any) -> dict[str, Any]:
    target = profile.target
    if cluster is None:
        return {"kind": "url", "url": target.url, "environment": target.environment}
    return {"kind": "local", "archetype": target.archetype, "command": target.command,
            "params": dict(cluster.spec.params), "cpu_units": target.cpu_units, "memory_mib": target.memory_mib,
            "url": cluster.url, "ground_truth": cluster.ground_truth()}


def source_descriptions(sources: dict[str, Any]) -> dict[str, Any]:
    """What each metric source says about itself, as the manifest records it: URLs redacted, here
    and when a retrospective source rewrites its entry after fetching."""
    return redact_urls_in({kind: source.describe() for kind, source in sources.items()})
