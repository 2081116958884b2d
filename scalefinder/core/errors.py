"""The one error family of scalefinder.

Library code raises these and never exits the process; the command line maps each class to an
exit code (see ``EXIT_CODES`` in the CLI): 2 for a user's mistake, 3 for the environment or the
infrastructure. A gate failure is not an error: the gate command returns exit code 1 itself.
"""

from __future__ import annotations


class ScalefinderError(Exception):
    """Base of every error scalefinder raises on purpose. The message is shown to the user as is."""

    exit_code = 3


class InputError(ScalefinderError):
    """The user gave something unusable: a bad profile, parameter, file or run directory."""

    exit_code = 2


class ProfileError(InputError):
    """A profile failed validation. The message names the file, the key and what was expected."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None):
        key = printable(key) if key else key
        where = ""
        if path and key:
            where = f"{path}: [{key}] "
        elif path:
            where = f"{path}: "
        elif key:
            where = f"[{key}] "
        super().__init__(f"{where}{message}")
        self.path = path
        self.key = key


# A key or value longer than this is shown cut short: the error line must stay readable.
MAX_SHOWN_CHARS = 120


def printable(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """A key, value or file name as it can be shown on one line: control characters escaped, one
    longer than ``limit`` cut short.

    TOML allows any character in a quoted key, so a key may hold a newline that would split the
    error line (and make its second line look like something else).
    """
    shown = one_line(text)
    if len(shown) > limit:
        shown = f"{shown[:limit]}… ({len(text)} characters)"
    return shown


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped, so that it prints on one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class RunDirectoryError(InputError):
    """A run directory is missing, corrupt, or written by a newer schema."""


class InfrastructureError(ScalefinderError):
    """Something outside the user's input failed: a process, a port, a cloud API, a server."""

    exit_code = 3


class PartialRunError(InfrastructureError):
    """The run directory is incomplete (the run was interrupted or crashed)."""


class Interrupted(ScalefinderError):
    """The run was stopped by SIGINT or SIGTERM after cleaning up."""

    exit_code = 130
