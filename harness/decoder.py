"""The autoregressive decoder of the paper's multitask-decoding evaluation (Table 4), shared by the
`coco_captioning` and `vqa` tasks.

- `Decoder`: a small pre-LN transformer decoder (default 2 layers, as in the paper) with causal
  self-attention, cross-attention to the encoder's `encoded` tokens, dropout, and a key/value cache for
  incremental decoding (`prefill` then `step`; the same numbers as the full causal forward).
- Sequence layout (`Layout`): `[prefix, left-padded | start | target + EOS, right-padded]`. The prefix
  (the VQA question; empty for captioning) is left-padded so that every example's target starts at the
  same position; training and decoding then see identical positions, and a batch decodes in lock-step.
  The loss covers only target tokens.
- `greedy_search` / `beam_search`: jitted, over any `step_fn(tokens, state, t) -> (logits, state)`, so
  they are tested on an analytic model whose best sequence is known.
- `train_and_decode`: the whole protocol for a task: tokens read from the feature cache (encoder frozen,
  the default) or images through the encoder each step (`finetune_encoder`), training through
  `harness.train.fit` with big_vision's loss (`weighted_softmax_xent`, normalised per sequence, label
  smoothing) and optimiser chain (`harness.optim`: AdaFactor or Adam, cosine schedule with warm-up), then
  decoding of the eval split and its log-perplexity (big_vision's cappa perplexity evaluator: nats per
  target sequence, without label smoothing).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from harness import sharding
from harness.errors import HarnessError

log = logging.getLogger("harness")

PROXY_TOKENIZER = Path(__file__).parent / "assets" / "proxy_spm.model"
_NEG = -1.0e9  # "minus infinity" for scores: finite, so arithmetic on it never gives NaN


# --------------------------------------------------------------------------------------------- model
def _nn():
    import flax.linen as nn
    return nn


class _Modules:
    """Flax modules are defined lazily so that importing this file does not import jax."""

    _built = None

    @classmethod
    def get(cls):
        if cls._built is None:
            cls._built = _define_modules()
        return cls._built


def _define_modules():
    import jax
    import jax.numpy as jnp
    nn = _nn()

    dense_init = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.zeros)

    class Attention(nn.Module):
        """Multi-head dot-product attention whose keys/values are computed separately (`kv`), so they
        can be cached (self-attention) or computed once per image (cross-attention)."""

        width: int
        num_heads: int

        def setup(self):
            h, d = self.num_heads, self.width // self.num_heads
            self.query = nn.DenseGeneral((h, d), **dense_init)
            self.key = nn.DenseGeneral((h, d), **dense_init)
            self.value = nn.DenseGeneral((h, d), **dense_init)
            self.out = nn.DenseGeneral(self.width, axis=(-2, -1), **dense_init)

        def kv(self, x):
            return self.key(x), self.value(x)

        def __call__(self, x, k, v, mask=None):
            q = self.query(x) / np.sqrt(self.width // self.num_heads).astype(np.float32)
            logits = jnp.einsum("bthd,bshd->bhts", q, k)
            if mask is not None:
                logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
            weights = jax.nn.softmax(logits, axis=-1)
            return self.out(jnp.einsum("bhts,bshd->bthd", weights, v))

    class DecoderBlock(nn.Module):
        width: int
        mlp_dim: int
        num_heads: int
        dropout: float

        def setup(self):
            self.LayerNorm_0 = nn.LayerNorm(epsilon=1e-6)
            self.SelfAttention = Attention(self.width, self.num_heads)
            self.LayerNorm_1 = nn.LayerNorm(epsilon=1e-6)
            self.CrossAttention = Attention(self.width, self.num_heads)
            self.LayerNorm_2 = nn.LayerNorm(epsilon=1e-6)
            self.Dense_0 = nn.Dense(self.mlp_dim, **dense_init)
            self.Dense_1 = nn.Dense(self.width, **dense_init)
            self.drop = nn.Dropout(self.dropout)

        def cross_kv(self, encoded):
            return self.CrossAttention.kv(encoded)

        def __call__(self, x, cross, self_mask, *, cache=None, index=None, deterministic=True):
            """`cache=(k, v)` of the whole cache length: this call's keys/values are written at `index`
            and attention reads the cache; returns (x, (k, v))."""
            y = self.LayerNorm_0(x)
            k, v = self.SelfAttention.kv(y)
            if cache is not None:
                k = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), index, axis=1)
                v = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), index, axis=1)
            x = x + self.drop(self.SelfAttention(y, k, v, self_mask), deterministic)
            y = self.LayerNorm_1(x)
            x = x + self.drop(self.CrossAttention(y, *cross), deterministic)
            y = self.LayerNorm_2(x)
            y = self.drop(nn.gelu(self.Dense_0(y), approximate=True), deterministic)
            return x + self.drop(self.Dense_1(y), deterministic), (k, v)

    class Decoder(nn.Module):
        vocab_size: int
        max_len: int  # positions: prefix + start + target
        width: int = 768
        depth: int = 2
        mlp_dim: int = 3072
        num_heads: int = 12
        dropout: float = 0.1

        def setup(self):
            self.Embed_0 = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02))
            self.pos_embedding = self.param("pos_embedding", nn.initializers.normal(0.02),
                                            (1, self.max_len, self.width))
            # The encoder's width is not the decoder's: a projection reads its tokens.
            self.encoder_proj = nn.Dense(self.width, **dense_init)
            self.blocks = [DecoderBlock(self.width, self.mlp_dim, self.num_heads, self.dropout,
                                        name=f"decoderblock_{i}") for i in range(self.depth)]
            self.decoder_norm = nn.LayerNorm(epsilon=1e-6)
            self.head = nn.Dense(self.vocab_size, **dense_init)
            self.drop = nn.Dropout(self.dropout)

        def encode(self, encoded):
            """Encoder tokens [B, S, D_enc] -> each layer's cross-attention (keys, values)."""
            e = self.encoder_proj(encoded.astype(jnp.float32))
            return [b.cross_kv(e) for b in self.blocks]

        def _forward(self, tokens, valid, cross, deterministic):
            t = tokens.shape[1]
            x = self.drop(self.Embed_0(tokens) + self.pos_embedding[:, :t], deterministic)
            causal = jnp.tril(jnp.ones((t, t), bool))
            mask = causal[None, None] & valid[:, None, None, :]
            kvs = []
            for block, c in zip(self.blocks, cross):
                x, kv = block(x, c, mask, deterministic=deterministic)
                kvs.append(kv)
            return self.head(self.decoder_norm(x)), kvs

        def __call__(self, tokens, valid, encoded, deterministic=True):
            """Teacher-forced logits [B, T, V] of `tokens` [B, T]; `valid` [B, T] masks padding keys."""
            return self._forward(tokens, valid, self.encode(encoded), deterministic)[0]

        def prefill(self, tokens, valid, cross, cache_len):
            """Runs the prompt [B, P] at once; returns the last position's logits and a cache of
            `cache_len` positions holding the prompt's keys/values."""
            logits, kvs = self._forward(tokens, valid, cross, True)
            b, p = tokens.shape
            pad = [(0, 0), (0, cache_len - p), (0, 0), (0, 0)]
            cache = {"k": [jnp.pad(k, pad) for k, _ in kvs], "v": [jnp.pad(v, pad) for _, v in kvs],
                     "valid": jnp.concatenate([valid, jnp.ones((b, cache_len - p), bool)], axis=1)}
            return logits[:, -1], cache

        def step(self, token, index, cache, cross):
            """One token [B] at position `index` (traced scalar): logits [B, V] and the updated cache."""
            x = self.Embed_0(token[:, None])
            x = x + jax.lax.dynamic_slice_in_dim(self.pos_embedding, index, 1, axis=1)
            length = cache["valid"].shape[1]
            mask = (jnp.arange(length) <= index)[None, :] & cache["valid"]
            mask = mask[:, None, None, :]
            ks, vs = [], []
            for block, c, k, v in zip(self.blocks, cross, cache["k"], cache["v"]):
                x, (k, v) = block(x, c, mask, cache=(k, v), index=index)
                ks.append(k)
                vs.append(v)
            logits = self.head(self.decoder_norm(x))[:, 0]
            return logits, {"k": ks, "v": vs, "valid": cache["valid"]}

    return {"Decoder": Decoder, "DecoderBlock": DecoderBlock, "Attention": Attention}


