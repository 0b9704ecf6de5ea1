"""The one exception type a user can cause.

A `HarnessError` carries a single line that says what is wrong and what to do.
The CLI prints it (no traceback) and exits with code 2; library callers can catch it.
"""


class HarnessError(Exception):
    """A user-facing error: bad input, missing data, a checkpoint that does not fit."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line: the CLI prints exactly this.
        super().__init__(" ".join(str(message).split()))
