"""The two threads that keep an extraction's device busy: `prefetch` runs an iterator ahead of its consumer
(the host pipeline and the host-to-device transfer of the next batches), `Writer` applies a function to
items in submission order (the feature cache's chunk commits). Each goes through a bounded queue, so memory
stays bounded, and an error in the thread is raised in the caller. Standard library only.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_POLL_S = 0.1  # how often a blocked thread looks whether its consumer has gone


def prefetch(iterable: Iterable, depth: int = 2, *, name: str = "harness-prefetch") -> Iterator:
    """The items of `iterable` in order, produced in a thread up to `depth` ahead of the consumer. Closing the
    generator (the consumer stops or fails) stops the thread after the item it is producing."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def run():
        it = iter(iterable)
        try:
            for item in it:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


class Writer:
    """`fn(*args)` for each `submit(*args)`, in order, in one thread; at most `depth` items wait. Use it as a
    context manager: leaving the block waits for every submitted item (after an error in the block too:
    what was submitted is finished work) and raises the thread's first error, if any; after that error the
    thread skips the remaining items."""

    def __init__(self, fn: Callable[..., Any], depth: int = 1, *, name: str = "harness-writer"):
        self._fn = fn
        self._items: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            args = self._items.get()
            if args is None:
                return
            if self.error is None:
                try:
                    self._fn(*args)
                except BaseException as e:  # noqa: BLE001 - raised in the submitting thread
                    self.error = e

    def submit(self, *args: Any) -> None:
        """Queues `fn(*args)` (blocks while `depth` items wait); raises the thread's error if it had one."""
        if self.error is not None:
            raise self.error
        self._items.put(args)

    def close(self) -> None:
        """Waits for every submitted item; raises the thread's error if it had one."""
        if self._thread.is_alive():
            self._items.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except BaseException:  # noqa: BLE001 - the block's own error is the one to raise
            pass
