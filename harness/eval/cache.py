"""Content-addressed, crash-safe on-disk cache of encoder features for whole dataset splits.

Layout under `root`:
    <key>/                 a finished entry: one `<name>.npy` per array and `meta.json`
    <key>.partial/         a build in progress: `plan.json` and `chunk_<i>.npz` files
    .locks/<key>.lock      fcntl lock serialising builders of one key

Every file is written to a temporary name and renamed into place, and a finished entry appears
by renaming a complete directory, so a crash at any point leaves a valid entry, a resumable
partial, or both (the partial is then cleaned up). Finished entries are immutable.

What is on disk is untrusted input (a cache folder may be copied, shared or damaged): `meta.json`,
`plan.json` and the chunks are checked for their shape and types, array names must be the cache's own
(`_ARRAY_NAME_RE`, the file `<name>.npy` inside the entry), nothing is read through a symlink or from
anything but a regular file, and every size an array declares is checked against its file's size before
anything is allocated; arrays are memory-mapped. An entry or a partial build that fails any check is
rebuilt (one warning line), never read past, never a traceback.

numpy only, and ml_dtypes (a jax dependency) for bfloat16: no jax. Chunks are written by a thread
(`harness.eval.overlap.Writer`), off the producer's critical path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import stat
import struct
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from harness.errors import HarnessError, os_error
from harness.eval.overlap import Writer
from harness.files import (  # noqa: F401 - default_cache_dir and CACHE_DIR_ENV are this module's too
    CACHE_DIR_ENV,
    atomic_file,
    default_cache_dir,
    file_lock,
    fsync_dir,
    write_json_atomic,
)
from harness.progress import Progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 8192
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ARRAY_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # no dots: "<name>.dtype" is ours
_HASH_BLOCK_BYTES = 16 << 20
# A meta.json / plan.json is a few kB; anything far larger is not one the cache wrote (read no further).
_MAX_JSON_BYTES = 4 << 20
# numpy's own limit on a .npy header (np.lib.format's max_header_size); checked before the header is read.
_MAX_NPY_HEADER = 10_000
# The dtypes an array may be stored as (`dtypes=` of a build); bfloat16 is kept as its uint16 bits.
_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                     "float16", "bfloat16", "float32", "float64"})
_WHAT = "the feature cache"  # whose path a full disk or unwritable folder is named as

ProduceFn = Callable[[int, int], Iterable[Mapping[str, Any]]]
ProgressArg = bool | Callable[[int, int], None]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cache_key: {type(value).__name__} value {value!r} is not JSON-serialisable")


def cache_key(**fields: Any) -> str:
    """sha256 hex of the canonical JSON (sorted keys, no spaces) of everything that determines the
    features: checkpoint sha256, encoder config, dataset, split, example count, pp, representation,
    dtype. Any change of any field gives a new key."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- dtypes: bfloat16 is stored as its uint16 bits because .npy cannot describe it -------------


def _logical_dtype(name: str | np.dtype) -> np.dtype:
    if str(name) == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _dtype_name(dtype: np.dtype) -> str:
    return dtype.name  # "bfloat16" for ml_dtypes' type, "float32", "int64", ... otherwise


def _to_stored(array: np.ndarray) -> np.ndarray:
    return array.view(np.uint16) if array.dtype.name == "bfloat16" else array


def _from_stored(array: np.ndarray, logical: str) -> np.ndarray:
    return array.view(_logical_dtype(logical)) if logical == "bfloat16" else array


# --- small file helpers -------------------------------------------------------------------------


def _sha256_of(f: Any) -> str:
    digest = hashlib.sha256()
    f.seek(0)
    while block := f.read(_HASH_BLOCK_BYTES):
        digest.update(block)
    return digest.hexdigest()


# --- reading what is on disk: untrusted -----------------------------------------------------------


class Unusable(ValueError):
    """A file of an entry or partial build that the cache did not write as it is (damaged, foreign or
    crafted): the entry is rebuilt."""