def make_decoder(vocab_size: int, max_len: int, *, width: int = 768, depth: int = 2, mlp_dim: int = 3072,
                 num_heads: int = 12, dropout: float = 0.1):
    if width % num_heads:
        raise HarnessError(f"decoder_width {width} is not divisible by decoder_heads {num_heads}")
    return _Modules.get()["Decoder"](vocab_size=vocab_size, max_len=max_len, width=width, depth=depth,
                                     mlp_dim=mlp_dim, num_heads=num_heads, dropout=dropout)


def init_params(model, encoder_width: int, num_tokens: int, seed: int = 0):
    import jax
    import jax.numpy as jnp

    tokens = jnp.zeros((1, model.max_len), jnp.int32)
    valid = jnp.ones((1, model.max_len), bool)
    enc = jnp.zeros((1, num_tokens, encoder_width), jnp.float32)
    return jax.jit(model.init)(jax.random.PRNGKey(seed), tokens, valid, enc)["params"]


# ----------------------------------------------------------------------------------------- layout
@dataclasses.dataclass(frozen=True)
class Layout:
    """Token slots: `prefix_len` (left-padded prefix), one start token, `target_len` (target + EOS)."""

    prefix_len: int
    target_len: int

    @property
    def prompt_len(self) -> int:
        return self.prefix_len + 1

    @property
    def seq_len(self) -> int:
        return self.prefix_len + 1 + self.target_len


