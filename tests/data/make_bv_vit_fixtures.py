"""Writes the big_vision ViT parity fixtures in tests/data/bv_vit/.

Not part of the harness and not run by the tests: it needs big_vision (not on
PyPI) on PYTHONPATH and a scratch virtualenv with jax, flax, tensorflow-cpu,
ml_collections, einops, scipy. It holds no big_vision code, only calls into
`big_vision.models.vit` and `big_vision.utils`. See tests/data/README.md for
the exact commands.

Every case is a tiny ViT initialised by big_vision, perturbed so that no bias
is zero and no LayerNorm is the identity (a wrong parameter mapping then cannot
pass), saved the way big_vision writes .npz checkpoints, reloaded through
big_vision's own `vit.load`, and run; the outputs of that run are the fixture.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Any

import numpy as np

# Shared by all cases: small enough that every file is a few tens of KiB.
TINY = dict(width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=(4, 4))
IMAGE_SIZE = 16
BATCH = 2
PERTURB_STDDEV = 0.02

# name -> kwargs of big_vision `vit.Model` on top of TINY. The order fixes the
# PRNGKey index of each case, so append new cases at the end.
CASES: dict[str, dict[str, Any]] = {
    "map_learn": dict(pool_type="map", posemb="learn", num_classes=5),
    "tok_rep_scan": dict(pool_type="tok", posemb="learn", rep_size=16,
                         num_classes=3, scan=True),
    "gap_sincos": dict(pool_type="gap", posemb="sincos2d", num_classes=None),
    "zero_learn": dict(pool_type="0", posemb="learn", num_classes=None),
    "none_learn": dict(pool_type="none", posemb="learn", num_classes=None),
    "map_bf16": dict(pool_type="map", posemb="learn", num_classes=5,
                     dtype_mm="bfloat16"),
}
# `resample` reuses map_learn's checkpoint in a model at this resolution.
RESAMPLE_IMAGE_SIZE = 24

# Entries of big_vision's `out` dict kept in <case>_io.npz (when present):
# the ones the harness exposes, plus `head_input` (the pooled tokens before
# pre_logits) to tell a pooling bug from a pre_logits bug. More would break
# the 1 MB budget of tests/data/bv_vit.
OUT_KEYS = ("stem", "encoded", "head_input", "pre_logits", "pre_logits_2d",
            "logits")


def model_kwargs(case: str) -> dict[str, Any]:
    """Full big_vision `vit.Model` kwargs of a case, defaults spelled out."""
    kw = dict(TINY)
    kw.update(rep_size=False, scan=False, dtype_mm="float32")
    kw.update(CASES[case])
    return kw


def make_images(seed: int, size: int) -> np.ndarray:
    """Uniform [-1, 1] NHWC float32 images, the harness's value range."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (BATCH, size, size, 3)).astype(np.float32)


def perturb(params: Any, key: Any) -> Any:
    """Adds N(0, PERTURB_STDDEV) to every leaf, keeping each leaf's dtype."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [
        (leaf.astype(jnp.float32)
         + PERTURB_STDDEV * jax.random.normal(k, leaf.shape)
         ).astype(leaf.dtype)
        for leaf, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(treedef, noisy)


def save_npz(path: str, tree: Any, compressed: bool = False) -> None:
    """Writes `tree` as big_vision does: "/"-joined names, np.savez.

    big_vision's own writer (`utils.save_checkpoint`, removed from HEAD in
    Oct 2023) was `np.savez` (or `np.savez_compressed` with compressed=True)
    of `dict(tree_flatten_with_names(tree)[0])`; we call the same big_vision
    name-flattening helper.
    """
    import big_vision.utils as u

    names_and_vals, _ = u.tree_flatten_with_names(tree)
    arrays = {name: np.asarray(val) for name, val in names_and_vals}
    (np.savez_compressed if compressed else np.savez)(path, **arrays)


def run_model(kw: dict[str, Any], params: Any, images: np.ndarray
              ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Applies big_vision's ViT: kept `out` entries as f32, and their dtypes."""
    from big_vision.models import vit

    model = vit.Model(**kw)
    _, out = model.apply({"params": params}, images, train=False)
    kept = [k for k in OUT_KEYS if k in out]
    return ({k: np.asarray(out[k], np.float32) for k in kept},
            {k: str(out[k].dtype) for k in kept})


