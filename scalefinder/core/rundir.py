"""The run directory: the contract between the run side and the read side.

A run directory is written while the experiment goes on, so a run killed at any point leaves
something readable, and it is read by ``analyze``, ``report`` and ``gate`` wherever it was
recorded. The format is documented in ``docs/run-directory.md``; this module is its only
writer and reader.

Files (all UTF-8):

* ``manifest.json``  - versioned metadata, rewritten atomically at every status change
* ``steps.csv``      - one row per finished step
* ``load.csv``       - the load generator's 1-second series
* ``metrics.csv``    - every metric sample in one long table: time, source, metric, task, value, unit
* ``events.jsonl``   - scale changes, crashes, aborts, warnings, one JSON object a line

Times in the CSV files are ``time_unix_s``: seconds since the Unix epoch, UTC. Times in JSON are
ISO 8601 strings with an explicit UTC offset.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from scalefinder.core.errors import InfrastructureError, PartialRunError, RunDirectoryError
from scalefinder.core.slo import SLO_LATENCY_COLUMN

from scalefinder.core.models import RUN_KIND, RUN_SCHEMA_VERSION as SCHEMA_VERSION, RunManifest, StepRow

MANIFEST = "manifest.json"
STEPS = "steps.csv"
LOAD = "load.csv"
METRICS = "metrics.csv"
EVENTS = "events.jsonl"

# Run status values. "running" on disk after the process is gone means it was killed hard.
STATUS_RUNNING = "running"
STATUS_COMPLETE = "complete"
STATUS_ABORTED = "aborted"  # stopped by a safety rule; the data up to the abort is valid
STATUS_INTERRUPTED = "interrupted"  # SIGINT / SIGTERM
STATUS_FAILED = "failed"  # an error ended the run
FINISHED_STATUSES = {STATUS_COMPLETE, STATUS_ABORTED, STATUS_INTERRUPTED, STATUS_FAILED}

METRIC_COLUMNS = ["time_unix_s", "source", "metric", "task", "value", "unit"]
# Runs of one profile that may start in the same second and still each get a default directory.
MAX_SAME_SECOND_RUNS = 1000
# Bytes of metrics.csv read at a time by metric_batches: large enough that per-block work is
# negligible, small enough that a block is a few tens of MB in memory.
METRIC_BLOCK_BYTES = 16 << 20

# The columns are the fields of the step row model, which documents each of them.
STEP_COLUMNS = StepRow.columns()
# Step columns added to schema 1 after runs had been recorded with it. A reader fills them with
# empty values when an older run lacks them, and an older reader, which checks only for the
# columns it knows, ignores them; so they need no new schema version. Kept last in the header
# so the position of every older column is unchanged.
OPTIONAL_STEP_COLUMNS = (SLO_LATENCY_COLUMN,)

LOAD_COLUMNS = [
    "time_unix_s",
    "step_id",
    "phase",
    "tasks",
    "offered_rps",
    "sent",
    "completed",
    "failures",
    "dropped",
    "late",
    "in_flight",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "generator_cpu_pct",
]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_run_directory(parent: str | Path, run_id: str) -> tuple[str, Path]:
    """Make a new, empty directory for a run under ``parent``; return the run's id and the path.

    The directory is named ``run_id``, or ``run_id-2``, ``run_id-3`` ... when runs that started
    in the same second already took the earlier names, and the id returned is that name. Each
    name is claimed with a single ``mkdir``, which only one process can win, so two runs never
    share a directory, and ids stay readable and sort by start time.
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for number in range(1, MAX_SAME_SECOND_RUNS + 1):
            name = run_id if number == 1 else f"{run_id}-{number}"
            try:
                (parent / name).mkdir()
            except FileExistsError:
                continue
            return name, parent / name
    except OSError as exc:
        raise InfrastructureError(f"cannot create a run directory in {parent}: {exc.strerror or exc}") from None
    raise RunDirectoryError(f"{parent} already holds {MAX_SAME_SECOND_RUNS} runs named {run_id}; choose an --out")


