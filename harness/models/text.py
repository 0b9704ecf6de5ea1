"""The text tower of two-tower (LiT / SigLIP) models, the two-tower head, and the two contrastive losses.

Parameter names are big_vision's (`models/proj/image_text/text_transformer.py`, `two_towers.py`), so a
SigLIP / LiT `.npz` loads without renaming:

    txt/Embed_0/embedding (V, D)    txt/pos_embedding (1, L, D)
    txt/Encoder_0/encoderblock_{i}/...   (the image encoder's pre-LN blocks, no causal mask)
    txt/Encoder_0/encoder_norm      txt/head (D, out_dim)
    t (1,)   log-temperature: logits scale = exp(t)      b (1,)   bias (sigmoid loss only)

The tower pools at the LAST position of the fixed-length token sequence, padding included, as big_vision
and Hugging Face's SiglipTextModel do, so how texts are padded changes every embedding: the text pp a tower
is fed (`harness.data.text_pp.TextPP`) is its checkpoint family's own, recorded in every result.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from harness import checkpoints
from harness.data.text_pp import TextPP, tokenize_pp
from harness.errors import HarnessError
from harness.models.encoder import abstract_tree
from harness.models.vit import Encoder
from harness.progress import Progress
from harness.scale import sharding

POOL_TYPES = ("last", "first", "gap", "max")
# big_vision's two_towers: z / (||z|| + 1e-8), for embeddings and for the per-class means alike.
NORM_EPS = 1e-8


class TextTransformer(nn.Module):
    """Token ids [N, L] -> (embedding [N, num_classes or width], out dict)."""

    num_classes: int | None = None  # the shared embedding size (the `head`); None: no head
    width: int = 512
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 8
    vocab_size: int = 32_000
    pool_type: str = "last"
    dropout: float = 0.0
    scan: bool = False
    remat_policy: str = "nothing_saveable"
    dtype_mm: str = "float32"
    gelu: str = "tanh"  # big_vision's; open_clip's SigLIP v1 text towers use the exact GELU

    @nn.compact
    def __call__(self, text, *, train: bool = False):
        out = {}
        x = out["embedded"] = nn.Embed(self.vocab_size, self.width, name="Embed_0")(text)
        _, length, d = x.shape
        x = x + self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(d)), (1, length, d),
                           x.dtype)
        x = out["encoded"] = Encoder(depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                                     dropout=self.dropout, scan=self.scan, remat_policy=self.remat_policy,
                                     dtype_mm=self.dtype_mm, gelu=self.gelu,
                                     name="Encoder_0")(x, deterministic=not train)
        if self.pool_type == "last":
            x = x[:, -1]
        elif self.pool_type == "first":
            x = x[:, 0]
        elif self.pool_type == "gap":
            x = x.mean(axis=1)
        elif self.pool_type == "max":
            x = x.max(axis=1)
        else:
            raise ValueError(f"unknown text pool_type {self.pool_type!r}; expected one of {POOL_TYPES}")
        out["pre_logits"] = x
        if self.num_classes:
            x = out["logits"] = nn.Dense(self.num_classes, name="head")(x)
        return x, out


class LiTTextHead(nn.Module):
    """The trainable half of a LiT model: the text tower `txt`, log-temperature `t` and bias `b`.

    The locked image tower is not part of it: its embeddings come from the feature cache.
    """

    text: dict
    temperature_init: float = 10.0
    bias_init: float | None = -10.0

    @nn.compact
    def __call__(self, tokens, *, train: bool = False):
        ztxt, out = TextTransformer(**self.text, name="txt")(tokens, train=train)
        ztxt = l2_normalize(ztxt)
        log_t = self.param("t", nn.initializers.constant(np.log(self.temperature_init)), (1,), jnp.float32)
        out["t"] = jnp.exp(log_t)[0]
        if self.bias_init is not None:
            out["b"] = self.param("b", nn.initializers.constant(self.bias_init), (1,), jnp.float32)[0]
        return ztxt, out


def l2_normalize(z, axis: int = -1):
    """big_vision's normalisation (not a unit-norm projection of the zero vector)."""
    xp = jnp if isinstance(z, jax.Array) or not isinstance(z, np.ndarray) else np
    return z / (xp.linalg.norm(z, axis=axis, keepdims=True) + NORM_EPS)


# -------------------------------------------------------------------------------------------- losses
def softmax_contrastive_loss(zimg, ztxt, scale):
    """CLIP / LiT loss: the mean of the image->text and text->image cross-entropies of `scale * zimg.ztxt`
    with the matching pair (the diagonal) as the target."""
    logits = zimg @ ztxt.T * scale
    i2t = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
    t2i = -jnp.diagonal(jax.nn.log_softmax(logits, axis=0))
    return 0.5 * (i2t.mean() + t2i.mean())


def sigmoid_loss(zimg, ztxt, scale, bias):
    """SigLIP loss: every (image, text) pair is a binary problem with logit `scale * zimg.ztxt + bias`,
    label +1 on the diagonal and -1 elsewhere; summed over texts, averaged over images."""
    logits = zimg @ ztxt.T * scale + bias
    labels = 2.0 * jnp.eye(logits.shape[0], logits.shape[1]) - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=-1).mean()