def init_params(kw: dict[str, Any], index: int, size: int) -> Any:
    """big_vision's random init for a case (PRNGKey(index))."""
    import jax
    from big_vision.models import vit

    model = vit.Model(**kw)
    dummy = np.zeros((1, size, size, 3), np.float32)
    return model.init(jax.random.PRNGKey(index), dummy)["params"]


def load_bv(kw: dict[str, Any], init: Any, path: str) -> Any:
    """Loads a checkpoint exactly as big_vision's trainers do (`vit.load`)."""
    from big_vision.models import vit

    return vit.load(init, os.path.abspath(path), kw)


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray],
                what: str) -> None:
    """Requires bit-identical outputs."""
    assert a.keys() == b.keys(), (what, a.keys(), b.keys())
    for k in a:
        if not np.array_equal(a[k], b[k]):
            raise AssertionError(f"{what}: {k} differs by "
                                 f"{np.abs(a[k] - b[k]).max()}")


def write_json(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")


def provenance(bv_dir: str) -> dict[str, str]:
    """Versions that made the fixtures, recorded in every .json."""
    import flax
    import jax
    import scipy

    commit = subprocess.run(["git", "-C", bv_dir, "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True)
    return {"big_vision_commit": commit.stdout.strip(),
            "jax": jax.__version__, "flax": flax.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "bv_vit"))
    parser.add_argument("--big_vision", required=True,
                        help="work tree of big_vision (for its commit id)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import big_vision.utils as u
    import jax
    from big_vision.models.common import merge_params

    versions = provenance(args.big_vision)

    for index, case in enumerate(CASES):
        kw = model_kwargs(case)
        params = init_params(kw, index, IMAGE_SIZE)
        noise_key = jax.random.fold_in(jax.random.PRNGKey(index), 1)
        params = perturb(params, noise_key)
        if kw["dtype_mm"] == "bfloat16":
            # Stored in bfloat16 so that the .npz holds 2-byte void ("V2").
            params = jax.tree.map(lambda p: p.astype(jax.numpy.bfloat16),
                                  params)
        ckpt = os.path.join(args.out, f"{case}.npz")
        save_npz(ckpt, params)

        # The fixture is what big_vision computes from the file it wrote.
        fresh = init_params(kw, 1000 + index, IMAGE_SIZE)
        loaded = load_bv(kw, fresh, ckpt)
        images = make_images(index, IMAGE_SIZE)
        extra: dict[str, np.ndarray] = {}
        notes: dict[str, Any] = {}
        if kw["dtype_mm"] != "float32":
            # vit.load keeps the file's bfloat16 leaves, and then every
            # LayerNorm (dtype inferred from input and params) returns
            # bfloat16: those outputs are kept under a "bf16params_" prefix
            # (but `stem`, which no LayerNorm touches). The main outputs use
            # the params cast to the dtypes of big_vision's own init (float32
            # but pos_embedding), by big_vision's merge_params(match_dtype).
            raw, raw_dtypes = run_model(kw, loaded, images)
            extra = {f"bf16params_{k}": v for k, v in raw.items()
                     if k != "stem"}
            notes["bf16params_dtypes"] = raw_dtypes
            loaded = merge_params(loaded, fresh, match_dtype=True)
        outputs, dtypes = run_model(kw, loaded, images)
        np.savez(os.path.join(args.out, f"{case}_io.npz"), images=images,
                 **outputs, **extra)

        # Re-check: a second reload gives bit-identical outputs.
        again = load_bv(kw, fresh, ckpt)
        if extra:
            again = merge_params(again, fresh, match_dtype=True)
        assert_same(outputs, run_model(kw, again, images)[0], case)
        if kw["dtype_mm"] != "float32":
            # How far bf16 compute is from float32 compute on the same
            # params: the scale of tolerance that bf16 mode needs.
            f32_kw = dict(kw, dtype_mm="float32")
            f32_params = jax.tree.map(lambda a: np.asarray(a, np.float32),
                                      loaded)
            f32_out, _ = run_model(f32_kw, f32_params, images)
            notes["max_abs_diff_vs_float32_compute"] = {
                k: float(np.abs(outputs[k] - f32_out[k]).max())
                for k in outputs}
            notes["max_abs_diff_vs_bf16params"] = {
                k: float(np.abs(outputs[k] - raw[k]).max()) for k in outputs}

        meta = {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in kw.items()}
        meta.update(case=case, image_size=IMAGE_SIZE, batch=BATCH,
                    init_rng=f"jax.random.PRNGKey({index})",
                    perturb_stddev=PERTURB_STDDEV,
                    images_seed=f"np.random.default_rng({index})",
                    checkpoint=f"{case}.npz", outputs=sorted(outputs),
                    output_dtypes=dtypes, **notes, **versions)
        write_json(os.path.join(args.out, f"{case}.json"), meta)
        print(case, {k: v.shape for k, v in outputs.items()})

        if case == "map_learn":
            # Same arrays in the two training-checkpoint wrappings. A sibling
            # leaf next to the params makes a loader that only strips a
            # prefix fail: it must pick the sub-tree, as big_vision does.
            # Both are zip-deflated (big_vision's compressed=True mode): a
            # loader meets that too, and it keeps the folder under 1 MB.
            wrapped = {"params": params,
                       "opt": {"state": {"step": np.int32(7)}}}
            save_npz(os.path.join(args.out, "map_learn_params_wrapped.npz"),
                     wrapped, compressed=True)
            old = {"opt": {"target": params,
                           "state": {"step": np.int32(7)}}}
            save_npz(os.path.join(args.out, "map_learn_opt_target.npz"), old,
                     compressed=True)
            for name in ("map_learn_params_wrapped.npz",
                         "map_learn_opt_target.npz"):
                path = os.path.join(args.out, name)
                got, _ = run_model(kw, load_bv(kw, fresh, path), images)
                assert_same(outputs, got, name)

    # `resample`: map_learn's 16px checkpoint loaded by big_vision into a 24px
    # model; vit.load resamples the learned posemb from 4x4 to 6x6.
    index = len(CASES)
    kw = model_kwargs("map_learn")
    init24 = init_params(kw, index, RESAMPLE_IMAGE_SIZE)
    ckpt = os.path.join(args.out, "map_learn.npz")
    loaded = load_bv(kw, init24, ckpt)
    images = make_images(index, RESAMPLE_IMAGE_SIZE)
    outputs, dtypes = run_model(kw, loaded, images)
    np.savez(os.path.join(args.out, "resample_io.npz"), images=images,
             pos_embedding=np.asarray(loaded["pos_embedding"], np.float32),
             **outputs)
    assert_same(outputs, run_model(kw, load_bv(kw, init24, ckpt), images)[0],
                "resample")
    # The 16px params themselves are unchanged by loading.
    original = u.load_params(os.path.abspath(ckpt))
    assert np.array_equal(original["embedding"]["kernel"],
                          loaded["embedding"]["kernel"])
    meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
    meta.update(case="resample", image_size=RESAMPLE_IMAGE_SIZE,
                checkpoint="map_learn.npz", checkpoint_image_size=IMAGE_SIZE,
                batch=BATCH, images_seed=f"np.random.default_rng({index})",
                outputs=sorted(outputs) + ["pos_embedding"],
                output_dtypes=dtypes, **versions)
    write_json(os.path.join(args.out, "resample.json"), meta)
    print("resample", {k: v.shape for k, v in outputs.items()})


if __name__ == "__main__":
    main()