def iso_utc(moment: datetime | float) -> str:
    if isinstance(moment, (int, float)):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    if moment.tzinfo is None:
        raise ValueError("naive datetime given where a UTC time is required")
    return moment.astimezone(timezone.utc).isoformat()


class _CsvAppender:
    """Appends rows to a CSV file, writing the header once and flushing every write."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = path
        self.columns = columns
        self._lock = threading.Lock()
        new = not path.exists() or path.stat().st_size == 0
        self._file = open(path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="raise")
        if new:
            self._writer.writeheader()
            self._file.flush()

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        count = 0
        with self._lock:
            for row in rows:
                self._writer.writerow({k: _csv_value(row.get(k)) for k in self.columns})
                count += 1
            self._file.flush()
        return count

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()


def replace_metrics(path: str | Path, sources: set[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` of the run directory ``path`` without the rows of ``sources``, plus
    ``rows``: written to a temporary file, then renamed over the old one, so a rewrite stopped or
    failing part-way leaves the file as it was. A row cut short (a hard kill) is dropped."""
    path = Path(path)
    target = path / METRICS
    temporary = path / (METRICS + ".rewrite.tmp")
    try:
        writer = _CsvAppender(temporary, METRIC_COLUMNS)
        try:
            if target.exists():
                with open(target, newline="", encoding="utf-8", errors="replace") as handle:
                    reader = csv.DictReader(handle)
                    missing = [c for c in METRIC_COLUMNS if c not in (reader.fieldnames or [])]
                    if reader.fieldnames and missing:
                        raise RunDirectoryError(f"{target} lacks the columns {', '.join(missing)}")
                    writer.append(row for row in reader if row.get("source") not in sources and _whole_row(row))
            writer.append(rows)
        finally:
            writer.close()  # flushed and synced before the rename
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _whole_row(row: Mapping[str, Any]) -> bool:
    return None not in row and all(row.get(column) is not None for column in METRIC_COLUMNS) and bool(row.get("unit"))


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6)) if value == value else ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


