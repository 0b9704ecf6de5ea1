"""Full fine-tuning on ImageNet (the paper's Table 1): top-1 on val, ReaL and v2, with minival reported.

The whole encoder is trained together with a NEW classifier head (kernel 0, bias -6.9; any head in the
checkpoint is dropped) through the shared loop `harness.train.loop.fit`, with the paper's recipe as defaults:
SGD momentum 0.9, lr 0.03, cosine schedule with 500 warm-up steps, 50k steps at batch 512, global-norm
clipping 1.0, no weight decay, sigmoid cross-entropy, inception crop + flip; layer-wise lr decay and
mixup and RandAugment as the paper chose them per resolution (0.85 and neither at 224 px; 0.9, mixup 0.2
and RandAug(2, 10) at 384/518). RandAugment is the `randaug` pp op (harness/data/pp/randaug.py, big_vision's
semantics), placed in the train pp after the crop and flip, before `value_range`.

Splits follow big_vision: train on minitrain = train[:99%], report minival = train[99%:] (for choosing
hyper-parameters; never the validation set), then validation, ReaL (`imagenet2012_real`, images without
a ReaL label left out, a prediction right if it is in the label set) and ImageNetV2. The resolution is the
encoder's (`--res` or `--set res=384`; a learned posemb is resampled at load).

The fine-tuned model is saved as a harness checkpoint and as a big_vision .npz under the run's artefact
folder. Training state is checkpointed every `ckpt_every` steps there, so a killed run resumes and ends
exactly as an uninterrupted one; a finished fine-tune is reused if only the evaluation died.
`--set train_steps=0` evaluates a checkpoint that is already fine-tuned (it must have a head of the
dataset's class count).

Metric names: `imagenet_finetune/<res>/{val,real,v2,minival}` for ImageNet (as harness/assets/paper.json's
Table 1 rows), `imagenet_finetune/<dataset>/<res>/{test,minival}` for other datasets (e.g. the proxy).
`ood_datasets` (none by default: Table 1 reports none) adds ImageNet-R / -A / ObjectNet as
`imagenet_finetune/<res>/{r,a,objectnet}`, the prediction restricted to the ImageNet classes each covers
(`harness.eval.metrics.restricted_argmax`); one that is not prepared is skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from harness import api, checkpoints, data
from harness.api import Metric, RunContext, Task
from harness.data.pp import Preprocess, eval_pp, side_before_crop
from harness.errors import HarnessError
from harness.eval.metrics import restricted_argmax
from harness.eval.samples import top_classes
from harness.progress import Progress
from harness.scale import sharding
from harness.train import finetune, optim
from harness.train import loop as train

log = logging.getLogger("harness")

IMAGENET = "imagenet2012"


@dataclasses.dataclass
class FinetuneConfig:
    dataset: str = IMAGENET
    # Empty: the dataset's roles (minitrain, else train / minival, else validation / test).
    train_split: str = ""
    minival_split: str = ""
    test_split: str = ""
    # Extra test sets scored with the same model; empty to skip.
    real_dataset: str = "imagenet2012_real"
    v2_dataset: str = "imagenet_v2"
    # Out-of-distribution test sets (e.g. imagenet_r,imagenet_a,objectnet), scored on the ImageNet classes each
    # covers; the paper's Table 1 reports none. One that is not prepared is skipped with a warning.
    ood_datasets: tuple[str, ...] = ()
    # 0: the encoder's resolution (--res, else the checkpoint's); else the posemb is resampled to it.
    res: int = 0
    batch_size: int = 512
    train_steps: int = 50_000
    lr: float = 0.03  # the paper's (configs/transfer.py `config.lr` is 0.01)
    momentum: float = 0.9  # big_vision/optax.py::momentum_hp default (configs/transfer.py's optimiser)
    warmup_steps: int = 500  # the paper's
    grad_clip_norm: float = 1.0  # configs/transfer.py `config.grad_clip_norm`
    weight_decay: float = 0.0  # big_vision's `wd` (after the lr, kernels only); configs/transfer.py: None
    # None: the paper's per-resolution choice (0.85 up to 224 px, 0.9 above); 1.0 switches it off.
    layer_decay: float | None = None
    # Beta(alpha, alpha) mixup; None: the paper's choice (off up to 224 px, 0.2 above); 0 switches it off.
    mixup: float | None = None
    # RandAugment: "N,M" = num_layers, magnitude (or a full "randaug(...)" pp op); "off" switches it off;
    # None: the paper's choice (off up to 224 px, "2,10" above). Inserted into pp_train before value_range.
    randaug: str | None = None
    head_bias_init: float = finetune.HEAD_BIAS_INIT
    # Empty: inception crop + flip for training; resize_small(eval_resize(res))|central_crop(res) for eval.
    pp_train: str = ""
    pp_eval: str = ""
    eval_batch_size: int = 256
    ckpt_every: int = 1000
    seed: int = 0
    # Caps for quick runs (0 = whole split); the record states the counts used.
    max_train_examples: int = 0
    max_eval_examples: int = 0
    may_be_empty = ("ood_datasets",)

    def validate(self) -> None:
        """Rules checked before the encoder is loaded or any data read (empty lists and NaN: harness.api)."""
        _check_config(self)
        api.check_range(self, "momentum", low=0, high=1, high_open=True)
        api.check_range(self, "warmup_steps", low=0)
        api.check_range(self, "grad_clip_norm", low=0)
        api.check_range(self, "weight_decay", low=0)
        api.check_pp(self, "pp_train")
        api.check_pp(self, "pp_eval")
        api.check_range(self, "ckpt_every", low=0)
        api.check_range(self, "seed", low=0)
        api.check_range(self, "max_train_examples", low=0)
        api.check_range(self, "max_eval_examples", low=0)
        api.check_unique(self, "ood_datasets")
        for ds in self.ood_datasets:
            data.get_info(ds).split("test")
            if not data.get_info(ds).class_subset:
                raise api.bad_setting("ood_datasets", self.ood_datasets,
                                      f"has {ds}, which is not a class subset of ImageNet; list only such sets "
                                      "(imagenet_r, imagenet_a, objectnet)")
            if self.dataset != IMAGENET:
                raise api.bad_setting("ood_datasets", self.ood_datasets,
                                      f"are scored on ImageNet-1k classes, but the model is fine-tuned on "
                                      f"{self.dataset}; fine-tune on {IMAGENET} or drop them")


def paper_layer_decay(res: int) -> float:
    return 0.85 if res <= 224 else 0.9


def paper_mixup(res: int) -> float:
    return 0.0 if res <= 224 else 0.2


def paper_randaug(res: int) -> tuple[int, int] | None:
    """(num_layers, magnitude) of the paper's RandAugment at `res`, or None where it used none."""
    return None if res <= 224 else (2, 10)


