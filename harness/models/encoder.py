"""`load_encoder`: one shared encoder, built from a checkpoint, used by every task.

The config is read off the checkpoint tree wherever the tree determines it (width, depth, MLP size, heads,
patch, pooling, posemb, rep_size, classifier size), so `--ckpt` alone is enough. Explicit keys or a
variant string override and are checked against the tree. Parameters are built abstractly with
`jax.eval_shape` (never a jitted init, which would materialise a second copy of a large model).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import math
import re
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from harness import checkpoints
from harness.data.pp import as_preprocess, naflex_pp
from harness.errors import HarnessError, did_you_mean
from harness.models.naflex import POOL_TYPES as NAFLEX_POOL_TYPES
from harness.models.naflex import NaFlexViT, inputs_from_batch, patchify
from harness.models.variants import Shape, decode_variant, rep_width
from harness.models.vit import ViT
from harness.scale import sharding
from harness.scale.runtime import tune_malloc
from harness.schema import Doc

CONFIG_KEYS = ("variant", "width", "depth", "mlp_dim", "num_heads", "patch_size", "pool_type", "posemb",
               "rep_size", "num_classes", "scan", "dtype_mm", "gelu", "res", "max_num_patches", "nposemb")
# Keys the checkpoint tree can disagree with (the others are free choices of the user).
TREE_KEYS = ("width", "depth", "mlp_dim", "num_heads", "patch_size", "rep_size", "num_classes", "posemb",
             "nposemb")
# A NaFlex encoder (`harness.models.naflex`; a config with `max_num_patches`) sees each image as at most
# `max_num_patches` patches at its own aspect ratio: 256 is the budget of big_vision's SigLIP 2 NaFlex results
# (configs/proj/image_text/README_siglip2.md: "The NaFlex results are for sequence length 256") and of
# transformers' Siglip2ImageProcessor (`max_num_patches = 256`). Its posemb grid defaults to big_vision's
# SigLIP 2 demo (`nposemb=16`).
NAFLEX_MAX_NUM_PATCHES = 256
NAFLEX_NPOSEMB = 16
# gelu: big_vision's tanh approximation; a checkpoint whose architecture uses the exact GELU (timm's SigLIP v1 /
# augreg ViTs, `harness.checkpoints.timm`) states gelu="exact" as a hint.
# dtype_mm: None is `default_dtype_mm()`, the backend's (float32 on CPU, bfloat16 on an accelerator).
DEFAULTS = dict(pool_type="gap", posemb="learn", rep_size=False, num_classes=None, scan=False,
                dtype_mm=None, gelu="tanh")
ACCELERATORS = ("gpu", "tpu")


def default_dtype_mm(backend: str | None = None) -> str:
    """The matmul dtype when none is asked for: big_vision's float32 on a CPU; bfloat16 on a GPU or TPU (the
    matmuls' operands; they accumulate in float32, and LayerNorms, softmax, residual stream, MAP head and the
    features stay float32 as in big_vision's bfloat16 mode). A TPU computes float32 matmuls at its default
    precision in bfloat16 passes anyway; on a GPU bfloat16 gets the tensor cores' dense peak, so the harness
    makes it the default there too (`--set dtype_mm=float32` for big_vision's float32)."""
    backend = backend or jax.default_backend()
    return "bfloat16" if backend in ACCELERATORS else "float32"


# The encoder keys' types and allowed values, (kind, choices or None): how `--set key=value` parses them
# (`harness.run.runner.encoder_value`) and how a harness checkpoint's harness.json must state them
# (`file_config`).
ENCODER_KEY_TYPES = {
    "variant": ("str", None), "width": ("size", None), "depth": ("size", None), "mlp_dim": ("size", None),
    "num_heads": ("size", None), "patch_size": ("size", None), "res": ("size", None),
    "max_num_patches": ("size", None), "nposemb": ("size", None),  # a NaFlex encoder's (SigLIP 2)
    "num_classes": ("size_or_none", None), "rep_size": ("size_or_bool", None), "scan": ("bool", None),
    "pool_type": ("choice", ("gap", "map", "tok", "0", "none", "max")), "posemb": ("choice", ("learn", "sincos2d")),
    "dtype_mm": ("choice", ("float32", "bfloat16")), "gelu": ("choice", ("tanh", "exact")),
}
# Training-only keys an encoder config may carry (a fine-tuned model's).
TRAINING_KEYS = ("head_zeroinit", "dropout", "remat_policy")


# Which axis of which leaf states which dimension (D = width, M = MLP, H = heads), in big_vision's tree
# (`models/vit.py`). Suffixes are matched after a block prefix (`Transformer/encoderblock_{i}/`, the scanned
# `Transformer/encoderblock/`, or `MAPHead_0/`), whose MLP and heads are the encoder's own.
_BLOCK_DIMS: tuple[tuple[str, dict[str, int]], ...] = (
    (r"LayerNorm_\d+/(scale|bias)", {"width": -1}),
    (r"MultiHeadDotProductAttention_0/(query|key|value)/kernel", {"width": 0, "num_heads": 1}),
    (r"MultiHeadDotProductAttention_0/(query|key|value)/bias", {"num_heads": 0}),
    (r"MultiHeadDotProductAttention_0/out/kernel", {"num_heads": 0, "width": 2}),
    (r"MultiHeadDotProductAttention_0/out/bias", {"width": 0}),
    (r"MlpBlock_0/Dense_0/kernel", {"width": 0, "mlp_dim": 1}),
    (r"MlpBlock_0/Dense_0/bias", {"mlp_dim": 0}),
    (r"MlpBlock_0/Dense_1/kernel", {"mlp_dim": 0, "width": 1}),
    (r"MlpBlock_0/Dense_1/bias", {"width": 0}),
)
_TOP_DIMS: dict[str, dict[str, int]] = {
    "embedding/kernel": {"width": 3}, "embedding/bias": {"width": 0}, "pos_embedding": {"width": 2},
    "cls": {"width": 2}, "Transformer/encoder_norm/scale": {"width": 0},
    "Transformer/encoder_norm/bias": {"width": 0}, "MAPHead_0/probe": {"width": 2},
    "pre_logits/kernel": {"width": 0},
}


def _dimension_votes(flat: dict[str, np.ndarray]) -> dict[str, list[tuple[int, str]]]:
    """Every (value, leaf) that states the width, MLP size, heads or (scanned) depth of a tree."""
    votes: dict[str, list[tuple[int, str]]] = {"width": [], "mlp_dim": [], "num_heads": [], "depth": []}

    def add(key: str, arr, dims: dict[str, int], lead: int):
        shape = np.shape(arr)
        for dim, axis in dims.items():
            ax = axis if axis < 0 else axis + lead
            if -len(shape) <= ax < len(shape):
                votes[dim].append((int(shape[ax]), key))
        if lead:
            votes["depth"].append((int(shape[0]), key))

    for key, arr in flat.items():
        if key in _TOP_DIMS:
            add(key, arr, _TOP_DIMS[key], 0)
            continue
        m = re.match(r"^(Transformer/encoderblock_\d+/|Transformer/encoderblock/|MAPHead_0/)(.+)$", key)
        if m:
            for pattern, dims in _BLOCK_DIMS:
                if re.fullmatch(pattern, m.group(2)):
                    add(key, arr, dims, 1 if m.group(1) == "Transformer/encoderblock/" else 0)
                    break
    return votes


def _majority(votes: list[tuple[int, str]]) -> int | None:
    # The value most leaves agree on: one corrupt leaf then disagrees with the model built from the rest
    # and is reported by name (`fit_params`), instead of moving every other leaf's expected shape.
    if not votes:
        return None
    return collections.Counter(v for v, _ in votes).most_common(1)[0][0]


# The leaves whose shape `infer_config` reads a dimension of, with the rank they must have.
_RANKS = {"embedding/kernel": ((4, 2), "(patch, patch, 3, width), or a NaFlex ViT's (patch*patch*3, width)"),
          "pre_logits/kernel": ((2,), "(width, rep_size)"), "head/kernel": ((2,), "(width, classes)")}


def infer_config(flat: dict[str, np.ndarray], *, path: str = "checkpoint") -> dict:
    """What the parameter tree says about the model (a partial config)."""
    for key, (ranks, layout) in _RANKS.items():
        if key in flat and len(np.shape(flat[key])) not in ranks:
            raise HarnessError(f"checkpoint {path}: {key} has shape {tuple(np.shape(flat[key]))}, not {layout}; the "
                               "file is corrupt or not a ViT: re-export it")
    cfg: dict[str, Any] = {}
    votes = _dimension_votes(flat)
    for dim in ("width", "mlp_dim", "num_heads"):
        if (value := _majority(votes[dim])) is not None:
            cfg[dim] = value
    if "embedding/kernel" in flat:
        k = flat["embedding/kernel"]
        if len(k.shape) == 2:  # NaFlex: a Dense over flattened p x p x 3 patches, a G x G posemb grid
            p = math.isqrt(int(k.shape[0]) // 3)
            if p * p * 3 == int(k.shape[0]):  # else no patch size: one line from `resolve_config`
                cfg["patch_size"] = (p, p)
            if "pos_embedding" in flat and len(flat["pos_embedding"].shape) == 3:
                cfg["nposemb"] = int(flat["pos_embedding"].shape[0])
        else:
            cfg["patch_size"] = (int(k.shape[0]), int(k.shape[1]))
    scanned = checkpoints.is_scanned(flat)
    if scanned:
        if (depth := _majority(votes["depth"])) is not None:
            cfg["depth"] = depth
    else:
        idx = {int(m.group(1)) for k in flat if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))}
        if idx:
            cfg["depth"] = max(idx) + 1
    cfg["scan"] = scanned
    if "MAPHead_0/probe" in flat:
        cfg["pool_type"] = "map"
    elif "cls" in flat:
        cfg["pool_type"] = "tok"
    cfg["posemb"] = "learn" if "pos_embedding" in flat else "sincos2d"
    if "pos_embedding" in flat and "patch_size" in cfg and "nposemb" not in cfg and \
            len(np.shape(flat["pos_embedding"])) == 3:
        n = int(flat["pos_embedding"].shape[1])
        # A count that is not a square is refused by `check_posemb`, against the nearest grid below it (as is
        # a posemb that is not (1, tokens, width)).
        cfg["res"] = max(1, math.isqrt(n)) * cfg["patch_size"][0]
    cfg["rep_size"] = int(flat["pre_logits/kernel"].shape[1]) if "pre_logits/kernel" in flat else False
    cfg["num_classes"] = int(flat["head/kernel"].shape[1]) if "head/kernel" in flat else None
    return cfg


