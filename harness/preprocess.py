"""Preprocessing as a pp string, with big_vision's op names and semantics.

A pp string such as `decode|resize_small(256)|central_crop(224)|value_range(-1,1)` becomes a
`Preprocess` callable that maps one example (a dict of tf tensors) to a dict. Every op is
validated when the string is parsed, so a typo fails before any data is read.

Semantics follow big_vision's `pp/ops_image.py` and `pp/ops_general.py`, because checkpoints and
published numbers were produced with them:
- `resize` is bilinear without antialias, then clipped to the input dtype's range and cast back:
  a uint8 image is *truncated* (tf.cast), not rounded.
- `resize_small` uses the "area" method (no antialias); the new size is `tf.round(side * factor)`
  in float32 (round half to even).
- `central_crop` offsets are `(side - crop) // 2`.
- `value_range(vmin, vmax)` maps [in_min, in_max] linearly to [vmin, vmax] in float32.

One deliberate difference: random ops (`random_crop`, `inception_crop`, `flip_lr`, `randaug`) use
stateless tf.random ops seeded per example (see `example_seed`), so a training stream is reproducible
and resumable; big_vision uses stateful ops. The distributions are the same.

Image ops read and write key "image" unless told otherwise (big_vision's `key=` / `inkey=` /
`outkey=` convention); `onehot` uses `key=` / `key_result=`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from harness.errors import HarnessError

# Keyword arguments that every image ("keyed") op accepts on top of its own.
_KEY_KWARGS = {"key": None, "inkey": "image", "outkey": "image"}


class _ArgError(Exception):
    """An op factory rejected its arguments; the parser adds the op's signature."""


@dataclasses.dataclass(frozen=True)
class _OpDef:
    name: str
    factory: Callable[..., Callable]
    keyed: bool  # reads data[key or inkey], writes data[key or outkey]
    random: bool  # the op's function takes (value, seed)

    def signature(self) -> str:
        params = list(inspect.signature(self.factory).parameters.values())
        if self.keyed:
            params += [
                inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                for k, v in _KEY_KWARGS.items()
            ]
        return f"{self.name}{inspect.Signature(params)}"


_OPS: dict[str, _OpDef] = {}


def _register(name: str, *, keyed: bool = True, random: bool = False):
    def wrap(factory):
        _OPS[name] = _OpDef(name, factory, keyed, random)
        return factory

    return wrap


def known_ops() -> dict[str, str]:
    """Op name -> signature, e.g. for help texts."""
    return {name: op.signature() for name, op in sorted(_OPS.items())}


# --------------------------------------------------------------------------------------------------
# Argument checks (run at parse time, inside the factories)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _size_pair(name: str, value: Any) -> tuple[int, int]:
    """An int H (square) or a pair (H, W) of positive ints, as big_vision's `maybe_repeat`."""
    if _is_int(value):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(_is_int(v) and v > 0 for v in value)
    ):
        raise _ArgError(f"{name} must be a positive int or a pair (height, width); got {value!r}")
    return int(value[0]), int(value[1])


def _positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or value <= 0:
        raise _ArgError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _number(name: str, value: Any) -> float:
    if not _is_number(value):
        raise _ArgError(f"{name} must be a number; got {value!r}")
    return float(value)


def _numbers(name: str, value: Any) -> float | tuple[float, ...]:
    """A number or a per-channel list of numbers."""
    if isinstance(value, (tuple, list)) and value and all(_is_number(v) for v in value):
        return tuple(float(v) for v in value)
    return _number(name, value)


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _ArgError(f"{name} must be a string; got {value!r}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _ArgError(f"{name} must be True or False; got {value!r}")
    return value


_RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian",
                   "mitchellcubic")


