"""The NaFlex ViT (SigLIP 2's native-aspect-ratio encoder: NaViT + FlexiViT), with big_vision's names.

An image is a variable-length sequence of patches: big_vision's NaFlex pp (`harness.data.pp.naflex`:
`resize_to_sequence`, `patchify`, `pad_to_shape`) resizes it, aspect ratio kept, to at most
`max_num_patches` patches of p x p pixels, flattens each patch in (y, x, channel) order and pads the
sequence to `max_num_patches`. The model takes big_vision's tuple

    (patches [N, L, p*p*3] float, type [N, L] int (1 = patch, 0 = padding), yidx [N, L], xidx [N, L])

and its parameters have big_vision's names (`models/proj/image_text/naflex_vit.py`), so its `.npz` loads
without renaming:

    embedding/{kernel (p*p*3, D), bias}   a Dense over the flattened patches
    pos_embedding (G, G, D)              a learned G x G grid, resized per image to the image's patch grid
    Transformer/encoderblock_{i}/...     the ViT's blocks (`harness.models.vit`), self-attention masked to
                                         the patches; Transformer/encoder_norm
    MAPHead_0/...                        attention pooling over the patches only
    pre_logits, head                     as the ViT's

The posemb of an image with an h x w patch grid is the grid resized to h x w by a separable bilinear
resize with antialiasing (a triangle kernel widened by G/size when shrinking, weights normalised): big_vision
computes it with `jax.image.scale_and_translate(..., method="bilinear", antialias=True)` into a 64 x 64
canvas and gathers each patch's row (so sides above 64 patches are NaN there), transformers' Siglip2 with the
same weights written out (`Siglip2VisionEmbeddings.resize_positional_embeddings`, which equals
`F.interpolate(mode="bilinear", align_corners=False, antialias=True)`); here each patch gets its row and
column weights directly, for any side. Padding positions take row 0 / column 0 (as both references) and are
masked everywhere after.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from harness.models.vit import MlpBlock, _dot_general, attention

POOL_TYPES = ("map", "gap", "max", "none")  # big_vision naflex_vit.py's


def _axis_weights(index, size, grid: int):
    """[N, L, grid] antialiased bilinear weights of output position `index` (of `size` positions) over a
    `grid`-long input axis: `scale = grid / size`, support max(scale, 1), centre (index + 0.5) * scale - 0.5,
    triangle kernel, normalised (jax.image's `_compute_weight_mat` and torch's antialiased bilinear alike)."""
    scale = grid / size.astype(jnp.float32)[:, None]  # [N, 1]
    support = jnp.maximum(scale, 1.0)
    center = (index.astype(jnp.float32) + 0.5) * scale - 0.5  # [N, L]
    source = jnp.arange(grid, dtype=jnp.float32)
    w = jnp.maximum(0.0, 1.0 - jnp.abs(source - center[..., None]) / support[..., None])
    return w / jnp.sum(w, axis=-1, keepdims=True)


def resize_posemb(posemb, yidx, xidx):
    """posemb [G, G, D] -> [N, L, D]: each patch's row of the grid resized to its image's patch grid
    (rows `max(yidx) + 1`, columns `max(xidx) + 1`, as big_vision's `coords.max(axis=1) + 1`)."""
    g, d = posemb.shape[0], posemb.shape[-1]
    h = jnp.max(yidx, axis=1) + 1
    w = jnp.max(xidx, axis=1) + 1
    wy = _axis_weights(yidx, h, g)  # [N, L, G]
    wx = _axis_weights(xidx, w, g)
    weights = (wy[..., :, None] * wx[..., None, :]).reshape(*yidx.shape, g * g)
    return weights @ posemb.reshape(g * g, d).astype(jnp.float32)


class MaskedBlock(nn.Module):
    """The ViT's pre-LN block (same names), with a [N, 1, L, L] attention mask."""

    mlp_dim: int | None = None
    num_heads: int = 12
    dtype_mm: str = "float32"
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x, mask):
        y = nn.LayerNorm(epsilon=1e-6)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(), deterministic=True,
            dtype=self.dtype_mm, attention_fn=attention, qkv_dot_general=_dot_general(self.dtype_mm),
            out_dot_general=_dot_general(self.dtype_mm))(y, y, mask=mask)
        x = x + y
        y = nn.LayerNorm(epsilon=1e-6)(x)
        return x + MlpBlock(mlp_dim=self.mlp_dim, dtype_mm=self.dtype_mm, gelu=self.gelu)(y)


class _ScanBlock(MaskedBlock):
    @nn.compact
    def __call__(self, x, mask):  # type: ignore[override]
        return super().__call__(x, mask), None


class MaskedEncoder(nn.Module):
    """Blocks unrolled (`encoderblock_{i}`) or scanned (`encoderblock`), then `encoder_norm`."""

    depth: int
    mlp_dim: int | None = None
    num_heads: int = 12
    scan: bool = False
    dtype_mm: str = "float32"
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x, mask):
        kw = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dtype_mm=self.dtype_mm, gelu=self.gelu)
        if self.scan:
            x, _ = nn.scan(_ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True},
                           in_axes=nn.broadcast, length=self.depth)(name="encoderblock", **kw)(x, mask)
        else:
            for i in range(self.depth):
                x = MaskedBlock(name=f"encoderblock_{i}", **kw)(x, mask)
        return nn.LayerNorm(epsilon=1e-6, name="encoder_norm")(x)


