"""Writing files safely: the one atomic write, the one file lock, the folder fsync, and the up-front check
that an output folder or file can be written (standard library only).

Every file the harness writes (records, baselines, reports, checkpoints, feature-cache chunks, training
state pointers, bench figures) goes through `atomic_file`: a reader sees the old file or the complete new
one, never a part, and a full disk or unwritable folder is one line naming the path.

Only a regular file (or a missing path) is ever replaced. A symlink is never replaced: the write lands on
the file it points to (followed to the end), which is replaced atomically in its own folder. A character
device or a FIFO (`-o /dev/stdout`, `-o /dev/null`, a named pipe) is written through, as a shell's `>`
does, where the writer allows it (`devices=True`, the default: outputs the user names); the harness's own
stores (records, the feature cache, training state) pass `devices=False` and refuse one with one line. A
block device, a socket or a folder is refused by every writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.errors import HarnessError, os_error


CACHE_DIR_ENV = "HARNESS_CACHE_DIR"


def default_cache_dir() -> Path:
    """The harness's cache folder (the feature cache is its `features/`, libraries' side files go in it
    too): $HARNESS_CACHE_DIR, else ~/.cache/sovit-harness. An empty (or blank) $HARNESS_CACHE_DIR counts as
    unset: never the current folder."""
    chosen = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "sovit-harness"


# Libraries that keep files of their own under $HOME unless told otherwise: matplotlib its font cache and
# config (~/.cache/matplotlib, ~/.config/matplotlib), keras its keras.json (~/.keras). A run keeps them in
# the harness's cache folder instead (variable -> sub-folder).
SIDE_FILES = {"MPLCONFIGDIR": "matplotlib", "KERAS_HOME": "keras"}
# The ones set (non-empty) when the process started: the user's choice, kept.
_USERS_SIDE_FILES = frozenset(v for v in SIDE_FILES if os.environ.get(v, "").strip())


def side_files_under(cache_dir: str | Path) -> None:
    """Points each library of SIDE_FILES at a sub-folder of `cache_dir` (through its environment variable,
    before the library is imported), except where the user set the variable before the process started.
    Called by the CLI at start-up, and again when --cache-dir names another folder."""
    for var, sub in SIDE_FILES.items():
        if var not in _USERS_SIDE_FILES:
            os.environ[var] = str(Path(cache_dir).expanduser().absolute() / sub)


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows (os.umask can only swap it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def write_target(path: str | Path, *, what: str = "") -> tuple[Path, os.stat_result | None]:
    """Where a write to `path` lands, and what is there (its stat, links followed; None: nothing yet). A
    symlink to a regular file (or a dangling one) gives the file it points to, followed to the end, so the
    link itself stays; a symlink to a device or FIFO is written through as it is (the kernel follows it:
    `/dev/stdout` is `/proc/self/fd/1`, whose target is no path). A symlink loop is one line."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise HarnessError(f"{_where(what, path)}: is a symlink loop; point it at a file or remove it") from None
    if path.is_symlink() and (st is None or stat.S_ISREG(st.st_mode)):
        return Path(os.path.realpath(path)), st
    return path, st


def _where(what: str, path) -> str:
    return f"{what} {path}" if what else str(path)


def _check_special(path: Path, st: os.stat_result, what: str, devices: bool) -> None:
    """A non-regular file at a write's target: fine to write through (a character device or FIFO, where the
    writer allows it), else one line."""
    if devices and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        return
    if stat.S_ISDIR(st.st_mode):
        raise HarnessError(f"{_where(what, path)}: is a folder; pass a file name (e.g. {Path(path) / 'report.md'})")
    advice = ("pass a file path" if devices else
              "the harness keeps its own regular files there: remove it or use another folder")
    raise HarnessError(f"{_where(what, path)}: is {_kind(st.st_mode)}, not a regular file; {advice}")


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", *, what: str = "", devices: bool = True):
    """Yields a file object for `path`; on success it is fsynced and renamed into place, so readers see the
    old file or the complete new one, never a part. The file gets the permissions a plain `open` would
    (0666 less the umask): mkstemp's 0600 survives the rename and would hide a shared runs folder or cache
    from everyone else. A full disk or unwritable folder is a one-line HarnessError naming the path (`what`
    says whose path it is, e.g. "--out"); nothing is left behind.

    A symlink at `path` stays a symlink: its target is replaced. A character device or FIFO there is
    written through directly (no temporary file: `/dev/null` stays `/dev/null`) when `devices`, else
    refused; anything else that is not a regular file is refused (see the module doc)."""
    path = Path(path)
    tmp = None
    try:
        target, st = write_target(path, what=what)
        if st is not None and not stat.S_ISREG(st.st_mode):
            _check_special(path, st, what, devices)
            with open(target, mode) as f:
                yield f
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and (mapped := os_error(e, path, what)) is not None:
            raise mapped from None
        raise


