"""Writes tests/data/nyu_depth_reference.npz / .json: big_vision's NYU-depth eval crop and metrics on fixed maps.

Not part of the harness and not run by the tests. It needs big_vision (not on PyPI) on PYTHONPATH and a
scratch virtualenv with jax, flax, tensorflow-cpu, ml_collections, einops, absl-py (the bv_vit/ venv of
tests/data/README.md). It holds no big_vision code; it runs, on fixed depth maps:

1. big_vision's eval-time preprocessing of `configs/proj/givt/givt_nyu_depth.py` (`pp_predict`), the part
   that touches the ground truth: `nyu_depth|nyu_eval_crop|copy("labels","ground_truth")` through
   `pp_builder.get_preprocess_fn` (ops of `pp/proj/uvim/pp_ops.py`), on the raw 480x640 float16 `depth`
   feature of TFDS `nyu_depth_v2` (a zero RGB image rides along: the op asserts both shapes).
2. `evaluators/proj/givt/nyu_depth.py::Evaluator.run` itself, on the cropped ground truths and fixed
   predictions. The evaluator is made with `object.__new__` (its `__init__` builds a TFDS pipeline) and
   given what `__init__` would set: `predict_fn` = the module's own `_get_predict_fn(<model fn>, mesh)`
   (the model fn returns {"depth": batch["pred"]}), `data_iter` = the fixed batches (with `_mask`, as
   big_vision's input pipeline pads them), `steps`, `min_depth` = 1e-3, `max_depth` = 10 (the
   evaluator's defaults and givt_nyu_depth.py's MIN_DEPTH / MAX_DEPTH). `run` calls `jax.tree_map`, which
   jax removed in 0.6; the script sets `jax.tree_map = jax.tree.map` (the same function under its new
   name) and changes nothing else.

Inputs (seed `np.random.default_rng(0)`):
- `depth_raw` (4, 480, 640) float16: the TFDS `depth` feature's dtype and size, in metres. Blocky (8x8
  blocks) with a column ramp, multiples of 1/64 m in [0.5, 9.5], plus blocks that the evaluator must
  leave out: 0 (missing depth in NYU), exactly 10.0 and 12.0 (>= max_depth 10), 2**-10 (< min_depth 1e-3);
  rows 0..53 and the side columns (outside big_vision's crop) hold different depths, so a wrong crop
  changes every metric.
- `pred_<i>`: the model's depth predictions. `pred_0`, `pred_1` (426, 560) at the cropped label size
  (stored float16, fed as float32); `pred_2` (120, 160) and `pred_3` (100, 137) float32, which `run`
  resizes to 426x560 with its `_resize_nearest` (jax.image.resize "nearest"). Predictions are positive
  and include values above 10 m and below 1e-3 m: big_vision does not clip predictions.
- Batches fed to `run`: [0, 1, pad] (the pad example has `_mask` False and garbage, and must be
  skipped), [2], [3].

Outputs:
- `crop_rows`, `crop_cols` (int32): the source rows / columns of the raw map that `nyu_eval_crop` kept
  (found by cropping a float32 index map with the same op): rows 54..479, columns 41..600.
- `ground_truth` (4, 426, 560) float16: the cropped maps (exactly `depth_raw[:, crop_rows][:, :, crop_cols]`,
  checked; stored float16 since they are float16 values).
- `resize_rows_<i>`, `resize_cols_<i>` (int32) for i = 2, 3: the source row / column of each of the 426 /
  560 output pixels in `_resize_nearest` (found by resizing index maps with the module's own function).
- `metrics` (6,) float64 in METRIC_NAMES order: what `run` yields over the 4 examples (per-image metrics,
  then the mean over images); `per_image` (4, 6) float64: `run` on each example alone; `valid_pixels` (4,).
nyu_depth_reference.json: the same numbers by name, shapes, the crop and versions.

Run (the same packages as the bv_vit/ venv of tests/data/README.md):
    python3 -m venv /tmp/bvvenv
    /tmp/bvvenv/bin/pip install jax==0.10.2 jaxlib flax==0.12.8 'tensorflow-cpu==2.21.*' absl-py ml_dtypes \
        scipy einops ml_collections
    git clone /work/.mirror/google-research+big_vision/repo /tmp/bv/big_vision
    PYTHONPATH=/tmp/bv/big_vision JAX_PLATFORMS=cpu /tmp/bvvenv/bin/python \
        tests/data/make_nyu_depth_fixtures.py --big_vision /tmp/bv/big_vision
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Any

import numpy as np

MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0
METRIC_NAMES = ("RMSE", "abs_RE", "log10", "delta1", "delta2", "delta3")
RAW_HW = (480, 640)
PRED_SIZES = ((426, 560), (426, 560), (120, 160), (100, 137))
BLOCK = 8
PP = 'nyu_depth|nyu_eval_crop|copy("labels","ground_truth")'


def make_depths(rng: np.random.Generator) -> np.ndarray:
    """Raw (N, 480, 640) float16 depth maps with out-of-range and missing blocks."""
    n = len(PRED_SIZES)
    h, w = RAW_HW
    gh, gw = h // BLOCK, w // BLOCK
    maps = []
    for _ in range(n):
        blocks = rng.integers(32, 9 * 64, (gh, gw)) / 64.0                     # 0.5 .. 9 m
        special = rng.random((gh, gw))
        blocks[special < 0.04] = 0.0                                            # missing
        blocks[(special >= 0.04) & (special < 0.06)] = 10.0                     # == max: left out
        blocks[(special >= 0.06) & (special < 0.08)] = 12.0                     # > max
        blocks[(special >= 0.08) & (special < 0.10)] = 2.0 ** -10               # < min
        blocks[:7, :] = rng.integers(32, 9 * 64, (7, gw)) / 64.0 + 0.25         # rows 0..55: near crop edge
        depth = np.kron(blocks, np.ones((BLOCK, BLOCK)))
        ramp = np.floor(np.arange(w) / 40.0) / 64.0                             # 0 .. 15/64 m across
        regular = (depth > 0.01) & (depth < 9.9)
        depth = np.where(regular, depth + ramp[None, :], depth)
        maps.append(depth.astype(np.float16))
    return np.stack(maps)


def make_preds(rng: np.random.Generator, gt: np.ndarray) -> list[np.ndarray]:
    """Per-example predictions: near the gt for 0/1, smooth low-resolution fields for 2/3."""
    preds = []
    for i, (ph, pw) in enumerate(PRED_SIZES):
        if (ph, pw) == gt.shape[1:]:
            base = np.where(gt[i] > 0.01, gt[i].astype(np.float32), 3.0)
            factor = np.kron(rng.uniform(0.7, 1.4, (-(-ph // 6), -(-pw // 6))), np.ones((6, 6)))[:ph, :pw]
            pred = np.clip(base * factor, 0.05, 14.0)
            pred[rng.random((ph, pw)) < 0.01] = 11.5                            # above max_depth
            pred[rng.random((ph, pw)) < 0.01] = 2.0 ** -11                      # below min_depth
            preds.append(pred.astype(np.float16).astype(np.float32))
        else:
            yy, xx = np.meshgrid(np.linspace(0, 1, ph), np.linspace(0, 1, pw), indexing="ij")
            pred = 1.0 + 7.0 * (0.5 + 0.5 * np.sin(3 * xx + 2 * yy + i)) + rng.uniform(-0.3, 0.3, (ph, pw))
            pred[rng.random((ph, pw)) < 0.02] = 10.5
            preds.append(pred.astype(np.float32))
    return preds


def crop_with_big_vision(depth: np.ndarray) -> np.ndarray:
    """big_vision's pp on one raw map: returns `ground_truth` (426, 560, 1) float32."""
    import tensorflow as tf
    import big_vision.pp.builder as pp_builder
    import big_vision.pp.ops_general  # noqa: F401  (registers copy)
    import big_vision.pp.proj.uvim.pp_ops  # noqa: F401  (registers nyu_depth / nyu_eval_crop)

    fn = pp_builder.get_preprocess_fn(PP, log_data=False)
    out = fn({"image": tf.zeros((*RAW_HW, 3), tf.uint8), "depth": tf.constant(depth)})
    return out["ground_truth"].numpy()


