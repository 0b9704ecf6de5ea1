"""Linear monocular depth on frozen patch tokens: DINOv3's NYU linear protocol
(`dinov3/eval/depth/configs/config-nyu.yaml`, over `depth/config.py`'s defaults), scored by big_vision's NYU
depth evaluator (`big_vision/evaluators/proj/givt/nyu_depth.py`).

A head of BatchNorm + 1x1 convolution with 256 outputs on the last layer's patch tokens after the final norm
predicts depth as the normalised relu(logits) + 0.1 weights of 256 bins linearly spaced over [0.001, 10] m;
the depth map, bilinearly upsampled to the ground truth, is trained with SigLoss (the variance term from step
100) for 38.4k steps of 16 images with AdamW (lr 3e-4, weight decay 1e-4, beta2 0.99, gradient clip 35)
under DINOv3's WarmupOneCycleLR (12800 warm-up steps with Adam's beta1 0, then cosines: lr to 3e-4 / 25e3,
beta1 0.85 -> 0.95) (`harness.train.dense`). Training images get DINOv3's NYU crop, a rotation of up to
2.5 degrees (p 1/2), a flip, a random 416 x 544 crop and its colour augmentation (`harness.data.pp.dense`), the
image then resized to the encoder's R x R; the frozen encoder runs on every step. Evaluation is big_vision's:
image and depth cropped by `nyu_eval_crop` (rows 54..479, cols 41..600), the image resized to R x R, the
prediction (upsampled bilinearly to R x R, averaged with its flipped image's as DINOv3's test-time flip)
resized nearest to the 426 x 560 ground truth, valid pixels 1e-3 < gt < 10, RMSE / abs-rel / delta1 per image,
then the mean over images (`harness.eval.dense`).

`features=cached` (the proxy preset) trains on features of the evaluation pp's images extracted once
through the feature cache: a named deviation (no augmentation), fast. Metrics `depth/<dataset>/rmse` (m,
lower is better), `abs_rel` (lower), `delta1` (%, higher), each with its per-image values (kept in the
samples file, with each image's valid pixels and the mean depth of truth and prediction over them). The
reported head is the final one, as DINOv3 reports.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from harness import api, data
from harness.api import Metric, RunContext, Task
from harness.eval import dense as metrics_dense
from harness.eval.samples import signif
from harness.train import dense

FEATURE_MODES = ("online", "cached")


@dataclasses.dataclass
class DepthConfig:
    dataset: str = "nyu_depth_v2"
    # online: DINOv3's protocol (augmented batches through the frozen encoder every step); cached: features of
    # the evaluation pp's images extracted once (a deviation: no augmentation).
    features: str = "online"
    steps: int = 38_400  # config-nyu.yaml scheduler.total_iter
    batch_size: int = 16  # bs 2 x n_gpus 8
    lr: float = 3e-4  # optimizer.lr
    weight_decay: float = 1e-4  # optimizer.weight_decay
    beta2: float = 0.99  # optimizer.beta2 (beta1 is the scheduler's: use_beta1)
    warmup_steps: int = 12_800  # scheduler warmup_iters (warmup_ratio 0, div_factor 25)
    final_div_factor: float = 1000.0  # scheduler final_div_factor
    grad_clip: float = 35.0  # optimizer.gradient_clip
    bins: int = 256  # decoder_head.n_output_channels
    min_depth: float = 1e-3  # decoder_head.min_depth = eval.min_depth = big_vision's MIN_DEPTH
    max_depth: float = 10.0  # decoder_head.max_depth = eval.max_depth = big_vision's MAX_DEPTH
    sigloss_warmup: int = 100  # depth/loss.py SigLoss warm_iter
    random_crop: tuple[int, ...] = (416, 544)  # transforms.train.random_crop
    rotation: float = 2.5  # depth/config.py TrainTransformConfig.rotation_angle
    brightness: tuple[float, ...] = (0.75, 1.25)  # transforms.train.brightness_range
    flip_tta: bool = True  # eval.use_tta (the test-time flip average; online mode only)
    eval_batch_size: int = 16
    extract_batch_size: int = 64  # cached mode
    max_train_examples: int = 0  # 0 = the whole split
    max_eval_examples: int = 0
    seed: int = 321  # config-nyu.yaml seed

    def validate(self) -> None:
        info = data.get_info(self.dataset)
        for role in ("train", (info.depth.eval_role if info.depth else "test")):
            info.split(role)
        if info.depth is None:
            raise api.bad_setting("dataset", self.dataset, "has no depth maps; use nyu_depth_v2 or proxy_scenes "
                                  "(`harness ls datasets`)")
        api.check_choice(self, "features", FEATURE_MODES)
        for name in ("steps", "batch_size", "bins", "eval_batch_size", "extract_batch_size"):
            api.check_range(self, name, low=1)
        api.check_range(self, "warmup_steps", low=0)
        if self.warmup_steps >= self.steps:
            raise api.bad_setting("warmup_steps", self.warmup_steps, f"must be below steps={self.steps}")
        api.check_range(self, "lr", low=0, low_open=True)
        api.check_range(self, "weight_decay", low=0)
        api.check_range(self, "beta2", low=0, high=1, high_open=True)
        api.check_range(self, "final_div_factor", low=1)
        api.check_range(self, "grad_clip", low=0)
        api.check_range(self, "min_depth", low=0, low_open=True)
        if self.max_depth <= self.min_depth:
            raise api.bad_setting("max_depth", self.max_depth, f"must be above min_depth={self.min_depth}")
        api.check_range(self, "sigloss_warmup", low=0)
        api.check_range(self, "random_crop", low=1)
        if len(self.random_crop) != 2:
            raise api.bad_setting("random_crop", self.random_crop, "must be two sizes height,width")
        api.check_range(self, "rotation", low=0, high=180)
        api.check_range(self, "brightness", low=0, low_open=True)
        if len(self.brightness) != 2 or self.brightness[0] > self.brightness[1]:
            raise api.bad_setting("brightness", self.brightness, "must be two numbers low,high with low <= high")
        for name in ("max_train_examples", "max_eval_examples"):
            api.check_range(self, name, low=0)


def eval_pp(info, res: int) -> str:
    """big_vision's givt_nyu_depth.py `pp_predict`: the eval crop of image and depth, the image to res x res."""
    key = info.depth.key
    crop = f'{info.depth.eval_crop}(label="{key}")|' if info.depth.eval_crop else ""
    return f'decode|{crop}resize({res})|value_range(-1,1)|keep("image", "{key}")'