class RunWriter:
    """Writes a run directory as the run goes. Thread-safe; every write is flushed at once."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self._manifest_lock = threading.Lock()
        self.manifest = dict(manifest)
        self._metrics: _CsvAppender
        self._load: _CsvAppender
        self._steps: _CsvAppender
        self._events_lock = threading.Lock()
        self._events_file: io.TextIOWrapper

    @classmethod
    def create(cls, path: str | Path, manifest: dict[str, Any]) -> "RunWriter":
        """Create a new run directory. ``manifest`` holds the run's metadata (profile, target ...)."""
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise RunDirectoryError(f"{path} already exists and is not empty; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        base = {
            "schema_version": SCHEMA_VERSION,
            "kind": RUN_KIND,
            "status": STATUS_RUNNING,
            "status_reason": None,
            "started_utc": iso_utc(utc_now()),
            "finished_utc": None,
            "pid": os.getpid(),
            "phases": [],
            "warnings": [],
        }
        base.update(manifest)
        writer = cls(path, base)
        writer._metrics = _CsvAppender(path / METRICS, METRIC_COLUMNS)
        writer._load = _CsvAppender(path / LOAD, LOAD_COLUMNS)
        writer._steps = _CsvAppender(path / STEPS, STEP_COLUMNS)
        writer._events_file = open(path / EVENTS, "a", encoding="utf-8")
        writer.write_manifest()
        return writer

    # -- manifest -------------------------------------------------------------------------
    def write_manifest(self) -> None:
        with self._manifest_lock:
            _write_json_atomic(self.path / MANIFEST, self.manifest)

    def update_manifest(self, **fields: Any) -> None:
        with self._manifest_lock:
            self.manifest.update(fields)
            _write_json_atomic(self.path / MANIFEST, self.manifest)

    def add_warning(self, message: str) -> None:
        with self._manifest_lock:
            self.manifest.setdefault("warnings", []).append(message)
            _write_json_atomic(self.path / MANIFEST, self.manifest)
        self.event("warning", message=message)

    def start_phase(self, name: str, tasks: int, **detail: Any) -> None:
        with self._manifest_lock:
            phases = self.manifest.setdefault("phases", [])
            if phases and phases[-1].get("end_utc") is None:
                phases[-1]["end_utc"] = iso_utc(utc_now())
            phases.append({"name": name, "tasks": tasks, "start_utc": iso_utc(utc_now()), "end_utc": None, **detail})
            _write_json_atomic(self.path / MANIFEST, self.manifest)
        self.event("phase_start", phase=name, tasks=tasks, **detail)

    def finish(self, status: str, reason: str | None = None) -> None:
        """Mark the run finished with ``status`` and close every file."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"unknown final status {status!r}")
        now = iso_utc(utc_now())
        with self._manifest_lock:
            phases = self.manifest.get("phases", [])
            if phases and phases[-1].get("end_utc") is None:
                phases[-1]["end_utc"] = now
            self.manifest.update(status=status, status_reason=reason, finished_utc=now)
            _write_json_atomic(self.path / MANIFEST, self.manifest)
        self.event("run_end", status=status, reason=reason)
        self.close()

    # -- tables ---------------------------------------------------------------------------
    def append_metrics(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append metric samples: dicts with time_unix_s, source, metric, task, value, unit.

        ``task`` is the task id for per-task samples and "" for service-level ones.
        """
        return self._metrics.append(rows)

    def append_load(self, row: Mapping[str, Any]) -> None:
        self._load.append([row])

    def append_step(self, row: StepRow | Mapping[str, Any]) -> None:
        self._steps.append([row.to_row() if isinstance(row, StepRow) else row])

    def event(self, kind: str, **detail: Any) -> None:
        now = utc_now()
        record = {"time_utc": iso_utc(now), "time_unix_s": now.timestamp(), "kind": kind, **detail}
        line = json.dumps(record, default=str, sort_keys=True)
        with self._events_lock:
            if not self._events_file.closed:
                self._events_file.write(line + "\n")
                self._events_file.flush()

    def close(self) -> None:
        for appender in (self._metrics, self._load, self._steps):
            appender.close()
        with self._events_lock:
            if not self._events_file.closed:
                self._events_file.close()


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    """A JSON file of the run directory; a file that cannot be read as JSON is one error line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirectoryError(f"{path} is not valid JSON ({exc})") from None
    except RecursionError:
        raise RunDirectoryError(f"{path} is nested too deeply to be {what}") from None


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so a reader never sees half a file (used for findings and summaries too)."""
    _write_json_atomic(Path(path), data)


def append_event(path: str | Path, kind: str, **detail: Any) -> None:
    """Add one event to the log of a run directory no process is writing (e.g. a later restore)."""
    now = utc_now()
    record = {"time_utc": iso_utc(now), "time_unix_s": now.timestamp(), "kind": kind, **detail}
    events = Path(path) / EVENTS
    with open(events, "a+b") as handle:
        # A hard kill can leave half a line; it would no longer be the last line, so drop it.
        handle.seek(0)
        content = handle.read()
        if content and not content.endswith(b"\n"):
            handle.truncate(content.rfind(b"\n") + 1)
        handle.seek(0, os.SEEK_END)
        handle.write((json.dumps(record, default=str, sort_keys=True) + "\n").encode("utf-8"))