def _method(value: Any) -> str:
    if value not in _RESIZE_METHODS:
        raise _ArgError(f"method must be one of {', '.join(_RESIZE_METHODS)}; got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------
# Image ops


def _resize_to(image, size_hw, method: str, antialias: bool):
    """tf.image.resize, then clip to the input dtype's range and cast back (big_vision's rule)."""
    import tensorflow as tf

    dtype = image.dtype
    resized = tf.image.resize(image, size_hw, method=method, antialias=antialias)
    # tf.cast truncates towards zero: 127.9 -> 127 for uint8, exactly like the reference.
    return tf.cast(tf.clip_by_value(resized, dtype.min, dtype.max), dtype)


@_register("decode")
def _decode(channels=3, precise=False):
    """Encoded image bytes (JPEG/PNG/GIF/BMP) -> uint8 [H, W, channels]."""
    channels = _positive_int("channels", channels)
    precise = _bool("precise", precise)

    def fn(data):
        import tensorflow as tf

        if precise:
            # INTEGER_ACCURATE matches PIL / OpenCV JPEG decoding (also reads PNG).
            return tf.image.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE")
        return tf.io.decode_image(data, channels=channels, expand_animations=False)

    return fn


@_register("resize")
def _resize(size, method="bilinear", antialias=False):
    """Resize to `size` (int or (h, w)); bilinear, no antialias, cast back to the input dtype."""
    size_hw = _size_pair("size", size)
    method = _method(method)
    antialias = _bool("antialias", antialias)

    def fn(image):
        out = _resize_to(image, size_hw, method, antialias)
        out.set_shape([*size_hw, image.shape[-1]])
        return out

    return fn


def _resize_by_factor(image, factor, method: str, antialias: bool):
    import tensorflow as tf

    shape = tf.shape(image)
    # float32 product rounded half-to-even, as the reference computes it.
    h = tf.cast(tf.round(tf.cast(shape[0], tf.float32) * factor), tf.int32)
    w = tf.cast(tf.round(tf.cast(shape[1], tf.float32) * factor), tf.int32)
    return _resize_to(image, tf.stack([h, w]), method, antialias)


@_register("resize_small")
def _resize_small(smaller_size, method="area", antialias=False):
    """Resize so the shorter side is `smaller_size`, keeping the aspect ratio ("area" method)."""
    smaller_size = _positive_int("smaller_size", smaller_size)
    method = _method(method)
    antialias = _bool("antialias", antialias)

    def fn(image):
        import tensorflow as tf

        shape = tf.shape(image)
        factor = tf.cast(smaller_size, tf.float32) / tf.cast(tf.minimum(shape[0], shape[1]),
                                                             tf.float32)
        return _resize_by_factor(image, factor, method, antialias)

    return fn


@_register("resize_long")
def _resize_long(longer_size, method="area", antialias=True):
    """Resize so the longer side is `longer_size`, keeping the aspect ratio."""
    longer_size = _positive_int("longer_size", longer_size)
    method = _method(method)
    antialias = _bool("antialias", antialias)

    def fn(image):
        import tensorflow as tf

        shape = tf.shape(image)
        factor = tf.cast(longer_size, tf.float32) / tf.cast(tf.maximum(shape[0], shape[1]),
                                                            tf.float32)
        return _resize_by_factor(image, factor, method, antialias)

    return fn


@_register("central_crop")
def _central_crop(crop_size=None):
    """Central crop of `crop_size` (int or (h, w)); None takes the largest central square."""
    size_hw = None if crop_size is None else _size_pair("crop_size", crop_size)

    def fn(image):
        import tensorflow as tf

        shape = tf.shape(image)
        if size_hw is None:
            h = w = tf.minimum(shape[0], shape[1])
        else:
            h, w = size_hw
        out = tf.image.crop_to_bounding_box(image, (shape[0] - h) // 2, (shape[1] - w) // 2, h, w)
        if size_hw is not None:
            out.set_shape([*size_hw, image.shape[-1]])
        return out

    return fn


@_register("random_crop", random=True)
def _random_crop(crop_size):
    """A uniformly placed crop of `crop_size` (int or (h, w))."""
    size_hw = _size_pair("crop_size", crop_size)

    def fn(image, seed):
        import tensorflow as tf

        channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
        out = tf.image.stateless_random_crop(image, [*size_hw, channels], seed=seed)
        out.set_shape([*size_hw, image.shape[-1]])
        return out

    return fn


@_register("inception_crop", random=True)
def _inception_crop(size=None, area_min=5, area_max=100, method="bilinear", antialias=False):
    """Random crop covering area_min..area_max % of the image (aspect 3/4..4/3), then resize."""
    size_hw = None if size is None else _size_pair("size", size)
    area_min = _number("area_min", area_min)
    area_max = _number("area_max", area_max)
    if not 0 < area_min <= area_max <= 100:
        raise _ArgError(f"need 0 < area_min <= area_max <= 100; got {area_min}, {area_max}")
    method = _method(method)
    antialias = _bool("antialias", antialias)

    def fn(image, seed):
        import tensorflow as tf

        begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            tf.zeros([0, 0, 4], tf.float32),
            seed=seed,
            area_range=(area_min / 100, area_max / 100),
            min_object_covered=0,  # no box to cover: any crop in the area range will do
            use_image_if_no_bounding_boxes=True,
        )
        crop = tf.slice(image, begin, crop_size)
        crop.set_shape([None, None, image.shape[-1]])  # tf.slice loses the channel count
        if size_hw is None:
            return crop
        out = _resize_to(crop, size_hw, method, antialias)
        out.set_shape([*size_hw, image.shape[-1]])
        return out

    return fn


@_register("flip_lr", random=True)
def _flip_lr():
    """Flip left-right with probability 1/2."""

    def fn(image, seed):
        import tensorflow as tf

        return tf.image.stateless_random_flip_left_right(image, seed=seed)

    return fn


# --------------------------------------------------------------------------------------------------
# RandAugment (Cubuk et al. 2019), as big_vision's `randaug` op (its pp/autoaugment.py, a fork of the
# TF EfficientNet reference) computes it, because the paper's fine-tunes at 384/518 px used that op.
# The reference's quirks are kept on purpose, so that the augmentation distribution is the one behind
# the published numbers: Contrast blends towards a grey of H*W/256 (the histogram's total count / 256,
# not the mean grey level); Solarize's threshold int(M/10 * 256) is converted to uint8, so it wraps
# (magnitude 10 -> threshold 0 -> every pixel inverted); Posterize keeps int(M/10 * 4) bits; the selected
# op is always applied (`prob` below can lower that, e.g. timm's 0.5); TranslateX/Y shift by up to a
# fixed 100 px and Cutout's half-size is up to 40 px whatever the image size. Pixels uncovered by a
# geometric op are grey (128), as the reference's wrap/unwrap leaves them with nearest interpolation.

_RANDAUG_FILL = 128
_MAX_LEVEL = 10.0


def _blend(image1, image2, factor: float):
    """image1 + factor * (image2 - image1) in float32; truncated to uint8 when interpolating, clipped
    first when extrapolating (factor outside [0, 1])."""
    import tensorflow as tf

    if factor == 0.0:
        return image1
    if factor == 1.0:
        return image2
    a = tf.cast(image1, tf.float32)
    mixed = a + factor * (tf.cast(image2, tf.float32) - a)
    if 0.0 < factor < 1.0:
        return tf.cast(mixed, tf.uint8)
    return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _autocontrast(image):
    """Each channel stretched linearly so that its min becomes 0 and its max 255 (PIL's autocontrast)."""
    import tensorflow as tf

    def channel(c):
        lo = tf.cast(tf.reduce_min(c), tf.float32)
        hi = tf.cast(tf.reduce_max(c), tf.float32)

        def stretch():
            scale = 255.0 / (hi - lo)
            return tf.cast(tf.clip_by_value(tf.cast(c, tf.float32) * scale - lo * scale, 0.0, 255.0),
                           tf.uint8)

        return tf.cond(hi > lo, stretch, lambda: c)

    return tf.stack([channel(image[..., i]) for i in range(3)], axis=-1)


def _equalize(image):
    """Per-channel histogram equalisation with PIL's lookup table: step = (pixels not at the channel's
    top value) // 255, lut[v] = (count below v + step // 2) // step; identity when step is 0."""
    import tensorflow as tf

    def channel(c):
        c = tf.cast(c, tf.int32)
        hist = tf.math.bincount(tf.reshape(c, [-1]), minlength=256, maxlength=256)
        step = (tf.reduce_sum(hist) - hist[tf.reduce_max(c)]) // 255

        def lookup():
            below = tf.concat([[0], tf.cumsum(hist)[:-1]], 0)
            return tf.gather(tf.clip_by_value((below + step // 2) // step, 0, 255), c)

        return tf.cast(tf.cond(step > 0, lookup, lambda: c), tf.uint8)

    return tf.stack([channel(image[..., i]) for i in range(3)], axis=-1)


def _invert(image):
    return 255 - image


def _posterize(image, bits: int):
    """Keep the top `bits` bits. As in the reference, the shift 8 - bits is a uint8 (a negative one
    wraps) and TF clamps shifts to 7, so 0 bits, or more than 8, keep the top bit."""
    import tensorflow as tf

    shift = tf.constant((8 - bits) % 256, image.dtype)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _solarize(image, threshold: int):
    """Invert the pixels at or above `threshold` (an int in 0..255)."""
    import tensorflow as tf

    return tf.where(image < tf.constant(threshold, image.dtype), image, 255 - image)


def _solarize_add(image, addition: int, threshold: int = 128):
    """Add `addition` (clipped to 0..255) to the pixels below `threshold`."""
    import tensorflow as tf

    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(image < threshold, added, image)


def _grey_rgb(image):
    import tensorflow as tf

    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _color(image, factor: float):
    return _blend(_grey_rgb(image), image, factor)


def _contrast(image, factor: float):
    import tensorflow as tf

    # The reference's grey level: its histogram's total count / 256 = H * W / 256 (see the section
    # comment), clipped to 255 and truncated.
    shape = tf.shape(image)
    grey = tf.clip_by_value(tf.cast(shape[0] * shape[1], tf.float32) / 256.0, 0.0, 255.0)
    degenerate = tf.cast(tf.fill(tf.shape(image), grey), tf.uint8)
    return _blend(degenerate, image, factor)


def _brightness(image, factor: float):
    import tensorflow as tf

    return _blend(tf.zeros_like(image), image, factor)


def _sharpness(image, factor: float):
    """Blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) applied to the interior pixels;
    the one-pixel border keeps the original values."""
    import tensorflow as tf

    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
    inner = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    smooth = tf.where(inner, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return _blend(smooth, image, factor)


def _projective(image, transform):
    """Output pixel (x, y) takes the input pixel nearest to ((a0 x + a1 y + a2), (b0 x + b1 y + b2)) for
    `transform` = [a0, a1, a2, b0, b1, b2]; outside the image it is grey."""
    import tensorflow as tf

    shape = tf.shape(image)
    row = tf.concat([tf.cast(tf.stack(transform), tf.float32), tf.zeros([2], tf.float32)], 0)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=row[None], output_shape=shape[:2],
        fill_value=float(_RANDAUG_FILL), interpolation="NEAREST", fill_mode="CONSTANT")[0]
    out.set_shape(image.shape)
    return out


def _rotate(image, degrees):
    """Rotate about the image centre by `degrees` (positive: counter-clockwise as displayed)."""
    import math

    import tensorflow as tf

    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    shape = tf.shape(image)
    h = tf.cast(shape[0], tf.float32) - 1.0
    w = tf.cast(shape[1], tf.float32) - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    return _projective(image, [cos, -sin, x_offset, sin, cos, y_offset])


def _shear_x(image, level):
    return _projective(image, [1.0, level, 0.0, 0.0, 1.0, 0.0])


def _shear_y(image, level):
    return _projective(image, [1.0, 0.0, 0.0, level, 1.0, 0.0])


def _translate_x(image, pixels):
    """Output column x shows input column x + pixels."""
    return _projective(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])


def _translate_y(image, pixels):
    return _projective(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])


def _cutout(image, pad_size: int, center_y, center_x):
    """Grey out rows [cy - pad, cy + pad) x columns [cx - pad, cx + pad), clipped to the image."""
    import tensorflow as tf

    shape = tf.shape(image)
    rows = tf.range(shape[0])[:, None]
    cols = tf.range(shape[1])[None, :]
    inside = ((rows >= center_y - pad_size) & (rows < center_y + pad_size)
              & (cols >= center_x - pad_size) & (cols < center_x + pad_size))
    return tf.where(inside[:, :, None], tf.constant(_RANDAUG_FILL, image.dtype), image)


def _random_sign(value, seed):
    import tensorflow as tf

    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    return tf.where(flip, -tf.constant(value, tf.float32), tf.constant(value, tf.float32))


def _enhance_factor(magnitude: float) -> float:
    return magnitude / _MAX_LEVEL * 1.8 + 0.1


def _cutout_op(image, magnitude, seed):
    import tensorflow as tf

    shape = tf.shape(image)
    centre = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    return _cutout(image, int(magnitude / _MAX_LEVEL * 40), centre[0] % shape[0], centre[1] % shape[1])


# RandAugment's ops in the reference's order: name -> fn(uint8 image, magnitude, seed). Each maps the
# shared magnitude M (0..10 nominal) to its own argument as the reference does.
RANDAUG_OPS: dict[str, Callable] = {
    "AutoContrast": lambda im, m, seed: _autocontrast(im),
    "Equalize": lambda im, m, seed: _equalize(im),
    "Invert": lambda im, m, seed: _invert(im),
    "Rotate": lambda im, m, seed: _rotate(im, _random_sign(m / _MAX_LEVEL * 30.0, seed)),
    "Posterize": lambda im, m, seed: _posterize(im, int(m / _MAX_LEVEL * 4)),
    # uint8 conversion of the reference's Python int threshold: 256 wraps to 0 (see above).
    "Solarize": lambda im, m, seed: _solarize(im, int(m / _MAX_LEVEL * 256) % 256),
    "Color": lambda im, m, seed: _color(im, _enhance_factor(m)),
    "Contrast": lambda im, m, seed: _contrast(im, _enhance_factor(m)),
    "Brightness": lambda im, m, seed: _brightness(im, _enhance_factor(m)),
    "Sharpness": lambda im, m, seed: _sharpness(im, _enhance_factor(m)),
    "ShearX": lambda im, m, seed: _shear_x(im, _random_sign(m / _MAX_LEVEL * 0.3, seed)),
    "ShearY": lambda im, m, seed: _shear_y(im, _random_sign(m / _MAX_LEVEL * 0.3, seed)),
    "TranslateX": lambda im, m, seed: _translate_x(im, _random_sign(m / _MAX_LEVEL * 100.0, seed)),
    "TranslateY": lambda im, m, seed: _translate_y(im, _random_sign(m / _MAX_LEVEL * 100.0, seed)),
    "Cutout": _cutout_op,
    "SolarizeAdd": lambda im, m, seed: _solarize_add(im, int(m / _MAX_LEVEL * 110)),
}


@_register("randaug", random=True)
def _randaug(num_layers=2, magnitude=10, prob=1.0):
    """RandAugment: `num_layers` times, one of the 16 ops of RANDAUG_OPS drawn uniformly, at the shared
    `magnitude` (10 = the reference's maximum; up to 30), applied with probability `prob`. uint8 RGB."""
    if not _is_int(num_layers) or num_layers < 0:
        raise _ArgError(f"num_layers must be an int >= 0; got {num_layers!r}")
    magnitude = _number("magnitude", magnitude)
    if not 0 <= magnitude <= 30:
        raise _ArgError(f"magnitude must be in [0, 30] (10 is the reference's maximum); got {magnitude}")
    prob = _number("prob", prob)
    if not 0 <= prob <= 1:
        raise _ArgError(f"prob must be in [0, 1]; got {prob}")
    ops = list(RANDAUG_OPS.values())

    def fn(image, seed):
        import tensorflow as tf

        if image.dtype != tf.uint8 or (image.shape.rank is not None and image.shape[-1] not in (3, None)):
            raise HarnessError(f"pp op randaug works on uint8 RGB images [H, W, 3]; got {image.dtype.name} "
                               f"{image.shape}; put it before value_range")
        fold = tf.random.experimental.stateless_fold_in
        for layer in range(int(num_layers)):
            layer_seed = fold(seed, layer)
            which = tf.random.stateless_uniform([], seed=fold(layer_seed, 0), maxval=len(ops),
                                                dtype=tf.int32)
            op_seed = fold(layer_seed, 1)
            branches = [lambda op=op: op(image, magnitude, op_seed) for op in ops]
            if prob < 1.0:
                apply = tf.random.stateless_uniform([], seed=fold(layer_seed, 2)) < prob
                augmented = tf.cond(apply, lambda: tf.switch_case(which, branches), lambda: image)
            else:
                augmented = tf.switch_case(which, branches)
            augmented.set_shape(image.shape)
            image = augmented
        return image

    return fn


@_register("value_range")
def _value_range(vmin=-1, vmax=1, in_min=0, in_max=255.0, clip_values=False):
    """Map [in_min, in_max] (scalars or per-channel lists) linearly to [vmin, vmax], float32."""
    vmin = _number("vmin", vmin)
    vmax = _number("vmax", vmax)
    in_min = _numbers("in_min", in_min)
    in_max = _numbers("in_max", in_max)
    clip_values = _bool("clip_values", clip_values)

    def fn(image):
        import tensorflow as tf

        # Same order of float32 operations as the reference, so results agree to the last bit.
        lo = tf.constant(in_min, tf.float32)
        hi = tf.constant(in_max, tf.float32)
        image = (tf.cast(image, tf.float32) - lo) / (hi - lo)
        image = vmin + image * (vmax - vmin)
        if clip_values:
            image = tf.clip_by_value(image, vmin, vmax)
        return image

    return fn


# --------------------------------------------------------------------------------------------------
# Dict ops


@_register("keep", keyed=False)
def _keep(*keys):
    """Keep only the given keys."""
    keys = tuple(_string("keys", k) for k in keys)

    def fn(data):
        return {k: v for k, v in data.items() if k in keys}

    return fn


@_register("drop", keyed=False)
def _drop(*keys):
    """Drop the given keys."""
    keys = tuple(_string("keys", k) for k in keys)

    def fn(data):
        return {k: v for k, v in data.items() if k not in keys}

    return fn


@_register("copy", keyed=False)
def _copy(inkey, outkey):
    """data[outkey] = data[inkey] (tensors are immutable, so no deep copy is needed)."""
    inkey = _string("inkey", inkey)
    outkey = _string("outkey", outkey)

    def fn(data):
        data = dict(data)
        data[outkey] = data[inkey]
        return data

    return fn


@_register("onehot", keyed=False)
def _onehot(depth, key="label", key_result=None, multi=True, on=1.0, off=0.0):
    """One-hot encode data[key] into data[key_result or key]; several labels -> multi-hot."""
    depth = _positive_int("depth", depth)
    key = _string("key", key)
    key_result = None if key_result is None else _string("key_result", key_result)
    multi = _bool("multi", multi)
    on = _number("on", on)
    off = _number("off", off)

    def fn(data):
        import tensorflow as tf

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


# --------------------------------------------------------------------------------------------------
# Parsing


@dataclasses.dataclass(frozen=True)
class OpCall:
    """One parsed op of a pp string."""

    name: str
    args: tuple
    kwargs: Mapping[str, Any]
    text: str


def _split_ops(spec: str) -> list[str]:
    """Split on '|' outside quotes and brackets (a string argument may contain '|')."""
    parts, depth, quote, current = [], 0, None, []
    for ch in spec:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _parse_op(text: str, spec: str) -> tuple[str, tuple, dict]:
    where = f"in pp '{spec}'"
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise HarnessError(f"cannot parse pp op '{text}' {where}; write ops like resize(224) "
                           "or value_range(-1, 1), joined by '|'") from None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise HarnessError(f"cannot parse pp op '{text}' {where}; write ops like resize(224) "
                           "or value_range(-1, 1), joined by '|'")
    name = node.func.id

    def literal(arg_node):
        if isinstance(arg_node, ast.Starred):
            raise ValueError
        return ast.literal_eval(arg_node)

    try:
        args = tuple(literal(a) for a in node.args)
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError
            kwargs[kw.arg] = literal(kw.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise HarnessError(f"pp op '{text}' {where}: arguments must be Python literals (numbers, "
                           "quoted strings, tuples, key=value)") from None
    return name, args, kwargs


def _unknown_op_error(name: str, spec: str) -> HarnessError:
    known = sorted(_OPS)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return HarnessError(
        f"unknown pp op '{name}' in pp '{spec}'; {hint}known ops: {', '.join(known)}")


def _build_op(name: str, args: tuple, kwargs: dict, spec: str):
    """Validate the arguments of one op and return (op definition, function)."""
    if name not in _OPS:
        raise _unknown_op_error(name, spec)
    op = _OPS[name]
    kwargs = dict(kwargs)
    keys = {}
    if op.keyed:
        keys = {k: kwargs.pop(k, default) for k, default in _KEY_KWARGS.items()}
    try:
        inspect.signature(op.factory).bind(*args, **kwargs)
        for k, v in keys.items():
            if v is not None and not isinstance(v, str):
                raise _ArgError(f"{k} must be a string; got {v!r}")
        fn = op.factory(*args, **kwargs)
    except (TypeError, _ArgError) as e:  # TypeError: from binding the arguments
        raise HarnessError(
            f"pp op '{name}' in pp '{spec}': {e}; signature: {op.signature()}") from None
    return op, fn, keys


class Preprocess:
    """A parsed pp string: `Preprocess("decode|resize(224)")(example) -> example`.

    `str(pp)` is the original string (recorded in result records). Random ops draw from
    `seed` (a shape-[2] int tensor), else from the example's "_seed" entry (which is removed),
    else from a fixed seed; each op folds in its position, so two random ops differ.
    """

    def __init__(self, spec: str | None):
        self.spec = (spec or "").strip()
        self.ops: tuple[OpCall, ...] = ()
        self._fns: list[tuple[_OpDef, Callable, dict]] = []
        if not self.spec:
            return
        calls = []
        for text in _split_ops(self.spec):
            if not text:
                raise HarnessError(f"empty op in pp '{self.spec}'; remove the extra '|'")
            name, args, kwargs = _parse_op(text, self.spec)
            self._fns.append(_build_op(name, args, kwargs, self.spec))
            calls.append(OpCall(name, args, kwargs, text))
        self.ops = tuple(calls)

    @property
    def is_random(self) -> bool:
        """Whether any op draws random numbers (then the output depends on the seed)."""
        return any(op.random for op, _, _ in self._fns)

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"Preprocess({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocess) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __call__(self, data: Mapping[str, Any], seed=None) -> dict[str, Any]:
        import tensorflow as tf

        data = dict(data)
        example_seed_t = data.pop("_seed", None)
        if seed is None:
            seed = example_seed_t
        if seed is None and self.is_random:
            seed = tf.constant([0, 0], tf.int64)
        for position, (op, fn, keys) in enumerate(self._fns):
            if op.random:
                op_seed = tf.random.experimental.stateless_fold_in(seed, position)
            if op.keyed:
                inkey = keys["key"] or keys["inkey"]
                outkey = keys["key"] or keys["outkey"]
                if inkey not in data:
                    raise HarnessError(
                        f"pp op '{op.name}' in pp '{self.spec}' reads key '{inkey}', but the "
                        f"example has only {sorted(data)}; pass key=... to the op")
                value = fn(data[inkey], op_seed) if op.random else fn(data[inkey])
                data[outkey] = value
            else:
                data = fn(data)
        return data


def as_preprocess(pp: str | Preprocess | None) -> Preprocess:
    """Accept a pp string or an already parsed `Preprocess`."""
    return pp if isinstance(pp, Preprocess) else Preprocess(pp)


def example_seed(seed: int, index, *, process_index: int = 0):
    """The per-example seed of random ops: a function of (seed, process, example index) only."""
    import tensorflow as tf

    base = tf.constant([seed, process_index], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def preprocess_numpy(pp: str | Preprocess, images_uint8, *, seed: int = 0,
                     key: str = "image") -> np.ndarray:
    """Run a pp on uint8 images [N, H, W, C] (or a list of [H, W, C]) and stack data[key].

    If the pp has a `decode` op, each image is PNG-encoded first (lossless), so the same pp
    string as the data pipeline's can be used. Image i gets `example_seed(seed, i)`.
    """
    import tensorflow as tf

    pp = as_preprocess(pp)
    encode = any(call.name == "decode" for call in pp.ops)
    outputs = []
    for index, image in enumerate(images_uint8):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3:
            raise HarnessError(f"preprocess_numpy takes uint8 [H, W, C] images; image {index} "
                               f"is {image.dtype} {image.shape}")
        value = tf.io.encode_png(image) if encode else tf.constant(image)
        out = pp({key: value}, seed=example_seed(seed, index))
        outputs.append(np.asarray(out[key]))
    return np.stack(outputs) if outputs else np.zeros((0,), np.float32)


__all__ = [
    "RANDAUG_OPS",
    "OpCall",
    "Preprocess",
    "as_preprocess",
    "example_seed",
    "known_ops",
    "preprocess_numpy",
]
