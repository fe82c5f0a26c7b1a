"""The one exception type that means "the user gave us bad input", and the helpers its messages share.

The CLI turns a UserError into a single line on stderr and exit code 2; anything else is a bug and keeps its
traceback. Messages say what is wrong, where (file, key, line) and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: The most characters of a user's own input a message repeats: a runaway value must not flood the terminal.
ECHO_LIMIT = 200


class UserError(Exception):
    """Bad input from the user: recipe, data, command line or run folder."""


class RunStopped(Exception):
    """Training stopped before the end (diverged, interrupted); the run folder keeps its last good checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """repr(value) for a message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 1]}… ({len(text):,} characters)"
