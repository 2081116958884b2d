"""The HTML report and the summaries, written from a real analysis of a synthetic run and checked
in headless Chromium: no JavaScript errors, every chart drawn, the headline right, markup from
the profile and a metric name shown as text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
# the escaping the report's templates apply, quotes spelled as they spell them
from markupsafe import escape as html_escape

from scalefinder.cli import cli
from tests.browser import chromium, open_page
from tests.synthetic import write_synthetic_run

ARTIFACTS = Path(__file__).parent / "artifacts"
HOSTILE = "<script>alert(1)</script>"
METRICS = ("cpu_utilization", "memory_utilization", "concurrency_per_task", "requests_per_task",
           "network_rx_bytes_per_s", "running_task_count")


def report(run: Path, env: dict | None = None):
    result = CliRunner().invoke(cli, ["report", str(run)], env=env)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """A CPU-bound run whose profile description and one metric name are markup, reported
    straight away: the report analyzes it first."""
    run = write_synthetic_run(tmp_path_factory.mktemp("report") / "cpu", "cpu", metrics=METRICS)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["profile"]["description"] = f"<img src=x onerror=alert(2)> & {HOSTILE}"
    (run / "manifest.json").write_text(json.dumps(manifest))
    metrics = run / "metrics.csv"
    metrics.write_text(metrics.read_text().replace("network_rx_bytes_per_s", HOSTILE))
    step_summary = run.parent / "step-summary.md"
    result = report(run, env={"GITHUB_STEP_SUMMARY": str(step_summary)})
    return run, result, step_summary


def test_report_writes_files_and_prints_headline(cpu_run):
    run, result, _ = cpu_run
    findings = json.loads((run / "findings.json").read_text())
    assert findings["headline"] in result.output
    assert str(run / "report.html") in result.output
    for name in ("report.html", "summary.md", "summary.json"):
        assert (run / name).stat().st_size > 0


def test_report_is_self_contained(cpu_run):
    page = (cpu_run[0] / "report.html").read_text()
    assert page.count("Plotly.newPlot") == 1  # one drawing loop over every chart
    assert len(re.findall(r"\* plotly\.js (\(basic - minified\) )?v\d", page)) == 1  # the library inlined once
    # the basic bundle (vendor/README.md) keeps the page small enough to attach and mail around
    assert len(page.encode()) <= 1.5e6, f"report.html is {len(page.encode()) / 1e6:.2f} MB"
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", page), "fetches from the network"


def test_summaries(cpu_run):
    run, _, step_summary = cpu_run
    findings = json.loads((run / "findings.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schema_version"] == 1 and summary["kind"] == "scalefinder-summary"
    assert summary["verdict"] == findings["verdict"] == "recommended"
    assert summary["metric"] == findings["recommendation"]["metric"] == "cpu_utilization"
    assert summary["target"] == findings["recommendation"]["target"]
    assert summary["per_task_rps"] == findings["capacity"]["per_task_rps"]
    markdown = (run / "summary.md").read_text()
    assert "Average CPU utilization" in markdown or "cpu\\_utilization" in markdown
    assert "| Capacity per task |" in markdown
    assert step_summary.read_text() == markdown + "\n"


def test_markup_is_escaped_in_files(cpu_run):
    run = cpu_run[0]
    page = (run / "report.html").read_text()
    findings = json.loads((run / "findings.json").read_text())
    assert HOSTILE in [m["name"] for m in findings["metrics"]]
    assert HOSTILE not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    markdown = (run / "summary.md").read_text()
    assert HOSTILE not in markdown and "<img" not in markdown


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


@pytest.mark.browser
def test_report_renders_in_chromium(browser, cpu_run):
    run = cpu_run[0]
    findings = json.loads((run / "findings.json").read_text())
    page, problems = open_page(browser, run / "report.html")
    charts = page.eval_on_selector_all(".chart", "els => els.map(e => e.querySelectorAll('.main-svg').length)")
    assert len(charts) == 1 + len(findings["metrics"]) + 1  # the ramp, each metric, will it hold?
    assert all(count > 0 for count in charts)
    assert page.inner_text("#headline-text") == findings["headline"]
    assert page.inner_text("#headline .badge") == "Recommended"
    assert findings["recommendation"]["label"] in page.inner_text("#headline")

    tabs = page.locator("#policy-target_tracking .tab")
    assert tabs.all_inner_texts() == ["API JSON", "AWS CLI", "CloudFormation", "Terraform"]
    tabs.nth(1).click()
    visible = page.locator("#policy-target_tracking .pane.active")
    assert visible.inner_text().strip() == findings["recommendation"]["policies"]["target_tracking"]["aws_cli"].strip()
    page.locator("#policy-target_tracking .copy").click()
    tabs.nth(0).click()

    hold = page.locator("#hold")
    assert hold.locator(".chart .main-svg").count() >= 1
    assert hold.locator("tbody tr").count() == 3  # the recommendation, step scaling, a lower target
    assert "(recommended)" in hold.locator("tbody tr").first.inner_text()

    # Markup from the profile and a metric name shows as text and runs nothing.
    assert HOSTILE in page.inner_text("#metrics")
    assert HOSTILE in page.inner_text("header.page")
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    scripts = page.eval_on_selector_all("script", "els => els.map(e => e.textContent)")
    assert not any(HOSTILE in text for text in scripts)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert problems == []
    page.close()


@pytest.mark.parametrize("kind, options, expected", [
    ("shared", {}, "No task-level metric"),
    ("cpu", {"partial": True}, "This run is partial (status running"),
    ("cpu", {"generator_bound_from": 0.6}, "is invalid: load generator CPU"),
])
def test_report_without_recommendation_or_with_doubts(tmp_path, kind, options, expected):
    run = write_synthetic_run(tmp_path / kind, kind, metrics=METRICS[:4] + ("running_task_count",), **options)
    report(run)
    findings = json.loads((run / "findings.json").read_text())
    page = (run / "report.html").read_text()
    assert expected in page
    assert html_escape(findings["headline"]) in page
    for reason in findings["inconclusive"]["reasons"]:
        assert html_escape(reason) in page
    summary = json.loads((run / "summary.json").read_text())
    assert summary["verdict"] == findings["verdict"]
    if findings["verdict"] != "recommended":
        assert summary["metric"] is None and summary["target_tracking_policy"] is None
        assert 'id="policy-target_tracking"' not in page
    if findings["verdict"] == "no_task_level_metric":
        assert "**Evidence**" in (run / "summary.md").read_text()
