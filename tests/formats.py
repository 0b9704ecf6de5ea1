"""Checkpoints in timm's and open_clip's layouts written with numpy (no torch): a depth-1 timm
VisionTransformer state dict (`timm_state`, as timm names its tensors) with its hub `config.json`
(`TIMM_CONFIG`), and an open_clip SigLIP-style text tower (`open_clip_text_state`) with its
`open_clip_config.json` (`OPEN_CLIP_CONFIG`): valid inputs that the fuzz tests (tests/test_fuzz.py) and
the bad-input matrix (tests/test_bad_inputs.py) break one field at a time. Their parity with timm and
open_clip is tests/test_timm_open_clip.py's (which builds them with torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def timm_state(d=24, m=48, p=4, grid=2, cls=True, prefix="") -> dict[str, np.ndarray]:
    """A timm VisionTransformer state dict (depth 1) in numpy, as timm names it."""
    rng = np.random.default_rng(0)

    def r(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    sd = {"patch_embed.proj.weight": r(d, 3, p, p), "patch_embed.proj.bias": r(d),
          "pos_embed": r(1, grid * grid + int(cls), d), "norm.weight": 1 + r(d), "norm.bias": r(d)}
    if cls:
        sd["cls_token"] = r(1, 1, d)
    b = "blocks.0."
    sd.update({b + "norm1.weight": 1 + r(d), b + "norm1.bias": r(d), b + "attn.qkv.weight": r(3 * d, d),
               b + "attn.qkv.bias": r(3 * d), b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d),
               b + "norm2.weight": 1 + r(d), b + "norm2.bias": r(d), b + "mlp.fc1.weight": r(m, d),
               b + "mlp.fc1.bias": r(m), b + "mlp.fc2.weight": r(d, m), b + "mlp.fc2.bias": r(d)})
    return {prefix + k: v for k, v in sd.items()}


def open_clip_text_state(d=24, m=48, vocab=16, length=4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)

    def r(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    b = "text.transformer.resblocks.0."
    return {"text.token_embedding.weight": r(vocab, d), "text.positional_embedding": r(length, d),
            b + "ln_1.weight": 1 + r(d), b + "ln_1.bias": r(d), b + "attn.in_proj_weight": r(3 * d, d),
            b + "attn.in_proj_bias": r(3 * d), b + "attn.out_proj.weight": r(d, d), b + "attn.out_proj.bias": r(d),
            b + "ln_2.weight": 1 + r(d), b + "ln_2.bias": r(d), b + "mlp.c_fc.weight": r(m, d),
            b + "mlp.c_fc.bias": r(m), b + "mlp.c_proj.weight": r(d, m), b + "mlp.c_proj.bias": r(d),
            "text.ln_final.weight": 1 + r(d), "text.ln_final.bias": r(d), "text.text_projection.weight": r(d, d),
            "text.text_projection.bias": r(d), "logit_scale": np.array(2.3, np.float32),
            "logit_bias": np.array(-10.0, np.float32)}


TIMM_CONFIG = {"architecture": "vit_base_patch16_224", "num_classes": 0, "num_features": 24, "global_pool": "token",
               "model_args": {"img_size": 8, "patch_size": 4, "embed_dim": 24, "depth": 1, "num_heads": 12},
               "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 0}}
OPEN_CLIP_CONFIG = {
    "model_cfg": {"embed_dim": 24,
                  "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False,
                                 "timm_pool": "token", "timm_proj": "none", "image_size": 8},
                  "text_cfg": {"context_length": 4, "vocab_size": 16, "width": 24, "heads": 4, "layers": 1,
                               "no_causal_mask": True, "pool_type": "last", "proj_type": "linear",
                               "proj_bias": True, "norm_kwargs": {"eps": 1e-6},
                               "act_kwargs": {"approximate": "tanh"}}},
    "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}


def write_timm(folder: Path, config: dict | None = None) -> Path:
    """A timm hub folder: config.json + model.safetensors."""
    import safetensors.numpy

    folder.mkdir(parents=True)
    safetensors.numpy.save_file(timm_state(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(TIMM_CONFIG if config is None else config))
    return folder


def write_open_clip(folder: Path, config: dict | None = None) -> Path:
    """An open_clip hub folder: open_clip_config.json + open_clip_model.safetensors (timm trunk + text tower)."""
    import safetensors.numpy

    folder.mkdir(parents=True)
    safetensors.numpy.save_file({**timm_state(prefix="visual.trunk."), **open_clip_text_state()},
                                str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps(OPEN_CLIP_CONFIG if config is None else config))
    return folder