@dataclass
class RunDirectory:
    """A run directory opened for reading. Tables are loaded lazily as pandas DataFrames."""

    path: Path
    manifest: RunManifest
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | Path) -> "RunDirectory":
        path = Path(path)
        if not path.is_dir():
            raise RunDirectoryError(f"{path} is not a directory (expected a run directory)")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise RunDirectoryError(f"{path} has no {MANIFEST}; it is not a scalefinder run directory")
        manifest = read_json(manifest_path, "a run manifest")
        if not isinstance(manifest, dict) or manifest.get("kind") != RUN_KIND:
            raise RunDirectoryError(f"{manifest_path} is not a scalefinder run manifest")
        return cls(path=path, manifest=RunManifest.from_dict(manifest, source=str(path)))

    # -- status ---------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self.manifest.status

    @property
    def is_complete(self) -> bool:
        return self.status == STATUS_COMPLETE

    @property
    def is_partial(self) -> bool:
        """True when the run did not finish normally (killed, interrupted, failed)."""
        return self.status not in (STATUS_COMPLETE, STATUS_ABORTED)

    def require_complete(self) -> None:
        if self.is_partial:
            reason = self.manifest.status_reason or (
                "the run is still in progress or was killed" if self.status == STATUS_RUNNING else "no reason recorded"
            )
            raise PartialRunError(f"{self.path} is a partial run (status {self.status}: {reason})")

    # -- tables ---------------------------------------------------------------------------
    def steps(self):
        return self._table(STEPS, STEP_COLUMNS, OPTIONAL_STEP_COLUMNS)

    def load(self):
        return self._table(LOAD, LOAD_COLUMNS)

    def metrics(self):
        return self._table(METRICS, METRIC_COLUMNS)

    def metric_batches(self, block_bytes: int = METRIC_BLOCK_BYTES):
        """metrics.csv for analysis, a block of rows at a time (about 250,000 rows a block at the
        default size): DataFrames of ``time_unix_s`` and ``value`` as floats, ``metric`` and
        ``task`` as categories (an empty task is the service level), ``source`` and ``unit``
        dropped.

        Read by Arrow's streaming reader with dictionary encoding, so that a reader can reduce
        each block as it comes and a run of tens of millions of samples never sits in memory
        whole. A row cut short by a hard kill, and a row whose time or value is not a finite
        number, is skipped.
        """
        return _metric_batches(self.path / METRICS, block_bytes)

    def metric_samples(self):
        """All of metrics.csv as one DataFrame of the columns ``metric_batches`` yields (for
        small runs and inspection; the analysis reduces the blocks instead)."""
        import numpy as np
        import pandas as pd
        from pandas.api.types import union_categoricals

        batches = list(self.metric_batches())
        if not batches:
            return _empty_metric_samples()
        columns = {"time_unix_s": np.concatenate([b["time_unix_s"].to_numpy() for b in batches]),
                   "value": np.concatenate([b["value"].to_numpy() for b in batches])}
        for name in ("metric", "task"):
            columns[name] = union_categoricals([b[name] for b in batches])
        return pd.DataFrame(columns)[["time_unix_s", "metric", "task", "value"]]

    def events(self) -> list[dict[str, Any]]:
        if "events" not in self._cache:
            events: list[dict[str, Any]] = []
            path = self.path / EVENTS
            if path.exists():
                try:
                    lines = path.read_text(encoding="utf-8").splitlines()
                except UnicodeDecodeError as exc:
                    raise RunDirectoryError(f"{path} is not UTF-8 text ({exc})") from None
                for number, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        # A hard kill can cut the last line short; anything else is corruption.
                        if number == len(lines):
                            continue
                        raise RunDirectoryError(f"{path}:{number} is not valid JSON") from None
                    except RecursionError:
                        raise RunDirectoryError(f"{path}:{number} is nested too deeply to be an event") from None
                    if not isinstance(record, dict):
                        raise RunDirectoryError(f"{path}:{number} is not a JSON object")
                    events.append(record)
            self._cache["events"] = events
        return self._cache["events"]

    def _table(self, name: str, columns: list[str], optional: tuple[str, ...] = ()):
        if name in self._cache:
            return self._cache[name]
        import pandas as pd

        path = self.path / name
        if not path.exists() or path.stat().st_size == 0:
            frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
        else:
            frame = _read_csv(path, columns, optional)
        self._cache[name] = frame
        return frame


