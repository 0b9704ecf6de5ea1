"""Dense-prediction metrics and the geometry around them, in numpy: semantic segmentation's mIoU as DINOv3 /
mmsegmentation compute it, monocular depth's RMSE / abs-rel / delta as big_vision's NYU evaluator does, the
sliding windows of DINOv3's segmentation inference, and the interpolations those protocols use.

Segmentation (`dinov3/eval/segmentation/metrics.py` = mmseg 1.x `IoUMetric`): per image, pixels labelled
`ignore_index` (255) are dropped and the intersection, prediction and label areas of every class counted
(`intersect_and_union`); the areas are summed over the whole set, then per class IoU = I / U and accuracy =
I / label; mIoU and mAcc are the means over the classes whose union (label) is not empty (NaN left out:
`nanmean`), aAcc = sum I / sum label (`segmentation_scores`). mIoU is not a mean of per-image values.
Counts are int64 here (exact); DINOv3 counts with float32 `histc`, exact below 2^24 pixels per class.
ADE20k's raw labels are 0 = "other", 1..150 the classes: `reduce_zero_label` maps 0 -> 255, k -> k - 1.

Depth (`big_vision/evaluators/proj/givt/nyu_depth.py`): per image, the prediction is resized to the ground
truth's size by nearest neighbour with half-pixel centres (`jax.image.resize(..., "nearest")`:
`resize_nearest`), the valid pixels are 1e-3 < gt < 10 (strict; gt 0 = missing falls out), predictions are
not clipped, and RMSE, abs-rel, log10, delta1..3 are computed on the valid pixels in float32
(`depth_scores`); the reported value is the mean over images. The ground truth is cropped first by
big_vision's `nyu_eval_crop` pp op, rows 54..479 and columns 41..600 of the 480x640 map (`NYU_EVAL_CROP`).
"""

from __future__ import annotations

import math

import numpy as np

from harness.errors import HarnessError

IGNORE_INDEX = 255  # dinov3 segmentation `ignore_index`; mmseg's `ignore_index` default

# big_vision pp/proj/uvim/pp_ops.py `nyu_eval_crop`: crop_h_start 54, crop_h_size 426, crop_w_start 41,
# crop_w_size 560 on 480x640 (rows 9 below Eigen's slice(45, 471), as big_vision has them).
NYU_EVAL_CROP = (54, 480, 41, 601)  # row start, row stop, column start, column stop
NYU_SIZE = (480, 640)
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0  # big_vision nyu_depth.py `min_depth`, `max_depth` (givt_nyu_depth.py)
DEPTH_METRICS = ("rmse", "abs_rel", "log10", "delta1", "delta2", "delta3")


