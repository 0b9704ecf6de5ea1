"""Named ViT shapes, and their parameter and FLOP counts, without importing jax.

Variant strings are big_vision's ("B/16", "So400m/14", ...) plus "So150m", the paper's SoViT-150m/14
(width 880, depth 18, MLP 2320, 16 heads), which big_vision does not name.
"""

from __future__ import annotations

import dataclasses
import fnmatch

from harness.errors import HarnessError, did_you_mean

# name: (width, depth, mlp_dim, num_heads). Reference: Table 2 of arXiv 2106.04560 and the SoViT paper.
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So150m": (880, 18, 2320, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
}

# Patch sizes listed by `harness ls models` (any patch works when given explicitly).
LISTED_PATCHES = {"Ti": (16,), "S": (16,), "M": (16,), "B": (16, 32), "L": (16,), "So150m": (14,),
                  "So400m": (14,), "H": (14,), "g": (14,), "G": (14,), "e": (14,)}


def decode_variant(variant: str) -> dict:
    """"So400m/14" -> {"width": 1152, "depth": 27, "mlp_dim": 4304, "num_heads": 16, "patch_size": (14, 14)}."""
    name, _, patch = variant.partition("/")
    if name not in SHAPES:
        raise HarnessError(f"unknown variant {variant!r}{did_you_mean(name, SHAPES, cutoff=0.3)}; known: {', '.join(SHAPES)} (e.g. 'So400m/14')")
    width, depth, mlp_dim, num_heads = SHAPES[name]
    out = dict(width=width, depth=depth, mlp_dim=mlp_dim, num_heads=num_heads)
    if patch:
        if not patch.isdigit() or int(patch) < 1:
            raise HarnessError(f"bad patch size in variant {variant!r}; write it like 'B/16'")
        out["patch_size"] = (int(patch), int(patch))
    return out


def rep_width(rep_size: int | bool | None, width: int) -> int:
    """The width of the `pre_logits` layer: big_vision's `rep_size=True` is one as wide as the encoder,
    an int is that size, False / 0 / None is none (0) (`models/vit.py`, `_Model.rep_size`)."""
    if rep_size is True:
        return int(width)
    return int(rep_size or 0)


@dataclasses.dataclass(frozen=True)
class Shape:
    """Everything that determines the parameter count and FLOPs of an encoder."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch: int
    pool_type: str = "map"
    posemb: str = "learn"
    rep_size: int = 0  # True (big_vision: as wide as the encoder) is stored as the width
    num_classes: int = 0

    def __post_init__(self):
        object.__setattr__(self, "rep_size", rep_width(self.rep_size, self.width))

    def tokens(self, res: int) -> int:
        return (res // self.patch) ** 2

    def num_params(self, res: int = 224) -> int:
        d, m = self.width, self.mlp_dim
        attn = 4 * (d * d + d)
        mlp = d * m + m + m * d + d
        block = 2 * (2 * d) + attn + mlp
        n = self.patch * self.patch * 3 * d + d  # embedding conv
        n += self.tokens(res) * d if self.posemb == "learn" else 0
        n += d if self.pool_type == "tok" else 0
        n += self.depth * block + 2 * d  # blocks + encoder_norm
        if self.pool_type == "map":
            n += d + attn + 2 * d + mlp  # probe, attention, LayerNorm, MLP
        rep = self.rep_size or d
        if self.rep_size:
            n += d * rep + rep
        if self.num_classes:
            n += rep * self.num_classes + self.num_classes
        return n

    def gflops(self, res: int = 224) -> float:
        """FLOPs = 2 x multiply-adds (XLA's convention, as in the paper), in units of 1e9."""
        d, m, t = self.width, self.mlp_dim, self.tokens(res)
        t_all = t + (1 if self.pool_type == "tok" else 0)
        f = 2 * t * self.patch * self.patch * 3 * d
        f += self.depth * (8 * t_all * d * d + 4 * t_all * t_all * d + 4 * t_all * d * m)
        if self.pool_type == "map":
            # One query: q and out projections on 1 token, k/v projections on all tokens,
            # scores and weighted sum, then the MLP on 1 token.
            f += 2 * 2 * d * d + 2 * 2 * t * d * d + 2 * 2 * t * d + 4 * d * m
        rep = self.rep_size or d
        if self.rep_size:
            f += 2 * d * rep
        if self.num_classes:
            f += 2 * rep * self.num_classes
        return f / 1e9


def shape_of(variant: str, **overrides) -> Shape:
    v = decode_variant(variant)
    patch = v.pop("patch_size", (16, 16))[0]
    v.update(overrides)
    return Shape(patch=patch, **{k: v[k] for k in ("width", "depth", "mlp_dim", "num_heads")},
                 **{k: v[k] for k in ("pool_type", "posemb", "rep_size", "num_classes") if k in v})


def list_variants(pattern: str = "*") -> list[str]:
    """All listed "name/patch" strings matching a glob, e.g. list_variants("So*")."""
    names = [f"{n}/{p}" for n in SHAPES for p in LISTED_PATCHES[n]]
    return [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]


# The pooling each row of the paper's shape table was counted with: the SoViTs and ViT-G/14 with a MAP
# head (428M, 1882M), the others without a head (ViT-B/16 86M, L/16 303M, H/14 631M, g/14 1011M).
PAPER_POOL = {"So150m": "map", "So400m": "map", "G": "map"}


def model_table(res: int = 224, pattern: str = "*", pool_type: str | None = None) -> list[dict]:
    rows = []
    for name in list_variants(pattern):
        pool = pool_type or PAPER_POOL.get(name.split("/")[0], "gap")
        s = shape_of(name, pool_type=pool)
        rows.append(dict(variant=name, width=s.width, depth=s.depth, mlp_dim=s.mlp_dim, num_heads=s.num_heads,
                         patch=s.patch, pool_type=pool, res=res, params_m=s.num_params(res) / 1e6, gflops=s.gflops(res)))
    return rows