def write_json_atomic(path: str | Path, obj, *, what: str = "", devices: bool = True) -> Path:
    with atomic_file(path, "w", what=what, devices=devices) as f:
        json.dump(obj, f, indent=2, sort_keys=False, allow_nan=True)
        f.write("\n")
    return Path(path)


def write_text_atomic(path: str | Path, text: str, *, what: str = "", devices: bool = True) -> Path:
    with atomic_file(path, "w", what=what, devices=devices) as f:
        f.write(text)
    return Path(path)


def fsync_dir(path: str | Path) -> None:
    """Makes the entries of a folder (a file renamed into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _no_symlink(path: Path) -> None:
    if path.is_symlink():
        raise HarnessError(f"{path}: is a symlink where the harness writes a folder of its own; remove the link "
                           "(nothing is written through it)")


def fresh_dir(path: str | Path) -> Path:
    """An empty folder at `path` (what an interrupted earlier write left there is removed; a symlink there is
    refused, never followed into)."""
    path = Path(path)
    _no_symlink(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def replace_dir(tmp: str | Path, path: str | Path) -> None:
    """Moves the finished folder `tmp` to `path` (an old folder there is removed first); the folder above
    is fsynced so that the rename survives a crash. A symlink at `path` is refused, never followed into."""
    path = Path(path)
    _no_symlink(path)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    fsync_dir(path.parent)


# One flock per (lock file, thread), re-entrant: the feature cache locks an entry inside a build that
# already holds it.
_held_locks: dict[tuple[str, int], list[int]] = {}  # (path, thread id) -> [fd, depth]
_held_guard = threading.Lock()


@contextlib.contextmanager
def file_lock(path: str | Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """An exclusive flock on the file `path` (created, with its folder, if missing); yields whether it had
    to wait for another process, calling `on_wait()` before it does. Re-entrant per thread. The kernel
    drops the lock when its holder dies, so a killed process never leaves a stale one behind. A symlink at
    `path` is refused (one line), never followed."""
    path = Path(path)
    slot = (str(path), threading.get_ident())
    with _held_guard:
        held = _held_locks.get(slot)
        if held:
            held[1] += 1
    if held:
        try:
            yield False
        finally:
            with _held_guard:
                held[1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HarnessError(f"lock file {path}: is a symlink; remove it (the harness creates its own)") from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        with _held_guard:
            _held_locks[slot] = [fd, 1]
        try:
            yield waited
        finally:
            with _held_guard:
                del _held_locks[slot]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)  # closing the descriptor releases the lock too


def check_folder(option: str, path, *, write: bool = True, named=None) -> None:
    """Up front, one line naming the option: `path` must be a folder (or creatable as one: no file where it
    or a folder above it should be), and with `write` the folder (or, if it does not exist yet, the
    nearest one above it: nothing is created here) must take a small file: not read-only, not forbidden,
    not on a full disk."""
    if path is None:
        return
    named = path if named is None else named  # what the user typed (a file's path, for check_output_file)
    p = Path(path).expanduser().absolute()
    existing = p
    for above in (p, *p.parents):
        if above.exists() or above.is_symlink():
            if not above.is_dir():
                where = ("is a file, not a folder" if above == p and named == path
                         else f"is under {above}, which is a file")
                raise HarnessError(f"{option} {named}: {where}; pass {'a folder' if named == path else 'another path'}")
            existing = above
            break
    if not write:
        return
    try:
        # 64 KiB and an fsync: a disk with less room than that is full for any record or chunk.
        with tempfile.TemporaryFile(dir=existing) as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        mapped = os_error(e, named, option)
        if mapped is None:
            raise
        raise mapped from None


def check_output_file(option: str, path) -> None:
    """Up front: `path` is a file to (over)write, not a folder, in a folder that can take it; or a character
    device or FIFO that this process may write to (written through: `-o /dev/stdout`); a symlink is judged
    by what it points to (its target is what gets written)."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise HarnessError(f"{option} {path}: is a folder; pass a file name (e.g. {Path(path) / 'report.md'})")
    try:
        target, st = write_target(p, what=option)
    except OSError:  # a file where a folder should be: check_folder names it
        target, st = p, None
    if st is not None and not stat.S_ISREG(st.st_mode):
        _check_special(Path(path), st, option, devices=True)
        if not os.access(target, os.W_OK):
            raise HarnessError(f"{option} {path}: permission denied; pass a file you can write to")
        return
    check_folder(option, target.parent, named=path)


__all__ = ["CACHE_DIR_ENV", "atomic_file", "check_folder", "check_output_file", "current_umask", "default_cache_dir",
           "file_lock", "fresh_dir", "fsync_dir", "replace_dir", "side_files_under", "write_json_atomic",
           "write_target", "write_text_atomic"]
