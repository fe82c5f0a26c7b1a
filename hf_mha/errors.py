"""The one exception type that means "the user gave us bad input".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and keeps its
traceback. Messages say what is wrong, where (file, key, line) and how to fix it.
"""


class UserError(Exception):
    """Bad input from the user: recipe, data, command line or run folder."""
