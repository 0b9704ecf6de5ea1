"""Content-addressed, crash-safe on-disk cache of encoder features for whole dataset splits.

Layout under `root`:
    <key>/                 a finished entry: one `<name>.npy` per array and `meta.json`
    <key>.partial/         a build in progress: `plan.json` and `chunk_<i>.npz` files
    .locks/<key>.lock      fcntl lock serialising builders of one key

Every file is written to a temporary name and renamed into place, and a finished entry appears
by renaming a complete directory, so a crash at any point leaves a valid entry, a resumable
partial, or both (the partial is then cleaned up). Finished entries are immutable.

numpy only, and ml_dtypes (a jax dependency) for bfloat16: no jax. Chunks are written by a thread
(`harness.eval.overlap.Writer`), off the producer's critical path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from harness.errors import HarnessError, os_error
from harness.eval.overlap import Writer
from harness.files import atomic_file, file_lock, fsync_dir, write_json_atomic
from harness.progress import Progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 8192
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ARRAY_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # no dots: "<name>.dtype" is ours
_HASH_BLOCK_BYTES = 16 << 20
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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


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
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- the cache ----------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The harness's cache folder (the feature cache is its `features/`): $HARNESS_CACHE_DIR, else
    ~/.cache/sovit-harness."""
    return Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "sovit-harness"))


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

        with file_lock(self._lock_path(key), on_wait=on_wait):
            yield

    # reading
    def get(self, key: str, *, verify: bool = True) -> dict[str, np.ndarray] | None:
        """The finished entry's arrays, memory-mapped read-only, or None if absent.

        With `verify`, each file's sha256 is checked against the metadata (reads every byte once).
        A corrupt or incomplete entry is deleted with a warning and None is returned.
        """
        entry = self.path(key)
        if not entry.is_dir():
            return None
        problem, arrays = self._load(entry, verify)
        if problem is None:
            return arrays
        # Delete under the lock and only if still broken: another process may have replaced it.
        with self.lock(key):
            if not entry.is_dir():
                return None
            problem, arrays = self._load(entry, verify)
            if problem is None:
                return arrays
            log.warning("feature cache entry %s is unusable (%s); deleting it to recompute", entry, problem)
            self._discard(entry)
        return None

    def _load(self, entry: Path, verify: bool) -> tuple[str | None, dict[str, np.ndarray]]:
        """(problem, arrays): problem is None when the entry is valid."""
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError) as e:
            return f"meta.json unreadable: {e}", {}
        if meta.get("format_version") != FORMAT_VERSION:
            return f"format version {meta.get('format_version')} != {FORMAT_VERSION}", {}
        arrays = {}
        try:
            for name, info in meta["arrays"].items():
                path = entry / info["file"]
                if path.stat().st_size != info["file_bytes"]:
                    return f"{path.name} has {path.stat().st_size} bytes, expected {info['file_bytes']}", {}
                if verify and _sha256_file(path) != info["sha256"]:
                    return f"{path.name} fails its sha256 check", {}
                array = _from_stored(np.load(path, mmap_mode="r", allow_pickle=False), info["dtype"])
                if list(array.shape) != info["shape"] or len(array) != meta["num_examples"]:
                    return f"{path.name} has shape {array.shape}, expected {info['shape']}", {}
                arrays[name] = array
        except (OSError, KeyError, ValueError, TypeError) as e:
            return f"{type(e).__name__}: {e}", {}
        return None, arrays

    def meta(self, key: str) -> dict[str, Any] | None:
        """The finished entry's metadata (no verification), or None."""
        try:
            return json.loads((self.path(key) / "meta.json").read_text())
        except (OSError, ValueError):
            return None

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
            if self._partial(key).exists():
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
            for _attempt in range(2):
                missing = [i for i in range(num_chunks) if not (partial / _chunk_name(i)).exists()]
                if missing:
                    log.info("feature cache %s: computing %d of %d chunks", key, len(missing), num_chunks)
                self._produce_chunks(
                    partial, missing, num_examples, chunk_size, produce, dtypes, progress, key
                )
                if self._assemble(key, partial, num_chunks, chunk_size, num_examples, meta, started):
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
        if partial.is_dir():
            try:
                same = json.loads(plan_path.read_text()) == plan
            except (OSError, ValueError):
                same = False
            if same:
                return
            log.warning("discarding partial feature build %s: made with another chunking/dtype plan", partial)
            self._discard(partial)
        partial.mkdir(parents=True)
        try:
            write_json_atomic(plan_path, plan, what=_WHAT)
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
    ) -> bool:
        """Concatenate the chunks into a finished entry; False if a chunk was unreadable (deleted)."""
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
                    chunk = _read_chunk(partial / _chunk_name(i))
                except Exception as e:  # noqa: BLE001 - zipfile, numpy and OS errors alike mean "damaged"
                    # Drop it and go on checking the others, so one rebuild recomputes every damaged chunk.
                    log.warning("feature cache %s: chunk %d unreadable (%s: %s); recomputing it", key, i,
                                type(e).__name__, e)
                    (partial / _chunk_name(i)).unlink(missing_ok=True)
                    bad.append(i)
                    continue
                if bad:
                    continue
                if i == 0:
                    spec = _open_outputs(staging, chunk, num_examples, writers)
                _check_chunk(key, i, chunk, size, spec)
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
        }, what=_WHAT)
        fsync_dir(staging)
        entry = self.path(key)
        if entry.exists():  # explicit rebuild: move the old entry aside, then swap in the new one
            self._discard(entry)
        os.rename(staging, entry)
        fsync_dir(self.root)
        return True

    @staticmethod
    def _discard(path: Path) -> None:
        """Remove a directory (renamed aside first, so a half-deleted one never looks valid)."""
        if not path.exists():
            return
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        if trash.is_dir():
            shutil.rmtree(trash, ignore_errors=True)
        else:
            trash.unlink(missing_ok=True)

    # housekeeping
    def entries(self) -> list[dict[str, Any]]:
        """One row per finished entry and per partial build, for `harness cache ls`."""
        rows = []
        if not self.root.is_dir():
            return rows
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue
            if path.name.endswith(".partial"):
                try:
                    plan = json.loads((path / "plan.json").read_text())
                    total = -(-plan["num_examples"] // plan["chunk_size"])
                except (OSError, ValueError, KeyError):
                    total = None
                rows.append({
                    "key": path.name[: -len(".partial")], "complete": False,
                    "chunks_done": len(list(path.glob("chunk_*.npz"))), "chunks_total": total,
                    "size_bytes": _dir_bytes(path),
                })
                continue
            meta = self.meta(path.name) or {}
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
        return sum(_dir_bytes(p) for p in (self.path(key), self._partial(key)) if p.is_dir())

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
    with atomic_file(partial / _chunk_name(index), "wb", what=_WHAT) as f:
        np.savez(f, **stored)


_CHUNK_DIGEST = "chunk.sha256"


def _chunk_digest(chunk: Mapping[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(n for n in chunk if n != _CHUNK_DIGEST):
        array = np.ascontiguousarray(chunk[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _read_chunk(path: Path) -> dict[str, np.ndarray]:
    """A committed chunk's arrays; raises (any exception) if it is unreadable or fails its sha256."""
    with np.load(path, allow_pickle=False) as npz:
        chunk = {name: npz[name] for name in npz.files}
    if _CHUNK_DIGEST not in chunk:
        raise ValueError("no sha256 (written by an older harness)")
    if str(chunk.pop(_CHUNK_DIGEST)) != _chunk_digest(chunk):
        raise ValueError("fails its sha256 check")
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
