"""``scalefinder restore RUN_DIR``: undo the capacity changes of a run that was killed hard.

The experiment writes the controller's snapshot of the original state into the manifest before
it changes anything. This command rebuilds the same kind of controller from the run's resolved
profile and asks it to put that snapshot back, whatever the controller kind.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from loadgen.aws.options import aws_options
from loadgen.capacity import CONTROLLER_KINDS
from loadgen.context import RunContext
from scalefinder.errors import InputError, RunDirectoryError
from scalefinder.rundir import STATUS_RUNNING, RunDirectory, append_event


def restore_run(run_dir: str, options: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    """Restore the capacity recorded in ``run_dir``; return what was restored.

    A run that finished restored itself, and the service may have been changed on purpose
    since; putting the old state back then takes ``force``.
    """
    run = RunDirectory.open(run_dir)
    if run.status != STATUS_RUNNING and not force:
        raise InputError(f"{run.path} finished (status {run.status}) and restored its capacity itself; "
                         f"pass --force to put the recorded original state back anyway")
    capacity = run.manifest.get("capacity") or {}
    kind, original = capacity.get("controller"), capacity.get("original")
    if not kind or original is None:
        raise RunDirectoryError(f"{run.path} records no capacity snapshot; there is nothing to restore")
    if kind not in CONTROLLER_KINDS:
        raise InputError(f"{run.path} was recorded with the unknown controller kind {kind!r}")
    options = dict(options or {})
    if not options.get("aws_region") and isinstance(original, dict) and original.get("region"):
        options["aws_region"] = original["region"]  # restore where the run changed things
    module = importlib.import_module(CONTROLLER_KINDS[kind])
    config = _controller_config(run.manifest, kind)
    controller = module.build(module.validate_config(dict(config), f"capacity.{kind}"),
                              RunContext(profile=None, options=options))
    controller.restore(original)
    append_event(run.path, "restore", controller=kind, original=original, by="scalefinder restore")
    return {"controller": kind, "original": original}


def _controller_config(manifest: dict[str, Any], kind: str) -> dict[str, Any]:
    """The controller's table as the run resolved it (``profile.capacity.config``)."""
    capacity = (manifest.get("profile") or {}).get("capacity") or {}
    if capacity.get("controller") not in (None, kind):
        raise RunDirectoryError(f"the manifest's capacity controller and its profile disagree ({kind})")
    return capacity.get("config") or {}


@click.command("restore")
@click.argument("run_dir", type=click.Path(file_okay=False))
@aws_options
@click.option("--force", is_flag=True, help="Restore even though the run finished and restored itself.")
def restore_command(run_dir: str, aws_region: str | None, aws_profile: str | None, force: bool) -> None:
    """Restore the task count and scaling settings recorded in RUN_DIR.

    Use it when a run was killed before it could clean up (its manifest still says "running").
    An ECS run is restored in the region it recorded unless --region is given.
    """
    restored = restore_run(run_dir, {"aws_region": aws_region, "aws_profile": aws_profile}, force=force)
    click.echo(f"Restored the {restored['controller']} capacity recorded in {run_dir}: "
               f"{_summary(restored['original'])}")


def _summary(original: Any) -> str:
    if isinstance(original, dict):
        return ", ".join(f"{key}={value}" for key, value in original.items() if not isinstance(value, (dict, list)))
    return str(original)
