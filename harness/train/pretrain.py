"""`harness pretrain`: supervised pretraining of an encoder from scratch (the proxy checkpoint's origin).

The recipe is the upstream one of the paper in miniature: a ViT with a MAP head trained with sigmoid
cross-entropy on image labels (head bias initialised to -6.9 as big_vision does for sigmoid losses), Adam
with big_vision's decoupled weight decay on the kernels (`harness.train.optim`, as `configs/vit_i1k.py`), a cosine
schedule and linear warm-up, flips (or the inception crop: `--set augment=inception`). The result is saved as a big_vision
`.npz`, so everything downstream treats it like any public checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from harness import data
from harness.checkpoints import save_npz
from harness.errors import HarnessError
from harness.files import write_text_atomic
from harness.models.encoder import build_model, resolve_config
from harness.train.finetune import sigmoid_xent
from harness.train.loop import fit
from harness.train.optim import cosine_schedule, make_optimizer


@dataclasses.dataclass
class PretrainConfig:
    dataset: str = "proxy_scenes"
    split: str = "pretrain"
    # The proxy encoder: SoViT-shaped in miniature (MLP 4x width, MAP head), 64 tokens at 64 px.
    width: int = 64
    depth: int = 6
    mlp_dim: int = 256
    num_heads: int = 4
    patch_size: int = 8
    res: int = 64
    pool_type: str = "map"
    # "label": one class per image (the main object's colour and shape); "objects": multi-hot over every
    # (colour, shape) in a proxy scene, JFT-style. At proxy scale "objects" barely leaves the label prior
    # (10-shot 17% vs 83% for "label" after the same compute), so the committed checkpoint uses "label".
    targets: str = "label"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-3
    # big_vision's `wd` (wd * kernel after the lr, harness.train.optim): configs/vit_i1k.py `config.wd`. The
    # committed proxy checkpoint was made before, with optax.adamw(weight_decay=1e-4): lr * 1e-4 on every leaf.
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 1.0
    seed: int = 0

    # "flip": every object stays in view, so multi-hot "objects" targets stay true; "inception": the
    # upstream recipe's crop, which can cut small objects out of the image while their label stays on.
    augment: str = "flip"

    @property
    def pp_train(self) -> str:
        if self.augment == "inception":
            return f"decode|inception_crop({self.res},area_min=50)|flip_lr|value_range(-1,1)"
        if self.augment == "flip":
            return f"decode|resize({self.res})|flip_lr|value_range(-1,1)"
        raise HarnessError(f"pretrain augment {self.augment!r}: expected 'flip' or 'inception'")


def objects_multihot(batch: dict, num_classes: int) -> np.ndarray:
    """Multi-hot (colour, shape) classes of all objects in proxy_scenes (class = colour * 4 + shape);
    padding entries are -1."""
    # Here, not at the top: the builder imports tensorflow, which `harness sweep --dry-run` (it reads
    # PretrainConfig) must not pay for.
    from harness.data.builders.proxy_scenes import SHAPES

    colour, shape = np.asarray(batch["objects/colour"]), np.asarray(batch["objects/shape"])
    out = np.zeros((colour.shape[0], num_classes), np.float32)
    rows, cols = np.nonzero(colour >= 0)
    out[rows, colour[rows, cols] * len(SHAPES) + shape[rows, cols]] = 1.0
    return out


def pretrain(cfg: PretrainConfig, out: str | Path, *, data_dir: str | None = None, progress: bool = True,
             ckpt_dir: str | Path | None = None) -> dict:
    data.require_prepared(cfg.dataset, data_dir)
    info = data.get_info(cfg.dataset)
    num_classes = info.num_classes or data.num_classes(cfg.dataset, data_dir)
    enc_cfg = resolve_config({}, {}, dict(width=cfg.width, depth=cfg.depth, mlp_dim=cfg.mlp_dim,
                                          num_heads=cfg.num_heads, patch_size=cfg.patch_size, res=cfg.res,
                                          pool_type=cfg.pool_type, num_classes=num_classes), path="pretrain")
    model = build_model({**enc_cfg, "head_zeroinit": True})
    params = jax.jit(model.init)(jax.random.PRNGKey(cfg.seed), jnp.zeros((1, cfg.res, cfg.res, 3)))["params"]
    params["head"]["bias"] = jnp.full_like(params["head"]["bias"], -6.9)
    # configs/vit_i1k.py: `optax_name` scale_by_adam, grad_clip_norm 1.0, cosine schedule with warm-up.
    tx = make_optimizer("adam", lr=cfg.lr, wd=cfg.weight_decay, grad_clip_norm=cfg.grad_clip,
                        schedule=cosine_schedule(cfg.steps, cfg.warmup_steps))

    def loss_fn(params, batch, rng):
        logits, _ = model.apply({"params": params}, batch["image"], train=True, rngs={"dropout": rng})
        return sigmoid_xent(logits, batch["labels"]), {}

    if cfg.targets not in ("label", "objects"):
        raise HarnessError(f"pretrain targets {cfg.targets!r}: expected 'label' or 'objects'")

    def batches(start_step: int):
        for b in data.iterate(cfg.dataset, cfg.split, batch_size=cfg.batch_size, pp=cfg.pp_train,
                              data_dir=data_dir, train=True, seed=cfg.seed, start_step=start_step):
            if cfg.targets == "objects":
                if "objects/colour" not in b:
                    raise HarnessError(f"dataset {cfg.dataset} has no 'objects'; use --set targets=label")
                yield {"image": b["image"], "labels": objects_multihot(b, num_classes)}
            else:
                yield {"image": b["image"], "labels": np.eye(num_classes, dtype=np.float32)[b[info.label_key]]}

    t0 = time.perf_counter()
    result = fit(params=params, tx=tx, loss_fn=loss_fn, batches=batches, total_steps=cfg.steps, seed=cfg.seed,
                 ckpt_dir=ckpt_dir, ckpt_every=200 if ckpt_dir else 0, progress=progress, desc="pretrain")
    if not result.losses and result.resumed_from < cfg.steps:
        raise HarnessError("pretraining ran no step; check --steps")
    params = jax.device_get(result.params)
    path = save_npz(out, params)
    summary = {"out": str(path), "config": dataclasses.asdict(cfg), "num_classes": num_classes,
               "first_loss": result.losses[0] if result.losses else None,
               "final_loss": float(np.mean(result.losses[-20:])) if result.losses else None,
               "seconds": time.perf_counter() - t0}
    write_text_atomic(str(path) + ".json", json.dumps(summary, indent=2))
    return summary
