"""Writes the big_vision side of tests/data/siglip2/: big_vision's own SigLIP 2 text pp, NaFlex pp and models.

Not part of the harness and not run by the tests: it needs big_vision (not on PyPI), jax, flax and TensorFlow,
so it runs in a scratch virtualenv. It holds no big_vision code: it builds big_vision's pp ops from pp strings
and calls its models. Run make_siglip2_fixtures.py first (this script reads its vocabulary, texts and images).

1. Text ids: the SigLIP 2 demo colab's text pp (configs/proj/image_text/SigLIP2_demo.ipynb),
   `lower(key="text")|tok(length=64, model=<gemma>, bos="no", eos="sticky", key="text")`, with big_vision's
   Gemma tokenizer class (pp/proj/paligemma/ops.py `tokenizers.gemma`) on hf_fixed/tokenizer.model, over
   hf_io.json's `texts` -> `bv_ids`.
2. NaFlex pp: the colab's `get_pp_naflex(n, p)` string (value_range(-1, 1), resize_to_sequence, patchify,
   flatten, pad_to_shape x 4, tuplify; pp/proj/image_text/ops_naflex.py) with p = 4, n = 24 on hf_io.npz's
   `naflex_image_<i>` -> `bv_naflex_patches` [N, 24, 48], `bv_naflex_type`, `bv_naflex_yidx`, `bv_naflex_xidx`;
   and `bv_grid_<p>_<n>` [K, 2]: the patch grid `resize_to_sequence(p, n)` gives each of hf_io's `grid_sizes`.
3. Models: big_vision's `two_towers.Model` as the colab builds SigLIP 2 (text tower `text_transformer`, out_dim
   [None, D], bias_init -10), tiny (width 32, depth 2, MLP 64, 4 heads; text 64 tokens over the vocabulary):
   `bv_fixed` with the `vit` image tower (patch 4, MAP head, learned posemb, 16 px) and `bv_naflex` with
   `proj.image_text.naflex_vit` (MAP head, posemb "learn_2d", nposemb 4). Params: big_vision's init
   (PRNGKey(0)), every leaf + 0.02 N(0, 1), t = log 10; saved as `<name>/two_tower.npz` (flat "/" names under
   `params/`, as big_vision's SigLIP checkpoints) with the vocabulary beside it as `gemma_tokenizer.model`,
   reloaded with `two_towers.load`, then `<name>_zimg`, `<name>_ztxt` (L2-normalised, as two_towers returns
   them) and `<name>_logits` = zimg ztxt^T t + b for hf_io's `fixed_images` (bv_fixed) / the NaFlex pp output
   (bv_naflex) and the texts' `bv_ids`.

    git clone /work/.mirror/google-research+big_vision/repo /tmp/sl2/big_vision      # 0127fb6b
    python3 -m venv /tmp/sl2/bvvenv
    /tmp/sl2/bvvenv/bin/pip install jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 'tensorflow-cpu==2.21.*' \\
        sentencepiece absl-py ml_collections einops ml_dtypes scipy
    PYTHONPATH=/tmp/sl2/big_vision JAX_PLATFORMS=cpu /tmp/sl2/bvvenv/bin/python \\
        tests/data/make_bv_siglip2_fixtures.py --big_vision /tmp/sl2/big_vision
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "siglip2")
SEQLEN = 64
PATCH, BUDGET = 4, 24
PERTURB = 0.02
TINY = dict(width=32, depth=2, mlp_dim=64, num_heads=4)


def tokenize(texts: list[str], model: str) -> np.ndarray:
    from big_vision.pp import builder as pp_builder
    import big_vision.pp.ops_text  # noqa: F401  (registers `lower`)
    import big_vision.pp.proj.paligemma.ops  # noqa: F401  (registers `tok`, `tokenizers.gemma`)

    spec = f'gemma(model="{model}")'
    pp = pp_builder.get_preprocess_fn(
        f'lower(key="text")|tok(length={SEQLEN}, model={spec!r}, bos="no", eos="sticky", key="text")')
    return np.stack([np.asarray(pp({"text": t})["text"]) for t in texts]).astype(np.int32)


def naflex_pp(n: int, p: int) -> str:
    """The colab's get_pp_naflex(n_patches, patch_size)."""
    return "|".join((
        "value_range(-1, 1)",
        f'resize_to_sequence({p}, {n}, outkey="image")',
        f'patchify({p}, key="image")',
        'flatten(["image"])',
        f'pad_to_shape(key="image/patches", shape=({n}, None))',
        f'pad_to_shape(key="image/type", shape=({n},))',
        f'pad_to_shape(key="image/yidx", shape=({n},))',
        f'pad_to_shape(key="image/xidx", shape=({n},))',
        'tuplify(["image/patches", "image/type", "image/yidx", "image/xidx"], "image")',
    ))


def grid(size: tuple[int, int], p: int, n: int) -> tuple[int, int]:
    from big_vision.pp import builder as pp_builder

    out = pp_builder.get_preprocess_fn(f"resize_to_sequence({p}, {n})")({"image": np.zeros((*size, 3), np.uint8)})
    h, w = np.asarray(out["image"]).shape[:2]
    return h // p, w // p


