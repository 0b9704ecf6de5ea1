"""The feature extraction's device path (harness/eval/features.py, harness/eval/overlap.py): no serial steps
(a slowed stub pipeline, encoder and cache disk take the slowest one's time, not their sum), the pp's
`value_range` on the device bit for bit as the host computes it (real JPEG files), one compilation per
batch shape, and the threads' errors raised where the caller sees them."""

from __future__ import annotations

import io
import time

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from harness.data.pp import Preprocess
from harness.eval import cache as cache_mod
from harness.eval import features
from harness.eval.overlap import Writer, prefetch
from harness.tf_import import tf

# ------------------------------------------------------------------------------------------------ overlap
BATCHES, BATCH = 20, 4
SLOW = {"s": 0.1}  # seconds each of the pipeline, the encoder and the disk take per batch / chunk


class SlowEncoder:
    """The Encoder's extraction interface; `dispatch` sleeps in the calling thread (the worst case: a device
    that computes synchronously). Its feature is the image's first pixel, so order and rows are checked."""

    identity = "stub:slow"
    naflex = False  # fixed-resolution: the task's pp as it is
    calls: list[tuple[str, float]]

    def __init__(self):
        self.calls = []

    def describe(self):
        return {"config": {"stub": True}, "spec": "stub"}

    def image_pp(self, pp):
        return pp

    def put(self, images, pixel_table=None):
        assert images.dtype == np.uint8 and pixel_table is not None  # the pp's value_range went to the "device"
        return images, pixel_table

    def dispatch(self, batch, outputs):
        time.sleep(SLOW["s"])
        images, table = batch
        return {"pre_logits": table[images[:, 0, 0, :], np.arange(3)]}

    def fetch(self, pending):
        return pending


def _slow_pipeline(monkeypatch):
    def iterate(dataset, split, *, batch_size, pp, data_dir, start_example, num_examples):
        assert str(pp) == "" and start_example == 0  # value_range was split off for the device
        for b in range(BATCHES):
            time.sleep(SLOW["s"])
            first = b * BATCH
            images = np.zeros((BATCH, 2, 2, 3), np.uint8)
            images[:, 0, 0, :] = (np.arange(first, first + BATCH) % 256)[:, None]
            yield {"image": images, "label": np.arange(first, first + BATCH), "_mask": np.ones(BATCH, bool)}

    monkeypatch.setattr(features.data, "require_prepared", lambda *a: None)
    monkeypatch.setattr(features.data, "num_examples", lambda *a: BATCHES * BATCH)
    monkeypatch.setattr(features.data, "iterate", iterate)
    real_write = cache_mod._write_chunk

    def slow_write(partial, index, stored):
        time.sleep(SLOW["s"])
        real_write(partial, index, stored)

    monkeypatch.setattr(cache_mod, "_write_chunk", slow_write)


def test_pipeline_encoder_and_cache_writes_overlap(tmp_path, monkeypatch):
    _slow_pipeline(monkeypatch)

    def extract(delay: float, folder: str):
        SLOW["s"] = delay
        t0 = time.perf_counter()
        out = features.extract(SlowEncoder(), "stub", "train", pp="value_range(-1,1)", cache_dir=tmp_path / folder,
                               batch_size=BATCH, chunk_size=BATCH, progress=False)
        return out, time.perf_counter() - t0

    extract(0.0, "warm-up")  # tf's first op, the imports
    _, fixed = extract(0.0, "fixed")  # what the extraction costs besides the three slowed stages
    out, wall = extract(0.1, "slowed")
    # Serial, each batch would cost its pipeline step, its encoder pass and its chunk's write: 3 x 0.1 s.
    slowest, serial = BATCHES * 0.1, BATCHES * 3 * 0.1
    assert wall - fixed < 1.3 * slowest, (wall, fixed, slowest, serial)
    n = BATCHES * BATCH
    np.testing.assert_array_equal(out["label"], np.arange(n))
    np.testing.assert_array_equal(out["index"], np.arange(n))
    want = (np.arange(n, dtype=np.float32) / 255.0) * 2.0 - 1.0  # value_range(-1, 1) of pixel i
    np.testing.assert_allclose(out["pre_logits"][:, 0], want, atol=1e-6)


