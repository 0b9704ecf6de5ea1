"""Writes the big_vision optimiser and loss fixtures in tests/data/bv_optax/.

Not part of the harness and not run by the tests: it needs big_vision (not on
PyPI) on PYTHONPATH and the scratch virtualenv of tests/data/README.md. It holds
no big_vision code, only calls `big_vision.optax.make` and
`big_vision.utils.weighted_softmax_xent`.

- `optax.npz` / `optax.json`: a fixed small params tree (kernels of 2 and 3
  dims, biases, a LayerNorm scale, an embedding, a 1-D `t`, a top-level
  `kernel`), a fixed stream of STEPS gradients (some above the clip norm, some
  below), and for every case of CASES the updates big_vision's
  `optax.make(config, params, sched_kw=...)` returned at each step (applied
  with `optax.apply_updates`, as big_vision's trainers do, in one jitted step)
  and its schedule multiplier at each step.
- `xent.npz` / `xent.json`: fixed logits / labels / weights (rows with long,
  short and no targets) and `weighted_softmax_xent` for normalize True/False,
  label_smoothing 0 / 0.1, reduction True/False.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Any

import numpy as np

STEPS = 10
# name -> big_vision config entries. lr_mults / wd_mults are big_vision's (pattern, value) lists.
CASES: dict[str, dict[str, Any]] = {
    # The decoder's defaults (harness/train/decoder.py, DecoderSettings): AdaFactor, lr 3e-4, wd 1e-4, clip 1, 10% warm-up.
    "adafactor": dict(optax_name="big_vision.scale_by_adafactor", lr=3e-4, wd=1e-4, grad_clip_norm=1.0,
                      schedule=dict(decay_type="cosine", warmup_steps=1)),
    # LiT's text tower (tasks/lit_zeroshot.py): scale_by_adam, lr 1e-3, wd 0.01, clip 1, 20% warm-up.
    "adam": dict(optax_name="scale_by_adam", lr=1e-3, wd=1e-2, grad_clip_norm=1.0,
                 schedule=dict(decay_type="cosine", warmup_steps=2)),
    # imagenet_finetune: momentum_hp, no wd, clip 1, warm-up, layer-wise lr multipliers.
    "momentum": dict(optax_name="big_vision.momentum_hp", lr=0.03, grad_clip_norm=1.0,
                     lr_mults=[("Dense_0/.*", 0.5), ("Embed_0/.*", 0.25)],
                     schedule=dict(decay_type="cosine", warmup_steps=3)),
    # linear_probe: momentum_hp with wd, no clip, no warm-up.
    "momentum_wd": dict(optax_name="big_vision.momentum_hp", lr=0.1, wd=1e-3,
                        schedule=dict(decay_type="cosine")),
}
# Leaf name -> shape. Dense_0/kernel and Embed_0/embedding have two dims >= 32 (factored by
# big_vision's AdaFactor); the attention kernel has 3 dims, only one >= 32 (not factored);
# a top-level `kernel` is not matched by big_vision's `.*/kernel$` weight-decay pattern.
SHAPES = {
    "Dense_0/kernel": (32, 36), "Dense_0/bias": (36,),
    "MultiHeadDotProductAttention_0/query/kernel": (32, 2, 8),
    "LayerNorm_0/scale": (32,), "LayerNorm_0/bias": (32,),
    "Embed_0/embedding": (32, 32),
    "head/kernel": (32, 5), "head/bias": (5,),
    "t": (1,), "kernel": (3, 2),
}
# Gradient scale per step: the global norm is above 1 (clipped) at some steps, below at others.
GRAD_SCALES = (0.05, 0.002, 0.03, 0.001, 0.1, 0.004, 0.02, 0.0005, 0.06, 0.01)


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def flatten(tree, prefix="") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        out.update(flatten(v, name + "/") if isinstance(v, dict) else {name: np.asarray(v, np.float32)})
    return out


def fixed_params_and_grads():
    rng = np.random.default_rng(0)
    params = {k: rng.normal(0.0, 0.5, s).astype(np.float32) for k, s in SHAPES.items()}
    grads = [{k: (scale * rng.normal(0.0, 1.0, s) + scale * 0.3).astype(np.float32) for k, s in SHAPES.items()}
             for scale in GRAD_SCALES]
    return params, grads


def run_case(config_dict: dict, params: dict, grads: list) -> tuple[list, list]:
    import big_vision.optax as bv_optax
    import jax
    import ml_collections
    import optax

    config = ml_collections.ConfigDict(config_dict)
    p = jax.tree.map(np.asarray, unflatten(params))
    tx, sched_fns = bv_optax.make(config, p, sched_kw=dict(total_steps=STEPS, batch_size=8, data_size=80))
    state = tx.init(p)

    @jax.jit
    def step(p, state, g):
        updates, state = tx.update(g, state, p)
        return optax.apply_updates(p, updates), state, updates

    updates_per_step = []
    for g in grads:
        p, state, updates = step(p, state, unflatten(g))
        updates_per_step.append(flatten(jax.device_get(updates)))
    schedule = [float(sched_fns[0](s)) for s in range(STEPS)]
    return updates_per_step, schedule


def xent_cases():
    import big_vision.utils as u
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 2.0, (3, 6, 11)).astype(np.float32)
    labels = rng.integers(0, 11, (3, 6)).astype(np.int32)
    # Row 0: 6 target tokens, row 1: 2, row 2: none (a padding row).
    weights = np.array([[1] * 6, [1, 1, 0, 0, 0, 0], [0] * 6], np.float32)
    out = {"logits": logits, "labels": labels, "weights": weights}
    for normalize in (True, False):
        for ls in (0.0, 0.1):
            for reduction in (True, False):
                loss = u.weighted_softmax_xent(logits=jnp.asarray(logits), labels=jnp.asarray(labels),
                                               weights=jnp.asarray(weights), label_smoothing=ls,
                                               normalize=normalize, reduction=reduction)
                out[f"loss_normalize{int(normalize)}_ls{ls}_reduction{int(reduction)}"] = np.asarray(loss, np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "bv_optax"))
    parser.add_argument("--big_vision", required=True, help="work tree of big_vision (for its commit id)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import flax
    import jax
    import optax

    commit = subprocess.run(["git", "-C", args.big_vision, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    versions = {"big_vision_commit": commit, "jax": jax.__version__, "flax": flax.__version__,
                "optax": optax.__version__, "numpy": np.__version__}

    params, grads = fixed_params_and_grads()
    arrays = {f"params/{k}": v for k, v in params.items()}
    for i, g in enumerate(grads):
        arrays.update({f"grads/{i}/{k}": v for k, v in g.items()})
    schedules = {}
    for case, cfg in CASES.items():
        updates, schedules[case] = run_case(cfg, params, grads)
        first, again = updates, run_case(cfg, params, grads)[0]
        for a, b in zip(first, again):  # big_vision is deterministic on this machine
            assert all(np.array_equal(a[k], b[k]) for k in a), case
        for i, u in enumerate(updates):
            arrays.update({f"updates/{case}/{i}/{k}": v for k, v in u.items()})
    np.savez_compressed(os.path.join(args.out, "optax.npz"), **arrays)
    meta = {"made_by": "tests/data/make_bv_optax_fixtures.py", "steps": STEPS, "sched_kw": {"total_steps": STEPS},
            "cases": CASES, "shapes": SHAPES, "grad_scales": GRAD_SCALES, "schedules": schedules, **versions}
    with open(os.path.join(args.out, "optax.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")

    xent = xent_cases()
    np.savez_compressed(os.path.join(args.out, "xent.npz"), **xent)
    with open(os.path.join(args.out, "xent.json"), "w") as f:
        json.dump({"made_by": "tests/data/make_bv_optax_fixtures.py",
                   "function": "big_vision.utils.weighted_softmax_xent", "keys": sorted(xent), **versions},
                  f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
