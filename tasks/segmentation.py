"""Linear semantic segmentation on frozen patch tokens: DINOv3's ADE20k "linear" protocol
(`dinov3/eval/segmentation/configs/config-ade20k-linear-training.yaml`, over `config.py`'s defaults).

A head of BatchNorm + 1x1 convolution on the last layer's patch tokens after the final norm (channel dropout
0.1 in training) is trained for 40k steps of 16 images with AdamW (lr 1e-3, weight decay 1e-3, betas 0.9 /
0.999) under DINOv3's WarmupOneCycleLR (1500 warm-up steps, ratio 1e-6, then a cosine to 0), the loss
cross-entropy of the logits bilinearly upsampled to the label, ignore 255, averaged over all pixels
(`harness.train.dense`). Training images are augmented as DINOv3's: shorter side to crop x U[0.5, 2.0],
ADE20k's reduce-zero-label, a random crop (cat_max_ratio 0.75), a flip, photometric distortion, padding
(`harness.data.pp.dense`); the frozen encoder runs on every step. Evaluation is DINOv3's sliding window:
shorter side resized to the window, windows at 2/3 of the window apart, logits averaged and resized to the
original label, argmax; mIoU / aAcc / mAcc over the whole set (`harness.eval.dense`).

On an encoder of resolution R the window is R (DINOv3's 512 is `--set crop=512`, which loads the encoder at
512 px, posemb resampled). `features=cached` (the proxy preset) trains on features of the unaugmented
images extracted once through the feature cache, resized to R x R with their labels, and evaluates those
too: a named deviation, fast. Metrics `segmentation/<dataset>/{miou,aacc,macc}` (%); mIoU is not a mean over
images, so no per-example scores: the samples file keeps each image's areas per class (intersection, union,
prediction, label), from which `harness rescore` sums and scores the set again (rule `segmentation`). The reported head is the final one (DINOv3 reports the best of its 8
validations on the validation set itself).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from harness import api, data
from harness.api import Metric, RunContext, Task
from harness.eval import dense as metrics_dense
from harness.eval.samples import segmentation_areas
from harness.train import dense

FEATURE_MODES = ("online", "cached")


@dataclasses.dataclass
class SegmentationConfig:
    dataset: str = "ade20k"
    # online: DINOv3's protocol (augmented batches through the frozen encoder every step, sliding-window
    # eval); cached: unaugmented features extracted once (a deviation: no augmentation, whole-image eval).
    features: str = "online"
    steps: int = 40_000  # config-ade20k-linear-training.yaml scheduler.total_iter
    batch_size: int = 16  # bs 2 x n_gpus 8
    lr: float = 1e-3  # optimizer.lr
    weight_decay: float = 1e-3  # optimizer.weight_decay
    beta1: float = 0.9  # optimizer.beta1 (use_beta1: False, so fixed)
    beta2: float = 0.999  # optimizer.beta2
    warmup_steps: int = 1500  # scheduler warmup_iters
    warmup_ratio: float = 1e-6  # scheduler warmup_ratio (final_div_factor .inf: the cosine ends at 0)
    grad_clip: float = 0.0  # optimizer.gradient_clip 'inf': none (0 here)
    dropout: float = 0.1  # segmentation/config.py decoder_head dropout
    # The window / crop side; 0 = the encoder's resolution (DINOv3: crop_size 512 with img_size 512).
    crop: int = 0
    short_side: int = 0  # the train resize base and the eval shorter side; 0 = crop (DINOv3: img_size = crop)
    scale_range: tuple[float, ...] = (0.5, 2.0)  # transforms.train.random_img_size_ratio_range
    cat_max_ratio: float = 0.75  # RandomCropWithLabel default
    photometric: bool = True  # PhotoMetricDistortion (always on in DINOv3's train transforms)
    eval_stride: int = 0  # 0 = round(crop * 341 / 512): eval.stride 341 of crop_size 512
    eval_batch_size: int = 4  # windows per encoder call in the sliding-window eval
    extract_batch_size: int = 64  # cached mode
    max_train_examples: int = 0  # 0 = the whole split
    max_eval_examples: int = 0
    seed: int = 100  # segmentation/config.py seed

    def validate(self) -> None:
        info = data.get_info(self.dataset)
        for role in ("train", (info.segmentation.eval_role if info.segmentation else "test")):
            info.split(role)
        if info.segmentation is None:
            raise api.bad_setting("dataset", self.dataset, "has no per-pixel class labels; use ade20k or "
                                  "proxy_scenes (`harness ls datasets`)")
        api.check_choice(self, "features", FEATURE_MODES)
        for name in ("steps", "batch_size", "eval_batch_size", "extract_batch_size"):
            api.check_range(self, name, low=1)
        api.check_range(self, "warmup_steps", low=0)
        if self.warmup_steps >= self.steps:
            raise api.bad_setting("warmup_steps", self.warmup_steps, f"must be below steps={self.steps}")
        api.check_range(self, "lr", low=0, low_open=True)
        api.check_range(self, "weight_decay", low=0)
        api.check_range(self, "beta1", low=0, high=1, high_open=True)
        api.check_range(self, "beta2", low=0, high=1, high_open=True)
        api.check_range(self, "warmup_ratio", low=0, high=1)
        api.check_range(self, "grad_clip", low=0)
        api.check_range(self, "dropout", low=0, high=1, high_open=True)
        for name in ("crop", "short_side", "eval_stride", "max_train_examples", "max_eval_examples"):
            api.check_range(self, name, low=0)
        api.check_range(self, "scale_range", low=0, low_open=True)
        if len(self.scale_range) != 2 or self.scale_range[0] > self.scale_range[1]:
            raise api.bad_setting("scale_range", self.scale_range, "must be two numbers low,high with low <= high")
        api.check_range(self, "cat_max_ratio", low=0, low_open=True, high=1)
        if self.crop and self.short_side and self.short_side < self.crop:
            raise api.bad_setting("short_side", self.short_side, f"must be at least crop={self.crop} (the "
                                  "sliding windows must fit in the resized image)")


def geometry(config: SegmentationConfig, res: int) -> tuple[int, int, int]:
    """(crop, short side, eval stride) on an encoder of resolution `res`."""
    crop = config.crop or res
    short = config.short_side or crop
    return crop, short, config.eval_stride or round(crop * 341 / 512)


def _label_pp(info, size: int | None = None) -> str:
    seg = info.segmentation
    pp = f'decode(channels=1, key="{seg.key}")'
    if size:
        pp += f'|resize({size}, method="nearest", key="{seg.key}")'
    return pp + (f'|reduce_zero_label(label="{seg.key}")' if seg.reduce_zero_label else "")


def train_pp(config: SegmentationConfig, info, crop: int, short: int) -> str:
    """DINOv3's train transforms: random short-side resize, reduce-zero-label, cat_max_ratio crop, flip,
    photometric distortion, normalisation (the encoder's [-1, 1]), padding to the crop (label 255)."""
    key = info.segmentation.key
    lo, hi = config.scale_range
    ops = [f'decode|decode(channels=1, key="{key}")',
           f'random_resize_short({short}, ratio=({lo}, {hi}), label="{key}")']
    if info.segmentation.reduce_zero_label:
        ops.append(f'reduce_zero_label(label="{key}")')
    ops += [f'random_crop_cat({crop}, cat_max_ratio={config.cat_max_ratio}, label="{key}")',
            f'random_flip_lr(label="{key}")']
    if config.photometric:
        ops.append("photometric_distortion")
    ops += ["value_range(-1,1)", f'pad_to({crop}, label="{key}")', f'keep("image", "{key}")']
    return "|".join(ops)


def slide_pp(info, short: int) -> str:
    """DINOv3's eval transforms for sliding windows: the image's shorter side resized, the label kept."""
    return f'decode|resize_short({short})|value_range(-1,1)|{_label_pp(info)}|keep("image", "{info.segmentation.key}")'


def cached_pp(info, crop: int) -> str:
    """The cached mode's pp (train and eval): the whole image and its label resized to crop x crop."""
    return f'decode|resize({crop})|value_range(-1,1)|{_label_pp(info, crop)}|keep("image", "{info.segmentation.key}")'


class Segmentation(Task):
    name = "segmentation"
    description = "linear semantic segmentation on frozen patch tokens, mIoU (DINOv3's ADE20k linear protocol)"
    report_title = "Linear semantic segmentation on frozen patch tokens, % (DINOv3's linear protocol; not in the paper)"
    report_columns = ("miou", "aacc", "macc")
    Config = SegmentationConfig
    neutral_settings = ("eval_batch_size", "extract_batch_size")
    presets = {
        # Cached features of the 64 px scenes (= the proxy encoder's resolution: nothing is resized), 25 classes.
        "proxy": dict(dataset="proxy_scenes", features="cached", steps=400, warmup_steps=40, lr=3e-2,
                      extract_batch_size=50),
    }

    def encoder_overrides(self, config: SegmentationConfig) -> dict:
        return {"res": config.crop} if config.crop else {}

    def metrics(self, config: SegmentationConfig) -> list[Metric]:
        ds = config.dataset
        return [Metric(self.metric_name(ds, "miou"), True, "%", f"mean IoU over the classes on {ds}"),
                Metric(self.metric_name(ds, "aacc"), True, "%", f"pixel accuracy on {ds}"),
                Metric(self.metric_name(ds, "macc"), True, "%", f"mean class accuracy on {ds}")]

    def run(self, encoder, ctx: RunContext, config: SegmentationConfig) -> dict[str, float]:
        info = data.get_info(config.dataset)
        seg = info.segmentation
        crop, short, stride = geometry(config, encoder.res)
        patch = encoder.config["patch_size"]
        grid = (crop // patch[0], crop // patch[1])
        objective = dense.Objective("segmentation", seg.num_classes, dropout=config.dropout)
        recipe = dense.Recipe(steps=config.steps, lr=config.lr, weight_decay=config.weight_decay, b1=config.beta1,
                              b2=config.beta2, warmup_steps=config.warmup_steps, warmup_ratio=config.warmup_ratio,
                              final_div_factor=float("inf"), use_beta1=False, scheduler_lag=1,
                              grad_clip=config.grad_clip)
        ctx.info["geometry"] = {"crop": crop, "short_side": short, "eval_stride": stride, "grid": list(grid)}

        def to_grid(tokens):
            return dense.patch_grid(tokens, encoder.config["pool_type"], grid)

        def labels(arr):
            return np.asarray(arr)[..., 0]

        train_split = info.split("train")
        eval_split = info.split(seg.eval_role)
        if config.features == "cached":
            head, evals = dense.fit_cached(ctx, encoder, config, objective, recipe, pp=cached_pp(info, crop),
                                           splits=(train_split, eval_split), key=seg.key, target=labels,
                                           to_grid=to_grid, role="segmentation")
            t0 = time.perf_counter()
            per_image = self._eval_cached(head, objective, evals["encoded"], labels(evals[seg.key]), to_grid, crop,
                                          seg.num_classes)
            index = evals["index"]
        else:
            head = dense.fit_online(ctx, encoder, config, objective, recipe, pp=train_pp(config, info, crop, short),
                                    split=train_split, key=seg.key, target=labels, role="segmentation")
            t0 = time.perf_counter()
            index, per_image = self._eval_slide(encoder, ctx, config, head, objective, info, eval_split, crop, short,
                                                stride)
        ctx.add_time("eval_seconds", time.perf_counter() - t0)
        ctx.add_time("train_seconds", head.seconds)
        ctx.info["loss"] = {"first": head.losses[0], "last": head.losses[-1]}
        areas = np.zeros((4, seg.num_classes), np.int64)
        for a in per_image:
            areas += a
        scores = metrics_dense.segmentation_scores(areas)
        ctx.info["iou_per_class"] = [None if np.isnan(v) else round(float(v) * 100, 4) for v in scores["iou"]]
        ds = config.dataset
        # Per image: the label's classes, and the areas whose sums over the set are the metrics.
        samples = ctx.note_samples(ds, eval_split, index=index,
                                   targets=[{"classes": np.flatnonzero(a[3]).tolist()} for a in per_image],
                                   predictions=[segmentation_areas(a) for a in per_image])
        out = {}
        for which in ("miou", "aacc", "macc"):
            out[self.metric_name(ds, which)] = scores[which] * 100
            samples.score(self.metric_name(ds, which), "segmentation", which=which, num_classes=seg.num_classes)
        return out

    @staticmethod
    def _eval_cached(head, objective, tokens, labels, to_grid, crop, num_classes) -> list[np.ndarray]:
        """Whole-image eval of the cached features: logits upsampled to the (resized) label, argmax; each
        image's areas (4, num_classes)."""
        predict = dense.make_predict(objective, (crop, crop))
        areas = []
        for start in range(0, len(tokens), 64):
            x = to_grid(np.asarray(tokens[start:start + 64], np.float32))
            pred = np.asarray(predict(head.params, head.state, None, x)).argmax(-1)
            for p, lab in zip(pred, labels[start:start + 64]):
                areas.append(metrics_dense.intersect_and_union(p, lab, num_classes))
        return areas

    @staticmethod
    def _eval_slide(encoder, ctx, config, head, objective, info, split, crop, short, stride
                    ) -> tuple[list[int], list[np.ndarray]]:
        """DINOv3's sliding-window eval: each image at its resized size, its label at the original size;
        (the images' positions in the split, each image's areas (4, num_classes))."""
        seg = info.segmentation
        predict = dense.make_predict(objective, (crop, crop), features=dense.patch_tokens(encoder))
        chunk = config.eval_batch_size

        def windows(x):
            out = []
            for start in range(0, len(x), chunk):
                part = x[start:start + chunk]
                padded = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), part.dtype)])
                out.append(np.asarray(predict(head.params, head.state, encoder.params, padded))[:len(part)])
            return np.concatenate(out)

        pp = slide_pp(info, short)
        areas, index = [], []
        for batch in data.iterate(config.dataset, split, batch_size=1, pp=pp, data_dir=ctx.data_dir,
                                  num_examples=config.max_eval_examples or None):
            if not bool(np.asarray(batch["_mask"])[0]):
                continue
            label = batch[seg.key][0, ..., 0]
            logits = metrics_dense.slide_logits(batch["image"][0], crop, stride, windows, seg.num_classes)
            areas.append(metrics_dense.intersect_and_union(metrics_dense.resized_argmax(logits, label.shape), label,
                                                           seg.num_classes))
            index.append(int(np.asarray(batch["_index"])[0]))
        ctx.note_dataset(config.dataset, split, len(areas), pp, role="segmentation_eval")
        return index, areas
