"""The ``plan``, ``run`` and ``worker`` commands."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import click

from scalefinder.loadgen.aws.options import aws_options
from scalefinder.loadgen.engine.protocol import DEFAULT_MASTER_PORT
from scalefinder.loadgen.plan import abort_rules, cost_lines, plan_profile, wall_time
from scalefinder.loadgen.profile import is_loopback, load_profile, with_secrets
from scalefinder.core.errors import InputError, InfrastructureError
from scalefinder.core.redact import redact_url

logger = logging.getLogger(__name__)


class ProfilePath(click.Path):
    """``click.Path``, with a NUL in the name a usage error: checking the path would raise ValueError."""

    def convert(self, value, param, ctx):
        if "\0" in str(value):
            self.fail("the file name contains a NUL character", param, ctx)
        return super().convert(value, param, ctx)


profile_argument = click.argument("profile", type=ProfilePath(dir_okay=False, path_type=Path))


@click.command("plan")
@profile_argument
def plan_command(profile: Path) -> None:
    """Print the steps of PROFILE's experiment, its duration, peak rate and request count.

    Nothing is sent. The ramp stops at the first step that breaks the SLO, so a real run is
    usually shorter; the figures here are the most the profile allows.
    """
    loaded = load_profile(profile)
    planned = plan_profile(loaded)
    click.echo(f"Profile {loaded.name}: {loaded.description}".rstrip(": "))
    click.echo(f"SLO: p{loaded.slo.percentile:g} <= {loaded.slo.latency_ms:g} ms, "
               f"errors <= {loaded.slo.error_budget_pct:g}%")
    click.echo(f"{'step':>4}  {'phase':<7} {'tasks':>5} {'rate req/s':>10} {'hold s':>7} {'requests':>9}")
    for number, step in enumerate(planned.steps):
        click.echo(f"{number:>4}  {step.phase:<7} {step.tasks:>5} {step.offered_rps:>10g} {step.hold_s:>7g} "
                   f"{step.requests:>9}")
    ramp = loaded.ramp
    click.echo(f"Ramp: the first step that breaks the SLO ends it; the rate is then refined to "
               f"±{ramp.refine_tolerance_pct:g}%{'' if ramp.refine else ' (refine is off)'} and "
               f"{ramp.replay_steps} earlier rates are replayed at {2 * loaded.capacity.tasks} tasks"
               f"{', then rates beyond the capacity' if ramp.beyond else ''}.")
    click.echo(f"Steps may end after {ramp.min_hold_s:g} s once steady.")
    for line in abort_rules(loaded).lines():
        click.echo(line)
    recoveries = (f", including {len(planned.recoveries)} recover{'ies' if len(planned.recoveries) != 1 else 'y'} "
                  f"of up to {ramp.recovery_timeout_s:g} s" if planned.recoveries else "")
    worst = wall_time(loaded, planned)
    click.echo(f"Load and scaling: at most {_minutes(worst.worst_s - worst.settle_s)} "
               f"(max_duration_s {ramp.max_duration_s:g} s{recoveries})")
    for line in cost_lines(loaded, planned):
        click.echo(line)
    click.echo(f"Peak rate: {planned.peak_rps:g} req/s")
    probes = f", plus at most {planned.recovery_requests} in recovery probes" if planned.recoveries else ""
    click.echo(f"Requests: at most {planned.request_count}{probes}")
    click.echo(f"Target: {_target_text(loaded)}")


@click.command("run")
@profile_argument
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory to create (default: reports/<run_id>/).")
@click.option("--yes", is_flag=True, help="Do not ask before sending load to a remote target.")
@click.option("--workers", type=click.IntRange(0, 64), default=0,
              help="Local Locust worker processes to generate the load (default: none, one process).")
@click.option("--expect-workers", type=click.IntRange(0, 1024), default=0,
              help="Remote workers (`scalefinder worker`) to wait for before the run starts.")
@click.option("--master-bind-host", default="127.0.0.1", show_default=True,
              help="Address the Locust master listens on for workers.")
@click.option("--master-port", type=click.IntRange(1, 65535), default=None,
              help=f"Port the Locust master listens on for workers (default: {DEFAULT_MASTER_PORT}, where "
                   "`scalefinder worker` looks, with --expect-workers; otherwise any free port).")
@click.option("--no-progress", is_flag=True, help="No live display (progress goes to the log).")
@aws_options
def run_command(profile: Path, out: Path | None, yes: bool, workers: int, expect_workers: int,
                master_bind_host: str, master_port: int | None, no_progress: bool, aws_region: str | None,
                aws_profile: str | None) -> None:
    """Run PROFILE's staged-ramp experiment and write a run directory.

    Ctrl-C or SIGTERM stops the load, restores the original task count and keeps the partial
    run directory (exit code 130). Answering no when asked to confirm load on a remote target
    runs nothing (exit code 0).
    """
    from scalefinder.loadgen.experiment import END_ABORT, END_RETRIED, RECOVERY, RunOptions, run_experiment
    from scalefinder.loadgen.progress import ProgressDisplay

    loaded = load_profile(profile)
    with_secrets(loaded)  # a variable the profile refers to and is not set: say so before anything starts
    if out is not None and out.exists() and any(out.iterdir()):
        raise InputError(f"{out} already exists and is not empty; choose another --out")
    if not loaded.target.is_local and not _confirm_remote(loaded, yes, aws_region, aws_profile):
        click.echo("Nothing was run: sending load was not confirmed.")
        return
    options = RunOptions(out=out, workers=workers, expect_workers=expect_workers,
                         master_bind_host=master_bind_host, master_port=master_port,
                         context_options={"aws_region": aws_region, "aws_profile": aws_profile})
    with ProgressDisplay(enabled=not no_progress and sys.stderr.isatty()) as display:
        result = run_experiment(loaded, options, on_progress=display.update)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if result.capacity_rps is not None:
        tasks = loaded.capacity.tasks
        click.echo(f"Capacity at {tasks} task{'s' if tasks != 1 else ''}: {result.capacity_rps:g} req/s "
                   f"(p{loaded.slo.percentile:g} <= {loaded.slo.latency_ms:g} ms)")
    # repeated attempts and recovery probes are invalid by design, not because of the generator
    invalid = sum(1 for step in result.steps if not step.valid and step.end_reason != END_RETRIED
                  and step.phase != RECOVERY)
    if invalid:
        click.echo(f"{invalid} step(s) were limited by the load generator and are marked invalid.", err=True)
    aborted = [step for step in result.steps if step.end_reason == END_ABORT and step.phase != RECOVERY]
    if aborted and result.status != "aborted":
        rates = ", ".join(f"{step.offered_rps:g}" for step in aborted)
        click.echo(f"{len(aborted)} step(s) were aborted to protect the target (at {rates} req/s); each counts as "
                   "an SLO breach, and the target recovered each time.", err=True)
    click.echo(f"Run directory: {result.path}")
    if result.status == "aborted":
        raise InfrastructureError(f"the run was aborted by a safety rule ({result.reason}); "
                                  f"the data up to the abort is in {result.path}")


def _confirm_remote(profile, yes: bool, aws_region: str | None = None, aws_profile: str | None = None) -> bool:
    """Whether the user agrees to send load to a remote target. Declining is a choice, not an
    error, so it is not reported as one. For a run that resizes an ECS service, the question
    comes after what will change where: the AWS account, region, cluster and service."""
    target = profile.target
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InputError(f"refusing to send load to {redact_url(target.url)} without confirmation; pass --yes")
    for line in _ecs_confirmation_lines(profile, aws_region, aws_profile):
        click.echo(line)
    try:
        return click.confirm(f"Send up to {profile.ramp.max_rps:g} req/s to {redact_url(target.url)} "
                             f"({target.environment})?")
    except click.Abort:  # Ctrl-C or the end of input at the prompt: an interruption, like anywhere else
        raise KeyboardInterrupt from None


def _ecs_confirmation_lines(profile, aws_region: str | None, aws_profile: str | None) -> list[str]:
    """What an ECS-controlled run will change, for the confirmation; nothing for other controllers
    (and no AWS call)."""
    if profile.capacity.controller != "ecs":
        return []
    config = profile.capacity.config
    account, region = aws_identity(aws_region or config.get("region"), aws_profile)
    tasks = profile.capacity.tasks
    return [
        f"AWS account {account}, region {region}: ECS service '{config['service']}' in cluster "
        f"'{config['cluster']}' will be resized between {tasks} and {2 * tasks} tasks.",
        "Its Application Auto Scaling (if it has any) is suspended during the run and its settings and "
        "task count are restored afterwards.",
    ]


def aws_identity(region: str | None, aws_profile: str | None) -> tuple[str, str]:
    """(account id, region) of the credentials a run would use, from STS GetCallerIdentity.

    Information for the confirmation only: any failure (no credentials, no region, no network)
    gives "unknown" with the reason and never stops the run, and the call gives up quickly.
    """
    shown_region = region or "unknown"
    try:
        from botocore.config import Config

        from scalefinder.loadgen.aws.session import AwsClients

        clients = AwsClients(region=region, profile=aws_profile)
        shown_region = clients.region
        sts = clients.session.client("sts", region_name=clients.region, config=Config(
            retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=5))
        return str(sts.get_caller_identity()["Account"]), shown_region
    except Exception as exc:  # noqa: BLE001 - information only: whatever went wrong, the run goes on
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logger.info("could not read the AWS account (STS GetCallerIdentity): %s", reason)
        return f"unknown ({type(exc).__name__})", shown_region


@click.command("worker")
@click.option("--master-host", required=True, help="Address of the machine running `scalefinder run`.")
@click.option("--master-port", type=click.IntRange(1, 65535), default=DEFAULT_MASTER_PORT, show_default=True)
def worker_command(master_host: str, master_port: int) -> None:
    """Join a distributed run as a Locust worker and offer a share of each step's rate.

    Start it on each load machine, then `scalefinder run PROFILE --expect-workers N
    --master-bind-host ADDRESS` on the coordinating machine. The worker exits when the run ends.
    """
    argv = [sys.executable, "-m", "scalefinder.loadgen.engine", "--worker",
            "--master-host", master_host, "--master-port", str(master_port)]
    try:
        code = subprocess.call(argv)
    except KeyboardInterrupt:
        code = 130
    if code == 130 or code < 0:
        raise KeyboardInterrupt
    if code != 0:
        raise InfrastructureError(f"the worker exited with code {code}")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60)} s" if seconds >= 60 else f"{seconds:.0f} s"


def _target_text(profile) -> str:
    target = profile.target
    if target.is_local:
        what = target.archetype and f"archetype {target.archetype}" or f"command {target.command!r}"
        return f"local cluster ({what}), {profile.capacity.tasks} tasks of {target.cpu_units} CPU units"
    note = "" if is_loopback(target.url) else f" ({target.environment}; confirmation required unless --yes)"
    return f"{redact_url(target.url)}{note}"
