"""The ViT / SoViT encoder, with big_vision's module tree and parameter names.

Parameter names follow big_vision's `models/vit.py` exactly, so public big_vision and SigLIP checkpoints
load without renaming. The model is short on purpose: everything that is not the forward pass (variants,
FLOPs, checkpoint layouts) lives in `harness.models.variants` and `harness.checkpoints`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

POOL_TYPES = ("gap", "map", "tok", "0", "none")
POSEMB_TYPES = ("learn", "sincos2d")
# The MLP activation: big_vision uses the tanh approximation of GELU; timm's v1 SigLIP and augreg ViTs use
# the exact erf form (torch `nn.GELU()`). The two differ by up to 4.7e-4 (at x = 2.68), which moved the tokens
# of a 2-block test model by 2.3e-4 (tests/test_timm_open_clip.py): past a 1e-4 parity.
GELU_TYPES = ("tanh", "exact")


def posemb_sincos_2d(h: int, w: int, width: int, temperature: float = 10_000.0, dtype=jnp.float32):
    """Fixed 2-D sin-cos position embedding (MoCo v3 layout: [sin x, cos x, sin y, cos y])."""
    if width % 4:
        raise ValueError(f"sincos2d posemb needs a width divisible by 4, got {width}")
    y, x = np.mgrid[:h, :w]
    omega = np.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / (temperature**omega)
    y = np.einsum("m,d->md", y.flatten(), omega)
    x = np.einsum("m,d->md", x.flatten(), omega)
    pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    return jnp.asarray(pe, dtype)[None, :, :]


def dot_general_f32_accumulate(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kw):
    """`lax.dot_general` that accumulates in float32 and returns the operands' dtype.

    For bfloat16 matmuls: XLA:CPU runs a bfloat16 x bfloat16 -> float32 dot on its AMX / oneDNN kernels but
    a bfloat16 -> bfloat16 one on a generic loop (~3x slower here); the float32 accumulation is what the
    hardware does anyway, so only the last rounding to bfloat16 moves."""
    out = jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type=jnp.float32, **kw)
    return out.astype(preferred_element_type or jnp.result_type(lhs, rhs))


def _dot_general(dtype_mm: str):
    return None if jnp.dtype(dtype_mm) == jnp.float32 else dot_general_f32_accumulate


# Which attention computes the blocks' self-attention (`ViT.attention`); the values agree to float rounding
# (tests/test_encoder.py), only the speed differs:
# - "einsum": flax's `nn.dot_product_attention`, big_vision's own function (token-major einsums);
# - "heads_first": the same operations with the heads moved in front of the tokens (XLA:CPU's fast matmuls);
# - "xla": `jax.nn.dot_product_attention(implementation="xla")` (scores scaled after the matmul, softmax in
#   float32 for bfloat16 inputs);
# - "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's fused flash-attention kernel,
#   falling back to "xla" where cuDNN refuses the shapes or dtype (it needs bfloat16 / float16 and a head
#   dim that is a multiple of 8, at most 128, 256 from Hopper on);
# - "auto": "heads_first" on CPU (measured faster there than "xla", docs/scale.md), "cudnn" on a GPU for
#   bfloat16 / float16 with such a head dim, "xla" everywhere else.
ATTENTION_IMPLS = ("auto", "einsum", "heads_first", "xla", "cudnn")
# Trace-time refusals by cuDNN (the message of each), for the record: the blocks then ran "xla".
CUDNN_REFUSALS: list[str] = []


def resolve_attention(impl: str, backend: str, dtype, head_dim: int) -> str:
    """The attention `impl` runs as on `backend` for operands of `dtype` and `head_dim`."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention {impl!r}; expected one of {ATTENTION_IMPLS}")
    if impl != "auto":
        return impl
    if backend == "cpu":
        return "heads_first"
    if backend in ("gpu", "cuda") and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and \
            head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    return "xla"


def attention(query, key, value, bias=None, mask=None, broadcast_dropout: bool = True, dropout_rng=None,
              dropout_rate: float = 0.0, deterministic: bool = False, dtype=None, precision=None,
              force_fp32_for_softmax: bool = False, *, implementation: str = "auto", **kw):
    """flax's `dot_product_attention` signature, computed by `implementation` (see ATTENTION_IMPLS).

    Masks, biases, attention dropout and an explicit precision always go to flax's own function."""
    if bias is not None or mask is not None or (dropout_rate > 0 and not deterministic) or precision is not None:
        implementation = "einsum"
    query, key, value = promote_dtype(query, key, value, dtype=dtype)
    impl = resolve_attention(implementation, jax.default_backend(), query.dtype, query.shape[-1])
    if impl == "einsum":
        return nn.dot_product_attention(query, key, value, bias, mask, broadcast_dropout, dropout_rng,
                                        dropout_rate, deterministic, dtype, precision,
                                        force_fp32_for_softmax=force_fp32_for_softmax, **kw)
    if impl == "heads_first":
        return _heads_first(query, key, value, force_fp32_for_softmax)
    if impl == "cudnn":
        try:
            return jax.nn.dot_product_attention(query, key, value, implementation="cudnn")
        except (NotImplementedError, RuntimeError, ValueError) as e:  # refused while tracing: shapes, dtype, no cuDNN
            CUDNN_REFUSALS.append(f"{type(e).__name__}: {e}")
    return jax.nn.dot_product_attention(query, key, value, implementation="xla")


