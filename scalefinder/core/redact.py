"""Secrets in a profile: references to the environment, and the redacted form that is recorded.

A profile may carry credentials: header values, request bodies, a URL's ``user:password@`` and
query values. They are sent as written, but wherever a profile or a URL is written down (the
manifest, findings, the report, ``plan``, messages) only names and shapes are kept: header
names, JSON and form keys, query keys, the host and path of a URL. Values become
``<redacted>``; a URL's whole user info does too (a user name is often a token itself).

Values may also refer to the environment, ``"Bearer ${API_TOKEN}"``. A reference is expanded
only in memory, for sending; the profile as loaded keeps ``${API_TOKEN}``, and so does what is
recorded wherever it shows a value at all. ``$${`` stands for a literal ``${``.

This module is shared by the run side and the report side, so it imports neither.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from scalefinder.core.errors import ProfileError

MARKER = "<redacted>"
# A reference ${NAME}, or $${ (a literal ${): one pattern, so that text is scanned once, left to
# right, and a variable's value is never read as a reference or an escape itself.
_REFERENCE_OR_ESCAPE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# An absolute URL inside any text (a command line, a source's settings).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


# -- references to the environment ---------------------------------------------------------


def check_references(text: str, key: str, path: str | None = None) -> None:
    """Refuse a ``${`` that does not start a well-formed reference: almost always a typo, and
    sending it as literal text would hide the mistake until the service rejects the request."""
    if "${" in _REFERENCE_OR_ESCAPE.sub("", text):
        raise ProfileError("expected environment references of the form ${NAME} (letters, digits and _; "
                           "write $${ for a literal ${)", path=path, key=key)


def expand_references(text: str, key: str, environ: Mapping[str, str], path: str | None = None) -> str:
    """``text`` with each ``${NAME}`` replaced by the variable's value; a variable that is not
    set is a ``ProfileError`` naming the key and the variable."""

    def replacement(match: re.Match) -> str:
        name = match.group(1)
        if name is None:
            return "${"
        if name not in environ:
            raise ProfileError(f"refers to the environment variable {name}, which is not set", path=path, key=key)
        return environ[name]

    return _REFERENCE_OR_ESCAPE.sub(replacement, text)


# -- the recorded form ---------------------------------------------------------------------


def redact_url(url: str) -> str:
    """A URL or a path with its user info and its query and fragment values replaced by the
    marker; scheme, host, port, path and query keys are kept."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL we can take apart: keep nothing of it
        return MARKER
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MARKER}@{netloc.rpartition('@')[2]}"
    redacted = urlunsplit((parts.scheme, netloc, parts.path, redact_query(parts.query),
                           redact_query(parts.fragment)))
    if url.startswith("//") and not redacted.startswith("//"):
        redacted = "//" + redacted  # urlunsplit drops the slashes of an empty host
    return redacted


def redact_query(query: str) -> str:
    """``token=abc&page=2`` becomes ``token=<redacted>&page=<redacted>``; a part without a key
    (``?abc``) is a value and is replaced whole."""
    parts = []
    for part in query.split("&"):
        key, equals, value = part.partition("=")
        if equals:
            parts.append(f"{key}={MARKER if value else ''}")
        else:
            parts.append(MARKER if part else "")
    return "&".join(parts)


def redact_urls_in(value: Any) -> Any:
    """``value`` (a string, or lists and tables of them) with every absolute URL in it redacted."""
    try:
        return _redact_urls_in(value)
    except RecursionError:  # nested deeper than any real setting (a damaged file): show none of it
        return MARKER


def _redact_urls_in(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), value)
    if isinstance(value, Mapping):
        return {key: _redact_urls_in(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_urls_in(item) for item in value]
    return value


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """Header names kept, every non-empty value replaced."""
    return {name: MARKER if value else value for name, value in headers.items()}


def redact_body(body: str | None) -> str | None:
    """A JSON body keeps its structure and keys, a form body its keys; any other body is
    replaced whole."""
    if not body:
        return body
    try:
        return json.dumps(_redact_json(json.loads(body)), ensure_ascii=False)
    except (ValueError, RecursionError):
        pass
    try:
        fields = parse_qsl(body, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return MARKER
    return "&".join(f"{key}={MARKER if value else ''}" for key, value in fields)


def _redact_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _redact_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_json(item) for item in value]
    return None if value is None else MARKER


def redact_profile(data: dict[str, Any]) -> dict[str, Any]:
    """A profile as ``Profile.to_dict`` lays it out, in the form that may be recorded.

    The capacity table is kept as written: ``scalefinder restore`` runs its controller again
    from the manifest, so a changed command template would restore nothing.
    """
    data = {**data, **{key: redact_urls_in(data[key]) for key in ("target", "workload", "sources") if key in data}}
    target = data.get("target") or {}
    for key in ("url", "health_path"):
        if isinstance(target.get(key), str):
            target[key] = redact_url(target[key])
    for request in (data.get("workload") or {}).get("requests") or []:
        request["path"] = redact_url(request["path"])
        request["name"] = redact_url(request["name"])  # the name defaults to the path
        request["headers"] = redact_headers(request.get("headers") or {})
        request["body"] = redact_body(request.get("body"))
    return data
