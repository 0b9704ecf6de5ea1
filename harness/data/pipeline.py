"""TFDS -> tf.data pipelines of numpy batches.

`iterate(name, split, pp=..., batch_size=...)` is the one way tasks read data:
- eval (`train=False`): split order, every example exactly once; the last batch is padded to
  the batch size and the boolean `_mask` marks real examples; `_index` is each example's position
  in the split (-1 for padding). `start_example` resumes after already processed examples. A
  `batch_size` larger than the (process's share of the) split is that share (`eval_batch_size`):
  padding never exceeds the examples asked for.
- train (`train=True`): an endless stream of fixed-size batches, shuffled per epoch with seeds
  derived from `seed`, identical on every run; `start_step` / `start_example` continue a stream
  exactly where a killed run stopped (resuming costs reading at most one epoch of raw records).
  A `batch_size` larger than the (process's share of the) split is refused: a batch would hold
  examples more than once, and its memory would be the user's surprise.

Images are read undecoded (TFDS `SkipDecoding`) so the pp's `decode` op decodes them, as big_vision
does. Nested features are flattened to "/"-joined keys ("captions/text"). Variable-length features
(captions, answers) are padded per batch: strings with b"", signed ints with -1, others with 0.

Multi-host: `process_index` / `process_count` give each process a contiguous, near-equal part of
the split (as `tfds.even_splits`); in eval every process yields the same number of batches.
`batch_size` is the per-process batch.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from harness import cpu_core_count
from harness.data.pp import Preprocess, as_preprocess, example_seed
from harness.data.prepared import _prepared_builder, _tfds, require_prepared
from harness.data.registry import SUBSET_IN_BUILD, default_data_dir, get_info
from harness.errors import HarnessError
from harness.tf_import import tf

log = logging.getLogger(__name__)

DEFAULT_SHUFFLE_BUFFER = 10_000
_KEY_SEP = "/"


def _builder(name: str, data_dir: str | os.PathLike | None):
    require_prepared(name, data_dir)
    return _prepared_builder(get_info(name).tfds_name, default_data_dir(data_dir))


def _split_ranges(builder, name: str, split: str) -> list[tuple[str, int, int]]:
    """A split string ("train[:10%]+test") as absolute (split, start, stop) ranges, in order."""
    tfds = _tfds()
    available = ", ".join(sorted(builder.info.splits.keys()))
    try:
        instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(builder.info.splits)
    except (ValueError, KeyError, AssertionError, TypeError) as e:
        raise HarnessError(f"split '{split}' of dataset '{name}' is not valid ({e}); its splits "
                           f"are {available} (slices like 'train[:1000]' or 'train[50%:]' work)"
                           ) from None
    ranges = []
    for instruction in instructions:
        size = builder.info.splits[instruction.splitname].num_examples
        start = 0 if instruction.from_ is None else instruction.from_
        stop = size if instruction.to is None else instruction.to
        ranges.append((instruction.splitname, start, max(start, stop)))
    return ranges


def _sub_ranges(ranges, begin: int, end: int) -> list[tuple[str, int, int]]:
    """Positions [begin, end) of the concatenated ranges, as ranges again."""
    out, offset = [], 0
    for split, start, stop in ranges:
        size = stop - start
        lo, hi = max(begin - offset, 0), min(end - offset, size)
        if lo < hi:
            out.append((split, start + lo, start + hi))
        offset += size
    return out


def _process_bounds(total: int, process_index: int, process_count: int) -> tuple[int, int]:
    # Contiguous, sizes differ by at most one (like tfds.even_splits).
    return total * process_index // process_count, total * (process_index + 1) // process_count


def _flatten(example: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in example.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, full + _KEY_SEP))
        elif isinstance(value, tf.RaggedTensor):
            # Nested sequences of varying length: dense, padded like a batch would be.
            out[full] = value.to_tensor(default_value=_pad_value(value.dtype))
        else:
            out[full] = value
    return out


def _pad_value(dtype):
    if dtype == tf.string:
        return tf.constant(b"", tf.string)
    if dtype == tf.bool:
        return tf.constant(False)
    if dtype.is_integer and not dtype.is_unsigned:
        return tf.constant(-1, dtype)  # -1 cannot be mistaken for class 0
    return tf.constant(0, dtype)


def _default_decoders(builder) -> dict[str, Any]:
    tfds = _tfds()
    features = builder.info.features
    return {key: tfds.decode.SkipDecoding() for key in features.keys()
            if isinstance(features[key], tfds.features.Image)}


def _read(builder, ranges, decoders, *, ordered: bool):
    """The raw examples of `ranges` (nested as TFDS gives them: `_flatten` them in the map that follows, so
    the pipeline has no extra sequential stage), in split order when `ordered`."""
    tfds = _tfds()
    split = None
    for split_name, start, stop in ranges:
        part = tfds.core.ReadInstruction(split_name, from_=start, to=stop, unit="abs")
        split = part if split is None else split + part
    # Reading one file at a time keeps split order, which resuming at `start_example` relies on;
    # for training, interleaving 16 files mixes examples more before the shuffle buffer.
    cycle_length = 1 if ordered or builder.info.disable_shuffling else 16
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders=_default_decoders(builder) if decoders is None else decoders,
        read_config=tfds.ReadConfig(
            try_autocache=False, skip_prefetch=True, interleave_cycle_length=cycle_length),
    )
    return ds


def _ensure_image_size(ds, builder, ranges, decoders, pp: Preprocess, key: str, seed: int):
    """Give images whose size the pp leaves unknown the size of the split's first image.

    Images that differ from it then fail loudly (see `_numpy_batches`) instead of being padded.
    """
    spec = ds.element_spec.get(key) if isinstance(ds.element_spec, Mapping) else None
    if not (isinstance(spec, tf.TensorSpec) and spec.dtype != tf.string
            and spec.shape.rank is not None and None in spec.shape.as_list()):
        return ds
    first = _read(builder, _sub_ranges(ranges, 0, 1), decoders, ordered=True)
    first = first.map(lambda example: pp(_flatten(example), seed=_seed(pp, seed, 0)))
    shape = next(iter(first))[key].shape

    def ensure(example):
        return {**example, key: tf.ensure_shape(example[key], shape)}

    return ds.map(ensure)


def _seed(pp: Preprocess, seed: int, index, process_index: int = 0):
    """The example's seed for a pp that draws random numbers; None (nothing computed) for one that does not."""
    return example_seed(seed, index, process_index=process_index) if pp.is_random else None


