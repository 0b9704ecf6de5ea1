"""`harness bench --pipeline` and `--end-to-end`: the input pipeline on real-format files, and the whole
extraction (pipeline + encoder + feature cache) against its parts.

Both read a prepared TFDS dataset of encoded JPEGs (by default `imagenet2012`'s validation split, as
`benchmarks/make_jpegs.py` builds it from photographs) with big_vision's ImageNet eval pp at each
resolution: `decode|resize_small(S)|central_crop(R)|value_range(-1,1)`, S = R * 256 / 224.

- `--pipeline`: images/s (and per host core) of `harness.data.iterate` as the extraction runs it (the host
  part of the pp, uint8 out), of the same with the whole pp on the host (float32 out), and of a best-practice
  tf.data pipeline computing the same pp on the same files (files read in parallel, the pp mapped in
  parallel without ordering, autotuned prefetch), each pp both ways, in alternating rounds; `ratio`: the
  harness over the reference (the median of the rounds' ratios).
- `--end-to-end`: images/s of the pipeline alone, of the encoder alone (device-resident uint8 batches), and of
  `harness.eval.features.extract` into an empty cache; `overlap`: end to end over the slower of the two
  (1.0 when the extraction takes no longer than its slowest stage; a serial one reaches only
  `serial / slower`); `of_serial`: end to end over the serial rate, the ceiling where the encoder runs on the
  host's own cores (a CPU).
"""

from __future__ import annotations

import statistics
import tempfile
import time

import jax
import numpy as np

from harness import cpu_core_count, data
from harness.data.pp import Preprocess, eval_pp, side_before_crop
from harness.errors import HarnessError
from harness.eval import features
from harness.models.encoder import Encoder
from harness.tf_import import tf
from harness.tools.bench_encoder import encoder_config, random_params

DEFAULT_DATASET, DEFAULT_SPLIT = "imagenet2012", "validation"


def imagenet_pp(res: int) -> str:
    """big_vision's ImageNet eval pp at `res` (resize_small 256 / crop 224, scaled)."""
    return eval_pp(res, side_before_crop(res), resize_op="resize_small")


def _rate(batches, n_expected: int, t0: float | None = None) -> tuple[float, int]:
    """(images/s, images) over an iterator of batches (each a numpy array or a dict with `_mask`), timed from
    `t0` (default: the first batch asked for, the iterator already built and started)."""
    t0, n = time.perf_counter() if t0 is None else t0, 0
    for b in batches:
        n += int(np.sum(b["_mask"])) if isinstance(b, dict) else len(b)
    seconds = time.perf_counter() - t0
    if n < n_expected:
        raise HarnessError(f"the pipeline gave {n} of {n_expected} images")
    return n / seconds, n


def _alternating(ours, reference, n: int, rounds: int) -> tuple[float, float, float]:
    """Median images/s of each pipeline and the median of their per-round ratios over `rounds` rounds that run
    one pass of each in turn (after one untimed pass of each: files in the page cache, tf's graphs built), so
    a change of the machine's speed during the measurement weighs on both alike."""
    _rate(ours(), n)
    _rate(reference(), n)
    pairs = [(_rate(ours(), n)[0], _rate(reference(), n)[0]) for _ in range(rounds)]
    return (statistics.median(p for p, _ in pairs), statistics.median(r for _, r in pairs),
            statistics.median(p / r for p, r in pairs))


def reference_pipeline(dataset: str, split: str, pp: str, batch_size: int, data_dir, num_examples: int):
    """Best-practice tf.data on the same TFDS files: parallel file reads, the pp mapped in parallel without
    keeping order, batches, autotuned prefetch. The pp is the harness's own parse of the same string, so
    both pipelines compute the same values (`tests/test_bench.py` checks that)."""
    import tensorflow_datasets as tfds

    info = data.get_info(dataset)
    builder = tfds.builder(info.tfds_name, data_dir=str(data.default_data_dir(data_dir)))
    ds = builder.as_dataset(split=f"{split}[:{num_examples}]", shuffle_files=False,
                            decoders={info.image_key: tfds.decode.SkipDecoding()},
                            read_config=tfds.ReadConfig(interleave_cycle_length=tf.data.AUTOTUNE,
                                                        num_parallel_calls_for_interleave_files=tf.data.AUTOTUNE))
    fn = Preprocess(pp)
    ds = ds.map(lambda ex: fn({"image": ex[info.image_key]})["image"], num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=False)
    options = tf.data.Options()
    options.deterministic = False
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options).as_numpy_iterator()


def _examples(dataset, split, data_dir, num_examples):
    data.require_prepared(dataset, data_dir)
    total = data.num_examples(dataset, split, data_dir)
    return min(total, num_examples) if num_examples else total


