"""Tests for the closed-form few-shot probe (harness/eval/fewshot.py)."""

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.eval import fewshot


def _normal_equations(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Independent oracle: W = (X^T X + l2 I)^-1 X^T Y."""
    return np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ y)


@pytest.mark.parametrize("num_points,dim", [(200, 30), (30, 200), (31, 31), (30, 31)])
def test_ridge_fit_matches_normal_equations(num_points, dim):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(num_points, dim)) * rng.uniform(0.1, 10, size=dim)
    y = 2.0 * np.eye(5)[rng.integers(0, 5, num_points)] - 1.0
    for l2 in (1e-2, 1.0, 2.0**10):
        w = fewshot.ridge_fit(x, y, l2)
        expected = _normal_equations(x, y, l2)
        assert w.shape == (dim, 5)
        np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())


def test_ridge_fit_keeps_float32():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 10)).astype(np.float32)
    y = np.sign(rng.normal(size=(50, 3))).astype(np.float32)
    w = fewshot.ridge_fit(x, y, 1.0)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w, _normal_equations(x.astype(np.float64), y, 1.0), rtol=1e-3)


def test_sample_indices_exact_for_tiny_labels():
    train_y = np.array([2, 0, 1, 0, 2, 2, 0, 1, 0, 2])
    seed = 7
    # The expectation, drawn the reference's way: one generator, classes in order.
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(np.where(train_y == c)[0]) for c in range(3)]
    expected = np.concatenate([p[:2] for p in perms])
    got = fewshot.sample_indices(train_y, 3, 2, seed)
    np.testing.assert_array_equal(got, expected)
    # Class order and the per-class count are visible in the labels.
    np.testing.assert_array_equal(train_y[got], [0, 0, 1, 1, 2, 2])
    # The seed matters.
    assert any(not np.array_equal(fewshot.sample_indices(train_y, 3, 2, s), got) for s in range(8, 12))


def test_sample_nested_prefixes_match_single_draws():
    rng = np.random.default_rng(3)
    train_y = rng.integers(0, 6, 300)
    nested = fewshot.sample_nested(train_y, 6, [1, 5, 10, 25], seed=4)
    for k, idx in nested.items():
        np.testing.assert_array_equal(idx, fewshot.sample_indices(train_y, 6, k, 4))
        assert len(idx) == 6 * k
    # k-shot sets are nested per class: the 5-shot set of class c starts with its 1-shot pick.
    for small, big in [(1, 5), (5, 10), (10, 25)]:
        for c in range(6):
            assert np.array_equal(nested[big][c * big : c * big + small], nested[small][c * small : (c + 1) * small])


def test_sample_absent_and_small_classes():
    # Class 1 is absent; class 3 has only 2 examples; num_classes (5) exceeds the labels seen.
    train_y = np.array([0, 0, 0, 0, 2, 2, 2, 3, 3, 0, 2])
    idx = fewshot.sample_indices(train_y, 5, 3, seed=0)
    labels = train_y[idx]
    np.testing.assert_array_equal(labels, [0, 0, 0, 2, 2, 2, 3, 3])
    assert len(set(idx.tolist())) == len(idx)
    # The absent class still draws from the generator (an empty permutation), as in the reference.
    rng = np.random.default_rng(0)
    perms = [rng.permutation(np.where(train_y == c)[0]) for c in range(5)]
    np.testing.assert_array_equal(idx, np.concatenate([p[:3] for p in perms]))


def _clusters(rng, centers, per_class):
    y = np.repeat(np.arange(len(centers)), per_class)
    x = centers[y] + rng.normal(size=(len(y), centers.shape[1]))
    return x.astype(np.float32), y


def test_separated_clusters_are_solved_at_5_shots():
    rng = np.random.default_rng(5)
    centers = 10.0 * rng.normal(size=(10, 64))
    train_x, train_y = _clusters(rng, centers, 40)
    test_x, test_y = _clusters(rng, centers, 30)
    acc = fewshot.evaluate(train_x, train_y, test_x, test_y, shots=5, seed=0, num_classes=10)
    assert acc == 1.0


def test_random_labels_give_chance():
    rng = np.random.default_rng(6)
    train_x = rng.normal(size=(2000, 32)).astype(np.float32)
    train_y = rng.integers(0, 10, 2000)
    test_x = rng.normal(size=(3000, 32)).astype(np.float32)
    test_y = rng.integers(0, 10, 3000)
    accs = fewshot.sweep(train_x, train_y, test_x, test_y, shots=(5, 25), seeds=(0, 1), num_classes=10)
    assert set(accs) == {(5, 0), (5, 1), (25, 0), (25, 1)}
    for acc in accs.values():
        assert 0.05 < acc < 0.15


def _oracle_accuracy(train_x, train_y, test_x, test_y, idx, num_classes, l2):
    """Our reading of the protocol, written plainly: pad, normal equations, argmax."""
    x = train_x[idx].astype(np.float64)
    mean, std = x.mean(0), x.std(0) + 1e-5

    def pad(a):
        return np.concatenate([(a - mean) / std, np.full((len(a), 1), 100.0)], axis=1)

    y = 2.0 * np.eye(num_classes)[train_y[idx]] - 1.0
    w = _normal_equations(pad(x), y, l2)
    return np.mean(np.argmax(pad(test_x.astype(np.float64)) @ w, axis=1) == test_y)


@pytest.mark.parametrize("shots", [1, 5, 25])
def test_sweep_matches_plain_oracle(shots):
    rng = np.random.default_rng(7)
    num_classes, dim = 8, 48  # 1 and 5 shots solve in the X X^T regime, 25 shots in X^T X.
    centers = rng.normal(size=(num_classes, dim))
    # Class 7 is absent from the pool and class 0 has 3 examples: unequal class counts make the
    # per-class bias matter, so the constant feature's value is tested too.
    train_y = rng.integers(1, num_classes - 1, 600)
    train_y[:3] = 0
    test_y = rng.integers(0, num_classes, 900)
    train_x = (centers[train_y] + 1.5 * rng.normal(size=(600, dim)) + 3.0).astype(np.float32)
    test_x = (centers[test_y] + 1.5 * rng.normal(size=(900, dim)) + 3.0).astype(np.float32)
    # Small chunks exercise the chunked test loop.
    accs = fewshot.sweep(train_x, train_y, test_x, test_y, shots=(shots,), seeds=(0, 1, 2),
                         num_classes=num_classes, chunk_rows=128)
    for seed in (0, 1, 2):
        idx = fewshot.sample_indices(train_y, num_classes, shots, seed)
        expected = _oracle_accuracy(train_x, train_y, test_x, test_y, idx, num_classes, 2.0**10)
        assert accs[(shots, seed)] == pytest.approx(expected, abs=1e-12)
    assert accs[(shots, 0)] > 2.0 / num_classes  # well above chance, so the check is not vacuous


def test_sweep_equals_evaluate_per_setting():
    rng = np.random.default_rng(8)
    train_x, train_y = rng.normal(size=(300, 20)), rng.integers(0, 4, 300)
    test_x, test_y = rng.normal(size=(100, 20)), rng.integers(0, 4, 100)
    train_x[:, 0] += 3 * train_y
    test_x[:, 0] += 3 * test_y
    accs = fewshot.sweep(train_x, train_y, test_x, test_y, shots=(1, 10), seeds=(0, 3))
    for (shots, seed), acc in accs.items():
        assert acc == fewshot.evaluate(train_x, train_y, test_x, test_y, shots=shots, seed=seed)


def test_bad_inputs_raise_harness_error():
    x, y = np.zeros((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(HarnessError):
        fewshot.evaluate(x, y, x, np.array([0, 1, 2, 1]), shots=1, seed=0, num_classes=2)
    with pytest.raises(HarnessError):
        fewshot.evaluate(x, y[:3], x, y, shots=1, seed=0)
    with pytest.raises(HarnessError):
        fewshot.sample_indices(y, 2, 0, seed=0)


def _jax_float32_accuracy(jax, train_x, train_y, test_x, test_y, idx, num_classes, l2):
    """The reference's computation re-stated in jax with its default float32."""
    jnp = jax.numpy
    x = jnp.asarray(train_x[idx])
    mean, std = x.mean(0), x.std(0) + 1e-5

    def pad(a):
        return jnp.pad((a - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)

    xp = pad(x)
    y = 2.0 * jax.nn.one_hot(train_y[idx], num_classes) - 1.0
    if len(xp) >= xp.shape[1]:
        eigs, q = jnp.linalg.eigh(xp.T @ xp)
        lhs, rhs = q, q.T @ (xp.T @ y)
    else:
        eigs, q = jnp.linalg.eigh(xp @ xp.T)
        lhs, rhs = xp.T @ q, q.T @ y
    w = (lhs / (eigs + l2)[None, :]) @ rhs
    return float(jnp.mean(jnp.argmax(pad(jnp.asarray(test_x)) @ w, axis=1) == test_y))


def test_matches_float32_reference_formula():
    """The reference runs in jax float32; near-tied test examples may flip, nothing more."""
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(9)
    num_classes, dim = 20, 64
    centers = rng.normal(size=(num_classes, dim))
    train_y = rng.integers(0, num_classes, 1000)
    test_y = rng.integers(0, num_classes, 2000)
    train_x = (centers[train_y] + 2.0 * rng.normal(size=(1000, dim)) + 5).astype(np.float32)
    test_x = (centers[test_y] + 2.0 * rng.normal(size=(2000, dim)) + 5).astype(np.float32)
    for shots in (1, 10):  # X X^T and X^T X regimes
        idx = fewshot.sample_indices(train_y, num_classes, shots, 0)
        ref_acc = _jax_float32_accuracy(jax, train_x, train_y, test_x, test_y, idx, num_classes, 2.0**10)
        for dtype in ("float64", "float32"):
            acc = fewshot.evaluate(train_x, train_y, test_x, test_y, shots=shots, seed=0,
                                   num_classes=num_classes, dtype=dtype)
            assert abs(acc - ref_acc) <= 0.002  # at most 4 of 2000 near-ties

def test_accepts_memory_mapped_low_precision_features(tmp_path):
    rng = np.random.default_rng(10)
    train_x = rng.normal(size=(200, 16)).astype(np.float16)
    train_y = rng.integers(0, 4, 200)
    train_x[np.arange(200), train_y] += 4  # class c lives along axis c
    test_x = np.lib.format.open_memmap(tmp_path / "test.npy", mode="w+", dtype=np.float16, shape=(300, 16))
    test_y = rng.integers(0, 4, 300)
    test_x[:] = rng.normal(size=(300, 16)) + 4 * (np.arange(16) == test_y[:, None])
    test_x.flush()
    test_x = np.load(tmp_path / "test.npy", mmap_mode="r")
    acc = fewshot.evaluate(train_x, train_y, test_x, test_y, shots=10, seed=0, num_classes=4)
    assert acc == fewshot.evaluate(train_x.astype(np.float32), train_y, np.asarray(test_x, np.float32),
                                   test_y, shots=10, seed=0, num_classes=4)
    assert acc > 0.5


def test_matches_big_visions_own_evaluator():
    """`tests/data/bv_fewshot.npz`: big_vision's `fewshot_lsr.Evaluator.compute_fewshot_metrics` (its
    sampling and its float32 CPU solver) on fixed features, 3 cases x 3 seeds x 5 shot counts, including
    the x x^T branch (N < D+1) and a class with no training example. Ours gives the same count of correct
    test examples everywhere but on near-tied examples: at most one example in one setting."""
    import json
    from pathlib import Path

    folder = Path(__file__).parent / "data"
    z = np.load(folder / "bv_fewshot.npz")
    meta = json.loads((folder / "bv_fewshot.json").read_text())
    for dtype in ("float64", "float32"):
        flips = 0
        for case, info in meta["cases"].items():
            args = [z[f"{case}/{k}"] for k in ("train_x", "train_y", "test_x", "test_y")]
            n_test = len(args[3])
            for i, seed in enumerate(meta["seeds"]):
                for j, shots in enumerate(meta["shots"]):
                    ours = fewshot.evaluate(*args, shots=shots, seed=seed, num_classes=info["num_classes"],
                                            l2_reg=meta["l2_reg"], dtype=dtype)
                    diff = round(abs(ours - float(z[f"{case}/accuracy"][i, j])) * n_test)
                    assert diff <= 1, (dtype, case, seed, shots, ours)
                    flips += diff
        assert flips <= 1, dtype
