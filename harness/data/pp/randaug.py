"""RandAugment (Cubuk et al. 2019), as big_vision's `randaug` op (its pp/autoaugment.py, a fork of the
TF EfficientNet reference) computes it, because the paper's fine-tunes at 384/518 px used that op.

TensorFlow is `harness.tf_import.tf`, imported when an op first runs (see `harness.data.pp` for why).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from harness.data.pp.registry import ArgError, is_int, number, register
from harness.errors import HarnessError
from harness.tf_import import tf

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
    shift = tf.constant((8 - bits) % 256, image.dtype)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _solarize(image, threshold: int):
    """Invert the pixels at or above `threshold` (an int in 0..255)."""
    return tf.where(image < tf.constant(threshold, image.dtype), image, 255 - image)


def _solarize_add(image, addition: int, threshold: int = 128):
    """Add `addition` (clipped to 0..255) to the pixels below `threshold`."""
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(image < threshold, added, image)


def _grey_rgb(image):
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _color(image, factor: float):
    return _blend(_grey_rgb(image), image, factor)


def _contrast(image, factor: float):
    # The reference's grey level: its histogram's total count / 256 = H * W / 256 (see the section
    # comment), clipped to 255 and truncated.
    shape = tf.shape(image)
    grey = tf.clip_by_value(tf.cast(shape[0] * shape[1], tf.float32) / 256.0, 0.0, 255.0)
    degenerate = tf.cast(tf.fill(tf.shape(image), grey), tf.uint8)
    return _blend(degenerate, image, factor)


def _brightness(image, factor: float):
    return _blend(tf.zeros_like(image), image, factor)


def _sharpness(image, factor: float):
    """Blend with PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) applied to the interior pixels;
    the one-pixel border keeps the original values."""
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
    shape = tf.shape(image)
    row = tf.concat([tf.cast(tf.stack(transform), tf.float32), tf.zeros([2], tf.float32)], 0)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=row[None], output_shape=shape[:2],
        fill_value=float(_RANDAUG_FILL), interpolation="NEAREST", fill_mode="CONSTANT")[0]
    out.set_shape(image.shape)
    return out


def _rotate(image, degrees):
    """Rotate about the image centre by `degrees` (positive: counter-clockwise as displayed)."""
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
    shape = tf.shape(image)
    rows = tf.range(shape[0])[:, None]
    cols = tf.range(shape[1])[None, :]
    inside = ((rows >= center_y - pad_size) & (rows < center_y + pad_size)
              & (cols >= center_x - pad_size) & (cols < center_x + pad_size))
    return tf.where(inside[:, :, None], tf.constant(_RANDAUG_FILL, image.dtype), image)


def _random_sign(value, seed):
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    return tf.where(flip, -tf.constant(value, tf.float32), tf.constant(value, tf.float32))


def _enhance_factor(magnitude: float) -> float:
    return magnitude / _MAX_LEVEL * 1.8 + 0.1


def _cutout_op(image, magnitude, seed):
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


@register("randaug", random=True)
def _randaug(num_layers=2, magnitude=10, prob=1.0):
    """RandAugment: `num_layers` times, one of the 16 ops of RANDAUG_OPS drawn uniformly, at the shared
    `magnitude` (10 = the reference's maximum; up to 30), applied with probability `prob`. uint8 RGB."""
    if not is_int(num_layers) or num_layers < 0:
        raise ArgError(f"num_layers must be an int >= 0; got {num_layers!r}")
    magnitude = number("magnitude", magnitude)
    if not 0 <= magnitude <= 30:
        raise ArgError(f"magnitude must be in [0, 30] (10 is the reference's maximum); got {magnitude}")
    prob = number("prob", prob)
    if not 0 <= prob <= 1:
        raise ArgError(f"prob must be in [0, 1]; got {prob}")
    ops = list(RANDAUG_OPS.values())

    def fn(image, seed):
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
