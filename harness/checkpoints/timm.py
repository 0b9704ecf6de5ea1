"""timm checkpoints (safetensors only): a `VisionTransformer` state dict (`patch_embed.proj.weight`,
`blocks.{i}.attn.qkv.weight`, ...) in a folder laid out as the Hugging Face hub keeps timm models
(`config.json` with `architecture`, optionally `model_args` and `pretrained_cfg`, next to
`model.safetensors`), or a bare `.safetensors` file: then a `config.json` beside it, or the file name
`<architecture>[.<tag>].safetensors`, names the architecture. Converted by name into big_vision's tree
(`timm_to_bv`, which open_clip's timm trunks go through too); the pieces both formats share are
`harness.checkpoints.torch_common`.

A fused `qkv` hides the number of heads, and no tensor tells the MLP activation, the pooling or the
LayerNorm eps: those come from `TIMM_VIT`, our table of timm's own architecture definitions
(`harness.checkpoints.timm_arch`), overridden by `model_args` where the file states them. Whatever the
harness's ViT cannot compute exactly (layer scale, register tokens, ln_pre, fc_norm, QuickGELU, ...) is
refused with one line naming it, never loaded approximately.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from harness.checkpoints.safetensors_io import load_safetensors
from harness.checkpoints.timm_arch import TIMM_VIT, TIMM_VIT_REFUSED
from harness.checkpoints.torch_common import (
    POOL,
    Tensors,
    attention,
    check_image_subtree,
    fold_normalisation,
    hints,
    is_timm_config,
    layernorm,
    linear,
    norm_of,
    read_json,
    refuse,
    unsupported,
    unsupported_feature,
    weights_file,
)
from harness.checkpoints.torch_common import detect as torch_format
from harness.errors import HarnessError
from harness.schema import Doc, describe

# timm's `_cfg` default for these ViTs (IMAGENET_INCEPTION_MEAN/STD), used where the file does not state its
# own input normalisation.
TIMM_DEFAULT_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def arch_facts(arch: str, model_args: Doc | None = None, global_pool: str | None = None, *,
               path="checkpoint") -> dict:
    """{num_heads, gelu, pool}: timm's for `arch` (our table), with what the file's `model_args` and top-level
    `global_pool` (the built model's, as timm's config.json records it) state instead."""
    base = str(arch).split(".")[0]  # "vit_so400m_patch14_siglip_384.webli": architecture.tag
    if base in TIMM_VIT_REFUSED:
        raise refuse(path, f"timm architecture {base}", TIMM_VIT_REFUSED[base])
    if base not in TIMM_VIT:
        raise HarnessError(f"checkpoint {path}: timm architecture {base!r} is not in the harness's table of timm "
                           f"ViTs ({len(TIMM_VIT)} from timm's vision_transformer.py, in harness/checkpoints/timm_arch.py); "
                           "only those whose forward the harness computes exactly load")
    heads, gelu, pool = TIMM_VIT[base]
    for k, _ in (model_args.items() if model_args is not None else ()):
        if k == "num_heads":
            heads = model_args.int(k, min=1)
        elif k == "global_pool":
            pool = model_args.str(k)
        elif k == "act_layer":
            # timm/layers/create_act.py: "gelu" is nn.GELU (exact), "gelu_tanh" is GELUTanh.
            v = model_args.str(k)
            if v not in ("gelu", "gelu_tanh"):
                raise refuse(path, f"timm model {base}", f"act_layer={v!r}")
            gelu = "exact" if v == "gelu" else "tanh"
        elif k == "pool_include_prefix" and model_args.bool(k):
            raise refuse(path, f"timm model {base}", "pooling over the prefix tokens (pool_include_prefix)")
        elif k == "in_chans" and (v := model_args.int(k, min=1)) != 3:
            raise HarnessError(f"checkpoint {path}: timm model {base} takes {v} input channels; the harness "
                               "feeds RGB images (3)")
        elif k == "pos_embed" and (v := model_args.str(k)) != "learn":
            raise refuse(path, f"timm model {base}", f"pos_embed={v!r} (no learned position embedding)")
        elif k not in _TREE_ARGS and k != "in_chans":
            raise HarnessError(f"checkpoint {path}: timm model_args {k}={describe(model_args.raw(k))} is not one "
                               "the harness knows the effect of; refused rather than loaded approximately")
    if global_pool is not None:
        pool = global_pool
    if pool not in POOL:
        raise refuse(path, f"timm model {base}", f"global_pool={pool!r}")
    return {"num_heads": int(heads), "gelu": gelu, "pool": pool}


# model_args whose effect the tensors show (shapes, or tensors that exist only with them and are refused by
# name when present), or that change only the initialisation / resizing, not the forward at the native size.
_TREE_ARGS = {"img_size", "patch_size", "embed_dim", "depth", "mlp_ratio", "num_classes", "class_token",
              "no_embed_class", "reg_tokens", "init_values", "pre_norm", "fc_norm", "final_norm", "qkv_bias",
              "proj_bias", "qk_norm", "scale_attn_norm", "scale_mlp_norm", "dynamic_img_size", "dynamic_img_pad",
              "weight_init", "fix_init", "pos_embed", "pool_include_prefix"}


def _mlp(t: Tensors, src: str, dst: str, out: dict):
    for i, fc in enumerate(("fc1", "fc2")):
        out[f"{dst}/Dense_{i}/kernel"], out[f"{dst}/Dense_{i}/bias"] = linear(t, f"{src}.{fc}")


def timm_to_bv(sd: dict, facts: dict, *, prefix: str = "", path="checkpoint", what: str = "timm model") -> dict:
    """A timm VisionTransformer state dict (torch layout) -> big_vision's ViT tree (`models/vit.py`).

    Conversion rules, from timm's `vision_transformer.py` (`VisionTransformer`, `Block`) and
    `layers/attention.py` / `layers/attention_pool.py` (`Attention`, `AttentionPoolLatent`):
    - `patch_embed.proj` (OIHW) -> `embedding` (HWIO).
    - `pos_embed`: timm adds it after prepending the class token unless `no_embed_class`; then it has one
      row more than the grid, and that row only ever meets the class token, so it is added to `cls`
      (exact) and the rest is big_vision's `pos_embedding` (which, like `no_embed_class`, skips the cls).
    - `blocks.{i}.attn.qkv` (3D, D) rows are [q; k; v], each head-major (timm reshapes to (3, H, D/H)):
      split into query/key/value (D, H, D/H); `attn.proj` -> `out` (H, D/H, D); `norm1`/`norm2` ->
      `LayerNorm_0/1`; `mlp.fc1/fc2` -> `MlpBlock_0/Dense_0/1`.
    - `norm` -> `Transformer/encoder_norm`; `head` -> `head`.
    - `attn_pool` (big_vision's MAPHead: attention of one latent over the tokens, then x + MLP(LN(x)), with
      the encoder's heads and MLP size): `latent` -> `probe`, `q` -> query, `kv` rows [k; v] -> key/value,
      `proj` -> out, `norm` -> `LayerNorm_0`, `mlp` -> `MlpBlock_0`.
    Any tensor left over names a feature the harness does not compute and refuses the model.
    """
    t = Tensors(sd, prefix, path)
    heads, pool = facts["num_heads"], facts["pool"]
    # A known unsupported feature first, before any shape or layout check could fail on its account.
    if known := [prefix + k for k in t.left() if unsupported_feature(k)]:
        raise unsupported(path, what, known)
    out: dict[str, np.ndarray] = {}
    w = t.take("patch_embed.proj.weight")  # (D, 3, p, p)
    d = int(w.shape[0])
    if w.shape[1] != 3 or w.shape[2] != w.shape[3]:
        raise HarnessError(f"checkpoint {path}: patch embedding of shape {tuple(w.shape)}; the harness takes RGB "
                           "images and square patches")
    if d % heads:
        raise HarnessError(f"checkpoint {path}: width {d} is not divisible by {heads} heads (the architecture's); "
                           "set num_heads in the config.json's model_args")
    out["embedding/kernel"] = w.transpose(2, 3, 1, 0)
    b = t.take("patch_embed.proj.bias", required=False)
    out["embedding/bias"] = np.zeros(d, w.dtype) if b is None else b

    cls = t.take("cls_token", required=False)
    if not t.has("pos_embed"):
        raise refuse(path, what, "no learned position embedding (pos_embed)")
    pe = t.take("pos_embed")
    n = int(pe.shape[1])
    if cls is not None and math.isqrt(n - 1) ** 2 == n - 1 and n > 1:
        # float32 at least: a bfloat16 sum would round what timm adds in float32 at run time
        cls = cls.astype(np.promote_types(cls.dtype, np.float32)) + pe[:, :1].astype(np.float32)
        pe = pe[:, 1:]
    elif math.isqrt(n) ** 2 != n:
        raise HarnessError(f"checkpoint {path}: pos_embed has {n} rows, not a square grid"
                           + (" (plus a class-token row)" if cls is not None else "")
                           + "; the harness loads square images only")
    out["pos_embedding"] = pe
    if pool == "token":
        if cls is None:
            raise HarnessError(f"checkpoint {path}: global_pool='token' but no cls_token; the file and its "
                               "config disagree")
        out["cls"] = cls
    elif cls is not None:
        raise refuse(path, what, f"global_pool={pool!r} beside a class token")

    depth = 1 + max((int(m.group(1)) for k in t.left() if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth == 0:
        raise HarnessError(f"checkpoint {path}: no transformer blocks (blocks.0.*); is it a timm ViT?")
    for i in range(depth):
        src, dst = f"blocks.{i}", f"Transformer/encoderblock_{i}"
        layernorm(t, f"{src}.norm1", f"{dst}/LayerNorm_0", out, what)
        qkv_w, qkv_b = linear(t, f"{src}.attn.qkv")  # (D, 3*A), A = heads * head_dim
        if qkv_w.shape != (d, 3 * d):
            raise refuse(path, what, f"attention of width {qkv_w.shape[1] // 3} in a width-{d} model "
                         "(attn_head_dim)")
        attention(out, f"{dst}/MultiHeadDotProductAttention_0",
                  *[(qkv_w[:, j * d:(j + 1) * d], qkv_b[j * d:(j + 1) * d]) for j in range(3)],
                  linear(t, f"{src}.attn.proj"), heads)
        layernorm(t, f"{src}.norm2", f"{dst}/LayerNorm_1", out, what)
        _mlp(t, f"{src}.mlp", f"{dst}/MlpBlock_0", out)
    if not t.has("norm.weight"):
        raise refuse(path, what, "no final LayerNorm before pooling (final_norm=False)")
    layernorm(t, "norm", "Transformer/encoder_norm", out, what)

    if pool == "map":
        if not t.has("attn_pool.latent"):
            raise HarnessError(f"checkpoint {path}: global_pool='map' but no attn_pool.* tensors; the file and "
                               "its config disagree")
        latent = t.take("attn_pool.latent")
        if latent.shape[1] != 1:
            raise refuse(path, what, f"an attention pool with {latent.shape[1]} latents (big_vision's has one)")
        if not t.has("attn_pool.q.weight"):
            raise refuse(path, what, "an attention pool without a query projection (q_proj=False)")
        out["MAPHead_0/probe"] = latent
        kv_w, kv_b = linear(t, "attn_pool.kv")  # (D, 2D): [k | v]
        attention(out, "MAPHead_0/MultiHeadDotProductAttention_0", linear(t, "attn_pool.q"),
                  (kv_w[:, :d], kv_b[:d]), (kv_w[:, d:], kv_b[d:]), linear(t, "attn_pool.proj"), heads)
        layernorm(t, "attn_pool.norm", "MAPHead_0/LayerNorm_0", out, what)
        _mlp(t, "attn_pool.mlp", "MAPHead_0/MlpBlock_0", out)
    elif any(k.startswith("attn_pool.") for k in t.left()):
        raise HarnessError(f"checkpoint {path}: attn_pool.* tensors but global_pool={pool!r}; the file and its "
                           "config disagree")
    if t.has("head.weight"):
        out["head/kernel"], out["head/bias"] = linear(t, "head")
    if t.left():
        raise unsupported(path, what, [prefix + k for k in t.left()])
    return out


def _timm_sources(path: Path) -> tuple[Path, Doc]:
    """(weights file, config.json contents or {"architecture": <from the file name>})."""
    if path.is_dir():
        return weights_file(path, "model.safetensors"), read_json(path / "config.json")
    if is_timm_config(path.parent / "config.json"):
        return path, read_json(path.parent / "config.json")
    name = path.name[: -len(".safetensors")].split(".")[0]
    if name not in TIMM_VIT and name not in TIMM_VIT_REFUSED:
        raise HarnessError(f"checkpoint {path}: a bare timm .safetensors does not say its architecture (heads, "
                           "GELU, pooling): put timm's config.json beside it (timm.models.save_for_hf writes both) "
                           "or name the file <architecture>.safetensors, e.g. vit_base_patch16_siglip_224.safetensors")
    return path, Doc({"architecture": name}, path)


def detect(path: Path) -> bool:
    """Whether `path` is a timm checkpoint (`READERS`' detect)."""
    return torch_format(path) == "timm"


def read_image(path: Path, subtree: str | None) -> tuple[dict, dict]:
    """(flat big_vision tree, config hints) of a timm checkpoint."""
    check_image_subtree(path, "timm", subtree)
    weights, cfg = _timm_sources(path)
    arch = cfg.str("architecture", nonempty=True)
    facts = arch_facts(arch, cfg.obj("model_args", {}, null_is_default=True),
                       cfg.str("global_pool", None, null_is_default=True), path=path)
    for k in ("num_classes", "num_features"):  # what timm's save_config_for_hf records of the built model
        cfg.int(k, 0, min=0, null_is_default=True)
    # Older hub configs are one flat dict (timm `_hub.py::_parse_model_cfg`, "legacy single-dict"): mean/std
    # at the top level.
    norm = norm_of(cfg.obj("pretrained_cfg") if cfg.has("pretrained_cfg") else cfg, TIMM_DEFAULT_NORM)
    sd = load_safetensors(weights)
    flat = timm_to_bv(sd, facts, path=path, what=f"timm model {arch.split('.')[0]}")
    return fold_normalisation(flat, *norm), hints(facts)
