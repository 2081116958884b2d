"""Profiles: every shipped profile loads; every mistake is one located line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scalefinder.core.models import GateCriteria
from scalefinder.loadgen.profile import is_loopback, load_profile
from scalefinder.cli import cli
from scalefinder.core.errors import ProfileError

PROFILES = Path(__file__).resolve().parent.parent / "profiles"

GOOD = """
name = "t"
[target]
kind = "local"
archetype = "cpu"
cpu_units = 256
memory_mib = 256
[target.params]
cpu_ms = 5
[workload]
requests = [{ name = "work", path = "/work", weight = 2 }, { path = "/health" }]
[slo]
percentile = 95
latency_ms = 250
[ramp]
start_rps = 5
step_rps = 5
max_rps = 50
[capacity]
controller = "local"
tasks = 2
[sources.local]
interval_s = 1
"""


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problem(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


def test_a_good_profile_fills_in_defaults(tmp_path):
    profile = load_profile(write(tmp_path, GOOD))
    assert profile.name == "t" and profile.target.archetype == "cpu"
    assert profile.target.params["cpu_ms"] == 5
    assert [r.weight for r in profile.workload.requests] == [2, 1]
    assert profile.workload.requests[1].name == "/health"
    assert profile.slo.error_budget_pct == 1.0
    assert profile.ramp.hold_s == 20 and profile.ramp.min_hold_s == 10 and profile.ramp.warmup_s == 4
    assert profile.ramp.beyond is True  # on by default for the local cluster
    assert profile.capacity.controller == "local" and profile.capacity.tasks == 2
    assert profile.sources == {"local": {"interval_s": 1.0}}
    assert profile.analysis.headroom == 0.7 and profile.analysis.availability_zones == 3
    as_dict = profile.to_dict()
    assert as_dict["profile_path"] == str((tmp_path / "p.toml").resolve())
    assert as_dict["ramp"]["step_rps"] == 5


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_profile_loads(path):
    profile = load_profile(path)
    assert profile.slo.latency_ms > 0


def test_a_typo_in_a_key_names_the_close_match(tmp_path):
    message = problem(tmp_path, GOOD.replace("step_rps = 5", "step_rsp = 5"))
    assert "[ramp.step_rsp] unknown key (did you mean 'step_rps'?)" in message


def test_a_wrong_type_says_what_was_expected(tmp_path):
    message = problem(tmp_path, GOOD.replace("tasks = 2", 'tasks = "two"'))
    assert "[capacity.tasks] expected a whole number, got 'two' (a string)" in message


def test_a_missing_slo_is_refused(tmp_path):
    text = GOOD.replace("[slo]\npercentile = 95\nlatency_ms = 250\n", "")
    assert "[slo] missing the [slo] table" in problem(tmp_path, text)
    assert "[slo.latency_ms] is required" in problem(tmp_path, GOOD.replace("latency_ms = 250", ""))


@pytest.mark.parametrize("change, expected", [
    (("archetype = \"cpu\"", "archetype = \"cpuu\""), "unknown archetype 'cpuu'"),
    (("percentile = 95", "percentile = 120"), "[slo.percentile] expected a number between 0 and 100"),
    (("max_rps = 50", "max_rps = 2"), "[ramp.max_rps] must be at least start_rps"),
    (("step_rps = 5", "step_rps = 5\nstep_factor = 1.5"), "needs exactly one of 'step_rps'"),
    (("[sources.local]", "[sources.loacl]"), "did you mean 'local'?"),
    (("controller = \"local\"", "controller = \"ecs2\""), "expected one of"),
    (("[analysis]", "[analysis]"), ""),
])
def test_other_mistakes_are_located(tmp_path, change, expected):
    if not expected:
        text = GOOD + "[analysis]\nheadroom = 0.9\n"
        assert "[analysis.headroom] expected a number between 0.6 and 0.8" in problem(tmp_path, text)
        return
    assert expected in problem(tmp_path, GOOD.replace(*change))


def test_holds_must_cover_several_datapoints(tmp_path):
    text = GOOD.replace("interval_s = 1", "interval_s = 5").replace("max_rps = 50", "max_rps = 50\nmin_hold_s = 8")
    assert "[ramp.min_hold_s] must be at least 19 s" in problem(tmp_path, text)


REMOTE = GOOD.replace('kind = "local"\narchetype = "cpu"\ncpu_units = 256\nmemory_mib = 256\n[target.params]\ncpu_ms = 5',
                      'kind = "url"\nurl = "http://127.0.0.1:9/"\n{extra}').replace(
    'controller = "local"', 'controller = "ecs"\n[capacity.ecs]\ncluster = "c"\nservice = "s"').replace(
    "[sources.local]\ninterval_s = 1", "[sources.local]")


def test_a_remote_target_must_be_declared_non_production_and_allowed(tmp_path):
    assert "must declare its environment" in problem(tmp_path, REMOTE.replace("{extra}", ""))
    message = problem(tmp_path, REMOTE.replace("{extra}", 'environment = "production"\nallowed_hosts = ["127.0.0.1"]'))
    assert "refuses to load-test production" in message
    message = problem(tmp_path, REMOTE.replace("{extra}", 'environment = "staging"\nallowed_hosts = ["other"]'))
    assert "[target.allowed_hosts] the target host '127.0.0.1' is not listed" in message


def test_a_locustfile_is_resolved_next_to_the_profile(tmp_path):
    (tmp_path / "lf.py").write_text("")
    text = GOOD.replace('requests = [{ name = "work", path = "/work", weight = 2 }, { path = "/health" }]',
                        'locustfile = "lf.py"\nuser_classes = ["Shop"]')
    profile = load_profile(write(tmp_path, text))
    assert profile.workload.locustfile == str((tmp_path / "lf.py").resolve())
    assert profile.workload.user_classes == ("Shop",)
    assert "no such file" in problem(tmp_path, text.replace("lf.py", "missing.py"))


@pytest.mark.parametrize("change, message", [
    (("step_rps = 5", "step_rsp = 5"), "[ramp.step_rsp] unknown key (did you mean 'step_rps'?)"),
    (("tasks = 2", "tasks = 2.5"), "[capacity.tasks] expected a whole number, got 2.5 (a number)"),
    (("[slo]\npercentile = 95\nlatency_ms = 250\n", ""), "[slo] missing the [slo] table"),
], ids=["typo", "wrong-type", "missing-slo"])
def test_the_cli_turns_a_bad_profile_into_one_line_and_exit_2(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    for command in ("plan", "run"):
        result = CliRunner().invoke(cli, [command, str(path)])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: {message}"), lines


def test_loopback_detection():
    assert is_loopback("http://127.0.0.1:8080") and is_loopback("http://127.9.9.9/") and is_loopback("http://localhost")
    assert not is_loopback("https://staging.example.com") and not is_loopback("http://10.0.0.1")


def test_confirm_breach_defaults_on_and_must_be_a_boolean(tmp_path):
    assert load_profile(write(tmp_path, GOOD)).ramp.confirm_breach is True
    off = GOOD.replace("max_rps = 50", "max_rps = 50\nconfirm_breach = false")
    assert load_profile(write(tmp_path, off, "off.toml")).ramp.confirm_breach is False
    message = problem(tmp_path, GOOD.replace("max_rps = 50", 'max_rps = 50\nconfirm_breach = "yes"'))
    assert "[ramp.confirm_breach]" in message


@pytest.mark.parametrize("gate, expected", [
    ("slo_rate_rps = 0", "[gate.slo_rate_rps] expected a positive number, got 0"),
    ("capacity_tolerance_pct = 100", "[gate.capacity_tolerance_pct] expected a number from 0 to below 100"),
    ('target_tolerance_pct = "15%"', "[gate.target_tolerance_pct] expected a number, got '15%' (a string)"),
    ('metric_unchanged = "yes"', "[gate.metric_unchanged] expected true or false"),
    ("slo_rate = 40", "[gate.slo_rate] unknown key (did you mean 'slo_rate_rps'?)"),
])
def test_gate_table_is_checked_when_the_profile_loads(tmp_path, gate, expected):
    assert expected in problem(tmp_path, GOOD + f"[gate]\n{gate}\n")


def test_a_valid_gate_table_is_read_into_the_criteria_and_recorded_as_written(tmp_path):
    text = GOOD + "[gate]\nslo_rate_rps = 40\nmetric_unchanged = false\n"
    profile = load_profile(write(tmp_path, text))
    assert profile.gate == GateCriteria(slo_rate_rps=40, metric_unchanged=False)
    # the manifest records only the criteria asked for, so the gate's own defaults apply to the rest
    assert profile.to_dict()["gate"] == {"slo_rate_rps": 40, "metric_unchanged": False}


def test_a_prometheus_rate_window_longer_than_the_warmup_is_refused(tmp_path):
    prometheus = '[sources.prometheus]\nurl = "http://127.0.0.1:9090"\nstep_s = 1\n'
    text = GOOD.replace("max_rps = 50", "max_rps = 50\nwarmup_s = 3") + prometheus
    message = problem(tmp_path, text)  # the default window, "1m", reaches back 60 s
    assert "[sources.prometheus.rate_window] must be no longer than ramp.warmup_s (3 s), got '1m'" in message
    assert load_profile(write(tmp_path, text + 'rate_window = "3s"\n', "ok.toml")).sources["prometheus"]
    no_rates = text + 'metrics = ["memory_utilization"]\n'
    assert load_profile(write(tmp_path, no_rates, "no-rates.toml")).sources["prometheus"]["rate_window"] == "1m"