def _batched(ds, batch_size: int, *, drop_remainder: bool):
    # Features of one fixed shape batch as they are: the same values as padded_batch, and tf.data then fuses
    # the parallel map into the batch (no per-example copy); only variable-length features are padded.
    if all(spec.shape.is_fully_defined() for spec in ds.element_spec.values()):
        return ds.batch(batch_size, drop_remainder=drop_remainder)
    padding = {key: _pad_value(spec.dtype) for key, spec in ds.element_spec.items()}
    return ds.padded_batch(batch_size, padding_values=padding, drop_remainder=drop_remainder)


def _numpy_batches(ds, pp: Preprocess, image_key: str) -> Iterator[dict[str, np.ndarray]]:
    # The iterator starts here, not at the first next(): the pipeline fills its buffers while the caller
    # gets ready (the encoder compiles, the cache opens).
    return _checked(ds.as_numpy_iterator(), pp, image_key)


def _checked(batches, pp: Preprocess, image_key: str) -> Iterator[dict[str, np.ndarray]]:
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as e:
            if "expected shape" not in str(e):
                raise
            raise HarnessError(f"pp '{pp}' gives '{image_key}' images of different sizes, which "
                               "cannot be batched; end it with resize(...) or central_crop(...)"
                               ) from None
        yield batch


def map_parallelism() -> int:
    """Examples in flight in the pp map: 4 per host core. The map keeps split order, so an example that
    takes longer holds the ones after it; more calls in flight than cores keep every core busy meanwhile
    (on 2 cores: 4 calls in flight ran the 224 px ImageNet pp at ~0.8 of unordered tf.data, 8 at ~0.95)."""
    return 4 * cpu_core_count()


