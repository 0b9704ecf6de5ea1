"""Linear dense heads on a frozen encoder's patch tokens: DINOv3's linear semantic-segmentation and
monocular-depth probes (`dinov3/eval/segmentation/models/heads/linear_head.py`,
`dinov3/eval/depth/models/linear_head.py`), trained as DINOv3's `train.py`s train them.

The head is BatchNorm (batch statistics in training, running statistics at eval; torch's BatchNorm2d
defaults, momentum 0.1, eps 1e-5) and a 1x1 convolution (weights N(0, 0.01), bias 0) on the last layer's patch
tokens after the final norm (`patch_grid`); segmentation puts channel dropout (torch's Dropout2d) before the
BatchNorm in training. Segmentation's loss is cross-entropy on the logits bilinearly upsampled to the label
size, ignore 255, averaged over all pixels including the ignored ones (`avg_non_ignore=False`); depth turns
its logits into depth with linear bins (`bins_to_depth`), upsamples the depth map bilinearly to the ground
truth and takes SigLoss on the valid pixels (`sig_loss`). Both use torch's AdamW (`adamw_update`), torch's
gradient-norm clipping (`clip_by_norm`) and DINOv3's `WarmupOneCycleLR` (`warmup_one_cycle`), which for
depth also drives Adam's beta1. Every one of these is checked against DINOv3's own code run on fixed
features (tests/data/make_dense_head_fixtures.py).

`train_head` runs the loop: one jitted step per batch, the batch either cached features (`features=None`)
or images that go through the frozen encoder inside the step (`features=patch_tokens(encoder)`, the encoder's
parameters an argument of the step, never differentiated). The loop holds one device.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from harness import data
from harness.errors import HarnessError
from harness.progress import Progress

BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # torch.nn.BatchNorm2d defaults (DINOv3's SyncBatchNorm)
CONV_INIT_STD = 0.01  # linear_head.py: nn.init.normal_(conv.weight, mean=0, std=0.01), bias 0
ADAM_EPS = 1e-8  # torch.optim.AdamW default
SIGLOSS_EPS = 1e-3  # dinov3/eval/depth/loss.py SigLoss.eps
DEPTH_BIN_EPS = 0.1  # depth/models/__init__.py FeaturesToDepth, norm_strategy "linear"


# ------------------------------------------------------------------------------------------ features
def patch_grid(encoded, pool_type: str, grid: tuple[int, int]):
    """The encoder's `encoded` tokens [N, T, D] as the patch grid [N, gh, gw, D]: a `tok` model's class token
    (first) dropped, as DINOv3's heads read the patch tokens only (`use_cls_token: False`)."""
    if pool_type == "tok":
        encoded = encoded[:, 1:]
    n, t, d = encoded.shape
    if t != grid[0] * grid[1]:
        raise HarnessError(f"dense head: {t} patch tokens do not form a {grid[0]}x{grid[1]} grid")
    return encoded.reshape(n, grid[0], grid[1], d)


