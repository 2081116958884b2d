"""Kubernetes resource quantities: ``250m`` CPU, ``512Mi`` memory, and back.

Both halves need them: the profile's ``[kubernetes]`` table gives requests as a team writes them
in a pod spec, and the analysis writes targets into manifests. Only the suffixes Kubernetes
accepts for CPU and memory are read; an exponent form (``1e3``) is valid there too but nobody
writes a request that way, so it is refused rather than half supported.
"""

from __future__ import annotations

import math
import re

_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
            "E": 1e18}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
MIB = 2 ** 20


class QuantityError(ValueError):
    """Not a quantity Kubernetes would accept for this resource."""


def parse(text: str | int | float) -> float:
    """The value of a quantity in base units (cores for CPU, bytes for memory)."""
    if isinstance(text, bool):
        raise QuantityError(f"expected a quantity such as \"250m\" or \"512Mi\", got {text!r}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text <= 0:
            raise QuantityError(f"expected a positive quantity, got {text!r}")
        return float(text)
    match = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise QuantityError(f"expected a quantity such as \"250m\" or \"512Mi\", got {text!r}")
    number, suffix = float(match.group(1)), match.group(2) or ""
    value = number * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])
    if value <= 0:
        raise QuantityError(f"expected a positive quantity, got {text!r}")
    return value


def cpu(value: float) -> str:
    """Cores as a quantity: whole cores plain, anything else in millicores (``250m``)."""
    millis = round(value * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory(value_bytes: float) -> str:
    """Bytes as a quantity in the largest binary unit that keeps it whole (``512Mi``)."""
    whole = round(value_bytes)
    for suffix in ("Ti", "Gi", "Mi", "Ki"):
        if whole % _BINARY[suffix] == 0:
            return f"{whole // _BINARY[suffix]}{suffix}"
    return str(whole)


def plain(value: float) -> str:
    """A dimensionless quantity (a Pods metric's average value): whole numbers plain, else milli."""
    return cpu(value)
