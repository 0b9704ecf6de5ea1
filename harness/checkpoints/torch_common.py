"""What the timm and open_clip formats share: torch state dicts read from safetensors (nothing is
unpickled; torch is never imported) and converted by name into big_vision's tree.

`detect` tells which of the two libraries wrote a checkpoint (and refuses pickled torch files outright);
`Tensors` takes a state dict's tensors by name, so that whatever no rule took is left over and refuses the
model (`unsupported`, naming the feature it implements); `linear`, `layernorm` and `attention` map torch
modules onto big_vision's parameters; `fold_normalisation` folds a model's input normalisation into its patch
embedding. `harness.checkpoints.timm` and `harness.checkpoints.open_clip` are the two formats.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from harness.checkpoints.safetensors_io import safetensors_keys
from harness.errors import HarnessError
from harness.schema import Doc
from harness.schema import read_json as read_json_doc

OPEN_CLIP_CONFIG = "open_clip_config.json"
POOL = {"token": "tok", "map": "map", "avg": "gap", "": "none"}  # timm global_pool -> big_vision pool_type


def refuse(path, what: str, reason: str) -> HarnessError:
    return HarnessError(f"checkpoint {path}: {what} has {reason}, which the harness's ViT does not compute; it "
                        "is refused rather than loaded approximately (only big_vision-style pre-LN ViTs load)")


# ---------------------------------------------------------------------------------------------- files
def read_json(file: Path) -> Doc:
    """A timm `config.json` or an `open_clip_config.json`: a JSON object, read through `harness.schema`."""
    return read_json_doc(file, what="model config", fix="fix the file or re-export the model").require_obj(
        "a JSON object")


def is_timm_config(file: Path) -> bool:
    # timm's `save_config_for_hf` writes `architecture` (one name); a transformers config.json has
    # `model_type` / `architectures` instead.
    return file.is_file() and read_json(file).has("architecture")


def weights_file(folder: Path, name: str) -> Path:
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
        if is_timm_config(path / "config.json"):
            return "timm"
    return None


# Tensors of timm models the big_vision ViT has no counterpart for, by what they implement.
UNSUPPORTED_TENSORS = (
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


class Tensors:
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


def unsupported_feature(name: str) -> str | None:
    return next((feature for pattern, feature in UNSUPPORTED_TENSORS if re.search(pattern, name)), None)


def unsupported(path, what: str, names: list[str]) -> HarnessError:
    """The refusal for tensors no rule took: the feature the first known one implements, else its name."""
    for name in names:
        if feature := unsupported_feature(name):
            return refuse(path, what, f"{feature} (tensor {name})")
    return refuse(path, what, f"tensor {names[0]} with no big_vision counterpart"
                  + (f" (+{len(names) - 1} more)" if len(names) > 1 else ""))


def linear(t: Tensors, name: str):
    """A torch Linear (out, in) as a flax kernel (in, out) and its bias (zeros where it has none: the same
    function, e.g. timm's qkv_bias=False)."""
    w = t.take(f"{name}.weight")
    b = t.take(f"{name}.bias", required=False)
    return w.T, (np.zeros(w.shape[0], w.dtype) if b is None else b)


def layernorm(t: Tensors, name: str, dst: str, out: dict, what: str):
    scale, bias = t.take(f"{name}.weight"), t.take(f"{name}.bias", required=False)
    if bias is None:  # timm's RmsNorm (or a bias-free norm): not big_vision's LayerNorm
        raise refuse(t.path, what, f"a norm without bias at {name} (RMSNorm)")
    out[f"{dst}/scale"], out[f"{dst}/bias"] = scale, bias


def attention(out: dict, dst: str, q, k, v, o, heads: int):
    """(kernel (D, H*hd), bias (H*hd)) per q/k/v and (kernel (H*hd, D), bias) of the output projection into
    big_vision's per-head layout: kernels (D, H, hd) and (H, hd, D), biases (H, hd)."""
    d = q[0].shape[0]
    hd = q[0].shape[1] // heads
    for name, (kernel, bias) in zip(("query", "key", "value"), (q, k, v)):
        out[f"{dst}/{name}/kernel"] = kernel.reshape(d, heads, hd)
        out[f"{dst}/{name}/bias"] = bias.reshape(heads, hd)
    out[f"{dst}/out/kernel"] = o[0].reshape(heads, hd, o[0].shape[1])
    out[f"{dst}/out/bias"] = o[1]


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


def norm_of(cfg: Doc, default) -> tuple:
    """The (mean, std) of a model's input normalisation as `cfg` states them (3 numbers each, std > 0), else
    `default`."""
    return (tuple(cfg.numbers("mean", default[0], length=3, null_is_default=True)),
            tuple(cfg.numbers("std", default[1], length=3, positive=True, null_is_default=True)))


def hints(facts: dict) -> dict:
    return {"num_heads": facts["num_heads"], "gelu": facts["gelu"], "pool_type": POOL[facts["pool"]]}


def check_image_subtree(path: Path, fmt: str, subtree: str | None) -> None:
    """A timm / open_clip checkpoint is one image tower: no sub-tree but the image's."""
    if subtree not in (None, "img", "visual"):
        raise HarnessError(f"checkpoint {path}: a {fmt} checkpoint has no sub-tree {subtree!r}; use ':img' or none")
