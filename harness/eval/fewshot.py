"""Closed-form few-shot linear probe (ridge regression on frozen features).

Follows the protocol of big_vision's `evaluators/fewshot_lsr.py`: per seed, sample `shots` examples of
every class, standardise with the sample's statistics, append a constant bias feature, regress {-1,+1}
one-hot targets with an L2 penalty, and score test accuracy of the argmax.

Numerics: big_vision runs this in jax with x64 disabled, i.e. in float32 (XLA on CPU). We solve in
float64 by default: neither numpy float32 nor float64 reproduces XLA's float32 rounding bit for bit,
float64 is the exact-arithmetic answer that the reference approximates, and the two disagree only
on near-tied test examples (see `tests/test_fewshot.py::test_matches_float32_reference_formula`).
Pass `dtype="float32"` to run in the reference's precision.

numpy only: importable without jax or tensorflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError

# A large constant feature makes the bias almost unregularised (its weight needs to be 100x
# smaller than an ordinary feature's to have the same effect, so it pays ~1e-4 of the penalty).
BIAS_CONSTANT = 100.0
STD_EPSILON = 1e-5
DEFAULT_L2_REG = 2.0**10
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = (0, 1, 2)
# Test rows standardised and multiplied at a time; bounds memory for 50k x 1152 test sets.
TEST_CHUNK_ROWS = 4096


def _as_labels(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise HarnessError(f"{what} labels have shape {y.shape}; pass a 1-D array of class ids")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise HarnessError(f"{what} labels have dtype {y.dtype}; pass integer class ids")
    return y


def _class_permutations(train_y: np.ndarray, num_classes: int, seed: int) -> list[np.ndarray]:
    """The reference's draw: one generator, one permutation of each class's indices, in class order."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.where(train_y == c)[0]) for c in range(num_classes)]


def sample_nested(
    train_y: np.ndarray, num_classes: int, shots_list: Iterable[int], seed: int
) -> dict[int, np.ndarray]:
    """Train indices for every shot count from ONE draw, so smaller sets are prefixes per class.

    A class with fewer than `shots` examples contributes all it has; an absent class contributes
    none (its target column is then -1 everywhere, as in the reference).
    """
    train_y = _as_labels(train_y, "train")
    if num_classes < 1:
        raise HarnessError(f"num_classes is {num_classes}; pass the dataset's number of classes")
    shots_list = [int(k) for k in shots_list]
    if any(k < 1 for k in shots_list):
        raise HarnessError(f"shots {shots_list} include a value < 1; pass positive shot counts")
    perms = _class_permutations(train_y, num_classes, seed)
    return {k: np.concatenate([p[:k] for p in perms]).astype(np.int64) for k in shots_list}


def sample_indices(train_y: np.ndarray, num_classes: int, shots: int, seed: int) -> np.ndarray:
    """Indices of the `shots`-per-class training sample for `seed`, concatenated in class order."""
    return sample_nested(train_y, num_classes, [shots], seed)[int(shots)]


def ridge_fit(x: np.ndarray, y_onehot_pm1: np.ndarray, l2_reg: float) -> np.ndarray:
    """Weights (D, C) minimising |x w - y|^2 + l2_reg |w|^2, for already padded features x (N, D).

    Uses the eigendecomposition of the smaller Gram matrix, as big_vision does: with N >= D (D
    counting the bias column, i.e. N >= D_features + 1) w = Q (E + l2)^-1 Q^T x^T y from
    x^T x = Q E Q^T; otherwise w = x^T Q (E + l2)^-1 Q^T y from x x^T = Q E Q^T. The result is
    computed in x's dtype.
    """
    x = np.asarray(x)
    y = np.asarray(y_onehot_pm1, dtype=x.dtype)
    num_points, dim = x.shape
    if num_points >= dim:
        eigs, q = np.linalg.eigh(x.T @ x)
        lhs, rhs = q, q.T @ (x.T @ y)
    else:
        eigs, q = np.linalg.eigh(x @ x.T)
        lhs, rhs = x.T @ q, q.T @ y
    scaling = (1.0 / (eigs + l2_reg)).astype(x.dtype)
    return (lhs * scaling[None, :]) @ rhs