def _stream_options(ds):
    options = tf.data.Options()
    options.deterministic = True
    # No autotuner: on a 2-core host it settled, in about one pass of three, on one core for the whole pass
    # (288 instead of ~570 images/s of 224 px ImageNet pp); the maps run `map_parallelism()` calls instead.
    options.autotune.enabled = False
    return ds.with_options(options)


# --------------------------------------------------------------------------------------------------
# Public reading API


def num_examples(name: str, split: str, data_dir: str | os.PathLike | None = None) -> int:
    """Number of examples of a split string (slices and "+" allowed)."""
    builder = _builder(name, data_dir)
    return sum(stop - start for _, start, stop in _split_ranges(builder, name, split))


def example_ids(name: str, split: str, positions, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The TFDS ids of the examples at `positions` of a split string (as `iterate` numbers them in eval:
    `_index`, the feature cache's `index`): what TFDS names `tfds_id` when read with
    `tfds.ReadConfig(add_tfds_id=True)`, `<shard file name>__<position in the shard>` (e.g.
    `proxy_scenes-test.tfrecord-00000-of-00001__12`). An eval read goes through the shards in file order
    without shuffling, so the split position gives the shard and the position in it: the id is derived from
    the prepared dataset's metadata alone (no example is read, the feature cache needs no ids), and it is
    the same for every run, device and process count, and for any slice of the split that holds the example."""
    builder = _builder(name, data_dir)
    ranges = _split_ranges(builder, name, split)
    positions = np.asarray(positions, np.int64).reshape(-1)
    offsets = np.cumsum([0] + [stop - start for _, start, stop in ranges])
    if positions.size and (positions.min() < 0 or positions.max() >= offsets[-1]):
        raise HarnessError(f"positions {positions.min()}..{positions.max()} are outside split '{split}' of "
                           f"dataset '{name}' ({offsets[-1]} examples)")
    shards = {}
    for split_name in {r[0] for r in ranges}:
        files = builder.info.splits[split_name].file_instructions  # every shard of the split, in read order
        shards[split_name] = (np.cumsum([0] + [fi.take for fi in files]),
                              [(os.path.basename(fi.filename), fi.skip) for fi in files])
    out = []
    which = np.searchsorted(offsets, positions, side="right") - 1
    for p, r in zip(positions.tolist(), which.tolist()):
        split_name, start, _ = ranges[r]
        at = start + p - int(offsets[r])  # the position in the whole split `split_name`
        bounds, files = shards[split_name]
        s = int(np.searchsorted(bounds, at, side="right")) - 1
        file, skip = files[s]
        out.append(f"{file}__{skip + at - int(bounds[s])}")
    return out


def _label_feature(name: str, data_dir):
    tfds = _tfds()
    info = get_info(name)
    builder = _builder(name, data_dir)
    key = info.label_key
    features = builder.info.features
    if key is None or key not in features.keys():
        raise HarnessError(f"dataset '{name}' has no label feature"
                           f"{f' {key!r}' if key else ''}; it has {', '.join(features.keys())}")
    feature = features[key]
    if isinstance(feature, tfds.features.Sequence):  # multi-label, e.g. ImageNet ReaL
        feature = feature.feature
    if not isinstance(feature, tfds.features.ClassLabel):
        raise HarnessError(f"feature '{key}' of dataset '{name}' is not a class label")
    return feature


def label_is_set(name: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether the label feature is a Sequence (a label set per image, e.g. ImageNet ReaL's)."""
    tfds = _tfds()
    return isinstance(_builder(name, data_dir).info.features[get_info(name).label_key], tfds.features.Sequence)


def num_classes(name: str, data_dir: str | os.PathLike | None = None) -> int:
    """Number of classes from the TFDS metadata (all classes, even ones absent from a split)."""
    return int(_label_feature(name, data_dir).num_classes)


def class_names(name: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The label names of the ClassLabel feature, in class-id order."""
    return list(_label_feature(name, data_dir).names)


def class_subset(name: str, data_dir: str | os.PathLike | None = None) -> np.ndarray | None:
    """The sorted ImageNet-1k ids a test set is drawn from, to which a classifier's prediction is restricted
    (the registry's `class_subset`; ObjectNet's from its prepared dataset), or None: the whole label space."""
    subset = get_info(name).class_subset
    if not subset:
        return None
    if subset == SUBSET_IN_BUILD:
        builder = _builder(name, data_dir)
        subset = (builder.info.metadata or {}).get("class_subset")
        if not subset:
            raise HarnessError(f"dataset '{name}' under {default_data_dir(data_dir)} has no class subset in its "
                               f"metadata (built by an older builder?); delete {builder.data_dir} and run "
                               f"`{get_info(name).prepare_command(data_dir)}`")
    return np.asarray(sorted(int(i) for i in subset), np.int64)


def eval_num_batches(name: str, split: str, *, batch_size: int,
                     data_dir: str | os.PathLike | None = None, start_example: int = 0,
                     num_examples: int | None = None, process_count: int = 1) -> int:
    """How many batches `iterate(..., train=False)` yields (the same for every process)."""
    total = _capped_total(_split_ranges(_builder(name, data_dir), name, split), num_examples)
    largest = _largest_share(total, process_count)
    return math.ceil(max(largest - start_example, 0) / eval_batch_size(batch_size, total, process_count))


def _largest_share(total: int, process_count: int) -> int:
    return max(hi - lo for lo, hi in (_process_bounds(total, i, process_count) for i in range(process_count)))


def eval_batch_size(batch_size: int, total: int, process_count: int = 1) -> int:
    """The batch an eval pass over `total` examples uses: `batch_size`, but never more than the largest
    process's share of them (a larger batch would only add padding: allocated, encoded, thrown away). It
    does not depend on `start_example`, so a resumed pass has the shape of the first."""
    return max(1, min(batch_size, _largest_share(total, process_count)))


def _capped_total(ranges, cap: int | None) -> int:
    total = sum(stop - start for _, start, stop in ranges)
    return total if cap is None else min(total, cap)


def _check_args(batch_size, start_example, start_step, num_examples, process_index,
                process_count, train):
    def bad(what):
        raise HarnessError(f"iterate: {what}")

    if not isinstance(batch_size, int) or batch_size <= 0:
        bad(f"batch_size must be a positive int; got {batch_size!r}")
    if start_example < 0 or start_step < 0:
        bad("start_example and start_step must be >= 0")
    if start_example and start_step:
        bad("pass start_example or start_step, not both")
    if start_step and not train:
        bad("start_step is for training streams; use start_example for eval")
    if num_examples is not None and num_examples < 0:
        bad(f"num_examples must be >= 0; got {num_examples}")
    if not 0 <= process_index < process_count:
        bad(f"process_index {process_index} is not in [0, {process_count})")


def iterate(
    name: str,
    split: str,
    *,
    batch_size: int,
    pp: str | Preprocess | None = None,
    data_dir: str | os.PathLike | None = None,
    train: bool = False,
    seed: int = 0,
    start_example: int = 0,
    start_step: int = 0,
    num_examples: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    decoders: Mapping[str, Any] | None = None,
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER,
    prefetch: int = 2,
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of a TFDS split as dicts of numpy arrays (see the module doc).

    `split` is a TFDS split string ("validation", "train[:65000]", "train+restval"); use
    `DATASETS[name].split(role)` for the paper's choice. `num_examples` keeps the first N
    examples of the split (quick runs). `decoders=None` skips decoding of image features (the pp
    decodes); pass `{}` to let TFDS decode everything.
    """
    _check_args(batch_size, start_example, start_step, num_examples, process_index,
                process_count, train)
    pp = as_preprocess(pp)
    builder = _builder(name, data_dir)
    ranges = _split_ranges(builder, name, split)
    total = _capped_total(ranges, num_examples)
    ranges = _sub_ranges(ranges, 0, total)
    info = get_info(name)
    if train:
        ds = _train_stream(builder, name, ranges, total, pp, decoders, batch_size, seed,
                           start_example or start_step * batch_size, process_index,
                           process_count, shuffle_buffer_size)
    else:
        if batch_size > (capped := eval_batch_size(batch_size, total, process_count)):
            log.debug("%s/%s: batch_size %d is larger than the %d examples read; batches of %d", name, split,
                      batch_size, total, capped)
        batch_size = capped
        ds = _eval_stream(builder, ranges, total, pp, decoders, batch_size, seed, start_example,
                          process_index, process_count)
        if ds is None:
            return iter(())
    if batch_size > 1:
        ds = _ensure_image_size(ds, builder, ranges, decoders, pp, info.image_key, seed)
    ds = _batched(ds, batch_size, drop_remainder=train)
    if prefetch:
        ds = ds.prefetch(prefetch)
    return _numpy_batches(_stream_options(ds), pp, info.image_key)


def _eval_stream(builder, ranges, total, pp, decoders, batch_size, seed, start_example,
                 process_index, process_count):
    lo, hi = _process_bounds(total, process_index, process_count)
    begin = min(lo + start_example, hi)
    largest = _largest_share(total, process_count)
    num_batches = math.ceil(max(largest - start_example, 0) / batch_size)
    if num_batches == 0:
        return None
    num_pad = num_batches * batch_size - (hi - begin)

    def prepare(index, example):
        out = pp(_flatten(example), seed=_seed(pp, seed, index))
        out["_index"] = index
        out["_mask"] = tf.constant(True)
        return out

    def as_padding(example):
        out = {k: tf.zeros_like(v) for k, v in example.items()}
        out["_index"] = tf.constant(-1, tf.int64)
        out["_mask"] = tf.constant(False)
        return out

    parts = []
    if hi > begin:
        examples = _read(builder, _sub_ranges(ranges, begin, hi), decoders, ordered=True)
        parts.append(examples.enumerate(start=begin).map(
            prepare, num_parallel_calls=map_parallelism(), deterministic=True))
    if num_pad:
        # Padding copies the shapes and dtypes of the split's first example, zeroed.
        first = _read(builder, _sub_ranges(ranges, 0, 1), decoders, ordered=True)
        template = first.enumerate().map(prepare).map(as_padding).take(1).cache()
        parts.append(template.repeat(num_pad))
    ds = parts[0]
    for part in parts[1:]:
        ds = ds.concatenate(part)
    return ds


def _train_stream(builder, name, ranges, total, pp, decoders, batch_size, seed, start_example,
                  process_index, process_count, shuffle_buffer_size):
    lo, hi = _process_bounds(total, process_index, process_count)
    size = hi - lo
    if size == 0:
        raise HarnessError(f"dataset '{name}' has no training examples for process "
                           f"{process_index} of {process_count}; use a larger split")
    if batch_size > size:
        share = f" (process {process_index} of {process_count})" if process_count > 1 else ""
        raise HarnessError(f"batch_size {batch_size} is larger than the {size} training examples of dataset "
                           f"'{name}'{share}; lower batch_size to at most {size} or use a larger split")
    if shuffle_buffer_size < 1:
        raise HarnessError(f"shuffle_buffer_size must be >= 1; got {shuffle_buffer_size}")
    raw = _read(builder, _sub_ranges(ranges, lo, hi), decoders, ordered=False)
    # Epoch e is shuffled with seed (base + e): the stream is a pure function of (seed, process),
    # so a restart can build epoch `first_epoch` directly and skip into it.
    base = int(np.random.SeedSequence([seed, process_index, 0x7A1]).generate_state(1)[0])
    first_epoch, offset = divmod(start_example, size)
    buffer = min(shuffle_buffer_size, size)

    def epoch(e):
        return raw.shuffle(buffer, seed=tf.constant(base, tf.int64) + e,
                           reshuffle_each_iteration=False)

    def prepare(position, example):
        return pp(_flatten(example), seed=_seed(pp, seed, position, process_index))

    stream = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch)
    stream = stream.skip(offset).enumerate(start=start_example)
    return stream.map(prepare, num_parallel_calls=map_parallelism(), deterministic=True)