def perturb(params, key):
    import jax

    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [leaf + PERTURB * jax.random.normal(k, leaf.shape, leaf.dtype)
                                        for leaf, k in zip(leaves, keys)])


def model_config(naflex: bool, vocab: int):
    import ml_collections

    image = dict(TINY, pool_type="map", posemb="learn_2d", nposemb=4) if naflex else \
        dict(TINY, pool_type="map", posemb="learn", patch_size=(PATCH, PATCH))
    return ml_collections.ConfigDict(dict(
        image_model="proj.image_text.naflex_vit" if naflex else "vit", image=image,
        text_model="proj.image_text.text_transformer", text=dict(TINY, vocab_size=vocab),
        out_dim=[None, TINY["width"]], bias_init=-10.0, temperature_init=10.0))


def build_model(name: str, cfg, images, ids, out_dir: str, vocab_file: str) -> dict[str, np.ndarray]:
    import big_vision.utils as u
    import jax
    from big_vision.models.proj.image_text import two_towers

    model = two_towers.Model(**cfg)
    dummy_img = jax.tree.map(lambda a: a[:1], images)
    params = model.init(jax.random.PRNGKey(0), dummy_img, ids[:1])["params"]
    params = perturb(params, jax.random.PRNGKey(1))
    params = {**params, "t": np.full((1,), math.log(10.0), np.float32), "b": np.full((1,), -10.0, np.float32)}
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    names_and_vals, _ = u.tree_flatten_with_names({"params": params})
    np.savez(os.path.join(folder, "two_tower.npz"), **{k: np.asarray(v) for k, v in names_and_vals})
    shutil.copy(vocab_file, os.path.join(folder, "gemma_tokenizer.model"))
    fresh = model.init(jax.random.PRNGKey(7), dummy_img, ids[:1])["params"]
    loaded = two_towers.load(fresh, os.path.join(folder, "two_tower.npz"), cfg)
    zimg, ztxt, out = model.apply({"params": loaded}, images, ids)
    logits = np.asarray(zimg @ ztxt.T * out["t"] + out["b"])
    return {f"{name}_zimg": np.asarray(zimg), f"{name}_ztxt": np.asarray(ztxt), f"{name}_logits": logits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big_vision", required=True, help="the big_vision work tree on PYTHONPATH")
    args = parser.parse_args()
    import flax
    import jax
    import tensorflow as tf
    from big_vision.pp import builder as pp_builder
    import big_vision.pp.ops_general  # noqa: F401
    import big_vision.pp.ops_image  # noqa: F401
    import big_vision.pp.proj.image_text.ops_naflex  # noqa: F401

    meta_in = json.load(open(os.path.join(OUT, "hf_io.json"), encoding="utf-8"))
    hf = np.load(os.path.join(OUT, "hf_io.npz"))
    vocab_file = os.path.join(OUT, "hf_fixed", "tokenizer.model")
    arrays: dict[str, np.ndarray] = {}

    ids = tokenize(meta_in["texts"], vocab_file)
    arrays["bv_ids"] = ids

    pp = pp_builder.get_preprocess_fn(naflex_pp(BUDGET, PATCH))
    raw = [hf[f"naflex_image_{i}"] for i in range(len(meta_in["naflex_sizes"]))]
    outs = [pp({"image": img})["image"] for img in raw]
    for j, key in enumerate(("patches", "type", "yidx", "xidx")):
        arrays[f"bv_naflex_{key}"] = np.stack([np.asarray(o[j]) for o in outs])
    for p, n in meta_in["grid_cases"]:
        arrays[f"bv_grid_{p}_{n}"] = np.asarray([grid(tuple(s), p, n) for s in hf["grid_sizes"]], np.int32)

    vocab = int(meta_in["vocab_size"])
    naflex_in = tuple(arrays[f"bv_naflex_{k}"] for k in ("patches", "type", "yidx", "xidx"))
    arrays.update(build_model("bv_fixed", model_config(False, vocab), hf["fixed_images"], ids, OUT, vocab_file))
    arrays.update(build_model("bv_naflex", model_config(True, vocab), naflex_in, ids, OUT, vocab_file))

    np.savez(os.path.join(OUT, "bv_io.npz"), **arrays)
    commit = subprocess.run(["git", "-C", args.big_vision, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    meta = {"big_vision_commit": commit, "jax": jax.__version__, "flax": flax.__version__,
            "tensorflow": tf.__version__, "numpy": np.__version__, "seqlen": SEQLEN, "patch": PATCH,
            "budget": BUDGET, "perturb": PERTURB, "tiny": TINY, "vocab_size": vocab,
            "text_pp": f'lower(key="text")|tok(length={SEQLEN}, model=<gemma>, bos="no", eos="sticky", key="text")',
            "naflex_pp": naflex_pp(BUDGET, PATCH),
            "models": {k: model_config(k == "bv_naflex", vocab).to_dict() for k in ("bv_fixed", "bv_naflex")},
            "arrays": {k: f"{v.dtype}{list(v.shape)}" for k, v in sorted(arrays.items())}}
    with open(os.path.join(OUT, "bv_io.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(meta["arrays"])


if __name__ == "__main__":
    main()
