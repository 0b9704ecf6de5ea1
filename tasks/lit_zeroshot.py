"""LiT zero-shot (the paper's Table 4, first column): a text tower for the locked image tower, then
zero-shot classification and image-text retrieval, with big_vision's evaluator semantics.

1. Text tower. A two-tower checkpoint (SigLIP / LiT `.npz` as `file.npz:img`, or a Hugging Face SigLIP
   folder) brings its own and is evaluated directly. Otherwise LiT trains a new one: the image tower is
   locked, so its embeddings of the training images are read once from the feature cache, and only the
   text tower, the log-temperature `t` and the bias `b` learn, with the sigmoid loss (the paper's choice:
   t' = 10, b = -10 at init) or the softmax contrastive loss, big_vision's Adam with decoupled weight
   decay on the kernels (harness.train.optim) and a cosine schedule with 20% warm-up.
   The result is written as a big_vision two-tower `.npz` (an artefact; reload it as `lit.npz:img`).
   Texts become tokens under the checkpoint family's own text pp (`harness.data.text_pp.TextPP`, recorded in
   `info.text_pp`): big_vision's `tokenize(max_len=L, eos="sticky", pad_value=<EOS>)` for big_vision
   two-tower checkpoints and LiT towers, a HF SigLIP folder's own processor for that folder.
2. Zero-shot classification (big_vision `discriminative_classifier`, image pp `_square875`; ImageNet-A
   `_aspect75`): class names (CLIP's curated names for ImageNet, else the dataset's label names) and prompt
   templates are canonicalised (underscores to spaces, punctuation stripped, lower-cased), only a name's
   first alias is used, every class's template embeddings are L2-normalised, averaged and normalised again;
   prediction = argmax of the image embedding against them (t and b are not used: neither changes an argmax
   or a ranking). A test set drawn from part of ImageNet's classes (ImageNet-R / -A, ObjectNet:
   `harness.data.class_subset`) is classified among those classes' names only, as big_vision's evaluator
   does with its ImageNet-R / -A label sets. Multi-label sets (ImageNet ReaL, ObjectNet) count a hit if the
   prediction is any of the labels, and leave out images without labels. Metric `lit_zeroshot/<dataset>/top1` (%).
3. Retrieval (big_vision `image_text_retrieval`, image pp `resize(res)`): Recall@1/5/10 in both directions
   over the test split's images and all their captions; an image query is a hit if ANY of its captions is in the top k. Metrics
   `lit_zeroshot/<dataset>/i2t_recall@k`, `.../t2i_recall@k` (%).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import jax
import numpy as np

from harness import api, checkpoints, data
from harness.api import Metric, RunContext, Task
from harness.data.pp import eval_pp
from harness.data.text_pp import TEXT_PP_CHOICES, choose_text_pp, tokenize_pp
from harness.data.texts import TEMPLATE_SETS, class_texts, prompt_templates, read_captions, read_field
from harness.errors import HarnessError
from harness.eval.metrics import RECALL_AT, retrieval_recall, zeroshot_hits
from harness.eval.samples import RETRIEVED, TOP, ranked, signif
from harness.models import text
from harness.train import lit, optim

log = logging.getLogger("harness")


@dataclasses.dataclass
class LitZeroShotConfig:
    # What the text tower is: "auto" = the checkpoint's own if it has one, else train (LiT);
    # "checkpoint" = the checkpoint's own (an error if it has none); "train" = always a new one.
    text_tower: str = "auto"
    # LiT training data: image-text pairs (every caption of every image).
    train_dataset: str = "coco_captions"
    train_split: str = ""  # empty: the dataset's "train" role
    loss: str = "sigmoid"  # "sigmoid" (SigLIP) or "softmax" (CLIP / LiT contrastive)
    train_steps: int = 20_000  # 0: no training (the checkpoint must bring a text tower)
    batch_size: int = 1024
    # Optimiser (harness.train.optim, big_vision's chain). big_vision's LiT config
    # (configs/proj/image_text/siglip_lit_coco.py) trains its default text tower with `optax_name`
    # scale_by_adam (b1 0.9, b2 0.999: optax's defaults, which it keeps), lr 1e-3, wd 0.01, clip 1.0.
    optimizer: str = "adam"  # siglip_lit_coco.py `config.optax_name` (scale_by_adam); or "adafactor"
    lr: float = 1e-3  # siglip_lit_coco.py `config.lr`
    # big_vision's `wd`: wd * param on kernels after the lr (siglip_lit_coco.py `config.wd`).
    weight_decay: float = 1e-2
    # The paper's 20% (its Table 4 recipe); siglip_lit_coco.py warms up max(3%, 100 steps).
    warmup_frac: float = 0.2
    grad_clip_norm: float = 1.0  # siglip_lit_coco.py `config.grad_clip_norm`
    temperature_init: float = 10.0
    bias_init: float = -10.0
    # The new text tower: a big_vision variant string, or "" for the image tower's shape; the
    # text_* numbers override single fields (0: keep).
    text_variant: str = ""
    text_width: int = 0
    text_depth: int = 0
    text_mlp_dim: int = 0
    text_num_heads: int = 0
    vocab_size: int = 0  # 0: the tokenizer's vocabulary size
    # A new LiT tower's text length: siglip_lit_coco.py `token_len=16`. A checkpoint's text tower fixes
    # its own (its posemb length), as big_vision's SigLIP evaluators and demo do (SEQLEN = the tower's).
    max_len: int = 16
    # A sentencepiece .model file; empty: one shipped with the checkpoint, else (proxies only) the proxy's.
    tokenizer: str = ""
    # Text pp (harness.data.text_pp.TextPP): "auto" = the checkpoint family's own: big_vision two-tower .npz /
    # tensorstore and LiT towers trained here: `tokenize(max_len=L, eos="sticky", pad_value=<EOS>)`
    # (configs/proj/image_text/common.py::get_coco pp_txt); a HF SigLIP folder: its SiglipProcessor's
    # tokens (padding="max_length", truncation=True). Or force "big_vision" / "hf_siglip".
    text_pp: str = "auto"
    pad_value: int = -1  # -1: the text pp's own pad id (EOS for big_vision / LiT, HF's pad_token); N: pad N
    # Evaluation.
    zeroshot_datasets: tuple[str, ...] = ("imagenet2012", "imagenet2012_real", "imagenet_v2", "cifar100",
                                          "oxford_iiit_pet")
    retrieval_datasets: tuple[str, ...] = ("coco_captions",)
    class_names: str = "clip"  # "clip": CLIP's curated names for ImageNet label sets; "dataset": label names
    # "clip_paper" (CLIP's 80 + the bare name), "clip_best" (7 + the bare name) or "class_name_only".
    prompt_templates: str = "clip_paper"
    # Retrieval texts per image; 0 = every caption, as big_vision's retrieval evaluator unrolls them all
    # (evaluators/proj/image_text/retrieval.py `get_captions`); 5 = the 5k-image / 25k-caption protocol of
    # the CLIP / ALIGN papers (COCO's Karpathy test split has a few images with 6 or 7 captions).
    captions_per_image: int = 0
    # Image pp per pass; empty = big_vision's: zero-shot classification `_square875`, i.e.
    # resize(int(res/0.875))|central_crop(res) (configs/proj/image_text/common.py::get_disclf), COCO
    # retrieval resize(res) (common.py::get_coco). LiT training reads resize(res) too (siglip_lit_coco.py's
    # train pp without its flip_lr / randaug: the locked tower's features are computed once and cached).
    zeroshot_pp: str = ""
    retrieval_pp: str = ""
    train_pp: str = ""
    pp: str = ""  # non-empty: this pp for every image pass (overrides the three above)
    # Image embedding: empty = big_vision's two_towers `zimg`, the image model's output: its `logits` if it
    # has a head (SigLIP's projection) of the text embedding's size, else its `pre_logits` (the
    # MAP-pooled embedding of a locked LiT tower).
    representation: str = ""
    image_batch_size: int = 64
    text_batch_size: int = 256
    # Caps for quick runs (0 = the whole split); the record states the counts used.
    max_train_examples: int = 0
    max_eval_examples: int = 0
    seed: int = 0
    save_checkpoint: bool = True
    ckpt_every: int = 1000
    may_be_empty = ("zeroshot_datasets", "retrieval_datasets")  # either may be skipped, not both

    def validate(self) -> None:
        """Rules checked before any model or data is touched (empty lists and NaN: harness.api); the
        text pp's own settings are checked where the text pp is built."""
        api.check_choice(self, "text_tower", ("auto", "checkpoint", "train"))
        api.check_choice(self, "loss", text.LOSSES)
        api.check_choice(self, "optimizer", optim.OPTIMIZERS)
        if not self.zeroshot_datasets and not self.retrieval_datasets:
            raise api.bad_setting("zeroshot_datasets", (), "and retrieval_datasets= are both empty; nothing "
                                                           "would be evaluated: give at least one dataset")
        api.check_unique(self, "zeroshot_datasets")
        api.check_unique(self, "retrieval_datasets")
        api.check_range(self, "train_steps", low=0)
        api.check_range(self, "batch_size", low=2)  # a contrastive batch needs negatives
        api.check_range(self, "lr", low=0, low_open=True)
        api.check_range(self, "warmup_frac", low=0, high=1)
        api.check_range(self, "temperature_init", low=0, low_open=True)
        for name in ("weight_decay", "grad_clip_norm", "text_width", "text_depth", "text_mlp_dim",
                     "text_num_heads", "vocab_size", "captions_per_image", "max_train_examples",
                     "max_eval_examples", "seed", "ckpt_every"):
            api.check_range(self, name, low=0)
        api.check_range(self, "max_len", low=1)
        api.check_choice(self, "text_pp", TEXT_PP_CHOICES)
        api.check_range(self, "pad_value", low=-1)
        api.check_range(self, "image_batch_size", low=1)
        api.check_range(self, "text_batch_size", low=1)
        api.check_choice(self, "class_names", ("clip", "dataset"))
        api.check_choice(self, "prompt_templates", ("class_name_only", *TEMPLATE_SETS))
        for name in ("zeroshot_pp", "retrieval_pp", "train_pp", "pp"):
            api.check_pp(self, name)


