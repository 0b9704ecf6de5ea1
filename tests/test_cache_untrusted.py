"""The feature cache reads what is on disk as untrusted input (harness/eval/cache.py): a finished entry's
`meta.json` and `.npy` files, a partial build's `plan.json` and chunks, damaged, foreign or crafted, give a
valid load or a rebuild of that entry (one warning line), never another exception, never memory beyond a
bound, never a file read or touched outside the cache folder.

The named classes are tested one by one; then Hypothesis mutates a real entry and a real partial build
(JSON fields replaced by any JSON value, hostile names and paths, files replaced by random bytes,
truncated, symlinked outside, FIFOs, folders; `.npy` headers and chunk members crafted with a valid
checksum) and checks the property on every example: a small budget in `make test`, a larger one under
`-m slow`. Every `open` is watched through an audit hook, memory through tracemalloc, hangs through an
alarm.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import tracemalloc
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

from harness.errors import HarnessError
from harness.eval import cache as cache_mod
from harness.eval.cache import FeatureCache

N, CHUNK, DIM = 10, 4, 3
KEY = "k" * 64
PEAK_BYTES = 64 << 20  # what one call may allocate at most (the arrays here are a few hundred bytes)
HOSTILE_ABSOLUTE = ("/dev/zero", "/etc/passwd", "/proc/self/mem")


def _features(start: int, stop: int) -> dict[str, np.ndarray]:
    rows = np.arange(start, stop)
    return {"pre_logits": np.cos(rows[:, None] * 0.5 + np.arange(DIM)).astype(np.float32),
            "label": (rows % 3).astype(np.int64)}


EXPECTED = _features(0, N)


def produce(start, stop):
    for s in range(start, stop, 3):
        yield _features(s, min(stop, s + 3))


def _crash_after(rows):
    def p(start, stop):
        done = 0
        for batch in produce(start, stop):
            if done >= rows:
                raise RuntimeError("simulated crash")
            done += len(batch["label"])
            yield batch
    return p


# ------------------------------------------------------------------------------------ what is watched
_opened: list[str] | None = None


def _audit(event, args):
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under `folder` (not following links) with its kind, size, mtime and bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        s = p.lstat()
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(folder))] = (s.st_mode, s.st_size, s.st_mtime_ns, data)
    return out


class _Hang(Exception):
    pass


@contextlib.contextmanager
def _watched(root: Path, outside: Path, seconds: int = 30):
    """Records every file opened inside (audit hook), fails on a read under `outside` or of a hostile
    absolute path, on more than PEAK_BYTES allocated, on a hang (alarm), and on any change under `outside`."""
    global _opened

    def on_alarm(*_):
        raise _Hang(f"no answer in {seconds}s")

    before = _snapshot(outside)
    _opened = []
    tracemalloc.start()
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        opened, _opened = _opened, None
    outside_real = os.path.realpath(outside)
    for path in opened:
        real = os.path.realpath(path)
        assert not real.startswith(outside_real + os.sep) and real not in HOSTILE_ABSOLUTE, f"read {path}"
    assert peak < PEAK_BYTES, f"allocated {peak} bytes"
    assert _snapshot(outside) == before, "a file outside the cache changed"


def _assert_expected(arrays):
    assert set(arrays) == set(EXPECTED)
    for name, want in EXPECTED.items():
        assert arrays[name].dtype == want.dtype
        np.testing.assert_array_equal(arrays[name], want)


# ----------------------------------------------------------------------------------------- templates
def _template(root: Path) -> Path:
    """root/cache: a finished entry for KEY and a partial build (2 of 3 chunks) for KEY2; root/outside: a
    valid copy of both (a link to them must never be followed) and a valid .npy."""
    cache = FeatureCache(root / "cache")
    cache.build(KEY, N, produce, chunk_size=CHUNK)
    with pytest.raises(RuntimeError):
        cache.build(KEY2, N, _crash_after(2 * CHUNK), chunk_size=CHUNK)
    outside = root / "outside"
    outside.mkdir()
    shutil.copytree(root / "cache" / KEY, outside / "entry")
    shutil.copytree(root / "cache" / f"{KEY2}.partial", outside / "partial")
    np.save(outside / "secret.npy", np.full((N, DIM), 7, np.float32))
    return root


KEY2 = "p" * 64


def _copy(template: Path, to: Path) -> tuple[FeatureCache, Path]:
    shutil.copytree(template, to, symlinks=True)
    return FeatureCache(to / "cache"), to / "outside"


def _check(cache: FeatureCache, outside: Path) -> None:
    """The property: get() is a valid load or None, get_or_build() a valid load or rebuild, housekeeping
    never raises; nothing outside read or touched; memory and time bounded."""
    root = cache.root
    with _watched(root, outside):
        for key in (KEY, KEY2):
            got = cache.get(key)
            if got is not None:
                _assert_expected(got)
            cache.meta(key)
            cache.entries()
            cache.size_bytes(key)
            _assert_expected(cache.get_or_build(key, N, produce, chunk_size=CHUNK))
    for key in (KEY, KEY2):
        assert not os.path.lexists(root / f"{key}.partial")
        _assert_expected(cache.get(key))
    assert not [p for p in root.iterdir() if p.name.startswith(".trash-")]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return _template(tmp_path_factory.mktemp("untrusted"))


# ------------------------------------------------------------------------------------ the named classes
def _meta(cache):
    return cache.root / KEY / "meta.json"


def _edit_meta(cache, edit):
    meta = json.loads(_meta(cache).read_text())
    meta = edit(meta)
    _meta(cache).write_text(json.dumps(meta))


def _npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _header(shape, dtype) -> bytes:
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                            "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _chunk_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _write_chunk(path: Path, arrays: dict[str, np.ndarray], *, digest=True, compress=False, extra=None) -> None:
    """A chunk as the cache writes it (members `<name>.npy`, dtypes beside, the chunk's sha256), from
    `arrays`; `digest` recomputes the checksum so that only the structure is wrong."""
    arrays = dict(arrays)
    if digest:
        arrays[cache_mod._CHUNK_DIGEST] = np.array(cache_mod._chunk_digest(arrays))
    path.unlink()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, array in arrays.items():
            z.writestr(f"{name}.npy", _npy_bytes(array))
        for name, data in (extra or {}).items():
            z.writestr(name, data)


def _chunk0(cache) -> tuple[Path, dict[str, np.ndarray]]:
    path = cache.root / f"{KEY2}.partial" / "chunk_000000.npz"
    with np.load(path) as npz:
        arrays = {n: npz[n] for n in npz.files if n != cache_mod._CHUNK_DIGEST}
    return path, arrays


def _link_outside(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    path.symlink_to(target)


CLASSES = {
    # meta.json
    "meta-names-a-path-outside": lambda c, o: _edit_meta(c, lambda m: m["arrays"]["pre_logits"].update(
        file="../../outside/secret.npy") or m),
    "meta-names-an-absolute-path": lambda c, o: _edit_meta(c, lambda m: m["arrays"]["pre_logits"].update(
        file=str(o / "secret.npy")) or m),
    "meta-array-name-with-dots": lambda c, o: _edit_meta(c, lambda m: m.update(arrays={
        "../../outside/secret": {**m["arrays"]["pre_logits"], "file": "../../outside/secret.npy"}}) or m),
    "meta-is-a-list": lambda c, o: _meta(c).write_text("[1, 2, 3]"),
    "meta-is-a-string": lambda c, o: _meta(c).write_text('"meta"'),
    "meta-is-deeply-nested": lambda c, o: _meta(c).write_text("[" * 100_000 + "]" * 100_000),
    "meta-is-huge": lambda c, o: _meta(c).write_bytes(b" " * (8 << 20) + b"{}"),
    "meta-missing-keys": lambda c, o: _edit_meta(c, lambda m: {"format_version": 1}),
    "meta-wrong-types": lambda c, o: _edit_meta(c, lambda m: m.update(num_examples="10", arrays=[]) or m),
    "meta-bool-version": lambda c, o: _edit_meta(c, lambda m: m.update(format_version=True) or m),
    "meta-shape-disagrees": lambda c, o: _edit_meta(c, lambda m: m["arrays"]["pre_logits"].update(
        shape=[N, DIM + 1]) or m),
    "meta-count-disagrees": lambda c, o: _edit_meta(c, lambda m: m.update(num_examples=N + 1) or m),
    "meta-declares-a-huge-array": lambda c, o: _edit_meta(c, lambda m: m["arrays"]["pre_logits"].update(
        shape=[N, 1 << 40]) or m),
    "meta-unknown-dtype": lambda c, o: _edit_meta(c, lambda m: m["arrays"]["label"].update(
        dtype="object", stored_dtype="object") or m),
    "meta-unhashable-dtype": lambda c, o: _edit_meta(c, lambda m: m["arrays"]["label"].update(dtype=[1]) or m),
    "meta-is-a-symlink-outside": lambda c, o: _link_outside(_meta(c), o / "entry" / "meta.json"),
    "meta-is-a-fifo": lambda c, o: (_meta(c).unlink(), os.mkfifo(_meta(c))),
    # the arrays
    "npy-is-a-symlink-outside": lambda c, o: _link_outside(c.root / KEY / "pre_logits.npy",
                                                           o / "entry" / "pre_logits.npy"),
    "npy-is-a-symlink-to-dev-zero": lambda c, o: _link_outside(c.root / KEY / "label.npy", Path("/dev/zero")),
    "npy-is-a-folder": lambda c, o: ((c.root / KEY / "label.npy").unlink(), (c.root / KEY / "label.npy").mkdir()),
    "npy-header-declares-a-huge-array": lambda c, o: (c.root / KEY / "label.npy").write_bytes(
        _header((N, 1 << 40), np.int64) + b"\0" * 64),
    "npy-holds-objects": lambda c, o: (c.root / KEY / "label.npy").write_bytes(_header((N,), object) + b"\0" * 80),
    "entry-is-a-symlink-outside": lambda c, o: _link_outside(c.root / KEY, o / "entry"),
    "entry-is-a-file": lambda c, o: (shutil.rmtree(c.root / KEY), (c.root / KEY).write_text("x")),
    # the partial build
    "plan-is-a-list": lambda c, o: (c.root / f"{KEY2}.partial" / "plan.json").write_text("[]"),
    "plan-wrong-types": lambda c, o: (c.root / f"{KEY2}.partial" / "plan.json").write_text(
        json.dumps({"format_version": 1, "num_examples": "10", "chunk_size": 0, "dtypes": []})),
    "plan-is-a-symlink-outside": lambda c, o: _link_outside(c.root / f"{KEY2}.partial" / "plan.json",
                                                            o / "partial" / "plan.json"),
    "partial-is-a-symlink-outside": lambda c, o: _link_outside(c.root / f"{KEY2}.partial", o / "partial"),
    "chunk-is-a-symlink-outside": lambda c, o: _link_outside(c.root / f"{KEY2}.partial" / "chunk_000000.npz",
                                                             o / "partial" / "chunk_000000.npz"),
    "chunk-is-a-folder": lambda c, o: ((c.root / f"{KEY2}.partial" / "chunk_000001.npz").unlink(),
                                       (c.root / f"{KEY2}.partial" / "chunk_000001.npz").mkdir()),
    "chunk-dangling-symlink-where-a-chunk-is-missing": lambda c, o: (
        c.root / f"{KEY2}.partial" / "chunk_000002.npz").symlink_to(o / "planted.npz"),
    "chunk-member-named-a-path": lambda c, o: (lambda p, a: _write_chunk(p, {
        **a, "../../outside/x": a["label"], "../../outside/x.dtype": a["label.dtype"]}))(*_chunk0(c)),
    "chunk-member-without-dtype": lambda c, o: (lambda p, a: _write_chunk(p, {
        k: v for k, v in a.items() if k != "label.dtype"}))(*_chunk0(c)),
    "chunk-unknown-dtype": lambda c, o: (lambda p, a: _write_chunk(p, {
        **a, "label.dtype": np.array("complex64")}))(*_chunk0(c)),
    "chunk-wrong-row-count": lambda c, o: (lambda p, a: _write_chunk(p, {
        **a, "label": a["label"][:2], "pre_logits": a["pre_logits"][:2]}))(*_chunk0(c)),
    "chunk-disagrees-with-chunk-0": lambda c, o: (lambda p, a: _write_chunk(
        p.with_name("chunk_000001.npz"), {**a, "pre_logits": np.zeros((CHUNK, DIM + 2), np.float32)}))(*_chunk0(c)),
    "chunk-member-header-declares-4tib": lambda c, o: (lambda p, a: _write_chunk(p, {}, digest=False, extra={
        "label.npy": _header((1 << 40,), np.float32) + b"\0" * 16}))(*_chunk0(c)),
    "chunk-member-deflate-bomb": lambda c, o: (lambda p, a: _write_chunk(p, {
        **a, "label": np.zeros((CHUNK, 1 << 22), np.int64)}, compress=True))(*_chunk0(c)),
}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_untrusted_contents_are_rebuilt_never_read_past(name, template, tmp_path, caplog):
    cache, outside = _copy(template, tmp_path / "c")
    CLASSES[name](cache, outside)
    with caplog.at_level(logging.WARNING, logger="harness.eval.cache"):
        _check(cache, outside)
    rebuilt = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert rebuilt, "a damaged entry is rebuilt with a warning"
    assert all("\n" not in r.getMessage() for r in rebuilt)


def test_a_symlinked_lock_folder_is_one_line(template, tmp_path):
    cache, outside = _copy(template, tmp_path / "c")
    shutil.rmtree(cache.root / ".locks")
    (cache.root / ".locks").symlink_to(outside)
    with pytest.raises(HarnessError, match=r"\.locks: is a symlink; remove it"):
        cache.get_or_build("x" * 64, N, produce, chunk_size=CHUNK)
    assert not list(outside.glob("*.lock"))


# -------------------------------------------------------------------------------------------- fuzzing
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**70) | st.floats(allow_nan=True)
    | st.sampled_from(["", "..", "../../outside/secret.npy", "/etc/passwd", "/dev/zero", "pre_logits.npy",
                       "label.npy", "bfloat16", "float32", "uint16", "int64", "object", "a/b.npy", "meta"])
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
META_PATHS = (
    [("format_version",), ("num_examples",), ("arrays",), ("key",), ("meta",), ("created",)]
    + [("arrays", a, f) for a in ("pre_logits", "label")
       for f in ("file", "shape", "dtype", "stored_dtype", "sha256", "file_bytes")]
    + [("arrays", "../../outside/secret"), ("arrays", "a/b"), ("arrays", "meta"), ("arrays", "")])
PLAN_PATHS = [("format_version",), ("num_examples",), ("chunk_size",), ("dtypes",), ("dtypes", "pre_logits")]
ENTRY_FILES = ("meta.json", "pre_logits.npy", "label.npy")
PARTIAL_FILES = ("plan.json", "chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz")


def _set_path(obj, path, value):
    for key in path[:-1]:
        if not isinstance(obj, dict):
            return
        obj = obj.setdefault(key, {})
    if isinstance(obj, dict):
        obj[path[-1]] = value


@st.composite
def mutation(draw):
    where = draw(st.sampled_from(["entry", "partial"]))
    name = draw(st.sampled_from(ENTRY_FILES if where == "entry" else PARTIAL_FILES))
    kinds = ["bytes", "truncate", "flip", "symlink", "fifo", "folder", "remove"]
    if name.endswith(".json"):
        kinds += ["json_edit", "json_edit", "json_edit", "json_replace"]
    if name.endswith(".npy"):
        kinds += ["npy_header"]
    if name.endswith(".npz"):
        kinds += ["chunk_rename", "chunk_drop", "chunk_dtype", "chunk_rows", "chunk_compress", "chunk_header"]
    kind = draw(st.sampled_from(kinds))
    paths = META_PATHS if name == "meta.json" else PLAN_PATHS
    return dict(where=where, name=name, kind=kind,
                path=draw(st.sampled_from(paths)), value=draw(JSON), data=draw(st.binary(max_size=300)),
                at=draw(st.integers(0, 4000)), target=draw(st.sampled_from(
                    ["outside/secret.npy", "outside/entry/{name}", "outside/partial/{name}", "/dev/zero",
                     "outside/nothing", "/etc/passwd"])),
                shape=draw(st.lists(st.integers(0, 2**40), min_size=0, max_size=3)),
                dtype=draw(st.sampled_from(["<f4", ">f4", "<i8", "|O", "<U3", "<c8", "|b1", "<f2", "V2"])),
                member=draw(st.sampled_from(["../../outside/x", "a/b", "meta", "", "x.dtype", "chunk.sha256",
                                             "label", "pre_logits.dtype"])))


def _apply(root: Path, m: dict) -> None:
    cache = root / "cache"
    folder = cache / (KEY if m["where"] == "entry" else f"{KEY2}.partial")
    path = folder / m["name"]
    if not os.path.lexists(path) and m["kind"] not in ("symlink", "fifo", "folder", "bytes"):
        return
    kind = m["kind"]
    if kind not in ("symlink", "fifo", "folder", "bytes", "remove") and not stat.S_ISREG(os.lstat(path).st_mode):
        return  # an earlier mutation made it a link, FIFO or folder: never read or write through it
    if kind in ("symlink", "fifo", "folder", "bytes", "remove") and os.path.lexists(path):
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    if kind == "bytes":
        path.write_bytes(m["data"])
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[: m["at"]])
    elif kind == "flip":
        data = bytearray(path.read_bytes())
        if data:
            data[m["at"] % len(data)] ^= 1 + m["at"] % 255
        path.write_bytes(bytes(data))
    elif kind == "symlink":
        target = m["target"].format(name=m["name"])
        path.symlink_to(target if target.startswith("/") else root / target)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "json_edit":
        try:
            obj = json.loads(path.read_text())
        except ValueError:
            return
        _set_path(obj, m["path"], m["value"])
        path.write_text(json.dumps(obj))
    elif kind == "json_replace":
        path.write_text(json.dumps(m["value"]))
    elif kind == "npy_header":
        try:
            header = _header(tuple(m["shape"]), m["dtype"])
        except (TypeError, ValueError):
            return
        path.write_bytes(header + m["data"])
    elif kind.startswith("chunk_"):
        try:
            with np.load(path) as npz:
                arrays = {n: npz[n] for n in npz.files if n != cache_mod._CHUNK_DIGEST}
        except Exception:  # noqa: BLE001 - already damaged
            return
        if kind == "chunk_rename" and "label" in arrays:
            arrays[m["member"]] = arrays.pop("label")
        elif kind == "chunk_drop" and arrays:
            arrays.pop(sorted(arrays)[m["at"] % len(arrays)])
        elif kind == "chunk_dtype":
            arrays["label.dtype"] = np.array(str(m["value"])[:12])
        elif kind == "chunk_rows" and "pre_logits" in arrays:
            arrays["pre_logits"] = arrays["pre_logits"][: m["at"] % CHUNK]
        if kind == "chunk_header":
            try:
                header = _header(tuple(m["shape"]), m["dtype"])
            except (TypeError, ValueError):
                return
            _write_chunk(path, arrays)
            with zipfile.ZipFile(path, "a") as z:
                z.writestr(f"{m['member'] or 'x'}.npy", header + m["data"])
        else:
            _write_chunk(path, arrays, compress=kind == "chunk_compress")


def _fuzz(template: Path, mutations: list[dict]) -> None:
    # Durability is not what is fuzzed: without fsync an example takes milliseconds, not a disk flush.
    with tempfile.TemporaryDirectory() as tmp, mock.patch("os.fsync", lambda fd: None), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name" of a crafted chunk
        cache, outside = _copy(template, Path(tmp) / "c")
        for m in mutations:
            _apply(Path(tmp) / "c", m)
        _check(cache, outside)


_TEMPLATE: dict[str, Path] = {}


def _shared_template() -> Path:
    # Hypothesis re-runs the test body: one template for every example (function-scoped fixtures would be
    # reset per test, not per example).
    if "t" not in _TEMPLATE:
        _TEMPLATE["t"] = _template(Path(tempfile.mkdtemp(prefix="untrusted-fuzz-")))
    return _TEMPLATE["t"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation(), min_size=1, max_size=3))
def test_fuzzed_entries_and_partials_load_or_rebuild(mutations):
    _fuzz(_shared_template(), mutations)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation(), min_size=1, max_size=4))
def test_fuzzed_entries_and_partials_load_or_rebuild_long(mutations):
    _fuzz(_shared_template(), mutations)