def randaug_op(setting: str | None, res: int) -> str:
    """The `randaug(...)` pp op of a `randaug` setting (see FinetuneConfig), or "" for none."""
    if setting is None:
        layers_magnitude = paper_randaug(res)
        return "" if layers_magnitude is None else "randaug({},{})".format(*layers_magnitude)
    text = setting.strip()
    if text.lower() in ("", "off", "0", "false"):
        return ""
    if not text.startswith("randaug"):
        parts = [p.strip() for p in text.strip("()").split(",")]
        if len(parts) != 2:
            raise HarnessError(f"imagenet_finetune: randaug={setting!r}: write num_layers,magnitude "
                               "(e.g. 2,10), a pp op randaug(2, 10), or off")
        text = f"randaug({parts[0]},{parts[1]})"
    ops = Preprocess(text).ops  # validates the arguments (a one-line error for bad ones)
    if len(ops) != 1 or ops[0].name != "randaug":
        raise HarnessError(f"imagenet_finetune: randaug={setting!r} is not one randaug(...) op")
    return text


def pp_with_randaug(pp: str, op: str) -> str:
    """`pp` with the RandAugment op `op` inserted before its first value_range (RandAugment works on uint8
    pixels), or appended if there is none; unchanged for an empty `op`."""
    if not op:
        return pp
    calls = Preprocess(pp).ops
    texts = [call.text for call in calls]
    at = next((i for i, call in enumerate(calls) if call.name == "value_range"), len(calls))
    return "|".join(texts[:at] + [op] + texts[at:])


