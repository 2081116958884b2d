"""``summary.md`` for a pull-request comment or a CI step summary, and the versioned ``summary.json``."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from scalefinder.core.rundir import write_json_atomic

from scalefinder.analysis.reporting.figures import (
    RunFigures,
    format_duration,
    format_interval,
    format_number,
    with_unit,
)

logger = logging.getLogger(__name__)

SUMMARY_SCHEMA_VERSION = 1
SUMMARY_KIND = "scalefinder-summary"
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"

VERDICT_WORDS = {
    "recommended": "Recommended",
    "no_task_level_metric": "No task-level metric",
    "inconclusive": "Inconclusive",
}


def summary_document(figures: RunFigures, findings: Mapping[str, Any]) -> dict[str, Any]:
    """The machine-readable summary: the key figures plus the policy to apply."""
    recommendation = findings.get("recommendation") or {}
    policies = recommendation.get("policies") or {}
    inconclusive = findings.get("inconclusive") or {}
    document = {"schema_version": SUMMARY_SCHEMA_VERSION, "kind": SUMMARY_KIND}
    document.update(asdict(figures))
    document["warnings"] = list(figures.warnings)
    document["target_tracking_policy"] = (policies.get("target_tracking") or {}).get("api_request")
    document["kubernetes_hpa"] = (policies.get("kubernetes") or {}).get("hpa")
    document["inconclusive_reasons"] = list(inconclusive.get("reasons") or [])
    document["next_steps"] = list(inconclusive.get("next_steps") or [])
    return document


def summary_markdown(figures: RunFigures, findings: Mapping[str, Any]) -> str:
    """A short Markdown summary; every value from the run is escaped for Markdown and HTML."""
    lines = [
        f"### scalefinder · {md(figures.profile_name or figures.run_id)}: {VERDICT_WORDS.get(figures.verdict, md(figures.verdict))}",
        "",
        md(figures.headline) if figures.headline else "",
        "",
        "| | |",
        "|---|---|",
    ]
    for label, value in _rows(figures):
        lines.append(f"| {label} | {value} |")
    lines.extend(_evidence_lines(findings))
    lines.extend(_warning_lines(figures))
    lines.extend(_inconclusive_lines(findings))
    lines.extend(_policy_lines(findings))
    return "\n".join(lines).rstrip() + "\n"


def _rows(figures: RunFigures) -> list[tuple[str, str]]:
    rows = [("Verdict", VERDICT_WORDS.get(figures.verdict, md(figures.verdict)))]
    if figures.metric:
        rows.append(("Scaling metric", f"{md(figures.metric_label or figures.metric)} (`{code(figures.metric)}`)"))
        target = md(with_unit(figures.target, figures.unit))
        if figures.target_interval:
            target += f" (interval {md(format_interval(figures.target_interval, figures.unit))})"
        rows.append(("Target", target))
    if figures.per_task_rps is not None:
        capacity = f"{format_number(figures.per_task_rps)} req/s"
        if figures.per_task_rps_interval:
            capacity += f" (interval {format_interval(figures.per_task_rps_interval)})"
        rows.append(("Capacity per task", capacity))
    if figures.service_rps is not None:
        rows.append(("Service capacity", f"{format_number(figures.service_rps)} req/s with {figures.tasks} tasks"))
    if figures.pattern_label or figures.pattern:
        rows.append(("Pattern", md(figures.pattern_label or figures.pattern)))
    rows.append(("Run", f"`{code(figures.run_id)}` · {md(figures.status)} · {format_duration(figures.duration_s)}"))
    return rows


def _evidence_lines(findings: Mapping[str, Any]) -> list[str]:
    """Without a metric to scale on, the evidence is the finding itself (a shared bottleneck)."""
    if findings.get("verdict") != "no_task_level_metric":
        return []
    evidence = list((findings.get("pattern") or {}).get("evidence") or [])
    doubling = ((findings.get("capacity") or {}).get("doubling") or {}).get("detail")
    evidence += [doubling] if doubling else []
    if not evidence:
        return []
    return ["", "**Evidence**", ""] + [f"- {md(e)}" for e in dict.fromkeys(evidence)]


def _warning_lines(figures: RunFigures) -> list[str]:
    if not figures.warnings:
        return []
    return ["", "**Warnings**", ""] + [f"- {md(w)}" for w in figures.warnings]


def _inconclusive_lines(findings: Mapping[str, Any]) -> list[str]:
    inconclusive = findings.get("inconclusive") or {}
    reasons, steps = inconclusive.get("reasons") or [], inconclusive.get("next_steps") or []
    lines: list[str] = []
    if reasons:
        lines += ["", "**Why no recommendation**", ""] + [f"- {md(r)}" for r in reasons]
    if steps:
        lines += ["", "**What to run next**", ""] + [f"- {md(s)}" for s in steps]
    return lines


def _policy_lines(findings: Mapping[str, Any]) -> list[str]:
    policies = (findings.get("recommendation") or {}).get("policies") or {}
    blocks = (("Target tracking policy (AWS CLI)", "sh", (policies.get("target_tracking") or {}).get("aws_cli")),
              ("HorizontalPodAutoscaler (Kubernetes)", "yaml", (policies.get("kubernetes") or {}).get("hpa")))
    lines: list[str] = []
    for title, language, text in blocks:
        if text:
            fence = "~~~~" if "```" in text else "```"
            lines += ["", f"<details><summary>{title}</summary>", "", f"{fence}{language}", str(text).rstrip("\n"),
                      fence, "", "</details>"]
    return lines


def md(text: Any) -> str:
    """Escape text for a Markdown table cell that GitHub also reads as HTML."""
    value = str(text)
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("\n", " ")):
        value = value.replace(raw, safe)
    for special in ("*", "_", "`", "[", "]"):
        value = value.replace(special, "\\" + special)
    return value


def code(text: Any) -> str:
    """Text for inside a Markdown code span in a table: backticks cannot be escaped there, pipes must be."""
    return str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ")


def write_summaries(run_dir: Path, figures: RunFigures, findings: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write summary.md and summary.json into the run directory; append the Markdown to
    ``$GITHUB_STEP_SUMMARY`` when a GitHub Actions step is running us."""
    markdown = summary_markdown(figures, findings)
    md_path = run_dir / SUMMARY_MD
    md_path.write_text(markdown, encoding="utf-8")
    json_path = run_dir / SUMMARY_JSON
    write_json_atomic(json_path, summary_document(figures, findings))
    append_step_summary(markdown)
    return md_path, json_path


def append_step_summary(markdown: str) -> None:
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if not step_summary:
        return
    try:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    except OSError as exc:
        # The report itself is written; a CI summary that cannot be appended is worth a warning only.
        logger.warning("could not append to $GITHUB_STEP_SUMMARY (%s): %s", step_summary, exc)
