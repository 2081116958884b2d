"""The report and the runs index are written by autoescaping templates: markup in a metric name,
a profile name, a target URL or an error text shows as text and adds no element, and a field a
template names but is not given fails loudly. Fast: a synthetic run analyzed in-process, no
browser, no process started."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest
from click.testing import CliRunner

from scalefinder.cli import cli
from scalefinder.analysis.reporting.analyzed import open_analyzed_run
from scalefinder.analysis.reporting.figures import extract_figures
from scalefinder.analysis.reporting.html import render_page, render_report, template_environment
from scalefinder.analysis.reporting.index import IndexRow, RunEntry, render_index
from tests.synthetic import write_synthetic_run

METRICS = ("cpu_utilization", "memory_utilization", "requests_per_task", "network_rx_bytes_per_s",
           "running_task_count")
REPORTING = Path(__file__).resolve().parents[1] / "analysis" / "reporting"
# The page's own script elements: plotly, the chart data and the page script.
SCRIPTS_IN_A_PAGE = 3


def hostile(field: str) -> str:
    """Markup that would run if unescaped, with both quotes and an ampersand, distinct per field
    so a test can tell where each one went."""
    return f"<script>alert('{field}')</script>\"'&"


class PageReader(HTMLParser):
    """What a browser would make of a page: its visible text, its script elements and every
    attribute value, with character references decoded."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.scripts = 0
        self.attributes: list[tuple[str, str | None]] = []
        self._raw_depth = 0
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.attributes += attrs
        if tag == "script":
            self.scripts += 1
        if tag in ("script", "style"):
            self._raw_depth += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._raw_depth -= 1

    def handle_data(self, data):
        if not self._raw_depth:
            self.text.append(data)

    @property
    def visible_text(self) -> str:
        return "".join(self.text)