# big_vision configs/proj/image_text/common.py DISCLF_DATASET_OVERRIDES: ImageNet-A's zero-shot pp is
# `_aspect75`, resize_small(int(sz/0.75))|central_crop(sz), where every other dataset's is `_square875`.
ASPECT75_DATASETS = ("imagenet_a",)


def zeroshot_pp(config, res: int, dataset: str) -> str:
    """The zero-shot image pp of `dataset`: `image_pps`'s, but `_aspect75` for ImageNet-A unless a pp is set."""
    if not (config.pp or config.zeroshot_pp) and data.base_name(dataset) in ASPECT75_DATASETS:
        return eval_pp(res, int(res / 0.75), resize_op="resize_small")
    return image_pps(config, res)["zeroshot"]


def image_pps(config, res: int) -> dict[str, str]:
    """{"zeroshot", "retrieval", "train"} -> the image pp of that pass."""
    # big_vision configs/proj/image_text/common.py: zero-shot `_square875` (get_disclf's pp_img, ReaL and
    # v2 alike), COCO retrieval get_coco's pp_img resize(res), which LiT training reads too.
    out = {"zeroshot": config.zeroshot_pp or eval_pp(res, int(res / 0.875)),
           "retrieval": config.retrieval_pp or eval_pp(res),
           "train": config.train_pp or eval_pp(res)}
    return {k: config.pp or v for k, v in out.items()}