def patch_tokens(encoder) -> Callable:
    """A traceable `fn(params, images [N, H, W, 3]) -> [N, gh, gw, D]`: the encoder's last-layer patch tokens
    after its final norm, for a step that runs the frozen encoder itself."""
    model, pool, patch = encoder.model, encoder.config["pool_type"], encoder.config["patch_size"]

    def fn(params, images):
        _, out = model.apply({"params": params}, images)
        grid = (images.shape[1] // patch[0], images.shape[2] // patch[1])
        return patch_grid(out["encoded"], pool, grid).astype(jnp.float32)

    return fn


# ---------------------------------------------------------------------------------------------- head
def init_head(dim: int, outputs: int, seed: int = 0) -> tuple[dict, dict]:
    """(params, batch-norm state) of a fresh head: conv N(0, 0.01) / 0, BatchNorm scale 1 / bias 0, running
    mean 0 / variance 1."""
    kernel = np.random.default_rng(seed).normal(0.0, CONV_INIT_STD, (dim, outputs)).astype(np.float32)
    params = {"bn": {"scale": np.ones(dim, np.float32), "bias": np.zeros(dim, np.float32)},
              "conv": {"kernel": kernel, "bias": np.zeros(outputs, np.float32)}}
    state = {"mean": np.zeros(dim, np.float32), "var": np.ones(dim, np.float32)}
    return params, state


def head_apply(params, state, x, *, train: bool, dropout: float = 0.0, rng=None):
    """Logits [N, h, w, C] of the head on patch tokens `x` [N, h, w, D], and the new BatchNorm state.

    Training: channel dropout (each sample's channel zeroed with probability `dropout`, the rest scaled by
    1 / (1 - dropout), torch's Dropout2d), then batch statistics over (N, h, w) (biased variance to normalise,
    unbiased to update the running variance, as torch's BatchNorm2d); eval: the running statistics."""
    x = x.astype(jnp.float32)
    if train:
        if dropout > 0:
            keep = jax.random.bernoulli(rng, 1.0 - dropout, (x.shape[0], 1, 1, x.shape[-1]))
            x = jnp.where(keep, x / (1.0 - dropout), 0.0)
        mean = x.mean(axis=(0, 1, 2))
        var = jnp.square(x - mean).mean(axis=(0, 1, 2))
        n = x.shape[0] * x.shape[1] * x.shape[2]
        state = {"mean": (1 - BN_MOMENTUM) * state["mean"] + BN_MOMENTUM * mean,
                 "var": (1 - BN_MOMENTUM) * state["var"] + BN_MOMENTUM * var * (n / max(n - 1, 1))}
    else:
        mean, var = state["mean"], state["var"]
    x = (x - mean) / jnp.sqrt(var + BN_EPS) * params["bn"]["scale"] + params["bn"]["bias"]
    return x @ params["conv"]["kernel"] + params["conv"]["bias"], state


def bins_to_depth(logits, min_depth: float, max_depth: float):
    """Depth [N, h, w] from bin logits [N, h, w, K]: weights relu(logits) + 0.1, normalised over the bins,
    times K bin centres linearly spaced over [min_depth, max_depth] (FeaturesToDepth, "linear" / "linear")."""
    bins = jnp.linspace(min_depth, max_depth, logits.shape[-1], dtype=jnp.float32)
    w = jax.nn.relu(logits) + DEPTH_BIN_EPS
    return (w / w.sum(-1, keepdims=True)) @ bins


def upsample(x, size: tuple[int, int]):
    """Bilinear resize of [N, h, w, ...] to `size`, as torch's F.interpolate(bilinear, align_corners=False)
    (jax's bilinear without antialias is the same computation, in both directions: tests/test_dense.py)."""
    return jax.image.resize(x, (x.shape[0], *size, *x.shape[3:]), "bilinear", antialias=False)


# ---------------------------------------------------------------------------------------------- losses
def segmentation_loss(logits, labels, ignore_index: int = 255):
    """Cross-entropy of the logits [N, h, w, C] upsampled to the labels' size [N, H, W] (int, `ignore_index`
    = no loss), summed and divided by every pixel, the ignored ones included (DINOv3's CrossEntropyLoss with
    avg_non_ignore False)."""
    logits = upsample(logits, labels.shape[1:])
    valid = labels != ignore_index
    target = jnp.where(valid, labels, 0).astype(jnp.int32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], axis=-1)[..., 0]
    return jnp.where(valid, nll, 0.0).sum() / labels.size


def sig_loss(pred, gt, valid, with_variance):
    """DINOv3's SigLoss over every valid pixel of the batch: g = log(pred + 1e-3) - log(gt + 1e-3),
    sqrt(0.15 * mean(g)^2 + var(g)) (unbiased variance; left out during the warm-up, `with_variance` False);
    |D| where D <= 0."""
    valid = valid.astype(jnp.float32)
    n = valid.sum()
    g = (jnp.log(pred + SIGLOSS_EPS) - jnp.log(jnp.where(valid > 0, gt, 1.0) + SIGLOSS_EPS)) * valid
    mean = g.sum() / n
    var = (jnp.square(g - mean) * valid).sum() / (n - 1)
    d = 0.15 * jnp.square(mean) + jnp.where(with_variance, var, 0.0)
    return jnp.where(d > 0, jnp.sqrt(jnp.where(d > 0, d, 1.0)), jnp.abs(d))


