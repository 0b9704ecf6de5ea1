"""Progress of a long loop: a tqdm bar on a terminal, one plain line every ~10 s anywhere else.

A bar redraws itself with carriage returns: right on a terminal, a wall of `\\r` in a CI log or in
`harness run ... 2> run.log`. So where stderr is not a terminal, `Progress` writes one line at most every
`LOG_INTERVAL_S` seconds while the loop runs, and one when it finishes:

    coco_captioning decoder: 410/1500 step (27%), 13.6 step/s, ETA 01:20, loss=1.9120
    coco_captioning decoder: 1500/1500 step (100%), 14.1 step/s, done in 01:46, loss=1.4944

A loop stopped early (an error, Ctrl-C) writes no last line: the error line that follows says why.
`close_all` closes every live bar so that such a line starts on a line of its own (the CLI calls it).
`log_lines` shows the "harness" logger's warnings as `warning: ...` lines (the CLI's, like its `error: ...`),
written above a live bar instead of into it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import IO

# Often enough to show a long run is alive, rare enough that an hour of training is ~360 lines of log.
LOG_INTERVAL_S = 10.0


def _is_terminal(stream: IO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _clock_text(seconds: float) -> str:
    """mm:ss, or h:mm:ss from an hour on."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{s // 60:02d}:{s % 60:02d}"


def _rate_text(rate: float) -> str:
    return f"{rate:.1f}" if rate >= 1 else f"{rate:.3g}"


class Progress:
    """done/total of one loop: `update(n)` after each piece, `close()` (or a `with` block) at the end.

    On a terminal (`stream.isatty()`, the stream defaulting to stderr) a tqdm bar; elsewhere a line at
    most every `interval_s` and a last one when `total` is reached. `enabled=False` shows nothing (a
    process that is not the writer, a loop too short to show). `terminal` and `clock` are for tests.
    """

    def __init__(self, total: int, desc: str, unit: str, *, initial: int = 0, enabled: bool = True,
                 stream: IO | None = None, terminal: bool | None = None, interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = int(initial)
        self._first = self.n
        self._postfix = ""
        self._stream = stream
        self._interval_s = interval_s
        self._clock = clock
        self._bar = None
        self._open = enabled
        if not enabled:
            return
        if _is_terminal(self._out()) if terminal is None else terminal:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, dynamic_ncols=True,
                             leave=False, file=stream)
        else:
            self._start = self._last = clock()

    def _out(self) -> IO:
        return self._stream if self._stream is not None else sys.stderr  # looked up late: tests swap stderr

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        if not self._open:
            return
        self.n += int(n)
        if self._bar is not None:
            self._bar.update(int(n))
        elif self._clock() - self._last >= self._interval_s:
            self._write(final=False)

    def update_to(self, done: int) -> None:
        """Sets the count to `done` (for a caller that knows the running total, not the step)."""
        self.update(int(done) - self.n)

    def set_postfix(self, **values) -> None:
        """Extra `key=value`s after the counts (e.g. the training loss)."""
        if self._bar is not None:
            self._bar.set_postfix(**values)
        self._postfix = "".join(f", {k}={v}" for k, v in values.items())

    def line(self, *, final: bool) -> str:
        """What a log line says now."""
        elapsed = max(self._clock() - self._start, 0.0)
        rate = (self.n - self._first) / elapsed if elapsed > 0 else 0.0
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total > 0 else ""
        text = f"{self.desc}: {self.n}/{self.total} {self.unit}{pct}, {_rate_text(rate)} {self.unit}/s, "
        if final:
            text += f"done in {_clock_text(elapsed)}"
        else:
            text += f"ETA {_clock_text((self.total - self.n) / rate)}" if rate > 0 else "ETA ?"
        return text + self._postfix

    def _write(self, *, final: bool) -> None:
        out = self._out()
        out.write(self.line(final=final) + "\n")
        out.flush()
        self._last = self._clock()

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._bar is not None:
            self._bar.close()
        elif self.n >= self.total:
            self._write(final=True)


def close_all() -> bool:
    """Closes every live tqdm bar, ours and any library's, leaving the cursor at the start of a line; True
    if there was one (then a message must begin with a newline). Log lines always end with one."""
    tqdm_mod = sys.modules.get("tqdm")
    if tqdm_mod is None:
        return False
    bars = list(getattr(tqdm_mod.tqdm, "_instances", ()))
    for bar in bars:
        with contextlib.suppress(Exception):
            bar.close()
    return bool(bars)


def write_line(text: str) -> None:
    """`text` as a line of its own on stderr; with a live tqdm bar, above it (tqdm redraws the bar below)."""
    tqdm_mod = sys.modules.get("tqdm")
    if tqdm_mod is not None and getattr(tqdm_mod.tqdm, "_instances", None):
        tqdm_mod.tqdm.write(text, file=sys.stderr)
        return
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class _LineHandler(logging.Handler):
    """A log record as `<level>: <message>`, e.g. `warning: vqa: gqa is not prepared ...`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(f"{record.levelname.lower()}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)


@contextlib.contextmanager
def log_lines(name: str = "harness"):
    """For the block, the `name` logger's records (warnings and above, as the root logger's level lets through)
    go to stderr as `warning: ...` lines, and not on to the root logger, whose default format ("WARNING:harness:
    ...", installed by whichever library logs first) is not for users. Restored afterwards."""
    logger = logging.getLogger(name)
    handler = _LineHandler()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
