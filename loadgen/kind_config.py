"""Checks shared by the profile tables that sources and capacity controllers own.

Each kind validates its own ``[sources.<kind>]`` or ``[capacity.<kind>]`` table (the profile
loader only knows the kinds' names). These helpers give the same mistake the same wording in
every one of them, and keep each kind's ``validate_config`` down to what is special about it.
"""

from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import SplitResult, urlsplit

from scalefinder.core.errors import ProfileError


def split_url(url: str) -> SplitResult | None:
    """The parts of a URL, or None when urllib cannot split it (an unclosed '[' of an IPv6 host,
    a port out of range)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # an invalid port raises only when read
    except ValueError:
        return None
    return parts


def with_defaults(table: Any, where: str, defaults: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    """Refuse a non-table or an unknown key, then return ``defaults`` overlaid with ``table``."""
    if not isinstance(table, dict):
        raise ProfileError("must be a table", key=where)
    known = {*required, *defaults}
    for key in table:
        if key not in known:
            raise ProfileError(f"unknown key; expected one of {', '.join(sorted(known))}", key=f"{where}.{key}")
    return {**defaults, **table}


def seconds(value: Any, low: float, high: float, key: str, low_open: bool = False) -> float:
    """A duration in seconds within [low, high] (or (low, high] when ``low_open``)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (low < value if low_open else low <= value) or value > high:
        lower = f"above {low:g}" if low_open else f"from {low:g}"
        raise ProfileError(f"expected seconds {lower} to {high:g}, got {value!r}", key=key)
    return float(value)


def whole_number(value: Any, low: int, key: str) -> int:
    """A whole number of at least ``low`` (TOML booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ProfileError(f"expected a whole number of at least {low}, got {value!r}", key=key)
    return value


def flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ProfileError(f"expected true or false, got {value!r}", key=key)
    return value
