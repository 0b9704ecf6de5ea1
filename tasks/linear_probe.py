"""Linear probe on frozen features, full training set (the paper's Table 2).

A softmax classifier on the cached `pre_logits` (for SoViT: the MAP-head output) is trained with SGD
(momentum 0.9, cosine schedule, batch 512, mixup 0.1) for every point of the paper's grid, learning rate
{1e-3, 3e-4, 1e-4} x epochs {1, 3, 10} x weight decay {1e-4, none}. The grid point with the best minival
top-1 (ImageNet: train[99%:], held out of the probe's training data) is the one evaluated, so model
selection never sees the test sets. Metrics: `linear_probe/<dataset>/<eval set>` (top-1 %), with Table 2's
eval sets `val` (ImageNet validation), `real` (ReaL multi-labels), `v2`, `r` (ImageNet-R), `a` (ImageNet-A),
`objectnet`, and `minival`. ImageNet-R / -A / ObjectNet cover part of ImageNet's classes: the 1000-way
prediction is restricted to those (`harness.eval.metrics.restricted_argmax`); one that is not prepared is
skipped with a warning (its metric is optional).

Features are computed once per split through the feature cache; because the encoder is frozen, mixup is
applied to the features (a convex combination of two examples' features and labels) rather than pixels.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from harness import api, data
from harness.api import Metric, RunContext, Task
from harness.data.pp import eval_pp, side_before_crop
from harness.eval.metrics import restricted_argmax
from harness.eval.samples import top_classes
from harness.train import finetune, probe


@dataclasses.dataclass
class LinearProbeConfig:
    dataset: str = "imagenet2012"
    # Split roles of `dataset` (see harness.data.DATASETS): trained on, selected on.
    train_split: str = "minitrain"
    minival_split: str = "minival"
    # Datasets whose "test" split is evaluated with the selected probe; `dataset` itself is evaluated too.
    # The paper's Table 2 columns: ReaL, v2, ImageNet-R, ImageNet-A, ObjectNet (the last three, when not
    # prepared, are skipped with a warning).
    eval_datasets: tuple[str, ...] = ("imagenet2012_real", "imagenet_v2", "imagenet_r", "imagenet_a", "objectnet")
    lrs: tuple[float, ...] = (1e-3, 3e-4, 1e-4)
    epochs: tuple[int, ...] = (1, 3, 10)
    weight_decays: tuple[float, ...] = (1e-4, 0.0)
    batch_size: int = 512
    momentum: float = 0.9
    mixup: float = 0.1  # Beta(a, a) mixing; 0 disables
    representation: str = "pre_logits"
    pp: str = ""  # empty: resize_small(256)|central_crop(224) scaled to the encoder's resolution
    extract_batch_size: int = 64
    max_train_examples: int = 0  # 0 = the whole split
    max_eval_examples: int = 0
    seed: int = 0
    may_be_empty = ("eval_datasets",)  # none: only `dataset` itself is evaluated

    def validate(self) -> None:
        """Rules checked before any data is read (empty lists and NaN: harness.api)."""
        info = data.get_info(self.dataset)
        for role in (self.train_split, self.minival_split):
            info.split(role)
        for ds in self.eval_datasets:
            data.get_info(ds).split("test")
            if data.get_info(ds).class_subset and not info.imagenet_labels:
                raise api.bad_setting("eval_datasets", self.eval_datasets,
                                      f"has {ds}, which is scored on ImageNet-1k classes, but the probe is trained "
                                      f"on {self.dataset}; train it on imagenet2012 or drop {ds}")
        api.check_unique(self, "eval_datasets")
        api.check_range(self, "lrs", low=0, low_open=True)
        api.check_range(self, "epochs", low=1)
        api.check_range(self, "weight_decays", low=0)
        api.check_range(self, "batch_size", low=1)
        api.check_range(self, "momentum", low=0, high=1, high_open=True)
        api.check_range(self, "mixup", low=0)
        api.check_choice(self, "representation", ("pre_logits", "logits"))
        api.check_pp(self, "pp")
        api.check_range(self, "extract_batch_size", low=1)
        api.check_range(self, "max_train_examples", low=0)
        api.check_range(self, "max_eval_examples", low=0)
        api.check_range(self, "seed", low=0)


def default_pp(res: int) -> str:
    # big_vision configs/vit_i1k.py's ImageNet eval pp: resize_small(256)|central_crop(224).
    return eval_pp(res, side_before_crop(res), resize_op="resize_small")


def label_set_pp(base: str, num_classes: int, key: str = "real_label") -> tuple[str, str]:
    """(pp, the key it writes): a label set per image (ReaL's `real_label`, ObjectNet's `label`) is a
    variable-length list; a multi-hot vector has a fixed size to cache."""
    out = f"{key.removesuffix('_label')}_multihot"
    return f"{base}|onehot({num_classes},key={key!r},key_result={out!r})", out


def top1(logits: np.ndarray, labels: np.ndarray, classes=None) -> np.ndarray:
    """Per-example 0/1 correctness of the argmax (over `classes` only, if given)."""
    return finetune.top1_correct(restricted_argmax(logits, classes), labels)


def real_correct(logits: np.ndarray, multihot: np.ndarray, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Label-set scoring of the argmax (over `classes` only, if given; `harness.train.finetune.real_correct`):
    (per-example 0/1 over the images that have a label, mask of those images)."""
    return finetune.real_correct(restricted_argmax(logits, classes), multihot)


