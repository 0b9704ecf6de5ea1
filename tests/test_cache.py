"""Tests for the on-disk feature cache (harness/eval/cache.py)."""

import json
import logging
import multiprocessing
import os
import queue
import time
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from harness.errors import HarnessError
from harness.eval import cache as cache_mod
from harness.eval.cache import FeatureCache, cache_key

DIM = 6


def _features(start: int, stop: int) -> dict[str, np.ndarray]:
    """Deterministic fake features: row i is a function of i only."""
    rows = np.arange(start, stop)
    pre_logits = np.sin(rows[:, None] * 0.37 + np.arange(DIM)[None, :]).astype(np.float32)
    return {"pre_logits": pre_logits, "label": rows % 7}


class Producer:
    """A `produce` that records its calls, yields odd-sized batches and can crash on request."""

    def __init__(self, batch: int = 5, crash_after_rows: int | None = None):
        self.batch, self.crash_after_rows = batch, crash_after_rows
        self.calls: list[tuple[int, int]] = []
        self.rows_yielded = 0

    def __call__(self, start, stop):
        self.calls.append((start, stop))
        for s in range(start, stop, self.batch):
            if self.crash_after_rows is not None and self.rows_yielded >= self.crash_after_rows:
                raise RuntimeError("simulated crash")
            e = min(stop, s + self.batch)
            self.rows_yielded += e - s
            yield _features(s, e)


def _expected(num_examples):
    return _features(0, num_examples)


def test_cache_key_is_canonical_and_sensitive():
    fields = dict(checkpoint_sha256="ab" * 32, encoder={"variant": "So400m/14", "pool": "map"},
                  dataset="cifar100", split="train", num_examples=50000,
                  pp="resize(224)|value_range(-1,1)", representation="pre_logits", dtype="float32")
    key = cache_key(**fields)
    assert len(key) == 64 and int(key, 16) >= 0
    assert cache_key(**dict(reversed(list(fields.items())))) == key  # order of fields is irrelevant
    for name, other in [("split", "test"), ("num_examples", 49999), ("dtype", "bfloat16"),
                        ("encoder", {"variant": "So400m/14", "pool": "gap"})]:
        assert cache_key(**{**fields, name: other}) != key
    assert cache_key(**fields, extra=None) != key
    with pytest.raises(TypeError):
        cache_key(x=object())