def _heads_first(query, key, value, force_fp32_for_softmax: bool):
    """flax's attention with the heads moved in front of the tokens before the two matmuls.

    The same operations in the same dtypes (scaled scores, softmax, weighted sum). On XLA:CPU flax's
    `...qhd,...khd->...hqk` einsum on token-major operands runs far below the machine's matmul rate (a
    So150m/14 block, head dim 55, spent half of its time there: 70 ms vs 29 ms for the attention of a
    batch of 8); [..., heads, tokens, dim] operands get its fast matmul kernels."""
    dtype = query.dtype
    query = query / jnp.sqrt(query.shape[-1]).astype(dtype)
    q, k, v = (x.swapaxes(-3, -2) for x in (query, key, value))  # [..., heads, tokens, dim]
    acc = jnp.float32 if dtype != jnp.float32 else None
    w = jnp.matmul(q, k.swapaxes(-1, -2), preferred_element_type=acc)
    if force_fp32_for_softmax and dtype != jnp.float32:
        w = jax.nn.softmax(w.astype(jnp.float32))
    else:
        w = jax.nn.softmax(w.astype(dtype)).astype(dtype)
    out = jnp.matmul(w.astype(dtype), v, preferred_element_type=acc).astype(dtype)
    return out.swapaxes(-3, -2)


class MlpBlock(nn.Module):
    """Dense -> GELU (tanh approximation, or exact with `gelu="exact"`) -> Dense."""

    mlp_dim: int | None = None
    dropout: float = 0.0
    dtype_mm: str = "float32"
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        inits = dict(kernel_init=nn.initializers.xavier_uniform(),
                     bias_init=nn.initializers.normal(stddev=1e-6), dot_general=_dot_general(self.dtype_mm))
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim or 4 * d, dtype=self.dtype_mm, **inits)(x)
        if self.gelu not in GELU_TYPES:
            raise ValueError(f"unknown gelu {self.gelu!r}; expected one of {GELU_TYPES}")
        x = nn.gelu(x, approximate=self.gelu == "tanh")
        x = nn.Dropout(rate=self.dropout)(x, deterministic)
        return nn.Dense(d, dtype=self.dtype_mm, **inits)(x)


