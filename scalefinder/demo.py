"""``scalefinder demo``: the whole loop on the embedded local cluster, in one command.

It runs ``profiles/demo.toml`` (a CPU-bound service of two tasks), analyzes the run and writes
the report, by invoking the same commands a user would run one after another, so the demo
cannot drift from them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from scalefinder.core.errors import InputError
from scalefinder.core.rundir import create_run_directory
from scalefinder.profiles import shipped_profile

DEMO_PROFILE = shipped_profile("demo.toml")


@click.command("demo")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Profile to run instead of profiles/demo.toml.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory to create (default: reports/demo-<UTC time>/).")
@click.option("--no-progress", is_flag=True, help="No live display (progress goes to the log).")
@click.pass_context
def demo_command(ctx: click.Context, profile_path: Path | None, out: Path | None, no_progress: bool) -> None:
    """Start the local cluster, run the demo profile, analyze it and write the HTML report.

    Needs no cloud account: the target is the embedded local cluster on 127.0.0.1. Takes about
    three minutes; the report's path and the headline are printed at the end.
    """
    from scalefinder.analysis.command import analyze_command
    from scalefinder.analysis.reporting.commands import report_command
    from scalefinder.loadgen.commands import run_command

    profile_path = profile_path or DEMO_PROFILE
    if not profile_path.is_file():
        raise InputError(f"the demo profile {profile_path} does not exist; pass --profile")
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        # claimed now, so a demo started in the same second gets a directory of its own
        _, out = create_run_directory(Path("reports"), f"demo-{stamp}")
    click.echo(f"Running {profile_path} against the embedded local cluster; results go to {out}/")
    ctx.invoke(run_command, profile=profile_path, out=out, no_progress=no_progress)
    click.echo("Analyzing ...")
    ctx.invoke(analyze_command, run_dir=out)
    click.echo("Writing the report ...")
    ctx.invoke(report_command, run_dir=out)
    click.echo(f"Open {(out / 'report.html').resolve()} in a browser.")
