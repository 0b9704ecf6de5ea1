"""Trainable heads on frozen, cached features: SGD on the features in device memory, over a grid of
hyper-parameters, the point chosen on a held-out minival split (the paper's linear probe, Table 2; and the
dense probes built on the same loop).

`train_linear` trains a zero-initialised softmax head with big_vision's optimiser chain
(`harness.train.optim`), one jitted epoch (a scan over its steps) per data shape, every hyper-parameter
traced so a whole grid runs on one compilation; `select_on_minival` walks a grid and keeps the best point.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from harness.errors import HarnessError
from harness.scale import sharding
from harness.train import optim


def probe_optimizer(lr, weight_decay, momentum, total_steps):
    """big_vision's chain (harness.train.optim) for a probe: momentum_hp (SGD momentum, bfloat16 trace), lr,
    then `weight_decay` as big_vision's `wd` (wd * kernel, not times lr; the bias is not decayed), cosine
    schedule without warm-up. Every argument may be traced."""
    # The probe's tree IS the head: its `kernel` is what big_vision's `.*/kernel$` matches as head/kernel.
    return optim.make_optimizer("sgd_momentum", lr=lr, wd=weight_decay, momentum=momentum,
                                schedule=optim.cosine_schedule(total_steps), wd_mults=(("kernel", 1.0),))


def _epoch_fn(batch_sharding=None):
    """One jitted SGD epoch of a softmax head. `batch_sharding` (on a mesh): each step's batch is split over
    the data axis, so every device computes the gradient of its rows and the sum is reduced over the mesh."""

    def loss_fn(params, bx, by_soft):
        logits = bx @ params["kernel"] + params["bias"]
        return -(by_soft * jax.nn.log_softmax(logits)).sum(-1).mean()

    def epoch(state, xs, ys, order, lams, lr, weight_decay, momentum, total, *, num_classes):
        tx = probe_optimizer(lr, weight_decay, momentum, total)

        def step(state, inputs):
            params, opt_state = state
            idx, lam = inputs
            bx, by = xs[idx], jax.nn.one_hot(ys[idx], num_classes)
            if batch_sharding is not None:
                bx = jax.lax.with_sharding_constraint(bx, batch_sharding)
                by = jax.lax.with_sharding_constraint(by, batch_sharding)
            # big_vision-style mixup: one lambda per batch, partner = the batch rolled by one.
            bx = lam * bx + (1 - lam) * jnp.roll(bx, 1, axis=0)
            by = lam * by + (1 - lam) * jnp.roll(by, 1, axis=0)
            updates, opt_state = tx.update(jax.grad(loss_fn)(params, bx, by), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        state, _ = jax.lax.scan(step, state, (order, lams))
        return state

    # Every hyper-parameter is an argument, so the whole grid runs on one compilation per data shape.
    return jax.jit(epoch, static_argnames=("num_classes",))


_EPOCHS: dict = {}


def train_linear(x: np.ndarray, y: np.ndarray, num_classes: int, *, lr: float, epochs: int,
                 weight_decay: float, batch_size: int, momentum: float = 0.9, mixup: float = 0.0,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """A softmax head {"kernel" [D, C], "bias" [C]} trained from zeros with SGD (`probe_optimizer`) on
    features `x` [N, D] and integer labels `y` [N]. Mixup (Beta(mixup, mixup), 0: off) mixes features and
    labels, since the encoder is frozen. The example order of epoch e is `default_rng([seed, e])`.
    The features live on the device for the whole run (ImageNet's 1.28M x 1152 float32: 5.9 GB), on every
    device of a mesh (replicated; each step's batch is split over the devices)."""
    n, d = x.shape
    if n == 0:
        raise HarnessError("probe: the training split is empty")
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size
    total = float(steps_per_epoch * epochs)
    on_mesh = sharding.is_sharded()
    key = sharding.batch_sharding() if on_mesh else None
    if key not in _EPOCHS:
        _EPOCHS[key] = _epoch_fn(key)
    epoch_fn = _EPOCHS[key]
    params = {"kernel": np.zeros((d, num_classes), np.float32), "bias": np.zeros((num_classes,), np.float32)}
    # The state's structure does not depend on the values (a nonzero wd: the traced chain always has it).
    state = (params, probe_optimizer(1.0, 1.0, momentum, total).init(params))
    inputs = (np.asarray(x, np.float32), np.asarray(y, np.int32), state)
    if on_mesh:
        xs, ys, state = sharding.place(inputs, jax.tree.map(lambda _: sharding.replicated(), inputs))
    else:
        xs, ys, state = jax.tree.map(jnp.asarray, inputs)
    for e in range(epochs):
        rng = np.random.default_rng([seed, e])
        order = rng.permutation(n)[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
        lams = rng.beta(mixup, mixup, steps_per_epoch) if mixup > 0 else np.ones(steps_per_epoch)
        order, lams = order.astype(np.int32), lams.astype(np.float32)
        if on_mesh:
            order, lams = sharding.place((order, lams), (sharding.replicated(), sharding.replicated()))
        state = epoch_fn(state, xs, ys, order, lams, lr, weight_decay, momentum, total, num_classes=num_classes)
    return sharding.to_host_tree(state[0]) if on_mesh else jax.tree.map(np.asarray, state[0])


def predict_linear(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The head's logits [N, C] for features `x` [N, D]."""
    return np.asarray(x, np.float32) @ params["kernel"] + params["bias"]


def grid(**axes: Iterable) -> list[dict[str, Any]]:
    """Every combination of the axes' values, in order (the first axis varies slowest):
    grid(lr=(1e-3, 1e-4), epochs=(1, 3)) -> [{lr: 1e-3, epochs: 1}, {lr: 1e-3, epochs: 3}, ...]."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(tuple(axes[n]) for n in names))]


def select_on_minival(points: Iterable[Mapping[str, Any]], fit: Callable[[Mapping[str, Any]], Any],
                      score: Callable[[Any], float]) -> tuple[dict, Any, list[dict]]:
    """Fits a head at every grid point and scores it on minival (higher is better); returns (the chosen
    point with its score under "minival", its head, every point with its score). Ties keep the earlier
    point, so the grid's order states the preference (e.g. larger lr and fewer epochs first)."""
    table, best = [], None
    for point in points:
        head = fit(point)
        row = {**point, "minival": float(score(head))}
        table.append(row)
        if best is None or row["minival"] > best[0]["minival"]:
            best = (row, head)
    if best is None:
        raise HarnessError("probe: the hyper-parameter grid is empty")
    return best[0], best[1], table
