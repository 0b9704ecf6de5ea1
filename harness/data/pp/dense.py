"""Dense-target ops: an image and its per-pixel target (a segmentation mask or a depth map, named by
`label=`) moved together. DINOv3's linear-probe augmentations (`dinov3/eval/segmentation/transforms.py`,
`dinov3/eval/depth/transforms.py`) and big_vision's NYU evaluation crop (`pp/proj/uvim/pp_ops.py`).

Random ops draw from stateless tf.random seeded per example (`harness.data.pp`), so a training stream is a
function of its seed; the distributions are DINOv3's (which draws from numpy's global state). Images are
resized with TensorFlow's bilinear filter with antialias (PIL's bilinear, which DINOv3 resizes with, also
widens its filter when shrinking; the two are not bit-identical) and cast back to uint8; masks and depth
with torch's nearest rule (source index floor(i * in / out)), as DINOv3's label resize.
"""

from __future__ import annotations

from harness.data.pp.registry import (
    ArgError,
    number,
    positive_int,
    register,
    size_pair,
    string,
)
from harness.tf_import import tf

IGNORE = 255


def _pair(name, value, low=None):
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ArgError(f"{name} must be a pair (low, high); got {value!r}")
    lo, hi = number(name, value[0]), number(name, value[1])
    if lo > hi or (low is not None and lo < low):
        raise ArgError(f"{name} must be a pair low <= high" + (f", low >= {low}" if low is not None else "")
                       + f"; got {value!r}")
    return lo, hi


def _uniform(seed, lo, hi, shape=()):
    return tf.random.stateless_uniform(shape, seed, minval=lo, maxval=hi, dtype=tf.float32)


