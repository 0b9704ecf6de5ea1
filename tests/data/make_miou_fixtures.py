"""Writes tests/data/miou_reference.npz / .json: ADE20k-style mIoU by DINOv3, mmsegmentation and torchmetrics.

Not part of the harness and not run by the tests. It needs, in a scratch virtualenv: torch, torchmetrics,
pandas (DINOv3's metrics module imports it), mmengine, prettytable and `mmsegmentation` installed with
`--no-deps` (mmcv is not needed by the metric), plus the DINOv3 source (not on PyPI) as a git work tree. It
holds no code of theirs; it calls three implementations on the same fixed maps:

1. DINOv3's own protocol metric, `dinov3/eval/segmentation/metrics.py`: `calculate_intersect_and_union`
   per image with `reduce_zero_label=True` (as `eval.py::evaluate_segmentation_model` hard-codes it) on the
   RAW ADE labels, then `calculate_segmentation_metrics(..., metrics=["mIoU", "dice", "fscore"])` on the
   stacked per-image areas, exactly as `evaluate_segmentation_model` calls them.
2. mmsegmentation 1.x `IoUMetric.intersect_and_union` / `IoUMetric.total_area_to_metrics`
   (`mmseg/evaluation/metrics/iou_metric.py`), on the REDUCED labels (mmseg reduces in its
   `LoadAnnotations(reduce_zero_label=True)` transform, not in the metric), summed over images as
   `IoUMetric.compute_metrics` does, and `IoUMetric.compute_metrics` itself (its rounded summary). The
   file is loaded from the installed package directly: `mmseg/__init__.py` only checks the mmcv version,
   so the script registers the package path without running it (the registry and the metric are the
   installed code, unchanged).
3. torchmetrics `JaccardIndex(task="multiclass", num_classes=150, ignore_index=255)`, updated image by
   image, `average="none"` and `"macro"`.

Inputs (seed `np.random.default_rng(0)`): 6 maps of sizes SIZES, made of blocky regions. `label_raw_<i>`
(uint8) is in the raw ADE20k annotation convention: 0 = "other" (about 1 in 8 regions), 1..150 the 150
classes, plus 255 on a padded border strip of image 2 (DINOv3's train-time pad value; at eval time it
must stay ignored). Labels use 100 of the 150 classes; predictions `pred_<i>` (int64 in 0..149, i.e.
class index = raw label - 1, the argmax of 150 logits) copy the reduced label on most regions, are
shifted by a few pixels (boundary errors), and put other classes on some regions, including 20 classes
that never occur in any label (IoU 0, counted in the mean) -- the remaining classes appear in neither
(IoU NaN, left out of the mean). Classes 0 and 149 (histc's first and last bins) occur in both.

Outputs (per-class arrays have 150 entries, NaN where the union is 0):
- `label_reduced_<i>` (uint8): DINOv3's `preprocess_nonzero_labels` of the raw label (0 -> 255, k -> k-1,
  255 stays 255): what the prediction is compared with.
- `dinov3_areas` (6, 4, 150) float32: per image [intersect, union, pred, label] areas.
- `dinov3_iou`, `dinov3_acc` (150,) float32: per-class IoU / accuracy over the whole set;
  `dinov3_summary` in the .json: mIoU, acc, aAcc, dice, fscore, precision, recall (nanmean over classes,
  fractions; `eval.py` reports them x100 rounded to 2 decimals).
- `mmseg_iou`, `mmseg_acc` (150,) float32 and `mmseg_aAcc`; `mmseg_summary` (rounded) in the .json.
- `torchmetrics_iou` (150,) float32 (0, not NaN, where the union is 0: its zero_division) and
  `torchmetrics_miou` (scalar; macro leaves out classes with an empty union).
The script asserts that the three agree (DINOv3 and mmseg bit for bit, torchmetrics within 1e-6).

Run (in the venv of make_knn_fixtures.py, plus):
    git clone --no-checkout /work/.mirror/facebookresearch+dinov3/repo /tmp/refsrc/dinov3
    git -C /tmp/refsrc/dinov3 checkout HEAD -- dinov3
    /tmp/refvenv/bin/pip install torchmetrics pandas mmengine prettytable
    /tmp/refvenv/bin/pip install --no-deps mmsegmentation
    /tmp/refvenv/bin/python tests/data/make_miou_fixtures.py --dinov3 /tmp/refsrc/dinov3
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import types
from typing import Any

import numpy as np

NUM_CLASSES = 150
IGNORE = 255
SIZES = ((37, 53), (48, 64), (29, 41), (64, 48), (53, 37), (40, 40))
BLOCK = 6  # region size in pixels
PADDED_IMAGE, PAD_ROWS = 2, 5


def make_maps(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, list[int]]]:
    """Raw ADE labels (uint8, 0..150 and 255) and predictions (int64, 0..149)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(NUM_CLASSES)
    in_labels = np.concatenate([[0, NUM_CLASSES - 1], classes[~np.isin(classes, [0, NUM_CLASSES - 1])][:98]])
    rest = classes[~np.isin(classes, in_labels)]
    pred_only = rest[:20]

    def blocks(h: int, w: int, values: np.ndarray) -> np.ndarray:
        grid = rng.choice(values, (-(-h // BLOCK), -(-w // BLOCK)))
        return np.kron(grid, np.ones((BLOCK, BLOCK), grid.dtype))[:h, :w]

    labels, preds = [], []
    for i, (h, w) in enumerate(SIZES):
        reduced = blocks(h, w, in_labels)                          # 0..149
        raw = (reduced + 1).astype(np.uint8)                        # 1..150
        raw[blocks(h, w, np.arange(8)) == 0] = 0                    # "other" regions
        if i == PADDED_IMAGE:
            raw[-PAD_ROWS:, :] = IGNORE                             # a padded strip
        pred = np.roll(reduced, shift=(1, 2), axis=(0, 1))          # boundary errors
        wrong = blocks(h, w, np.arange(4)) == 0                     # about 1 region in 4 mislabelled
        pred = np.where(wrong, blocks(h, w, np.concatenate([in_labels, pred_only])), pred)
        labels.append(raw)
        preds.append(pred.astype(np.int64))
    used = {"label_classes": sorted(int(c) for c in in_labels), "pred_only_classes": sorted(int(c) for c in pred_only)}
    return labels, preds, used


def load_mmseg_iou_metric() -> Any:
    """mmseg's IoUMetric from the installed package, without running mmseg/__init__.py (mmcv check)."""
    spec = importlib.util.find_spec("mmseg")
    package = types.ModuleType("mmseg")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["mmseg"] = package
    path = os.path.join(package.__path__[0], "evaluation", "metrics", "iou_metric.py")
    module_spec = importlib.util.spec_from_file_location("mmseg.evaluation.metrics.iou_metric", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.IoUMetric


def git_head(path: str) -> str:
    return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--dinov3", required=True, help="git work tree of facebookresearch/dinov3")
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.dinov3))

    import torch
    from dinov3.eval.segmentation.metrics import (
        calculate_intersect_and_union, calculate_segmentation_metrics, preprocess_nonzero_labels)

    labels, preds, used = make_maps()
    arrays: dict[str, np.ndarray] = {}

    # 1. DINOv3, as eval.py::evaluate_segmentation_model calls it (pred is (1, H, W), gt (1, H, W)).
    per_image, reduced = [], []
    for i, (raw, pred) in enumerate(zip(labels, preds)):
        gt = torch.from_numpy(raw.astype(np.int64))[None]
        per_image.append(calculate_intersect_and_union(torch.from_numpy(pred)[None], gt,
                                                       num_classes=NUM_CLASSES, reduce_zero_label=True))
        reduced.append(preprocess_nonzero_labels(gt, ignore_index=IGNORE)[0].numpy().astype(np.uint8))
        arrays[f"label_raw_{i}"] = raw
        arrays[f"pred_{i}"] = pred
        arrays[f"label_reduced_{i}"] = reduced[-1]
    stacked = torch.stack(per_image)
    summary = calculate_segmentation_metrics(stacked, metrics=["mIoU", "dice", "fscore"])
    areas = stacked.sum(0)
    from dinov3.eval.segmentation.metrics import total_area_to_metrics as dinov3_total
    per_class = dinov3_total(*areas, metrics=["mIoU"])
    arrays["dinov3_areas"] = stacked.numpy()
    arrays["dinov3_iou"] = per_class["mIoU"].numpy()
    arrays["dinov3_acc"] = per_class["acc"].numpy()

    # 2. mmsegmentation 1.x, on the reduced labels.
    IoUMetric = load_mmseg_iou_metric()
    results = [IoUMetric.intersect_and_union(torch.from_numpy(p), torch.from_numpy(r.astype(np.int64)),
                                             NUM_CLASSES, IGNORE) for p, r in zip(preds, reduced)]
    totals = [sum(x) for x in zip(*results)]
    mm = IoUMetric.total_area_to_metrics(*totals, ["mIoU"])
    arrays["mmseg_iou"], arrays["mmseg_acc"] = mm["IoU"], mm["Acc"]
    arrays["mmseg_aAcc"] = np.asarray(mm["aAcc"])
    metric = IoUMetric(ignore_index=IGNORE, iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": [f"class{c}" for c in range(NUM_CLASSES)]}
    mm_summary = {k: float(v) for k, v in metric.compute_metrics(results).items()}

    # 3. torchmetrics.
    from torchmetrics.classification import MulticlassJaccardIndex
    tm_none = MulticlassJaccardIndex(num_classes=NUM_CLASSES, ignore_index=IGNORE, average="none")
    tm_macro = MulticlassJaccardIndex(num_classes=NUM_CLASSES, ignore_index=IGNORE, average="macro")
    for p, r in zip(preds, reduced):
        target = torch.from_numpy(r.astype(np.int64))
        tm_none.update(torch.from_numpy(p), target)
        tm_macro.update(torch.from_numpy(p), target)
    arrays["torchmetrics_iou"] = tm_none.compute().numpy()
    arrays["torchmetrics_miou"] = np.asarray(tm_macro.compute().numpy())

    # The three agree.
    union = areas[1].numpy()
    assert np.array_equal(arrays["dinov3_iou"], arrays["mmseg_iou"], equal_nan=True)
    assert np.array_equal(arrays["dinov3_acc"], arrays["mmseg_acc"], equal_nan=True)
    assert float(summary["aAcc"]) == float(arrays["mmseg_aAcc"])
    assert np.allclose(np.nan_to_num(arrays["dinov3_iou"]), arrays["torchmetrics_iou"], atol=1e-6)
    assert abs(float(summary["mIoU"]) - float(arrays["torchmetrics_miou"])) < 1e-6
    assert abs(float(summary["mIoU"]) * 100 - mm_summary["mIoU"]) <= 0.005 + 1e-6, (summary, mm_summary)
    n_nan = int(np.isnan(arrays["dinov3_iou"]).sum())
    n_zero = int(((union > 0) & (arrays["dinov3_iou"] == 0)).sum())
    assert n_nan > 0 and n_zero > 0, (n_nan, n_zero)

    meta: dict[str, Any] = {
        "num_classes": NUM_CLASSES, "ignore_index": IGNORE, "sizes": [list(s) for s in SIZES],
        "block": BLOCK, "padded_image": PADDED_IMAGE, "pad_rows": PAD_ROWS, "seed": "np.random.default_rng(0)",
        **used,
        "dinov3_summary": {k: float(v) for k, v in summary.items()},
        "mmseg_summary": mm_summary,
        "torchmetrics_miou": float(arrays["torchmetrics_miou"]),
        "classes_with_nan_iou": n_nan, "classes_with_zero_iou": n_zero,
        "mean_of_all_150_with_nan_as_0": float(np.nan_to_num(arrays["dinov3_iou"]).mean()),
        "pixels_ignored": int(sum((r == IGNORE).sum() for r in reduced)),
        "pixels_total": int(sum(r.size for r in reduced)),
        "dinov3_commit": git_head(args.dinov3),
        "versions": {p: importlib.metadata.version(p) for p in
                     ("torch", "torchmetrics", "mmsegmentation", "mmengine", "numpy", "pandas")},
    }
    meta["arrays"] = {k: [list(v.shape), str(v.dtype)] for k, v in sorted(arrays.items())}
    np.savez_compressed(os.path.join(args.out, "miou_reference.npz"), **arrays)
    with open(os.path.join(args.out, "miou_reference.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps({k: meta[k] for k in ("dinov3_summary", "mmseg_summary", "torchmetrics_miou",
                                           "classes_with_nan_iou", "classes_with_zero_iou",
                                           "mean_of_all_150_with_nan_as_0")}, indent=1))


if __name__ == "__main__":
    main()