LOSSES = ("sigmoid", "softmax")


def contrastive_loss(kind: str, zimg, ztxt, scale, bias=None):
    if kind == "sigmoid":
        if bias is None:
            raise HarnessError("the sigmoid loss needs a bias b; set bias_init")
        return sigmoid_loss(zimg, ztxt, scale, bias)
    if kind == "softmax":
        return softmax_contrastive_loss(zimg, ztxt, scale)
    raise HarnessError(f"loss {kind!r} is not one of {', '.join(LOSSES)}")


# ------------------------------------------------------------------------------ trees and configs
_PREFIX = checkpoints.TEXT_BLOCKS  # the text tower's encoder blocks: the image encoder's, under "Encoder_0/"


def text_config_from_tree(flat: dict[str, np.ndarray]) -> dict:
    """width, depth, mlp_dim, num_heads, vocab_size, max_len, num_classes, scan of a text-tower tree."""
    need = ("Embed_0/embedding", "pos_embedding")
    if any(k not in flat for k in need):
        raise HarnessError(f"text tower: missing {[k for k in need if k not in flat]}; is it a big_vision "
                           f"text_transformer tree? It has {sorted(flat)[:4]}")
    scan = checkpoints.is_scanned(flat, _PREFIX)
    if scan:
        prefix, lead = _PREFIX + "encoderblock/", 1
        depth = int(flat[prefix + "LayerNorm_0/scale"].shape[0])
    else:
        prefix, lead = _PREFIX + "encoderblock_0/", 0
        depth = 1 + max((int(m.group(1)) for k in flat if (m := re.match(r"Encoder_0/encoderblock_(\d+)/", k))),
                        default=-1)
    try:
        mlp = flat[prefix + "MlpBlock_0/Dense_0/kernel"]
        q = flat[prefix + "MultiHeadDotProductAttention_0/query/kernel"]
    except KeyError as e:
        raise HarnessError(f"text tower: no encoder blocks ({e.args[0]} is missing)") from None
    vocab, width = flat["Embed_0/embedding"].shape
    return dict(width=int(width), depth=depth, mlp_dim=int(mlp.shape[lead + 1]), num_heads=int(q.shape[lead + 1]),
                vocab_size=int(vocab), max_len=int(flat["pos_embedding"].shape[1]),
                num_classes=int(flat["head/kernel"].shape[1]) if "head/kernel" in flat else None, scan=scan)


def model_kwargs(cfg: dict) -> dict:
    """TextTransformer keyword arguments from a text config (drops `max_len`, which the input sets)."""
    keys = ("num_classes", "width", "depth", "mlp_dim", "num_heads", "vocab_size", "pool_type", "dropout",
            "scan", "remat_policy", "dtype_mm", "gelu")
    return {k: cfg[k] for k in keys if k in cfg}


def fit_text_params(flat: dict, target: dict, *, path: str = "checkpoint") -> dict:
    """Checks every key and shape of a text-tower tree against the model (no resampling: the text length
    is part of what the tower was trained with)."""
    flat = checkpoints.to_layout(flat, checkpoints.is_scanned(target, _PREFIX), _PREFIX)
    missing, extra = sorted(set(target) - set(flat)), sorted(set(flat) - set(target))
    if missing or extra:
        raise HarnessError(f"checkpoint {path}: the text tower does not match the model (missing {missing[:3]}, "
                           f"unexpected {extra[:3]}); check the text config")
    out = {}
    for k, t in target.items():
        a = np.asarray(flat[k])
        if tuple(a.shape) != tuple(t.shape):
            raise HarnessError(f"checkpoint {path}: text tower {k} has shape {tuple(a.shape)}, the model "
                               f"wants {tuple(t.shape)}")
        out[k] = a.astype(t.dtype)
    return out