def _seeds(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _with_channel(x):
    """A 2-D map as [H, W, 1] (and how to undo it): the ops below treat masks and depth maps as images."""
    if x.shape.rank == 2:
        return x[..., None], lambda y: y[..., 0]
    return x, lambda y: y


def _resize_image(image, size_hw):
    dtype = image.dtype
    out = tf.image.resize(image, size_hw, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(out, dtype.min, dtype.max), dtype) if dtype.is_integer else tf.cast(out, dtype)


def resize_label_nearest(label, size_hw):
    """torch's F.interpolate(mode="nearest"): output pixel i reads input floor(i * in / out) (float32 scale)."""
    label, undo = _with_channel(label)
    shape = tf.shape(label)

    def index(n_in, n_out):
        scale = tf.cast(n_in, tf.float32) / tf.cast(n_out, tf.float32)
        idx = tf.cast(tf.floor(tf.cast(tf.range(n_out), tf.float32) * scale), tf.int32)
        return tf.minimum(idx, n_in - 1)

    out = tf.gather(tf.gather(label, index(shape[0], size_hw[0]), axis=0), index(shape[1], size_hw[1]), axis=1)
    return undo(out)


def _short_side_size(shape, short):
    """DINOv3's FixedSideResize: the shorter side becomes `short`, the other int(short * long / short_in + 0.5)."""
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    short = tf.cast(short, tf.float64)
    long_h = tf.cast(tf.floor(short * h / w + 0.5), tf.int32)
    long_w = tf.cast(tf.floor(short * w / h + 0.5), tf.int32)
    s = tf.cast(short, tf.int32)
    return tf.where(h > w, tf.stack([long_h, s]), tf.stack([s, long_w]))


def _resize_short(data, short, label):
    data = dict(data)
    size = _short_side_size(tf.shape(data["image"]), short)
    data["image"] = _resize_image(data["image"], size)
    if label:
        data[label] = resize_label_nearest(data[label], size)
    return data


@register("resize_short", keyed=False)
def _resize_short_op(size, label=""):
    """The image's shorter side to `size` (DINOv3's eval FixedSideResize: long side int(size * ratio + 0.5));
    `label`: that target too (nearest), "" leaves it (DINOv3's sliding-window eval keeps the label)."""
    size = positive_int("size", size)
    label = string("label", label)
    return lambda data: _resize_short(data, size, label)


@register("random_resize_short", keyed=False, random=True)
def _random_resize_short(size, ratio=(0.5, 2.0), label="segmentation"):
    """The shorter side to int(size * r), r ~ U[ratio), image and `label` together (DINOv3's train resize:
    img_size 512, random_img_size_ratio_range [0.5, 2.0])."""
    size = positive_int("size", size)
    lo, hi = _pair("ratio", ratio, low=0)
    label = string("label", label)

    def fn(data, seed):
        short = tf.floor(tf.cast(size, tf.float32) * _uniform(seed, lo, hi))
        return _resize_short(data, tf.maximum(short, 1.0), label)

    return fn


@register("reduce_zero_label", keyed=False)
def _reduce_zero_label(label="segmentation", ignore=IGNORE):
    """ADE20k's raw labels -> class ids: 0 ("other") and `ignore` -> `ignore`, k -> k - 1 (DINOv3's
    ReduceZeroLabel, mmseg's reduce_zero_label)."""
    label = string("label", label)
    ignore = positive_int("ignore", ignore)

    def fn(data):
        data = dict(data)
        raw = tf.cast(data[label], tf.int32)
        out = tf.where((raw == 0) | (raw == ignore), ignore, raw - 1)
        data[label] = tf.cast(out, data[label].dtype)
        return data

    return fn


def _crop_box_ok(label, y, x, ch, cw, cat_max_ratio, ignore):
    """DINOv3's RandomCropWithLabel test: more than one class in the crop and none over `cat_max_ratio` of
    its non-ignored pixels."""
    crop = tf.reshape(label[y:y + ch, x:x + cw], [-1])
    crop = tf.cast(tf.boolean_mask(crop, tf.not_equal(tf.cast(crop, tf.int32), ignore)), tf.int32)
    counts = tf.math.bincount(crop, minlength=256)
    total = tf.reduce_sum(counts)
    return tf.logical_and(tf.math.count_nonzero(counts) > 1,
                          tf.cast(tf.reduce_max(counts), tf.float32)
                          < cat_max_ratio * tf.cast(tf.maximum(total, 1), tf.float32))


@register("random_crop_cat", keyed=False, random=True)
def _random_crop_cat(crop_size, cat_max_ratio=0.75, label="segmentation", ignore=IGNORE):
    """A random crop of at most `crop_size` (smaller images stay whole on that side) of the image and
    `label`; with `cat_max_ratio` < 1 a crop where one class covers `cat_max_ratio` or more of the non-ignored
    pixels (or only one class is present) is redrawn, up to 10 times, the 11th draw kept unchecked (DINOv3's
    RandomCropWithLabel, cat_max_ratio 0.75; 1.0 = a plain random crop, as the depth protocol's)."""
    ch, cw = size_pair("crop_size", crop_size)
    cat_max_ratio = number("cat_max_ratio", cat_max_ratio)
    label = string("label", label)
    ignore = positive_int("ignore", ignore)

    def fn(data, seed):
        data = dict(data)
        lab, undo = _with_channel(data[label])
        shape = tf.shape(data["image"])
        h_crop, w_crop = tf.minimum(ch, shape[0]), tf.minimum(cw, shape[1])
        sy, sx = _seeds(seed, 2)
        ys = tf.random.stateless_uniform([11], sy, minval=0, maxval=shape[0] - h_crop + 1, dtype=tf.int32)
        xs = tf.random.stateless_uniform([11], sx, minval=0, maxval=shape[1] - w_crop + 1, dtype=tf.int32)
        pick = tf.constant(0)
        if cat_max_ratio < 1.0:
            oks = tf.stack([_crop_box_ok(lab[..., 0], ys[i], xs[i], h_crop, w_crop, cat_max_ratio, ignore)
                            for i in range(10)] + [tf.constant(True)])
            pick = tf.cast(tf.argmax(tf.cast(oks, tf.int32)), tf.int32)
        y, x = ys[pick], xs[pick]
        data["image"] = data["image"][y:y + h_crop, x:x + w_crop]
        data[label] = undo(lab[y:y + h_crop, x:x + w_crop])
        return data

    return fn


@register("random_flip_lr", keyed=False, random=True)
def _random_flip_lr(label="segmentation"):
    """Flips the image and `label` left-right together with probability 1/2."""
    label = string("label", label)

    def fn(data, seed):
        data = dict(data)
        flip = _uniform(seed, 0.0, 1.0) < 0.5
        lab, undo = _with_channel(data[label])
        data["image"] = tf.cond(flip, lambda: tf.reverse(data["image"], [1]), lambda: data["image"])
        data[label] = undo(tf.cond(flip, lambda: tf.reverse(lab, [1]), lambda: lab))
        return data

    return fn


@register("photometric_distortion", random=True)
def _photometric_distortion(brightness_delta=32, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=0.5):
    """DINOv3's PhotoMetricDistortion on a uint8 image, each step with probability 1/2: brightness + U(-delta,
    delta), then contrast x U(contrast) either first or last (a coin), saturation (blend with the ITU-R 601
    grey, torchvision's adjust_saturation), hue shift U(-hue, hue) of the colour wheel; each step truncates
    back to uint8 as theirs. Returns float32 0..255."""
    brightness_delta = number("brightness_delta", brightness_delta)
    c_lo, c_hi = _pair("contrast", contrast, low=0)
    s_lo, s_hi = _pair("saturation", saturation, low=0)
    hue = number("hue", hue)
    if not 0 <= hue <= 0.5:
        raise ArgError(f"hue must be in [0, 0.5]; got {hue}")

    def to_u8(x):
        return tf.floor(tf.clip_by_value(x, 0.0, 255.0))

    def fn(image, seed):
        s = _seeds(seed, 10)
        x = tf.cast(image, tf.float32)

        def maybe(key, op, x):
            return tf.cond(_uniform(key, 0.0, 1.0) < 0.5, lambda: op(x), lambda: x)

        def contrast_op(x):
            return to_u8(x * _uniform(s[3], c_lo, c_hi))

        def saturation_op(x):
            grey = tf.floor(0.2989 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3])
            f = _uniform(s[5], s_lo, s_hi)
            return to_u8(f * x + (1.0 - f) * grey)

        def hue_op(x):
            shifted = tf.image.adjust_hue(x / 255.0, _uniform(s[7], -hue, hue))
            return tf.floor(tf.clip_by_value(shifted, 0.0, 1.0) * (256.0 - 1e-3))

        x = maybe(s[0], lambda x: to_u8(x + _uniform(s[1], -brightness_delta, brightness_delta)), x)
        contrast_first = _uniform(s[8], 0.0, 1.0) < 0.5
        x = tf.cond(contrast_first, lambda: maybe(s[2], contrast_op, x), lambda: x)
        x = maybe(s[4], saturation_op, x)
        x = maybe(s[6], hue_op, x)
        return tf.cond(contrast_first, lambda: x, lambda: maybe(s[2], contrast_op, x))

    return fn