# ------------------------------------------------------------------------------------- segmentation
def reduce_zero_label(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """ADE20k's raw annotation -> class ids: 0 ("other") and 255 -> ignore, k -> k - 1 (DINOv3's
    `preprocess_nonzero_labels`, mmseg's `LoadAnnotations(reduce_zero_label=True)`)."""
    label = np.asarray(label)
    out = label.astype(np.int64) - 1
    out[(label == 0) | (label == ignore_index)] = ignore_index
    return out.astype(label.dtype)


def intersect_and_union(pred: np.ndarray, label: np.ndarray, num_classes: int,
                        ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """One image's areas, int64 (4, num_classes): intersection, union, prediction, label, per class.
    Pixels whose label is `ignore_index` are left out; values outside 0..num_classes-1 count nowhere (as
    `histc`'s range)."""
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise HarnessError(f"segmentation: prediction {pred.shape} and label {label.shape} differ in size")
    keep = label != ignore_index
    pred, label = pred[keep].astype(np.int64), label[keep].astype(np.int64)

    def count(values):
        values = values[(values >= 0) & (values < num_classes)]
        return np.bincount(values, minlength=num_classes)[:num_classes]

    inter = count(pred[pred == label])
    area_pred, area_label = count(pred), count(label)
    return np.stack([inter, area_pred + area_label - inter, area_pred, area_label]).astype(np.int64)


def segmentation_scores(areas: np.ndarray) -> dict:
    """From areas summed over a set ((4, C), or per image (N, 4, C), summed here): per-class `iou` and `acc`
    (NaN where the union / the label is empty), `miou` and `macc` (their nanmean) and `aacc`, as fractions."""
    areas = np.asarray(areas, np.float64)
    if areas.ndim == 3:
        areas = areas.sum(0)
    inter, union, _, label = areas
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        acc = inter / label
    total = label.sum()
    return {"iou": iou, "acc": acc, "miou": _nanmean(iou), "macc": _nanmean(acc),
            "aacc": float(inter.sum() / total) if total else math.nan}


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """DINOv3's sliding windows (`dinov3/eval/segmentation/inference.py::slide_inference`), (y1, y2, x1, x2)
    each: a grid at `stride`, the last window of each axis moved back to end at the border, a window never
    larger than the image (where the image is smaller than `crop` on both sides, square windows of its
    shorter side)."""
    h_crop = w_crop = crop
    if crop > height and crop > width:
        h_crop = w_crop = min(height, width)
    rows = max(height - h_crop + stride - 1, 0) // stride + 1
    cols = max(width - w_crop + stride - 1, 0) // stride + 1
    out = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + h_crop, height), min(c * stride + w_crop, width)
            out.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return out


def slide_logits(image: np.ndarray, crop: int, stride: int, predict, num_classes: int) -> np.ndarray:
    """DINOv3's sliding-window inference of one image [H, W, 3]: `predict(windows [n, crop, crop, 3])` gives
    each window's logits at the window's size [n, crop, crop, C]; they are summed where windows overlap and
    divided by the count, float32 [H, W, C]."""
    h, w = image.shape[:2]
    boxes = slide_windows(h, w, crop, stride)
    if any(y2 - y1 != crop or x2 - x1 != crop for y1, y2, x1, x2 in boxes):
        raise HarnessError(f"segmentation: a {h}x{w} image is smaller than the {crop} px window; resize its "
                           "shorter side to the window at least")
    logits = np.asarray(predict(np.stack([image[y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])), np.float32)
    total = np.zeros((h, w, num_classes), np.float32)
    count = np.zeros((h, w, 1), np.float32)
    for (y1, y2, x1, x2), part in zip(boxes, logits):
        total[y1:y2, x1:x2] += part
        count[y1:y2, x1:x2] += 1
    return total / count


def resized_argmax(logits: np.ndarray, size: tuple[int, int], rows: int = 64) -> np.ndarray:
    """argmax over classes of `logits` [h, w, C] bilinearly resized to `size` (`resize_bilinear`), computed
    `rows` output rows at a time (a full ADE20k label size times 150 classes would not fit)."""
    r0, r1, fr = _linear_taps(logits.shape[0], size[0])
    c0, c1, fc = _linear_taps(logits.shape[1], size[1])
    fc = fc[None, :, None]
    out = np.empty(size, np.int64)
    for start in range(0, size[0], rows):
        sl = slice(start, min(start + rows, size[0]))
        f = fr[sl, None, None]
        part = logits[r0[sl]] * (1 - f) + logits[r1[sl]] * f
        out[sl] = np.argmax(part[:, c0] * (1 - fc) + part[:, c1] * fc, axis=-1)
    return out


# ----------------------------------------------------------------------------------- interpolation
def _linear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch's bilinear source taps with align_corners=False (`area_pixel_compute_source_index`): source
    coordinate (dst + 0.5) * in / out - 0.5 in float32, negative clamped to 0; taps i0 and i0 + 1 (kept
    inside), weight of i1 = frac."""
    scale = np.float32(size_in) / np.float32(size_out)
    src = np.maximum(scale * (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5),
                     np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, size_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the two leading axes of `x` (H, W, ...) to `size`, as torch's
    `F.interpolate(mode="bilinear", align_corners=False)` (no antialias, in both directions), float32."""
    x = np.asarray(x, np.float32)
    r0, r1, fr = _linear_taps(x.shape[0], size[0])
    c0, c1, fc = _linear_taps(x.shape[1], size[1])
    extra = (1,) * (x.ndim - 2)
    fr, fc = fr.reshape(-1, 1, *extra), fc.reshape(1, -1, *extra)
    rows = x[r0] * (1 - fr) + x[r1] * fr
    return rows[:, c0] * (1 - fc) + rows[:, c1] * fc


def resize_nearest(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the two leading axes with half-pixel centres: source index
    floor((i + 0.5) * in / out), as `jax.image.resize(..., "nearest")` (big_vision's NYU evaluator)."""
    x = np.asarray(x)
    rows = np.minimum(((np.arange(size[0]) + 0.5) * x.shape[0] / size[0]).astype(np.int64), x.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * x.shape[1] / size[1]).astype(np.int64), x.shape[1] - 1)
    return x[rows][:, cols]


# ------------------------------------------------------------------------------------------- depth
def nyu_eval_crop(depth: np.ndarray) -> np.ndarray:
    """big_vision's `nyu_eval_crop` of a 480x640 map: rows 54..479, columns 41..600 (426 x 560)."""
    depth = np.asarray(depth)
    if depth.shape[:2] != NYU_SIZE:
        raise HarnessError(f"nyu_eval_crop: expected a 480x640 map, got {depth.shape[:2]}")
    r0, r1, c0, c1 = NYU_EVAL_CROP
    return depth[r0:r1, c0:c1]


def depth_scores(gt: np.ndarray, pred: np.ndarray, *, min_depth: float = MIN_DEPTH,
                 max_depth: float = MAX_DEPTH) -> dict[str, float]:
    """One image's metrics (DEPTH_METRICS) as big_vision's evaluator computes them: `pred` (any size, metres)
    resized nearest to `gt`'s size, valid = min_depth < gt < max_depth, no clipping of the prediction, float32.
    An image without a valid pixel gives NaN, as big_vision's (whose mean is then NaN)."""
    gt = np.asarray(gt, np.float32)
    pred = resize_nearest(np.asarray(pred, np.float32), gt.shape[:2])
    if pred.shape != gt.shape:
        raise HarnessError(f"depth: prediction {pred.shape} and ground truth {gt.shape} differ in channels")
    valid = (gt > min_depth) & (gt < max_depth)
    g, p = gt[valid], pred[valid]
    if not g.size:
        return {name: math.nan for name in DEPTH_METRICS}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(g / p, p / g)
        out = {"rmse": float(np.sqrt(np.mean(np.power(g - p, 2)))), "abs_rel": float(np.mean(np.abs(g - p) / g)),
               "log10": float(np.mean(np.abs(np.log10(g) - np.log10(p))))}
    for order in (1, 2, 3):
        out[f"delta{order}"] = float(np.sum(ratio < 1.25 ** order) / ratio.size)
    return out