def assert_shown_as_text(page: str, *values: str) -> None:
    reader = PageReader(page)
    for value in values:
        assert value in reader.visible_text, f"{value!r} is not shown as text"
    assert "<script>alert" not in page  # not raw anywhere, the chart JSON included
    assert reader.scripts == SCRIPTS_IN_A_PAGE, "an element was added by a value"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    """A run whose profile, target, status reason, warnings and one metric name carry markup,
    reported through the CLI in-process and listed in an index."""
    reports = tmp_path_factory.mktemp("reports")
    run = write_synthetic_run(reports / "run", "cpu", metrics=METRICS, hold_s=12, warmup_s=3)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["run_id"] = hostile("run id")
    manifest["profile"]["name"] = hostile("profile")
    manifest["profile"]["description"] = hostile("description")
    manifest["target"] = {"kind": "url", "url": "http://example.com/" + hostile("url")}
    manifest["status_reason"] = hostile("status reason")
    manifest["warnings"] = [hostile("warning")]
    (run / "manifest.json").write_text(json.dumps(manifest))
    metrics = run / "metrics.csv"
    metrics.write_text(metrics.read_text().replace("network_rx_bytes_per_s", hostile("metric")))
    for command in (["report", str(run)], ["runs", str(reports)]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, result.output
    return run


def test_report_file_shows_markup_as_text(hostile_run):
    page = (hostile_run / "report.html").read_text()
    assert_shown_as_text(page, *(hostile(f) for f in (
        "run id", "profile", "description", "url", "status reason", "warning", "metric")))
    chart_data = re.search(r'id="sf-charts">(.*?)</script>', page, re.S).group(1)
    chart_divs = [value for name, value in PageReader(page).attributes if name == "id" and value.startswith("chart-")]
    assert [chart["id"] for chart in json.loads(chart_data)] == chart_divs  # still valid JSON, one chart per div


def test_index_file_shows_markup_as_text(hostile_run):
    page = (hostile_run.parent / "index.html").read_text()
    assert_shown_as_text(page, hostile("run id"), hostile("profile"))


def test_findings_texts_and_attributes_are_escaped(hostile_run):
    """Texts from the findings, in element content and in a title attribute, and a policy
    rendering in its <pre>: each reads back exactly as written."""
    analyzed = open_analyzed_run(hostile_run)
    findings = json.loads(json.dumps(analyzed.findings))
    findings["headline"] = hostile("headline")
    findings["inconclusive"] = {"reasons": [hostile("reason")], "next_steps": [hostile("next step")]}
    findings["metrics"][0]["tests"][0]["detail"] = hostile("test detail")
    findings["steps"][0]["phase"] = hostile("phase")
    policies = findings["recommendation"]["policies"]["target_tracking"]
    policies["terraform"] = hostile("terraform")
    page = render_report(analyzed.run, findings, extract_figures(findings, analyzed.run.manifest))
    assert_shown_as_text(page, *(hostile(f) for f in ("headline", "reason", "next step", "test detail", "phase",
                                                      "terraform")))
    assert ("title", hostile("test detail")) in PageReader(page).attributes


def test_index_note_and_link_are_escaped(hostile_run, tmp_path):
    """An error text in the note and a folder name with quotes and an ampersand in the link."""
    analyzed = open_analyzed_run(hostile_run)
    folder = tmp_path / "a\"b'c&d<e>"
    entry = RunEntry(path=folder, figures=replace(analyzed.figures, metric=hostile("metric")),
                     run_id="r1", profile_name="p", status="complete", started_utc="2026-11-18T10:00:00+00:00",
                     note=f"findings unreadable: {hostile('error')}", has_report=True)
    page = render_index(tmp_path, [entry])
    assert_shown_as_text(page, hostile("metric"), hostile("error"))
    links = [value for name, value in PageReader(page).attributes if name == "href"]
    assert links == ["a%22b%27c%26d%3Ce%3E/report.html"]


def test_a_missing_field_fails_loudly():
    row = IndexRow(when="", run_id="r1", report_link=None, profile_name="p", status="complete", verdict="",
                   verdict_word="", metric="—", target="—", capacity="—", capacity_interval="", note="")
    context = {"title": "t", "folder_name": "f", "trend_chart": None, "rows": [row], "version": "0",
               "stylesheet": "", "page_script": "", "plotly_js": None, "charts_json": "[]"}
    assert "<td>r1</td>" in render_page("index.html.j2", **context)
    del context["version"]
    with pytest.raises(jinja2.UndefinedError, match="version"):
        render_page("index.html.j2", **context)
    row_without_note = {key: value for key, value in asdict(row).items() if key != "note"}
    with pytest.raises(jinja2.UndefinedError, match="note"):
        render_page("index.html.j2", **{**context, "version": "0", "rows": [row_without_note]})


def test_the_environment_escapes_and_is_strict():
    environment = template_environment()
    assert environment.undefined is jinja2.StrictUndefined
    assert environment.from_string("{{ value }}").render(value="<b>&").startswith("&lt;b&gt;&amp;")


def test_raw_text_is_marked_safe_in_one_place_only():
    """Markup is made only in page_assets (the stylesheet, scripts, plotly and chart JSON), and no
    template switches escaping off: anything else a page shows is escaped."""
    templates = sorted((REPORTING / "templates").glob("*.html.j2"))
    assert {t.name for t in templates} >= {"page.html.j2", "macros.html.j2", "report.html.j2", "index.html.j2"}
    for template in templates:
        source = template.read_text()
        assert not re.search(r"\|\s*safe\b|autoescape\s+false", source), f"{template.name} turns escaping off"
    sources = {path.name: path.read_text() for path in REPORTING.glob("*.py")}
    assert [name for name, source in sources.items() if "Markup(" in source] == ["html.py"]
    html_source = sources["html.py"]
    assets = html_source[html_source.index("def page_assets"):html_source.index("\nclass ", html_source.index("def page_assets"))]
    assert html_source.count("Markup(") == assets.count("Markup(") == 4
