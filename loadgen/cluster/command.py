"""``scalefinder cluster``: run the local cluster in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time
from datetime import datetime, timezone
from typing import Any

import click

from scalefinder.loadgen.cluster.process import port_in_use
from scalefinder.loadgen.cluster.spec import POLICIES
from scalefinder.core.errors import InputError

#: With --emulate, where the balancer and the AWS endpoint listen by default: the addresses
#: profiles/ecs-emulated.toml names.
EMULATED_BALANCER_PORT = 8780
EMULATED_ENDPOINT_PORT = 8781


def _parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--param takes NAME=VALUE, got {pair!r}")
        params[name.strip()] = value.strip()
    return params


def _print_event(kind: str, **detail: Any) -> None:
    now = datetime.now(timezone.utc).strftime("%H:%M:%S")
    text = ", ".join(f"{key}={value}" for key, value in detail.items())
    click.echo(f"{now} {kind}: {text}")


@click.command("cluster")
@click.option("--archetype", help="Archetype to run: cpu, memory, retaining, workers, waiting, jvm, queue, shared, prefork.")
@click.option("--command", "command_template",
              help="Run any HTTP server instead, e.g. \"gunicorn app:app -b 127.0.0.1:{port}\".")
@click.option("--tasks", type=int, default=2, show_default=True, help="Number of tasks.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Archetype parameter (repeatable); see docs/archetypes.md.")
@click.option("--cpu-units", type=int, default=256, show_default=True, help="CPU reservation per task (1024 = 1 vCPU).")
@click.option("--memory-mib", type=int, default=256, show_default=True, help="Memory reservation per task (MiB).")
@click.option("--balancer", type=click.Choice(POLICIES), default="least_outstanding", show_default=True)
@click.option("--port", type=int, default=None, help="Port of the load balancer (default: a free one).")
@click.option("--health-path", default="/health", show_default=True)
@click.option("--metrics-path", default="/metrics", show_default=True)
@click.option("--emulate", type=click.Choice(["ecs"]), default=None,
              help="Run the cluster as an ECS service: AWS's APIs (ECS, Application Auto Scaling, ELBv2, "
                   "CloudWatch, SQS) on a local endpoint, with Container Insights and load balancer metrics.")
@click.option("--endpoint-port", type=int, default=EMULATED_ENDPOINT_PORT, show_default=True,
              help="With --emulate: port of the local AWS endpoint.")
@click.option("--minute-s", type=int, default=60, show_default=True,
              help="With --emulate: CloudWatch's minute; compress it (e.g. 2) only for quick trials.")
@click.option("--datapoints", "mode", type=click.Choice(["per_task", "total"]), default="per_task",
              show_default=True,
              help="With --emulate: Container Insights' service datapoint, one per task a minute or one total.")
@click.option("--start-delay-s", type=float, default=None,
              help="With --emulate: seconds before a new task starts (default: half a minute).")
def cluster_command(archetype: str | None, command_template: str | None, tasks: int, params: tuple[str, ...],
                    cpu_units: int, memory_mib: int, balancer: str, port: int | None, health_path: str,
                    metrics_path: str, emulate: str | None, endpoint_port: int, minute_s: int, mode: str,
                    start_delay_s: float | None) -> None:
    """Run the embedded local cluster in the foreground; Ctrl-C stops it and removes everything."""
    from scalefinder.loadgen.cluster import ClusterSpec, LocalCluster

    if archetype is None and command_template is None:
        archetype = "cpu"
    if not emulate and (minute_s != 60 or mode != "per_task" or start_delay_s is not None
                        or endpoint_port != EMULATED_ENDPOINT_PORT):
        raise InputError("--endpoint-port, --minute-s, --datapoints and --start-delay-s need --emulate ecs")
    if emulate and port is None:
        port = EMULATED_BALANCER_PORT  # the address profiles/ecs-emulated.toml sends its load to
    spec = ClusterSpec(archetype=archetype, command=command_template, params=_parse_params(params),
                       tasks=tasks, cpu_units=cpu_units, memory_mib=memory_mib, balancer=balancer,
                       health_path=health_path, metrics_path=metrics_path, port=port)
    emulator = None
    if emulate:  # built (and its options checked) before the ports: a wrong value is named first
        from scalefinder.loadgen.emulator import EcsEmulator

        emulator = EcsEmulator(spec, mode=mode, minute_s=minute_s, start_delay_s=start_delay_s,
                               endpoint_port=endpoint_port, on_event=_print_event)
    else:
        cluster = LocalCluster(spec, on_event=_print_event)
    for option, number in (("--port", port), ("--endpoint-port", endpoint_port if emulate else None)):
        if number is not None and port_in_use(number):
            raise InputError(f"{option} {number}: the port is already in use on 127.0.0.1; choose another")
    _terminate_as_interrupt()
    try:
        if emulator is not None:
            emulator.start()
            assert emulator.cluster is not None
            cluster = emulator.cluster
        else:
            cluster.start()
        truth = cluster.ground_truth()
        click.echo(f"load balancer: {cluster.url}/")
        click.echo(f"tasks: {', '.join(cluster.running_tasks())} "
                   f"({cpu_units} CPU units, {memory_mib} MiB each; {cluster.cgroup_mode})")
        if cluster.cgroup_mode == "unenforced":
            click.echo(f"warning: {cluster.cgroup_detail}", err=True)
        if truth.get("capacity_rps_per_task") is not None:
            click.echo(f"expected capacity: {truth['capacity_rps_per_task']:g} req/s per task "
                       f"({truth['bottleneck']}: {truth['capacity_formula']})")
        for warning in truth.get("warnings", []):
            click.echo(f"warning: {warning}", err=True)
        if emulator is not None:
            _print_emulator(emulator)
        click.echo("workload: GET /work   stop: Ctrl-C")
        if emulator is not None:
            _wait_for_first_minute(emulator)
        _wait_for_signal()
    except KeyboardInterrupt:
        click.echo("stopping...")
    finally:
        (emulator or cluster).stop()
    click.echo("stopped; no task processes or cgroups left")


def _print_emulator(emulator: Any) -> None:
    described = emulator.describe()
    click.echo(f"emulated ECS service: cluster {described['cluster']}, service {described['service']}, "
               f"region {described['region']}; queue {described['queue']}")
    click.echo(f"AWS endpoint: {emulator.endpoint} (CloudWatch minute {emulator.minute_s} s, "
               f"{emulator.mode.replace('_', '-')} service datapoints, tasks start after "
               f"{emulator.start_delay_s:g} s)")
    click.echo("in the shell that runs scalefinder:")
    for name, value in emulator.environment().items():
        click.echo(f"  export {name}={value}")


def _wait_for_first_minute(emulator: Any) -> None:
    """A run's preflight needs recent Container Insights data: say when the first minute lands."""
    expected = emulator.minute_s * 2 + emulator.publish_delay_s
    click.echo(f"waiting for the first minute of Container Insights data (up to {expected:.0f} s)...")
    while not emulator.wait_for_data(0.2):
        pass
    click.echo("ready: metrics are being published; runs may start")


def _wait_for_signal() -> None:
    """Block until Ctrl-C or SIGTERM raises KeyboardInterrupt here.

    The kernel may deliver the signal to any thread, and the cluster keeps one to start its
    processes. Python then runs the handler only when the main thread next wakes, so an
    untimed wait could sleep through it; short sleeps bound that delay.
    """
    while True:
        time.sleep(0.2)


def _terminate_as_interrupt() -> None:
    """SIGTERM takes the same clean path as Ctrl-C."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
