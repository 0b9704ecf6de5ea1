"""timm and open_clip checkpoints (safetensors only), converted by name into big_vision's tree.

Read with the `safetensors` package into numpy; torch, timm and open_clip are never imported (they are
optional test dependencies) and nothing is unpickled. Two formats:

- **timm**: a `VisionTransformer` state dict (`patch_embed.proj.weight`, `blocks.{i}.attn.qkv.weight`, ...)
  in a folder laid out as the Hugging Face hub keeps timm models (`config.json` with `architecture`,
  optionally `model_args` and `pretrained_cfg`, next to `model.safetensors`), or a bare `.safetensors`
  file: then a `config.json` beside it, or the file name `<architecture>[.<tag>].safetensors`, names the
  architecture.
- **open_clip**: a folder with `open_clip_config.json` (`model_cfg`, `preprocess_cfg`) and
  `open_clip_model.safetensors`, as `open_clip.push_to_hf_hub` writes it (SigLIP: a timm trunk under
  `visual.trunk.` and open_clip's `TextTransformer` under `text.`, plus `logit_scale` / `logit_bias`).

A fused `qkv` hides the number of heads, and no tensor tells the MLP activation, the pooling or the
LayerNorm eps: those come from `TIMM_VIT`, our table of timm's own architecture definitions (made by
`tests/data/make_timm_arch_table.py` from timm's `vision_transformer.py`, checked against the installed
timm by `tests/test_timm_open_clip.py`), overridden by `model_args` where the file states them. Whatever the
harness's ViT cannot compute exactly (layer scale, register tokens, ln_pre, fc_norm, QuickGELU, ...) is
refused with one line naming it, never loaded approximately.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from harness.checkpoints.safetensors_io import load_safetensors, safetensors_keys
from harness.errors import HarnessError

OPEN_CLIP_CONFIG = "open_clip_config.json"
# timm's `_cfg` default for these ViTs (IMAGENET_INCEPTION_MEAN/STD) and open_clip's `PreprocessCfg` default
# (OPENAI_DATASET_MEAN/STD), used where the file does not state its own input normalisation.
TIMM_DEFAULT_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPEN_CLIP_DEFAULT_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
_POOL = {"token": "tok", "map": "map", "avg": "gap", "": "none"}  # timm global_pool -> big_vision pool_type


def _refuse(path, what: str, reason: str) -> HarnessError:
    return HarnessError(f"checkpoint {path}: {what} has {reason}, which the harness's ViT does not compute; it "
                        "is refused rather than loaded approximately (only big_vision-style pre-LN ViTs load)")


# ------------------------------------------------------------------------------------------ files
def _json(file: Path) -> dict:
    try:
        out = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HarnessError(f"checkpoint {file}: not readable JSON ({e})") from None
    if not isinstance(out, dict):
        raise HarnessError(f"checkpoint {file}: is not a JSON object")
    return out


def _is_timm_config(file: Path) -> bool:
    # timm's `save_config_for_hf` writes `architecture` (one name); a transformers config.json has
    # `model_type` / `architectures` instead.
    return file.is_file() and "architecture" in _json(file)


def _weights(folder: Path, name: str) -> Path:
    # The hub's own file name only: another .safetensors in the folder may be another library's layout.
    if (folder / name).is_file():
        return folder / name
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt"))
    raise HarnessError(f"checkpoint {folder}: no {name}" + (f" (only pickled {', '.join(pickled)}, which are "
                       "never loaded)" if pickled else "") + "; save the weights with safetensors under that name")


def detect(path: Path) -> str | None:
    """"timm" / "open_clip" for a checkpoint of these libraries, None for any other; refuses pickled torch
    files outright."""
    if path.is_file():
        if path.suffix in (".bin", ".pth", ".pt", ".ckpt"):
            raise HarnessError(f"checkpoint {path}: pickled PyTorch weights are never loaded (unpickling runs "
                               "code); save them with safetensors (timm: save_for_hf; safetensors.torch.save_file)")
        if path.suffix != ".safetensors":
            return None
        keys = safetensors_keys(path)
        if any(k.startswith("visual.trunk.") for k in keys):
            return "open_clip"
        if "patch_embed.proj.weight" in keys:
            return "timm"
        raise HarnessError(f"checkpoint {path}: a .safetensors file that is neither a timm ViT (patch_embed.*, "
                           "blocks.*) nor an open_clip model (visual.trunk.*); give a Hugging Face SigLIP model as "
                           "its folder (config.json + model.safetensors)")
    if path.is_dir():
        if (path / OPEN_CLIP_CONFIG).is_file():
            return "open_clip"
        if _is_timm_config(path / "config.json"):
            return "timm"
    return None


# ------------------------------------------------------------------------------ architecture facts
def arch_facts(arch: str, model_args: dict | None = None, global_pool: str | None = None, *,
               path="checkpoint") -> dict:
    """{num_heads, gelu, pool}: timm's for `arch` (our table), with what the file's `model_args` and top-level
    `global_pool` (the built model's, as timm's config.json records it) state instead."""
    base = str(arch).split(".")[0]  # "vit_so400m_patch14_siglip_384.webli": architecture.tag
    if base in TIMM_VIT_REFUSED:
        raise _refuse(path, f"timm architecture {base}", TIMM_VIT_REFUSED[base])
    if base not in TIMM_VIT:
        raise HarnessError(f"checkpoint {path}: timm architecture {base!r} is not in the harness's table of timm "
                           f"ViTs ({len(TIMM_VIT)} from timm's vision_transformer.py, in harness/checkpoints/torch_formats.py); "
                           "only those whose forward the harness computes exactly load")
    heads, gelu, pool = TIMM_VIT[base]
    for k, v in (model_args or {}).items():
        if k == "num_heads":
            heads = int(v)
        elif k == "global_pool":
            pool = v
        elif k == "act_layer":
            # timm/layers/create_act.py: "gelu" is nn.GELU (exact), "gelu_tanh" is GELUTanh.
            if v not in ("gelu", "gelu_tanh"):
                raise _refuse(path, f"timm model {base}", f"act_layer={v!r}")
            gelu = "exact" if v == "gelu" else "tanh"
        elif k == "pool_include_prefix" and v:
            raise _refuse(path, f"timm model {base}", "pooling over the prefix tokens (pool_include_prefix)")
        elif k == "in_chans" and int(v) != 3:
            raise HarnessError(f"checkpoint {path}: timm model {base} takes {v} input channels; the harness "
                               "feeds RGB images (3)")
        elif k == "pos_embed" and v != "learn":
            raise _refuse(path, f"timm model {base}", f"pos_embed={v!r} (no learned position embedding)")
        elif k not in _TREE_ARGS and k != "in_chans":
            raise HarnessError(f"checkpoint {path}: timm model_args {k}={v!r} is not one the harness knows the "
                               "effect of; refused rather than loaded approximately")
    if global_pool is not None:
        pool = global_pool
    if pool not in _POOL:
        raise _refuse(path, f"timm model {base}", f"global_pool={pool!r}")
    return {"num_heads": int(heads), "gelu": gelu, "pool": pool}


# model_args whose effect the tensors show (shapes, or tensors that exist only with them and are refused by
# name when present), or that change only the initialisation / resizing, not the forward at the native size.
_TREE_ARGS = {"img_size", "patch_size", "embed_dim", "depth", "mlp_ratio", "num_classes", "class_token",
              "no_embed_class", "reg_tokens", "init_values", "pre_norm", "fc_norm", "final_norm", "qkv_bias",
              "proj_bias", "qk_norm", "scale_attn_norm", "scale_mlp_norm", "dynamic_img_size", "dynamic_img_pad",
              "weight_init", "fix_init", "pos_embed", "pool_include_prefix"}

# Tensors of timm models the big_vision ViT has no counterpart for, by what they implement.
_UNSUPPORTED_TENSORS = (
    (r"(^|\.)reg_token$", "register tokens (reg_tokens)"),
    (r"\.ls[12]\.gamma$", "layer scale (init_values)"),
    (r"^norm_pre\.", "a LayerNorm before the blocks (pre_norm, ln_pre)"),
    (r"^fc_norm\.", "fc_norm (the final LayerNorm after pooling)"),
    (r"\.[qk]_norm\.", "qk_norm"),
    (r"\.attn\.norm\.", "a norm of the attention output (scale_attn_norm)"),
    (r"\.mlp\.norm\.", "a norm inside the MLP (scale_mlp_norm)"),
    (r"^patch_embed\.norm\.", "a norm in the patch embedding"),
    (r"^attn_pool\.pos_embed$", "a position embedding in the attention pool"),
    (r"\.attn\.gate\.", "gated attention"),
)


# ---------------------------------------------------------------------------------- timm -> big_vision
class _Tensors:
    """A state dict under a prefix, taken (and dropped, so that one copy of the weights is held) by name;
    `left()` is what no rule took."""

    def __init__(self, sd: dict, prefix: str, path):
        self.sd, self.prefix, self.path = sd, prefix, path
        self.names = {k[len(prefix):] for k in sd if k.startswith(prefix)}

    def has(self, name: str) -> bool:
        return name in self.names

    def take(self, name: str, required: bool = True):
        if name not in self.names:
            if required:
                raise HarnessError(f"checkpoint {self.path}: lacks tensor {self.prefix}{name}; is it a timm "
                                   "VisionTransformer?")
            return None
        self.names.discard(name)
        return np.asarray(self.sd.pop(self.prefix + name))

    def left(self) -> list[str]:
        return sorted(self.names)


def _feature(name: str) -> str | None:
    return next((feature for pattern, feature in _UNSUPPORTED_TENSORS if re.search(pattern, name)), None)


def _unsupported(path, what: str, names: list[str]) -> HarnessError:
    """The refusal for tensors no rule took: the feature the first known one implements, else its name."""
    for name in names:
        if feature := _feature(name):
            return _refuse(path, what, f"{feature} (tensor {name})")
    return _refuse(path, what, f"tensor {names[0]} with no big_vision counterpart"
                   + (f" (+{len(names) - 1} more)" if len(names) > 1 else ""))


def _linear(t: _Tensors, name: str):
    """A torch Linear (out, in) as a flax kernel (in, out) and its bias (zeros where it has none: the same
    function, e.g. timm's qkv_bias=False)."""
    w = t.take(f"{name}.weight")
    b = t.take(f"{name}.bias", required=False)
    return w.T, (np.zeros(w.shape[0], w.dtype) if b is None else b)


def _layernorm(t: _Tensors, name: str, dst: str, out: dict, what: str):
    scale, bias = t.take(f"{name}.weight"), t.take(f"{name}.bias", required=False)
    if bias is None:  # timm's RmsNorm (or a bias-free norm): not big_vision's LayerNorm
        raise _refuse(t.path, what, f"a norm without bias at {name} (RMSNorm)")
    out[f"{dst}/scale"], out[f"{dst}/bias"] = scale, bias


def _attention(out: dict, dst: str, q, k, v, o, heads: int):
    """(kernel (D, H*hd), bias (H*hd)) per q/k/v and (kernel (H*hd, D), bias) of the output projection into
    big_vision's per-head layout: kernels (D, H, hd) and (H, hd, D), biases (H, hd)."""
    d = q[0].shape[0]
    hd = q[0].shape[1] // heads
    for name, (kernel, bias) in zip(("query", "key", "value"), (q, k, v)):
        out[f"{dst}/{name}/kernel"] = kernel.reshape(d, heads, hd)
        out[f"{dst}/{name}/bias"] = bias.reshape(heads, hd)
    out[f"{dst}/out/kernel"] = o[0].reshape(heads, hd, o[0].shape[1])
    out[f"{dst}/out/bias"] = o[1]


def _mlp(t: _Tensors, src: str, dst: str, out: dict):
    for i, fc in enumerate(("fc1", "fc2")):
        out[f"{dst}/Dense_{i}/kernel"], out[f"{dst}/Dense_{i}/bias"] = _linear(t, f"{src}.{fc}")


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
    t = _Tensors(sd, prefix, path)
    heads, pool = facts["num_heads"], facts["pool"]
    # A known unsupported feature first, before any shape or layout check could fail on its account.
    if known := [prefix + k for k in t.left() if _feature(k)]:
        raise _unsupported(path, what, known)
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
        raise _refuse(path, what, "no learned position embedding (pos_embed)")
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
        raise _refuse(path, what, f"global_pool={pool!r} beside a class token")

    depth = 1 + max((int(m.group(1)) for k in t.left() if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    if depth == 0:
        raise HarnessError(f"checkpoint {path}: no transformer blocks (blocks.0.*); is it a timm ViT?")
    for i in range(depth):
        src, dst = f"blocks.{i}", f"Transformer/encoderblock_{i}"
        _layernorm(t, f"{src}.norm1", f"{dst}/LayerNorm_0", out, what)
        qkv_w, qkv_b = _linear(t, f"{src}.attn.qkv")  # (D, 3*A), A = heads * head_dim
        if qkv_w.shape != (d, 3 * d):
            raise _refuse(path, what, f"attention of width {qkv_w.shape[1] // 3} in a width-{d} model "
                          "(attn_head_dim)")
        _attention(out, f"{dst}/MultiHeadDotProductAttention_0",
                   *[(qkv_w[:, j * d:(j + 1) * d], qkv_b[j * d:(j + 1) * d]) for j in range(3)],
                   _linear(t, f"{src}.attn.proj"), heads)
        _layernorm(t, f"{src}.norm2", f"{dst}/LayerNorm_1", out, what)
        _mlp(t, f"{src}.mlp", f"{dst}/MlpBlock_0", out)
    if not t.has("norm.weight"):
        raise _refuse(path, what, "no final LayerNorm before pooling (final_norm=False)")
    _layernorm(t, "norm", "Transformer/encoder_norm", out, what)

    if pool == "map":
        if not t.has("attn_pool.latent"):
            raise HarnessError(f"checkpoint {path}: global_pool='map' but no attn_pool.* tensors; the file and "
                               "its config disagree")
        latent = t.take("attn_pool.latent")
        if latent.shape[1] != 1:
            raise _refuse(path, what, f"an attention pool with {latent.shape[1]} latents (big_vision's has one)")
        if not t.has("attn_pool.q.weight"):
            raise _refuse(path, what, "an attention pool without a query projection (q_proj=False)")
        out["MAPHead_0/probe"] = latent
        kv_w, kv_b = _linear(t, "attn_pool.kv")  # (D, 2D): [k | v]
        _attention(out, "MAPHead_0/MultiHeadDotProductAttention_0", _linear(t, "attn_pool.q"),
                   (kv_w[:, :d], kv_b[:d]), (kv_w[:, d:], kv_b[d:]), _linear(t, "attn_pool.proj"), heads)
        _layernorm(t, "attn_pool.norm", "MAPHead_0/LayerNorm_0", out, what)
        _mlp(t, "attn_pool.mlp", "MAPHead_0/MlpBlock_0", out)
    elif any(k.startswith("attn_pool.") for k in t.left()):
        raise HarnessError(f"checkpoint {path}: attn_pool.* tensors but global_pool={pool!r}; the file and its "
                           "config disagree")
    if t.has("head.weight"):
        out["head/kernel"], out["head/bias"] = _linear(t, "head")
    if t.left():
        raise _unsupported(path, what, [prefix + k for k in t.left()])
    return out


def fold_normalisation(flat: dict, mean, std) -> dict:
    """The harness feeds images in [-1, 1] (big_vision's value_range(-1, 1)); a model trained on
    (x01 - mean) / std with x01 = (x + 1) / 2 sees x / (2 std) + (0.5 - mean) / std. That per-channel affine
    map before a VALID patch convolution is folded into its kernel and bias (exact up to float rounding);
    mean = std = 0.5 (SigLIP, augreg) leaves the weights untouched."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0):
        raise HarnessError(f"input normalisation mean={mean.tolist()} std={std.tolist()} is not 3 channels with "
                           "std > 0")
    if np.all(mean == 0.5) and np.all(std == 0.5):
        return flat
    k = np.asarray(flat["embedding/kernel"], np.float64)  # (p, p, 3, D)
    dtype = np.promote_types(flat["embedding/kernel"].dtype, np.float32)  # never round back to bfloat16
    flat["embedding/bias"] = (np.asarray(flat["embedding/bias"], np.float64)
                              + np.einsum("ijcd,c->d", k, (0.5 - mean) / std)).astype(dtype)
    flat["embedding/kernel"] = (k / (2 * std)[None, None, :, None]).astype(dtype)
    return flat


# --------------------------------------------------------------------------------------------- timm
def _timm_sources(path: Path) -> tuple[Path, dict]:
    """(weights file, config.json contents or {"architecture": <from the file name>})."""
    if path.is_dir():
        return _weights(path, "model.safetensors"), _json(path / "config.json")
    if _is_timm_config(path.parent / "config.json"):
        return path, _json(path.parent / "config.json")
    name = path.name[: -len(".safetensors")].split(".")[0]
    if name not in TIMM_VIT and name not in TIMM_VIT_REFUSED:
        raise HarnessError(f"checkpoint {path}: a bare timm .safetensors does not say its architecture (heads, "
                           "GELU, pooling): put timm's config.json beside it (timm.models.save_for_hf writes both) "
                           "or name the file <architecture>.safetensors, e.g. vit_base_patch16_siglip_224.safetensors")
    return path, {"architecture": name}


def _norm_of(pretrained_cfg: dict | None, default) -> tuple:
    cfg = pretrained_cfg or {}
    return tuple(cfg.get("mean", default[0])), tuple(cfg.get("std", default[1]))


def read_timm(path: Path) -> tuple[dict, dict]:
    """(big_vision tree, hints) of a timm checkpoint."""
    weights, cfg = _timm_sources(path)
    facts = arch_facts(cfg["architecture"], cfg.get("model_args"), cfg.get("global_pool"), path=path)
    sd = load_safetensors(weights)
    what = f"timm model {str(cfg['architecture']).split('.')[0]}"
    flat = timm_to_bv(sd, facts, path=path, what=what)
    # Older hub configs are one flat dict (timm `_hub.py::_parse_model_cfg`, "legacy single-dict"): mean/std
    # at the top level.
    flat = fold_normalisation(flat, *_norm_of(cfg.get("pretrained_cfg", cfg), TIMM_DEFAULT_NORM))
    return flat, _hints(facts)


def _hints(facts: dict) -> dict:
    return {"num_heads": facts["num_heads"], "gelu": facts["gelu"], "pool_type": _POOL[facts["pool"]]}


# ---------------------------------------------------------------------------------------- open_clip
def _open_clip_sources(path: Path) -> tuple[Path, dict]:
    if path.is_dir():
        return _weights(path, "open_clip_model.safetensors"), _json(path / OPEN_CLIP_CONFIG)
    if (path.parent / OPEN_CLIP_CONFIG).is_file():
        return path, _json(path.parent / OPEN_CLIP_CONFIG)
    raise HarnessError(f"checkpoint {path}: an open_clip .safetensors without its {OPEN_CLIP_CONFIG} (the model "
                       "config: timm trunk name, text tower); give the folder open_clip.push_to_hf_hub writes")


def _model_cfg(cfg: dict, path) -> dict:
    mc = cfg.get("model_cfg", cfg)
    if not isinstance(mc, dict) or "vision_cfg" not in mc:
        raise HarnessError(f"checkpoint {path}: {OPEN_CLIP_CONFIG} has no model_cfg.vision_cfg")
    if mc.get("multimodal_cfg"):
        raise _refuse(path, "open_clip model", "a multimodal text decoder (CoCa)")
    return mc


def open_clip_vision_facts(vision_cfg: dict, path) -> tuple[dict, str]:
    """(facts of the timm trunk, the projection after it) from open_clip's `CLIPVisionCfg`, as
    `open_clip/timm_model.py::TimmModel` builds it: `timm_pool` overrides the architecture's pooling
    (default 'avg'), `timm_proj` 'none' keeps no head, '' keeps timm's own head as the projection,
    'linear' adds `visual.head.proj`."""
    arch = vision_cfg.get("timm_model_name")
    if not arch:
        raise _refuse(path, "open_clip model", "open_clip's own VisionTransformer image tower (not a timm trunk)")
    pool = vision_cfg.get("timm_pool", "avg")
    proj = vision_cfg.get("timm_proj", "linear")
    if pool in ("abs_attn", "rot_attn"):
        raise _refuse(path, "open_clip model", f"timm_pool={pool!r}")
    if proj not in ("none", "", "linear"):
        raise _refuse(path, "open_clip model", f"timm_proj={proj!r}")
    if proj == "linear" and not pool:
        pool = None  # TimmModel then resets the classifier keeping timm's own pooling
    return arch_facts(arch, None, pool, path=path), proj


def read_open_clip_image(path: Path) -> tuple[dict, dict]:
    weights, cfg = _open_clip_sources(path)
    mc = _model_cfg(cfg, path)
    facts, proj = open_clip_vision_facts(mc["vision_cfg"], path)
    sd = load_safetensors(weights, keep=lambda k: k.startswith("visual."))  # the text tower: read_open_clip_text
    what = f"open_clip image trunk {mc['vision_cfg']['timm_model_name']}"
    head = {}
    if proj == "linear":
        w = sd.pop("visual.head.proj.weight", None)
        if w is None:
            raise HarnessError(f"checkpoint {path}: timm_proj='linear' but no visual.head.proj.weight")
        b = sd.pop("visual.head.proj.bias", None)
        head = {"head/kernel": w.T, "head/bias": np.zeros(w.shape[0], w.dtype) if b is None else b}
        if any(k.startswith("visual.trunk.head.") for k in sd):
            raise HarnessError(f"checkpoint {path}: a timm head and a linear projection after it")
    left = [k for k in sd if k.startswith("visual.") and not k.startswith("visual.trunk.")]
    if left:
        raise _unsupported(path, what, left)
    flat = timm_to_bv(sd, facts, prefix="visual.trunk.", path=path, what=what)
    flat.update(head)
    flat = fold_normalisation(flat, *_norm_of(cfg.get("preprocess_cfg"), OPEN_CLIP_DEFAULT_NORM))
    return flat, _hints(facts)


# open_clip/model.py::CLIPTextCfg defaults, for the keys a SigLIP-style config may leave out.
_TEXT_DEFAULTS = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12, mlp_ratio=4.0,
                      ls_init_value=None, embed_cls=False, no_causal_mask=False, pool_type="argmax",
                      proj_bias=False, proj_type="linear", act_kwargs=None, norm_kwargs=None, hf_model_name=None,
                      block_type=None, qk_norm=False, scaled_cosine_attn=False, scale_heads=False,
                      scale_attn_inner=False, scale_attn=False, scale_fc=False)


def open_clip_text_facts(mc: dict, path) -> dict:
    """{num_heads, gelu, pool_type} of open_clip's `TextTransformer` as `open_clip/model.py::_build_text_tower`
    builds it from `text_cfg`, or a refusal naming what the harness's text tower (big_vision's: pre-LN
    blocks, no causal mask, final LN, pooled at one position, Dense head) does not compute."""
    tc = {**_TEXT_DEFAULTS, **(mc.get("text_cfg") or {})}
    what = "open_clip text tower"
    if tc["hf_model_name"]:
        raise _refuse(path, what, f"a Hugging Face text encoder ({tc['hf_model_name']})")
    if not tc["no_causal_mask"]:
        raise _refuse(path, what, "a causal attention mask (CLIP-style; SigLIP's text tower has none)")
    if tc["pool_type"] not in ("last", "first"):
        raise _refuse(path, what, f"pool_type={tc['pool_type']!r} (the harness pools at the last or first token)")
    for k in ("embed_cls", "qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn",
              "scale_fc"):
        if tc[k]:
            raise _refuse(path, what, f"{k}={tc[k]!r}")
    if tc["ls_init_value"] is not None:
        raise _refuse(path, what, "layer scale (ls_init_value)")
    if tc["block_type"] not in (None, "default"):
        raise _refuse(path, what, f"block_type={tc['block_type']!r}")
    if tc["proj_type"] not in ("linear", "none"):
        raise _refuse(path, what, f"proj_type={tc['proj_type']!r}")
    norm = dict(tc["norm_kwargs"] or {})
    eps = norm.pop("eps", 1e-5)  # open_clip's LayerNorm is torch's: eps 1e-5 unless norm_kwargs set it
    if norm or eps != 1e-6:
        raise _refuse(path, what, f"LayerNorm {dict(eps=eps, **norm)} (the harness's is eps 1e-6)")
    if mc.get("quick_gelu"):
        raise _refuse(path, what, "QuickGELU (quick_gelu=true)")
    act = dict(tc["act_kwargs"] or {})
    approximate = act.pop("approximate", "none")  # nn.GELU(**act_kwargs); SigLIP 2 configs set "tanh"
    if act or approximate not in ("none", "tanh"):
        raise _refuse(path, what, f"activation nn.GELU(**{tc['act_kwargs']})")
    return {"num_heads": int(tc["heads"]), "gelu": "exact" if approximate == "none" else "tanh",
            "pool_type": tc["pool_type"], "proj_type": tc["proj_type"]}


def open_clip_text_to_bv(sd: dict, facts: dict, *, path="checkpoint") -> dict:
    """open_clip's TextTransformer (`text.*`, or top-level in a non-custom-text CLIP) -> big_vision's
    text_transformer tree: `token_embedding` -> `Embed_0/embedding`, `positional_embedding` (L, D) ->
    `pos_embedding` (1, L, D), `transformer.resblocks.{i}` (torch MultiheadAttention: `in_proj_weight` rows
    [q; k; v]) -> `Encoder_0/encoderblock_{i}`, `ln_final` -> `Encoder_0/encoder_norm`, `text_projection`
    (a Linear, or a (D, out) matrix without bias) -> `head`."""
    prefix = "text." if "text.token_embedding.weight" in sd else ""
    t = _Tensors(sd, prefix, path)
    what = "open_clip text tower"
    out: dict[str, np.ndarray] = {}
    out["Embed_0/embedding"] = t.take("token_embedding.weight")
    out["pos_embedding"] = t.take("positional_embedding")[None]
    d = int(out["Embed_0/embedding"].shape[1])
    heads = facts["num_heads"]
    if d % heads:
        raise HarnessError(f"checkpoint {path}: text width {d} is not divisible by {heads} heads")
    depth = 1 + max((int(m.group(1)) for k in t.left() if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))),
                    default=-1)
    for i in range(depth):
        src, dst = f"transformer.resblocks.{i}", f"Encoder_0/encoderblock_{i}"
        _layernorm(t, f"{src}.ln_1", f"{dst}/LayerNorm_0", out, what)
        w, b = t.take(f"{src}.attn.in_proj_weight").T, t.take(f"{src}.attn.in_proj_bias")
        _attention(out, f"{dst}/MultiHeadDotProductAttention_0",
                   *[(w[:, j * d:(j + 1) * d], b[j * d:(j + 1) * d]) for j in range(3)],
                   _linear(t, f"{src}.attn.out_proj"), heads)
        _layernorm(t, f"{src}.ln_2", f"{dst}/LayerNorm_1", out, what)
        for j, fc in enumerate(("c_fc", "c_proj")):
            out[f"{dst}/MlpBlock_0/Dense_{j}/kernel"], out[f"{dst}/MlpBlock_0/Dense_{j}/bias"] = \
                _linear(t, f"{src}.mlp.{fc}")
    _layernorm(t, "ln_final", "Encoder_0/encoder_norm", out, what)
    if t.has("text_projection.weight"):
        out["head/kernel"], out["head/bias"] = _linear(t, "text_projection")
    elif t.has("text_projection"):
        p = t.take("text_projection")  # pooled @ text_projection
        out["head/kernel"], out["head/bias"] = p, np.zeros(p.shape[1], p.dtype)
    if t.left():
        raise _unsupported(path, what, [prefix + k for k in t.left()])
    return out


def read_open_clip_text(path: Path) -> dict:
    """The text tower in `checkpoints.read_text_tower`'s form, plus the facts the tree does not show
    (`gelu`, `pool_type`) for `harness.models.text.load_text_tower`."""
    weights, cfg = _open_clip_sources(path)
    mc = _model_cfg(cfg, path)
    facts = open_clip_text_facts(mc, path)
    sd = load_safetensors(weights, keep=lambda k: not k.startswith("visual."))
    scale, bias = sd.pop("logit_scale", None), sd.pop("logit_bias", None)
    txt = open_clip_text_to_bv(sd, facts, path=path)
    folder = path if path.is_dir() else path.parent
    # open_clip tokenizes SigLIP text with `HFTokenizer(text_cfg.hf_tokenizer_name, clean=...)`: its
    # `canonicalize` clean, then that Hugging Face tokenizer (open_clip/tokenizer.py). Offline, the tokenizer
    # is the one saved into the folder (tokenizer_config.json + spiece.model); a bare sentencepiece model
    # there serves `text_pp=big_vision`.
    tc = mc.get("text_cfg") or {}
    clean = (tc.get("tokenizer_kwargs") or {}).get("clean", "whitespace")  # HFTokenizer's default
    if tc.get("hf_tokenizer_name") and clean != "canonicalize":
        raise HarnessError(f"checkpoint {path}: open_clip cleans this tower's text with clean={clean!r}; only "
                           "'canonicalize' (every SigLIP config's) is replicated: pass --set text_pp=big_vision")
    hf_folder = str(folder) if (folder / "tokenizer_config.json").exists() else None
    spm = sorted(folder.glob("*.model"))
    return {"txt": txt, "t": scale, "b": bias, "path": str(path), "format": "open_clip",
            "tokenizer": str(spm[0]) if spm else None, "gelu": facts["gelu"], "pool_type": facts["pool_type"],
            "text_pp": "open_clip" if tc.get("hf_tokenizer_name") else "big_vision",
            "hf_tokenizer_folder": hf_folder, "hf_tokenizer_name": tc.get("hf_tokenizer_name")}


# ------------------------------------------------------------------------------------- entry points
# The reader table's entries (`harness.checkpoints.READERS`): detect, read the image tower, read the text tower.
def is_timm(path: Path) -> bool:
    return detect(path) == "timm"


def is_open_clip(path: Path) -> bool:
    return detect(path) == "open_clip"


def _image_subtree(path: Path, fmt: str, subtree: str | None) -> None:
    if subtree not in (None, "img", "visual"):
        raise HarnessError(f"checkpoint {path}: a {fmt} checkpoint has no sub-tree {subtree!r}; use ':img' or none")


def read_timm_image(path: Path, subtree: str | None) -> tuple[dict, dict]:
    """(flat big_vision tree, config hints) of a timm checkpoint."""
    _image_subtree(path, "timm", subtree)
    return read_timm(path)


def read_open_clip_image_tower(path: Path, subtree: str | None) -> tuple[dict, dict]:
    """(flat big_vision tree, config hints) of an open_clip checkpoint's image tower."""
    _image_subtree(path, "open_clip", subtree)
    return read_open_clip_image(path)


# ----------------------------------------------------------------------------- the architecture table
# Made by tests/data/make_timm_arch_table.py from timm 1.0.31, timm/models/vision_transformer.py (every
# registered VisionTransformer built on the meta device and inspected); checked against the installed timm
# by tests/test_timm_open_clip.py::test_arch_table_is_timms.
# name: (num_heads, gelu, global_pool). Every row: timm's `Block` / `Mlp` / `Attention`, LayerNorm eps 1e-6,
# no register tokens, layer scale, ln_pre, fc_norm or qk_norm; the class token (and `no_embed_class`) and all
# sizes are read off the tensors. "exact" is torch's nn.GELU() (timm's default act_layer): the v1 SigLIP and
# augreg families; "tanh" is timm's `gelu_tanh` (GELUTanh), set by several SigLIP 2-era architectures.
TIMM_VIT: dict[str, tuple[int, str, str]] = {
    "flexivit_base": (12, "exact", "token"),
    "flexivit_large": (16, "exact", "token"),
    "flexivit_small": (6, "exact", "token"),
    "test_vit": (2, "exact", "token"),
    "vit_base_patch16_224": (12, "exact", "token"),
    "vit_base_patch16_224_miil": (12, "exact", "token"),
    "vit_base_patch16_384": (12, "exact", "token"),
    "vit_base_patch16_gap_224": (16, "exact", "avg"),
    "vit_base_patch16_siglip_224": (12, "exact", "map"),
    "vit_base_patch16_siglip_256": (12, "exact", "map"),
    "vit_base_patch16_siglip_384": (12, "exact", "map"),
    "vit_base_patch16_siglip_512": (12, "exact", "map"),
    "vit_base_patch16_siglip_gap_224": (12, "exact", "avg"),
    "vit_base_patch16_siglip_gap_256": (12, "exact", "avg"),
    "vit_base_patch16_siglip_gap_384": (12, "exact", "avg"),
    "vit_base_patch16_siglip_gap_512": (12, "exact", "avg"),
    "vit_base_patch32_224": (12, "exact", "token"),
    "vit_base_patch32_384": (12, "exact", "token"),
    "vit_base_patch32_siglip_256": (12, "tanh", "map"),
    "vit_base_patch32_siglip_gap_256": (12, "tanh", "avg"),
    "vit_base_patch8_224": (12, "exact", "token"),
    "vit_giant_patch14_224": (16, "exact", "token"),
    "vit_giant_patch16_gap_224": (16, "exact", "avg"),
    "vit_giantopt_patch16_siglip_256": (16, "tanh", "map"),
    "vit_giantopt_patch16_siglip_384": (16, "tanh", "map"),
    "vit_giantopt_patch16_siglip_gap_256": (16, "tanh", "avg"),
    "vit_giantopt_patch16_siglip_gap_384": (16, "tanh", "avg"),
    "vit_gigantic_patch14_224": (16, "exact", "token"),
    "vit_huge_patch14_224": (16, "exact", "token"),
    "vit_huge_patch14_gap_224": (16, "exact", "avg"),
    "vit_huge_patch16_gap_448": (16, "exact", "avg"),
    "vit_large_patch14_224": (16, "exact", "token"),
    "vit_large_patch16_224": (16, "exact", "token"),
    "vit_large_patch16_384": (16, "exact", "token"),
    "vit_large_patch16_siglip_256": (16, "exact", "map"),
    "vit_large_patch16_siglip_384": (16, "exact", "map"),
    "vit_large_patch16_siglip_512": (16, "tanh", "map"),
    "vit_large_patch16_siglip_gap_256": (16, "exact", "avg"),
    "vit_large_patch16_siglip_gap_384": (16, "exact", "avg"),
    "vit_large_patch16_siglip_gap_512": (16, "tanh", "avg"),
    "vit_large_patch32_224": (16, "exact", "token"),
    "vit_large_patch32_384": (16, "exact", "token"),
    "vit_small_patch16_224": (6, "exact", "token"),
    "vit_small_patch16_384": (6, "exact", "token"),
    "vit_small_patch32_224": (6, "exact", "token"),
    "vit_small_patch32_384": (6, "exact", "token"),
    "vit_small_patch8_224": (6, "exact", "token"),
    "vit_so400m_patch14_siglip_224": (16, "exact", "map"),
    "vit_so400m_patch14_siglip_378": (16, "exact", "map"),
    "vit_so400m_patch14_siglip_384": (16, "exact", "map"),
    "vit_so400m_patch14_siglip_gap_224": (16, "exact", "avg"),
    "vit_so400m_patch14_siglip_gap_378": (16, "exact", "avg"),
    "vit_so400m_patch14_siglip_gap_384": (16, "exact", "avg"),
    "vit_so400m_patch14_siglip_gap_448": (16, "exact", "avg"),
    "vit_so400m_patch14_siglip_gap_896": (16, "exact", "avg"),
    "vit_so400m_patch16_siglip_256": (16, "tanh", "map"),
    "vit_so400m_patch16_siglip_384": (16, "tanh", "map"),
    "vit_so400m_patch16_siglip_512": (16, "tanh", "map"),
    "vit_so400m_patch16_siglip_gap_256": (16, "tanh", "avg"),
    "vit_so400m_patch16_siglip_gap_384": (16, "tanh", "avg"),
    "vit_so400m_patch16_siglip_gap_512": (16, "tanh", "avg"),
    "vit_tiny_patch16_224": (3, "exact", "token"),
    "vit_tiny_patch16_384": (3, "exact", "token"),
}
# name: why the harness's ViT cannot compute it.
TIMM_VIT_REFUSED: dict[str, str] = {
    "aimv2_1b_patch14_224": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_1b_patch14_336": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_1b_patch14_448": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_3b_patch14_224": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_3b_patch14_336": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_3b_patch14_448": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_huge_patch14_224": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_huge_patch14_336": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_huge_patch14_448": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_large_patch14_224": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_large_patch14_336": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "aimv2_large_patch14_448": "SwiGLU MLP, RmsNorm, SiLU, a norm in the patch embedding",
    "beit3_base_patch16_224":
        "LayerNorm eps 1e-05, fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "beit3_giant_patch14_224":
        "LayerNorm eps 1e-05, fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "beit3_giant_patch14_336":
        "LayerNorm eps 1e-05, fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "beit3_large_patch16_224":
        "LayerNorm eps 1e-05, fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "eva_large_patch14_196": "fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "eva_large_patch14_336": "fc_norm (the final LayerNorm after pooling), global_pool='avg' beside a class token",
    "test_vit2":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "test_vit3": "register tokens (reg_tokens=1), layer scale (init_values), pooling over the prefix tokens",
    "test_vit4":
        "RmsNorm, register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_base_patch14_dinov2": "layer scale (init_values)",
    "vit_base_patch14_reg1_tipsv2": "register tokens (reg_tokens=1), layer scale (init_values)",
    "vit_base_patch14_reg4_dinov2": "register tokens (reg_tokens=4), layer scale (init_values)",
    "vit_base_patch16_18x2_224": "ParallelThingsBlock blocks (not timm's pre-LN Block)",
    "vit_base_patch16_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch16_clip_384": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch16_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch16_plus_240": "layer scale (init_values)",
    "vit_base_patch16_plus_clip_240": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch16_radio_v3":
        "register tokens (reg_tokens=7), layer scale (init_values), no final LayerNorm (final_norm=False)",
    "vit_base_patch16_reg4_gap_256": "register tokens (reg_tokens=4), fc_norm (the final LayerNorm after pooling)",
    "vit_base_patch16_rpn_224": "ResPostBlock blocks (not timm's pre-LN Block)",
    "vit_base_patch16_xp_224": "ParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_base_patch32_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_clip_256": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_clip_384": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_clip_448": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_base_patch32_plus_256": "layer scale (init_values)",
    "vit_betwixt_patch16_gap_256": "layer scale (init_values)",
    "vit_betwixt_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_betwixt_patch16_reg4_gap_256":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_betwixt_patch16_reg4_gap_384":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_betwixt_patch32_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_dlittle_patch16_reg1_gap_256":
        "DiffAttention attention, register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_dpwee_patch16_reg1_gap_256": "DiffParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_dwee_patch16_reg1_gap_256":
        "DiffAttention attention, register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_giant_patch14_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_giant_patch14_dinov2": "GluMlp MLP, SiLU, layer scale (init_values)",
    "vit_giant_patch14_reg1_tipsv2": "GluMlp MLP, SiLU, register tokens (reg_tokens=1), layer scale (init_values)",
    "vit_giant_patch14_reg4_dinov2": "GluMlp MLP, SiLU, register tokens (reg_tokens=4), layer scale (init_values)",
    "vit_giant_patch16_radio_v3": "register tokens (reg_tokens=7), no final LayerNorm (final_norm=False)",
    "vit_gigantic_patch14_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_gigantic_patch14_clip_378": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_gigantic_patch14_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_336": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_378": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_clip_quickgelu_378":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_huge_patch14_xp_224": "ParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_huge_patch16_radio_v3": "register tokens (reg_tokens=7), no final LayerNorm (final_norm=False)",
    "vit_huge_patch16_radio_v4": "register tokens (reg_tokens=9), no final LayerNorm (final_norm=False)",
    "vit_intern300m_patch14_448": "layer scale (init_values), no final LayerNorm (final_norm=False)",
    "vit_large_patch14_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_large_patch14_clip_336": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_large_patch14_clip_quickgelu_224":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_large_patch14_clip_quickgelu_336":
        "LayerNorm eps 1e-05, QuickGELU, a LayerNorm before the blocks (pre_norm)",
    "vit_large_patch14_dinov2": "layer scale (init_values)",
    "vit_large_patch14_reg1_tipsv2": "register tokens (reg_tokens=1), layer scale (init_values)",
    "vit_large_patch14_reg4_dinov2": "register tokens (reg_tokens=4), layer scale (init_values)",
    "vit_large_patch14_xp_224": "ParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_large_patch16_radio_v3":
        "register tokens (reg_tokens=7), layer scale (init_values), no final LayerNorm (final_norm=False)",
    "vit_little_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_little_patch16_reg4_gap_256":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_medium_patch16_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_medium_patch16_gap_240": "layer scale (init_values)",
    "vit_medium_patch16_gap_256": "layer scale (init_values)",
    "vit_medium_patch16_gap_384": "layer scale (init_values)",
    "vit_medium_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_medium_patch16_reg4_gap_256":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_medium_patch32_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
    "vit_mediumd_patch16_reg4_gap_256":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_mediumd_patch16_reg4_gap_384":
        "register tokens (reg_tokens=4), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_pwee_patch16_reg1_gap_256": "ParallelScalingBlock blocks (not timm's pre-LN Block)",
    "vit_small_patch14_dinov2": "layer scale (init_values)",
    "vit_small_patch14_reg4_dinov2": "register tokens (reg_tokens=4), layer scale (init_values)",
    "vit_small_patch16_18x2_224": "ParallelThingsBlock blocks (not timm's pre-LN Block)",
    "vit_small_patch16_36x1_224": "layer scale (init_values)",
    "vit_so150m2_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_so150m2_patch16_reg1_gap_384":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_so150m2_patch16_reg1_gap_448":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_so150m_patch16_reg4_gap_256": "register tokens (reg_tokens=4)",
    "vit_so150m_patch16_reg4_gap_384": "register tokens (reg_tokens=4)",
    "vit_so150m_patch16_reg4_map_256": "register tokens (reg_tokens=4)",
    "vit_so400m_patch14_reg1_tipsv2": "register tokens (reg_tokens=1), layer scale (init_values)",
    "vit_so400m_patch16_radio_v4": "register tokens (reg_tokens=9), no final LayerNorm (final_norm=False)",
    "vit_wee_patch16_reg1_gap_256":
        "register tokens (reg_tokens=1), layer scale (init_values), fc_norm (the final LayerNorm after pooling)",
    "vit_xsmall_patch16_clip_224": "LayerNorm eps 1e-05, a LayerNorm before the blocks (pre_norm)",
}
