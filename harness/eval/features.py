"""Feature extraction: one encoder representation for a whole dataset split, computed once and cached.

The encoder pass dominates every frozen-encoder task, so `extract` runs the jitted encoder batch by
batch (fixed batch shape: one compilation), streams the results into the content-addressed
`harness.eval.cache.FeatureCache`, and returns memory-mapped arrays. Identical requests never recompute; an
interrupted extraction resumes from its finished chunks.

No step waits for another that could run beside it:
- the host pipeline (tf.data's own threads) and the transfer of each batch to the device run in a thread
  (`overlap.prefetch`) up to `PREFETCH` batches ahead of the encoder;
- the encoder pass of batch i+1 is dispatched before the outputs of batch i are waited for (jax dispatches
  asynchronously, and the outputs start their way to the host as soon as they are computed);
- the cache writes its chunks in a thread of its own (`FeatureCache`).
A pp that ends in `value_range` (every eval pp does) has that op applied on the device: the host pipeline
stays uint8 to the end (big_vision's resizes return the input dtype), a quarter of the bytes to move, and
the device looks each pixel up in the op's own outputs for the 256 uint8 values of each channel
(`ValueRange.table`), so the model sees the host pp's values bit for bit on any backend. (Computing the op
there would not: XLA folds `x / 255 * 2 - 1` into one multiply, 205 of the 256 values then differ from tf's
in the last bit.)
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path

import numpy as np

from harness import data
from harness.data.pp import as_preprocess
from harness.eval.cache import FeatureCache, cache_key
from harness.eval.overlap import prefetch
from harness.progress import Progress
from harness.tf_import import tf

logger = logging.getLogger("harness")

# Bump when what is stored for a key, or how a key is made, changes (3: keyed on `Encoder.identity`, and a
# `tok` model's `encoded` keeps its class token as big_vision's does).
FEATURES_VERSION = 3
# Host batches (read, pp'd and on their way to the device) ready ahead of the encoder; encoder passes in flight.
PREFETCH = 2
IN_FLIGHT = 2


def extract(encoder, dataset: str, split: str, *, pp: str, cache_dir: str | Path,
            representations: tuple[str, ...] = ("pre_logits",), keys: tuple[str, ...] = ("label",),
            data_dir: str | None = None, batch_size: int = 64, num_examples: int | None = None,
            dtype: str = "float32", chunk_size: int = 4096, progress: bool = True,
            log: list | None = None) -> dict[str, np.ndarray]:
    """Returns {representation: [N, ...], key: [N, ...], "index": [N]} for the split's first N examples.

    `keys` are numeric per-example fields carried along (e.g. "label"); `dtype` ("float32", "float16",
    "bfloat16") is the storage type of the representations (token features halve in 16 bits). `log`: a list
    that gets one entry per call (dataset, split, examples, images computed, seconds, cache key).
    """
    data.require_prepared(dataset, data_dir)
    pp = encoder.image_pp(str(pp))  # a NaFlex encoder reads its own pp (its patch budget is in the string)
    total = data.num_examples(dataset, split, data_dir)
    n = min(total, num_examples) if num_examples else total
    desc = encoder.describe()
    # Keyed on the weights' content (`Encoder.identity`), never on a path: the same file anywhere reuses it.
    key = cache_key(version=FEATURES_VERSION, encoder=encoder.identity, encoder_config=desc["config"],
                    dataset=dataset, split=split, num_examples=n, pp=str(pp), representations=list(representations),
                    keys=list(keys), dtype=dtype)
    cache = FeatureCache(Path(cache_dir) / "features")
    t0 = time.perf_counter()
    computed = {"images": 0}

    host_pp, value_range = as_preprocess(pp).split_value_range()
    table = None if value_range is None else value_range.table()

    def host_batches(start: int, stop: int):
        """Runs in the prefetch thread: the pipeline's batches, their images already sent to the device."""
        for batch in data.iterate(dataset, split, batch_size=batch_size, pp=host_pp, data_dir=data_dir,
                                  start_example=start, num_examples=n):
            if encoder.naflex:  # big_vision's patch tuple; its pp resizes float images, so no pixel table
                yield batch, encoder.put(encoder.images_of(batch))
                continue
            images = batch.pop("image")
            if table is None:
                yield batch, encoder.put(images)
            elif images.dtype == np.uint8:
                yield batch, encoder.put(images, table)
            else:  # an earlier op made floats: the op maps them on the host
                yield batch, encoder.put(np.asarray(value_range(tf.constant(images))))

    def produce(start: int, stop: int):
        seen = start
        in_flight = collections.deque()

        def finish():
            pending, batch, mask, take, first = in_flight.popleft()
            feats = encoder.fetch(pending)
            out = {r: feats[r][mask][:take] for r in representations}
            for k in keys:
                out[k] = np.asarray(batch[k])[mask][:take]
            out["index"] = np.arange(first, first + take, dtype=np.int64)
            computed["images"] += take
            return out

        for batch, images in prefetch(host_batches(start, stop), PREFETCH):
            if seen >= stop:
                break
            mask = np.asarray(batch["_mask"], bool)
            take = min(int(mask.sum()), stop - seen)
            in_flight.append((encoder.dispatch(images, representations), batch, mask, take, seen))
            del images  # the device batch is freed once the pass has read it
            seen += take
            if len(in_flight) >= IN_FLIGHT:
                yield finish()
        while in_flight:
            yield finish()

    arrays = cache.get_or_build(key, n, produce, chunk_size=chunk_size,
                                dtypes={r: dtype for r in representations},
                                meta={"dataset": dataset, "split": split, "pp": str(pp),
                                      "checkpoint": desc["spec"], "representations": list(representations)},
                                progress=_progress(f"features {dataset}/{split}") if progress else False)
    seconds = time.perf_counter() - t0
    if log is not None:
        log.append({"dataset": dataset, "split": split, "num_examples": n, "pp": str(pp),
                                                "computed_images": computed["images"], "seconds": seconds,
                                                "cache_key": key})
    if computed["images"]:
        logger.info("features %s/%s: %d images in %.1fs (%.1f images/s)", dataset, split, computed["images"],
                 seconds, computed["images"] / max(seconds, 1e-9))
    return arrays


def _progress(desc: str):
    """A progress display (images, rate, ETA; `harness.progress`) driven by the cache's progress callback."""
    state = {}

    def report(done: int, total: int):
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = Progress(total, desc, "img", initial=done)
        bar.update_to(done)
        if done >= total:
            bar.close()

    return report