def pipeline_rows(res_list, *, dataset=DEFAULT_DATASET, split=DEFAULT_SPLIT, data_dir=None, batch_size=64,
                  num_examples=None, rounds=3, progress=print) -> list[dict]:
    """One row per (resolution, pp placement): the harness's pipeline and the reference, images/s (medians of
    `rounds` alternating passes) and the median ratio."""
    n = _examples(dataset, split, data_dir, num_examples)
    cores = cpu_core_count()
    rows = []
    for res in res_list:
        full = Preprocess(imagenet_pp(res))
        host, _ = full.split_value_range()
        for where, pp in (("uint8 (value_range on the device)", host), ("float32 (value_range on the host)", full)):
            progress(f"pipeline {res} px, {where} ...")
            ours, ref, ratio = _alternating(
                lambda pp=pp: data.iterate(dataset, split, batch_size=batch_size, pp=pp, data_dir=data_dir,
                                           num_examples=n),
                lambda pp=pp: reference_pipeline(dataset, split, str(pp), batch_size, data_dir, n), n, rounds)
            rows.append({"res": res, "pp": str(pp), "output": where.split()[0], "images": n, "rounds": rounds,
                         "host_cores": cores, "harness_images_per_s": ours, "reference_images_per_s": ref,
                         "harness_per_core": ours / cores, "reference_per_core": ref / cores, "ratio": ratio})
    return rows


def _extraction_rate(enc, dataset, split, pp, data_dir, batch_size, n, reps) -> float:
    """images/s of one `features.extract` into an empty cache (a fresh folder)."""
    with tempfile.TemporaryDirectory(prefix="harness-bench-cache-") as cache:
        t0 = time.perf_counter()
        features.extract(enc, dataset, split, pp=pp, cache_dir=cache, data_dir=data_dir, batch_size=batch_size,
                         num_examples=n, representations=reps, keys=(), progress=False)
        return n / (time.perf_counter() - t0)


def end_to_end_rows(variant: str, res_list, dtype: str, *, dataset=DEFAULT_DATASET, split=DEFAULT_SPLIT,
                    data_dir=None, batch_size=64, num_examples=None, overrides=None, rounds=3,
                    progress=print) -> list[dict]:
    """One row per resolution: pipeline, encoder and extraction images/s (pipeline and extraction: medians of
    `rounds` passes), the overlap ratio, and the extraction over the serial rate.

    On a CPU (`host_bound`) the encoder runs on the cores the pipeline runs on: the two cannot overlap, each
    one's work slows the other, and the serial rate (their CPU seconds added) is the ceiling. There the
    measure of a pipelined extraction is `of_serial`: how much of that ceiling it reaches."""
    n = _examples(dataset, split, data_dir, num_examples)
    device = jax.devices()[0]
    rows = []
    for res in res_list:
        cfg = encoder_config(variant, res, dtype, True, **(overrides or {}))
        model, params = random_params(cfg)
        enc = Encoder(model=model, params=params, config=cfg, spec=f"random:{variant}", sha256=None)
        full = Preprocess(imagenet_pp(res))
        host, value_range = full.split_value_range()
        table = value_range.table()
        reps = ("pre_logits",)
        progress(f"end to end {variant} {res} px {dtype}: pipeline ...")
        def pipeline_pass():  # timed from building the pipeline, as the extraction pays for that too
            t0 = time.perf_counter()
            return _rate(data.iterate(dataset, split, batch_size=batch_size, pp=host, data_dir=data_dir,
                                      num_examples=n), n, t0)[0]

        pipe = statistics.median(pipeline_pass() for _ in range(rounds))
        progress(f"end to end {variant} {res} px {dtype}: encoder ...")
        x = enc.put(np.random.default_rng(0).integers(0, 256, (batch_size, res, res, 3), dtype=np.uint8), table)
        enc.fetch(enc.dispatch(x, reps))  # compiled here, as the extraction's first batch would be
        steps = -(-n // batch_size)
        t0 = time.perf_counter()
        in_flight = [enc.dispatch(x, reps) for _ in range(min(2, steps))]
        for _ in range(steps - len(in_flight)):
            enc.fetch(in_flight.pop(0))
            in_flight.append(enc.dispatch(x, reps))
        for p in in_flight:
            enc.fetch(p)
        encoder_rate = steps * batch_size / (time.perf_counter() - t0)
        progress(f"end to end {variant} {res} px {dtype}: extraction ...")
        e2e = statistics.median(_extraction_rate(enc, dataset, split, str(full), data_dir, batch_size, n, reps)
                                for _ in range(rounds))
        slower, serial = min(pipe, encoder_rate), 1 / (1 / pipe + 1 / encoder_rate)
        rows.append({"variant": variant, "res": res, "dtype": dtype, "batch": batch_size, "images": n,
                     "device": device.device_kind, "host_cores": cpu_core_count(),
                     "pipeline_images_per_s": pipe, "encoder_images_per_s": encoder_rate,
                     "end_to_end_images_per_s": e2e, "serial_images_per_s": serial, "rounds": rounds,
                     "overlap": e2e / slower, "of_serial": e2e / serial,
                     "host_bound": device.platform == "cpu", "compilations": enc._apply._cache_size()})
    return rows
