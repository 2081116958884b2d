"""The messages between the orchestrator and the engine process, one JSON object a line.

Orchestrator to engine (stdin): first the engine configuration (see ``engine_config``), then
commands ``{"cmd": "rate", "step_id", "rate_rps"}``, ``{"cmd": "pause"}``, ``{"cmd": "stop"}``
and ``{"cmd": "quit"}``.

Engine to orchestrator (stdout): ``ready`` (with the generator ``pids``), ``error``, ``done``
(``rows`` of ``[step_id, due_unix_s, send_delay_ms, latency_ms, error_kind]``; a dropped arrival
has null delay and latency and the kind ``dropped``), ``tick`` (each whole second: ``counters``
per step of sent, late, dropped; ``in_flight``; ``oldest_in_flight_s``; ``cpu_pct`` of the
busiest generator process), ``drained`` (``step_id``) and ``stopped``.

This module imports nothing from locust; both sides use it.
"""

from __future__ import annotations

from typing import Any

# Locust's own default port for workers to reach the master.
DEFAULT_MASTER_PORT = 5557
# Asks the master to listen on any free port. ZeroMQ picks it as it binds, so two runs on one
# machine can never race for it; the master tells its local workers which one it got.
ANY_FREE_PORT = 0
DROPPED = "dropped"


def choose_master_port(chosen: int | None, expect_workers: int) -> int:
    """The port the master listens on: the one the user chose; otherwise Locust's default when
    remote workers (``scalefinder worker``) will look for the master there; otherwise any free
    port, since only the master's own local workers need to know it."""
    if chosen is not None:
        return chosen
    return DEFAULT_MASTER_PORT if expect_workers else ANY_FREE_PORT


def engine_config(profile: Any, host_url: str, *, workers: int = 0, expect_workers: int = 0,
                  master_bind_host: str = "127.0.0.1", master_port: int = DEFAULT_MASTER_PORT) -> dict[str, Any]:
    """The engine's configuration from a validated profile and the URL to send load to."""
    workload = profile.workload
    config: dict[str, Any] = {
        "host": host_url,
        "max_in_flight": workload.max_in_flight,
        "timeout_s": workload.timeout_s,
        "late_tolerance_ms": workload.late_tolerance_ms,
        "workers": workers,
        "expect_workers": expect_workers,
        "master_bind_host": master_bind_host,
        "master_port": master_port,
    }
    if workload.requests:
        config["requests"] = [
            {"name": r.name, "method": r.method, "path": r.path, "weight": r.weight,
             "body": r.body, "headers": dict(r.headers)}
            for r in workload.requests
        ]
    else:
        config["locustfile_path"] = workload.locustfile
        config["user_classes"] = list(workload.user_classes)
    return config