# ------------------------------------------------------------------------------------ optimisation
@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a head is trained: torch's AdamW, DINOv3's WarmupOneCycleLR and the gradient clip.

    `scheduler_lag` 1: optimiser step t uses the scheduler's step max(t - 1, 0) (segmentation's train.py
    steps the scheduler only `if global_step > 0`); 0: step t (depth's)."""

    steps: int
    lr: float
    weight_decay: float
    b1: float
    b2: float
    warmup_steps: int
    warmup_ratio: float = 0.0
    div_factor: float = 25.0
    final_div_factor: float = 1000.0
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    use_beta1: bool = True  # the scheduler writes its momentum into Adam's beta1
    scheduler_lag: int = 0
    grad_clip: float = 0.0  # 0: none (DINOv3's 'inf')


def warmup_one_cycle(step: int, r: Recipe) -> tuple[float, float]:
    """(lr, beta1) at the scheduler's step `step`: DINOv3's WarmupOneCycleLR (segmentation/schedulers.py and
    depth/schedulers.py, the same formulas). Warm-up: with `warmup_ratio`, lr = max_lr * (1 - k) *
    (1 - step / total), k = (1 - step / warmup) * (1 - ratio); without, lr = max_lr / final_div +
    max_lr * (1 + cos(pi step / total)) / 2 * step / warmup; beta1 = 0. Then a cosine from max_lr to
    max_lr / div / final_div over (step + 1) / total, beta1 a cosine from base to max momentum over
    (step - warmup) / (total - warmup). Without `use_beta1`, beta1 is the recipe's."""
    total, warmup, max_lr = r.steps, r.warmup_steps, r.lr
    min_lr = max_lr / r.div_factor / r.final_div_factor if math.isfinite(r.final_div_factor) else 0.0
    momentum = 0.0
    if step < warmup:
        if r.warmup_ratio:
            k = (1 - step / warmup) * (1 - r.warmup_ratio)
            lr = max_lr * (1 - k) * (1 - step / total)
        else:
            gmax = max_lr * (1 + math.cos(math.pi * step / total)) / 2
            lr = max_lr / r.final_div_factor + gmax * step / warmup
    else:
        pct = (step - warmup) / (total - warmup)
        momentum = _cos(r.base_momentum, r.max_momentum, pct)
        lr = _cos(max_lr, min_lr, (step + 1) / total)
    return lr, (momentum if r.use_beta1 else r.b1)


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def schedule(r: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """lr and beta1 of every optimiser step, float32 [steps] each."""
    values = [warmup_one_cycle(max(t - r.scheduler_lag, 0), r) for t in range(r.steps)]
    return tuple(np.asarray(v, np.float32) for v in zip(*values)) if values else (np.zeros(0), np.zeros(0))


def clip_by_norm(grads, max_norm: float):
    """torch.nn.utils.clip_grad_norm_: every gradient times min(1, max_norm / (total norm + 1e-6)); 0 = off."""
    if not max_norm:
        return grads
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    coef = jnp.minimum(max_norm / (norm + 1e-6), 1.0)
    return jax.tree.map(lambda g: g * coef, grads)


def adamw_init(params) -> dict:
    zeros = jax.tree.map(jnp.zeros_like, params)
    return {"m": zeros, "v": jax.tree.map(jnp.zeros_like, params), "count": jnp.zeros((), jnp.int32)}


def adamw_update(params, grads, opt, lr, b1, b2: float, weight_decay: float):
    """One torch.optim.AdamW step (decoupled decay p *= 1 - lr * wd first; moments; bias corrections with
    this step's beta1, which the depth schedule changes; eps added to sqrt(v_hat)). Every parameter is
    decayed, the BatchNorm's too, as DINOv3's single parameter group."""
    count = opt["count"] + 1
    c = count.astype(jnp.float32)
    bc1, bc2 = 1 - jnp.power(b1, c), 1 - jnp.power(b2, c)
    m = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), opt["m"], grads)
    v = jax.tree.map(lambda v, g: v * b2 + (1 - b2) * g * g, opt["v"], grads)

    def step(p, m, v):
        return p * (1 - lr * weight_decay) - (lr / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + ADAM_EPS)

    return jax.tree.map(step, params, m, v), {"m": m, "v": v, "count": count}


