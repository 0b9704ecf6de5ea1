"""Writes tests/data/flexi_reference.npz / .json: FlexiViT's patch-embedding and posemb resizing, by big_vision.

Not part of the harness and not run by the tests. It needs big_vision (not on PyPI) on PYTHONPATH and the
scratch virtualenv of tests/data/README.md (jax, flax, tensorflow-cpu, scipy, ...). It holds no big_vision
code; it calls:

1. `big_vision.models.proj.flexi.vit.resample_patchemb(old, new_hw)` (the pseudo-inverse "PI-resize":
   `pinv(B^T) @ vec(w)` per (in, out) channel pair, B the matrix of `tf.image.resize(..., "bilinear")` on
   basis patches) on fixed float32 kernels, in jax's default 32-bit mode (how the model runs it:
   `resample_patchemb_<case>`). It is rerun with `jax_enable_x64` (float64 kernel in and out; big_vision's
   own flexi/vit_test.py runs in that mode); only the largest difference from the 32-bit result is kept,
   in the .json (size budget).
2. The flexi `_Model` itself (`vit.Model`, `proj.flexi.vit`) with seqhw set at call time, which picks
   patch size = (H, W) // seqhw, resamples the kernel on the fly and resizes the learned posemb with
   `jax.image.resize(..., "linear")` (antialiased when shrinking): its `out["stem"]` and
   `out["with_posemb"]`. For the `grid*` cases the image and the embedding bias are zero, so `stem` is 0
   and `with_posemb` IS the resized posemb, exactly.
3. `big_vision.models.vit.resample_posemb(old, new)` (what `flexi.vit.load` / `vit.load` call when a
   checkpoint's posemb grid differs from the model's: `scipy.ndimage.zoom(order=1)`).

Inputs (np.random.default_rng(0)): `kernel16` (16, 16, 3, 8) and `kernel14` (14, 14, 3, 8) float32,
N(0, 1/sqrt(8)); `posemb` (1, 196, 8) float32 (a 14x14 grid), N(0, 1/sqrt(8)); `bias` (8,) float32;
`image_<case>` float32 NHWC in [-1, 1] for the model cases with an image.

Cases:
- resample_patchemb: `16to14`, `16to8`, `16to32`, `16to30`, `14to15x18` (rectangular), `14to16`
  (kernel16 unless the name starts with 14). Not included: a resize that shrinks one axis and grows the
  other (e.g. 16x16 -> 12x20): the resize matrix is then rank-deficient (rank 12*16 = 192 of 240) and
  `np.linalg.pinv`'s default cutoff keeps singular values that are float32 rounding noise, so big_vision's
  result is garbage that differs between 32- and 64-bit runs by hundreds (checked: max 591).
- model (posemb_size 14x14, patch_size 16x16, width 8, depth 1, mlp_dim 16, 2 heads, pool gap, no
  head): `grid16` (zero 256px image, seqhw 16: patch 16, posemb 14 -> 16), `grid12` (zero 192px image,
  seqhw 12: patch 16, posemb 14 -> 12), `p14` (56px image, seqhw 4: patch 14 -> kernel 16 -> 14, posemb
  14 -> 4), `p32` (64px image, seqhw 2: patch 32, posemb 14 -> 2). Keys `model_<case>_stem`,
  `model_<case>_with_posemb`, `image_<case>` (p14, p32).
- resample_posemb: `resample_posemb_16` (1, 256, 8) and `resample_posemb_12` (1, 144, 8) from `posemb`.

Run (the same packages as the bv_vit/ venv of tests/data/README.md):
    python3 -m venv /tmp/bvvenv
    /tmp/bvvenv/bin/pip install jax==0.10.2 jaxlib flax==0.12.8 'tensorflow-cpu==2.21.*' absl-py ml_dtypes \
        scipy einops ml_collections
    git clone /work/.mirror/google-research+big_vision/repo /tmp/bv/big_vision
    PYTHONPATH=/tmp/bv/big_vision JAX_PLATFORMS=cpu /tmp/bvvenv/bin/python \
        tests/data/make_flexi_fixtures.py --big_vision /tmp/bv/big_vision
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Any

import numpy as np

WIDTH = 8
PATCHEMB_CASES = {"16to14": (14, 14), "16to8": (8, 8), "16to32": (32, 32), "16to30": (30, 30),
                  "14to15x18": (15, 18), "14to16": (16, 16)}
MODEL = dict(num_classes=None, patch_size=(16, 16), posemb_size=(14, 14), width=WIDTH, depth=1, mlp_dim=16,
             num_heads=2, posemb="learn", pool_type="gap")
# case -> (image size, seqhw, zero image and bias)
MODEL_CASES = {"grid16": (256, 16, True), "grid12": (192, 12, True), "p14": (56, 4, False),
               "p32": (64, 2, False)}
POSEMB_GRIDS = (16, 12)


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    std = 1 / np.sqrt(WIDTH)
    out = {"kernel16": rng.normal(0, std, (16, 16, 3, WIDTH)).astype(np.float32),
           "kernel14": rng.normal(0, std, (14, 14, 3, WIDTH)).astype(np.float32),
           "posemb": rng.normal(0, std, (1, 14 * 14, WIDTH)).astype(np.float32),
           "bias": rng.normal(0, 0.1, (WIDTH,)).astype(np.float32)}
    for case, (size, _, zero) in MODEL_CASES.items():
        if not zero:
            out[f"image_{case}"] = rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    return out


def run_model(data: dict[str, np.ndarray], case: str) -> dict[str, np.ndarray]:
    import jax
    from big_vision.models.proj.flexi import vit as flexi

    size, seqhw, zero = MODEL_CASES[case]
    model = flexi.Model(**MODEL)
    init = model.init(jax.random.PRNGKey(0), np.zeros((1, 224, 224, 3), np.float32))["params"]
    params = jax.tree.map(np.asarray, init)
    params["embedding"]["kernel"] = data["kernel16"]
    params["embedding"]["bias"] = np.zeros(WIDTH, np.float32) if zero else data["bias"]
    params["pos_embedding"] = data["posemb"]
    image = np.zeros((1, size, size, 3), np.float32) if zero else data[f"image_{case}"]
    _, out = model.apply({"params": params}, image, seqhw=seqhw)
    return {"stem": np.asarray(out["stem"]), "with_posemb": np.asarray(out["with_posemb"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--big_vision", required=True, help="work tree of big_vision (for its commit id)")
    args = parser.parse_args()

    import flax
    import jax
    import scipy
    import tensorflow as tf
    from big_vision.models import vit
    from big_vision.models.proj.flexi import vit as flexi

    data = inputs()
    arrays: dict[str, np.ndarray] = dict(data)
    dtypes: dict[str, str] = {}

    for case, new_hw in PATCHEMB_CASES.items():
        old = data["kernel14"] if case.startswith("14") else data["kernel16"]
        out = flexi.resample_patchemb(old, new_hw)
        dtypes[case] = str(out.dtype)
        arrays[f"resample_patchemb_{case}"] = np.asarray(out)
        assert arrays[f"resample_patchemb_{case}"].shape == (*new_hw, 3, WIDTH)

    for case in MODEL_CASES:
        out = run_model(data, case)
        arrays[f"model_{case}_stem"] = out["stem"]
        arrays[f"model_{case}_with_posemb"] = out["with_posemb"]
        if MODEL_CASES[case][2]:
            assert not out["stem"].any()

    for grid in POSEMB_GRIDS:
        new = np.zeros((1, grid * grid, WIDTH), np.float32)
        arrays[f"resample_posemb_{grid}"] = np.asarray(vit.resample_posemb(data["posemb"], new))

    # The same PI-resize in 64-bit mode (float64 kernel in and out).
    jax.config.update("jax_enable_x64", True)
    for case, new_hw in PATCHEMB_CASES.items():
        old = data["kernel14"] if case.startswith("14") else data["kernel16"]
        out = flexi.resample_patchemb(old.astype(np.float64), new_hw)
        assert out.dtype == np.float64, out.dtype
        diff = float(np.abs(np.asarray(out) - arrays[f"resample_patchemb_{case}"]).max())
        dtypes[f"{case}_max_abs_diff_32_vs_64"] = diff
        dtypes[f"{case}_max_abs"] = float(np.abs(np.asarray(out)).max())
        assert diff < 1e-5, (case, diff)
    jax.config.update("jax_enable_x64", False)

    commit = subprocess.run(["git", "-C", args.big_vision, "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    meta: dict[str, Any] = {
        "patchemb_cases": {k: list(v) for k, v in PATCHEMB_CASES.items()}, "model": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in MODEL.items()},
        "model_cases": {k: {"image_size": s, "seqhw": q, "patch_size": s // q, "zero_image_and_bias": z}
                        for k, (s, q, z) in MODEL_CASES.items()},
        "posemb_grids": list(POSEMB_GRIDS), "resample_patchemb_notes": dtypes,
        "seed": "np.random.default_rng(0)", "big_vision_commit": commit, "jax": jax.__version__,
        "flax": flax.__version__, "tensorflow": tf.__version__, "scipy": scipy.__version__,
        "numpy": np.__version__,
        "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in sorted(arrays.items())},
    }
    np.savez_compressed(os.path.join(args.out, "flexi_reference.npz"), **arrays)
    with open(os.path.join(args.out, "flexi_reference.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(dtypes, indent=1))


if __name__ == "__main__":
    main()
