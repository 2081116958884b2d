"""Hostile profiles: each input that once made ``plan`` or ``run`` traceback or hang is one error
line and exit code 2, quickly, before anything starts."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from scalefinder.loadgen.plan import ramp_rates
from scalefinder.loadgen.profile import MAX_PLANNED_REQUESTS, MAX_RAMP_STEPS, Ramp, load_profile
from scalefinder.cli import cli
from scalefinder.core.errors import InputError, ProfileError

CPU = (Path(__file__).resolve().parent.parent / "profiles" / "cpu.toml").read_text()
LOCAL_TARGET = 'kind = "local"\narchetype = "cpu"\ncpu_units = 256\nmemory_mib = 256\nbalancer = "least_outstanding"\n'
PARAMS = "[target.params]\ncpu_ms = 10\n"
REQUESTS = 'requests = [{ name = "work", method = "GET", path = "/work", weight = 1 }]'
# every call must end well within this, on a busy machine too
QUICK_S = 5.0


def changed(*changes: tuple[str, str]) -> str:
    text = CPU
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def command_target(command: str) -> str:
    """cpu.toml with a command template instead of the archetype."""
    return changed((LOCAL_TARGET + PARAMS, f'kind = "local"\ncommand = {command}\n'))


def url_target(url: str) -> str:
    return changed((LOCAL_TARGET + PARAMS, f'kind = "url"\nurl = "{url}"\nenvironment = "staging"\n'
                                           'allowed_hosts = ["127.0.0.1", "::1"]\n'))


def plan(tmp_path: Path, text: str | None = None, path: Path | None = None) -> str:
    """Run ``plan`` on a profile that must be refused; return its one error line."""
    if path is None:
        path = tmp_path / "p.toml"
        path.write_text(text)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["plan", str(path)])
    elapsed = time.monotonic() - started
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert result.stderr.strip() == lines[0]
    assert elapsed < QUICK_S, elapsed
    return lines[0]


@pytest.mark.parametrize("key, line", [
    ("ramp.hold_s", ("hold_s = 12", "hold_s = inf")),
    ("ramp.min_hold_s", ("min_hold_s = 8", "min_hold_s = nan")),
    ("ramp.start_rps", ("start_rps = 5", "start_rps = -inf")),
    ("ramp.step_rps", ("step_rps = 5", "step_rps = nan")),
    ("ramp.max_rps", ("max_rps = 90", "max_rps = inf")),
    ("slo.latency_ms", ("latency_ms = 250", "latency_ms = nan")),
    ("target.params.cpu_ms", ("cpu_ms = 10", "cpu_ms = inf")),
    ("target.params.cpu_ms", ("cpu_ms = 10", "cpu_ms = nan")),
    ("sources.local.interval_s", ("interval_s = 1", "interval_s = nan")),
])
def test_nan_and_inf_are_refused_with_the_key_named(tmp_path, key, line):
    assert f"[{key}] expected a finite number" in plan(tmp_path, changed(line))


@pytest.mark.parametrize("value", ['"inf"', '"nan"', '"1e400"'])
def test_a_whole_number_parameter_written_as_a_non_finite_string_is_refused(tmp_path, value):
    text = changed(('archetype = "cpu"', 'archetype = "workers"'), ("cpu_ms = 10", f"workers = {value}"))
    assert "parameter workers must be a finite number" in plan(tmp_path, text)


@pytest.mark.parametrize("line", [("max_rps = 90", "max_rps = {n}"), ("tasks = 2", "tasks = {n}"),
                                  ("cpu_ms = 10", "cpu_ms = {n}"), ('name = "cpu"', "name = {n}")])
def test_a_5000_digit_whole_number_is_refused_with_its_line(tmp_path, line):
    old, new = line
    text = changed((old, new.format(n="9" * 5000)))
    line_number = text.splitlines().index(new.format(n="9" * 5000)) + 1
    message = plan(tmp_path, text)
    assert f"line {line_number} holds a whole number too long to read" in message and len(message) < 300


def test_a_large_number_below_the_conversion_limit_is_refused_with_the_key(tmp_path):
    message = plan(tmp_path, changed(("cpu_ms = 10", "cpu_ms = " + "9" * 400)))
    assert "[target.params.cpu_ms] expected a number between -1e+15 and 1e+15" in message
    assert "a 400-digit number" in message


@pytest.mark.parametrize("depth", [17, 1000, 5000])
def test_a_deeply_nested_array_is_refused(tmp_path, depth):
    text = changed(("cpu_ms = 10", "cpu_ms = " + "[" * depth + "]" * depth))
    assert "nests arrays or tables" in plan(tmp_path, text)


def test_a_url_urllib_cannot_split_is_refused(tmp_path):
    assert "[target.url] expected an http:// or https:// URL with a host, got 'http://[::1'" in plan(
        tmp_path, url_target("http://[::1"))
    assert "[target.url]" in plan(tmp_path, url_target("http://127.0.0.1:99999/"))


def test_a_prometheus_url_urllib_cannot_split_is_refused(tmp_path):
    text = CPU + '[sources.prometheus]\nurl = "http://[::1"\nstep_s = 1\nrate_window = "3s"\n'
    assert "[sources.prometheus.url] required: the Prometheus server's" in plan(tmp_path, text)


@pytest.mark.parametrize("command", ['"srv --port {port[0]}"', '"srv {port} {port.real}"', '"srv {port!r}"',
                                     '"srv --port {port:99999999}"', '"srv {port:{host}}"', '"srv {port} {}"'])
def test_a_command_field_must_be_a_plain_name(tmp_path, command):
    assert "must be a plain name such as {port}" in plan(tmp_path, command_target(command))


def test_a_command_parameter_may_not_shadow_port(tmp_path):
    text = command_target('"srv {port}"') + "[target.params]\nport = 1\n"
    assert "a parameter may not be named 'port'" in plan(tmp_path, text)


def test_a_nul_in_the_profile_path_is_a_usage_error(tmp_path):
    assert "an argument contains a NUL byte" in plan(tmp_path, path=tmp_path / "a\0b.toml")


@pytest.mark.parametrize("key, line", [
    ("workload.locustfile", (REQUESTS, 'locustfile = "lf\\u0000.py"')),
    ("target.command", (LOCAL_TARGET + PARAMS, 'kind = "local"\ncommand = "srv {port}\\u0000"\n')),
])
def test_a_nul_in_a_string_of_the_profile_is_refused(tmp_path, key, line):
    assert f"[{key}] contains a NUL character" in plan(tmp_path, changed(line))


def test_a_1_mb_file_name_is_one_short_error_line(tmp_path):
    message = plan(tmp_path, path=tmp_path / ("a" * 1_000_000))
    assert "cannot be read (File name too long)" in message and len(message) < 1200


def test_a_locustfile_name_too_long_for_the_system_is_no_such_file(tmp_path):
    message = plan(tmp_path, changed((REQUESTS, f'locustfile = "{"a" * 100_000}.py"')))
    assert "[workload.locustfile] no such file" in message and len(message) < 1200


def test_a_profile_longer_than_the_limit_is_refused_without_reading_it_all(tmp_path):
    assert "is longer than 1,000,000 characters" in plan(tmp_path, path=Path("/dev/zero"))


@pytest.mark.parametrize("line, expected", [
    (("max_rps = 90", "max_rps = 1e308"), "[ramp.max_rps] expected a number between -1e+15 and 1e+15"),
    (("max_rps = 90", "max_rps = 2e6"), "[ramp.max_rps] expected a number between 0.01 and 1e+06"),
    (("step_rps = 5", "step_rps = 1e-300"), "[ramp.step_rps] expected a number between 0.01 and 1e+06"),
    (("step_rps = 5", "step_factor = 1.0000001"),
     "[ramp.step_factor] the ramp from start_rps 5 to max_rps 90 req/s by a factor of 1.0000001 would have "
     "28,903,721 steps, more than the 1,000 a plan may have; raise step_factor, or bring start_rps and max_rps "
     "closer"),
    (("step_rps = 5", "step_rps = 0.01"), "[ramp.step_rps] the ramp from start_rps 5 to max_rps 90 req/s in steps "
                                          "of 0.01 req/s would have 8,501 steps"),
])
def test_a_ramp_too_large_to_plan_is_refused_at_once(tmp_path, line, expected):
    assert expected in plan(tmp_path, changed(line))


def test_the_planned_requests_are_bounded(tmp_path):
    text = changed(("max_rps = 90", "max_rps = 1e6"), ("step_rps = 5", "step_factor = 2"),
                   ("hold_s = 12", "hold_s = 3600"), ("min_hold_s = 8", "min_hold_s = 3600"))
    message = plan(tmp_path, text)
    assert "[ramp] the plan would send up to" in message
    assert f"more than the {MAX_PLANNED_REQUESTS:,} a plan may send; lower max_rps or hold_s" in message


def test_the_duration_is_bounded(tmp_path):
    message = plan(tmp_path, changed(("max_duration_s = 600", "max_duration_s = 86401")))
    assert "[ramp.max_duration_s] must be at most 86400 s (a day)" in message


def test_a_ramp_at_the_step_limit_still_plans(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(changed(("start_rps = 5", "start_rps = 1"), ("step_rps = 5", "step_rps = 1"),
                            ("max_rps = 90", f"max_rps = {MAX_RAMP_STEPS}"), ("hold_s = 12", "hold_s = 10")))
    profile = load_profile(path)
    assert len(ramp_rates(profile.ramp)) == MAX_RAMP_STEPS


def test_a_ramp_built_without_the_profile_checks_cannot_exhaust_memory():
    with pytest.raises(InputError, match="more than 1000 steps"):
        ramp_rates(Ramp(start_rps=5, max_rps=1e308, step_rps=5))


@pytest.mark.parametrize("key, shown", [
    ('"hold\\nTraceback (most recent call last):"', "[ramp.hold\\nTraceback (most recent call last):] unknown key"),
    ('"a\\r\\u0000b"', "[ramp.a\\r\\x00b] unknown key"),
])
def test_a_key_with_a_newline_is_shown_escaped_on_one_line(tmp_path, key, shown):
    assert shown in plan(tmp_path, changed(("hold_s = 12", f"{key} = 12")))


def test_a_very_long_key_is_cut_short(tmp_path):
    message = plan(tmp_path, changed(("hold_s = 12", f'{"k" * 100_000} = 12')))
    assert "… (100005 characters)] unknown key" in message and len(message) < 400  # ramp.kkk…


def test_a_newline_in_any_error_message_is_escaped(tmp_path):
    message = plan(tmp_path, changed(("cpu_ms = 10", '"cpu\\nms" = 10')))
    assert "has no parameter cpu\\nms" in message


def test_run_refuses_a_huge_max_rps_before_anything_starts(tmp_path, monkeypatch):
    """It once built the ramp for 45 s until a MemoryError, with the manifest left 'running' and
    the engine orphaned; the profile is now refused before any process or run directory exists."""
    import scalefinder.loadgen.experiment

    def must_not_run(*args, **kwargs):
        raise AssertionError("the experiment started")

    monkeypatch.setattr(scalefinder.loadgen.experiment, "run_experiment", must_not_run)
    monkeypatch.chdir(tmp_path)  # the default run directory would be reports/<run_id>/ here
    path = tmp_path / "huge.toml"
    path.write_text(changed(("max_rps = 90", "max_rps = 1e308")))
    children_before = {child.pid for child in psutil.Process().children(recursive=True)}
    started = time.monotonic()
    for extra in ([], ["--out", str(tmp_path / "run")]):
        result = CliRunner().invoke(cli, ["run", str(path), "--no-progress", *extra])
        assert result.exit_code == 2, result.output
        lines = result.output.splitlines()
        assert len(lines) == 1 and "[ramp.max_rps] expected a number between" in lines[0], lines
    assert time.monotonic() - started < QUICK_S
    assert not (tmp_path / "run").exists() and not (tmp_path / "reports").exists()
    assert {child.pid for child in psutil.Process().children(recursive=True)} <= children_before


def test_load_profile_raises_profile_error_for_each_hostile_input(tmp_path):
    """The library refuses as the command line does: a ProfileError, whatever the caller."""
    for number, text in enumerate([changed(("max_rps = 90", "max_rps = " + "9" * 5000)),
                                   changed(("cpu_ms = 10", "cpu_ms = " + "[" * 1000 + "]" * 1000)),
                                   url_target("http://[::1"), command_target('"srv {port[0]}"')]):
        path = tmp_path / f"{number}.toml"
        path.write_text(text)
        with pytest.raises(ProfileError):
            load_profile(path)


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", "with space", "x" * 101])
def test_a_name_that_cannot_be_part_of_a_directory_name_is_refused(tmp_path, name):
    line = plan(tmp_path, changed(('name = "cpu"', f'name = "{name}"')))
    assert "[name]" in line and "letters, digits" in line


def test_without_a_name_the_file_name_is_made_safe(tmp_path):
    path = tmp_path / "my staging (v2).toml"
    path.write_text(changed(('name = "cpu"\n', "")))
    assert load_profile(path).name == "my-staging-v2"


@pytest.mark.parametrize("change", [
    ('path = "/work"', 'path = "/work\\r\\nX-Injected: 1"'),
    ('weight = 1 }', 'weight = 1, headers = { "X-Trace" = "a\\nb" } }'),
])
def test_a_line_break_in_a_request_path_or_header_is_refused(tmp_path, change):
    line = plan(tmp_path, changed(change))
    assert "line break" in line
