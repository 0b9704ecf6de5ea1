"""Training and evaluating the decoder of the paper's multitask-decoding evaluation (Table 4): the whole
protocol of the `coco_captioning` and `vqa` tasks, around the model in `harness.models.decoder`.

`train_and_decode` reads a split's text (`read_split_text`, a task's `ReadText` turning batches into a
`TextTable`), reads the encoder's tokens from the feature cache (encoder frozen, the default) or runs the
images through the encoder each step (`finetune_encoder`), trains through `harness.train.loop.fit` with
big_vision's loss (`weighted_softmax_xent`, normalised per sequence, label smoothing) and optimiser chain
(`harness.train.optim`: AdaFactor or Adam, cosine schedule with warm-up), then decodes the eval split
(`make_generate`: greedy or beam) and computes its log-perplexity (big_vision's cappa perplexity
evaluator: nats per target sequence, without label smoothing).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np

from harness import data, settings
from harness.data.pp import eval_pp
from harness.data.tokenizer import PROXY_TOKENIZER, Tokenizer
from harness.errors import HarnessError
from harness.models.decoder import (
    Layout,
    encode_examples,
    encode_prompts,
    init_params,
    make_decoder,
    make_generate,
    target_logits,
    weighted_softmax_xent,
)
from harness.progress import Progress
from harness.scale import sharding
from harness.train.loop import fit
from harness.train.optim import OPTIMIZERS, cosine_schedule, make_optimizer


@dataclasses.dataclass
class DecoderSettings:
    """Settings shared by the decoding tasks (a task's Config subclasses this)."""

    # Decoder shape: the paper's is 2 layers; the width is not stated there (ViT-B-sized blocks here).
    decoder_depth: int = 2
    decoder_width: int = 768
    decoder_mlp_dim: int = 3072
    decoder_heads: int = 12
    # The paper's (Table 4 text); big_vision's cappa config (configs/proj/cappa/pretrain.py) has 0.0.
    dropout: float = 0.1
    # The paper's; cappa's `config.label_smoothing` is 0.0. Smoothed as big_vision's weighted_softmax_xent.
    label_smoothing: float = 0.1
    # big_vision.scale_by_adafactor as configs/proj/cappa/pretrain.py `optax_name` (the paper: AdaFactor);
    # "adam" = scale_by_adam (configs/proj/paligemma/transfers/*), "sgd_momentum", "sgd" (harness.train.optim).
    optimizer: str = "adafactor"
    lr: float = 3e-4  # the paper's; cappa's `config.lr` is 1e-3
    # The paper gives none; cappa warms up 10k of 366.5k steps (2.7%), PaliGemma transfers 5%. 10% kept.
    warmup_fraction: float = 0.1
    # big_vision's `wd` (harness.train.optim: wd * param on kernels, after the lr): cappa's `config.wd`.
    weight_decay: float = 1e-4
    grad_clip_norm: float = 1.0  # configs/proj/cappa/pretrain.py `config.grad_clip_norm`
    total_steps: int = 10_000
    batch_size: int = 256
    # A sentencepiece .model; "proxy" = the project's small proxy vocabulary (the paper used 32k).
    tokenizer: str = ""
    prefix_len: int = 0
    target_len: int = 32
    decode: str = "greedy"  # or "beam"
    beam_size: int = 4
    length_penalty: float = 0.0
    eval_batch_size: int = 256
    # log_perplexity per target SEQUENCE (False) or per token of it (True): the `normalize_by_seqlen`
    # of big_vision's evaluators/proj/cappa/perplexity.py, whose default (False) cappa's config keeps.
    perplexity_normalize_by_seqlen: bool = False
    # Empty: `decode|resize(res)|value_range(-1,1)` at the encoder's resolution.
    pp: str = ""
    train_pp: str = ""  # for finetune_encoder; empty = `pp`
    feature_dtype: str = "bfloat16"  # storage of cached encoder tokens
    finetune_encoder: bool = False
    # Caps for quick runs (0 = the whole split); the record states the counts used.
    max_train_examples: int = 0
    max_eval_examples: int = 0
    seed: int = 0
    ckpt_every: int = 0  # > 0: checkpoint the training state so a killed run resumes

    def validate(self) -> None:
        """The decoding tasks' shared rules, checked before any data is read (a task's Config that adds rules
        calls this first)."""
        for name in ("decoder_depth", "decoder_width", "decoder_mlp_dim", "decoder_heads", "total_steps",
                     "batch_size", "eval_batch_size", "target_len", "beam_size"):
            settings.check_range(self, name, low=1)
        if self.decoder_width % max(1, self.decoder_heads):
            raise settings.bad_setting("decoder_width", self.decoder_width, f"is not divisible by decoder_heads="
                                       f"{self.decoder_heads}; pick a multiple of it")
        for name in ("dropout", "label_smoothing"):
            settings.check_range(self, name, low=0, high=1, high_open=True)
        settings.check_range(self, "lr", low=0, low_open=True)
        settings.check_range(self, "warmup_fraction", low=0, high=1)
        for name in ("weight_decay", "grad_clip_norm", "length_penalty", "prefix_len", "max_train_examples",
                     "max_eval_examples", "seed", "ckpt_every"):
            settings.check_range(self, name, low=0)
        settings.check_choice(self, "decode", ("greedy", "beam"))
        settings.check_choice(self, "optimizer", OPTIMIZERS)
        settings.check_choice(self, "feature_dtype", ("float32", "float16", "bfloat16"))
        settings.check_pp(self, "pp")
        settings.check_pp(self, "train_pp")
        # Empty is the paper default's "you must name one": the task says so when it starts.
        if self.tokenizer and self.tokenizer != "proxy" and not Path(self.tokenizer).expanduser().is_file():
            raise settings.bad_setting("tokenizer", self.tokenizer, "is not a file; pass a sentencepiece .model "
                                       "file or proxy")


@dataclasses.dataclass
class TextTable:
    """The text of a split: text example j belongs to image row `rows[j]` (its position in the split)."""

    rows: np.ndarray
    ids: list[int]  # image id (captioning) or question id (VQA), for predictions
    prefixes: list[str]
    targets: list[list[str]]  # training / perplexity targets: captions, or the answer
    extra: list[dict] = dataclasses.field(default_factory=list)  # e.g. all 10 answers and the type

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def concat(tables: Sequence["TextTable"], offsets: Sequence[int]) -> "TextTable":
        rows = [t.rows + o for t, o in zip(tables, offsets)]
        return TextTable(rows=np.concatenate(rows) if rows else np.zeros((0,), np.int64),
                         ids=[i for t in tables for i in t.ids],
                         prefixes=[p for t in tables for p in t.prefixes],
                         targets=[x for t in tables for x in t.targets],
                         extra=[x for t in tables for x in t.extra])


ReadText = Callable[[dict], TextTable]  # a numpy batch (rows = batch positions) -> its text examples


def load_tokenizer(spec: str) -> Tokenizer:
    if spec == "proxy":
        return Tokenizer(PROXY_TOKENIZER)
    if not spec:
        raise HarnessError("no sentencepiece vocabulary given; pass --set tokenizer=path/to/spm.model "
                           "(the paper used a 32k vocabulary) or tokenizer=proxy for the proxy data")
    return Tokenizer(spec)


def read_split_text(dataset: str, split: str, text_keys: Sequence[str], read_text: ReadText, *,
                    data_dir=None, num_examples=None) -> tuple[TextTable, int]:
    """Every text example of a split in split order (no image decoding); returns (table, rows)."""
    keys = ", ".join(repr(k) for k in text_keys)
    tables, offsets, rows = [], [], 0
    for batch in data.iterate(dataset, split, batch_size=512, pp=f"keep({keys})", data_dir=data_dir,
                              num_examples=num_examples):
        mask = np.asarray(batch["_mask"], bool)
        real = {k: np.asarray(v)[mask] for k, v in batch.items()}
        tables.append(read_text(real))
        offsets.append(int(real["_index"][0]) if mask.any() else rows)
        rows += int(mask.sum())
    return TextTable.concat(tables, offsets), rows


def choose_target(targets: Sequence[str], how: str, *, rng: np.random.Generator, seed: int, example: int,
                  visit: int | None) -> str:
    """The target an example trains on at one visit: `choice` draws one at random (big_vision's `choice`
    op, cappa's COCO pp); `choice_no_replacement` (big_vision's op of that name, its VQAv2 transfer pp)
    goes through all of them once per cycle, in a fresh random order per cycle (a function of `seed`,
    `example` and the cycle), `visit` being how often the example was seen before; without a visit count
    (the image stream of `finetune_encoder`) it draws at random."""
    n = len(targets)
    if how == "choice_no_replacement" and visit is not None:
        cycle, k = divmod(visit, n)
        return targets[int(np.random.default_rng([seed, example, cycle, 2]).permutation(n)[k])]
    return targets[int(rng.integers(n))]


def _feature_rows(arr, rows: np.ndarray) -> np.ndarray:
    # Sorted, unique reads are much faster on a memory-mapped file than random ones.
    uniq, inverse = np.unique(rows, return_inverse=True)
    return np.asarray(arr[uniq], np.float32)[inverse]


def _encoded_dim(encoder) -> tuple[int, int]:
    c = encoder.config
    # The decoder attends to every token of `encoded`, a `tok` model's class token included, as big_vision's
    # decoders do (models/proj/cappa/cappa.py `encode`: out["encoded"] of models/vit.py, which keeps it).
    patches = (encoder.res // c["patch_size"][0]) * (encoder.res // c["patch_size"][1])
    return patches + (c["pool_type"] == "tok"), int(c["width"])


def train_and_decode(encoder, ctx, cfg: DecoderSettings, *, dataset: str, train_split: str, eval_split: str,
                     text_keys: Sequence[str], read_text: ReadText, desc: str,
                     target_choice: str = "choice") -> dict[str, Any]:
    """Trains a decoder on `train_split` and decodes `eval_split`. `target_choice` says how an example
    with several targets (captions, annotator answers) picks the one it trains on per visit (big_vision's
    pp op names): `choice` (at random) or `choice_no_replacement` (every target once per cycle).

    Returns `predictions` ({id: text}, one per eval text example), `eval_table`, `log_perplexity`
    (`_log_perplexity`: nats per target sequence, mean over eval examples), and training facts
    (`train_loss_first/last`, `steps`, `train_seconds`, `eval_seconds`).
    """
    if cfg.decode not in ("greedy", "beam"):
        raise HarnessError(f"decode={cfg.decode!r} is not one of greedy, beam")
    if cfg.feature_dtype not in ("float32", "float16", "bfloat16"):
        raise HarnessError(f"feature_dtype={cfg.feature_dtype!r} is not one of float32, float16, bfloat16")
    tokenizer = load_tokenizer(cfg.tokenizer)
    layout = Layout(cfg.prefix_len, cfg.target_len)
    pp = cfg.pp or eval_pp(encoder.res)  # the whole image, resized
    caps = {"train": cfg.max_train_examples or None, "eval": cfg.max_eval_examples or None}

    t0 = time.perf_counter()
    train_text, n_train = read_split_text(dataset, train_split, text_keys, read_text, data_dir=ctx.data_dir,
                                          num_examples=caps["train"])
    eval_text, n_eval = read_split_text(dataset, eval_split, text_keys, read_text, data_dir=ctx.data_dir,
                                        num_examples=caps["eval"])
    if not len(train_text) or not len(eval_text):
        raise HarnessError(f"{desc}: {dataset} has no text examples in "
                           f"{train_split if not len(train_text) else eval_split}; check the split")
    ctx.note_dataset(dataset, train_split, n_train, pp if not cfg.finetune_encoder else (cfg.train_pp or pp),
                     role="train")
    ctx.note_dataset(dataset, eval_split, n_eval, pp, role="eval")

    model = make_decoder(tokenizer.vocab_size, layout.seq_len, width=cfg.decoder_width, depth=cfg.decoder_depth,
                         mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads, dropout=cfg.dropout)
    num_tokens, enc_width = _encoded_dim(encoder)
    dec_params = init_params(model, enc_width, num_tokens, seed=cfg.seed)
    warmup_steps = int(round(cfg.warmup_fraction * cfg.total_steps))
    tx = make_optimizer(cfg.optimizer, lr=cfg.lr, wd=cfg.weight_decay, grad_clip_norm=cfg.grad_clip_norm,
                        schedule=cosine_schedule(cfg.total_steps, warmup_steps))

    if any(not t for t in train_text.targets):
        raise HarnessError(f"{desc}: {dataset} {train_split} has examples without a target text; "
                           "train on a split with answers/captions")

    if target_choice not in ("choice", "choice_no_replacement"):
        raise HarnessError(f"target_choice={target_choice!r} is not one of choice, choice_no_replacement")

    def sample_examples(rng: np.random.Generator, js: np.ndarray, table: TextTable,
                        visits: np.ndarray | None = None) -> dict:
        targets = [choose_target(table.targets[j], target_choice, rng=rng, seed=cfg.seed, example=int(j),
                                 visit=None if visits is None else int(visits[i])) for i, j in enumerate(js)]
        return encode_examples(tokenizer, [table.prefixes[j] for j in js], targets, layout)

    def decoder_loss(dparams, batch, encoded, rng):
        logits = target_logits(model, dparams, batch, encoded, layout, deterministic=False,
                               rngs={"dropout": rng})
        # big_vision trainers/proj/cappa/generative.py: weighted_softmax_xent(..., normalize=True): each
        # sequence's loss is its mean over its target tokens, then the batch mean.
        return weighted_softmax_xent(logits, batch["labels"], batch["label_mask"],
                                     label_smoothing=cfg.label_smoothing, normalize=True)

    if not cfg.finetune_encoder:
        feats = {}
        for role, split in (("train", train_split), ("eval", eval_split)):
            feats[role] = ctx.extract(encoder, dataset, split, pp=pp, representations=("encoded",), keys=(),
                                      batch_size=min(cfg.eval_batch_size, 256), num_examples=caps[role],
                                      dtype=cfg.feature_dtype, role=None)["encoded"]
        params = dec_params
        n_items = len(train_text)

        def batches(start_step: int) -> Iterator[dict]:
            # One epoch = every text example once, in an order that is a function of (seed, epoch), so a
            # resumed run sees the same stream; captioning draws one of the image's captions per visit.
            per_epoch = max(n_items // cfg.batch_size, 1)
            step = start_step
            while True:
                epoch, pos = divmod(step, per_epoch)
                order = np.random.default_rng([cfg.seed, epoch]).permutation(n_items)
                if n_items < cfg.batch_size:
                    order = np.resize(order, cfg.batch_size * per_epoch)
                where = np.arange(pos * cfg.batch_size, (pos + 1) * cfg.batch_size)
                js = order[where]
                rng = np.random.default_rng([cfg.seed, epoch, pos, 1])
                # An example is in an epoch once (copies times when the epoch repeats the data to fill a
                # batch): its earlier visits are counted from the epoch and its copy.
                copies = -(-len(order) // n_items)
                batch = sample_examples(rng, js, train_text, visits=epoch * copies + where // n_items)
                batch["encoded"] = _feature_rows(feats["train"], train_text.rows[js])
                yield batch
                step += 1

        def loss_fn(p, batch, rng):
            loss = decoder_loss(p, batch, batch["encoded"], rng)
            return loss, {}

    else:
        params = {"decoder": dec_params, "encoder": encoder.params}
        train_pp = cfg.train_pp or pp
        keys = ", ".join(repr(k) for k in ("image", *text_keys))

        def batches(start_step: int) -> Iterator[dict]:
            stream = data.iterate(dataset, train_split, batch_size=cfg.batch_size, pp=f"{train_pp}|keep({keys})",
                                  data_dir=ctx.data_dir, train=True, seed=cfg.seed, start_step=start_step,
                                  num_examples=caps["train"])
            for step, raw in enumerate(stream, start=start_step):
                table = read_text(raw)
                rng = np.random.default_rng([cfg.seed, step, 1])
                # One text example per image of the batch; an image without text gets no loss.
                js = np.array([rng.choice(np.flatnonzero(table.rows == r)) if (table.rows == r).any() else -1
                               for r in range(len(raw["image"]))])
                batch = sample_examples(rng, np.maximum(js, 0), table) if len(table) else None
                if batch is None:
                    continue
                batch["label_mask"] &= (js >= 0)[:, None]
                batch["image"] = np.asarray(raw["image"], np.float32)
                yield batch

        def loss_fn(p, batch, rng):
            _, out = encoder.model.apply({"params": p["encoder"]}, batch["image"])
            return decoder_loss(p["decoder"], batch, out["encoded"], rng), {}

    result = fit(params=params, tx=tx, loss_fn=loss_fn, batches=batches, total_steps=cfg.total_steps,
                 seed=cfg.seed, ckpt_dir=(Path(ctx.out_dir) / "train_state") if cfg.ckpt_every else None,
                 ckpt_every=cfg.ckpt_every, progress=ctx.progress, desc=f"{desc} decoder")
    train_seconds = result.seconds
    params = result.params
    dec_params = params["decoder"] if cfg.finetune_encoder else params

    t_eval = time.perf_counter()
    tmp = None
    if cfg.finetune_encoder:
        tmp = tempfile.TemporaryDirectory()
        eval_feats = _encode_split(encoder, params["encoder"], dataset, eval_split, pp, ctx, cfg, caps["eval"],
                                   Path(tmp.name), (num_tokens, enc_width))
    else:
        eval_feats = feats["eval"]
    try:
        predictions = _decode_table(model, dec_params, eval_feats, eval_text, tokenizer, layout, cfg, ctx.progress,
                                    desc)
        log_ppl, log_ppl_per_example = _log_perplexity(model, dec_params, eval_feats, eval_text, tokenizer,
                                                       layout, cfg)
    finally:
        if tmp is not None:
            tmp.cleanup()
    eval_seconds = time.perf_counter() - t_eval
    losses = result.losses
    return {
        "predictions": predictions,
        "eval_table": eval_text,
        "log_perplexity": log_ppl,
        "log_perplexity_per_example": log_ppl_per_example,  # per eval text example; NaN: it has no target
        "steps": result.steps,
        "train_loss_first": float(np.mean(losses[:10])) if losses else float("nan"),
        "train_loss_last": float(np.mean(losses[-10:])) if losses else float("nan"),
        "timings": {"train_seconds": train_seconds, "eval_seconds": eval_seconds,
                    "decoder_seconds": time.perf_counter() - t0},
        "num_train_text_examples": len(train_text),
        "num_eval_text_examples": len(eval_text),
    }


def _encode_split(encoder, enc_params, dataset, split, pp, ctx, cfg, cap, folder: Path, shape):
    """The fine-tuned encoder's tokens for a split, in a temporary memory-mapped file."""
    n = data.num_examples(dataset, split, ctx.data_dir)
    n = min(n, cap) if cap else n
    out = np.lib.format.open_memmap(folder / "encoded.npy", mode="w+", dtype=np.float32, shape=(n, *shape))
    apply = jax.jit(lambda p, x: encoder.model.apply({"params": p}, x)[1]["encoded"])
    for batch in data.iterate(dataset, split, batch_size=cfg.eval_batch_size, pp=pp, data_dir=ctx.data_dir,
                              num_examples=cap):
        mask = np.asarray(batch["_mask"], bool)
        enc = sharding.apply_to_batch(apply, enc_params, np.asarray(batch["image"], np.float32))
        out[batch["_index"][mask]] = enc[mask]
    out.flush()
    return out


def _padded_chunks(n: int, size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Index chunks of a fixed `size` (the last one padded by repeating index 0): one compilation."""
    for start in range(0, n, size):
        idx = np.arange(start, min(start + size, n))
        real = len(idx)
        yield np.concatenate([idx, np.zeros(size - real, idx.dtype)]), real


def _decode_table(model, params, feats, table: TextTable, tokenizer, layout, cfg, progress, desc) -> dict:
    generate = make_generate(model, layout, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                             beam_size=cfg.beam_size if cfg.decode == "beam" else 1,
                             length_penalty=cfg.length_penalty)
    size = min(cfg.eval_batch_size, max(len(table), 1))
    out = {}
    with Progress(len(table), f"{desc} decode", "ex", enabled=progress) as bar:
        for idx, real in _padded_chunks(len(table), size):
            prompt, valid = encode_prompts(tokenizer, [table.prefixes[j] for j in idx], layout)
            encoded = _feature_rows(feats, table.rows[idx])
            tokens, _ = sharding.apply_to_batch(generate, params, encoded, prompt, valid)
            texts = tokenizer.decode(np.asarray(tokens)[:real])
            for j, text in zip(idx[:real], texts):
                out[table.ids[j]] = text
            bar.update(real)
    return out


def _log_perplexity(model, params, feats, table: TextTable, tokenizer, layout, cfg) -> tuple[float, np.ndarray]:
    """big_vision's cappa perplexity evaluator (`evaluators/proj/cappa/perplexity.py`): per example the
    target's NLL without label smoothing, summed over its tokens (EOS included; divided by their count
    if `perplexity_normalize_by_seqlen`), then the mean over eval examples. big_vision scores one target
    per example, drawn by the eval pp (`choice`); here every target is scored and an example's value is
    the mean over its targets: the expectation of big_vision's number over that draw, without its noise.
    Returns (that mean, each example's value: NaN for one without targets)."""
    pairs = [(j, t) for j in range(len(table)) for t in table.targets[j]]
    if not pairs:
        return float("nan"), np.full(len(table), np.nan)  # the split has no targets (e.g. a test split)

    @jax.jit
    def nll(params, batch, encoded):
        logits = target_logits(model, params, batch, encoded, layout)
        return weighted_softmax_xent(logits, batch["labels"], batch["label_mask"], label_smoothing=0.0,
                                     normalize=cfg.perplexity_normalize_by_seqlen, reduction=False)

    per_pair = np.zeros(len(pairs), np.float64)
    size = min(cfg.eval_batch_size, max(len(pairs), 1))
    for idx, real in _padded_chunks(len(pairs), size):
        js = np.array([pairs[i][0] for i in idx])
        batch = encode_examples(tokenizer, [table.prefixes[j] for j in js], [pairs[i][1] for i in idx], layout)
        losses = sharding.apply_to_batch(nll, params, batch, _feature_rows(feats, table.rows[js]))
        per_pair[idx[:real]] = np.asarray(losses, np.float64)[:real]
    owner = np.array([j for j, _ in pairs])
    counts = np.bincount(owner, minlength=len(table))
    keep = counts > 0
    per_example = np.full(len(table), np.nan)
    per_example[keep] = np.bincount(owner, per_pair, minlength=len(table))[keep] / counts[keep]
    return float(per_example[keep].mean()), per_example


__all__ = ["DecoderSettings", "ReadText", "TextTable", "choose_target", "load_tokenizer",
           "read_split_text", "train_and_decode"]