def test_prefetch_runs_ahead_and_hands_over_errors():
    produced = []

    def source():
        for i in range(5):
            produced.append(i)
            yield i
        raise OSError("disk gone")

    it = prefetch(source(), depth=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert produced[:3] == [0, 1, 2] and len(produced) <= 4  # ahead, but at most depth + 1 items
    with pytest.raises(OSError, match="disk gone"):
        list(it)
    # Closing early stops the thread (and closes the source).
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    it = prefetch(endless(), depth=1)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed == [True]


def test_writer_keeps_order_and_raises_its_error_in_the_caller():
    done = []
    with Writer(lambda i: (time.sleep(0.01), done.append(i))) as w:
        for i in range(5):
            w.submit(i)
    assert done == [0, 1, 2, 3, 4]

    def fail(i):
        if i == 1:
            raise OSError("no space left")
        done.append(i)

    done.clear()
    with pytest.raises(OSError, match="no space left"):
        with Writer(fail) as w:
            for i in range(4):
                w.submit(i)
    assert done == [0]  # nothing after the failed item
    # An error in the block: what was handed over is still finished, and the block's error is the one raised.
    done.clear()
    with pytest.raises(KeyError):
        with Writer(lambda i: (time.sleep(0.05), done.append(i))) as w:
            w.submit(0)
            w.submit(1)
            raise KeyError("interrupted")
    assert done == [0, 1]


# ------------------------------------------------------------------------------------ value_range on device
def _real_jpegs() -> list[bytes]:
    """JPEG files of a real photograph (matplotlib's sample grace_hopper.jpg, 600 x 512): the file itself
    and crops re-encoded at ImageNet-like sizes and qualities."""
    raw = matplotlib.cbook.get_sample_data("grace_hopper.jpg").read()
    photo = Image.open(io.BytesIO(raw)).convert("RGB")
    out = [raw]
    for (left, top, w, h), size, quality in [((0, 0, 600, 450), (500, 375), 95), ((40, 10, 420, 500), (333, 396), 90),
                                              ((100, 60, 480, 400), (500, 417), 92)]:
        buf = io.BytesIO()
        photo.crop((left, top, left + w, top + h)).resize(size, Image.BICUBIC).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


@pytest.mark.parametrize("tail", ["value_range(-1,1)", "value_range(0,1)",
                                  "value_range(-2,2,(10,20,30),(240,250,200),True)"])
def test_value_range_on_the_device_is_the_host_pp_bit_for_bit(tail):
    from harness.models.encoder import load_encoder

    pp = Preprocess(f"decode|resize_small(256)|central_crop(224)|{tail}")
    host_pp, value_range = pp.split_value_range()
    assert str(host_pp) == "decode|resize_small(256)|central_crop(224)" and value_range is not None
    full, pixels = [], []
    for jpeg in _real_jpegs():
        full.append(np.asarray(pp({"image": tf.constant(jpeg)})["image"]))
        pixels.append(np.asarray(host_pp({"image": tf.constant(jpeg)})["image"]))
    full, pixels = np.stack(full), np.stack(pixels)
    assert full.dtype == np.float32 and pixels.dtype == np.uint8  # the host stays uint8 to the last op
    table = value_range.table()
    mapped = table[pixels, np.arange(3)]
    assert np.array_equal(mapped.view(np.uint32), full.view(np.uint32))
    # The encoder's device path (uint8 batch + table, looked up inside the jitted pass) sees the same input:
    # its features equal those of the host's float images bit for bit.
    enc = load_encoder("random:0", width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=32, res=224,
                       pool_type="gap")
    on_device = enc.features(pixels, ("stem", "pre_logits"), pixel_table=table)
    on_host = enc.features(full, ("stem", "pre_logits"))
    for k in on_host:
        assert np.array_equal(on_device[k], on_host[k]), k


def test_split_value_range_only_takes_a_final_op_on_the_image():
    for spec in ["decode|resize(32)", "decode|value_range(-1,1)|resize(32)", "decode|value_range(-1,1,key='other')",
                 ""]:
        pp = Preprocess(spec)
        assert pp.split_value_range() == (pp, None), spec
    host, vr = Preprocess("value_range(-1, 1)").split_value_range()
    assert str(host) == "" and vr.vmin == -1.0 and vr.vmax == 1.0
    with pytest.raises(ValueError, match="uint8"):
        from harness.models.encoder import load_encoder

        load_encoder("random:0", width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=8, res=16).put(
            np.zeros((1, 16, 16, 3), np.float32), vr.table())


# ------------------------------------------------------------------------------- the real extraction path
def test_extract_equals_the_plain_encoder_pass_with_one_compilation(tmp_path):
    from harness import data
    from harness.data.pp import eval_pp
    from harness.models.encoder import load_encoder
    from tests.tiny import TINY_DS, TINY_ENC

    data_dir = str(tmp_path / "tfds")
    data.require_prepared(TINY_DS, data_dir)
    enc = load_encoder("random:0", **TINY_ENC)
    pp = eval_pp(TINY_ENC["res"])
    # 48 images in batches of 16, chunks of 20: chunk boundaries fall inside batches.
    got = features.extract(enc, TINY_DS, "train", pp=pp, cache_dir=tmp_path / "cache", data_dir=data_dir,
                           batch_size=16, chunk_size=20, representations=("pre_logits", "encoded"), progress=False)
    assert enc._apply._cache_size() == 1  # every batch (the padded last one too) has one shape
    want = {"pre_logits": [], "encoded": []}
    for b in data.iterate(TINY_DS, "train", batch_size=16, pp=pp, data_dir=data_dir):
        f = enc.features(b["image"], ("pre_logits", "encoded"))  # float images, value_range on the host
        for k in want:
            want[k].append(f[k][b["_mask"]])
    for k, v in want.items():
        assert np.array_equal(np.asarray(got[k]), np.concatenate(v)), k