def check_posemb(flat: dict[str, np.ndarray], cfg: dict, *, path: str = "checkpoint") -> None:
    """A learned posemb must be a square grid of tokens (`checkpoints.fix_old_layout` has already folded
    big_vision's old cls row, where the tree has a cls token to fold it into)."""
    pe = flat.get("pos_embedding")
    if pe is None or cfg.get("posemb") != "learn" or is_naflex(cfg):  # a NaFlex grid: checked by its shape
        return
    n = int(pe.shape[1]) if pe.ndim == 3 else -1
    if pe.ndim == 3 and math.isqrt(n) ** 2 == n:
        return
    grid = cfg["res"] // cfg["patch_size"][0]
    want = (1, grid * grid, cfg["width"])
    why = (f"{n} tokens is not a square grid" + ("" if "cls" in flat else
           " (the tree has no cls token, so it is not big_vision's old cls+posemb layout either)")
           if pe.ndim == 3 else "it is not (1, tokens, width)")
    raise HarnessError(f"checkpoint {path}: pos_embedding has shape {tuple(pe.shape)}: {why}; a {cfg['res']} px "
                       f"model wants {want}. The file is corrupt or not a ViT posemb: re-export it")


def _norm_patch(p):
    if p is None:
        return None
    if isinstance(p, (int, np.integer)):
        return (int(p), int(p))
    return tuple(int(x) for x in p)