def default_pp_train(res: int) -> str:
    return f"decode|inception_crop({res})|flip_lr|value_range(-1,1)"


def eval_resize(res: int) -> int:
    """The short side an eval image is resized to before the central crop of `res` (big_vision's h_res).

    big_vision evaluates 224 px models at resize_small(256) (`configs/vit_i1k.py`) and fine-tunes to high
    resolution with `configs/transfer.py`'s h_res=448 for l_res=384. It has no config for other sizes; they
    keep the ratio of the nearer of the two (256/224 up to 224 px, 448/384 above: 518 px -> 604)."""
    return side_before_crop(res) if res <= 224 else side_before_crop(res, 448, 384)


def default_pp_eval(res: int) -> str:
    return eval_pp(res, eval_resize(res), resize_op="resize_small")


def metric_base(dataset: str, res: int) -> str:
    return f"imagenet_finetune/{res}" if dataset == IMAGENET else f"imagenet_finetune/{dataset}/{res}"


class ImageNetFinetune(Task):
    name = "imagenet_finetune"
    # 2: big_vision's momentum_hp chain and transfer-config eval pp at 384 px (issue 14).
    version = "2"
    description = "full fine-tuning with a new head; val / ReaL / v2 top-1 and minival (paper Table 1)"
    report_title = "ImageNet fine-tuning, top-1 % (paper Table 1)"
    report_order = (1, 0)
    Config = FinetuneConfig
    neutral_settings = ("ood_datasets",)  # which extra test sets are scored, not how
    presets = {
        # proxy_scenes at the proxy checkpoint's 64 px: train on train (1000 images), minival = val (250),
        # test (500); 150 steps at batch 64 (~10 epochs, about a minute on 2 CPU cores). Chosen on minival
        # among lr {0.01, 0.02, 0.03, 0.05, 0.2}, layer decay {1, 0.8, 0.7} and crop/eval pp variants: no
        # crop (a crop of a 64 px scene often cuts away the largest object, which is the label), the whole
        # image at eval, and a strong layer decay (the checkpoint was pretrained on these very labels).
        "proxy": dict(dataset="proxy_scenes", real_dataset="", v2_dataset="", batch_size=64, train_steps=150,
                      lr=0.03, warmup_steps=30, layer_decay=0.7, mixup=0.0, ckpt_every=50, eval_batch_size=250,
                      pp_train="decode|flip_lr|value_range(-1,1)", pp_eval="decode|resize(64)|value_range(-1,1)"),
        # The paper's three resolutions (set layer decay and mixup as the paper did at each).
        "imagenet_224": dict(res=224),
        "imagenet_384": dict(res=384),
        "imagenet_518": dict(res=518),
    }

    def encoder_overrides(self, config: FinetuneConfig) -> dict:
        return {"res": int(config.res)} if config.res else {}

    def resolve_config(self, config: FinetuneConfig, encoder) -> FinetuneConfig:
        # res=0 is the encoder's resolution, known once it is loaded; the metric names carry it.
        return config if config.res else dataclasses.replace(config, res=int(encoder.res))

    def metrics(self, config: FinetuneConfig) -> list[Metric]:
        # Before the encoder is loaded, res=0 names the metrics ".../0/..."; the runner resolves it first.
        base = metric_base(config.dataset, config.res)
        test_leaf = "val" if config.dataset == IMAGENET else "test"
        out = [Metric(f"{base}/{test_leaf}", True, "%", f"top-1 on {config.dataset} {test_leaf}"),
               Metric(f"{base}/minival", True, "%", "top-1 on minival (held-out train, for model selection)")]
        if config.real_dataset:
            out.append(Metric(f"{base}/real", True, "%", f"ReaL top-1 on {config.real_dataset}"))
        if config.v2_dataset:
            out.append(Metric(f"{base}/v2", True, "%", f"top-1 on {config.v2_dataset}"))
        # Skipped when not prepared, so optional.
        out += [Metric(f"{base}/{data.get_info(ds).report_tag or ds}", True, "%",
                       f"top-1 on {ds}, restricted to its ImageNet classes", optional=True)
                for ds in config.ood_datasets]
        return out

    # --------------------------------------------------------------------------------------------- run
    def run(self, encoder, ctx: RunContext, config: FinetuneConfig) -> dict[str, float]:
        _check_config(config)
        res = encoder.res
        if config.res and config.res != res:
            raise HarnessError(f"imagenet_finetune: res={config.res} was asked for but the encoder runs at {res}; "
                               "load it with --res (the runner does this through encoder_overrides)")
        info = data.get_info(config.dataset)
        label_key = info.label_key or "label"
        splits = {"train": config.train_split or _role_split(info, ("minitrain", "train"), "train"),
                  "minival": config.minival_split or _role_split(info, ("minival", "validation"), "validation"),
                  "test": config.test_split or _role_split(info, ("test",), "test")}
        # Fail before hours of training, not after, when an evaluation set is missing.
        for name in (config.dataset, config.real_dataset, config.v2_dataset):
            if name:
                data.require_prepared(name, ctx.data_dir)
        skipped = [name for name in config.ood_datasets if data.skip_unprepared(name, ctx.data_dir, self.name)]
        ood = [name for name in config.ood_datasets if name not in skipped]
        num_classes = info.num_classes or data.num_classes(config.dataset, ctx.data_dir)
        layer_decay = paper_layer_decay(res) if config.layer_decay is None else float(config.layer_decay)
        mixup_alpha = paper_mixup(res) if config.mixup is None else float(config.mixup)
        pp_train, randaug = _train_pp(config, res)
        pp_train += f'|keep("image", "{label_key}")'
        pp_eval = config.pp_eval or default_pp_eval(res)
        base = metric_base(config.dataset, res)
        out_dir = Path(ctx.out_dir)
        timings: dict[str, float] = {}
        run_info: dict = {"res": res, "num_classes": num_classes, "layer_decay": layer_decay,
                          "mixup": mixup_alpha, "randaug": randaug or None, "splits": splits}

        if config.train_steps == 0:
            model, params, _ = _headed_checkpoint(encoder, num_classes)
            run_info["trained"] = False
        else:
            t0 = time.perf_counter()
            model, params, _ = self._finetune(
                encoder, ctx, config, out_dir=out_dir, num_classes=num_classes, label_key=label_key,
                train_split=splits["train"], pp_train=pp_train, layer_decay=layer_decay,
                mixup_alpha=mixup_alpha, run_info=run_info)
            timings["train_seconds"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        predict = _predictor(model)
        evals = [("minival", config.dataset, splits["minival"], label_key, False),
                 ("val" if config.dataset == IMAGENET else "test", config.dataset, splits["test"], label_key, False)]
        if config.real_dataset:
            evals.append(("real", config.real_dataset, *_test_split_and_key(config.real_dataset, "real_label"), True))
        if config.v2_dataset:
            evals.append(("v2", config.v2_dataset, *_test_split_and_key(config.v2_dataset, "label"), False))
        for ds in ood:
            evals.append((data.get_info(ds).report_tag or ds, ds, *_test_split_and_key(ds, "label"),
                          data.label_is_set(ds, ctx.data_dir)))
        metrics = {}
        for leaf, ds, split, key, multi in evals:
            scores, samples = _evaluate(predict, params, ds, split, key=key, multi_label=multi,
                                        num_classes=num_classes, pp=pp_eval, batch_size=config.eval_batch_size,
                                        ctx=ctx, num_examples=config.max_eval_examples or None, role=leaf,
                                        classes=data.class_subset(ds, ctx.data_dir))
            name = f"{base}/{leaf}"
            metrics[name] = float(100.0 * scores.mean()) if scores.size else float("nan")
            ctx.note_per_example(name, 100.0 * scores)
            samples.score(name, "top1", 100.0 * scores)
        timings["eval_seconds"] = time.perf_counter() - t0
        ctx.timings.update(timings)
        ctx.info["finetune"] = run_info
        if config.ood_datasets:
            ctx.info["skipped_datasets"] = skipped
        return metrics

    def _finetune(self, encoder, ctx: RunContext, config: FinetuneConfig, *, out_dir: Path, num_classes: int,
                  label_key: str, train_split: str, pp_train: str, layer_decay: float, mixup_alpha: float,
                  run_info: dict):
        from harness.models.encoder import Encoder, abstract_params, build_model

        res = encoder.res
        ft_config = {**encoder.config, "num_classes": num_classes}
        model = build_model(ft_config)
        target = abstract_params(model, res)
        final_dir = out_dir / "finetuned"
        ckpt_dir = out_dir / "train_state"
        n_train = data.num_examples(config.dataset, train_split, ctx.data_dir)
        if config.max_train_examples:
            n_train = min(n_train, config.max_train_examples)
        ctx.note_dataset(config.dataset, train_split, n_train, pp_train, role="train")

        if (final_dir / checkpoints.HARNESS_META).exists():
            # Training finished in an earlier attempt that died while evaluating: reuse its model.
            flat, _ = checkpoints.read_harness(final_dir)
            params = checkpoints.unflatten({k: jax.numpy.asarray(v) for k, v in flat.items()})
            log.info("imagenet_finetune: reusing the finished fine-tune in %s", final_dir)
            run_info.update(trained=True, reused_finished_model=True)
            _note_artifacts(ctx, final_dir, out_dir / "finetuned.npz")
            return model, params, ft_config

        params = finetune.with_new_head(encoder.params, target, bias_init=config.head_bias_init)
        mults = None
        if layer_decay != 1.0:
            mults = finetune.layer_decay_multipliers(params, int(encoder.config["depth"]), layer_decay)
        # big_vision's chain (configs/transfer.py: `optax_name` big_vision.momentum_hp, a bfloat16
        # momentum accumulator); layer decay as its `lr_mults`, which scale the update, not the decay.
        tx = optim.make_optimizer("sgd_momentum", lr=config.lr, wd=config.weight_decay,
                                  grad_clip_norm=config.grad_clip_norm, lr_mults=mults, momentum=config.momentum,
                                  schedule=optim.cosine_schedule(config.train_steps, config.warmup_steps))
        loss_fn = _loss_fn(model, num_classes, mixup_alpha)

        def batches(start_step: int):
            stream = data.iterate(config.dataset, train_split, batch_size=config.batch_size, pp=pp_train,
                                  data_dir=ctx.data_dir, train=True, seed=config.seed, start_step=start_step,
                                  num_examples=config.max_train_examples or None)
            for step, batch in enumerate(stream, start=start_step):
                out = {"image": batch["image"], "label": np.asarray(batch[label_key], np.int32)}
                if mixup_alpha > 0:
                    out["mixup_weight"] = np.float32(finetune.mixup_weight(config.seed, step, mixup_alpha))
                yield out

        result = train.fit(params=params, tx=tx, loss_fn=loss_fn, batches=batches, total_steps=config.train_steps,
                           seed=config.seed, ckpt_dir=ckpt_dir, ckpt_every=config.ckpt_every,
                           progress=ctx.progress, desc="imagenet_finetune")
        if result.steps < config.train_steps:
            raise HarnessError(f"imagenet_finetune: training stopped at step {result.steps} of "
                               f"{config.train_steps}; rerun the same command to resume")
        params = result.params
        losses = result.losses
        run_info.update(trained=True, resumed_from=result.resumed_from, steps=result.steps,
                        examples_seen=result.steps * config.batch_size,
                        loss_first10=float(np.mean(losses[:10])) if losses else None,
                        loss_last10=float(np.mean(losses[-10:])) if losses else None)
        if mults is not None:
            run_info["lr_multipliers"] = finetune.layer_decay_summary(mults)

        tuned = Encoder(model=model, params=params, config=ft_config,
                        spec=f"{encoder.spec} fine-tuned on {config.dataset}", sha256=None)
        npz_path = out_dir / "finetuned.npz"
        tuned.save(str(npz_path), fmt="npz")
        # The harness checkpoint goes last: its presence marks a finished fine-tune (see above).
        tuned.save(str(final_dir), fmt="harness")
        _note_artifacts(ctx, final_dir, npz_path)
        # The final model supersedes the optimizer state (twice the model's size).
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return model, params, ft_config


# ------------------------------------------------------------------------------------------------ helpers
def _check_config(config: FinetuneConfig):
    def bad(what):
        raise HarnessError(f"imagenet_finetune: {what}")

    if config.train_steps < 0:
        bad(f"train_steps must be >= 0; got {config.train_steps}")
    if config.batch_size < 1 or config.eval_batch_size < 1:
        bad("batch_size and eval_batch_size must be >= 1")
    if config.lr < 0:
        bad(f"lr must be >= 0; got {config.lr}")
    if config.layer_decay is not None and not 0 < config.layer_decay <= 1:
        bad(f"layer_decay must be in (0, 1] (1 = off); got {config.layer_decay}")
    if config.mixup is not None and config.mixup < 0:
        bad(f"mixup (the Beta distribution's alpha) must be >= 0 (0 = off); got {config.mixup}")
    if config.res and config.res < 0:
        bad(f"res must be > 0 (or 0 for the encoder's); got {config.res}")
    randaug_op(config.randaug, 384)  # a bad setting fails here, whatever the resolution


def _train_pp(config: FinetuneConfig, res: int) -> tuple[str, str]:
    """The train pp and the RandAugment op in it ("" for none). A pp_train that already has a randaug op
    keeps it, unless a `randaug` setting asks for another one too."""
    pp = config.pp_train or default_pp_train(res)
    own = [call.text for call in Preprocess(pp).ops if call.name == "randaug"]
    if own:
        if config.randaug is not None and randaug_op(config.randaug, res):
            raise HarnessError(f"imagenet_finetune: pp_train already has {own[0]} and randaug={config.randaug!r} "
                               "asks for another; drop one of them (randaug=off keeps the pp's)")
        return pp, own[0]
    op = randaug_op(config.randaug, res)
    return pp_with_randaug(pp, op), op


def _role_split(info, roles: tuple[str, ...], fallback: str) -> str:
    """The registry's split for the first role it has; a dataset outside the registry uses TFDS's
    conventional split names."""
    for role in roles:
        if role in info.splits:
            return info.splits[role]
    if info.splits:  # a registered dataset without the role: say which roles it has
        return info.split(roles[0])
    return fallback


def _test_split_and_key(name: str, default_key: str) -> tuple[str, str]:
    if name in data.DATASETS:
        info = data.DATASETS[name]
        return info.split("test"), info.label_key or default_key
    return "test", default_key


def _headed_checkpoint(encoder, num_classes: int):
    have = encoder.config.get("num_classes")
    if not have:
        raise HarnessError("imagenet_finetune: train_steps=0 evaluates an already fine-tuned checkpoint, but this "
                           "one has no classifier head; fine-tune it first (train_steps > 0)")
    if int(have) != num_classes:
        raise HarnessError(f"imagenet_finetune: the checkpoint's head has {have} classes but the dataset has "
                           f"{num_classes}; pick the matching checkpoint or fine-tune (train_steps > 0)")
    return encoder.model, encoder.params, encoder.config


def _loss_fn(model, num_classes: int, mixup_alpha: float):
    def loss_fn(params, batch, rng):
        images = batch["image"]
        labels = jax.nn.one_hot(batch["label"], num_classes)
        if mixup_alpha > 0:
            images, labels = finetune.mixup(images, labels, batch["mixup_weight"])
        logits, _ = model.apply({"params": params}, images, train=True)
        return finetune.sigmoid_xent(logits, labels), {}

    return loss_fn


def _predictor(model):
    @jax.jit
    def predict(params, images):
        logits, _ = model.apply({"params": params}, images)
        return logits.astype(jnp.float32)

    return predict


def _evaluate(predict, params, dataset: str, split: str, *, key: str, multi_label: bool, num_classes: int,
              pp: str, batch_size: int, ctx: RunContext, num_examples: int | None, role: str,
              classes=None):
    """Per-example 0/1 scores (ReaL: of the images that have a label) on one split, of the argmax over
    `classes` only (None: all), and the split's samples (`RunContext.note_samples`: the scored images' top-5)."""

    full_pp = f'{pp}|keep("image", "{key}")'
    total = data.eval_num_batches(dataset, split, batch_size=batch_size, data_dir=ctx.data_dir,
                                  num_examples=num_examples)
    preds, labels, tops, index = [], [], [], []
    with Progress(total, f"eval {role} {dataset}/{split}", "batch", enabled=ctx.progress) as bar:
        for batch in data.iterate(dataset, split, batch_size=batch_size, pp=full_pp, data_dir=ctx.data_dir,
                                  num_examples=num_examples):
            mask = np.asarray(batch["_mask"], bool)
            logits = sharding.apply_to_batch(predict, params, np.asarray(batch["image"]))
            preds.append(restricted_argmax(np.asarray(logits)[mask], classes))
            tops += top_classes(np.asarray(logits)[mask], classes=classes)
            index += np.asarray(batch["_index"])[mask].tolist()
            labels.append(np.asarray(batch[key])[mask])
            bar.update(1)
    n = sum(len(p) for p in preds)
    ctx.note_dataset(dataset, split, n, full_pp, role=role)
    if not n:
        return np.zeros((0,), np.float64), ctx.note_samples(dataset, split, targets=[], predictions=[], index=[])
    pred = np.concatenate(preds)
    if multi_label:
        width = max(lab.shape[1] if lab.ndim == 2 else 1 for lab in labels)
        padded = [np.pad(lab.reshape(len(lab), -1), ((0, 0), (0, width - (lab.shape[1] if lab.ndim == 2 else 1))),
                         constant_values=-1) for lab in labels]
        scores, keep = finetune.real_correct(pred, finetune.multi_hot(np.concatenate(padded), num_classes))
        ctx.info.setdefault("real_examples", {})[f"{dataset}/{split}"] = {"with_labels": int(keep.sum()),
                                                                         "total": int(n)}
        label_sets = [[int(c) for c in row if c >= 0] for row in np.concatenate(padded)]
        kept = np.flatnonzero(keep)
        return scores, ctx.note_samples(dataset, split, index=[index[i] for i in kept],
                                        targets=[label_sets[i] for i in kept], predictions=[tops[i] for i in kept])
    label = np.concatenate(labels)
    return finetune.top1_correct(pred, label), ctx.note_samples(dataset, split, index=index, targets=label,
                                                                 predictions=tops)


def _note_artifacts(ctx: RunContext, harness_dir: Path, npz_path: Path):
    ctx.note_artifact("finetuned_harness", harness_dir)
    if npz_path.exists():
        ctx.note_artifact("finetuned_npz", npz_path)
