"""LiT training: a new text tower learns to match a locked image tower's embeddings.

The image tower is locked, so its (L2-normalised) embeddings of the training images are an input here, read
once; only the text tower, the log-temperature `t` and the bias `b` learn, with the sigmoid loss (SigLIP; t' =
10, b = -10 at init) or the softmax contrastive loss (`harness.models.text`), big_vision's optimiser chain
(`harness.train.optim`) with a cosine schedule and warm-up, through the shared resumable loop
(`harness.train.loop.fit`). Each step takes whole batches of distinct images, each with one of its captions
drawn at random, as a pure function of (seed, step): a resumed run sees exactly the same batches.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from harness.errors import HarnessError
from harness.models import text
from harness.models.variants import decode_variant
from harness.train.loop import FitResult, fit
from harness.train.optim import cosine_schedule, make_optimizer


@dataclasses.dataclass(frozen=True)
class LitSettings:
    """The training settings (a task's config holds them, with their defaults and sources)."""

    loss: str  # "sigmoid" or "softmax"
    train_steps: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    warmup_frac: float
    grad_clip_norm: float
    temperature_init: float
    bias_init: float
    # The new text tower: a big_vision variant string, or "" for the image tower's shape; the text_* numbers
    # override single fields (0: keep); vocab_size 0: the tokenizer's.
    text_variant: str
    text_width: int
    text_depth: int
    text_mlp_dim: int
    text_num_heads: int
    vocab_size: int
    max_len: int
    seed: int
    ckpt_every: int

    @classmethod
    def of(cls, config) -> LitSettings:
        """The settings of a config that has (at least) these fields."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def text_tower_config(s: LitSettings, image_config: dict, *, tokenizer_vocab: int, out_dim: int) -> dict:
    """The new tower's config: the image tower's shape unless the settings name another, embedding into
    `out_dim` (the image embedding's size), pooled at the last token."""
    shape = dict(width=image_config["width"], depth=image_config["depth"], mlp_dim=image_config["mlp_dim"],
                 num_heads=image_config["num_heads"])
    if s.text_variant:
        v = decode_variant(s.text_variant)
        shape.update({k: v[k] for k in shape if k in v})
    for k in shape:
        if getattr(s, f"text_{k}"):
            shape[k] = getattr(s, f"text_{k}")
    if shape["width"] % shape["num_heads"]:
        raise HarnessError(f"text tower width {shape['width']} is not divisible by {shape['num_heads']} heads")
    tcfg = dict(shape, vocab_size=s.vocab_size or tokenizer_vocab, max_len=s.max_len,
                num_classes=out_dim, pool_type="last", scan=False, dtype_mm="float32")
    if tcfg["vocab_size"] < tokenizer_vocab:
        raise HarnessError(f"vocab_size {tcfg['vocab_size']} is smaller than the tokenizer's "
                           f"{tokenizer_vocab} pieces")
    return tcfg


def train_text_tower(zimg: np.ndarray, tokens: np.ndarray, owner: np.ndarray, s: LitSettings, *,
                     image_config: dict, tokenizer_vocab: int, ckpt_dir=None, progress: bool = False,
                     what: str = "") -> tuple[dict, dict, FitResult]:
    """(params on the host: "txt", "t" and, for the sigmoid loss, "b"; the tower's config; the loop's
    result) of LiT on L2-normalised image embeddings `zimg` [N, D] and caption tokens [T, L], caption j
    describing image `owner[j]` (sorted by image). `what` names the data in errors ("coco_captions/train")."""
    n_img = len(zimg)
    if n_img < s.batch_size:
        raise HarnessError(f"LiT: {what} has {n_img} images, fewer than batch_size={s.batch_size}; "
                           "lower batch_size")
    # Captions of image i are tokens[starts[i]:starts[i] + counts[i]] (owner is sorted by image).
    counts = np.bincount(owner, minlength=n_img)
    if (counts == 0).any():
        raise HarnessError(f"LiT: {int((counts == 0).sum())} images of {what} have no caption")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    tcfg = text_tower_config(s, image_config, tokenizer_vocab=tokenizer_vocab, out_dim=zimg.shape[1])
    model = text.LiTTextHead(text=text.model_kwargs(tcfg), temperature_init=s.temperature_init,
                             bias_init=s.bias_init if s.loss == "sigmoid" else None)
    params = jax.jit(model.init)(jax.random.PRNGKey(s.seed), np.zeros((1, s.max_len), np.int32))["params"]

    steps, bs = s.train_steps, s.batch_size
    tx = make_optimizer(s.optimizer, lr=s.lr, wd=s.weight_decay, grad_clip_norm=s.grad_clip_norm,
                        schedule=cosine_schedule(steps, int(s.warmup_frac * steps)))
    kind = s.loss

    def loss_fn(params, batch, rng):
        ztxt, out = model.apply({"params": params}, batch["tokens"])
        loss = text.contrastive_loss(kind, batch["zimg"], ztxt, out["t"], out.get("b"))
        return loss, {}

    steps_per_epoch = n_img // bs  # whole batches only: no image twice in a batch

    def batches(start_step: int):
        # A pure function of (seed, step): a resumed run sees exactly the same batches.
        for step in range(start_step, steps):
            epoch, pos = divmod(step, steps_per_epoch)
            order = np.random.default_rng([s.seed, 0x11A, epoch]).permutation(n_img)
            images = order[pos * bs:(pos + 1) * bs]
            pick = np.random.default_rng([s.seed, 0x7E7, step]).integers(0, counts[images])
            yield {"tokens": tokens[starts[images] + pick], "zimg": zimg[images]}

    result = fit(params=params, tx=tx, loss_fn=loss_fn, batches=batches, total_steps=steps, seed=s.seed,
                 ckpt_dir=ckpt_dir, ckpt_every=s.ckpt_every, progress=progress, desc=f"LiT {kind}")
    return jax.device_get(result.params), tcfg, result


def final_loss(losses: list[float]) -> float:
    """The mean loss of the last 10% of steps (NaN without any)."""
    tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
    return float(np.mean(tail))


def trained_tower(params: dict, tcfg: dict) -> text.TextTower:
    """The trained text tower, ready to embed texts."""
    return text.TextTower(model=text.TextTransformer(**text.model_kwargs(tcfg)), params=params["txt"],
                          config=tcfg, log_t=float(np.asarray(params["t"])[0]),
                          b=float(np.asarray(params["b"])[0]) if "b" in params else None)


__all__ = ["LitSettings", "final_loss", "text_tower_config", "train_text_tower", "trained_tower"]
