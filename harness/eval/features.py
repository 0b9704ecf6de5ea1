"""Feature extraction: one encoder representation for a whole dataset split, computed once and cached.

The encoder pass dominates every frozen-encoder task, so `extract` runs the jitted encoder batch by
batch (fixed batch shape: one compilation), streams the results into the content-addressed
`harness.eval.cache.FeatureCache`, and returns memory-mapped arrays. Identical requests never recompute; an
interrupted extraction resumes from its finished chunks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from harness import data
from harness.eval.cache import FeatureCache, cache_key
from harness.progress import Progress

logger = logging.getLogger("harness")

# Bump when what is stored for a key, or how a key is made, changes (3: keyed on `Encoder.identity`, and a
# `tok` model's `encoded` keeps its class token as big_vision's does).
FEATURES_VERSION = 3


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

    def produce(start: int, stop: int):
        it = data.iterate(dataset, split, batch_size=batch_size, pp=pp, data_dir=data_dir, start_example=start,
                          num_examples=n)
        seen = start
        for batch in it:
            mask = np.asarray(batch["_mask"], bool)
            if seen >= stop:
                break
            feats = encoder.features(encoder.images_of(batch), representations)
            take = min(int(mask.sum()), stop - seen)
            out = {r: feats[r][mask][:take] for r in representations}
            for k in keys:
                out[k] = np.asarray(batch[k])[mask][:take]
            out["index"] = np.arange(seen, seen + take, dtype=np.int64)
            seen += take
            computed["images"] += take
            yield out

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
