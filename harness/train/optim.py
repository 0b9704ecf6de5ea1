"""big_vision's optimiser chain, the one every trainer of the harness uses.

`make_optimizer` assembles what `big_vision/optax.py::make` assembles, in its order:

    clip_by_global_norm(grad_clip_norm)        # config.grad_clip_norm
    -> the optimiser                           # config.optax_name (+ config.optax kwargs)
    -> scale(lr) -> per-leaf lr multipliers    # config.lr, config.lr_mults
    -> add_decayed_weights(wd * mult, mask)    # config.wd, config.wd_mults (default `.*/kernel$`)
    -> scale_by_schedule(schedule)             # config.schedule (a multiplier, base 1.0)
    -> scale(-1)

so a step is `param -= schedule(t) * (lr * opt(grad) + wd * param)`: the weight decay is added after the
lr scaling (it is NOT multiplied by lr, unlike `optax.adamw`), only on the leaves its mask selects, and the
schedule multiplies both. Optimisers (big_vision's `optax_name`):

- `adafactor`: `big_vision.scale_by_adafactor`: factored second moments (decay_rate 0.8, decay
  `min(0.999, 1 - t^-0.8)`, dims >= 32 factored, eps 1e-30), no update clipping, then momentum 0.9 as an
  EMA without debiasing in a bfloat16 accumulator. Not `optax.adafactor` (no momentum, update clipping
  at 1.0, dims >= 128 factored).
- `adam`: `scale_by_adam` with optax's (= big_vision's) defaults b1 0.9, b2 0.999, eps 1e-8.
- `sgd_momentum`: `big_vision.momentum_hp`: `optax.trace(0.9)` in a bfloat16 accumulator.
- `sgd`: `big_vision.sgd` (the identity: plain SGD).

Our code, written from big_vision's (commit 0127fb6); `tests/test_optim.py` checks it against
big_vision's own `optax.make` on a fixed gradient stream (`tests/data/bv_optax/`).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from harness.errors import HarnessError

# big_vision/optax.py::make: `wd_mults` default, decay on every kernel and nothing else.
DEFAULT_WD_MULTS: tuple[tuple[str, float], ...] = ((r".*/kernel$", 1.0),)
OPTIMIZERS = ("adafactor", "adam", "sgd_momentum", "sgd")


# -------------------------------------------------------------------------------------------- schedule
def cosine_schedule(total_steps, warmup_steps: int = 0) -> Callable:
    """big_vision's `utils.create_learning_rate_schedule(total_steps, base=1.0, decay_type="cosine",
    warmup_steps=...)`: a multiplier in [0, 1] of the step, `0.5 * (1 + cos(pi * progress))` with progress
    `(step - warmup) / (total - warmup)` clipped to [0, 1], times `min(1, step / warmup)` during warm-up.

    `total_steps` may be a traced value (the linear probe runs its whole grid on one compilation);
    `warmup_steps` is a Python number, kept below `total_steps` (big_vision refuses warmup >= total)."""
    if isinstance(total_steps, (int, float)):
        warmup_steps = int(min(warmup_steps, max(total_steps - 1, 0)))

    def schedule(step):
        progress = (step - warmup_steps) / jnp.maximum(total_steps - warmup_steps, 1)
        mult = 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(progress, 0.0, 1.0)))
        if warmup_steps:
            mult = mult * jnp.minimum(1.0, step / warmup_steps)
        return jnp.asarray(mult, jnp.float32)

    return schedule


# ----------------------------------------------------------------------------------------- optimisers
def scale_by_adafactor(*, min_dim_size_to_factor: int = 32, decay_rate: float = 0.8, decay_offset: int = 0,
                       beta2_cap: float = 0.999, clipping_threshold: float | None = None,
                       momentum: float | None = 0.9, dtype_momentum: Any = "bfloat16", eps: float = 1e-30):
    """big_vision's AdaFactor (`big_vision/optax.py::scale_by_adafactor`; every default is its default)."""
    def second_moment_decay(step, exponent):
        # big_vision's `_decay_rate_pow`: 1 - t^-0.8 with t = step + 1, capped at beta2_cap.
        t = jnp.asarray(step, jnp.float32) + 1.0
        return jnp.minimum(beta2_cap, 1.0 - t ** (-exponent))

    parts = [optax.scale_by_factored_rms(factored=True, decay_rate=decay_rate, step_offset=decay_offset,
                                         min_dim_size_to_factor=min_dim_size_to_factor, epsilon=eps,
                                         decay_rate_fn=second_moment_decay)]
    if clipping_threshold:
        parts.append(optax.clip_by_block_rms(clipping_threshold))
    if momentum:
        parts.append(optax.ema(momentum, debias=False, accumulator_dtype=jnp.dtype(dtype_momentum)))
    return optax.chain(*parts)


def momentum_hp(*, momentum: float = 0.9, dtype: Any = "bfloat16", nesterov: bool = False):
    """big_vision's SGD momentum with a half-precision accumulator (`big_vision/optax.py::momentum_hp`)."""
    return optax.trace(decay=momentum, accumulator_dtype=jnp.dtype(dtype), nesterov=nesterov)


def _optimizer(name: str, kwargs: dict):
    builders = {"adafactor": scale_by_adafactor, "adam": optax.scale_by_adam, "sgd_momentum": momentum_hp,
                "sgd": optax.identity}
    if name not in builders:
        raise HarnessError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    try:
        return builders[name](**kwargs)
    except TypeError as e:
        raise HarnessError(f"optimizer {name}: {e}") from None


# -------------------------------------------------------------------------------------------- masks
def _leaf_name(path) -> str:
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
    return "/".join(parts)


def mask_trees(params, patterns: Sequence[str]) -> list:
    """One boolean tree like `params` per pattern; a leaf (named by its "/"-joined path) belongs to the
    FIRST pattern that fully matches it (big_vision's `utils.make_mask_trees`)."""
    compiled = [re.compile(p) for p in patterns]

    def first_match(path, _):
        name = _leaf_name(path)
        return next((i for i, p in enumerate(compiled) if p.fullmatch(name)), -1)

    owner = jax.tree_util.tree_map_with_path(first_match, params)
    return [jax.tree.map(lambda o, i=i: o == i, owner) for i in range(len(compiled))]


def _scale_leaves(mults):
    """Multiplies each update leaf by its multiplier (a tree like the params; a scanned block's leaves may
    hold one multiplier per layer along the leading axis)."""
    mults = jax.tree.map(np.asarray, mults)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, mults), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# ------------------------------------------------------------------------------------------ the chain
def make_optimizer(name: str, *, lr, schedule: Callable, wd=0.0, grad_clip_norm: float | None = None,
                   wd_mults: Sequence[tuple[str, float]] = DEFAULT_WD_MULTS, lr_mults: Any = None,
                   **optimizer_kw):
    """big_vision's `optax.make` chain (see the module docstring).

    name: `adafactor`, `adam`, `sgd_momentum` or `sgd`; `optimizer_kw` go to it (big_vision's
    `config.optax`, e.g. `b2=0.95`, `momentum=0.9`, `mu_dtype="bfloat16"`).
    lr: big_vision's `config.lr` (may be traced). schedule: a multiplier of the step (`cosine_schedule`).
    wd: big_vision's `config.wd` (may be traced): `wd * mult * param` on the leaves of each `wd_mults`
    pattern, after the lr scaling. grad_clip_norm: global-norm clip before the optimiser (0/None: none).
    lr_mults: None, or a tree like the params of per-leaf lr multipliers (layer-wise lr decay); as
    big_vision's `lr_mults` they scale the optimiser's update, not the weight decay.
    """
    parts = []
    if grad_clip_norm:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    parts.append(_optimizer(name, optimizer_kw))
    parts.append(optax.scale(lr))
    if lr_mults is not None:
        parts.append(_scale_leaves(lr_mults))
    if not (isinstance(wd, (int, float)) and wd == 0):
        patterns = [p for p, _ in wd_mults]
        parts += [optax.add_decayed_weights(wd * mult, lambda tree, i=i: mask_trees(tree, patterns)[i])
                  for i, (_, mult) in enumerate(wd_mults)]
    parts += [optax.scale_by_schedule(schedule), optax.scale(-1.0)]
    return optax.chain(*parts)


__all__ = ["DEFAULT_WD_MULTS", "OPTIMIZERS", "cosine_schedule", "make_optimizer", "mask_trees",
           "momentum_hp", "scale_by_adafactor"]
