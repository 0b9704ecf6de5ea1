"""Fine-tuning machinery: sigmoid cross-entropy, mixup, a fresh classifier head, layer-wise lr decay
multipliers (the optimiser itself is big_vision's chain, `harness.train.optim`), and ReaL scoring.

The paper's Table 1 recipe (arXiv 2305.13035) is SGD with momentum, a cosine schedule, global-norm
clipping, no weight decay, and a *sigmoid* cross-entropy loss on a head initialised to kernel 0 and bias
-6.9 (sigmoid(-6.9) ~ 1/1000: every class starts at ImageNet's prior, so the first steps do not waste the
pretrained features on undoing a random head). Everything here is pure (jax / numpy) so it is testable
without data.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from harness import checkpoints
from harness.errors import HarnessError

HEAD_BIAS_INIT = -6.9


# ------------------------------------------------------------------------------------------------ loss
def sigmoid_xent(logits, labels):
    """Per-class binary cross-entropy, summed over classes, mean over the batch (big_vision's
    `sigmoid_xent`): `-sum_c [y log s(z) + (1 - y) log s(-z)]`. `labels` are (multi-)hot floats."""
    logits = jnp.asarray(logits, jnp.float32)
    nll = -jnp.sum(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits), axis=-1)
    return jnp.mean(nll)


def mixup_weight(seed: int, step: int, alpha: float) -> float:
    """The mixup weight of one training step: a Beta(alpha, alpha) draw folded to >= 1/2 (so each mix stays
    closer to its own example). Drawn on the host from (seed, step) alone, so a resumed run draws the same
    weights, and the jitted step carries no Beta sampler (whose rejection loops are slow to compile)."""
    lam = float(np.random.default_rng([int(seed), int(step), 0x3A1]).beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def mixup(images, labels, lam):
    """Mixes every example with its neighbour in the batch (a roll by one) with weight `lam`, one weight
    for the whole batch; labels are mixed the same way."""
    def mix(x):
        return (lam * x + (1.0 - lam) * jnp.roll(x, 1, axis=0)).astype(x.dtype)

    return mix(images), mix(labels)


# ------------------------------------------------------------------------------------------------ head
def with_new_head(encoder_params: dict, target: dict, *, bias_init: float = HEAD_BIAS_INIT) -> dict:
    """The encoder's parameters (any old `head` dropped) plus a new `head` shaped as in `target` (the
    abstract flat tree of the model with the new class count): kernel zeros, bias `bias_init`."""
    flat = {k: v for k, v in checkpoints.flatten(encoder_params).items() if not k.startswith("head/")}
    for key in ("head/kernel", "head/bias"):
        if key not in target:
            raise HarnessError("the fine-tuning model has no classifier head; set num_classes")
    flat["head/kernel"] = jnp.zeros(target["head/kernel"].shape, target["head/kernel"].dtype)
    flat["head/bias"] = jnp.full(target["head/bias"].shape, bias_init, target["head/bias"].dtype)
    missing, extra = sorted(set(target) - set(flat)), sorted(set(flat) - set(target))
    if missing or extra:
        raise HarnessError(f"encoder parameters do not fit the fine-tuning model (missing {missing[:3]}, "
                           f"unexpected {extra[:3]}); this is a bug, please report it")
    for k, t in target.items():
        if tuple(flat[k].shape) != tuple(t.shape):
            raise HarnessError(f"encoder parameter {k} has shape {tuple(flat[k].shape)} but the fine-tuning "
                               f"model expects {tuple(t.shape)}; this is a bug, please report it")
    return checkpoints.unflatten(flat)


# ----------------------------------------------------------------------------------- layer-wise lr decay
_STEM = ("embedding/", "pos_embedding", "cls")
_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/")
_SCANNED_BLOCK = "Transformer/encoderblock/"


def layer_decay_multipliers(params: dict, depth: int, decay: float) -> dict:
    """Per-leaf lr multipliers (a tree like `params`) for layer-wise lr decay, BEiT's layering: the stem
    (patch embedding, posemb, cls) is layer 0, block i is layer i + 1, and everything after the blocks
    (final LN, MAP head, pre_logits, head) is layer depth + 1 with multiplier 1; layer l gets
    `decay ** (depth + 1 - l)`. A scanned block's leaves get a vector along their leading depth axis."""
    flat = checkpoints.flatten(params)
    out = {}
    for key, leaf in flat.items():
        if key.startswith(_STEM):
            mult = np.asarray(decay ** (depth + 1), np.float32)
        elif (m := _BLOCK.match(key)) is not None:
            mult = np.asarray(decay ** (depth - int(m.group(1))), np.float32)
        elif key.startswith(_SCANNED_BLOCK):
            per_layer = decay ** (depth - np.arange(depth, dtype=np.float64))
            mult = per_layer.astype(np.float32).reshape((depth,) + (1,) * (len(np.shape(leaf)) - 1))
        else:
            mult = np.asarray(1.0, np.float32)
        out[key] = mult
    return checkpoints.unflatten(out)


# ------------------------------------------------------------------------------------------------ scoring
def multi_hot(label_sets, num_classes: int) -> np.ndarray:
    """Padded label lists [N, K] (-1 = no label, as batches pad integer sequences) -> multi-hot [N, C]."""
    sets = np.asarray(label_sets)
    if sets.ndim == 1:
        sets = sets[:, None]
    out = np.zeros((sets.shape[0], num_classes), np.float32)
    rows, cols = np.nonzero(sets >= 0)
    labels = sets[rows, cols]
    if labels.size and labels.max() >= num_classes:
        raise HarnessError(f"label {int(labels.max())} is out of range for {num_classes} classes")
    out[rows, labels] = 1.0
    return out


def top1_correct(predictions, labels) -> np.ndarray:
    """1.0 where the predicted class is the label, else 0.0 (per example)."""
    return (np.asarray(predictions) == np.asarray(labels)).astype(np.float64)


def real_correct(predictions, real_multi_hot) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet ReaL (Beyer et al. 2020): a prediction is right if it is in the image's label set; images
    whose set is empty are left out. Returns (per-example 0/1 scores of the kept images, kept mask)."""
    hot = np.asarray(real_multi_hot)
    pred = np.asarray(predictions).astype(np.int64)
    if hot.ndim != 2 or pred.shape != (hot.shape[0],):
        raise HarnessError(f"ReaL scoring needs predictions [N] and multi-hot labels [N, C]; got "
                           f"{pred.shape} and {hot.shape}")
    keep = hot.sum(axis=1) > 0
    hit = hot[np.arange(len(pred)), np.clip(pred, 0, hot.shape[1] - 1)] > 0
    hit &= (pred >= 0) & (pred < hot.shape[1])
    return hit[keep].astype(np.float64), keep


def real_accuracy(predictions, real_multi_hot) -> float:
    """ReaL top-1 in %, over the images that have at least one ReaL label (NaN if none has)."""
    scores, _ = real_correct(predictions, real_multi_hot)
    return float(100.0 * scores.mean()) if scores.size else float("nan")


def layer_decay_summary(mults: Any) -> dict:
    """min / max multiplier, for the run record."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(mults)]
    return {"min": float(min(x.min() for x in leaves)), "max": float(max(x.max() for x in leaves))}
