"""JUnit XML for CI systems: one test case per gate criterion, failures carrying the numbers."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from scalefinder.analysis.reporting.gate import FAIL, SKIPPED, GateResult

SUITE_NAME = "scalefinder gate"
CLASS_NAME = "scalefinder.gate"

# XML 1.0 cannot carry most control characters, even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def gate_junit(result: GateResult, timestamp_utc: str) -> bytes:
    """The gate's verdicts as a JUnit XML document."""
    failures = sum(r.outcome == FAIL for r in result.results)
    skipped = sum(r.outcome == SKIPPED for r in result.results)
    counts = {"tests": len(result.results), "failures": failures, "errors": 0, "skipped": skipped}
    root = _suites(counts)
    suite = _suite(root, result.run_id, counts, timestamp_utc)
    properties = ET.SubElement(suite, "properties")
    _property(properties, "run_id", result.run_id)
    _property(properties, "baseline_run_id", result.baseline_run_id or "")
    for name, value in vars(result.criteria).items():
        _property(properties, name, "" if value is None else str(value))
    for criterion in result.results:
        case = ET.SubElement(suite, "testcase", classname=CLASS_NAME, name=criterion.name, time="0")
        message = _clean(criterion.message)
        if criterion.outcome == FAIL:
            element = ET.SubElement(case, "failure", message=message, type=criterion.name)
            element.text = message
        elif criterion.outcome == SKIPPED:
            ET.SubElement(case, "skipped", message=message)
        else:
            ET.SubElement(case, "system-out").text = message
    return _serialise(root)


def error_junit(run_id: str, message: str, timestamp_utc: str) -> bytes:
    """A JUnit document saying the gate could not judge the run, so CI shows an error, not a pass."""
    counts = {"tests": 1, "failures": 0, "errors": 1, "skipped": 0}
    root = _suites(counts)
    suite = _suite(root, run_id, counts, timestamp_utc)
    case = ET.SubElement(suite, "testcase", classname=CLASS_NAME, name="gate", time="0")
    element = ET.SubElement(case, "error", message=_clean(message), type="gate_error")
    element.text = _clean(message)
    return _serialise(root)


def write_junit(path: Path, document: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(document)
    temporary.replace(path)


def _suites(counts: dict[str, int]) -> ET.Element:
    return ET.Element("testsuites", {"name": SUITE_NAME, "time": "0", **{k: str(v) for k, v in counts.items()}})


def _suite(root: ET.Element, run_id: str, counts: dict[str, int], timestamp_utc: str) -> ET.Element:
    attributes = {"name": f"{SUITE_NAME}: {_clean(run_id)}", "timestamp": timestamp_utc, "time": "0",
                  **{k: str(v) for k, v in counts.items()}}
    return ET.SubElement(root, "testsuite", attributes)


def _property(parent: ET.Element, name: str, value: str) -> None:
    ET.SubElement(parent, "property", name=name, value=_clean(value))


def _clean(text: str) -> str:
    return _NOT_XML.sub("?", str(text))


def _serialise(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