def text_pipeline(config, tower) -> tuple:
    """(tokenizer, TextPP) the task embeds texts with: for `tower` (a loaded checkpoint tower), or for a
    tower LiT is about to train (`tower=None`: family "lit", `config.max_len`). Without a tokenizer given or
    shipped, the proxy's serves runs on generated proxy datasets only."""
    used = set(config.zeroshot_datasets) | set(config.retrieval_datasets)
    if tower is None:
        used.add(config.train_dataset)
    return choose_text_pp(tower.config if tower is not None else None,
                          tower.max_len if tower is not None else config.max_len, text_pp=config.text_pp,
                          tokenizer=config.tokenizer, pad_value=config.pad_value,
                          proxy_ok=all(data.base_name(d) in data.GENERATED for d in used))


# ------------------------------------------------------------------------------------ zero-shot
def class_embeddings(embed, names: list[str], templates: list[str]) -> np.ndarray:
    """Per class: the mean of the L2-normalised embeddings of its prompts, L2-normalised again.
    `embed(texts) -> [N, D]` must return normalised rows."""
    texts = [t.replace("{}", n, 1) for n in names for t in templates]
    z = np.asarray(embed(texts), np.float64).reshape(len(names), len(templates), -1)
    return text.l2_normalize(z.mean(axis=1)).astype(np.float32)