def _is_size(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def file_config(doc: Doc) -> dict:
    """An encoder config a file states (a harness checkpoint's harness.json `config`), every key checked
    against `ENCODER_KEY_TYPES` in its JSON type; a wrong one is one line naming the file and the field."""
    doc.unknown([*ENCODER_KEY_TYPES, *TRAINING_KEYS], what="encoder key")
    for key, _ in doc.items():
        kind, choices = ENCODER_KEY_TYPES.get(key, (None, None))
        if key == "patch_size":
            doc.check(key, lambda v: _is_size(v) or (isinstance(v, list) and len(v) == 2 and all(map(_is_size, v))),
                      "a positive integer or a list of two")
        elif kind == "size":
            doc.int(key, min=1)
        elif kind == "size_or_none":
            doc.check(key, lambda v: v is None or _is_size(v), "a positive integer or null")
        elif kind == "size_or_bool":
            doc.check(key, lambda v: isinstance(v, bool) or _is_size(v), "a positive integer, true or false")
        elif kind == "bool" or key == "head_zeroinit":
            doc.bool(key)
        elif kind == "choice":
            doc.str(key, choices=choices)
        elif key == "dropout":
            doc.check(key, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
                      "a number in [0, 1)")
        else:  # variant, remat_policy
            doc.str(key)
    if "variant" in doc.value:
        decode_variant(doc.value["variant"])
    return dict(doc.value)


def resolve_config(tree_cfg: dict, hints: dict, user: dict, *, path: str = "checkpoint") -> dict:
    """Merges, in increasing priority: defaults, checkpoint hints, the tree, the variant, explicit keys.
    Explicit keys that contradict the tree are an error (the weights could not be loaded)."""
    unknown = set(user) - set(CONFIG_KEYS) - {"head_zeroinit", "dropout", "remat_policy"}
    if unknown:
        bad = sorted(unknown)[0]
        raise HarnessError(f"unknown encoder config key {bad!r}{did_you_mean(bad, CONFIG_KEYS)}; "
                           f"known: {', '.join(CONFIG_KEYS)}")
    explicit = {k: v for k, v in user.items() if v is not None and k != "variant"}
    if user.get("variant"):
        explicit = {**decode_variant(user["variant"]), **explicit}
    if "patch_size" in explicit:
        explicit["patch_size"] = _norm_patch(explicit["patch_size"])
    cfg = {**DEFAULTS, **hints, **tree_cfg}
    cfg.pop("variant", None)
    if "patch_size" in cfg:
        cfg["patch_size"] = _norm_patch(cfg["patch_size"])
    width = explicit.get("width", cfg.get("width"))
    for k, v in explicit.items():
        have = tree_cfg.get(k)
        if k == "rep_size" and width is not None:
            # `rep_size=True` is a pre_logits layer as wide as the encoder: the same as the tree's int.
            v, have = rep_width(v, width) or False, rep_width(have, width) or False
        # An explicit `patch_size` key (not a variant's patch) evaluates the checkpoint at another patch size:
        # FlexiViT's resize of the patch embedding (`load_encoder`).
        flexi = k == "patch_size" and user.get("patch_size") is not None
        if k in TREE_KEYS and k in tree_cfg and have != v and not flexi:
            raise HarnessError(f"{path}: {k}={v} was asked for but the checkpoint has {k}={have}; "
                               + ("to evaluate it at another patch size, --set patch_size=N; "
                                  if k == "patch_size" else "") + "drop the flag or pick the matching checkpoint")
        if k == "gelu" and hints.get("gelu", v) != v:  # the file's architecture states it, as the tree would
            raise HarnessError(f"{path}: gelu={v} was asked for but the checkpoint's architecture uses "
                               f"gelu={hints['gelu']}; drop the flag")
        cfg[k] = v
    missing = [k for k in ("width", "depth", "mlp_dim", "num_heads", "patch_size") if k not in cfg]
    if missing:
        raise HarnessError(f"{path}: cannot tell {', '.join(missing)} from the checkpoint; pass --variant "
                           "(e.g. So400m/14) or --set key=value")
    if "nposemb" in tree_cfg or cfg.get("max_num_patches") is not None or "nposemb" in explicit:
        _resolve_naflex(cfg, tree_cfg, explicit, path)
    elif cfg.get("pool_type") not in ("gap", "map", "tok", "0", "none"):
        raise HarnessError(f"pool_type {cfg.get('pool_type')!r} is not one of gap, map, tok, 0, none")
    if cfg.get("posemb") not in ("learn", "sincos2d"):
        raise HarnessError(f"posemb {cfg.get('posemb')!r} is not one of learn, sincos2d")
    if cfg.get("gelu") not in ("tanh", "exact"):
        raise HarnessError(f"gelu {cfg.get('gelu')!r} is not one of tanh (big_vision), exact")
    if cfg.get("dtype_mm") is None:
        cfg["dtype_mm"] = default_dtype_mm()
    if cfg.get("dtype_mm") not in ("float32", "bfloat16"):
        raise HarnessError(f"dtype_mm {cfg.get('dtype_mm')!r} is not one of float32, bfloat16")
    if cfg["width"] % cfg["num_heads"]:
        raise HarnessError(f"width {cfg['width']} is not divisible by num_heads {cfg['num_heads']}")
    cfg.setdefault("res", 224)
    if cfg["res"] % cfg["patch_size"][0]:
        raise HarnessError(f"resolution {cfg['res']} is not a multiple of the patch size {cfg['patch_size'][0]}")
    cfg["scan"] = bool(cfg["scan"])
    cfg["rep_size"] = rep_width(cfg.get("rep_size"), cfg["width"]) or False  # one spelling in records and keys
    return cfg


def is_naflex(cfg: dict) -> bool:
    """Whether an encoder config is a NaFlex encoder's (`harness.models.naflex`)."""
    return cfg.get("max_num_patches") is not None


def _resolve_naflex(cfg: dict, tree_cfg: dict, explicit: dict, path: str) -> None:
    """The NaFlex keys of `resolve_config`: the patch budget (default 256), the posemb grid, and `res`, which
    is not a setting but the side of a square image of `max_num_patches` patches (for the shape's GFLOPs)."""
    if "patch_size" in tree_cfg and "nposemb" not in tree_cfg:
        raise HarnessError(f"{path}: max_num_patches is a NaFlex encoder's setting (SigLIP 2 NaFlex), but this "
                           "checkpoint is a fixed-resolution ViT (a convolutional patch embedding); drop it and "
                           "choose the resolution with --res")
    if "res" in explicit:
        raise HarnessError(f"{path}: a NaFlex encoder has no fixed resolution (each image keeps its aspect ratio "
                           "at up to max_num_patches patches); drop --res and pass --set max_num_patches=N")
    if "patch_size" in tree_cfg and tuple(cfg["patch_size"]) != tuple(tree_cfg["patch_size"]):
        raise HarnessError(f"{path}: patch_size={cfg['patch_size'][0]} was asked for, but a NaFlex encoder is "
                           f"evaluated at its own patch size {tree_cfg['patch_size'][0]}; drop the setting")
    n = cfg.setdefault("max_num_patches", NAFLEX_MAX_NUM_PATCHES)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise HarnessError(f"max_num_patches must be a positive int; got {n!r}")
    cfg["max_num_patches"] = int(n)
    cfg.setdefault("nposemb", NAFLEX_NPOSEMB)
    if cfg.get("pool_type") not in NAFLEX_POOL_TYPES:
        raise HarnessError(f"pool_type {cfg.get('pool_type')!r} is not one of a NaFlex encoder's: "
                           f"{', '.join(NAFLEX_POOL_TYPES)}")
    if cfg.get("posemb") != "learn":
        raise HarnessError(f"posemb {cfg.get('posemb')!r}: a NaFlex encoder has a learned posemb grid (learn)")
    cfg["res"] = cfg["patch_size"][0] * max(1, math.isqrt(cfg["max_num_patches"]))


def build_model(cfg: dict):
    if is_naflex(cfg):
        kw = {k: cfg[k] for k in ("width", "depth", "mlp_dim", "num_heads", "pool_type", "nposemb", "rep_size",
                                  "num_classes", "scan", "dtype_mm", "gelu", "head_zeroinit") if k in cfg}
        return NaFlexViT(patch_size=tuple(cfg["patch_size"]), **kw)
    kw = {k: cfg[k] for k in ("width", "depth", "mlp_dim", "num_heads", "pool_type", "posemb", "rep_size",
                              "num_classes", "scan", "dtype_mm", "gelu") if k in cfg}
    kw["patch_size"] = tuple(cfg["patch_size"])
    for k in ("head_zeroinit", "dropout", "remat_policy"):
        if k in cfg:
            kw[k] = cfg[k]
    return ViT(**kw)


def abstract_tree(model, *inputs) -> dict[str, Any]:
    """A flax model's parameter shapes and dtypes for `inputs` (arrays or `jax.ShapeDtypeStruct`s), without
    allocating them (flat "/" keys): `jax.eval_shape`, never a jitted init, which would materialise a
    second copy of a large model. The image encoder's and the text tower's alike."""
    shapes = jax.eval_shape(lambda *xs: model.init(jax.random.PRNGKey(0), *xs), *inputs)
    return checkpoints.flatten(shapes["params"])


def abstract_params(model, res: int) -> dict[str, Any]:
    """The image encoder's parameter tree at `res` px (see `abstract_tree`; a NaFlex encoder's does not depend
    on the image)."""
    return abstract_tree(model, example_input(model, res, abstract=True))


def example_input(model, res: int, *, abstract: bool = False):
    """One input the model takes: a [1, res, res, 3] image, or a NaFlex model's one-patch sequence."""
    if isinstance(model, NaFlexViT):
        p = model.patch_size
        shapes = [((1, 1, p[0] * p[1] * 3), jnp.float32)] + [((1, 1), jnp.int32)] * 3
        return tuple(jax.ShapeDtypeStruct(*s) if abstract else jnp.ones(*s) for s in shapes)
    return jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32) if abstract else jnp.zeros((1, res, res, 3))