def _open_regular(path: Path) -> Any:
    """`path` opened for reading in binary, only if it is a regular file itself: a symlink (wherever it
    points), a FIFO or a device is never opened."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise Unusable(f"{path.name} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise Unusable(f"{path.name} is {'a symlink' if stat.S_ISLNK(st.st_mode) else 'not a regular file'}")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    f = os.fdopen(fd, "rb")
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        f.close()
        raise Unusable(f"{path.name} changed while it was opened")
    return f


def _read_json(path: Path) -> Any:
    """A JSON file of the cache (meta.json, plan.json), at most _MAX_JSON_BYTES."""
    with _open_regular(path) as f:
        data = f.read(_MAX_JSON_BYTES + 1)
    if len(data) > _MAX_JSON_BYTES:
        raise Unusable(f"{path.name} is larger than {_MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise Unusable(f"{path.name} is nested too deeply") from None
    except ValueError as e:
        raise Unusable(f"{path.name} is not JSON ({e})") from None


def _is_int(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _stored_name(logical: str) -> str:
    return "uint16" if logical == "bfloat16" else logical


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _ARRAY_NAME_RE.fullmatch(name) or name == "meta":
        raise Unusable(f"array name {name!r} is not one the cache writes")
    return name


def _check_meta(meta: Any) -> tuple[dict[str, dict[str, Any]], int]:
    """(arrays, num_examples) of a finished entry's meta.json, checked for its shape and types."""
    if not isinstance(meta, dict):
        raise Unusable(f"meta.json holds a {type(meta).__name__}, not an object")
    version = meta.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise Unusable(f"format version {version!r} != {FORMAT_VERSION}")
    n, arrays = meta.get("num_examples"), meta.get("arrays")
    if not _is_int(n, 1):
        raise Unusable(f"num_examples {n!r} is not a positive integer")
    if not isinstance(arrays, dict) or not arrays:
        raise Unusable("meta.json lists no arrays")
    for name, info in arrays.items():
        _check_name(name)
        if not isinstance(info, dict):
            raise Unusable(f"array {name}: {type(info).__name__}, not an object")
        if info.get("file") != f"{name}.npy":
            raise Unusable(f"array {name}: file {info.get('file')!r} is not {name}.npy")
        dtype, stored = info.get("dtype"), info.get("stored_dtype")
        if not isinstance(dtype, str) or dtype not in _DTYPES or stored != _stored_name(dtype):
            raise Unusable(f"array {name}: dtype {dtype!r} stored as {stored!r} is not one the cache writes")
        shape = info.get("shape")
        if (not isinstance(shape, list) or not shape or not all(_is_int(d, 1) for d in shape)
                or shape[0] != n):
            raise Unusable(f"array {name}: shape {shape!r} does not hold {n} examples")
        sha = info.get("sha256")
        if not _is_int(info.get("file_bytes")) or not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise Unusable(f"array {name}: file_bytes / sha256 missing or malformed")
    return arrays, n