# ----------------------------------------------------------------------------------------- the task
class LitZeroShot(Task):
    name = "lit_zeroshot"
    # 2: big_vision's evaluation defaults (issue 14): the family's text pp (EOS padding), _square875 for
    # zero-shot, every COCO caption; records of version 1 are not comparable.
    version = "2"
    description = "LiT text tower on a locked image tower; zero-shot top-1 and COCO retrieval (paper Table 4)"
    report_title = "LiT zero-shot (paper Table 4)"
    report_order = (4, 0)
    report_columns = ("top1", "top5")
    Config = LitZeroShotConfig
    neutral_settings = ("zeroshot_datasets", "retrieval_datasets")
    naflex_inputs = True  # images only through ctx.extract
    presets = {
        # LiT on proxy_scenes' train captions against the proxy checkpoint, then zero-shot on its 24
        # classes and retrieval on its test captions: about a minute on 2 CPU cores.
        "proxy": dict(train_dataset="proxy_scenes", zeroshot_datasets=("proxy_scenes",),
                      retrieval_datasets=("proxy_scenes",), train_steps=300, batch_size=128, lr=1e-3,
                      weight_decay=1e-4, text_width=64, text_depth=2, text_mlp_dim=256, text_num_heads=4,
                      max_len=24, image_batch_size=100, ckpt_every=0),
        "imagenet": dict(zeroshot_datasets=("imagenet2012", "imagenet2012_real", "imagenet_v2"),
                         retrieval_datasets=()),
    }

    def metrics(self, config: LitZeroShotConfig) -> list[Metric]:
        out = [Metric(self.metric_name(ds, "top1"), True, "%", f"zero-shot top-1 accuracy on {ds}")
               for ds in config.zeroshot_datasets]
        for ds in config.retrieval_datasets:
            for direction, what in (("i2t", "image->text"), ("t2i", "text->image")):
                out += [Metric(self.metric_name(ds, f"{direction}_recall@{k}"), True, "%",
                               f"{what} Recall@{k} on {ds}") for k in RECALL_AT]
        out.append(Metric(self.metric_name("train", "final_loss"), False, "raw",
                          "mean LiT loss of the last 10% of steps (absent when the checkpoint's text tower is used)",
                          optional=True))
        return out

    # ----------------------------------------------------------------------------------------- run
    def run(self, encoder, ctx: RunContext, config: LitZeroShotConfig) -> dict[str, float]:
        t_start = time.perf_counter()
        if config.text_tower not in ("auto", "checkpoint", "train"):
            raise HarnessError(f"text_tower {config.text_tower!r} is not one of auto, checkpoint, train")
        if config.loss not in text.LOSSES:
            raise HarnessError(f"loss {config.loss!r} is not one of {', '.join(text.LOSSES)}")
        pps = image_pps(config, encoder.res)
        metrics: dict[str, float] = {}
        timings: dict[str, float] = {}

        tower = None
        if config.text_tower != "train" and encoder.checkpoint is not None:
            tower = text.load_text_tower(encoder.checkpoint)
        if tower is None and (config.text_tower == "checkpoint" or config.train_steps <= 0):
            raise HarnessError(f"checkpoint {encoder.spec} has no text tower and training is off "
                               f"(text_tower={config.text_tower}, train_steps={config.train_steps}); pass a "
                               "two-tower checkpoint (SigLIP/LiT .npz as file.npz:img, or a HF SigLIP folder) "
                               "or let LiT train one (--set train_steps=N)")
        representation = config.representation or self._representation(encoder, tower)
        tokenizer, text_pp = text_pipeline(config, tower)

        if tower is None:
            t0 = time.perf_counter()
            tower, loss = self._train(encoder, ctx, config, tokenizer, text_pp, pps["train"], representation)
            metrics[self.metric_name("train", "final_loss")] = loss
            timings["train_seconds"] = time.perf_counter() - t0
            ctx.info["text_tower"] = {**tower.config, "source": "lit"}
        else:
            if tokenizer.vocab_size > tower.config["vocab_size"]:
                raise HarnessError(f"tokenizer {tokenizer.model_path} has {tokenizer.vocab_size} pieces but the "
                                   f"checkpoint's text tower only {tower.config['vocab_size']}; pass the "
                                   "checkpoint's own sentencepiece model with --set tokenizer=PATH")
            ctx.info["text_tower"] = {**tower.config, "source": "checkpoint"}
            log.info("lit_zeroshot: the checkpoint's own text tower (%s), no LiT training; text pp %s",
                     tower.config["checkpoint"]["path"], text_pp.info())
            hf_len = getattr(tokenizer, "model_max_length", None)
            if text_pp.family == "hf_siglip" and hf_len and hf_len != tower.max_len:
                log.warning("lit_zeroshot: the folder's tokenizer says model_max_length=%s but its text tower "
                            "takes %d tokens; padding to the tower's length", hf_len, tower.max_len)
        ctx.info["tokenizer"] = tokenizer.model_path
        ctx.info["text_pp"] = text_pp.info()
        ctx.info["representation"] = representation

        def embed_texts(texts, desc="text"):
            return text.embed_texts(tower, tokenizer, text_pp, texts, batch_size=config.text_batch_size,
                                    progress=ctx.progress, desc=desc)

        t0 = time.perf_counter()
        templates = prompt_templates(config.prompt_templates)
        for ds in config.zeroshot_datasets:
            metrics[self.metric_name(ds, "top1")] = self._zeroshot(
                encoder, ctx, config, ds, zeroshot_pp(config, encoder.res, ds), representation, templates,
                embed_texts)
        timings["zeroshot_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for ds in config.retrieval_datasets:
            metrics.update(self._retrieval(encoder, ctx, config, ds, pps["retrieval"], representation, embed_texts))
        timings["retrieval_seconds"] = time.perf_counter() - t0
        timings["task_seconds"] = time.perf_counter() - t_start
        ctx.timings.update(timings)
        ctx.info["prompt_templates"] = {"name": config.prompt_templates, "count": len(templates)}
        return metrics

    # ------------------------------------------------------------------------------------- pieces
    @staticmethod
    def _representation(encoder, tower) -> str:
        """A LiT tower embeds into the image tower's pre_logits; a two-tower checkpoint's image tower may
        end in a projection `head` (SigLIP) whose logits are the embedding: the output whose size is the
        text embedding's, the head first."""
        if tower is None:
            return "pre_logits"
        want = tower.config.get("num_classes") or tower.config["width"]
        sizes = {"logits": encoder.config.get("num_classes"),
                 "pre_logits": encoder.config.get("rep_size") or encoder.config["width"]}
        if encoder.config.get("rep_size") is True:
            sizes["pre_logits"] = encoder.config["width"]
        for name in ("logits", "pre_logits"):
            if name in encoder.outputs and sizes[name] == want:
                return name
        raise HarnessError(f"the text tower embeds into {want} dimensions but the image tower's outputs have "
                           f"{sizes}; pick the right image sub-tree or pass --set representation=...")

    def _image_embeddings(self, encoder, ctx, config, ds, split, pp, representation, cap, role) -> dict:
        # The same keys for every use of a split; the pp is part of the cache key, so zero-shot (_square875)
        # and retrieval (resize) on one split are two entries.
        info = data.get_info(ds)
        keys = (info.label_key,) if info.label_key and not data.label_is_set(ds, ctx.data_dir) else ()
        return ctx.extract(encoder, ds, split, pp=pp, representations=(representation,), keys=keys,
                           batch_size=config.image_batch_size, num_examples=cap, role=role)

    def _train(self, encoder, ctx, config, tokenizer, text_pp, pp, representation):
        ds = config.train_dataset
        info = data.get_info(ds)
        split = config.train_split or info.split("train")
        feats = self._image_embeddings(encoder, ctx, config, ds, split, pp, representation,
                                       config.max_train_examples, "lit_train")
        zimg = np.asarray(feats[representation], np.float32)
        if zimg.ndim != 2:
            raise HarnessError(f"representation {representation!r} is not a pooled vector (shape {zimg.shape}); "
                               "use an image tower with a pooling head (pool_type map/gap/tok)")
        zimg = text.l2_normalize(zimg)
        n_img = len(zimg)
        texts, owner = read_captions(ds, split, n_img, ctx.data_dir, 0, ctx.progress)
        # Trained and later evaluated under the same text pp ("lit": big_vision's rule, EOS padding).
        tokens = tokenize_pp(tokenizer, texts, text_pp)
        params, tcfg, result = lit.train_text_tower(
            zimg, tokens, owner, lit.LitSettings.of(config), image_config=encoder.config,
            tokenizer_vocab=tokenizer.vocab_size, ckpt_dir=ctx.out_dir / "lit_state" if config.ckpt_every else None,
            progress=ctx.progress, what=f"{ds}/{split}")
        loss = lit.final_loss(result.losses)
        ctx.info["lit_training"] = {"steps": result.steps, "seconds": result.seconds, "resumed_from": result.resumed_from,
                                    "first_loss": result.losses[0] if result.losses else None,
                                    "final_loss": loss, "num_images": n_img,
                                    "num_captions": len(texts), "loss": config.loss,
                                    "final_t": float(np.exp(np.asarray(params["t"])[0])),
                                    "final_b": float(np.asarray(params["b"])[0]) if "b" in params else None}
        ctx.note_dataset(ds, split, len(texts), None, role="lit_train_captions")
        tower = lit.trained_tower(params, tcfg)
        if config.save_checkpoint:
            img = checkpoints.flatten(jax.device_get(encoder.params))
            if representation == "pre_logits":
                # As in big_vision's LiT, the image tower of the pair has no head: its pre_logits ARE the
                # embedding, and a reload must not mistake a pretraining classifier for a projection.
                img = {k: v for k, v in img.items() if not k.startswith("head/")}
            path = text.save_two_tower(ctx.out_dir / "lit_two_tower.npz", img, params["txt"], params["t"],
                                       params.get("b"))
            ctx.note_artifact("lit_checkpoint", path)
        return tower, loss

    def _zeroshot(self, encoder, ctx, config, ds, pp, representation, templates, embed_texts) -> float:
        info = data.get_info(ds)
        split = info.split("test")
        if not info.label_key:
            raise HarnessError(f"dataset '{ds}' has no class labels; zero-shot classification needs them")
        multi = data.label_is_set(ds, ctx.data_dir)
        feats = self._image_embeddings(encoder, ctx, config, ds, split, pp, representation,
                                       config.max_eval_examples, "zeroshot_test")
        n = len(feats["index"])
        if multi:
            labels = [[int(v) for v in np.atleast_1d(row) if v >= 0]
                      for row in read_field(ds, split, info.label_key, n, ctx.data_dir, ctx.progress)]
        else:
            labels = [int(v) for v in np.asarray(feats[info.label_key])]
        names = class_texts(ds, config.class_names, ctx.data_dir)
        classes = data.class_subset(ds, ctx.data_dir)
        if classes is not None:  # big_vision prompt_engineering.py: CLIP's names of IMAGENET_A/R_LABELSET only
            names = [names[i] for i in classes]
        zclass = class_embeddings(lambda t: embed_texts(t, desc=f"prompts {ds}"), names, templates)
        keep = [i for i, y in enumerate(labels) if np.size(y)]  # ReaL: images without labels are left out
        zimg = text.l2_normalize(np.asarray(feats[representation], np.float32)[keep])
        hits = zeroshot_hits(zimg, zclass, [labels[i] for i in keep], classes)
        ctx.note_per_example(self.metric_name(ds, "top1"), hits * 100)
        sims = zimg @ zclass.T  # samples: each image's 5 nearest class embeddings (the first is the argmax)
        order = np.argsort(-sims, axis=1, kind="stable")[:, :TOP]
        ctx.note_samples(ds, split, index=np.asarray(feats["index"])[keep], targets=[labels[i] for i in keep],
                         predictions=ranked(order if classes is None else np.asarray(classes)[order],
                                            np.take_along_axis(sims, order, axis=1))).score(
            self.metric_name(ds, "top1"), "top1", hits * 100)
        return float(hits.mean() * 100) if len(hits) else float("nan")

    def _retrieval(self, encoder, ctx, config, ds, pp, representation, embed_texts) -> dict[str, float]:
        info = data.get_info(ds)
        split = info.split("test")
        feats = self._image_embeddings(encoder, ctx, config, ds, split, pp, representation,
                                       config.max_eval_examples, "retrieval_test")
        n = len(feats["index"])
        texts, owner = read_captions(ds, split, n, ctx.data_dir, config.captions_per_image, ctx.progress)
        ctx.note_dataset(ds, split, len(texts), None, role="retrieval_captions")
        zimg = text.l2_normalize(np.asarray(feats[representation], np.float32))
        ztxt = embed_texts(texts, desc=f"captions {ds}")
        hits = retrieval_recall(zimg @ ztxt.T, owner)
        samples = self._retrieval_samples(ctx, ds, split, feats["index"], texts, owner, zimg @ ztxt.T)
        out = {}
        for key, h in hits.items():
            out[self.metric_name(ds, key)] = float(h.mean() * 100)
            ctx.note_per_example(self.metric_name(ds, key), h * 100)
            samples[key[:3]].score(self.metric_name(ds, key), "recall", h * 100, k=int(key.rpartition("@")[2]))
        return out

    @staticmethod
    def _retrieval_samples(ctx, ds, split, index, texts, owner, sims) -> dict:
        """The retrieval queries as samples: images (i2t: the RETRIEVED nearest captions, the image's own
        captions as the target) and captions (t2i: the nearest images, the caption's image as the target),
        in `retrieval_recall`'s order (ties: the lower index first). A caption's id is its image's, `#j`."""
        image_ids = data.example_ids(ds, split, index, ctx.data_dir)
        nth = np.zeros(len(owner), np.int64)
        for j in range(1, len(owner)):
            nth[j] = nth[j - 1] + 1 if owner[j] == owner[j - 1] else 0
        caption_ids = [f"{image_ids[i]}#{n}" for i, n in zip(owner, nth)]
        by_image = np.argsort(-sims, axis=1, kind="stable")[:, :RETRIEVED]
        by_text = np.argsort(-sims, axis=0, kind="stable")[:RETRIEVED].T
        own = [[] for _ in image_ids]
        for j, i in enumerate(owner):
            own[i].append(caption_ids[j])
        i2t = ctx.note_samples(ds, split, ids=image_ids, index=index, name=f"{ds}/{split}/i2t",
                               targets=[{"ids": ids} for ids in own],
                               predictions=[{"retrieved": [caption_ids[t] for t in row],
                                             "scores": [signif(sims[i, t]) for t in row]}
                                            for i, row in enumerate(by_image)])
        t2i = ctx.note_samples(ds, split, ids=caption_ids, index=[int(index[i]) for i in owner],
                               name=f"{ds}/{split}/t2i",
                               targets=[{"ids": [image_ids[i]], "caption": t} for i, t in zip(owner, texts)],
                               predictions=[{"retrieved": [image_ids[i] for i in row],
                                             "scores": [signif(sims[i, j]) for i in row]}
                                            for j, row in enumerate(by_text)])
        return {"i2t": i2t, "t2i": t2i}