def _layer_shapes(target: dict) -> dict[str, tuple]:
    """`Transformer/encoderblock_{i}/leaf` -> the per-layer shape the model wants, in either layout."""
    out = {}
    for k, t in target.items():
        if m := re.match(r"^Transformer/encoderblock/(.+)$", k):
            for i in range(t.shape[0]):
                out[f"Transformer/encoderblock_{i}/{m.group(1)}"] = tuple(t.shape[1:])
        else:
            out[k] = tuple(t.shape)
    return out


def _wrong_shape(path, key: str, have: tuple, want: tuple) -> HarnessError:
    return HarnessError(f"checkpoint {path}: wrong shape at {key}: checkpoint {have} vs model {want}; the "
                        "leaf is corrupt, or the variant flags do not fit this checkpoint")


def check_finite(key: str, array: np.ndarray, *, path="checkpoint") -> None:
    """Refuses a leaf holding NaN or Inf: every later number would be garbage (or a solver's traceback)."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise HarnessError(f"checkpoint {path}: {key} holds {bad} non-finite value{'s' * (bad > 1)} (NaN or Inf) "
                           "of " + f"{array.size}; the file is corrupt or saved from a diverged run: use a healthy one")


def fit_params(flat: dict, target: dict, *, path: str = "checkpoint") -> dict:
    """Checks every key and shape against the model (each block leaf in the checkpoint's own layout, so a
    wrong leaf is named as the file names it), converts layouts, resamples the posemb, and refuses
    non-finite values."""
    layer_shapes = _layer_shapes(target)
    for k, a in flat.items():
        if k == "pos_embedding":  # resampled below
            continue
        if m := re.match(r"^Transformer/encoderblock/(.+)$", k):
            want_layers = [layer_shapes.get(f"Transformer/encoderblock_{i}/{m.group(1)}")
                           for i in range(np.shape(a)[0])]
            if want_layers and None not in want_layers and tuple(np.shape(a)[1:]) != want_layers[0]:
                raise _wrong_shape(path, k, tuple(np.shape(a)), (len(want_layers), *want_layers[0]))
        elif k in layer_shapes and tuple(np.shape(a)) != layer_shapes[k]:
            raise _wrong_shape(path, k, tuple(np.shape(a)), layer_shapes[k])
    flat = checkpoints.to_layout(flat, checkpoints.is_scanned(target))
    if "pos_embedding" in flat and "pos_embedding" in target and target["pos_embedding"].shape[0] == 1:
        flat["pos_embedding"] = checkpoints.resample_posemb(flat["pos_embedding"], target["pos_embedding"].shape[1])
    missing = sorted(set(target) - set(flat))
    extra = sorted(set(flat) - set(target))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:4]}" + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""))
        if extra:
            parts.append(f"unexpected keys {extra[:4]}" + (f" (+{len(extra) - 4} more)" if len(extra) > 4 else ""))
        raise HarnessError(f"checkpoint {path}: does not match the model: {'; '.join(parts)}; check the variant, "
                           "pool_type and rep_size (or pick a sub-tree with 'file.npz:img')")
    out = {}
    for k, t in target.items():
        a = np.asarray(flat.pop(k))  # pop: never hold two full copies of a large model
        if tuple(a.shape) != tuple(t.shape):
            raise _wrong_shape(path, k, tuple(a.shape), tuple(t.shape))
        if not np.issubdtype(a.dtype, np.floating) and a.dtype.name != "bfloat16":
            raise HarnessError(f"checkpoint {path}: {k} has non-float dtype {a.dtype}")
        out[k] = a.astype(t.dtype, copy=False)
        check_finite(k, out[k], path=path)
    return out


class DeviceBatch(NamedTuple):
    """Images on the device(s) (`Encoder.put`); `rows`: the real rows (a mesh pads the batch); the pixel
    table that maps uint8 images to the model's input, if they are uint8."""

    images: Any
    rows: int
    pixel_table: np.ndarray | None = None


