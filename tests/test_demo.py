"""``scalefinder demo``: the README's first command produces an analyzed run and its report."""

import json

import pytest

pytestmark = pytest.mark.load


def test_demo_prints_the_headline_and_writes_the_report(demo_run):
    assert demo_run.returncode == 0, demo_run.stderr
    findings = json.loads((demo_run.path / "findings.json").read_text())
    assert findings["headline"] in demo_run.stdout
    report = demo_run.path / "report.html"
    assert f"Open {report.resolve()}" in demo_run.stdout
    page = report.read_text(encoding="utf-8")
    assert "<html" in page and "Plotly" in page
    assert report.stat().st_size <= 1.5e6, f"report.html is {report.stat().st_size / 1e6:.2f} MB"
    for written in ("summary.md", "summary.json"):
        assert (demo_run.path / written).is_file()


def test_policy_prints_the_demo_as_an_hpa_on_a_share_of_the_requests(demo_run):
    """The demo's task has 128 CPU units (a 125m limit) and its profile says the pod requests
    100m: the HPA's averageUtilization is the measured share of the limit times 125/100."""
    import math

    import kubernetes_validate
    import yaml
    from click.testing import CliRunner

    from scalefinder.analysis.kubernetes import kubernetes_versions
    from scalefinder.cli import cli

    assert demo_run.returncode == 0, demo_run.stderr
    findings = json.loads((demo_run.path / "findings.json").read_text())
    result = CliRunner().invoke(cli, ["policy", str(demo_run.path), "--format", "hpa"])
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.output)
    for version in kubernetes_versions():
        kubernetes_validate.validate(document, version, strict=True)
    target = findings["recommendation"]["target"]
    [metric] = document["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == math.floor(target * 125 / 100)
    assert "of the 125m limit" in result.output and "of the 100m request" in result.output
    assert document["metadata"] == {"name": "demo", "namespace": "demo"}


@pytest.mark.browser
def test_the_demo_report_answers_will_it_hold_in_chromium(demo_run):
    from tests.browser import chromium, open_page

    assert demo_run.returncode == 0, demo_run.stderr
    with chromium() as browser:
        page, problems = open_page(browser, demo_run.path / "report.html")
        hold = page.locator("#hold")
        rows = hold.locator("tbody tr")
        assert rows.count() == 3  # the recommendation, step scaling, a lower target
        assert "(recommended)" in rows.first.inner_text()
        assert hold.locator(".chart .main-svg").count() >= 1
        page.close()
    assert problems == []