def _skippable(ds: str) -> bool:
    """An out-of-distribution test set (a class subset of ImageNet: ImageNet-R / -A / ObjectNet): skipped with a
    warning when it is not prepared, so that a user without it still gets the other columns."""
    return bool(data.get_info(ds).class_subset)


class LinearProbe(Task):
    name = "linear_probe"
    # 2: big_vision's SGD chain (momentum_hp; wd on kernels, not times lr; issue 14).
    version = "2"
    description = "softmax probe on frozen pre_logits, SGD grid chosen on minival (paper Table 2)"
    report_title = "Linear probe on frozen features, top-1 % (paper Table 2)"
    report_order = (2, 0)
    naflex_inputs = True  # images only through ctx.extract
    Config = LinearProbeConfig
    neutral_settings = ("eval_datasets", "extract_batch_size")
    presets = {
        # 1000 proxy train images: a smaller batch gives the probe enough steps; the grid is scaled to it.
        "proxy": dict(dataset="proxy_scenes", train_split="train", minival_split="validation",
                      eval_datasets=(), lrs=(0.3, 0.1, 0.03), epochs=(10, 30), weight_decays=(1e-4, 0.0),
                      batch_size=32, extract_batch_size=50),
    }

    def _eval_sets(self, config) -> list[tuple[str, str]]:
        """(dataset, its name in metric names): the registry's `report_tag` (Table 2's header: val, real,
        v2), else "test" for the probe's own dataset and the name for another."""
        return [(config.dataset, data.get_info(config.dataset).report_tag or "test")] + [
            (ds, data.get_info(ds).report_tag or ds) for ds in config.eval_datasets]

    def metrics(self, config) -> list[Metric]:
        # An out-of-distribution set (ImageNet-R / -A / ObjectNet) that is not prepared is skipped.
        out = [Metric(self.metric_name(config.dataset, tag), True, "%", f"top-1 on {ds} test split",
                      optional=_skippable(ds)) for ds, tag in self._eval_sets(config)]
        return out + [Metric(self.metric_name(config.dataset, "minival"), True, "%",
                             "top-1 of the selected probe on minival")]

    def run(self, encoder, ctx: RunContext, config) -> dict[str, float]:
        # The data it cannot do without first (one error line), then the optional test sets (a warning each).
        for ds in (config.dataset, *(ds for ds in config.eval_datasets if not _skippable(ds))):
            data.require_prepared(ds, ctx.data_dir)
        skipped = [ds for ds in config.eval_datasets
                   if _skippable(ds) and data.skip_unprepared(ds, ctx.data_dir, self.name)]
        info = data.get_info(config.dataset)
        pp = config.pp or default_pp(encoder.res)
        rep = config.representation

        def features(ds, role, cap, pp_, keys):
            return ctx.extract(encoder, ds, data.get_info(ds).split(role), pp=pp_, representations=(rep,),
                               keys=keys, batch_size=config.extract_batch_size, num_examples=cap,
                               role=f"linear_probe_{role}")

        label = (info.label_key,)
        train = features(config.dataset, config.train_split, config.max_train_examples, pp, label)
        minival = features(config.dataset, config.minival_split, config.max_eval_examples, pp, label)
        num_classes = info.num_classes or data.num_classes(config.dataset, ctx.data_dir)
        x, y = np.asarray(train[rep]), np.asarray(train[info.label_key])
        mx, my = np.asarray(minival[rep]), np.asarray(minival[info.label_key])

        t0 = time.perf_counter()
        # Ties keep the earlier point: larger lr, fewer epochs, the first weight decay.
        points = probe.grid(lr=config.lrs, epochs=config.epochs, weight_decay=config.weight_decays)
        chosen, params, table = probe.select_on_minival(
            points, lambda p: probe.train_linear(x, y, num_classes, **p, batch_size=config.batch_size,
                                                 momentum=config.momentum, mixup=config.mixup, seed=config.seed),
            lambda head: top1(probe.predict_linear(head, mx), my).mean() * 100)
        ctx.add_time("probe_seconds", time.perf_counter() - t0)

        metrics = {self.metric_name(config.dataset, "minival"): chosen["minival"]}
        minival_logits = probe.predict_linear(params, mx)
        ctx.note_per_example(self.metric_name(config.dataset, "minival"), top1(minival_logits, my) * 100)
        ctx.note_samples(config.dataset, info.split(config.minival_split), index=minival["index"], targets=my,
                         predictions=top_classes(minival_logits)).score(
            self.metric_name(config.dataset, "minival"), "top1", top1(minival_logits, my) * 100)
        for ds, tag in self._eval_sets(config):
            ds_info = data.get_info(ds)
            if ds in skipped:
                continue
            classes = data.class_subset(ds, ctx.data_dir)
            if data.label_is_set(ds, ctx.data_dir):  # a label set per image: ReaL, ObjectNet
                set_pp, key = label_set_pp(pp, num_classes, ds_info.label_key)
                feats = features(ds, "test", config.max_eval_examples, set_pp, (key,))
                logits = probe.predict_linear(params, feats[rep])
                correct, keep = real_correct(logits, feats[key], classes)
                targets = [np.flatnonzero(row).tolist() for row in np.asarray(feats[key])[keep]]
            else:
                feats = features(ds, "test", config.max_eval_examples, pp, (ds_info.label_key,))
                logits = probe.predict_linear(params, feats[rep])
                correct = top1(logits, feats[ds_info.label_key], classes)
                keep, targets = np.ones(len(correct), bool), np.asarray(feats[ds_info.label_key])
            name = self.metric_name(config.dataset, tag)
            metrics[name] = float(correct.mean() * 100) if len(correct) else None
            ctx.note_per_example(name, correct * 100)
            ctx.note_samples(ds, ds_info.split("test"), index=np.asarray(feats["index"])[keep], targets=targets,
                             predictions=top_classes(np.asarray(logits)[keep], classes=classes)).score(
                name, "top1", correct * 100)
        ctx.info["skipped_datasets"] = skipped
        ctx.info["selected"] = {k: chosen[k] for k in ("lr", "epochs", "weight_decay", "minival")}
        ctx.info["grid"] = table
        return metrics