class Pending(NamedTuple):
    """A dispatched forward pass (`Encoder.dispatch`): device outputs not yet waited for."""

    out: dict
    rows: int


@dataclasses.dataclass
class Encoder:
    """A loaded encoder: flax model + params + config, with a jitted `features`. `checkpoint`: the handle it
    was read from (None for a random or in-memory encoder), whose text tower a two-tower task reads."""

    model: Any
    params: dict
    config: dict
    spec: str | None
    sha256: str | None
    load_seconds: float = 0.0
    checkpoint: checkpoints.Checkpoint | None = None
    subtree: str | None = None  # the checkpoint's sub-tree the weights came from (`img` of a two-tower file)
    step: int | None = None  # a big_vision tensorstore checkpoint's training step
    # What loading changed from the checkpoint's own shape (e.g. {"patch_size": [14, 14]} for a FlexiViT resize).
    resampled_from: dict = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def identity(self) -> str:
        """What this encoder's weights are, for cache keys: the checkpoint content's sha256 and sub-tree, or,
        for an encoder not read from a checkpoint (random init, fine-tuned in memory), a digest of its
        parameters' bytes. Never a path: the same content anywhere is the same encoder."""
        if self.sha256:
            return f"sha256:{self.sha256}" + (f":{self.subtree}" if self.subtree else "")
        h = hashlib.sha256()
        for k, v in sorted(checkpoints.flatten(self.params).items()):
            a = np.asarray(jax.device_get(v))
            h.update(f"{k}:{a.dtype.name}:{a.shape}".encode())
            h.update(np.ascontiguousarray(a).view(np.uint8).tobytes())
        return f"params:{h.hexdigest()}"

    @property
    def res(self) -> int:
        return int(self.config["res"])

    @property
    def shape(self) -> Shape:
        c = self.config
        return Shape(width=c["width"], depth=c["depth"], mlp_dim=c["mlp_dim"], num_heads=c["num_heads"],
                     patch=c["patch_size"][0], pool_type=c["pool_type"], posemb=c["posemb"],
                     rep_size=rep_width(c["rep_size"], c["width"]), num_classes=int(c["num_classes"] or 0))

    @property
    def outputs(self) -> tuple[str, ...]:
        if self.naflex:  # a variable patch grid: no 2-D maps
            return ("stem", "encoded", "pre_logits") + (("logits",) if self.config.get("num_classes") else ())
        out = ["stem", "encoded", "pre_logits_2d", "pre_logits"]
        if self.config.get("num_classes"):
            out += ["logits", "logits_2d"]
        return tuple(out)

    @property
    def naflex(self) -> bool:
        """A NaFlex encoder: images as patch sequences at their own aspect ratio (`harness.models.naflex`)."""
        return is_naflex(self.config)

    def image_pp(self, pp: str) -> str:
        """The pp this encoder reads a task's images with: `pp` itself, or, for a NaFlex encoder, big_vision's
        NaFlex pp (`harness.data.pp.naflex_pp`) in place of a task's resize / crop eval pp. A pp that already
        patchifies is kept; one with other ops (random crops, flips) cannot feed a NaFlex encoder."""
        if not self.naflex:
            return pp
        ops = as_preprocess(pp).ops
        if any(op.name == "patchify" for op in ops):
            return pp
        odd = [op.text for op in ops if op.name not in ("decode", "resize", "resize_small", "resize_long",
                                                        "central_crop", "value_range")]
        if odd:
            raise HarnessError(f"pp '{pp}' has {odd[0]}, which a NaFlex encoder cannot take (it resizes every "
                               "image to its patch budget itself); give an eval pp, or a NaFlex pp ending in "
                               "patchify(...) and pad_to_shape(...)")
        decode = next((op.text for op in ops if op.name == "decode"), "decode")
        return naflex_pp(self.config["patch_size"][0], self.config["max_num_patches"], decode=decode)

    def images_of(self, batch) -> Any:
        """The encoder's input from a pipeline batch: `batch["image"]`, or a NaFlex encoder's patch tuple."""
        return inputs_from_batch(batch) if self.naflex else batch["image"]

    def describe(self) -> dict:
        """The JSON-able identity of this encoder, for result records: the checkpoint (spec, content sha256,
        format, sub-tree, step) and the config."""
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.items()}
        out = {"spec": self.spec, "sha256": self.sha256}
        if self.checkpoint is not None:
            out.update(format=self.checkpoint.format, subtree=self.subtree)
            if self.step is not None:
                out["step"] = self.step
            if self.resampled_from:
                out["resampled_from"] = self.resampled_from
        return {**out, "config": cfg, "params_m": round(self.shape.num_params(self.res) / 1e6, 3),
                "gflops": round(self.shape.gflops(self.res), 3)}

    @functools.cached_property
    def _apply(self):
        def apply(params, images, names, pixel_table):
            if pixel_table is not None:  # uint8 pixels -> the model's input, by the pp's own values (`put`)
                images = pixel_table[images.astype(jnp.int32), jnp.arange(images.shape[-1])]
            _, out = self.model.apply({"params": params}, images)
            return {n: out[n] for n in names}

        # One compilation per batch shape and outputs (and with or without a pixel table). The image buffer is
        # not donated: XLA reuses a donated input only for an output of its shape and dtype, which no encoder
        # output has ("Some donated buffers were not usable"); the extraction drops its reference right after
        # `dispatch` instead, so the batch's device memory is freed once the pass is done with it.
        return jax.jit(apply, static_argnames=("names",))

    def output_names(self, outputs=None) -> tuple[str, ...]:
        names = tuple(outputs or self.outputs)
        bad = [n for n in names if n not in self.outputs]
        if bad:
            raise HarnessError(f"output {bad[0]!r} is not available for this encoder; available: {', '.join(self.outputs)}")
        return names

    def put(self, images, pixel_table=None) -> DeviceBatch:
        """A host batch onto the device(s): the transfer is started, not waited for (jax transfers
        asynchronously). images: [N, H, W, 3] float in [-1, 1] at `self.res`; or uint8 pixels with
        `pixel_table`, [256, 3] float32, row v the model input of pixel value v in each channel (the pp's last
        op, `ValueRange.table`), applied on the device: a quarter of the bytes to move, and the op's values bit
        for bit. With several devices the rows are split over the mesh.
        A NaFlex encoder takes big_vision's tuple (patches, type, yidx, xidx) (`harness.models.naflex`; its pp
        resizes float images, so no pixel table), or [N, H, W, 3] float images that are each read at their own
        patch grid (H and W multiples of the patch)."""
        if self.naflex:
            if pixel_table is not None:
                raise ValueError("a NaFlex encoder takes float patches (its pp resizes after value_range), not a "
                                 "pixel table")
            inputs = self._naflex_inputs(images)
            if sharding.is_sharded():
                placed, rows = sharding.to_mesh(inputs)
                return DeviceBatch(placed, rows)
            return DeviceBatch(jax.device_put(inputs), len(inputs[0]))
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise HarnessError(f"images must be [N, H, W, 3], got shape {images.shape}")
        if pixel_table is not None:
            if images.dtype != np.uint8:
                raise ValueError(f"a pixel table maps uint8 images, got {images.dtype}")
            pixel_table = np.asarray(pixel_table, np.float32)
            if pixel_table.shape != (256, images.shape[-1]):
                raise ValueError(f"a pixel table is [256, {images.shape[-1]}], got {pixel_table.shape}")
        else:
            images = images.astype(np.float32, copy=False)
        if sharding.is_sharded():
            placed, rows = sharding.to_mesh(images)
            return DeviceBatch(placed, rows, pixel_table)
        return DeviceBatch(jax.device_put(images), len(images), pixel_table)

    def dispatch(self, batch: DeviceBatch, outputs=None) -> Pending:
        """Starts the forward pass of a `put` batch and returns at once (jax dispatches asynchronously); the
        outputs start their way to the host as soon as they are computed. `fetch` waits for them."""
        names = self.output_names(outputs)
        params = sharding.placed_params(self.params) if sharding.is_sharded() else self.params
        out = self._apply(params, batch.images, names, batch.pixel_table)
        for v in out.values():
            v.copy_to_host_async()
        return Pending(out, batch.rows)

    def fetch(self, pending: Pending) -> dict[str, np.ndarray]:
        """The outputs of a `dispatch`, as float32 numpy arrays of the batch's rows (waits for them)."""
        if sharding.is_sharded():
            return {k: v.astype(np.float32) for k, v in sharding.from_mesh(pending.out, pending.rows).items()}
        return {k: np.asarray(jax.device_get(v)).astype(np.float32) for k, v in pending.out.items()}

    def features(self, images, outputs: tuple[str, ...] | list[str] | None = None, *,
                 pixel_table=None) -> dict[str, np.ndarray]:
        """images: float array [N, H, W, 3] in [-1, 1] at `self.res` (or uint8 with a `pixel_table`, see
        `put`); returns the named outputs as numpy: `put`, `dispatch` and `fetch` in one call."""
        names = self.output_names(outputs)
        return self.fetch(self.dispatch(self.put(images, pixel_table), names))

    def _naflex_inputs(self, images) -> tuple[np.ndarray, ...]:
        p, n = self.config["patch_size"][0], self.config["max_num_patches"]
        if isinstance(images, dict):
            images = tuple(images[k] for k in ("patches", "type", "yidx", "xidx"))
        if isinstance(images, (tuple, list)) and len(images) == 4:
            patches, ptype, yidx, xidx = (np.asarray(a) for a in images)
            if patches.ndim != 3 or patches.shape[-1] != p * p * 3 or any(
                    a.shape != patches.shape[:2] for a in (ptype, yidx, xidx)):
                raise HarnessError(f"NaFlex inputs must be patches [N, L, {p * p * 3}] and type, yidx, xidx [N, L]; "
                                   f"got {[np.shape(a) for a in images]}")
            return (patches.astype(np.float32), ptype.astype(np.int32), yidx.astype(np.int32),
                    xidx.astype(np.int32))
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise HarnessError(f"images must be [N, H, W, 3] or NaFlex (patches, type, yidx, xidx), got shape "
                               f"{images.shape}")
        try:
            return patchify(images, p, n)
        except ValueError as e:
            raise HarnessError(f"{e}: give images whose sides are multiples of {p} px, or NaFlex inputs from its "
                               "pp (harness.data.pp.naflex_pp)") from None

    def save(self, path: str, fmt: str = "npz") -> str:
        if fmt == "npz":
            return str(checkpoints.save_npz(path, self.params_numpy()))
        return str(checkpoints.save_harness(path, self.params_numpy(), self.config))

    def params_numpy(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(jax.device_get(v)) for k, v in checkpoints.flatten(self.params).items()}