def test_identical_request_hits_without_produce(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(dataset="toy", n=23)
    first = Producer()
    out = cache.get_or_build(key, 23, first, chunk_size=8, meta={"dataset": "toy"})
    assert first.calls == [(0, 23)]
    for name, array in _expected(23).items():
        np.testing.assert_array_equal(out[name], array)

    def must_not_run(start, stop):
        raise AssertionError("produce called for a finished entry")

    again = FeatureCache(tmp_path).get_or_build(key, 23, must_not_run, chunk_size=8)
    for name, array in _expected(23).items():
        np.testing.assert_array_equal(again[name], array)
    assert cache.meta(key)["meta"] == {"dataset": "toy"}
    # A different request is a different key, so it is computed.
    other = Producer()
    cache.get_or_build(cache_key(dataset="toy", n=22), 22, other, chunk_size=8)
    assert other.calls == [(0, 22)]


def test_memory_mapped_read_back(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.build("k", 20, Producer(), chunk_size=8)
    out = cache.get("k")
    for array in out.values():
        assert isinstance(array, np.memmap)
        assert not array.flags.writeable
        assert Path(array.filename).parent == tmp_path / "k"
    np.testing.assert_array_equal(out["pre_logits"], _expected(20)["pre_logits"])
    assert out["pre_logits"].dtype == np.float32 and out["label"].dtype == np.int64
    assert cache.get("absent") is None


def test_interrupted_build_resumes_only_missing_chunks(tmp_path):
    num_examples, chunk = 45, 8
    cache = FeatureCache(tmp_path / "a")
    crashing = Producer(batch=5, crash_after_rows=20)  # 20 rows = chunks 0 and 1 committed
    with pytest.raises(RuntimeError, match="simulated crash"):
        cache.build("k", num_examples, crashing, chunk_size=chunk)
    partial = tmp_path / "a" / "k.partial"
    assert sorted(p.name for p in partial.glob("chunk_*.npz")) == ["chunk_000000.npz", "chunk_000001.npz"]
    assert cache.get("k") is None
    assert [e["complete"] for e in cache.entries()] == [False]

    resumed = Producer(batch=5)
    out = cache.get_or_build("k", num_examples, resumed, chunk_size=chunk)
    assert resumed.calls == [(2 * chunk, num_examples)]
    assert resumed.rows_yielded == num_examples - 2 * chunk
    assert not partial.exists()

    clean = FeatureCache(tmp_path / "b").build("k", num_examples, Producer(batch=11), chunk_size=chunk)
    for name in clean:
        np.testing.assert_array_equal(out[name], clean[name])
        np.testing.assert_array_equal(out[name], _expected(num_examples)[name])
    # Byte-identical files: the entry does not depend on batch sizes or interruptions.
    meta_a, meta_b = FeatureCache(tmp_path / "a").meta("k"), FeatureCache(tmp_path / "b").meta("k")
    def checksums(meta):
        return {name: array["sha256"] for name, array in meta["arrays"].items()}

    assert checksums(meta_a) == checksums(meta_b)


def test_missing_middle_chunk_is_recomputed_alone(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.build("k", 40, Producer(batch=4, crash_after_rows=32), chunk_size=8)
    (tmp_path / "k.partial" / "chunk_000001.npz").unlink()
    resumed = Producer(batch=3)
    out = cache.build("k", 40, resumed, chunk_size=8)
    assert resumed.calls == [(8, 16), (32, 40)]
    np.testing.assert_array_equal(out["pre_logits"], _expected(40)["pre_logits"])


def test_crash_before_final_rename_resumes_without_produce(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    real_rename = os.rename

    def failing_rename(src, dst):
        if Path(dst) == tmp_path / "k":
            raise OSError("simulated crash at commit")
        return real_rename(src, dst)

    monkeypatch.setattr(cache_mod.os, "rename", failing_rename)
    with pytest.raises(OSError, match="simulated crash"):
        cache.build("k", 17, Producer(), chunk_size=8)
    monkeypatch.setattr(cache_mod.os, "rename", real_rename)
    assert cache.get("k") is None

    def must_not_run(start, stop):
        raise AssertionError("all chunks were already committed")

    out = cache.get_or_build("k", 17, must_not_run, chunk_size=8)
    np.testing.assert_array_equal(out["label"], _expected(17)["label"])


def test_leftover_partial_next_to_finished_entry_is_cleaned(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.build("k", 10, Producer(), chunk_size=4)
    (tmp_path / "k.partial").mkdir()  # as if the builder died after committing the entry
    out = cache.get_or_build("k", 10, Producer(crash_after_rows=0), chunk_size=4)
    assert len(out["label"]) == 10
    assert not (tmp_path / "k.partial").exists()


def test_flipped_byte_is_detected_and_recomputed(tmp_path, caplog):
    cache = FeatureCache(tmp_path)
    cache.build("k", 30, Producer(), chunk_size=8)
    path = tmp_path / "k" / "pre_logits.npy"
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x10  # inside the array data, not the header
    path.write_bytes(bytes(data))
    # Without verification the size still matches, so the flip goes unnoticed (documented cost).
    assert cache.get("k", verify=False) is not None
    with caplog.at_level(logging.WARNING, logger="harness.eval.cache"):
        assert cache.get("k") is None
    assert "sha256" in caplog.text
    assert not (tmp_path / "k").exists()
    again = Producer()
    out = cache.get_or_build("k", 30, again, chunk_size=8)
    assert again.calls == [(0, 30)]
    np.testing.assert_array_equal(out["pre_logits"], _expected(30)["pre_logits"])


def test_truncated_or_incomplete_entry_is_rejected_without_verify(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.build("k", 30, Producer(), chunk_size=8)
    path = tmp_path / "k" / "label.npy"
    path.write_bytes(path.read_bytes()[:-8])
    assert cache.get("k", verify=False) is None
    assert not (tmp_path / "k").exists()
    cache.build("k", 30, Producer(), chunk_size=8)
    (tmp_path / "k" / "meta.json").unlink()
    assert cache.get("k", verify=False) is None



def _partial_with_chunks(tmp_path, num_examples=40, chunk=8, committed=32):
    """A crashed build: the first committed/chunk chunks are in the partial."""
    cache = FeatureCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.build("k", num_examples, Producer(batch=4, crash_after_rows=committed), chunk_size=chunk)
    return cache, tmp_path / "k.partial"


def test_damaged_chunks_of_a_partial_build_are_recomputed(tmp_path, caplog):
    """A flipped byte, a truncated file and a chunk that reads back but fails its sha256: each one is
    dropped and recomputed in the same rebuild (no traceback, no wedged cache); the others are reused."""
    cache, partial = _partial_with_chunks(tmp_path)
    flipped = bytearray((partial / "chunk_000000.npz").read_bytes())
    at = bytes(flipped).index(_expected(8)["pre_logits"].tobytes())  # inside the array data
    flipped[at + 5] ^= 0x10
    (partial / "chunk_000000.npz").write_bytes(bytes(flipped))
    truncated = partial / "chunk_000002.npz"
    truncated.write_bytes(truncated.read_bytes()[:100])
    # A valid .npz whose data changed under its recorded sha256 (a silent bit flip the zip would miss).
    with np.load(partial / "chunk_000003.npz") as npz:
        arrays = {n: npz[n] for n in npz.files}
    arrays["pre_logits"] = arrays["pre_logits"] + 1
    with open(partial / "chunk_000003.npz", "wb") as f:
        np.savez(f, **arrays)
    resumed = Producer(batch=3)
    with caplog.at_level(logging.WARNING, logger="harness.eval.cache"):
        out = cache.get_or_build("k", 40, resumed, chunk_size=8)
    assert "chunk 0 unreadable" in caplog.text and "chunk 2 unreadable" in caplog.text
    assert "chunk 3 unreadable (ValueError: fails its sha256 check)" in caplog.text
    # First the never-written chunk 4, then the three damaged ones in one pass; chunk 1 is reused.
    assert resumed.calls == [(32, 40), (0, 8), (16, 32)]
    for name, want in _expected(40).items():
        np.testing.assert_array_equal(out[name], want)
    assert not partial.exists()


def test_a_chunk_without_a_checksum_is_recomputed(tmp_path):
    """Chunks written before chunks carried their sha256 cannot be trusted: recomputed, not assembled."""
    cache, partial = _partial_with_chunks(tmp_path, committed=16)
    with np.load(partial / "chunk_000001.npz") as npz:
        arrays = {n: npz[n] for n in npz.files if n != "chunk.sha256"}
    with open(partial / "chunk_000001.npz", "wb") as f:
        np.savez(f, **arrays)
    resumed = Producer()
    out = cache.get_or_build("k", 40, resumed, chunk_size=8)
    assert resumed.calls == [(16, 40), (8, 16)]
    np.testing.assert_array_equal(out["pre_logits"], _expected(40)["pre_logits"])


def test_cache_files_respect_the_umask(tmp_path):
    """mkstemp makes 0600 files and the mode survives the rename: every cache file must get the umask's."""
    old = os.umask(0o027)
    try:
        cache = FeatureCache(tmp_path)
        with pytest.raises(RuntimeError):
            cache.build("k", 20, Producer(crash_after_rows=8), chunk_size=8)
        assert (tmp_path / "k.partial" / "chunk_000000.npz").stat().st_mode & 0o777 == 0o640
        cache.build("k", 20, Producer(), chunk_size=8)
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "k").iterdir()}
    finally:
        os.umask(old)
    assert modes == {"meta.json": 0o640, "pre_logits.npy": 0o640, "label.npy": 0o640}

@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_round_trip(tmp_path, dtype):
    cache = FeatureCache(tmp_path)
    out = cache.build("k", 19, Producer(), chunk_size=8, dtypes={"pre_logits": dtype})
    logical = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(np.float16)
    expected = _expected(19)["pre_logits"].astype(logical)
    for arrays in (out, FeatureCache(tmp_path).get("k")):
        assert arrays["pre_logits"].dtype == logical
        np.testing.assert_array_equal(arrays["pre_logits"].view(np.uint16), expected.view(np.uint16))
        assert arrays["label"].dtype == np.int64  # untouched arrays keep their dtype
    meta = cache.meta("k")["arrays"]["pre_logits"]
    assert meta["dtype"] == dtype
    assert os.path.getsize(tmp_path / "k" / "pre_logits.npy") < 19 * DIM * 4


def test_produced_bfloat16_is_kept_as_bfloat16(tmp_path):
    def produce(start, stop):
        x = _features(start, stop)
        yield {"encoded": x["pre_logits"].astype(ml_dtypes.bfloat16)}

    out = FeatureCache(tmp_path).build("k", 9, produce, chunk_size=4)
    assert out["encoded"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out["encoded"].astype(np.float32),
                                  _expected(9)["pre_logits"].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_changed_chunking_discards_the_partial(tmp_path, caplog):
    cache = FeatureCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.build("k", 30, Producer(crash_after_rows=10), chunk_size=4)
    fresh = Producer()
    with caplog.at_level(logging.WARNING, logger="harness.eval.cache"):
        out = cache.build("k", 30, fresh, chunk_size=8)
    assert "another chunking" in caplog.text
    assert fresh.calls == [(0, 30)]
    np.testing.assert_array_equal(out["label"], _expected(30)["label"])


def test_producer_count_mismatch_is_a_harness_error(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(HarnessError, match="yielded 20 of 25"):
        cache.build("k", 25, lambda s, e: iter([_features(0, 20)]), chunk_size=8)
    with pytest.raises(HarnessError, match="more than"):
        cache.build("j", 5, lambda s, e: iter([_features(0, 6)]), chunk_size=8)
    with pytest.raises(HarnessError):
        cache.get("../escape")


def test_progress_callback_and_housekeeping(tmp_path):
    cache = FeatureCache(tmp_path)
    seen = []
    cache.build("k", 21, Producer(), chunk_size=8, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (21, 21) and all(t == 21 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    cache.build("j", 5, Producer(), chunk_size=8)
    rows = {r["key"]: r for r in cache.entries()}
    assert set(rows) == {"j", "k"} and rows["k"]["num_examples"] == 21
    assert rows["k"]["arrays"]["pre_logits"] == {"shape": [21, DIM], "dtype": "float32"}
    assert cache.size_bytes("k") > 21 * DIM * 4
    assert cache.size_bytes() >= cache.size_bytes("k") + cache.size_bytes("j")
    # An explicit build replaces a finished entry.
    rebuilt = Producer()
    cache.build("j", 5, rebuilt, chunk_size=8)
    assert rebuilt.calls == [(0, 5)] and len(cache.get("j")["label"]) == 5
    assert cache.remove("k") and not cache.remove("k")
    assert [r["key"] for r in cache.entries()] == ["j"]


def _concurrent_worker(root, key, num_examples, log_path, barrier, results):
    """Runs in a child process: build the same key as its sibling at the same moment."""

    def produce(start, stop):
        with open(log_path, "a") as f:
            f.write(json.dumps([os.getpid(), start, stop]) + "\n")
        for s in range(start, stop, 4):
            time.sleep(0.02)  # keep the build open long enough for the sibling to collide
            yield _features(s, min(stop, s + 4))

    barrier.wait()
    out = FeatureCache(root).get_or_build(key, num_examples, produce, chunk_size=8)
    results.put((os.getpid(), np.asarray(out["pre_logits"]).tolist(), np.asarray(out["label"]).tolist()))


def test_concurrent_builds_give_one_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # no fork: the test process may hold jax threads
    barrier, results = ctx.Barrier(2), ctx.Queue()
    log_path = tmp_path / "produce.log"
    args = (str(tmp_path / "cache"), "k", 40, str(log_path), barrier, results)
    procs = [ctx.Process(target=_concurrent_worker, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    got, deadline = [], time.monotonic() + 60
    while len(got) < len(procs) and time.monotonic() < deadline:
        try:
            got.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break  # a worker died without answering
    for p in procs:
        p.join(timeout=10)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(got) == 2
    calls = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len({pid for pid, _, _ in calls}) == 1  # only one process computed features
    assert [(s, e) for _, s, e in calls] == [(0, 40)]
    expected = _expected(40)
    for _, pre_logits, label in got:
        np.testing.assert_array_equal(np.asarray(pre_logits, np.float32), expected["pre_logits"])
        np.testing.assert_array_equal(label, expected["label"])
    entries = FeatureCache(tmp_path / "cache").entries()
    assert [(e["key"], e["complete"]) for e in entries] == [("k", True)]