class Encoder1DBlock(nn.Module):
    """Pre-LN transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0
    dtype_mm: str = "float32"
    gelu: str = "tanh"
    attention: str = "auto"

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        y = nn.LayerNorm(epsilon=1e-6)(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
            deterministic=deterministic, dtype=self.dtype_mm,
            attention_fn=functools.partial(attention, implementation=self.attention),
            qkv_dot_general=_dot_general(self.dtype_mm), out_dot_general=_dot_general(self.dtype_mm))(y, y)
        y = nn.Dropout(rate=self.dropout)(y, deterministic)
        x = x + y
        y = nn.LayerNorm(epsilon=1e-6)(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout=self.dropout, dtype_mm=self.dtype_mm,
                     gelu=self.gelu)(y, deterministic)
        y = nn.Dropout(rate=self.dropout)(y, deterministic)
        return x + y


class _ScanBlock(Encoder1DBlock):
    """The same block with a (carry, None) signature for `nn.scan`."""

    @nn.compact
    def __call__(self, x, deterministic: bool = True):  # type: ignore[override]
        return super().__call__(x, deterministic), None


class Encoder(nn.Module):
    """A stack of blocks, unrolled (`encoderblock_{i}`) or scanned (`encoderblock`, leading depth axis)."""

    depth: int
    mlp_dim: int | None = None
    num_heads: int = 12
    dropout: float = 0.0
    scan: bool = False
    remat_policy: str = "nothing_saveable"
    dtype_mm: str = "float32"
    gelu: str = "tanh"
    attention: str = "auto"

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        kw = dict(mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout=self.dropout, dtype_mm=self.dtype_mm,
                  gelu=self.gelu, attention=self.attention)
        if self.scan:
            # Remat keeps activation memory flat in depth when fine-tuning large variants;
            # it changes nothing in the forward values or the parameter tree.
            block = nn.remat(_ScanBlock, prevent_cse=False, static_argnums=(2,),
                             policy=getattr(jax.checkpoint_policies, self.remat_policy, None))
            x, _ = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                           in_axes=nn.broadcast, length=self.depth)(name="encoderblock", **kw)(x, deterministic)
        else:
            for i in range(self.depth):
                x = Encoder1DBlock(name=f"encoderblock_{i}", **kw)(x, deterministic)
        return nn.LayerNorm(epsilon=1e-6, name="encoder_norm")(x)


class MAPHead(nn.Module):
    """Multihead attention pooling: one learned probe attends over the tokens."""

    mlp_dim: int | None = None
    num_heads: int = 12
    gelu: str = "tanh"  # the encoder's own activation (timm's attn_pool uses the blocks' act_layer)

    @nn.compact
    def __call__(self, x):
        n, _, d = x.shape
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d), x.dtype)
        probe = jnp.tile(probe, [n, 1, 1])
        x = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform())(probe, x)
        y = nn.LayerNorm(epsilon=1e-6)(x)
        x = x + MlpBlock(mlp_dim=self.mlp_dim, gelu=self.gelu)(y)
        return x[:, 0]


class ViT(nn.Module):
    """Vision transformer returning `(output, out)` where `out` holds every named representation.

    `out` keys: stem, encoded (every token after the final LayerNorm, a `tok` model's class token first, as
    big_vision's), pre_logits_2d (the patch tokens as a grid), pre_logits (the token sequence when
    pool_type == "none"), logits and logits_2d (when num_classes is set).
    """

    num_classes: int | None = None
    patch_size: Sequence[int] = (16, 16)
    width: int = 768
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 12
    posemb: str = "learn"
    rep_size: int | bool = False
    dropout: float = 0.0
    pool_type: str = "gap"
    head_zeroinit: bool = True
    scan: bool = False
    remat_policy: str = "nothing_saveable"
    dtype_mm: str = "float32"
    gelu: str = "tanh"
    attention: str = "auto"  # how the blocks compute attention (ATTENTION_IMPLS); no parameter depends on it

    @nn.compact
    def __call__(self, image, *, train: bool = False):
        out = {}
        image = jnp.asarray(image, self.dtype_mm)
        x = out["stem"] = nn.Conv(self.width, tuple(self.patch_size), strides=tuple(self.patch_size),
                                  padding="VALID", name="embedding", dtype=self.dtype_mm)(image)
        n, h, w, c = x.shape
        x = jnp.reshape(x, [n, h * w, c])

        # The posemb is added before the cls token is prepended (the cls token has no position).
        if self.posemb == "learn":
            pe = self.param("pos_embedding", nn.initializers.normal(stddev=1 / np.sqrt(c)), (1, h * w, c), x.dtype)
        elif self.posemb == "sincos2d":
            pe = posemb_sincos_2d(h, w, c, dtype=x.dtype)
        else:
            raise ValueError(f"unknown posemb {self.posemb!r}; expected one of {POSEMB_TYPES}")
        x = x + pe

        if self.pool_type == "tok":
            cls = self.param("cls", nn.initializers.zeros, (1, 1, c), x.dtype)
            x = jnp.concatenate([jnp.tile(cls, [n, 1, 1]), x], axis=1)

        x = nn.Dropout(rate=self.dropout)(x, not train)
        x = Encoder(depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout=self.dropout,
                    scan=self.scan, remat_policy=self.remat_policy, dtype_mm=self.dtype_mm, gelu=self.gelu,
                    attention=self.attention, name="Transformer")(x, deterministic=not train)
        encoded = out["encoded"] = x

        if self.pool_type == "map":
            x = MAPHead(num_heads=self.num_heads, mlp_dim=self.mlp_dim, gelu=self.gelu)(x)
        elif self.pool_type == "gap":
            x = jnp.mean(x, axis=1)
        elif self.pool_type == "0":
            x = x[:, 0]
        elif self.pool_type == "tok":
            # big_vision models/vit.py: `out["encoded"]` keeps the class token; only the 2-D map drops it.
            x = x[:, 0]
            encoded = encoded[:, 1:]
        elif self.pool_type == "none":
            pass  # as in big_vision: "pre_logits" is then the token sequence itself
        else:
            raise ValueError(f"unknown pool_type {self.pool_type!r}; expected one of {POOL_TYPES}")

        x_2d = jnp.reshape(encoded, [n, h, w, -1])
        if self.rep_size:
            rep_size = self.width if self.rep_size is True else self.rep_size
            hid = nn.Dense(rep_size, name="pre_logits")
            x_2d = nn.tanh(hid(x_2d))
            x = nn.tanh(hid(x))
        out["pre_logits_2d"] = x_2d
        out["pre_logits"] = x

        if self.num_classes:
            kw = {"kernel_init": nn.initializers.zeros} if self.head_zeroinit else {}
            head = nn.Dense(self.num_classes, name="head", **kw)
            out["logits_2d"] = head(x_2d)
            x = out["logits"] = head(x)
        return x, out