@register("pad_to", keyed=False)
def _pad_to(size, label="segmentation", image_value=0.0, label_value=IGNORE):
    """Pads the image and `label` at the bottom and right to `size` (DINOv3's PadTensor after the crop: image
    0 after normalisation, label 255 = ignored)."""
    h, w = size_pair("size", size)
    label = string("label", label)
    image_value = number("image_value", image_value)
    label_value = number("label_value", label_value)

    def pad(x, value):
        x, undo = _with_channel(x)
        shape = tf.shape(x)
        out = tf.pad(x, [[0, h - shape[0]], [0, w - shape[1]], [0, 0]], constant_values=tf.cast(value, x.dtype))
        out.set_shape([h, w, x.shape[-1]])
        return undo(out)

    def fn(data):
        data = dict(data)
        data["image"] = pad(data["image"], image_value)
        data[label] = pad(data[label], label_value)
        return data

    return fn


# big_vision pp/proj/uvim/pp_ops.py `nyu_eval_crop` (rows 54..479, columns 41..600); DINOv3's NYUCrop box
# (x1, y1, x2, y2) = (43, 45, 608, 472) for training (dinov3/eval/depth/transforms.py).
NYU_EVAL_BOX = (54, 480, 41, 601)
NYU_TRAIN_BOX = (45, 472, 43, 608)


