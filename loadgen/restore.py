"""``scalefinder restore RUN_DIR``: undo the capacity changes of a run that was killed hard.

The experiment writes the controller's snapshot of the original state into the manifest before
it changes anything. This command rebuilds the same kind of controller from the run's resolved
profile and asks it to put that snapshot back, whatever the controller kind.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from scalefinder.loadgen.aws.options import aws_options
from scalefinder.loadgen.capacity import CONTROLLER_KINDS
from scalefinder.loadgen.cluster.cgroups import MODE_V1, MODE_V2, remove_groups_left_by
from scalefinder.loadgen.context import RunContext
from scalefinder.core.models import RunManifest
from scalefinder.core.errors import InputError, RunDirectoryError
from scalefinder.core.rundir import MANIFEST, STATUS_RUNNING, RunDirectory, append_event, read_json, write_json_atomic


def restore_run(run_dir: str, options: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any]:
    """Restore the capacity recorded in ``run_dir``; return what was restored.

    A run that finished restored itself, and the service may have been changed on purpose
    since; putting the old state back then takes ``force``, unless the run recorded that its own
    restore failed (the manifest's ``capacity.restored`` is false).
    """
    run = RunDirectory.open(run_dir)
    capacity = run.manifest.capacity
    failed_restore = capacity.get("restored") is False  # the run's own restore raised
    if run.status != STATUS_RUNNING and not failed_restore and not force:
        raise InputError(f"{run.path} finished (status {run.status}) and restored its capacity itself; "
                         f"pass --force to put the recorded original state back anyway")
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
    restored: dict[str, Any] = {"controller": kind, "original": original}
    if run.manifest.target_kind == "local":
        removed, left = _remove_leftover_cgroups(run.manifest)
        restored.update(cgroups_removed=removed, cgroups_left=left)
    append_event(run.path, "restore", **restored, by="scalefinder restore")
    if failed_restore:
        _record_restored(run.path)
    return restored


def _record_restored(path: Path) -> None:
    """The run's own restore failed and this one succeeded: say so in the manifest, so that
    restoring it again takes --force like any other finished run."""
    manifest = read_json(path / MANIFEST, "a run manifest")
    capacity = manifest.get("capacity")
    if isinstance(capacity, dict):
        capacity.update(restored=True, restored_by="scalefinder restore")
        write_json_atomic(path / MANIFEST, manifest)


def _remove_leftover_cgroups(manifest: RunManifest) -> tuple[list[str], list[str]]:
    """Remove the cgroups a killed run's local cluster left behind; return those removed and
    those left in place. The cluster ran in the run's own process, so its groups carry the
    manifest's ``pid``; a run that did not enforce reservations made none."""
    if manifest.cgroup_mode not in (MODE_V1, MODE_V2) or manifest.pid is None:
        return [], []
    removed, left = remove_groups_left_by(manifest.pid)
    return [str(path) for path in removed], [str(path) for path in left]


def _controller_config(manifest: RunManifest, kind: str) -> dict[str, Any]:
    """The controller's table as the run resolved it (``profile.capacity.config``)."""
    capacity = manifest.profile.get("capacity") or {}
    if capacity.get("controller") not in (None, kind):
        raise RunDirectoryError(f"the manifest's capacity controller and its profile disagree ({kind})")
    return capacity.get("config") or {}


@click.command("restore")
@click.argument("run_dir", type=click.Path(file_okay=False))
@aws_options
@click.option("--force", is_flag=True, help="Restore even though the run finished and restored itself.")
def restore_command(run_dir: str, aws_region: str | None, aws_profile: str | None, force: bool) -> None:
    """Restore the task count and scaling settings recorded in RUN_DIR.

    Use it when a run was killed before it could clean up (its manifest still says "running"),
    or when its own restore failed (the manifest's capacity entry says "restored": false).
    An ECS run is restored in the region it recorded unless --region is given. For a run on the
    local cluster, the cgroups it left behind are removed too.
    """
    restored = restore_run(run_dir, {"aws_region": aws_region, "aws_profile": aws_profile}, force=force)
    click.echo(f"Restored the {restored['controller']} capacity recorded in {run_dir}: "
               f"{_summary(restored['original'])}")
    if "cgroups_removed" in restored:
        _report_cgroups(restored["cgroups_removed"], restored["cgroups_left"])


def _report_cgroups(removed: list[str], left: list[str]) -> None:
    if removed:
        click.echo(f"Removed the cgroups the run's local cluster left behind: {', '.join(removed)}")
    elif not left:
        click.echo("The run's local cluster left no cgroups behind; there was nothing to remove.")
    if left:
        click.echo(f"Warning: left cgroups of the run's local cluster in place (its process is still running, or "
                   f"they are not writable here): {', '.join(left)}", err=True)


def _summary(original: Any) -> str:
    if isinstance(original, dict):
        return ", ".join(f"{key}={value}" for key, value in original.items() if not isinstance(value, (dict, list)))
    return str(original)