# --------------------------------------------------------------------------------------- the tower
@dataclasses.dataclass
class TextTower:
    """A text tower with its params, log-temperature and bias; `embed` gives L2-normalised embeddings."""

    model: TextTransformer
    params: Any
    config: dict
    log_t: float | None = None
    b: float | None = None

    @property
    def max_len(self) -> int:
        return int(self.config["max_len"])

    @property
    def scale(self) -> float:
        return float(np.exp(self.log_t)) if self.log_t is not None else 1.0

    @functools.cached_property
    def _apply(self):
        @jax.jit
        def apply(params, tokens):
            z, _ = self.model.apply({"params": params}, tokens)
            return l2_normalize(z)

        return apply

    def embed(self, tokens: np.ndarray, batch_size: int = 256, progress: bool = False,
              desc: str = "text") -> np.ndarray:
        """tokens int [N, max_len] -> float32 [N, D], L2-normalised. One compiled batch shape; with more than
        one device each batch is split over the mesh (`harness.scale.sharding.apply_to_batch`)."""
        tokens = np.asarray(tokens, np.int32)
        if tokens.ndim != 2 or tokens.shape[1] != self.max_len:
            raise HarnessError(f"text tower takes tokens [N, {self.max_len}], got {tokens.shape}")
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= self.config["vocab_size"]):
            raise HarnessError(f"token ids must be in [0, {self.config['vocab_size']}); got "
                               f"[{tokens.min()}, {tokens.max()}]: the tokenizer does not fit this text tower")
        n = len(tokens)
        bs = max(1, min(batch_size, n))
        chunks = []
        with Progress(n, desc, "text", enabled=progress and n > bs) as bar:
            for start in range(0, n, bs):
                part = tokens[start:start + bs]
                real = len(part)
                if real < bs:  # pad the last batch: one compilation for the whole loop
                    part = np.concatenate([part, np.repeat(part[-1:], bs - real, axis=0)])
                chunks.append(sharding.apply_to_batch(self._apply, self.params, part)[:real])
                bar.update(real)
        width = self.config.get("num_classes") or self.config["width"]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, width), np.float32)

    def flat_params(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(jax.device_get(v)) for k, v in checkpoints.flatten(self.params).items()}


def text_tower_from_tree(flat: dict[str, np.ndarray], *, log_t=None, b=None, path: str = "checkpoint",
                         pool_type: str = "last", scan: bool | None = None, dtype_mm: str = "float32",
                         gelu: str = "tanh") -> TextTower:
    """Builds the tower a checkpoint's `txt` tree describes and fills it leaf by leaf."""
    cfg = text_config_from_tree(flat)
    cfg.update(pool_type=pool_type, dtype_mm=dtype_mm, gelu=gelu)
    if scan is not None:
        cfg["scan"] = bool(scan)
    model = TextTransformer(**model_kwargs(cfg))
    target = abstract_tree(model, jax.ShapeDtypeStruct((1, cfg["max_len"]), jnp.int32))
    params = fit_text_params(flat, target, path=path)
    params = checkpoints.unflatten({k: jnp.asarray(v) for k, v in params.items()})
    scalar = (lambda v: None if v is None else float(np.asarray(v, np.float32).reshape(-1)[0]))
    return TextTower(model=model, params=params, config=cfg, log_t=scalar(log_t), b=scalar(b))


def load_text_tower(spec, **kw) -> TextTower | None:
    """The text tower of a two-tower checkpoint (big_vision/SigLIP .npz or tensorstore, Hugging Face SigLIP or
    open_clip folder), given as a spec or an open `Checkpoint` handle (an encoder's `checkpoint`: the file is
    not detected or hashed again); None when the checkpoint has none (an image-only checkpoint)."""
    tt = checkpoints.read_text_tower(spec)
    if tt is None:
        return None
    # What the tree does not show but the checkpoint's config does (open_clip: GELU form, pooled position).
    kw = {**{k: tt[k] for k in ("gelu", "pool_type") if tt.get(k)}, **kw}
    tower = text_tower_from_tree(tt["txt"], log_t=tt.get("t"), b=tt.get("b"), path=tt["path"], **kw)
    tower.config["checkpoint"] = {k: tt[k] for k in ("path", "format")}
    tower.config["text_pp"] = tt.get("text_pp") or "big_vision"
    for key in ("tokenizer", "hf_tokenizer_folder", "hf_tokenizer_name", "hf_model_type"):
        if tt.get(key):
            tower.config[key] = tt[key]
    return tower


def embed_texts(tower: TextTower, tokenizer, pp: TextPP, texts, *, batch_size: int = 256,
                progress: bool = False, desc: str = "text") -> np.ndarray:
    """L2-normalised embeddings of raw texts: `pp`'s tokens through the tower (what lit_zeroshot embeds
    prompts and captions with)."""
    if pp.max_len != tower.max_len:
        raise HarnessError(f"text pp max_len {pp.max_len} is not the text tower's length {tower.max_len}")
    return tower.embed(tokenize_pp(tokenizer, texts, pp), batch_size=batch_size, progress=progress, desc=desc)


def save_two_tower(path, img_params: dict, txt_params: dict, log_t, b=None) -> str:
    """Writes a big_vision two-tower checkpoint: `params/img/...`, `params/txt/...`, `params/t`, `params/b`."""
    flat = {f"img/{k}": np.asarray(v) for k, v in checkpoints.as_flat(img_params).items()}
    flat.update({f"txt/{k}": np.asarray(v) for k, v in checkpoints.as_flat(txt_params).items()})
    flat["t"] = np.asarray(log_t, np.float32).reshape(1)
    if b is not None:
        flat["b"] = np.asarray(b, np.float32).reshape(1)
    return str(checkpoints.save_npz(path, flat, wrap="params"))


__all__ = ["LOSSES", "LiTTextHead", "TextTower", "TextTransformer", "contrastive_loss", "embed_texts",
           "l2_normalize", "load_text_tower", "save_two_tower", "sigmoid_loss", "softmax_contrastive_loss",
           "text_config_from_tree", "text_tower_from_tree"]
