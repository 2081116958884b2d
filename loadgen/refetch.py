"""``scalefinder fetch-metrics RUN_DIR``: read a finished run's retrospective sources again.

A run fetches its CloudWatch or Prometheus metrics after its last step. When that fetch failed
(expired credentials, a throttled account, a network outage) or was skipped (a second Ctrl-C),
this command rebuilds the same sources from the run's resolved profile (``profile.sources`` in
the manifest, as ``restore`` rebuilds the controller), asks each for the windows of the
recorded steps (``steps.csv``) and replaces that source's rows in ``metrics.csv``; the rows of
live sources (``local``) are kept as they are. The manifest's description of each source and
its fetch warnings are brought up to date, and a ``metrics_refetch`` event is appended.

``metrics.csv`` is written to a temporary file and renamed over the old one, so a refetch that
is stopped or fails part-way leaves the run directory as it was.
"""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path
from typing import Any

import click

from scalefinder.core.errors import InfrastructureError, InputError, Interrupted, RunDirectoryError, ScalefinderError
from scalefinder.core.rundir import (MANIFEST, STATUS_RUNNING, RunDirectory, append_event, iso_utc, read_json,
                                     replace_metrics, utc_now, write_json_atomic)
from scalefinder.loadgen.aws.options import aws_options
from scalefinder.loadgen.context import RunContext
from scalefinder.loadgen.manifest import source_descriptions
from scalefinder.loadgen.signals import RunSignals, Stopped
from scalefinder.loadgen.sources import SOURCE_KINDS
from scalefinder.loadgen.sources.base import MetricSource

logger = logging.getLogger(__name__)

# The experiment's warnings about a fetch: "<kinds> metrics incomplete|could not be fetched|were not fetched..."
_FETCH_WARNING = re.compile(r"^(?P<kinds>[a-z0-9_]+(?:, [a-z0-9_]+)*) metrics "
                            r"(?:incomplete|could not be fetched|were not fetched)\b")


def refetch_run(run_dir: str | Path, options: dict[str, Any] | None = None,
                on_note: Any = None) -> dict[str, Any]:
    """Fetch the retrospective sources of the finished run in ``run_dir`` again and replace their
    rows in its metrics.csv; return ``{kind: rows}`` of what was written.

    Refuses a run still ``running`` (it may be fetching itself, or was killed: restore it first).
    A source that fails keeps its old rows; the others are written, then the failure is raised.
    """
    note = on_note or (lambda text: None)
    run = RunDirectory.open(run_dir)
    if run.status == STATUS_RUNNING:
        raise InputError(f"{run.path} is still running (or was killed before it finished: its manifest says "
                         f"\"running\"); fetch-metrics reads only a finished run")
    configs = (run.manifest.profile.get("sources") or {})
    if not isinstance(configs, dict) or not configs:
        raise RunDirectoryError(f"{run.path} records no metric sources in its profile")
    kinds = [kind for kind in configs if not _is_live(kind, run.path)]
    if not kinds:
        raise InputError(f"{run.path} has no retrospective metric source (CloudWatch, Prometheus) to fetch again; "
                         f"its sources ({', '.join(configs)}) were recorded during the run")
    windows = _windows(run)
    if not windows:
        raise InputError(f"{run.path} recorded no step; there is no window to fetch metrics for")

    signals = RunSignals()
    sources: dict[str, MetricSource] = {}
    fetched: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, ScalefinderError] = {}
    with signals.stop_the_run():  # Ctrl-C or SIGTERM stops the fetch; nothing is written then
        try:
            for kind in kinds:
                try:
                    source = _rebuild(kind, configs[kind], run.manifest.sources.get(kind), options or {})
                    sources[kind] = source
                    wait = f" (waiting up to {source.settle_s:g} s for the last step's data to settle)" \
                        if source.settle_s else ""
                    note(f"fetching {kind} metrics for {len(windows)} steps{wait}")
                    fetched[kind] = source.fetch_windows(windows)
                except ScalefinderError as exc:
                    failed[kind] = exc
            signals.defer()  # the metrics and the manifest are written whole
            if fetched:
                replace_metrics(run.path, {sources[kind].name for kind in fetched},
                                [row for rows in fetched.values() for row in rows])
                _update_manifest(run.path, {kind: sources[kind] for kind in fetched})
                append_event(run.path, "metrics_refetch", by="scalefinder fetch-metrics",
                             rows={kind: len(rows) for kind, rows in fetched.items()},
                             failed={kind: str(exc) for kind, exc in failed.items()})
        except Stopped as exc:
            raise Interrupted(f"fetch-metrics was stopped by {exc.signal_name}; {run.path} is unchanged") from None
        finally:
            for source in sources.values():
                source.stop()
        if signals.during_cleanup:
            raise Interrupted(f"fetch-metrics was stopped by {signals.during_cleanup} after it had written "
                              f"{run.path}")
    if failed:
        written = f"; the rows of {', '.join(fetched)} were replaced" if fetched else f"; {run.path} is unchanged"
        error = InputError if all(isinstance(exc, InputError) for exc in failed.values()) else InfrastructureError
        raise error("; ".join(f"{kind} metrics could not be fetched: {exc}" for kind, exc in failed.items()) + written)
    return {kind: len(rows) for kind, rows in fetched.items()}