class MaskedMAPHead(nn.Module):
    """Attention pooling (the ViT's `MAPHead_0` names): the probe attends to the patches only."""

    mlp_dim: int | None = None
    num_heads: int = 12
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x, keep):
        n, _, d = x.shape
        probe = jnp.tile(self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), x.dtype), [n, 1, 1])
        x = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform())(
            probe, x, mask=keep[:, None, None, :])
        y = nn.LayerNorm(epsilon=1e-6)(x)
        x = x + MlpBlock(mlp_dim=self.mlp_dim, gelu=self.gelu)(y)
        return x[:, 0]


class NaFlexViT(nn.Module):
    """`(patches, type, yidx, xidx)` -> `(output, out)`; `out` keys: stem, encoded (every position after the
    final LayerNorm; padding positions are not patches), pre_logits (the pooled patches; the token sequence
    for pool_type "none"), logits (with num_classes)."""

    num_classes: int | None = None
    patch_size: tuple[int, int] = (16, 16)
    width: int = 768
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 12
    nposemb: int = 16  # the learned posemb grid's side (big_vision's `nposemb`)
    rep_size: int | bool = False
    pool_type: str = "map"
    head_zeroinit: bool = True
    scan: bool = False
    dtype_mm: str = "float32"
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, inputs, *, train: bool = False):
        patches, ptype, yidx, xidx = inputs
        out = {}
        keep = jnp.asarray(ptype) == 1  # big_vision: 1 = patch, 0 = padding
        x = out["stem"] = nn.Dense(self.width, name="embedding", dtype=self.dtype_mm)(
            jnp.asarray(patches, self.dtype_mm))
        posemb = self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(self.width)),
                            (self.nposemb, self.nposemb, self.width), jnp.float32)
        x = x + resize_posemb(posemb, jnp.asarray(yidx), jnp.asarray(xidx)).astype(x.dtype)
        # Only patches attend to patches (big_vision's sa_mask = keep_q AND keep_k).
        mask = jnp.logical_and(keep[:, :, None], keep[:, None, :])[:, None]
        x = out["encoded"] = MaskedEncoder(depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                                           scan=self.scan, dtype_mm=self.dtype_mm, gelu=self.gelu,
                                           name="Transformer")(x, mask)
        if self.pool_type == "map":
            x = MaskedMAPHead(num_heads=self.num_heads, mlp_dim=self.mlp_dim, gelu=self.gelu, name="MAPHead_0")(x, keep)
        elif self.pool_type == "gap":
            k = keep[..., None].astype(x.dtype)
            x = jnp.sum(x * k, axis=1) / jnp.maximum(jnp.sum(k, axis=1), 1)  # an all-padding row: 0, not NaN
        elif self.pool_type == "max":
            x = jnp.max(jnp.where(keep[..., None], x, jnp.finfo(x.dtype).min), axis=1)
        elif self.pool_type != "none":
            raise ValueError(f"unknown NaFlex pool_type {self.pool_type!r}; expected one of {POOL_TYPES}")
        if self.rep_size:
            x = nn.tanh(nn.Dense(self.width if self.rep_size is True else self.rep_size, name="pre_logits")(x))
        out["pre_logits"] = x
        if self.num_classes:
            kw = {"kernel_init": nn.initializers.zeros} if self.head_zeroinit else {}
            x = out["logits"] = nn.Dense(self.num_classes, name="head", **kw)(x)
        return x, out


# ------------------------------------------------------------------------------------------ inputs
def patchify(images: np.ndarray, patch_size: int, max_num_patches: int) -> tuple[np.ndarray, ...]:
    """float [N, H, W, C] images, each at its own patch grid (H/p x W/p, no resize) -> the padded NaFlex tuple
    (big_vision's `patchify` + `pad_to_shape`, in numpy): patches in (y, x, channel) order, row-major."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    p = int(patch_size)
    gh, gw = h // p, w // p
    if h % p or w % p or gh * gw > max_num_patches or gh * gw == 0:
        raise ValueError(f"images of {h}x{w} px are not a grid of at most {max_num_patches} patches of {p} px")
    x = images.reshape(n, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, gh * gw, p * p * c)
    length = gh * gw
    pad = max_num_patches - length
    gy, gx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    patches = np.pad(x, ((0, 0), (0, pad), (0, 0)))
    ptype = np.pad(np.ones((n, length), np.int32), ((0, 0), (0, pad)))
    yidx = np.pad(np.tile(gy.reshape(1, -1), (n, 1)).astype(np.int32), ((0, 0), (0, pad)))
    xidx = np.pad(np.tile(gx.reshape(1, -1), (n, 1)).astype(np.int32), ((0, 0), (0, pad)))
    return patches, ptype, yidx, xidx


# The pipeline's keys of the NaFlex input (big_vision's `patchify` dict flattened under "image").
INPUT_KEYS = ("image/patches", "image/type", "image/yidx", "image/xidx")


def inputs_from_batch(batch) -> tuple[np.ndarray, ...]:
    """The model's tuple from a pipeline batch's `image/patches`, `image/type`, `image/yidx`, `image/xidx`."""
    return tuple(np.asarray(batch[k]) for k in INPUT_KEYS)


__all__ = ["INPUT_KEYS", "NaFlexViT", "POOL_TYPES", "inputs_from_batch", "patchify", "resize_posemb"]
