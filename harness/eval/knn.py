"""k-nearest-neighbour classification on frozen features, as DINOv2 / DINOv3 evaluate it
(`dinov2/eval/knn.py`, `dinov3/eval/knn.py`: `KnnModule`).

Train (memory bank) and test features are L2-normalised; the similarity is their dot product (cosine); each
test example's `max_k = max(ks)` most similar train examples are found; their votes are
`softmax(sim / T)` over those `max_k` (T = 0.07), and the score of a class for k is the sum of the votes of
the first k neighbours with that label (so class scores are `exp(sim/T)` votes up to one constant per
example). Prediction = the highest score; top-5 = the label among the five highest.

The bank is read in chunks and merged into a running top-k (`jax.lax.top_k` of the running best and the
chunk's similarities), so memory holds the queries, one bank chunk, one block of similarities and the
running `max_k` best per query, never a test x train matrix: ImageNet (1.28M x 1152 float32 bank, 50k
queries) peaks at about the queries (230 MB) + one chunk (300 MB) + one similarity block (256 MB) + the
running state (80 MB). DINOv2 chunks the bank over ranks and merges their top-k the same way, which is
exact.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from harness.errors import HarnessError

DEFAULT_KS = (10, 20, 100, 200)  # dinov2/eval/knn.py `nb_knn`; dinov3 TrainConfig.ks
TEMPERATURE = 0.07  # dinov2/eval/knn.py `temperature`; dinov3 TrainConfig.temperature
NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps (dinov2/eval/utils.py ModelWithNormalize)


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of `x` divided by their L2 norm (at least NORM_EPS), as torch's F.normalize."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), NORM_EPS)


@functools.partial(jax.jit, static_argnames=("k",))
def _merge(vals, idx, queries, chunk, valid, offset, *, k):
    """The running top-k of each query merged with one bank chunk's similarities (padding rows masked)."""
    sims = queries @ chunk.T
    sims = jnp.where(valid[None, :], sims, -jnp.inf)
    chunk_idx = offset + jnp.arange(chunk.shape[0], dtype=jnp.int32)
    all_vals = jnp.concatenate([vals, sims], axis=1)
    all_idx = jnp.concatenate([idx, jnp.broadcast_to(chunk_idx, sims.shape)], axis=1)
    top_vals, where = jax.lax.top_k(all_vals, k)
    return top_vals, jnp.take_along_axis(all_idx, where, axis=1)


def neighbours(train_x, test_x, k: int, *, chunk_size: int = 65536, query_batch: int = 1024,
               progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(similarities [M, k] in decreasing order, train indices [M, k]) of each test row's k nearest train rows
    by cosine similarity, the bank read `chunk_size` rows at a time (a memory-mapped array stays on disk)."""
    n, m = len(train_x), len(test_x)
    if not 1 <= k <= n:
        raise HarnessError(f"knn: k={k} neighbours cannot be drawn from a memory bank of {n} examples")
    queries = normalize(test_x)
    chunk_size = max(1, min(chunk_size, n))
    query_batch = max(1, min(query_batch, m))
    pad_q = -m % query_batch
    queries = jnp.asarray(np.pad(queries, ((0, pad_q), (0, 0))))
    vals = jnp.full((len(queries), k), -jnp.inf, jnp.float32)
    idx = jnp.zeros((len(queries), k), jnp.int32)
    for start in range(0, n, chunk_size):
        part = normalize(train_x[start:start + chunk_size])
        valid = np.arange(chunk_size) < len(part)
        chunk = jnp.asarray(np.pad(part, ((0, chunk_size - len(part)), (0, 0))))  # one shape: one compilation
        outs = [_merge(vals[q:q + query_batch], idx[q:q + query_batch], queries[q:q + query_batch], chunk,
                       jnp.asarray(valid), start, k=k) for q in range(0, len(queries), query_batch)]
        vals = jnp.concatenate([o[0] for o in outs])
        idx = jnp.concatenate([o[1] for o in outs])
        if progress is not None:
            progress(min(start + chunk_size, n), n)
    return np.asarray(vals)[:m], np.asarray(idx)[:m]


def class_scores(sims: np.ndarray, labels: np.ndarray, ks, num_classes: int,
                 temperature: float = TEMPERATURE) -> dict[int, np.ndarray]:
    """{k: [M, C] class scores}: the neighbours' votes `softmax(sims / T)` over all of them (dinov2/eval/knn.py
    `topk_sims_transform`), summed per label over the first k."""
    z = np.asarray(sims, np.float64) / temperature
    w = np.exp(z - z.max(axis=1, keepdims=True))
    w = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
    rows = np.arange(len(w))[:, None]
    out = {}
    for k in sorted(ks):
        scores = np.zeros((len(w), num_classes), np.float32)
        np.add.at(scores, (np.broadcast_to(rows, (len(w), k)), labels[:, :k]), w[:, :k])
        out[k] = scores
    return out


def ranked_classes(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(the k highest-scoring classes [M, k], their scores [M, k]) per example: the k classes `top_k_correct`
    counts (np.argpartition's: classes tied on their score, those no neighbour voted for at a small k, are
    picked arbitrarily, as torch.topk picks them in the references), in decreasing score, ties by class id."""
    scores = np.asarray(scores)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((best, -vals), axis=-1)
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(vals, order, axis=1)


def top_k_correct(scores: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Per example: is the target among the k highest class scores (top-1: the argmax, the lowest class
    index among ties; top-k: `ranked_classes`' k)."""
    targets = np.asarray(targets)
    if k == 1:
        return np.argmax(scores, axis=1) == targets
    return (ranked_classes(scores, k)[0] == targets[:, None]).any(axis=1)


def evaluate(train_x, train_y, test_x, test_y, *, ks=DEFAULT_KS, temperature: float = TEMPERATURE,
             num_classes: int | None = None, chunk_size: int = 65536, progress=None) -> dict:
    """kNN accuracy per k: {"top1": {k: [M] bool}, "top5": {k: [M] bool} (with at least 5 classes, as DINOv3),
    "k": {k: the k used}, "ranked": {k: `ranked_classes`' top 5 (or all classes, if fewer)}}. A k larger than
    the bank is the bank's size (DINOv3 `min(k, N)`)."""
    train_y = np.asarray(train_y, np.int64)
    num_classes = int(num_classes or (train_y.max() + 1))
    n = len(train_y)
    used = {k: min(int(k), n) for k in ks}
    sims, idx = neighbours(train_x, test_x, max(used.values()), chunk_size=chunk_size, progress=progress)
    scores = class_scores(sims, train_y[idx], set(used.values()), num_classes, temperature)
    out = {"top1": {}, "top5": {}, "k": used, "ranked": {}}
    for k, kk in used.items():
        out["top1"][k] = top_k_correct(scores[kk], test_y, 1)
        out["ranked"][k] = ranked_classes(scores[kk], min(5, num_classes))
        if num_classes >= 5:
            out["top5"][k] = (out["ranked"][k][0] == np.asarray(test_y)[:, None]).any(axis=1)
    return out
