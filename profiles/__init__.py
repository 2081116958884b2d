"""Example profiles, shipped with the package so that ``scalefinder demo`` works from a wheel.

The TOML files beside this one are package data; :func:`shipped_profile` finds one whether
scalefinder runs from a checkout or from an installed wheel.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_profile(name: str) -> Path:
    """The path of the shipped profile ``name`` (e.g. ``"demo.toml"``)."""
    # The package is always installed as files on disk (never zipped), so the traversable is a Path.
    return Path(str(resources.files(__name__).joinpath(name)))
