"""Property-based tests of ``scalefinder plan`` over hostile profiles: valid profiles with values
replaced by hostile numbers, strings, huge whole numbers, deep arrays, unknown keys and wrong
types. Whatever the input, ``plan`` ends with exit code 0, or 2 and one ``Error:`` line: never a
traceback, never a hang. Fast tier: nothing is started and no load is sent.
"""

from __future__ import annotations

import math
import tempfile
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalefinder.cli import cli

PROFILES = Path(__file__).resolve().parent.parent / "profiles"

# Reproducible in CI: the same examples every run, and no example database written to the tree.
FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=timedelta(seconds=4),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Raw:
    """TOML text put into the document as it is: what a Python value cannot be written as (a
    5,000-digit number, an array nested 1,000 deep) or would not be written as by a serialiser."""

    text: str


def _bases() -> list[dict[str, Any]]:
    """Valid profiles that reach the different parsers: archetype, command and url targets,
    a request mix and a locustfile, the local and Prometheus sources, the command controller."""
    cpu = tomllib.loads((PROFILES / "cpu.toml").read_text())
    command = _replaced(cpu, target={"kind": "local", "command": "srv --port {port} --threads {threads}",
                                     "params": {"threads": 2}})
    url = _replaced(cpu, target={"kind": "url", "url": "http://127.0.0.1:9/", "environment": "staging",
                                 "allowed_hosts": ["127.0.0.1"], "health_path": "/health"},
                    capacity={"controller": "command", "tasks": 2,
                              "command": {"scale": "echo {count}", "current": "echo 2"}},
                    sources={"prometheus": {"url": "http://127.0.0.1:9090", "step_s": 1, "rate_window": "3s"}})
    locustfile = _replaced(cpu, workload={"locustfile": "lf.py", "user_classes": ["Shop"], "timeout_s": 5})
    geometric = _replaced(cpu, ramp={**{k: v for k, v in cpu["ramp"].items() if k != "step_rps"},
                                     "step_factor": 1.5}, gate={"slo_rate_rps": 40, "metric_unchanged": True})
    return [cpu, command, url, locustfile, geometric]


def _replaced(document: dict[str, Any], **tables: Any) -> dict[str, Any]:
    return {**document, **tables}


BASES = _bases()

HOSTILE_NUMBERS = [math.nan, math.inf, -math.inf, 0, -0.0, -1, 1e308, -1e308, 1e-300, 5e-324, 1.0000001,
                   2 ** 63, 2 ** 64, 10 ** 15 + 1, 10 ** 300, 0.001, 86401, 1e6 + 1]
HOSTILE_STRINGS = ["", " ", "\0", "a\nb", "\r\n", "http://[::1", "http://127.0.0.1:99999/", "{port[0]}",
                   "srv {port:99999999}", "srv {port.real}", "{", "}", "{}", "../../etc/passwd", "/dev/zero",
                   "${HOME}", "${SCALEFINDER_UNSET_VARIABLE}", "\u202e", "nan", "inf", "1e308", "-1", "x" * 100_000]
HOSTILE_KEYS = ["", " ", "a\nb", "hold\nTraceback (most recent call last):", "\0", "k" * 10_000, "port",
                "cpu_ms", "[", "."]

# Plausible numbers (in range, slightly out of it, of the wrong sign) get as far as the check of
# their own key; the extreme ones are refused wherever they are.
numbers = st.one_of(
    st.sampled_from(HOSTILE_NUMBERS),
    st.integers(min_value=-10, max_value=10_000),
    st.floats(min_value=-1e7, max_value=1e7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
)
hostile_scalars = st.one_of(
    numbers,
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=30),
    st.booleans(),
    st.integers(min_value=300, max_value=6000).map(lambda digits: Raw("9" * digits)),
    st.sampled_from([17, 200, 1000, 3000]).map(lambda depth: Raw("[" * depth + "]" * depth)),
    st.sampled_from([Raw("1979-05-27T07:32:00Z"), Raw("07:32:00"), Raw("0x" + "f" * 5000), Raw("1" * 4300 + ".5")]),
)
hostile_values = st.one_of(
    hostile_scalars,
    st.lists(hostile_scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), hostile_scalars, max_size=3),
)
hostile_keys = st.one_of(st.sampled_from(HOSTILE_KEYS), st.text(min_size=1, max_size=20))


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a document a value sits: table keys and array indexes."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, prefix + (index,))
    return found


def _tables(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if isinstance(value, dict) else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _tables(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _tables(item, prefix + (index,))
    return found


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _at(document: Any, path: tuple) -> Any:
    for step in path:
        document = document[step]
    return document


@st.composite
def hostile_documents(draw) -> dict[str, Any]:
    """A valid profile with one to three changes: a value replaced, a key added or removed."""
    document = _copy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.sampled_from([1, 1, 2, 3]))):
        action = draw(st.sampled_from(["replace", "replace", "add", "remove"]))
        if action == "add":
            table = _at(document, draw(st.sampled_from(_tables(document))))
            table[draw(hostile_keys)] = draw(hostile_values)
            continue
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _at(document, path[:-1])
        if action == "replace":
            parent[path[-1]] = draw(hostile_values)
        else:
            del parent[path[-1]]
    return document


# -- writing TOML ----------------------------------------------------------------------------


def to_toml(document: dict[str, Any]) -> str:
    """The document as TOML: one line per top-level key, tables inline, every key quoted."""
    return "".join(f"{_string(key)} = {_value(value)}\n" for key, value in document.items())


def _string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


def _value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(key)} = {_value(item)}" for key, item in value.items()) + "}"
    raise TypeError(type(value))


# -- the properties --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as name:
        path = Path(name)
        (path / "lf.py").write_text("")  # the locustfile base profile's file
        yield path


def test_every_base_profile_plans(workdir):
    """The documents the fuzzing starts from are valid: a refusal below is the change's doing."""
    for number, document in enumerate(BASES):
        path = workdir / f"base{number}.toml"
        path.write_text(to_toml(document))
        result = CliRunner().invoke(cli, ["plan", str(path)])
        assert result.exit_code == 0, (number, result.output)


def assert_plan_ends_cleanly(path: Path) -> None:
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), (result.exit_code, result.output[-2000:])
    if result.exit_code == 2:
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), lines[:3]
        assert result.stderr.strip() == lines[0]  # on stderr, nothing on stdout
        assert len(lines[0]) < 2000, lines[0][:300]


@pytest.mark.timeout(120)
@FUZZ
@given(document=hostile_documents())
def test_plan_of_a_hostile_profile_is_a_plan_or_one_error_line(workdir, document):
    path = workdir / "p.toml"
    path.write_text(to_toml(document))
    assert_plan_ends_cleanly(path)


@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=100)
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda data: data.decode("latin-1"))),
       base=st.sampled_from(BASES), cut=st.integers(min_value=0, max_value=2000))
def test_plan_of_damaged_toml_text_is_a_plan_or_one_error_line(workdir, text, base, cut):
    """Text that is not TOML, or a valid profile cut short with text appended."""
    path = workdir / "t.toml"
    path.write_text(to_toml(base)[:cut] + text, encoding="utf-8")
    assert_plan_ends_cleanly(path)


@pytest.mark.timeout(60)
@settings(FUZZ, max_examples=40)
@given(name=st.one_of(st.text(min_size=1, max_size=40), st.sampled_from(["\0", "a\nb", "x" * 5000, "..", "/"])))
def test_plan_of_a_hostile_file_name_is_one_error_line(workdir, name):
    assert_plan_ends_cleanly(workdir / name)