# -------------------------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class Objective:
    """What a head predicts and its loss: "segmentation" (class logits, cross-entropy, `ignore_index`,
    channel dropout) or "depth" (bins over [min_depth, max_depth], SigLoss after `sigloss_warmup` steps)."""

    kind: str
    outputs: int
    dropout: float = 0.0
    ignore_index: int = 255
    min_depth: float = 1e-3
    max_depth: float = 10.0
    sigloss_warmup: int = 100  # depth/loss.py SigLoss(warm_up=True, warm_iter=100)

    def loss(self, logits, batch, step):
        if self.kind == "segmentation":
            return segmentation_loss(logits, batch["target"], self.ignore_index)
        gt = batch["target"]
        pred = upsample(bins_to_depth(logits, self.min_depth, self.max_depth)[..., None], gt.shape[1:3])[..., 0]
        return sig_loss(pred, gt, gt != 0, step >= self.sigloss_warmup)  # train mask: gt != 0 (ignored_value)

    def predict(self, logits):
        """The head's output at the patch grid: class logits, or depth [N, h, w]."""
        if self.kind == "segmentation":
            return logits
        return bins_to_depth(logits, self.min_depth, self.max_depth)


@dataclasses.dataclass
class TrainedHead:
    params: dict
    state: dict
    losses: list[float]
    seconds: float


