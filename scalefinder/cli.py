"""The ``scalefinder`` command line.

Each command lives beside the code it drives and is imported only when it is invoked, so that
``scalefinder analyze`` never imports Locust (which patches the standard library for gevent) and
``scalefinder --help`` stays fast. This module only assembles the commands and turns the error
family into exit codes: 0 ok, 1 gate failed, 2 usage or input error, 3 environment or
infrastructure error, 130 interrupted.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import NoReturn

import click

from scalefinder import __version__
from scalefinder.core.errors import ScalefinderError, one_line

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "cluster": "scalefinder.loadgen.cluster.command:cluster_command",
    "plan": "scalefinder.loadgen.commands:plan_command",
    "run": "scalefinder.loadgen.commands:run_command",
    "worker": "scalefinder.loadgen.commands:worker_command",
    "analyze": "scalefinder.analysis.command:analyze_command",
    "policy": "scalefinder.analysis.command:policy_command",
    "report": "scalefinder.analysis.reporting.commands:report_command",
    "gate": "scalefinder.analysis.reporting.commands:gate_command",
    "runs": "scalefinder.analysis.reporting.commands:runs_command",
    "simulate": "scalefinder.analysis.simulation.command:simulate_command",
    "validate": "scalefinder.validate:validate_command",
    "demo": "scalefinder.demo:demo_command",
    "restore": "scalefinder.loadgen.restore:restore_command",
    "fetch-metrics": "scalefinder.loadgen.refetch:fetch_metrics_command",
    "iam-policy": "scalefinder.loadgen.aws.commands:iam_policy_command",
}

# One line of help per command, so `scalefinder --help` needs no imports.
SHORT_HELP: dict[str, str] = {
    "cluster": "Run the embedded local cluster in the foreground.",
    "plan": "Print the steps of a profile's experiment without sending load.",
    "run": "Run a profile's staged-ramp experiment into a run directory.",
    "worker": "Join a distributed run as a Locust worker.",
    "analyze": "Analyze a run directory and write findings.json.",
    "policy": "Print the recommended scaling policy (AWS, HPA or KEDA) of an analyzed run.",
    "report": "Write the HTML report and summaries of an analyzed run.",
    "gate": "Check a run against performance criteria (CI gate).",
    "runs": "List the runs under a reports folder and write its index.",
    "simulate": "Simulate the recommended policy against a demand curve, minute by minute.",
    "validate": "Apply the recommended policy to the local cluster under a demand curve; compare with simulate.",
    "demo": "Start the local cluster, run the demo profile, analyze and report.",
    "restore": "Restore the task count and scaling settings recorded in a run directory.",
    "fetch-metrics": "Fetch a finished run's CloudWatch or Prometheus metrics again.",
    "iam-policy": "Print the least-privilege IAM policy a profile needs.",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use and whose errors become exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
                return _unavailable(name, f"the '{name}' command is not available in this build")
            missing = exc.name or str(exc)
            return _unavailable(name, f"the '{name}' command needs the Python package '{missing}'; install it first")
        command = getattr(module, attribute)
        if command.short_help is None and name in SHORT_HELP:
            command.short_help = SHORT_HELP[name]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # A shell cannot pass a NUL byte, but a program calling the CLI can; no path or value
        # may hold one (the operating system refuses it deep inside with a ValueError).
        if any("\x00" in arg for arg in args):
            _usage_error(click.UsageError("an argument contains a NUL byte", ctx))
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _usage_error(exc)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a command's own flags and arguments are parsed in here
            _usage_error(exc)
        except ScalefinderError as exc:
            # one line, whatever reached the message from the input (a TOML key, a file name)
            click.echo(f"Error: {one_line(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except OSError as exc:
            # A file the command had to read or write: an output path that is a directory, a full
            # disk, no permission. A path that names the wrong kind of thing is the user's input.
            path = exc.filename2 or exc.filename  # a rename names its destination second
            where = f": {path}" if path else ""
            click.echo(f"Error: {one_line(exc.strerror or str(exc))}{where}", err=True)
            ctx.exit(2 if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileExistsError)) else 3)


# Click 8.2+ signals "no arguments: show the help" as a usage error; that one stays the help page.
_HELP_INSTEAD = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_error(exc: click.UsageError) -> NoReturn:
    """A mistake on the command line is one line, like every other error, with where to look."""
    if isinstance(exc, _HELP_INSTEAD):
        raise exc
    where = exc.ctx.command_path if exc.ctx is not None else "scalefinder"
    click.echo(f"Error: {one_line(exc.format_message())} (see '{where} --help')", err=True)
    sys.exit(exc.exit_code)


def _unavailable(name: str, message: str) -> click.Command:
    def callback(**_: object) -> None:
        raise click.ClickException(message)

    return click.Command(name, callback=callback, help=message, context_settings={"ignore_unknown_options": True})


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="scalefinder")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Find which metric to auto-scale a service on, and at what target, by load-testing it."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="scalefinder")


if __name__ == "__main__":
    sys.exit(main())
