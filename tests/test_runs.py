"""The runs index over a reports folder holding analyzed, unanalyzed and broken runs."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from scalefinder.cli import cli
from tests.browser import chromium, open_page
from tests.synthetic import DEFAULT_START_UNIX_S, write_synthetic_run

METRICS = ("cpu_utilization", "memory_utilization", "requests_per_task", "running_task_count")
DAY_S = 86_400


def invoke(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    # Short holds: the index needs capacities, not a confident choice of metric.
    older = write_synthetic_run(root / "ci" / "older", "cpu", metrics=METRICS, seed=5, hold_s=12, warmup_s=3)
    newer = write_synthetic_run(root / "ci" / "newer", "cpu", metrics=METRICS, seed=6, hold_s=12, warmup_s=3,
                                capacity_per_task_rps=20.0, start_unix_s=DEFAULT_START_UNIX_S + DAY_S)
    for run in (older, newer):
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["run_id"] = run.name  # distinct ids, as real runs have
        (run / "manifest.json").write_text(json.dumps(manifest))
    assert invoke("analyze", older).exit_code == 0
    assert invoke("report", newer).exit_code == 0
    assert invoke("gate", newer, "--baseline", older).exit_code == 1
    write_synthetic_run(root / "killed", "cpu", metrics=METRICS, seed=7, partial=True, hold_s=12, warmup_s=3,
                        start_unix_s=DEFAULT_START_UNIX_S + 2 * DAY_S)
    (root / "broken").mkdir()
    (root / "broken" / "manifest.json").write_text("{not json")
    (root / "notes").mkdir()  # a folder that is not a run is ignored
    return root


def test_runs_lists_every_run_newest_first(reports):
    result = invoke("runs", reports)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["date", "profile", "status"]
    body = lines[1:-1]
    assert "not analyzed" in body[0] and "running" in body[0]
    assert "2026-11-19" in body[1] and "20 req/s" in body[1] and "gate failed" in body[1]
    assert "2026-11-18" in body[2] and "25 req/s" in body[2]
    assert "unreadable" in body[3]
    assert lines[-1] == f"Index:   {reports / 'index.html'}"


def test_index_has_table_and_trend(reports):
    assert invoke("runs", reports).exit_code == 0
    page = (reports / "index.html").read_text()
    assert 'href="ci/newer/report.html"' in page  # reported
    assert "ci/older/report.html" not in page  # analyzed only: nothing to link to
    charts = json.loads(re.search(r'id="sf-charts">(.*?)</script>', page, re.S).group(1))
    trace = charts[0]["figure"]["data"][0]
    assert trace["text"] == ["older", "newer"]
    older_rps, newer_rps = trace["y"]
    assert newer_rps < older_rps  # capacity per task fell from 25 to 20 req/s between the runs


def test_missing_reports_folder_is_an_input_error(tmp_path):
    result = invoke("runs", tmp_path / "absent")
    assert result.exit_code == 2
    assert "is not a directory" in result.output


@pytest.mark.browser
def test_index_renders_in_chromium(reports):
    assert invoke("runs", reports).exit_code == 0
    with chromium() as browser:
        page, problems = open_page(browser, reports / "index.html")
        page.wait_for_selector("#chart-trend .main-svg", timeout=30_000)
        assert page.locator("tbody tr").count() == 4
        assert page.locator("#chart-trend .scatterlayer .point").count() == 2
    assert problems == []
