"""A damaged run directory is one ``Error:`` line with exit 2 from ``analyze``, ``report`` and
``gate``, never a traceback, and the gate never passes on findings that do not validate.

The named damages are those once seen to crash a command; the fuzz then changes any entry of the
manifest and the findings to any JSON value, and cuts or garbles any file, and asks the same of
every command. All in-process, no load.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalefinder.cli import cli
from tests.synthetic import write_synthetic_run

COMMANDS = (("analyze",), ("report",), ("gate", "--slo-rate-rps", "1"))
FUZZ = settings(max_examples=40, derandomize=True, database=None, deadline=timedelta(seconds=10),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory) -> Path:
    # short holds: the commands run on it a hundred times
    run = write_synthetic_run(tmp_path_factory.mktemp("damaged") / "run", "cpu", seed=5, hold_s=10)
    assert CliRunner().invoke(cli, ["analyze", str(run)]).exit_code == 0
    return run


def invoke(args) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    crashed = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, result.output, crashed


def assert_one_error_line_or_success(code: int, output: str, crashed: BaseException | None, where: str) -> None:
    assert crashed is None, f"{where}: {crashed!r}"
    assert "Traceback" not in output, where
    if code != 0:
        errors = [line for line in output.splitlines() if line.startswith("Error:")]
        assert code in (1, 2, 3) and len(errors) == 1, f"{where}: exit {code}: {output}"


def _json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _without_column(path: Path, column: str) -> None:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name != column]
    path.write_text("\n".join(",".join(row[i] for i in keep if i < len(row)) for row in rows) + "\n")


ANALYZE, REPORT, GATE = COMMANDS
ALL = COMMANDS
# Each damage, and the commands that read the damaged file (analyze reads the run's tables and
# manifest; report and gate read the manifest and the findings).
DAMAGES = {
    "an events line that is not an object": ((ANALYZE,), lambda d: (d / "events.jsonl").write_text('[1, 2]\n')),
    "metrics.csv without its unit column": ((ANALYZE,), lambda d: _without_column(d / "metrics.csv", "unit")),
    "invalid UTF-8 in the manifest": (ALL, lambda d: (d / "manifest.json").write_bytes(b'{"kind": "\xff"}')),
    "invalid UTF-8 in steps.csv": ((ANALYZE, REPORT),
                                   lambda d: (d / "steps.csv").write_bytes((d / "steps.csv").read_bytes() + b"\xff,\xfe\n")),
    "invalid UTF-8 in the findings": ((REPORT, GATE), lambda d: (d / "findings.json").write_bytes(b"\xff\xfe")),
    "manifest entries of the wrong type": (ALL, lambda d: _json(d / "manifest.json", lambda m: m.update(
        phases=5, warnings="w", capacity=3, target=[1], started_utc=5))),
    "a damaged [analysis] table in the manifest": ((ANALYZE,), lambda d: _json(
        d / "manifest.json", lambda m: m["profile"].update(analysis={"headroom": "lots"}))),
    "a manifest nested 100,000 deep": (ALL, lambda d: (d / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)),
    "findings nested 100,000 deep": ((REPORT, GATE),
                                     lambda d: (d / "findings.json").write_text("[" * 100_000 + "]" * 100_000)),
    "an event nested 100,000 deep": ((ANALYZE,),
                                     lambda d: (d / "events.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")),
    "findings whose metrics is a string": ((REPORT, GATE),
                                           lambda d: _json(d / "findings.json", lambda f: f.update(metrics="cpu"))),
    "findings whose test entries are not objects": ((REPORT, GATE), lambda d: _json(d / "findings.json", lambda f: f.update(
        metrics=[{"name": "cpu_utilization", "tests": "x", "step_values": 3}]))),
    "findings whose capacity fields are text": ((REPORT, GATE), lambda d: _json(
        d / "findings.json", lambda f: f["capacity"].update(per_task_rps="x", tasks="z"))),
}
CASES = [(damage, command) for damage, (commands, _) in sorted(DAMAGES.items()) for command in commands]


@pytest.mark.parametrize("damage, command", CASES, ids=[f"{c[0]}-{d}" for d, c in CASES])
def test_a_named_damage_is_one_error_line_never_a_traceback(analyzed, tmp_path, damage, command):
    run = tmp_path / "run"
    shutil.copytree(analyzed, run)
    DAMAGES[damage][1](run)
    code, output, crashed = invoke([command[0], run, *command[1:]])
    assert_one_error_line_or_success(code, output, crashed, f"{command[0]} / {damage}")
    assert code == 2, output  # each of these is a damaged input: never a pass, never a report of nonsense


def test_an_output_path_that_is_a_directory_is_one_error_line(analyzed, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(analyzed, run)
    (run / "report.html").mkdir()
    code, output, crashed = invoke(["report", run])
    assert crashed is None and code == 2 and output.strip().splitlines()[-1].startswith("Error: Is a directory")
    code, output, crashed = invoke(["gate", run, "--slo-rate-rps", "1", "--junit", run / "report.html"])
    assert crashed is None and code == 2, output


# -- fuzz ----------------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    """Every path to an entry of a JSON document, up to three levels down."""
    if len(prefix) >= 3:
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _replace(document, path, value):
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@FUZZ
@given(file=st.sampled_from(["manifest.json", "findings.json"]), pick=st.integers(0, 10**6), value=JSON_VALUES,
       command=st.sampled_from(COMMANDS))
def test_any_entry_of_the_manifest_or_findings_changed_to_any_value(analyzed, tmp_path_factory, file, pick, value,
                                                                   command):
    run = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(analyzed, run)
    document = json.loads((run / file).read_text())
    paths = list(_paths(document))
    path = paths[pick % len(paths)]
    _replace(document, path, value)
    (run / file).write_text(json.dumps(document))
    code, output, crashed = invoke([command[0], run, *command[1:]])
    assert_one_error_line_or_success(code, output, crashed, f"{command[0]}: {file} {path} = {value!r}")


@FUZZ
@given(file=st.sampled_from(["manifest.json", "findings.json", "steps.csv", "metrics.csv", "events.jsonl",
                             "load.csv"]),
       cut=st.floats(0, 1), garbage=st.binary(max_size=12), command=st.sampled_from(COMMANDS))
def test_any_file_cut_short_or_garbled(analyzed, tmp_path_factory, file, cut, garbage, command):
    run = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(analyzed, run)
    content = (run / file).read_bytes()
    at = int(len(content) * cut)
    (run / file).write_bytes(content[:at] + garbage)
    code, output, crashed = invoke([command[0], run, *command[1:]])
    assert_one_error_line_or_success(code, output, crashed, f"{command[0]}: {file} cut at {at} + {garbage!r}")


@pytest.mark.parametrize("args", [["analyze", "run\x00"], ["report", "run\x00"], ["gate", "run\x00", "--slo-rate-rps", "1"],
                                  ["runs", "reports\x00"], ["iam-policy", "p\x00.toml"], ["restore", "run\x00"]])
def test_a_nul_byte_in_a_path_is_one_error_line(args):
    """No shell passes one, but a program calling the CLI can; it used to end in a ValueError."""
    code, output, crashed = invoke(args)
    assert crashed is None and code == 2 and output.strip().startswith("Error: an argument contains a NUL byte")


def test_a_metrics_file_with_quoted_column_names_is_not_damage(analyzed, tmp_path):
    """Arrow's CSV writer quotes the header; the column check reads it as CSV, not as text."""
    run = tmp_path / "run"
    shutil.copytree(analyzed, run)
    lines = (run / "metrics.csv").read_text().splitlines()
    quoted = ",".join(f'"{name}"' for name in lines[0].split(","))
    (run / "metrics.csv").write_text("\n".join([quoted, *lines[1:]]) + "\n")
    code, output, crashed = invoke(["analyze", run])
    assert crashed is None and code == 0, output
