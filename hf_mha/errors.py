"""The one exception type that means "the user gave us bad input".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps its
traceback. Messages say what is wrong, where (file, key, line) and how to fix it.
"""


class UserError(Exception):
    """Bad input from the user: recipe, data, command line or run folder."""


class RunStopped(Exception):
    """Training stopped before the end (diverged, interrupted); the run folder keeps its last good checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