def start_id(tokenizer) -> int:
    # No BOS in the vocabulary: the pad id starts the target, as T5 does.
    return tokenizer.bos_id if tokenizer.bos_id >= 0 else tokenizer.pad_id


def encode_prompts(tokenizer, prefixes: Sequence[str], layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Prompts [N, prefix_len + 1] (left-padded prefix, then the start token) and their key mask."""
    n, p = len(prefixes), layout.prefix_len
    tokens = np.full((n, layout.prompt_len), tokenizer.pad_id, np.int32)
    valid = np.zeros((n, layout.prompt_len), bool)
    tokens[:, -1] = start_id(tokenizer)
    valid[:, -1] = True
    if p:
        ids = tokenizer.encode(list(prefixes), p, eos="no")
        lengths = (ids != tokenizer.pad_id).sum(axis=1)
        for row, length in enumerate(lengths):
            tokens[row, p - length:p] = ids[row, :length]
            valid[row, p - length:p] = True
    return tokens, valid


def encode_examples(tokenizer, prefixes: Sequence[str], targets: Sequence[str], layout: Layout) -> dict:
    """Teacher-forcing arrays: `inputs`/`valid` [N, seq_len - 1], `labels`/`label_mask` [N, target_len]
    (the logits of input positions prompt_len - 1 .. seq_len - 2 predict the labels)."""
    prompt, prompt_valid = encode_prompts(tokenizer, prefixes, layout)
    target = tokenizer.encode(list(targets), layout.target_len, eos="sticky")
    label_mask = target != tokenizer.pad_id
    inputs = np.concatenate([prompt, target[:, :-1]], axis=1)
    valid = np.concatenate([prompt_valid, np.ones_like(target[:, :-1], bool)], axis=1)
    return {"inputs": inputs, "valid": valid, "labels": target, "label_mask": label_mask}


# ------------------------------------------------------------------------------------------- loss
def weighted_softmax_xent(logits, labels, weights, *, label_smoothing: float = 0.0, normalize: bool = True,
                          reduction: bool = True):
    """big_vision's `utils.weighted_softmax_xent`: cross-entropy against soft targets `1 - ls` on the label
    and `ls / (V - 1)` on every other token, times `weights` [B, T], summed over each sequence, divided by
    that sequence's weight sum if `normalize` (clipped at 2e-38: a row without targets is 0), then the
    batch mean if `reduction` (rows without targets count in it), else per sequence [B]."""
    import jax
    import jax.numpy as jnp

    vocab = logits.shape[-1]
    off = label_smoothing / (vocab - 1)
    targets = jax.nn.one_hot(labels, vocab) * (1.0 - label_smoothing - off) + off
    loss = -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
    weights = jnp.asarray(weights, jnp.float32)
    loss = (loss * weights).sum(axis=1)
    if normalize:
        loss = loss / jnp.clip(weights.sum(axis=1), 2e-38)
    return loss.mean() if reduction else loss


def target_logits(model, params, batch, encoded, layout: Layout, *, deterministic=True, rngs=None):
    """Logits [B, target_len, V] of the target positions of a teacher-forced batch."""
    logits = model.apply({"params": params}, batch["inputs"], batch["valid"], encoded,
                         deterministic=deterministic, rngs=rngs)
    return logits[:, layout.prompt_len - 1:]


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


# -------------------------------------------------------------------------------------- decoding
def _length_penalty(length, alpha: float):
    # GNMT's ((5 + |Y|) / 6)^alpha; alpha = 0 ranks by total log-probability.
    return ((5.0 + length) / 6.0) ** alpha


def greedy_search(step_fn: Callable, state, first_logits, *, max_len: int, eos_id: int, pad_id: int):
    """Argmax decoding. `step_fn(tokens [N], state, t) -> (logits [N, V], state)` consumes the token
    chosen at decode step t. Returns tokens [N, max_len] (pad after EOS) and their total log-prob [N]."""
    import jax
    import jax.numpy as jnp

    n = first_logits.shape[0]

    def cond(carry):
        t, _, _, _, done, _ = carry
        return (t < max_len) & ~jnp.all(done)

    def body(carry):
        t, logits, state, out, done, score = carry
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        token = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        score = score + jnp.where(done, 0.0, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0])
        token = jnp.where(done, pad_id, token)
        out = out.at[:, t].set(token)
        done = done | (token == eos_id)
        logits, state = step_fn(token, state, t)
        return t + 1, logits, state, out, done, score

    init = (jnp.int32(0), first_logits, state, jnp.full((n, max_len), pad_id, jnp.int32),
            jnp.zeros((n,), bool), jnp.zeros((n,), jnp.float32))
    _, _, _, out, _, score = jax.lax.while_loop(cond, body, init)
    return out, score


def beam_search(step_fn: Callable, state, first_logits, *, beam_size: int, max_len: int, eos_id: int,
                pad_id: int, length_penalty: float = 0.0):
    """Beam search over `step_fn` (as in `greedy_search`; `state` holds one entry per example, its
    leading axis is tiled to examples x beams here).

    At each step the 2K best extensions of the K live beams are ranked; those ending in EOS among the
    top K are finished, the K best others live on. An example is done with K finished hypotheses (or at
    `max_len`); the answer is the finished one with the best score (log-prob / length penalty), or the
    best live beam if none finished. With K = 1 this is exactly greedy search.
    Returns tokens [N, max_len] and scores [N].
    """
    import jax
    import jax.numpy as jnp

    n, vocab = first_logits.shape
    k = beam_size

    def tile(a):
        return jnp.repeat(a, k, axis=0)

    state = jax.tree.map(tile, state)
    logits0 = tile(first_logits)
    alive_seq = jnp.full((n, k, max_len), pad_id, jnp.int32)
    # Only beam 0 is live at first: the K beams would otherwise be K copies of one hypothesis.
    alive_logp = jnp.tile(jnp.array([0.0] + [_NEG] * (k - 1), jnp.float32)[None], (n, 1))
    fin_seq = jnp.full((n, k, max_len), pad_id, jnp.int32)
    fin_score = jnp.full((n, k), _NEG, jnp.float32)
    fin_count = jnp.zeros((n,), jnp.int32)

    def cond(carry):
        t, *_, fin_count = carry
        return (t < max_len) & ~jnp.all(fin_count >= k)

    def body(carry):
        t, logits, state, alive_seq, alive_logp, fin_seq, fin_score, fin_count = carry
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(n, k, vocab)
        cand = (alive_logp[:, :, None] + logp).reshape(n, k * vocab)
        top_score, top_idx = jax.lax.top_k(cand, 2 * k)
        beam, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(alive_seq, beam[:, :, None], axis=1).at[:, :, t].set(token)
        is_eos = token == eos_id
        done = fin_count >= k
        # Finish the EOS extensions ranked in the top K of examples that are not done yet.
        finishing = is_eos & (jnp.arange(2 * k) < k)[None] & ~done[:, None] & (top_score > _NEG / 2)
        new_score = jnp.where(finishing, top_score / _length_penalty(t + 1.0, length_penalty), _NEG)
        all_score = jnp.concatenate([fin_score, new_score], axis=1)
        all_seq = jnp.concatenate([fin_seq, seqs], axis=1)
        fin_score, keep = jax.lax.top_k(all_score, k)
        fin_seq = jnp.take_along_axis(all_seq, keep[:, :, None], axis=1)
        fin_count = jnp.minimum(fin_count + finishing.sum(axis=1), k)
        live_score, live = jax.lax.top_k(jnp.where(is_eos, _NEG, top_score), k)
        alive_seq = jnp.take_along_axis(seqs, live[:, :, None], axis=1)
        alive_logp = live_score
        origin = jnp.take_along_axis(beam, live, axis=1)
        flat = (jnp.arange(n)[:, None] * k + origin).reshape(-1)
        state = jax.tree.map(lambda a: a[flat], state)
        tokens = jnp.take_along_axis(token, live, axis=1).reshape(-1)
        logits, state = step_fn(tokens, state, t)
        return t + 1, logits, state, alive_seq, alive_logp, fin_seq, fin_score, fin_count

    init = (jnp.int32(0), logits0, state, alive_seq, alive_logp, fin_seq, fin_score, fin_count)
    t, _, _, alive_seq, alive_logp, fin_seq, fin_score, fin_count = jax.lax.while_loop(cond, body, init)
    alive_best = alive_logp[:, 0] / _length_penalty(jnp.asarray(t, jnp.float32), length_penalty)
    use_fin = fin_count > 0
    seq = jnp.where(use_fin[:, None], fin_seq[:, 0], alive_seq[:, 0])
    return seq, jnp.where(use_fin, fin_score[:, 0], alive_best)


def make_generate(model, layout: Layout, *, eos_id: int, pad_id: int, beam_size: int = 1,
                  length_penalty: float = 0.0, max_decode_len: int | None = None):
    """A jitted `generate(params, encoded, prompt, prompt_valid) -> (tokens [B, L], scores [B])`."""
    import jax

    max_len = min(max_decode_len or layout.target_len, layout.target_len)
    cache_len = layout.prompt_len + max_len

    @jax.jit
    def generate(params, encoded, prompt, prompt_valid):
        variables = {"params": params}
        cross = model.apply(variables, encoded, method="encode")
        first, cache = model.apply(variables, prompt, prompt_valid, cross, cache_len, method="prefill")

        # A beam reads its example's cross-attention keys: tiled once, not gathered every step.
        c = cross if beam_size == 1 else jax.tree.map(lambda a: a.repeat(beam_size, axis=0), cross)

        def step_fn(tokens, cache, t):
            return model.apply(variables, tokens, layout.prompt_len + t, cache, c, method="step")

        if beam_size > 1:
            return beam_search(step_fn, cache, first, beam_size=beam_size, max_len=max_len, eos_id=eos_id,
                               pad_id=pad_id, length_penalty=length_penalty)
        return greedy_search(step_fn, cache, first, max_len=max_len, eos_id=eos_id, pad_id=pad_id)

    return generate


# ------------------------------------------------------------------------------ the task protocol
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
    # "adam" = scale_by_adam (configs/proj/paligemma/transfers/*), "sgd_momentum", "sgd" (harness.optim).
    optimizer: str = "adafactor"
    lr: float = 3e-4  # the paper's; cappa's `config.lr` is 1e-3
    # The paper gives none; cappa warms up 10k of 366.5k steps (2.7%), PaliGemma transfers 5%. 10% kept.
    warmup_fraction: float = 0.1
    # big_vision's `wd` (harness.optim: wd * param on kernels, after the lr): cappa's `config.wd`.
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


def as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_tokenizer(spec: str):
    from harness.tokenizer import Tokenizer

    if spec == "proxy":
        return Tokenizer(PROXY_TOKENIZER)
    if not spec:
        raise HarnessError("no sentencepiece vocabulary given; pass --set tokenizer=path/to/spm.model "
                           "(the paper used a 32k vocabulary) or tokenizer=proxy for the proxy data")
    return Tokenizer(spec)


def default_pp(res: int) -> str:
    return f"decode|resize({res})|value_range(-1,1)"


def read_split_text(dataset: str, split: str, text_keys: Sequence[str], read_text: ReadText, *,
                    data_dir=None, num_examples=None) -> tuple[TextTable, int]:
    """Every text example of a split in split order (no image decoding); returns (table, rows)."""
    from harness import data

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


def _feature_rows(arr, rows: np.ndarray) -> np.ndarray:
    # Sorted, unique reads are much faster on a memory-mapped file than random ones.
    uniq, inverse = np.unique(rows, return_inverse=True)
    return np.asarray(arr[uniq], np.float32)[inverse]


def _encoded_dim(encoder) -> tuple[int, int]:
    c = encoder.config
    # `encoded` holds the patch tokens only (a cls token is dropped from it).
    return (encoder.res // c["patch_size"][0]) * (encoder.res // c["patch_size"][1]), int(c["width"])


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
    from harness import data
    from harness.features import extract
    from harness.optim import cosine_schedule, make_optimizer
    from harness.train import fit

    if cfg.decode not in ("greedy", "beam"):
        raise HarnessError(f"decode={cfg.decode!r} is not one of greedy, beam")
    if cfg.feature_dtype not in ("float32", "float16", "bfloat16"):
        raise HarnessError(f"feature_dtype={cfg.feature_dtype!r} is not one of float32, float16, bfloat16")
    tokenizer = load_tokenizer(cfg.tokenizer)
    layout = Layout(cfg.prefix_len, cfg.target_len)
    pp = cfg.pp or default_pp(encoder.res)
    caps = {"train": cfg.max_train_examples or None, "eval": cfg.max_eval_examples or None}
    stats: dict = {}

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
            feats[role] = extract(encoder, dataset, split, pp=pp, cache_dir=ctx.cache_dir, data_dir=ctx.data_dir,
                                  representations=("encoded",), keys=(), batch_size=min(cfg.eval_batch_size, 256),
                                  num_examples=caps[role], dtype=cfg.feature_dtype, progress=ctx.progress,
                                  stats=stats)["encoded"]
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

        extract_seconds = sum(e["seconds"] for e in stats.get("extract", []))
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

        extract_seconds = 0.0
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
        log_ppl = _log_perplexity(model, dec_params, eval_feats, eval_text, tokenizer, layout, cfg)
    finally:
        if tmp is not None:
            tmp.cleanup()
    eval_seconds = time.perf_counter() - t_eval
    losses = result.losses
    return {
        "predictions": predictions,
        "eval_table": eval_text,
        "log_perplexity": log_ppl,
        "steps": result.steps,
        "train_loss_first": float(np.mean(losses[:10])) if losses else float("nan"),
        "train_loss_last": float(np.mean(losses[-10:])) if losses else float("nan"),
        "timings": {"extract_seconds": extract_seconds, "train_seconds": train_seconds,
                    "eval_seconds": eval_seconds, "decoder_seconds": time.perf_counter() - t0},
        "feature_extraction": stats.get("extract", []),
        "num_train_text_examples": len(train_text),
        "num_eval_text_examples": len(eval_text),
    }


def _encode_split(encoder, enc_params, dataset, split, pp, ctx, cfg, cap, folder: Path, shape):
    """The fine-tuned encoder's tokens for a split, in a temporary memory-mapped file."""
    import jax

    from harness import data

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
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(table), desc=f"{desc} decode", unit="ex", dynamic_ncols=True, leave=False)
    out = {}
    for idx, real in _padded_chunks(len(table), size):
        prompt, valid = encode_prompts(tokenizer, [table.prefixes[j] for j in idx], layout)
        encoded = _feature_rows(feats, table.rows[idx])
        tokens, _ = sharding.apply_to_batch(generate, params, encoded, prompt, valid)
        texts = tokenizer.decode(np.asarray(tokens)[:real])
        for j, text in zip(idx[:real], texts):
            out[table.ids[j]] = text
        if bar is not None:
            bar.update(real)
    if bar is not None:
        bar.close()
    return out


def _log_perplexity(model, params, feats, table: TextTable, tokenizer, layout, cfg) -> float:
    """big_vision's cappa perplexity evaluator (`evaluators/proj/cappa/perplexity.py`): per example the
    target's NLL without label smoothing, summed over its tokens (EOS included; divided by their count
    if `perplexity_normalize_by_seqlen`), then the mean over eval examples. big_vision scores one target
    per example, drawn by the eval pp (`choice`); here every target is scored and an example's value is
    the mean over its targets: the expectation of big_vision's number over that draw, without its noise."""
    import jax

    pairs = [(j, t) for j in range(len(table)) for t in table.targets[j]]
    if not pairs:
        return float("nan")  # the split has no targets (e.g. a test split)

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
    return float((np.bincount(owner, per_pair, minlength=len(table))[keep] / counts[keep]).mean())


__all__ = ["DecoderSettings", "Layout", "TextTable", "beam_search", "choose_target", "encode_examples",
           "encode_prompts", "greedy_search", "make_decoder", "make_generate", "train_and_decode",
           "weighted_softmax_xent"]