def train_pp(config: DepthConfig, info, res: int) -> str:
    """DINOv3's NYU train transforms: the NYU crop, rotation (p 1/2), flip, random crop, then (ours) the image
    resized to res x res, colour augmentation (p 1/2), normalisation (the encoder's [-1, 1])."""
    key = info.depth.key
    crop = f'{info.depth.train_crop}(label="{key}")|' if info.depth.train_crop else ""
    h, w = config.random_crop
    lo, hi = config.brightness
    return (f'decode|{crop}random_rotate({config.rotation}, 0.5, label="{key}")|random_flip_lr(label="{key}")|'
            f'random_crop_cat(({h}, {w}), cat_max_ratio=1.0, label="{key}")|resize({res})|'
            f'color_aug(brightness=({lo}, {hi}))|value_range(-1,1)|keep("image", "{key}")')


class Depth(Task):
    name = "depth"
    description = "linear monocular depth on frozen patch tokens: RMSE, abs-rel, delta1 (DINOv3 NYU, big_vision)"
    report_title = ("Linear monocular depth on frozen patch tokens (DINOv3's linear protocol, big_vision's NYU "
                    "metrics; not in the paper)")
    report_columns = ("rmse", "abs_rel", "delta1")
    Config = DepthConfig
    neutral_settings = ("eval_batch_size", "extract_batch_size")
    presets = {
        # Cached features of the 64 px scenes (= the proxy encoder's resolution), depth 2..9.5 m.
        "proxy": dict(dataset="proxy_scenes", features="cached", steps=400, warmup_steps=40, lr=1e-2,
                      sigloss_warmup=40, extract_batch_size=50),
    }

    def metrics(self, config: DepthConfig) -> list[Metric]:
        ds = config.dataset
        return [Metric(self.metric_name(ds, "rmse"), False, "m", f"RMSE on {ds} (mean over images)"),
                Metric(self.metric_name(ds, "abs_rel"), False, "raw", f"absolute relative error on {ds}"),
                Metric(self.metric_name(ds, "delta1"), True, "%", f"pixels within 1.25x of the truth on {ds}")]

    def run(self, encoder, ctx: RunContext, config: DepthConfig) -> dict[str, float]:
        info = data.get_info(config.dataset)
        key = info.depth.key
        res, patch = encoder.res, encoder.config["patch_size"]
        grid = (res // patch[0], res // patch[1])
        objective = dense.Objective("depth", config.bins, min_depth=config.min_depth, max_depth=config.max_depth,
                                    sigloss_warmup=config.sigloss_warmup)
        recipe = dense.Recipe(steps=config.steps, lr=config.lr, weight_decay=config.weight_decay, b1=0.0,
                              b2=config.beta2, warmup_steps=config.warmup_steps,
                              final_div_factor=config.final_div_factor, use_beta1=True, scheduler_lag=0,
                              grad_clip=config.grad_clip)

        def to_grid(tokens):
            return dense.patch_grid(tokens, encoder.config["pool_type"], grid)

        train_split, eval_split = info.split("train"), info.split(info.depth.eval_role)
        pp_eval = eval_pp(info, res)
        if config.features == "cached":
            head, evals = dense.fit_cached(ctx, encoder, config, objective, recipe, pp=pp_eval,
                                           splits=(train_split, eval_split), key=key, target=np.asarray,
                                           to_grid=to_grid, role="depth")
            predict = dense.make_predict(objective, (res, res))
            enc_params = None
            eval_batches = ((to_grid(np.asarray(evals["encoded"][i:i + config.eval_batch_size], np.float32)),
                             np.asarray(evals[key][i:i + config.eval_batch_size]),
                             np.asarray(evals["index"][i:i + config.eval_batch_size]))
                            for i in range(0, len(evals["encoded"]), config.eval_batch_size))
        else:
            head = dense.fit_online(ctx, encoder, config, objective, recipe, pp=train_pp(config, info, res),
                                    split=train_split, key=key, target=lambda a: np.asarray(a, np.float32),
                                    role="depth")
            predict = dense.make_predict(objective, (res, res), features=dense.patch_tokens(encoder))
            enc_params = encoder.params
            n_eval = data.num_examples(config.dataset, eval_split, ctx.data_dir)
            ctx.note_dataset(config.dataset, eval_split, min(n_eval, config.max_eval_examples or n_eval), pp_eval,
                             role="depth_eval")
            eval_batches = ((b["image"][b["_mask"]], b[key][b["_mask"]], b["_index"][b["_mask"]])
                            for b in data.iterate(config.dataset, eval_split, batch_size=config.eval_batch_size,
                                                  pp=pp_eval, data_dir=ctx.data_dir,
                                                  num_examples=config.max_eval_examples or None))
        t0 = time.perf_counter()
        per_image = {m: [] for m in ("rmse", "abs_rel", "delta1")}
        index, truths, predictions = [], [], []
        for x, gt, idx in eval_batches:
            pred = np.asarray(predict(head.params, head.state, enc_params, x))
            if config.flip_tta and config.features == "online":
                # DINOv3's LeftRightFlipAug: the flipped image's prediction, flipped back, averaged (cached
                # features are of the unflipped images only).
                flipped = np.asarray(predict(head.params, head.state, enc_params, np.ascontiguousarray(x[:, :, ::-1])))
                pred = (pred + flipped[:, :, ::-1]) / 2
            for p, g in zip(pred, gt):
                scores = metrics_dense.depth_scores(np.asarray(g, np.float32), p, min_depth=config.min_depth,
                                                    max_depth=config.max_depth)
                for m, values in per_image.items():
                    values.append(scores[m])
                truth, depth = _valid_depths(np.asarray(g, np.float32), p, config.min_depth, config.max_depth)
                truths.append(truth)
                predictions.append(depth)
            index += np.asarray(idx).tolist()
        ctx.add_time("eval_seconds", time.perf_counter() - t0)
        ctx.add_time("train_seconds", head.seconds)
        ctx.info["loss"] = {"first": head.losses[0], "last": head.losses[-1]}
        out = {}
        samples = ctx.note_samples(config.dataset, eval_split, index=index, targets=truths, predictions=predictions)
        for m, values in per_image.items():
            values = np.asarray(values) * (100.0 if m == "delta1" else 1.0)
            name = self.metric_name(config.dataset, m)
            out[name] = float(values.mean())
            ctx.note_per_example(name, values)
            samples.score(name, "mean", values)
        return out


def _valid_depths(gt: np.ndarray, pred: np.ndarray, min_depth: float, max_depth: float) -> tuple[dict, dict]:
    """What the samples file keeps of one image (a depth map is too large for it): the ground truth's valid
    pixels (as `harness.eval.dense.depth_scores` counts them) with their mean depth, and the prediction's mean
    over those pixels, in metres (6 significant digits)."""
    pred = metrics_dense.resize_nearest(np.asarray(pred, np.float32), gt.shape[:2])
    valid = (gt > min_depth) & (gt < max_depth)
    n = int(valid.sum())
    mean = (lambda a: signif(float(a[valid].mean())) if n else None)
    return {"valid_pixels": n, "mean_depth": mean(gt)}, {"mean_depth": mean(pred)}