def _is_live(kind: str, path: Path) -> bool:
    """Whether a source kind records its rows during the run (then there is nothing to fetch)."""
    if kind not in SOURCE_KINDS:
        raise RunDirectoryError(f"{path} was recorded with the unknown metric source kind {kind!r}")
    module = importlib.import_module(SOURCE_KINDS[kind])
    classes = [value for value in vars(module).values()
               if isinstance(value, type) and issubclass(value, MetricSource) and value is not MetricSource
               and value.__module__ == module.__name__ and value.name == kind]
    return not classes or any(cls.live for cls in classes)


def _windows(run: RunDirectory) -> list[tuple[float, float]]:
    steps = run.steps()
    return [(float(start), float(end)) for start, end in zip(steps["start_unix_s"], steps["end_unix_s"])
            if start == start and end == end and end > start]


def _rebuild(kind: str, config: Any, recorded: Any, options: dict[str, Any]) -> MetricSource:
    """The source as the run built it, from the resolved table of the profile."""
    if not isinstance(config, dict):
        raise RunDirectoryError(f"the manifest's profile.sources.{kind} is not a table")
    module = importlib.import_module(SOURCE_KINDS[kind])
    config = module.validate_config(dict(config), f"sources.{kind}")
    recorded = recorded if isinstance(recorded, dict) else {}
    options = dict(options)
    if not options.get("aws_region") and not config.get("region") and recorded.get("region"):
        options["aws_region"] = recorded["region"]  # fetch where the run read
    if kind == "prometheus":
        return _prometheus(module, config, recorded)
    if kind == "cloudwatch":
        return _cloudwatch(module, config, options)
    return module.build(config, RunContext(profile=None, options=options))


def _cloudwatch(module: Any, config: dict[str, Any], options: dict[str, Any]) -> MetricSource:
    """CloudWatch as ``build`` makes it, without the preflight: that checks the service has data in
    the last minutes, which says nothing about a finished run's windows."""
    from scalefinder.loadgen.aws.discovery import discover
    from scalefinder.loadgen.aws.session import AwsClients

    clients = AwsClients(region=options.get("aws_region") or config.get("region"),
                         profile=options.get("aws_profile"))
    return module.CloudWatchSource(clients, discover(clients, config["cluster"], config["service"]), config)


def _prometheus(module: Any, config: dict[str, Any], recorded: dict[str, Any]) -> MetricSource:
    """Prometheus without its preflight: the preflight checks for data of the last minutes, which
    an old run no longer has, and the local exporter it may have served went with the run."""
    source = module.PrometheusSource(config, headers=module.auth_headers(config))
    if isinstance(recorded.get("resources"), dict):
        source.resources = dict(recorded["resources"])  # what the preflight found during the run
    if isinstance(recorded.get("scrape_interval_s"), dict):
        source.scrape_intervals_s = dict(recorded["scrape_interval_s"])
    return source


def _update_manifest(path: Path, sources: dict[str, MetricSource]) -> None:
    """The refetched sources' descriptions and warnings; every other field as it was."""
    manifest = read_json(path / MANIFEST, "a run manifest")
    described = dict(manifest.get("sources") or {})
    refetched = iso_utc(utc_now())
    for kind, description in source_descriptions(sources).items():
        recorded = described.get(kind) if isinstance(described.get(kind), dict) else {}
        # what the run found and the refetch does not know (its preflight) stays
        kept = {key: value for key, value in recorded.items() if description.get(key) in (None, {})}
        described[kind] = {**description, **kept, "refetched_utc": refetched}
    warnings = [warning for warning in manifest.get("warnings") or []
                if not _about(warning, set(sources))]
    for kind, source in sources.items():
        warnings.extend(f"{kind} metrics incomplete: {warning}" for warning in source.warnings)
    manifest.update(sources=described, warnings=warnings)
    write_json_atomic(path / MANIFEST, manifest)


def _about(warning: Any, kinds: set[str]) -> bool:
    """Whether a warning is the run's word on fetching one of ``kinds``, now out of date."""
    match = _FETCH_WARNING.match(warning) if isinstance(warning, str) else None
    return bool(match) and bool(set(match.group("kinds").split(", ")) & kinds)


@click.command("fetch-metrics")
@click.argument("run_dir", type=click.Path(file_okay=False))
@aws_options
def fetch_metrics_command(run_dir: str, aws_region: str | None, aws_profile: str | None) -> None:
    """Fetch RUN_DIR's CloudWatch or Prometheus metrics again for its recorded steps.

    Use it when the run could not fetch them (expired credentials, an outage, a second Ctrl-C):
    the sources are rebuilt from the run's resolved profile, their rows in metrics.csv are
    replaced and those of live sources kept. A CloudWatch source reads the region the run
    recorded unless --region is given. Analyze the run again afterwards.
    """
    written = refetch_run(run_dir, {"aws_region": aws_region, "aws_profile": aws_profile},
                          on_note=lambda text: click.echo(text, err=True))
    for kind, rows in written.items():
        click.echo(f"Replaced the {kind} metrics of {run_dir}: {rows} rows")
    if (Path(run_dir) / "findings.json").exists():
        click.echo(f"Its findings are now out of date: run `scalefinder analyze {run_dir}` again.")
