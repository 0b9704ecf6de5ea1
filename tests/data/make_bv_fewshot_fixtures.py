"""Writes tests/data/bv_fewshot.npz: big_vision's few-shot evaluator run on fixed features.

Not part of the harness and not run by the tests: it needs big_vision (not on PyPI) on PYTHONPATH and the
scratch virtualenv of tests/data/README.md. It holds no big_vision code. It calls
`big_vision.evaluators.fewshot_lsr.Evaluator.compute_fewshot_metrics` (the reference's sampling: one
`default_rng(seed)` permutation per class; its `_precompute_cache` / `_eig_fewshot_acc_fn` solver, jitted
on the CPU in float32) on features given to it directly: the evaluator's representation cache is filled
with our arrays, so no model or dataset is involved.

    PYTHONPATH=/tmp/bv/big_vision JAX_PLATFORMS=cpu /tmp/bv/venv/bin/python \
        tests/data/make_bv_fewshot_fixtures.py --big_vision /tmp/bv/big_vision
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess

import numpy as np

SHOTS = (1, 2, 5, 10, 25)
SEEDS = (0, 1, 2)
L2_REG = 2.0**10
# name: (num_classes, dim, train per class, test per class, class with no train example or None)
CASES = {
    "wide": (10, 48, 40, 30, None),     # 1/2/5-shot: N < D+1 (the x x^T branch); 10/25-shot: N >= D+1
    "narrow": (6, 8, 30, 40, None),     # always N >= D+1
    "absent": (7, 16, 30, 20, 3),       # class 3 has no training example (its column is -1 everywhere)
}


def features(case: str, num_classes: int, dim: int, n_train: int, n_test: int, absent):
    rng = np.random.default_rng(sum(map(ord, case)))
    centers = rng.normal(size=(num_classes, dim)) * 1.2

    def draw(per_class, skip):
        y = np.repeat(np.arange(num_classes), per_class)
        if skip is not None:
            y = y[y != skip]
        x = centers[y] + rng.normal(size=(len(y), dim)) * 2.0 + 3.0  # overlapping classes: not all solvable
        order = rng.permutation(len(y))
        return x[order].astype(np.float32), y[order].astype(np.int64)

    return (*draw(n_train, absent), *draw(n_test, None))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big_vision", required=True)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "bv_fewshot.npz"))
    args = ap.parse_args()
    import jax
    from big_vision.evaluators import fewshot_lsr

    evaluator = fewshot_lsr.Evaluator.__new__(fewshot_lsr.Evaluator)  # no model or data: our features
    evaluator.shots, evaluator.l2_reg = SHOTS, L2_REG
    arrays, meta = {}, {"shots": SHOTS, "seeds": SEEDS, "l2_reg": L2_REG, "cases": {}}
    for case, (num_classes, dim, n_train, n_test, absent) in CASES.items():
        xtr, ytr, xte, yte = features(case, num_classes, dim, n_train, n_test, absent)
        evaluator._repr = {case: (xtr, ytr, xte, yte, num_classes)}
        for name, a in (("train_x", xtr), ("train_y", ytr), ("test_x", xte), ("test_y", yte)):
            arrays[f"{case}/{name}"] = a
        acc = np.zeros((len(SEEDS), len(SHOTS)), np.float64)
        for i, seed in enumerate(SEEDS):
            out = evaluator.compute_fewshot_metrics(None, seed, case, None, None)
            acc[i] = [float(out[k]) for k in SHOTS]
        arrays[f"{case}/accuracy"] = acc  # fraction correct, [seed, shots]
        meta["cases"][case] = {"num_classes": num_classes, "dim": dim, "absent_class": absent}
    np.savez_compressed(args.out, **arrays)
    commit = subprocess.run(["git", "-C", args.big_vision, "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    meta.update(big_vision_commit=commit, jax=jax.__version__, numpy=np.__version__,
                made_by="tests/data/make_bv_fewshot_fixtures.py")
    with open(args.out.replace(".npz", ".json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
