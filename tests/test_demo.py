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
    for written in ("summary.md", "summary.json"):
        assert (demo_run.path / written).is_file()
