"""The one exception type a user can cause, and the ways the harness words one.

A `HarnessError` carries a single line that says what is wrong and what to do.
The CLI prints it (no traceback) and exits with code 2; library callers can catch it.
"""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable
from pathlib import Path


class HarnessError(Exception):
    """A user-facing error: bad input, missing data, a checkpoint that does not fit."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line: the CLI prints exactly this.
        super().__init__(" ".join(str(message).split()))


def did_you_mean(name: str, known: Iterable[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """" (did you mean 'x'?)" naming the closest of `known` to a misspelt `name` (up to `n` of them,
    "'x' or 'y'"), or "" when none is close: the tail of an "unknown ..." message."""
    close = difflib.get_close_matches(name, list(known), n=n, cutoff=cutoff)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type's name when it
    has none: what a one-line HarnessError quotes of a library's long error text."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def os_error(e: OSError, path: str | Path, what: str = "") -> HarnessError | None:
    """The one-line HarnessError for an OSError a user can fix (full disk, read-only or forbidden folder,
    a file where a folder should be), naming `path`; None for any other error (a bug: keep its traceback)."""
    where = f"{what} {path}" if what else str(path)
    if e.errno in _DISK_FULL:
        return HarnessError(f"no space left on the device of {where}; free space there (or use another folder) "
                            "and rerun: finished work is kept and the run resumes")
    if e.errno == errno.EROFS:
        return HarnessError(f"{where} is on a read-only file system; pass a writable folder")
    if e.errno in (errno.EACCES, errno.EPERM):
        return HarnessError(f"{where}: permission denied ({e.filename or path}); pass a folder you can write to")
    if e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return HarnessError(f"{where}: {e.strerror} ({e.filename or path}); pass a path whose folders are folders")
    return None
