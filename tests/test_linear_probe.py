"""The `linear_probe` task: the SGD probe against an independent numpy implementation, ReaL scoring by
hand, and the task end to end on the tiny proxy (real TFDS pipeline, feature cache, minival selection)."""

import numpy as np
import pytest

from harness.run.runner import run_task
from harness.tasks.linear_probe import real_correct, top1
from harness.train.probe import grid, predict_linear, select_on_minival, train_linear


def numpy_probe(x, y, c, *, lr, epochs, wd, bs, momentum, seed):
    """The same SGD written out in numpy, big_vision's way: softmax CE, heavy-ball momentum stored in
    bfloat16 (momentum_hp), then `w -= cos_sched * (lr * trace + wd * w)`: the decay is not times lr, and
    not on the bias. Jitted on the CPU, XLA multiplies the bf16 trace by the momentum rounded to bf16
    (0.9 -> 0.8984375) in float32, without rounding the product (the eager ops would round it)."""
    import ml_dtypes

    def bf16(a):
        return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)

    decay = float(ml_dtypes.bfloat16(momentum))
    n, d = x.shape
    w, b = np.zeros((d, c)), np.zeros(c)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    spe = n // bs
    total, t = spe * epochs, 0
    for e in range(epochs):
        rng = np.random.default_rng([seed, e])
        order = rng.permutation(n)[: spe * bs].reshape(spe, bs)
        for idx in order:
            bx, by = x[idx], np.eye(c)[y[idx]]
            z = bx @ w + b
            p = np.exp(z - z.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            gz = (p - by) / bs
            gw, gb = bx.T @ gz, gz.sum(0)
            sched = 0.5 * (1 + np.cos(np.pi * t / total))
            nw, nb = decay * vw + gw, decay * vb + gb
            w, b = w - sched * (lr * nw + wd * w), b - sched * lr * nb
            vw, vb = bf16(nw), bf16(nb)
            t += 1
    return w, b


def test_sgd_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    params = train_linear(x, y, 3, lr=0.3, epochs=3, weight_decay=1e-2, batch_size=8, momentum=0.9, seed=5)
    w, b = numpy_probe(x.astype(np.float64), y, 3, lr=0.3, epochs=3, wd=1e-2, bs=8, momentum=0.9, seed=5)
    np.testing.assert_allclose(params["kernel"], w, atol=1e-5)
    np.testing.assert_allclose(params["bias"], b, atol=1e-5)


def test_probe_learns_separable_classes_with_mixup():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16)) * 3
    y = rng.integers(0, 4, 400)
    x = (centres[y] + rng.normal(size=(400, 16))).astype(np.float32)
    params = train_linear(x, y, 4, lr=0.1, epochs=5, weight_decay=0.0, batch_size=32, mixup=0.1)
    assert top1(predict_linear(params, x), y).mean() > 0.95


def test_grid_search_keeps_the_best_minival_point_and_the_earlier_of_a_tie():
    points = grid(lr=(0.1, 0.01), epochs=(1, 3))
    assert points == [{"lr": 0.1, "epochs": 1}, {"lr": 0.1, "epochs": 3}, {"lr": 0.01, "epochs": 1},
                      {"lr": 0.01, "epochs": 3}]
    scores = {(0.1, 1): 50.0, (0.1, 3): 70.0, (0.01, 1): 70.0, (0.01, 3): 60.0}
    fitted = []

    def fit(p):
        fitted.append(p)
        return (p["lr"], p["epochs"])

    chosen, head, table = select_on_minival(points, fit, lambda h: scores[h])
    assert fitted == points and head == (0.1, 3)
    assert chosen == {"lr": 0.1, "epochs": 3, "minival": 70.0}
    assert [r["minival"] for r in table] == [50.0, 70.0, 70.0, 60.0]


def test_real_scoring_multihot_and_empty_labels():
    logits = np.array([[0.1, 0.9, 0.0],   # predicts 1; labels {1, 2}: correct
                       [0.8, 0.1, 0.1],   # predicts 0; labels {2}: wrong
                       [0.0, 0.0, 1.0],   # no ReaL label: left out
                       [0.2, 0.3, 0.5]])  # predicts 2; labels {0, 2}: correct
    multihot = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0], [1, 0, 1]], np.float32)
    correct, keep = real_correct(logits, multihot)
    assert keep.tolist() == [True, True, False, True]
    assert correct.tolist() == [1.0, 0.0, 1.0]
    assert correct.mean() == pytest.approx(2 / 3)


def test_task_end_to_end_selects_on_minival(task_env):
    sets = {"dataset": "proxy_scenes/tiny", "train_split": "train", "minival_split": "validation",
            "eval_datasets": "", "lrs": "0.3,0.01", "epochs": "2,4", "weight_decays": "0",
            "batch_size": "16", "extract_batch_size": "16"}
    rec, _, _ = run_task("linear_probe", task_env["ckpt"], sets=sets, data_dir=task_env["data_dir"],
                         out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)
    m = rec["metrics"]
    grid = rec["info"]["grid"]
    assert len(grid) == 4
    best = max(grid, key=lambda g: g["minival"])
    assert rec["info"]["selected"] == best
    assert m["linear_probe/proxy_scenes/tiny/minival"]["value"] == pytest.approx(best["minival"])
    test = m["linear_probe/proxy_scenes/tiny/test"]["value"]
    assert 0 <= test <= 100
    assert len(rec["per_example"]["linear_probe/proxy_scenes/tiny/test"]) == 24
    assert np.mean(rec["per_example"]["linear_probe/proxy_scenes/tiny/test"]) == pytest.approx(test)
    roles = {d["role"] for d in rec["datasets"]}
    assert roles == {"linear_probe_train", "linear_probe_validation", "linear_probe_test"}