def train_head(objective: Objective, recipe: Recipe, *, dim: int, batches: Callable[[int], Iterator[dict]],
               features: Callable | None = None, encoder_params: Any = None, seed: int = 0, progress: bool = True,
               desc: str = "dense head", init: tuple[dict, dict] | None = None) -> TrainedHead:
    """Trains a head for `recipe.steps` steps. `batches(start)` yields dicts with "target" and either
    "features" [B, h, w, D] (cached) or "image" [B, H, W, 3] that `features(encoder_params, image)` turns into
    patch tokens inside the jitted step (the frozen encoder: its parameters are an argument, not
    differentiated). `init`: (params, state) to start from (default `init_head(dim, outputs, seed)`)."""
    params, state = init or init_head(dim, objective.outputs, seed)
    params, state = jax.tree.map(jnp.asarray, (params, state))
    opt = adamw_init(params)
    lrs, b1s = schedule(recipe)

    def step_fn(params, state, opt, enc, batch, lr, b1, step, key):
        x = batch["features"] if features is None else features(enc, batch["image"])

        def loss_fn(p):
            logits, new_state = head_apply(p, state, x, train=True, dropout=objective.dropout, rng=key)
            return objective.loss(logits, batch, step), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        grads = clip_by_norm(grads, recipe.grad_clip)
        params, opt = adamw_update(params, grads, opt, lr, b1, recipe.b2, recipe.weight_decay)
        return params, new_state, opt, loss

    step_fn = jax.jit(step_fn)
    base = jax.random.PRNGKey(seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = Progress(recipe.steps, desc, "step", enabled=progress)
    it = batches(0)
    try:
        for t in range(recipe.steps):
            batch = {k: v for k, v in next(it).items() if k in ("features", "image", "target")}
            params, state, opt, loss = step_fn(params, state, opt, encoder_params, batch, lrs[t], b1s[t],
                                               jnp.int32(t), jax.random.fold_in(base, t))
            loss = float(loss)
            losses.append(loss)
            if not math.isfinite(loss):
                raise HarnessError(f"{desc}: the loss became {loss} at step {t}; lower the learning rate or "
                                   "check the data")
            bar.update(1)
            if t % 10 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
    finally:
        bar.close()
    host = jax.tree.map(np.asarray, (params, state))
    return TrainedHead(params=host[0], state=host[1], losses=losses, seconds=time.perf_counter() - t0)


def cached_batches(tokens: np.ndarray, targets: np.ndarray, batch_size: int, *, seed: int,
                   to_grid: Callable[[np.ndarray], np.ndarray]) -> Callable[[int], Iterator[dict]]:
    """`batches(start)` for cached features: epoch e visits the examples in `default_rng([seed, e])`'s order,
    `batch_size` at a time (the remainder of an epoch is left out), as patch grids (`to_grid`) with their
    targets; step t's batch is a function of (seed, t) only."""
    n = len(tokens)
    if n < batch_size:
        raise HarnessError(f"dense head: {n} training examples are fewer than the batch of {batch_size}; lower "
                           "batch_size or use more examples")
    per_epoch = n // batch_size

    def batches(start: int):
        for t in itertools.count(start):
            epoch, i = divmod(t, per_epoch)
            idx = np.sort(np.random.default_rng([seed, epoch]).permutation(n)[i * batch_size:(i + 1) * batch_size])
            yield {"features": to_grid(np.asarray(tokens[idx], np.float32)), "target": np.asarray(targets[idx])}

    return batches


def fit_cached(ctx, encoder, config, objective: Objective, recipe: Recipe, *, pp: str, splits: tuple[str, str],
               key: str, target: Callable[[np.ndarray], np.ndarray], to_grid: Callable[[np.ndarray], np.ndarray],
               role: str) -> tuple[TrainedHead, dict[str, np.ndarray]]:
    """`features=cached`: the last layer's tokens (`encoded`) and the targets (`key`) of the train and eval
    splits (`splits`) extracted once through the feature cache with `pp` (`ctx.extract`), then the head
    trained on the train split's; (the head, the eval split's features, targets and positions)."""
    feats = {part: ctx.extract(encoder, config.dataset, split, pp=pp, representations=("encoded",), keys=(key,),
                               batch_size=config.extract_batch_size, num_examples=cap, role=f"{role}_{part}")
             for part, split, cap in (("train", splits[0], config.max_train_examples),
                                      ("eval", splits[1], config.max_eval_examples))}
    batches = cached_batches(feats["train"]["encoded"], target(feats["train"][key]), config.batch_size,
                             seed=config.seed, to_grid=to_grid)
    head = train_head(objective, recipe, dim=feats["train"]["encoded"].shape[-1], batches=batches,
                      seed=config.seed, progress=ctx.progress, desc=f"{role} head")
    return head, feats["eval"]


def fit_online(ctx, encoder, config, objective: Objective, recipe: Recipe, *, pp: str, split: str, key: str,
               target: Callable[[np.ndarray], np.ndarray], role: str) -> TrainedHead:
    """`features=online`: the head trained on augmented batches of `split` (`pp`, DINOv3's transforms), the
    frozen encoder inside each step; the train split noted in the record (`ctx.note_dataset`)."""
    n = data.num_examples(config.dataset, split, ctx.data_dir)
    ctx.note_dataset(config.dataset, split, min(n, config.max_train_examples or n), pp, role=f"{role}_train")

    def batches(start):
        for b in data.iterate(config.dataset, split, batch_size=config.batch_size, pp=pp, data_dir=ctx.data_dir,
                              train=True, seed=config.seed, start_step=start,
                              num_examples=config.max_train_examples or None):
            yield {"image": b["image"], "target": target(b[key])}

    return train_head(objective, recipe, dim=encoder.config["width"], batches=batches,
                      features=patch_tokens(encoder), encoder_params=encoder.params, seed=config.seed,
                      progress=ctx.progress, desc=f"{role} head")


def make_predict(objective: Objective, size: tuple[int, int] | None = None,
                 features: Callable | None = None) -> Callable:
    """A jitted `fn(params, state, encoder_params, x) -> prediction`: the head in eval mode on cached patch
    tokens (`features` None) or on images through the frozen encoder, its output (class logits or depth)
    bilinearly upsampled to `size` (None: the patch grid)."""

    def fn(params, state, enc, x):
        tokens = x if features is None else features(enc, x)
        logits, _ = head_apply(params, state, tokens, train=False)
        out = objective.predict(logits)
        if size is None:
            return out
        return upsample(out[..., None], size)[..., 0] if objective.kind == "depth" else upsample(out, size)

    return jax.jit(fn)