def run_evaluator(batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """big_vision's `Evaluator.run` over `batches` (pre-made, as its input pipeline would give them)."""
    import jax
    from big_vision.evaluators.proj.givt import nyu_depth

    if not hasattr(jax, "tree_map"):
        jax.tree_map = jax.tree.map  # removed in jax 0.6; `run` still calls it

    def model_predict_fn(train_state, batch):
        del train_state
        return {"depth": batch["pred"]}

    evaluator = object.__new__(nyu_depth.Evaluator)
    evaluator.min_depth, evaluator.max_depth = MIN_DEPTH, MAX_DEPTH
    evaluator.predict_fn = nyu_depth._get_predict_fn(
        model_predict_fn, jax.sharding.Mesh(jax.devices(), ("devices",)))
    evaluator.data_iter = iter(batches)
    evaluator.steps = len(batches)
    return {name: float(value) for name, value in evaluator.run(train_state={})}


def batch(gts: list[np.ndarray], preds: list[np.ndarray], mask: list[bool]) -> dict[str, np.ndarray]:
    return {"_mask": np.array(mask), "ground_truth": np.stack(gts)[..., None].astype(np.float32),
            "pred": np.stack(preds).astype(np.float32)}


def resize_index(shape: tuple[int, int], out: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Source rows / cols of big_vision's `_resize_nearest` from `shape` to `out`."""
    from big_vision.evaluators.proj.givt import nyu_depth

    rows = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None], shape)
    cols = np.broadcast_to(np.arange(shape[1], dtype=np.float32)[None, :], shape)
    r = np.asarray(nyu_depth._resize_nearest(np.ascontiguousarray(rows), out))
    c = np.asarray(nyu_depth._resize_nearest(np.ascontiguousarray(cols), out))
    assert (r == r[:, :1]).all() and (c == c[:1, :]).all()
    return r[:, 0].astype(np.int32), c[0, :].astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--big_vision", required=True, help="work tree of big_vision (for its commit id)")
    args = parser.parse_args()

    import jax
    import tensorflow as tf

    rng = np.random.default_rng(0)
    depth_raw = make_depths(rng)

    # Where the crop comes from: crop an index map (exact in float32) with the same pp.
    index = (np.arange(RAW_HW[0])[:, None] * RAW_HW[1] + np.arange(RAW_HW[1])[None, :]).astype(np.float32)
    cropped_index = crop_with_big_vision(index)[..., 0].astype(np.int64)
    crop_rows = (cropped_index[:, 0] // RAW_HW[1]).astype(np.int32)
    crop_cols = (cropped_index[0, :] % RAW_HW[1]).astype(np.int32)
    assert np.array_equal(cropped_index, crop_rows[:, None] * RAW_HW[1] + crop_cols[None, :])

    gts = [crop_with_big_vision(d)[..., 0] for d in depth_raw]
    for d, g in zip(depth_raw, gts):
        assert np.array_equal(g, d[crop_rows][:, crop_cols].astype(np.float32))
    preds = make_preds(rng, np.stack(gts))

    pad_gt = np.full_like(gts[0], 5.0)
    pad_pred = np.full_like(preds[0], 1e-4)
    batches = [batch([gts[0], gts[1], pad_gt], [preds[0], preds[1], pad_pred], [True, True, False]),
               batch([gts[2]], [preds[2]], [True]),
               batch([gts[3]], [preds[3]], [True])]
    overall = run_evaluator(batches)
    per_image = [run_evaluator([batch([g], [p], [True])]) for g, p in zip(gts, preds)]
    # The mean of the per-image values is the overall value (big_vision averages over images; its
    # per-image values are float32, so the means agree to float32 precision).
    for name in METRIC_NAMES:
        assert np.isclose(overall[name], np.mean([m[name] for m in per_image]), rtol=1e-6, atol=0), name

    arrays: dict[str, np.ndarray] = {
        "depth_raw": depth_raw, "crop_rows": crop_rows, "crop_cols": crop_cols,
        "ground_truth": np.stack(gts).astype(np.float16),
        "metrics": np.array([overall[n] for n in METRIC_NAMES]),
        "per_image": np.array([[m[n] for n in METRIC_NAMES] for m in per_image]),
        "valid_pixels": np.array([int(((g > MIN_DEPTH) & (g < MAX_DEPTH)).sum()) for g in gts]),
    }
    assert np.array_equal(arrays["ground_truth"].astype(np.float32), np.stack(gts))
    for i, p in enumerate(preds):
        arrays[f"pred_{i}"] = p.astype(np.float16) if p.shape == gts[0].shape else p
        assert np.array_equal(arrays[f"pred_{i}"].astype(np.float32), p)
        if p.shape != gts[0].shape:
            arrays[f"resize_rows_{i}"], arrays[f"resize_cols_{i}"] = resize_index(p.shape, gts[0].shape)

    commit = subprocess.run(["git", "-C", args.big_vision, "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    meta: dict[str, Any] = {
        "metric_names": list(METRIC_NAMES), "metrics": overall, "per_image": per_image,
        "min_depth": MIN_DEPTH, "max_depth": MAX_DEPTH, "pp": PP,
        "crop": {"rows": [int(crop_rows[0]), int(crop_rows[-1]) + 1],
                 "cols": [int(crop_cols[0]), int(crop_cols[-1]) + 1]},
        "batches": [[0, 1, "pad (_mask False)"], [2], [3]], "seed": "np.random.default_rng(0)",
        "big_vision_commit": commit, "jax": jax.__version__, "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in sorted(arrays.items())},
    }
    np.savez_compressed(os.path.join(args.out, "nyu_depth_reference.npz"), **arrays)
    with open(os.path.join(args.out, "nyu_depth_reference.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps({"metrics": overall, "crop": meta["crop"],
                      "valid_pixels": arrays["valid_pixels"].tolist()}, indent=1))


if __name__ == "__main__":
    main()