@dataclass(frozen=True)
class _Probe:
    """A fitted probe: the sample's standardisation and the weights (D + 1, C), bias row last."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray


def _fit_probe(
    x: np.ndarray, y: np.ndarray, num_classes: int, l2_reg: float, dtype: np.dtype
) -> _Probe:
    x = np.asarray(x, dtype=dtype)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + STD_EPSILON  # population std, as jnp.std
    x = (x - mean) / std
    x = np.concatenate([x, np.full((len(x), 1), BIAS_CONSTANT, dtype=dtype)], axis=1)
    targets = 2.0 * np.eye(num_classes, dtype=dtype)[y] - 1.0
    return _Probe(mean=mean, std=std, weights=ridge_fit(x, targets, l2_reg))


def _count_correct(
    probes: Mapping[tuple[int, int], _Probe],
    test_x: np.ndarray,
    test_y: np.ndarray,
    dtype: np.dtype,
    chunk_rows: int,
    top: dict | None = None,
) -> dict[tuple[int, int], int]:
    """One pass over the test set (which may be memory-mapped) scoring every probe per chunk. `top`: a dict
    that gets, per probe, the test rows' 5 highest-scoring classes and their scores (the first is the
    argmax: ties go to the lower class id)."""
    correct = dict.fromkeys(probes, 0)
    parts: dict = {key: [] for key in probes}
    for start in range(0, len(test_y), chunk_rows):
        chunk = np.asarray(test_x[start : start + chunk_rows], dtype=dtype)
        labels = test_y[start : start + chunk_rows]
        for key, probe in probes.items():
            # Same as padding the standardised chunk with the constant and multiplying.
            w = probe.weights
            logits = ((chunk - probe.mean) / probe.std) @ w[:-1] + BIAS_CONSTANT * w[-1]
            correct[key] += int(np.count_nonzero(np.argmax(logits, axis=1) == labels))
            if top is not None:
                order = np.argsort(-logits, axis=1, kind="stable")[:, :5]
                parts[key].append((order, np.take_along_axis(logits, order, axis=1)))
    if top is not None:
        for key, chunks in parts.items():
            top[key] = (np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
    return correct


def sweep(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    l2_reg: float = DEFAULT_L2_REG,
    num_classes: int | None = None,
    dtype: str | np.dtype = "float64",
    chunk_rows: int = TEST_CHUNK_ROWS,
    top: dict | None = None,
) -> dict[tuple[int, int], float]:
    """Test accuracy in [0, 1] for every (shots, seed); one sampling per seed serves all shots.

    `num_classes` should come from the dataset metadata (a class absent from the pool still
    counts); it defaults to the largest label + 1 over both sets. `top`: a dict that gets, per
    (shots, seed), each test example's 5 highest-scoring classes [N, 5] and their scores [N, 5].
    """
    train_y = _as_labels(train_y, "train")
    test_y = _as_labels(test_y, "test")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise HarnessError(
            f"features/labels lengths differ (train {len(train_x)}/{len(train_y)}, "
            f"test {len(test_x)}/{len(test_y)}); pass matching arrays"
        )
    if len(test_y) == 0:
        raise HarnessError("the test set is empty; pass a non-empty evaluation split")
    if num_classes is None:
        num_classes = int(max(train_y.max(initial=-1), test_y.max(initial=-1))) + 1
    for what, y in (("train", train_y), ("test", test_y)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise HarnessError(
                f"{what} labels span [{y.min()}, {y.max()}] but num_classes is {num_classes}; "
                "pass the dataset's number of classes"
            )
    dtype = np.dtype(dtype)
    probes: dict[tuple[int, int], _Probe] = {}
    for seed in seeds:
        for k, idx in sample_nested(train_y, num_classes, shots, seed).items():
            if idx.size == 0:
                raise HarnessError("the few-shot training pool is empty; pass a non-empty train split")
            probes[(k, int(seed))] = _fit_probe(
                np.asarray(train_x[idx]), train_y[idx], num_classes, l2_reg, dtype
            )
    correct = _count_correct(probes, test_x, test_y, dtype, chunk_rows, top)
    return {key: n / len(test_y) for key, n in correct.items()}


def evaluate(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    shots: int,
    seed: int,
    l2_reg: float = DEFAULT_L2_REG,
    num_classes: int | None = None,
    dtype: str | np.dtype = "float64",
) -> float:
    """Test accuracy in [0, 1] of the `shots`-per-class probe drawn with `seed`."""
    result = sweep(
        train_x, train_y, test_x, test_y,
        shots=(shots,), seeds=(seed,), l2_reg=l2_reg, num_classes=num_classes, dtype=dtype,
    )
    return result[(int(shots), int(seed))]