def random_encoder(seed: int = 0, **config) -> Encoder:
    """A randomly initialised encoder (e.g. the baseline every probe must beat)."""
    cfg = resolve_config({}, {}, config, path="random init")
    model = build_model(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), example_input(model, cfg["res"]))["params"]
    return Encoder(model=model, params=params, config=cfg, spec=f"random:{seed}", sha256=None)


def load_encoder(spec=None, *, sha256: str | None = None, **config) -> Encoder:
    """Loads an encoder from a checkpoint spec (see `harness.checkpoints`) or an open `Checkpoint` handle,
    or random init for `spec="random[:seed]"`. Keyword config uses big_vision's names plus `res`. `sha256`:
    the content digest, when the caller has it already (a spec is then not hashed again)."""
    if spec is None or (isinstance(spec, str) and spec.startswith("random")):
        seed = int(str(spec).split(":", 1)[1]) if spec and ":" in str(spec) else 0
        return random_encoder(seed, **config)
    t0 = time.perf_counter()
    ckpt = checkpoints.open_checkpoint(spec)
    try:
        flat, hints, info = ckpt.read_image()
        if info["format"] == "harness":  # the encoder config as harness.json states it
            hints = file_config(Doc(hints, f"{info['path']}/{checkpoints.HARNESS_META}", "config",
                                    "fix it or save the checkpoint again"))
        tree_cfg = infer_config(flat, path=info["path"])
        cfg = resolve_config(tree_cfg, hints, config, path=info["path"])
        resampled = {}
        if "embedding/kernel" in flat and tuple(tree_cfg["patch_size"]) != tuple(cfg["patch_size"]):
            # FlexiViT (big_vision models/proj/flexi/vit.py): the kernel PI-resized, the posemb to the new grid.
            flat["embedding/kernel"] = checkpoints.resample_patchemb(np.asarray(flat["embedding/kernel"]),
                                                                     cfg["patch_size"])
            resampled["patch_size"] = list(tree_cfg["patch_size"])
        check_posemb(flat, cfg, path=info["path"])
        model = build_model(cfg)
        target = abstract_params(model, cfg["res"])
        flat = fit_params(flat, target, path=info["path"])
        params = {}
        for k in list(flat):  # one leaf at a time, so host memory holds ~one copy of the weights
            params[k] = jnp.asarray(flat.pop(k))
        params = checkpoints.unflatten(params)
        sha = sha256 or ckpt.sha256
    finally:
        if ckpt is not spec:  # opened here: closed now (a later read opens it again, checking it is unchanged)
            ckpt.close()
    jax.block_until_ready(params)
    # After loading (whose big temporaries go back to the OS at once), before the forward passes.
    tune_malloc()
    return Encoder(model=model, params=params, config=cfg, spec=ckpt.spec, sha256=sha,
                   load_seconds=time.perf_counter() - t0, checkpoint=ckpt, subtree=info["subtree"],
                   step=info["step"], resampled_from=resampled)
