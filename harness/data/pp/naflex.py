"""NaFlex ops, as big_vision's `pp/proj/image_text/ops_naflex.py`: `resize_to_sequence` (the aspect-preserving
resize to a patch budget) and `patchify` (the image as a sequence of flattened patches with their grid
coordinates). `pad_to_shape` (`general`) then pads the sequence to the budget, as big_vision's SigLIP 2 demo
colab does (`configs/proj/image_text/SigLIP2_demo.ipynb`, `get_pp_naflex`):

    value_range(-1, 1)|resize_to_sequence(p, n)|patchify(p)|pad_to_shape((n, None), key="image/patches")
    |pad_to_shape((n,), key="image/type")|pad_to_shape((n,), key="image/yidx")|pad_to_shape((n,), key="image/xidx")

(`harness.data.pp.naflex_pp` writes it). The harness has no nested examples: `patchify` writes big_vision's
`flatten`ed keys (`image/patches`, `image/type`, `image/yidx`, `image/xidx`) directly.

The target size is big_vision's binary search, in TensorFlow's float32 as big_vision computes it: the
largest ratio r (searched in [eps/10, 100] to eps) such that each side `ceil(side * r / p) * p` (at least p)
gives at most n patches. transformers' `Siglip2ImageProcessor` (`get_image_size_for_max_num_patches`) runs
the same search in Python floats; both give the same sides on every size tested
(`tests/test_siglip2.py`).
"""

from __future__ import annotations

from harness.data.pp.registry import ArgError, boolean, number, positive_int, register, string
from harness.tf_import import tf


def sequence_size(image_hw, patch_size: int, max_sequence_len: int, divisible_by_patch: bool = True,
                  eps: float = 1e-5):
    """int32 [2]: the (height, width) `resize_to_sequence` resizes an image of `image_hw` to."""

    def target(ratio):
        hw = tf.cast(image_hw, tf.float32) * ratio
        if divisible_by_patch:
            hw = patch_size * tf.math.ceil(hw / patch_size)  # whole patches: none is dropped
        return tf.cast(tf.maximum(hw, patch_size), tf.int32)  # at least one patch per side

    def feasible(ratio):
        return tf.reduce_prod(target(ratio) / patch_size) <= max_sequence_len

    def step(lo, hi):
        mid = (lo + hi) / 2
        return tf.cond(feasible(mid), lambda: (mid, hi), lambda: (lo, mid))

    lo, _ = tf.while_loop(lambda lo, hi: (hi - lo) >= eps, step, (tf.constant(eps / 10.0), tf.constant(100.0)),
                          parallel_iterations=1)
    return target(lo)


@register("resize_to_sequence")
def _resize_to_sequence(patch_size, max_sequence_len, divisible_by_patch=True, eps=1e-5):
    """Resize, aspect ratio kept up to whole patches, to the most patches of `patch_size` that fit in
    `max_sequence_len` (bilinear with antialias, no cast back: big_vision applies it after value_range)."""
    patch_size = positive_int("patch_size", patch_size)
    max_sequence_len = positive_int("max_sequence_len", max_sequence_len)
    divisible_by_patch = boolean("divisible_by_patch", divisible_by_patch)
    eps = number("eps", eps)
    if not 0 < eps < 1:
        raise ArgError(f"eps must be in (0, 1); got {eps}")

    def fn(image):
        size = sequence_size(tf.shape(image)[:2], patch_size, max_sequence_len, divisible_by_patch, eps)
        out = tf.image.resize(image, size, preserve_aspect_ratio=False, antialias=True)
        return tf.ensure_shape(out, [None, None, 3])

    return fn


@register("patchify", keyed=False)
def _patchify(patch_size, key="image"):
    """data[key] [H, W, C] -> data[key/patches] [h*w, p*p*C] (each patch flattened in (y, x, channel) order,
    patches row-major), data[key/yidx], data[key/xidx] (each patch's row and column, int32) and
    data[key/type] (1: a patch); data[key] is removed."""
    patch_size = positive_int("patch_size", patch_size)
    key = string("key", key)

    def fn(data):
        data = dict(data)
        image = data.pop(key)
        patches = tf.image.extract_patches(image[None], sizes=[1, patch_size, patch_size, 1],
                                           strides=[1, patch_size, patch_size, 1], rates=[1, 1, 1, 1],
                                           padding="VALID")[0]
        nh, nw = tf.shape(patches)[0], tf.shape(patches)[1]
        depth = patches.shape[-1] if patches.shape[-1] is not None else tf.shape(patches)[2]
        gy, gx = tf.meshgrid(tf.range(nh), tf.range(nw), indexing="ij")
        data[f"{key}/patches"] = tf.reshape(patches, (nh * nw, depth))
        data[f"{key}/yidx"] = tf.reshape(gy, [nh * nw])
        data[f"{key}/xidx"] = tf.reshape(gx, [nh * nw])
        data[f"{key}/type"] = tf.fill([nh * nw], 1)
        return data

    return fn
