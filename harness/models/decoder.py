"""The autoregressive decoder of the paper's multitask-decoding evaluation (Table 4), shared by the
`coco_captioning` and `vqa` tasks: the model, its sequence layout and its decoding. Training it and the
tasks' protocol are in `harness.train.decoder`.

- `Decoder`: a small pre-LN transformer decoder (default 2 layers, as in the paper) with causal
  self-attention, cross-attention to the encoder's `encoded` tokens, dropout, and a key/value cache for
  incremental decoding (`prefill` then `step`; the same numbers as the full causal forward).
- Sequence layout (`Layout`): `[prefix, left-padded | start | target + EOS, right-padded]`. The prefix
  (the VQA question; empty for captioning) is left-padded so that every example's target starts at the
  same position; training and decoding then see identical positions, and a batch decodes in lock-step.
  The loss covers only target tokens (`weighted_softmax_xent`, big_vision's).
- `greedy_search` / `beam_search`: jitted, over any `step_fn(tokens, state, t) -> (logits, state)`, so
  they are tested on an analytic model whose best sequence is known; `make_generate` runs them on the model.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from harness.errors import HarnessError

_NEG = -1.0e9  # "minus infinity" for scores: finite, so arithmetic on it never gives NaN


# --------------------------------------------------------------------------------------------- model
_DENSE_INIT = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.zeros)


class Attention(nn.Module):
    """Multi-head dot-product attention whose keys/values are computed separately (`kv`), so they
    can be cached (self-attention) or computed once per image (cross-attention)."""

    width: int
    num_heads: int

    def setup(self):
        h, d = self.num_heads, self.width // self.num_heads
        self.query = nn.DenseGeneral((h, d), **_DENSE_INIT)
        self.key = nn.DenseGeneral((h, d), **_DENSE_INIT)
        self.value = nn.DenseGeneral((h, d), **_DENSE_INIT)
        self.out = nn.DenseGeneral(self.width, axis=(-2, -1), **_DENSE_INIT)

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
        self.Dense_0 = nn.Dense(self.mlp_dim, **_DENSE_INIT)
        self.Dense_1 = nn.Dense(self.width, **_DENSE_INIT)
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
        self.encoder_proj = nn.Dense(self.width, **_DENSE_INIT)
        self.blocks = [DecoderBlock(self.width, self.mlp_dim, self.num_heads, self.dropout,
                                    name=f"decoderblock_{i}") for i in range(self.depth)]
        self.decoder_norm = nn.LayerNorm(epsilon=1e-6)
        self.head = nn.Dense(self.vocab_size, **_DENSE_INIT)
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


def make_decoder(vocab_size: int, max_len: int, *, width: int = 768, depth: int = 2, mlp_dim: int = 3072,
                 num_heads: int = 12, dropout: float = 0.1):
    if width % num_heads:
        raise HarnessError(f"decoder_width {width} is not divisible by decoder_heads {num_heads}")
    return Decoder(vocab_size=vocab_size, max_len=max_len, width=width, depth=depth, mlp_dim=mlp_dim,
                   num_heads=num_heads, dropout=dropout)


def init_params(model, encoder_width: int, num_tokens: int, seed: int = 0):
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


# -------------------------------------------------------------------------------------- decoding
def _length_penalty(length, alpha: float):
    # GNMT's ((5 + |Y|) / 6)^alpha; alpha = 0 ranks by total log-probability.
    return ((5.0 + length) / 6.0) ** alpha


def greedy_search(step_fn: Callable, state, first_logits, *, max_len: int, eos_id: int, pad_id: int):
    """Argmax decoding. `step_fn(tokens [N], state, t) -> (logits [N, V], state)` consumes the token
    chosen at decode step t. Returns tokens [N, max_len] (pad after EOS) and their total log-prob [N]."""
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


__all__ = ["Decoder", "Layout", "beam_search", "encode_examples", "encode_prompts", "greedy_search",
           "init_params", "make_decoder", "make_generate", "start_id", "target_logits", "weighted_softmax_xent"]
