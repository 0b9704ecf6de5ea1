"""Dict ops, as big_vision's `pp/ops_general.py`: keep / drop / copy keys, onehot labels.

TensorFlow is `harness.tf_import.tf`, imported when an op first runs (see `harness.data.pp` for why).
"""

from __future__ import annotations

from harness.data.pp.registry import ArgError, boolean, number, positive_int, register, string
from harness.errors import HarnessError
from harness.tf_import import tf


@register("keep", keyed=False)
def _keep(*keys):
    """Keep only the given keys."""
    keys = tuple(string("keys", k) for k in keys)

    def fn(data):
        return {k: v for k, v in data.items() if k in keys}

    return fn


@register("drop", keyed=False)
def _drop(*keys):
    """Drop the given keys."""
    keys = tuple(string("keys", k) for k in keys)

    def fn(data):
        return {k: v for k, v in data.items() if k not in keys}

    return fn


@register("copy", keyed=False)
def _copy(inkey, outkey):
    """data[outkey] = data[inkey] (tensors are immutable, so no deep copy is needed)."""
    inkey = string("inkey", inkey)
    outkey = string("outkey", outkey)

    def fn(data):
        data = dict(data)
        data[outkey] = data[inkey]
        return data

    return fn


@register("onehot", keyed=False)
def _onehot(depth, key="label", key_result=None, multi=True, on=1.0, off=0.0):
    """One-hot encode data[key] into data[key_result or key]; several labels -> multi-hot."""
    depth = positive_int("depth", depth)
    key = string("key", key)
    key_result = None if key_result is None else string("key_result", key_result)
    multi = boolean("multi", multi)
    on = number("on", on)
    off = number("off", off)

    def fn(data):
        data = dict(data)
        labels = tf.cast(data[key], tf.int64)
        if labels.shape.rank and multi:
            # A label set (e.g. ImageNet ReaL) -> one multi-hot vector; duplicates count once.
            hot = tf.scatter_nd(labels[:, None], tf.ones(tf.shape(labels)[0]), (depth,))
            out = tf.clip_by_value(hot, 0, 1) * (on - off) + off
        else:
            out = tf.one_hot(labels, depth, on_value=on, off_value=off)
        data[key_result or key] = out
        return data

    return fn


@register("pad_to_shape")
def _pad_to_shape(shape, pad_value=0, where="after"):
    """Pad data[key] with `pad_value` to `shape` (a None dimension is left as it is), as big_vision's
    `pad_to_shape`: the padding goes after the values (`where="after"`), before them, or half on each side
    ("both", the odd one after)."""
    if not isinstance(shape, (tuple, list)) or not all(s is None or (isinstance(s, int) and s >= 0) for s in shape):
        raise ArgError(f"shape must be a tuple of non-negative ints or None; got {shape!r}")
    shape = tuple(shape)
    pad_value = number("pad_value", pad_value)
    if where not in ("after", "before", "both"):
        raise ArgError(f"where must be one of after, before, both; got {where!r}")

    def fn(x):
        if x.shape.rank is not None and x.shape.rank != len(shape):
            raise HarnessError(f"pad_to_shape{shape} got a tensor of rank {x.shape.rank}; give a shape of that rank")
        pads = []
        for i, target in enumerate(shape):
            diff = 0 if target is None else target - tf.shape(x)[i]
            pads.append({"after": [0, diff], "before": [diff, 0], "both": [diff // 2, diff - diff // 2]}[where])
        out = tf.pad(x, pads, constant_values=tf.cast(pad_value, x.dtype))
        out.set_shape(shape)
        return out

    return fn