def _read_csv(path: Path, columns: list[str], optional: tuple[str, ...] = ()):
    import pandas as pd

    dtypes = {"source": "string", "metric": "string", "task": "string", "unit": "string", "phase": "string"}
    dtypes = {k: v for k, v in dtypes.items() if k in columns}
    try:
        try:
            frame = pd.read_csv(path, engine="pyarrow", dtype=dtypes)
        except Exception:  # pyarrow is strict about a cut final line; the C engine skips it
            frame = pd.read_csv(path, dtype=dtypes, on_bad_lines="skip")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise RunDirectoryError(f"{path} cannot be read as CSV ({exc})") from None
    missing = [c for c in columns if c not in frame.columns and c not in optional]
    if missing:
        raise RunDirectoryError(f"{path} lacks the columns {', '.join(missing)}")
    for column in optional:
        if column not in frame.columns:
            frame[column] = float("nan")
    if "task" in frame.columns:
        frame["task"] = frame["task"].fillna("")
    if "time_unix_s" in frame.columns:
        frame["time_unix_s"] = pd.to_numeric(frame["time_unix_s"], errors="coerce")
        frame = frame.dropna(subset=["time_unix_s"])
    for column in ("valid", "slo_met"):
        if column in frame.columns and frame[column].dtype != bool:
            frame[column] = frame[column].astype("string").str.lower().eq("true")
    return frame


def _empty_metric_samples():
    import pandas as pd

    return pd.DataFrame({"time_unix_s": pd.Series(dtype="float64"), "metric": pd.Series(dtype="category"),
                         "task": pd.Series(dtype="category"), "value": pd.Series(dtype="float64")})


def _metric_batches(path: Path, block_bytes: int):
    import pyarrow as pa

    if not path.exists() or path.stat().st_size == 0:
        return
    names = pa.dictionary(pa.int32(), pa.string())
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader([handle.readline()]), [])  # names may be quoted (Arrow's writer quotes them)
    missing = [c for c in METRIC_COLUMNS if c != "source" and c not in header]
    if missing:  # checked first: Arrow reports a missing column as a KeyError of its own
        raise RunDirectoryError(f"{path} lacks the columns {', '.join(missing)}")
    with _quiet_undecodable_rows():
        yield from _arrow_blocks(path, block_bytes, names)


def _arrow_blocks(path: Path, block_bytes: int, names):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block_bytes),
            parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
            convert_options=pacsv.ConvertOptions(
                include_columns=["time_unix_s", "metric", "task", "value", "unit"],
                column_types={"time_unix_s": pa.float64(), "value": pa.float64(), "metric": names, "task": names,
                              "unit": names},
                strings_can_be_null=True,
            ),
        )
        for batch in reader:
            frame = _metric_frame(batch)
            if len(frame):
                yield frame
    except (pa.ArrowException, OSError) as exc:  # a damaged block may be met anywhere in the file
        raise RunDirectoryError(f"{path} cannot be read as CSV ({exc})") from None


@contextmanager
def _quiet_undecodable_rows():
    """Arrow decodes a malformed row's text before it calls the skip handler; a row that is not
    UTF-8 fails in that decoding, inside Arrow, and Python prints the failure with a traceback
    ("Exception ignored in ...") while the read goes on to fail with an Arrow error, which is
    reported as one line. Only that printout is silenced, and only while the file is read."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, UnicodeDecodeError):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _metric_frame(batch):
    """One Arrow block as the analysis' DataFrame, without the rows that cannot be trusted."""
    import numpy as np
    import pandas as pd

    times = batch.column("time_unix_s").to_numpy(zero_copy_only=False).astype(float, copy=False)
    values = batch.column("value").to_numpy(zero_copy_only=False).astype(float, copy=False)
    metric = batch.column("metric")
    # A line cut inside its last field still has six columns but no unit: it is not trusted.
    keep = (batch.column("unit").is_valid().to_numpy(zero_copy_only=False) & np.isfinite(times)
            & np.isfinite(values) & metric.is_valid().to_numpy(zero_copy_only=False))
    task = batch.column("task").to_pandas()
    if task.isna().any():  # an empty field is read as null: it is the service level
        task = task.cat.add_categories([""]).fillna("") if "" not in task.cat.categories else task.fillna("")
    frame = pd.DataFrame({"time_unix_s": times, "metric": metric.to_pandas(), "task": task, "value": values})
    return frame if keep.all() else frame[keep].reset_index(drop=True)