def _npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of the .npy at the start of `f`: numpy's own header reader, after the
    header's length is checked (so a crafted length reads nothing large); only plain numeric or unicode
    arrays in C order."""
    magic = f.read(8)
    if len(magic) != 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2):
        raise Unusable("not a .npy array (version 1 or 2)")
    length_format = "<H" if magic[6] == 1 else "<I"
    raw = f.read(struct.calcsize(length_format))
    if len(raw) != struct.calcsize(length_format) or struct.unpack(length_format, raw)[0] > _MAX_NPY_HEADER:
        raise Unusable(".npy header too long or truncated")
    f.seek(0)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f, max_header_size=_MAX_NPY_HEADER)
    if fortran or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in "biufU":
        raise Unusable(f".npy of {dtype} (fortran order {fortran}) is not one the cache writes")
    return tuple(int(d) for d in shape), dtype, f.tell()


def _map_array(path: Path, info: Mapping[str, Any], verify: bool) -> np.ndarray:
    """The .npy `path` of a finished entry, memory-mapped read-only after its size, header and (with
    `verify`) sha256 match `info` (a checked meta.json array)."""
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size != info["file_bytes"]:
            raise Unusable(f"{path.name} has {size} bytes, expected {info['file_bytes']}")
        if verify and _sha256_of(f) != info["sha256"]:
            raise Unusable(f"{path.name} fails its sha256 check")
        f.seek(0)
        shape, dtype, offset = _npy_header(f)
        if list(shape) != info["shape"] or dtype != np.dtype(info["stored_dtype"]):
            raise Unusable(f"{path.name} holds {shape} {dtype}, expected {info['shape']} {info['stored_dtype']}")
        if offset + math.prod(shape) * dtype.itemsize != size:
            raise Unusable(f"{path.name}: its header does not match its size")
        array = np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape)
        array.filename = os.path.abspath(path)  # what np.load's memmap would name (fdopen's name is a number)
    return _from_stored(array, info["dtype"])


class _HashingWriter:
    """File wrapper that hashes everything written through it (saves re-reading a big .npy)."""

    def __init__(self, f: Any):
        self.f, self.sha256, self.nbytes = f, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.nbytes += len(view)
        return self.f.write(view)


def _dir_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks are not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(folder, name))
                total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


# --- the cache ----------------------------------------------------------------------------------


class FeatureCache:
    """Feature arrays of whole dataset splits, keyed by `cache_key(...)`, stored under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    # paths
    def path(self, key: str) -> Path:
        """Directory of the finished entry for `key` (it may not exist)."""
        if not _KEY_RE.match(key) or key.endswith(".partial"):
            raise HarnessError(f"cache key {key!r} is not a plain file name; use cache_key(...)")
        return self.root / key

    def _partial(self, key: str) -> Path:
        return self.path(key).with_name(key + ".partial")

    def _lock_path(self, key: str) -> Path:
        return self.root / ".locks" / f"{key}.lock"

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive inter-process lock for `key` (blocks until free; re-entrant per thread)."""
        def on_wait():
            log.info("waiting for another process working on feature cache entry %s", key)

        if self._lock_path(key).parent.is_symlink():
            raise HarnessError(f"feature cache {self._lock_path(key).parent}: is a symlink; remove it (the cache "
                               "keeps its lock files there itself)")

        with file_lock(self._lock_path(key), on_wait=on_wait):
            yield

    # reading
    def get(self, key: str, *, verify: bool = True) -> dict[str, np.ndarray] | None:
        """The finished entry's arrays, memory-mapped read-only, or None if absent.

        With `verify`, each file's sha256 is checked against the metadata (reads every byte once).
        A corrupt or incomplete entry is deleted with a warning and None is returned.
        """
        entry = self.path(key)
        if not os.path.lexists(entry):
            return None
        problem, arrays = self._load(entry, verify)
        if problem is None:
            return arrays
        # Delete under the lock and only if still broken: another process may have replaced it.
        with self.lock(key):
            if not os.path.lexists(entry):
                return None
            problem, arrays = self._load(entry, verify)
            if problem is None:
                return arrays
            log.warning("feature cache entry %s is unusable (%s); deleting it to recompute", entry, problem)
            self._discard(entry)
        return None

    def _load(self, entry: Path, verify: bool) -> tuple[str | None, dict[str, np.ndarray]]:
        """(problem, arrays): problem is None when the entry is valid. Reads nothing outside `entry`."""
        try:
            if entry.is_symlink() or not entry.is_dir():
                return "not a folder of the cache (a symlink or a file)", {}
            arrays_meta, _ = _check_meta(_read_json(entry / "meta.json"))
            return None, {name: _map_array(entry / info["file"], info, verify) for name, info in arrays_meta.items()}
        except (Unusable, OSError, ValueError, TypeError, OverflowError, MemoryError) as e:
            return (str(e) if isinstance(e, Unusable) else f"{type(e).__name__}: {e}"), {}

    def meta(self, key: str) -> dict[str, Any] | None:
        """The finished entry's metadata (its shape checked, its files not), or None."""
        entry = self.path(key)
        try:
            if entry.is_symlink():
                return None
            meta = _read_json(entry / "meta.json")
            _check_meta(meta)
        except (OSError, ValueError):
            return None
        return meta

    # building
    def get_or_build(
        self,
        key: str,
        num_examples: int,
        produce: ProduceFn,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dtypes: Mapping[str, str] | None = None,
        meta: Mapping[str, Any] | None = None,
        progress: ProgressArg = False,
        verify: bool = True,
    ) -> dict[str, np.ndarray]:
        """The finished entry if there is one, else build it (once, even across processes)."""
        arrays = self.get(key, verify=verify)
        if arrays is not None:
            if os.path.lexists(self._partial(key)):
                # Left over by a builder that died after committing; a live builder holds the lock.
                with self.lock(key):
                    self._discard(self._partial(key))
            return arrays
        with self.lock(key):
            # Another process may have finished it while we waited for the lock.
            arrays = self.get(key, verify=verify)
            if arrays is not None:
                self._discard(self._partial(key))
                return arrays
            return self.build(
                key, num_examples, produce,
                chunk_size=chunk_size, dtypes=dtypes, meta=meta, progress=progress,
            )

    def build(
        self,
        key: str,
        num_examples: int,
        produce: ProduceFn,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dtypes: Mapping[str, str] | None = None,
        meta: Mapping[str, Any] | None = None,
        progress: ProgressArg = False,
    ) -> dict[str, np.ndarray]:
        """Compute and store the entry for `key`, resuming a crashed build; replaces a finished one.

        `produce(start, stop)` yields dicts of arrays (any batch sizes, the same names every time)
        covering examples start..stop-1 in order. Arrays are stored as `dtypes[name]` ("float32",
        "float16", "bfloat16", ...) or as produced.
        """
        if num_examples < 1 or chunk_size < 1:
            raise ValueError(f"num_examples ({num_examples}) and chunk_size ({chunk_size}) must be >= 1")
        meta = dict(meta or {})
        json.dumps(meta)  # fail now, not after hours of feature extraction
        dtypes = {name: _dtype_name(_logical_dtype(d)) for name, d in (dtypes or {}).items()}
        with self.lock(key):
            started = time.time()
            partial = self._partial(key)
            plan = {"format_version": FORMAT_VERSION, "num_examples": num_examples,
                    "chunk_size": chunk_size, "dtypes": dtypes}
            self._prepare_partial(partial, plan)
            num_chunks = -(-num_examples // chunk_size)
            for attempt in range(2):
                missing = [i for i in range(num_chunks) if not os.path.lexists(partial / _chunk_name(i))]
                if missing:
                    log.info("feature cache %s: computing %d of %d chunks", key, len(missing), num_chunks)
                self._produce_chunks(
                    partial, missing, num_examples, chunk_size, produce, dtypes, progress, key
                )
                if self._assemble(key, partial, num_chunks, chunk_size, num_examples, meta, started, dtypes,
                                  last=attempt == 1):
                    break
            else:
                raise HarnessError(
                    f"feature cache {key}: chunks keep failing to read back; check the disk under {self.root}"
                )
            self._discard(partial)
            arrays = self.get(key, verify=False)
            assert arrays is not None, "a just-written entry must load"
            return arrays

    def _prepare_partial(self, partial: Path, plan: dict[str, Any]) -> None:
        """Keep a partial build only if it was made with the same plan; else start over."""
        plan_path = partial / "plan.json"
        if os.path.lexists(partial):
            try:
                if partial.is_symlink() or not partial.is_dir():
                    raise Unusable("not a folder of the cache (a symlink or a file)")
                found = _read_json(plan_path)
                why = None if found == plan else "made with another chunking/dtype plan"
            except (Unusable, OSError) as e:
                why = f"unreadable: {e}"
            if why is None:
                return
            log.warning("discarding partial feature build %s: %s", partial, why)
            self._discard(partial)
        partial.mkdir(parents=True)
        try:
            write_json_atomic(plan_path, plan, what=_WHAT, devices=False)
        except BaseException:
            self._discard(partial)  # a partial without its plan is no resumable build (a full disk, say)
            raise

    def _produce_chunks(
        self,
        partial: Path,
        missing: list[int],
        num_examples: int,
        chunk_size: int,
        produce: ProduceFn,
        dtypes: Mapping[str, str],
        progress: ProgressArg,
        key: str,
    ) -> None:
        """Calls `produce` once per run of consecutive missing chunks and commits each chunk."""
        if not missing:
            return
        done = num_examples - sum(
            min(chunk_size, num_examples - i * chunk_size) for i in missing
        )
        report = _progress_reporter(progress, done, num_examples, key)
        # Chunks are written in a thread, off the producer's critical path (each one still committed by an
        # atomic rename, with its checksum); an error in the producer waits for the chunks already handed
        # over, so they count as finished work.
        try:
            with Writer(lambda index, stored: _write_chunk(partial, index, stored), name="harness-cache-writer") \
                    as writer:
                for first, last in _runs(missing):
                    start, stop = first * chunk_size, min((last + 1) * chunk_size, num_examples)
                    chunk = first
                    pending: dict[str, list[np.ndarray]] = {}
                    pending_rows = 0
                    position = start
                    for batch in produce(start, stop):
                        arrays = _check_batch(batch, pending, dtypes)
                        rows = len(next(iter(arrays.values())))
                        position += rows
                        if position > stop:
                            raise HarnessError(
                                f"produce({start}, {stop}) yielded more than {stop - start} examples; "
                                "check the dataset's example count"
                            )
                        for name, array in arrays.items():
                            pending.setdefault(name, []).append(array)
                        pending_rows += rows
                        # Commit every chunk that is now complete.
                        while chunk <= last:
                            size = min(chunk_size, num_examples - chunk * chunk_size)
                            if pending_rows < size:
                                break
                            stored, pending, pending_rows = _take_chunk(pending, size)
                            writer.submit(chunk, stored)
                            chunk += 1
                        report(rows)
                    if chunk <= last:
                        raise HarnessError(
                            f"produce({start}, {stop}) yielded {position - start} of {stop - start} "
                            "examples; check the dataset's example count"
                        )
        finally:
            report(None)

    def _assemble(
        self,
        key: str,
        partial: Path,
        num_chunks: int,
        chunk_size: int,
        num_examples: int,
        meta: dict[str, Any],
        started: float,
        dtypes: Mapping[str, str] | None = None,
        *,
        last: bool = True,
    ) -> bool:
        """Concatenate the chunks into a finished entry; False if a chunk was unreadable (deleted). Chunks
        that read back but disagree with chunk 0 (names, shapes, dtypes) are all deleted and False returned,
        unless this is the `last` try: then the producer itself is not deterministic (a HarnessError)."""
        staging = partial / "assembly"
        self._discard(staging)
        writers: dict[str, tuple[Any, _HashingWriter]] = {}
        spec: dict[str, dict[str, Any]] = {}
        bad: list[int] = []
        try:
            staging.mkdir()
            for i in range(num_chunks):
                size = min(chunk_size, num_examples - i * chunk_size)
                try:
                    chunk = _read_chunk(partial / _chunk_name(i), rows=size, dtypes=dtypes)
                except Exception as e:  # noqa: BLE001 - zipfile, numpy and OS errors alike mean "damaged"
                    # Drop it and go on checking the others, so one rebuild recomputes every damaged chunk.
                    log.warning("feature cache %s: chunk %d unreadable (%s: %s); recomputing it", key, i,
                                type(e).__name__, e)
                    self._discard(partial / _chunk_name(i))
                    bad.append(i)
                    continue
                if bad:
                    continue
                if i == 0:
                    spec = _open_outputs(staging, chunk, num_examples, writers)
                try:
                    _check_chunk(key, i, chunk, size, spec)
                except HarnessError:
                    if last:
                        raise
                    log.warning("feature cache %s: chunk %d does not match chunk 0; recomputing every chunk",
                                key, i)
                    for j in range(num_chunks):
                        self._discard(partial / _chunk_name(j))
                    bad.append(i)
                    break
                for name in spec:
                    writers[name][1].write(np.ascontiguousarray(chunk[name]))
            for f, _ in writers.values():
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            mapped = os_error(e, self.root, "the feature cache")
            if mapped is None:
                raise
            # The committed chunks stay: a rerun after freeing space only assembles them.
            for f, _ in writers.values():
                with contextlib.suppress(OSError):  # closing flushes, which fails the same way
                    f.close()
            writers.clear()
            self._discard(staging)
            raise mapped from None
        finally:
            for f, _ in writers.values():
                f.close()
        if bad:
            self._discard(staging)
            return False
        arrays_meta = {
            name: {**spec[name], "sha256": hashing.sha256.hexdigest(), "file_bytes": hashing.nbytes}
            for name, (_, hashing) in writers.items()
        }
        now = time.time()
        write_json_atomic(staging / "meta.json", {
            "format_version": FORMAT_VERSION,
            "key": key,
            "num_examples": num_examples,
            "arrays": arrays_meta,
            "meta": meta,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
            "created_unix": now,
            "build_seconds": round(now - started, 3),
        }, what=_WHAT, devices=False)
        fsync_dir(staging)
        entry = self.path(key)
        if entry.exists():  # explicit rebuild: move the old entry aside, then swap in the new one
            self._discard(entry)
        os.rename(staging, entry)
        fsync_dir(self.root)
        return True

    @staticmethod
    def _discard(path: Path) -> None:
        """Remove a directory (renamed aside first, so a half-deleted one never looks valid), a file or a
        symlink (the link only: nothing it points to is touched)."""
        if not os.path.lexists(path):
            return
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)

    # housekeeping
    def entries(self) -> list[dict[str, Any]]:
        """One row per finished entry and per partial build, for `harness cache ls` (a damaged one is
        listed as not complete; a symlink or file is no entry and is not listed)."""
        rows = []
        if not self.root.is_dir():
            return rows
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or path.is_symlink() or not path.is_dir():
                continue
            if path.name.endswith(".partial"):
                try:
                    plan = _read_json(path / "plan.json")
                    total = -(-plan["num_examples"] // plan["chunk_size"])
                    if not (_is_int(plan["num_examples"], 1) and _is_int(plan["chunk_size"], 1)):
                        total = None
                except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
                    total = None
                rows.append({
                    "key": path.name[: -len(".partial")], "complete": False,
                    "chunks_done": len(list(path.glob("chunk_*.npz"))), "chunks_total": total,
                    "size_bytes": _dir_bytes(path),
                })
                continue
            meta = (self.meta(path.name) if _KEY_RE.match(path.name) else None) or {}
            rows.append({
                "key": path.name, "complete": bool(meta),
                "num_examples": meta.get("num_examples"),
                "arrays": {n: {"shape": a["shape"], "dtype": a["dtype"]} for n, a in meta.get("arrays", {}).items()},
                "created": meta.get("created"), "meta": meta.get("meta"),
                "size_bytes": _dir_bytes(path),
            })
        return rows

    def size_bytes(self, key: str | None = None) -> int:
        """Bytes on disk for one key (entry and partial) or for the whole cache."""
        if key is None:
            return _dir_bytes(self.root) if self.root.is_dir() else 0
        return sum(_dir_bytes(p) for p in (self.path(key), self._partial(key)) if p.is_dir() and not p.is_symlink())

    def remove(self, key: str) -> bool:
        """Delete the entry and any partial build for `key`; True if something was removed."""
        with self.lock(key):
            found = self.path(key).exists() or self._partial(key).exists()
            self._discard(self.path(key))
            self._discard(self._partial(key))
        return found


# --- build helpers ------------------------------------------------------------------------------


def _chunk_name(i: int) -> str:
    return f"chunk_{i:06d}.npz"


def _runs(indices: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs (first, last) of sorted integers."""
    first = prev = indices[0]
    for i in indices[1:]:
        if i != prev + 1:
            yield first, prev
            first = i
        prev = i
    yield first, prev


def _check_batch(
    batch: Mapping[str, Any], pending: Mapping[str, list[np.ndarray]], dtypes: Mapping[str, str]
) -> dict[str, np.ndarray]:
    arrays = {}
    for name, value in batch.items():
        if not _ARRAY_NAME_RE.match(name) or name == "meta":
            raise ValueError(f"array name {name!r} cannot be a file name")
        array = np.asarray(value)
        if array.ndim == 0:
            raise ValueError(f"produce yielded a scalar for {name!r}; arrays need a leading example axis")
        if name in dtypes:
            array = array.astype(_logical_dtype(dtypes[name]), copy=False)
        arrays[name] = array
    if not arrays:
        raise ValueError("produce yielded an empty dict")
    if pending and set(arrays) != set(pending):
        raise ValueError(f"produce yielded arrays {sorted(arrays)} after {sorted(pending)}")
    if len({len(a) for a in arrays.values()}) != 1:
        raise ValueError(f"produce yielded arrays of different lengths: { {n: a.shape for n, a in arrays.items()} }")
    return arrays


def _take_chunk(
    pending: dict[str, list[np.ndarray]], size: int
) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]], int]:
    """The first `size` pending rows as a chunk's stored arrays; what is left over, and its row count."""
    stored, rest = {}, {}
    for name, pieces in pending.items():
        joined = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        stored[name] = _to_stored(np.ascontiguousarray(joined[:size]))
        # Keep the logical dtype beside the bits so bfloat16 survives the uint16 detour.
        stored[f"{name}.dtype"] = np.array(_dtype_name(joined.dtype))
        rest[name] = [joined[size:]]
    return stored, rest, len(next(iter(rest.values()))[0])


def _write_chunk(partial: Path, index: int, stored: dict[str, np.ndarray]) -> None:
    """Commits chunk `index` (atomic write and rename), with the sha256 of its own arrays, so a chunk damaged
    on disk is found (and recomputed) before it is assembled into an entry; a name with a dot cannot clash
    with an array's."""
    stored = {**stored, _CHUNK_DIGEST: np.array(_chunk_digest(stored))}
    with atomic_file(partial / _chunk_name(index), "wb", what=_WHAT, devices=False) as f:
        np.savez(f, **stored)


_CHUNK_DIGEST = "chunk.sha256"


def _chunk_digest(chunk: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(n for n in chunk if n != _CHUNK_DIGEST):
        array = np.ascontiguousarray(chunk[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        if array.size:  # an empty array has no bytes (and memoryview cannot cast a zero-length shape)
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _read_chunk(path: Path, rows: int | None = None,
                dtypes: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """A committed chunk's arrays; raises (any exception; `Unusable` for what is checked here) if it is
    unreadable, is not a chunk the cache writes (`rows` examples of named arrays, each with its logical
    dtype, as `dtypes` asks where it names one) or fails its sha256. Only stored (uncompressed) members
    are read, each after its header is checked against its size, so nothing larger than the file is
    allocated."""
    chunk: dict[str, np.ndarray] = {}
    with _open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        with zipfile.ZipFile(fh) as z:
            for info in z.infolist():
                name = info.filename[: -len(".npy")] if info.filename.endswith(".npy") else None
                if name is None or name in chunk:
                    raise Unusable(f"member {info.filename!r} is not one array of a chunk")
                if name != _CHUNK_DIGEST:
                    _check_name(name[: -len(".dtype")] if name.endswith(".dtype") else name)
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
                    raise Unusable(f"member {info.filename!r} is compressed or larger than the file")
                with z.open(info) as m:
                    shape, dtype, offset = _npy_header(m)
                    nbytes = math.prod(shape) * dtype.itemsize
                    if offset + nbytes != info.file_size:
                        raise Unusable(f"member {info.filename!r}: its header does not match its size")
                    data = m.read(nbytes)
                chunk[name] = np.frombuffer(data, dtype).reshape(shape)
    if _CHUNK_DIGEST not in chunk:
        raise ValueError("no sha256 (written by an older harness)")
    if str(chunk.pop(_CHUNK_DIGEST)) != _chunk_digest(chunk):
        raise ValueError("fails its sha256 check")
    names = [n for n in chunk if not n.endswith(".dtype")]
    if not names or len(names) * 2 != len(chunk):
        raise Unusable(f"holds {sorted(chunk)}: not arrays each with its dtype")
    for name in names:
        array, logical = chunk[name], chunk.get(f"{name}.dtype")
        if logical is None or logical.shape != () or logical.dtype.kind != "U" or str(logical) not in _DTYPES:
            raise Unusable(f"array {name} has no known dtype")
        logical = str(logical)
        if array.dtype != np.dtype(_stored_name(logical)) or (dtypes and name in dtypes and dtypes[name] != logical):
            raise Unusable(f"array {name} is {array.dtype} stored for {logical}, not what the build stores")
        if array.ndim < 1 or 0 in array.shape or (rows is not None and len(array) != rows):
            raise Unusable(f"array {name} has shape {array.shape}, expected {rows} examples")
    return chunk


def _split_chunk(chunk: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays = {n: a for n, a in chunk.items() if not n.endswith(".dtype")}
    logical = {n: str(chunk[f"{n}.dtype"]) for n in arrays}
    return arrays, logical


def _open_outputs(
    staging: Path, chunk: dict[str, np.ndarray], num_examples: int,
    writers: dict[str, tuple[Any, _HashingWriter]],
) -> dict[str, dict[str, Any]]:
    """Open one .npy per array (header written) and return its spec for meta.json."""
    arrays, logical = _split_chunk(chunk)
    spec = {}
    for name, array in arrays.items():
        shape = (num_examples, *array.shape[1:])
        spec[name] = {"file": f"{name}.npy", "shape": list(shape), "dtype": logical[name],
                      "stored_dtype": array.dtype.name}
        f = open(staging / spec[name]["file"], "wb")
        hashing = _HashingWriter(f)
        writers[name] = (f, hashing)
        header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(hashing, header)
    return spec


def _check_chunk(key: str, index: int, chunk: dict[str, np.ndarray], size: int, spec: Mapping[str, Any]) -> None:
    arrays, logical = _split_chunk(chunk)
    for name, array in arrays.items():
        expected = spec.get(name)
        if (expected is None or len(array) != size or list(array.shape[1:]) != expected["shape"][1:]
                or logical[name] != expected["dtype"] or array.dtype.name != expected["stored_dtype"]):
            raise HarnessError(
                f"feature cache {key}: chunk {index} ({name} {array.shape} {logical[name]}) does not match "
                f"chunk 0 ({ {n: (s['shape'], s['dtype']) for n, s in spec.items()} }); the producer is not "
                "deterministic in names/shapes/dtypes: fix it and remove the partial build"
            )
    if set(arrays) != set(spec):
        raise HarnessError(f"feature cache {key}: chunk {index} holds {sorted(arrays)}, chunk 0 {sorted(spec)}")


def _progress_reporter(progress: ProgressArg, done: int, total: int, key: str) -> Callable[[int | None], None]:
    """A function taking rows just finished (None = close): a progress display, a callback or nothing."""
    if callable(progress):
        state = [done]

        def report(rows: int | None) -> None:
            if rows is not None:
                state[0] += rows
                progress(state[0], total)

        return report
    if progress:
        bar = Progress(total, f"features {key[:12]}", "ex", initial=done)

        def report(rows: int | None) -> None:
            if rows is None:
                bar.close()
            else:
                bar.update(rows)

        return report
    return lambda rows: None