def _crop_fixed(box, label):
    y1, y2, x1, x2 = box

    def fn(data):
        data = dict(data)
        tf.debugging.assert_equal(tf.shape(data["image"])[:2], [480, 640],
                                  message="the NYU crops take 480x640 images")
        data["image"] = data["image"][y1:y2, x1:x2]
        data[label] = data[label][y1:y2, x1:x2]
        return data

    return fn


@register("nyu_eval_crop", keyed=False)
def _nyu_eval_crop(label="depth"):
    """big_vision's NYU evaluation crop of the 480x640 image and `label`: rows 54..479, columns 41..600."""
    return _crop_fixed(NYU_EVAL_BOX, string("label", label))


@register("nyu_train_crop", keyed=False)
def _nyu_train_crop(label="depth"):
    """DINOv3's NYU training crop of the 480x640 image and `label`: rows 45..471, columns 43..607."""
    return _crop_fixed(NYU_TRAIN_BOX, string("label", label))


@register("random_rotate", keyed=False, random=True)
def _random_rotate(degrees=2.5, prob=0.5, label="depth"):
    """With probability `prob`, rotates the image (bilinear) and `label` (nearest) by U(-degrees, degrees)
    about the centre, corners filled with 0 (DINOv3's depth MaybeApply(RandomRotation(2.5)), 0 = no depth)."""
    degrees = number("degrees", degrees)
    prob = number("prob", prob)
    label = string("label", label)

    def rotate(x, angle, interpolation):
        x, undo = _with_channel(x)
        shape = tf.shape(x)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        cos, sin = tf.cos(angle), tf.sin(angle)
        cx, cy = (w - 1) / 2, (h - 1) / 2
        # Output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2): a rotation about the centre.
        transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(x, tf.float32)[None], transforms=transform[None], output_shape=shape[:2],
            fill_value=0.0, interpolation=interpolation, fill_mode="CONSTANT")[0]
        return undo(tf.cast(tf.round(out) if x.dtype.is_integer else out, x.dtype))

    def fn(data, seed):
        data = dict(data)
        s = _seeds(seed, 2)
        angle = _uniform(s[1], -degrees, degrees) * (3.141592653589793 / 180.0)
        apply = _uniform(s[0], 0.0, 1.0) < prob
        data["image"] = tf.cond(apply, lambda: rotate(data["image"], angle, "BILINEAR"), lambda: data["image"])
        data[label] = tf.cond(apply, lambda: rotate(data[label], angle, "NEAREST"), lambda: data[label])
        return data

    return fn


@register("color_aug", random=True)
def _color_aug(prob=0.5, gamma=(0.9, 1.1), brightness=(0.75, 1.25), colour=(0.9, 1.1)):
    """With probability `prob`: image (0..255) ** U(gamma), x U(brightness), each channel x U(colour), clipped
    to 0..255 (DINOv3's depth ColorAug, its NYU config's brightness_range [0.75, 1.25]). Float32 out."""
    prob = number("prob", prob)
    gamma, brightness, colour = (_pair(n, v, low=0) for n, v in
                                 (("gamma", gamma), ("brightness", brightness), ("colour", colour)))

    def fn(image, seed):
        s = _seeds(seed, 4)
        x = tf.cast(image, tf.float32)

        def aug(x):
            x = tf.pow(x, _uniform(s[1], *gamma)) * _uniform(s[2], *brightness)
            return tf.clip_by_value(x * _uniform(s[3], colour[0], colour[1], shape=(3,)), 0.0, 255.0)

        return tf.cond(_uniform(s[0], 0.0, 1.0) < prob, lambda: aug(x), lambda: x)

    return fn
