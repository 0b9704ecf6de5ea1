"""Image ops, with big_vision's `pp/ops_image.py` semantics (see `harness.data.pp`): decode, resize,
resize_small / resize_long, central / random / inception crops, flip_lr, value_range.

TensorFlow is `harness.tf_import.tf`, imported when an op first runs (see `harness.data.pp` for why).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.data.pp.registry import (
    ArgError,
    boolean,
    number,
    numbers,
    positive_int,
    register,
    size_pair,
)
from harness.tf_import import tf

_RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5", "gaussian",
                   "mitchellcubic")


def _method(value: Any) -> str:
    if value not in _RESIZE_METHODS:
        raise ArgError(f"method must be one of {', '.join(_RESIZE_METHODS)}; got {value!r}")
    return value


def _resize_to(image, size_hw, method: str, antialias: bool):
    """tf.image.resize, then clip to the input dtype's range and cast back (big_vision's rule)."""
    dtype = image.dtype
    resized = tf.image.resize(image, size_hw, method=method, antialias=antialias)
    # tf.cast truncates towards zero: 127.9 -> 127 for uint8, exactly like the reference.
    return tf.cast(tf.clip_by_value(resized, dtype.min, dtype.max), dtype)


@register("decode")
def _decode(channels=3, precise=False):
    """Encoded image bytes (JPEG/PNG/GIF/BMP) -> uint8 [H, W, channels]."""
    channels = positive_int("channels", channels)
    precise = boolean("precise", precise)

    def fn(data):
        if precise:
            # INTEGER_ACCURATE matches PIL / OpenCV JPEG decoding (also reads PNG).
            return tf.image.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE")
        return tf.io.decode_image(data, channels=channels, expand_animations=False)

    return fn


@register("resize")
def _resize(size, method="bilinear", antialias=False):
    """Resize to `size` (int or (h, w)); bilinear, no antialias, cast back to the input dtype."""
    size_hw = size_pair("size", size)
    method = _method(method)
    antialias = boolean("antialias", antialias)

    def fn(image):
        out = _resize_to(image, size_hw, method, antialias)
        out.set_shape([*size_hw, image.shape[-1]])
        return out

    return fn


def _resize_by_factor(image, factor, method: str, antialias: bool):
    shape = tf.shape(image)
    # float32 product rounded half-to-even, as the reference computes it.
    h = tf.cast(tf.round(tf.cast(shape[0], tf.float32) * factor), tf.int32)
    w = tf.cast(tf.round(tf.cast(shape[1], tf.float32) * factor), tf.int32)
    return _resize_to(image, tf.stack([h, w]), method, antialias)


@register("resize_small")
def _resize_small(smaller_size, method="area", antialias=False):
    """Resize so the shorter side is `smaller_size`, keeping the aspect ratio ("area" method)."""
    smaller_size = positive_int("smaller_size", smaller_size)
    method = _method(method)
    antialias = boolean("antialias", antialias)

    def fn(image):
        shape = tf.shape(image)
        factor = tf.cast(smaller_size, tf.float32) / tf.cast(tf.minimum(shape[0], shape[1]),
                                                             tf.float32)
        return _resize_by_factor(image, factor, method, antialias)

    return fn


@register("resize_long")
def _resize_long(longer_size, method="area", antialias=True):
    """Resize so the longer side is `longer_size`, keeping the aspect ratio."""
    longer_size = positive_int("longer_size", longer_size)
    method = _method(method)
    antialias = boolean("antialias", antialias)

    def fn(image):
        shape = tf.shape(image)
        factor = tf.cast(longer_size, tf.float32) / tf.cast(tf.maximum(shape[0], shape[1]),
                                                            tf.float32)
        return _resize_by_factor(image, factor, method, antialias)

    return fn


@register("central_crop")
def _central_crop(crop_size=None):
    """Central crop of `crop_size` (int or (h, w)); None takes the largest central square."""
    size_hw = None if crop_size is None else size_pair("crop_size", crop_size)

    def fn(image):
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


@register("random_crop", random=True)
def _random_crop(crop_size):
    """A uniformly placed crop of `crop_size` (int or (h, w))."""
    size_hw = size_pair("crop_size", crop_size)

    def fn(image, seed):
        channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
        out = tf.image.stateless_random_crop(image, [*size_hw, channels], seed=seed)
        out.set_shape([*size_hw, image.shape[-1]])
        return out

    return fn


@register("inception_crop", random=True)
def _inception_crop(size=None, area_min=5, area_max=100, method="bilinear", antialias=False):
    """Random crop covering area_min..area_max % of the image (aspect 3/4..4/3), then resize."""
    size_hw = None if size is None else size_pair("size", size)
    area_min = number("area_min", area_min)
    area_max = number("area_max", area_max)
    if not 0 < area_min <= area_max <= 100:
        raise ArgError(f"need 0 < area_min <= area_max <= 100; got {area_min}, {area_max}")
    method = _method(method)
    antialias = boolean("antialias", antialias)

    def fn(image, seed):
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


@register("flip_lr", random=True)
def _flip_lr():
    """Flip left-right with probability 1/2."""

    def fn(image, seed):
        return tf.image.stateless_random_flip_left_right(image, seed=seed)

    return fn


@dataclasses.dataclass(frozen=True)
class ValueRange:
    """big_vision's `value_range(vmin, vmax, in_min, in_max, clip_values)` as data: called, the pp op (on a tf
    tensor); `table`, the op's own outputs for every uint8 value of each channel, with which the extraction
    maps uint8 pixels on the device (`Encoder.put`) bit for bit as the op maps them on the host."""

    vmin: float
    vmax: float
    in_min: float | tuple[float, ...]
    in_max: float | tuple[float, ...]
    clip_values: bool

    def __call__(self, image):
        # Same order of float32 operations as the reference, so results agree to the last bit.
        lo = tf.constant(self.in_min, tf.float32)
        hi = tf.constant(self.in_max, tf.float32)
        image = (tf.cast(image, tf.float32) - lo) / (hi - lo)
        image = self.vmin + image * (self.vmax - self.vmin)
        if self.clip_values:
            image = tf.clip_by_value(image, self.vmin, self.vmax)
        return image

    def table(self, channels: int = 3):
        """[256, channels] float32: row v is the op's output for a pixel whose every channel is v."""
        pixels = tf.broadcast_to(tf.range(256, dtype=tf.int32)[:, None], (256, channels))
        return self(tf.cast(pixels, tf.uint8)).numpy()


@register("value_range")
def _value_range(vmin=-1, vmax=1, in_min=0, in_max=255.0, clip_values=False):
    """Map [in_min, in_max] (scalars or per-channel lists) linearly to [vmin, vmax], float32."""
    return ValueRange(number("vmin", vmin), number("vmax", vmax), numbers("in_min", in_min),
                      numbers("in_max", in_max), boolean("clip_values", clip_values))
