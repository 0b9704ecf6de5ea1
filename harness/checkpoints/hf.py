"""Hugging Face SigLIP folders (`config.json` + `model.safetensors`, as `save_pretrained` writes them),
converted by name into big_vision's trees: the vision tower into the ViT's, the text tower into
big_vision's `text_transformer` (Linear weights (out, in) -> (in, out), heads split)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from harness.checkpoints.layout import text_tower
from harness.checkpoints.safetensors_io import load_safetensors
from harness.errors import HarnessError
from harness.schema import Doc, read_json

# SigLIP's tanh-approximated GELU under the names transformers gives it; the exact GELU is not SigLIP's.
_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def detect(path: Path) -> bool:
    if not (path.is_dir() and (path / "config.json").exists()):
        return False
    if not list(path.glob("*.safetensors")):
        raise HarnessError(f"checkpoint {path}: a Hugging Face folder without .safetensors weights; "
                           "export it with save_pretrained(..., safe_serialization=True) (pickled .bin "
                           "files are never loaded)")
    return True


def _config(path: Path) -> Doc:
    return read_json(path / "config.json", what="Hugging Face config",
                     fix="re-export the model with save_pretrained").require_obj("a JSON object")


# The harness's ViT and text tower normalise with big_vision's LayerNorm eps (flax nn.LayerNorm(1e-6));
# SiglipConfig's default is the same.
LAYER_NORM_EPS = 1e-6


def _tower(cfg: Doc, key: str, tower: str) -> dict:
    """The fields the harness uses of a SigLIP tower's config (`vision_config` / `text_config`, or the file
    itself for a single-tower config), typed; the defaults are SiglipVisionConfig's / SiglipTextConfig's."""
    if tower == "vision":
        v = cfg.obj(key) if cfg.has(key) else cfg  # a SiglipVisionModel's config is the tower's own
    else:
        v = cfg.obj(key, {})
    act = v.str("hidden_act", "gelu_pytorch_tanh")
    if act not in _TANH_GELU:
        raise HarnessError(f"Hugging Face {tower} config uses activation {act!r}; only the tanh-approximated "
                           "GELU of SigLIP is supported")
    eps = v.number("layer_norm_eps", LAYER_NORM_EPS, positive=True)
    if abs(eps - LAYER_NORM_EPS) > 1e-12:
        raise HarnessError(f"{cfg.file}: field {v.field('layer_norm_eps')} is {eps}; the harness's towers "
                           f"normalise with eps {LAYER_NORM_EPS} (big_vision's), so this model is refused rather "
                           "than loaded approximately")
    out = {"heads": v.int("num_attention_heads", 12, min=1),
           "width": v.int("hidden_size", 768, min=1)}
    if out["width"] % out["heads"]:
        raise v.error(f"a number of heads that divides hidden_size {out['width']}", "num_attention_heads",
                      out["heads"])
    for k, default in (("num_hidden_layers", 12), ("intermediate_size", 3072)):
        out[k] = v.int(k, default, min=1)
    if tower == "vision":
        out["patch_size"] = v.int("patch_size", 16, min=1)
        out["image_size"] = v.int("image_size", 224, min=1)
        out["vision_use_head"] = v.bool("vision_use_head", True)
    else:
        v.int("vocab_size", 32000, min=1)
        v.int("max_position_embeddings", 64, min=1)
    return out


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_safetensors(f))
    return out


def _tensor(hf: dict, tower: str):
    def t(name):
        if name not in hf:
            raise HarnessError(f"Hugging Face checkpoint lacks tensor {name!r}; is it a SigLIP {tower} tower?")
        return np.asarray(hf[name])
    return t


def _layers(hf: dict, prefix: str) -> list[int]:
    return sorted({int(m.group(1)) for k in hf if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))})


# --------------------------------------------------------------------------------------- vision tower
def hf_vision_to_bv(hf: dict[str, np.ndarray], num_heads: int, prefix: str = "vision_model.", *,
                    naflex: bool = False) -> dict:
    """Renames a Hugging Face SigLIP vision tower (torch layout) into big_vision's tree, transposing
    Linear weights (out, in) -> (in, out) and splitting heads; `naflex`: a SigLIP 2 `Siglip2VisionModel`
    (big_vision's naflex_vit tree)."""
    t = _tensor(hf, "vision")
    p = prefix
    out: dict[str, np.ndarray] = {}
    w = t(p + "embeddings.patch_embedding.weight")  # (D, 3, p, p); SigLIP 2 NaFlex: (D, p*p*3)
    if w.ndim != (2 if naflex else 4):
        shape = "(width, patch*patch*3) (a SigLIP 2 NaFlex Linear)" if naflex else "(width, 3, patch, patch)"
        raise HarnessError(f"Hugging Face vision tower: patch embedding of shape {tuple(w.shape)}, not {shape}; the "
                           "file is corrupt or its config.json is not its model's")
    d = w.shape[0]
    if d % num_heads:
        raise HarnessError(f"Hugging Face vision config: hidden size {d} (the tensors') is not divisible by "
                           f"{num_heads} heads")
    hd = d // num_heads
    out["embedding/bias"] = t(p + "embeddings.patch_embedding.bias")
    if naflex:
        out.update(naflex_embeddings(w, t(p + "embeddings.position_embedding.weight")))
    else:
        out["embedding/kernel"] = w.transpose(2, 3, 1, 0)
        out["pos_embedding"] = t(p + "embeddings.position_embedding.weight")[None]

    def attn(dst, q, k, v, o):
        for name, (wn, bn) in zip(("query", "key", "value"), (q, k, v)):
            out[f"{dst}/{name}/kernel"] = wn.T.reshape(d, num_heads, hd)
            out[f"{dst}/{name}/bias"] = bn.reshape(num_heads, hd)
        out[f"{dst}/out/kernel"] = o[0].T.reshape(num_heads, hd, d)
        out[f"{dst}/out/bias"] = o[1]

    def ln(dst, src):
        out[f"{dst}/scale"], out[f"{dst}/bias"] = t(src + ".weight"), t(src + ".bias")

    def mlp(dst, src):
        for i, fc in enumerate(("fc1", "fc2")):
            out[f"{dst}/Dense_{i}/kernel"] = t(f"{src}.{fc}.weight").T
            out[f"{dst}/Dense_{i}/bias"] = t(f"{src}.{fc}.bias")

    for i in _layers(hf, p):
        src, dst = f"{p}encoder.layers.{i}", f"Transformer/encoderblock_{i}"
        ln(f"{dst}/LayerNorm_0", f"{src}.layer_norm1")
        a = f"{src}.self_attn"
        attn(f"{dst}/MultiHeadDotProductAttention_0",
             *[(t(f"{a}.{n}_proj.weight"), t(f"{a}.{n}_proj.bias")) for n in ("q", "k", "v")],
             (t(f"{a}.out_proj.weight"), t(f"{a}.out_proj.bias")))
        ln(f"{dst}/LayerNorm_1", f"{src}.layer_norm2")
        mlp(f"{dst}/MlpBlock_0", f"{src}.mlp")
    ln("Transformer/encoder_norm", p + "post_layernorm")
    if p + "head.probe" in hf:
        out["MAPHead_0/probe"] = t(p + "head.probe")
        wi, bi = t(p + "head.attention.in_proj_weight"), t(p + "head.attention.in_proj_bias")
        attn("MAPHead_0/MultiHeadDotProductAttention_0",
             *[(wi[j * d:(j + 1) * d], bi[j * d:(j + 1) * d]) for j in range(3)],
             (t(p + "head.attention.out_proj.weight"), t(p + "head.attention.out_proj.bias")))
        ln("MAPHead_0/LayerNorm_0", p + "head.layernorm")
        mlp("MAPHead_0/MlpBlock_0", p + "head.mlp")
    return out


def hf_vision_config(cfg: Doc) -> dict:
    """Reads a Hugging Face SigLIP `config.json` (vision or two-tower) into our encoder config."""
    v = _tower(cfg, "vision_config", "vision")
    p = v["patch_size"]
    return dict(width=v["width"], depth=v["num_hidden_layers"], mlp_dim=v["intermediate_size"],
                num_heads=v["heads"], patch_size=(p, p), pool_type="map" if v["vision_use_head"] else "none",
                posemb="learn", res=v["image_size"])


def read_hf(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    cfg = _config(path)
    naflex = is_siglip2(cfg)
    config = hf_siglip2_vision_config(cfg, path) if naflex else hf_vision_config(cfg)
    hf = read_safetensors(path)
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in hf) else ""
    return hf_vision_to_bv(hf, config["num_heads"], prefix, naflex=naflex), config


def read_image(path: Path, subtree: str | None) -> tuple[dict, dict]:
    if subtree not in (None, "img", "vision_model"):
        raise HarnessError(f"checkpoint {path}: a Hugging Face folder has no sub-tree {subtree!r}; use ':img'")
    return read_hf(path)


# ----------------------------------------------------------------------------------------- text tower
def hf_text_to_bv(hf: dict[str, np.ndarray], num_heads: int, prefix: str = "text_model.") -> dict:
    """Renames a Hugging Face SiglipTextModel (torch layout) into big_vision's text_transformer tree.

    HF's `final_layer_norm` is big_vision's `Encoder_0/encoder_norm` and its `head` is big_vision's
    `head`; both pool at the last position, so the converted tower reproduces HF's pooler_output.
    """
    t = _tensor(hf, "text")
    p = prefix
    out: dict[str, np.ndarray] = {}
    out["Embed_0/embedding"] = t(p + "embeddings.token_embedding.weight")
    out["pos_embedding"] = t(p + "embeddings.position_embedding.weight")[None]
    d = out["Embed_0/embedding"].shape[1]
    if d % num_heads:
        raise HarnessError(f"Hugging Face text config: hidden size {d} is not divisible by {num_heads} heads")
    hd = d // num_heads
    for i in _layers(hf, p):
        src, dst = f"{p}encoder.layers.{i}", f"Encoder_0/encoderblock_{i}"
        for ln_dst, ln_src in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_1", "layer_norm2")):
            out[f"{dst}/{ln_dst}/scale"] = t(f"{src}.{ln_src}.weight")
            out[f"{dst}/{ln_dst}/bias"] = t(f"{src}.{ln_src}.bias")
        att = f"{dst}/MultiHeadDotProductAttention_0"
        for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            out[f"{att}/{name}/kernel"] = t(f"{src}.self_attn.{proj}.weight").T.reshape(d, num_heads, hd)
            out[f"{att}/{name}/bias"] = t(f"{src}.self_attn.{proj}.bias").reshape(num_heads, hd)
        out[f"{att}/out/kernel"] = t(f"{src}.self_attn.out_proj.weight").T.reshape(num_heads, hd, d)
        out[f"{att}/out/bias"] = t(f"{src}.self_attn.out_proj.bias")
        for j, fc in enumerate(("fc1", "fc2")):
            out[f"{dst}/MlpBlock_0/Dense_{j}/kernel"] = t(f"{src}.mlp.{fc}.weight").T
            out[f"{dst}/MlpBlock_0/Dense_{j}/bias"] = t(f"{src}.mlp.{fc}.bias")
    out["Encoder_0/encoder_norm/scale"] = t(p + "final_layer_norm.weight")
    out["Encoder_0/encoder_norm/bias"] = t(p + "final_layer_norm.bias")
    if p + "head.weight" in hf:
        out["head/kernel"] = t(p + "head.weight").T
        out["head/bias"] = t(p + "head.bias")
    return out


def read_text(path: Path) -> dict | None:
    cfg = _config(path)
    hf = read_safetensors(path)
    prefix = "text_model."
    if not any(k.startswith(prefix) for k in hf):
        return None
    tc = _tower(cfg, "text_config", "text")
    flat = {f"txt/{k}": v for k, v in hf_text_to_bv(hf, tc["heads"], prefix).items()}
    for src, dst in (("logit_scale", "t"), ("logit_bias", "b")):
        if src in hf:
            flat[dst] = np.asarray(hf[src])
    gemma = gemma_tokenizer_files(path, cfg)
    if gemma is not None:  # SigLIP 2: evaluated with big_vision's SigLIP 2 text pp on the folder's vocabulary
        tower = text_tower(flat, path=path, fmt="hf", tokenizer=gemma, text_pp="siglip2")
        if tower is not None:
            tower.update(hf_tokenizer_folder=str(path),
                         hf_model_type=cfg.str("model_type", None, null_is_default=True))
        return tower
    # SiglipTokenizer's vocabulary file is `spiece.model` (tokenization_siglip.py VOCAB_FILES_NAMES).
    spm = [path / "spiece.model"] if (path / "spiece.model").is_file() else sorted(path.glob("*.model"))
    return text_tower(flat, path=path, fmt="hf", tokenizer=str(spm[0]) if spm else None, text_pp="hf_siglip")


# ---------------------------------------------------------------------------------------------- SigLIP 2
# transformers' SigLIP 2 folders: fixed-resolution ones are `SiglipModel`s (model_type "siglip") with a Gemma
# tokenizer; NaFlex ones are `Siglip2Model` / `Siglip2VisionModel` (model_type "siglip2": a Linear patch
# embedding over flattened patches, a square posemb grid; models/siglip2/modeling_siglip2.py).
GEMMA_TOKENIZER_CLASSES = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer", "Siglip2TokenizerFast")
# transformers' Siglip2ImageProcessor default (image_processing_siglip2.py `max_num_patches = 256`).
HF_MAX_NUM_PATCHES = 256


def _model_type(doc: Doc) -> str | None:
    return doc.str("model_type", None, null_is_default=True)


def is_siglip2(cfg: Doc) -> bool:
    """A `Siglip2Model` / `Siglip2VisionModel` config (the NaFlex encoder)."""
    return _model_type(cfg) in ("siglip2", "siglip2_vision_model") or \
        _model_type(cfg.obj("vision_config", {}, null_is_default=True)) == "siglip2_vision_model"


def naflex_embeddings(weight: np.ndarray, posemb: np.ndarray) -> dict[str, np.ndarray]:
    """`Siglip2VisionEmbeddings` -> big_vision's naflex_vit: the Linear (D, p*p*3) over (y, x, channel)-flattened
    patches is the Dense kernel's transpose; the (G*G, D) posemb is the row-major G x G grid (transformers'
    convert_siglip2_to_hf.py reshapes big_vision's (G, G, D) to (G*G, D), the model reshapes it back)."""
    g = math.isqrt(posemb.shape[0]) if posemb.ndim == 2 else 0
    if posemb.ndim != 2 or g * g != posemb.shape[0]:
        raise HarnessError(f"Hugging Face SigLIP 2 vision tower: position_embedding of shape {posemb.shape} is "
                           "not (G*G, width) of a square grid; the file is corrupt or not a SigLIP 2 checkpoint")
    return {"embedding/kernel": weight.T, "pos_embedding": posemb.reshape(g, g, posemb.shape[1])}


def hf_siglip2_vision_config(cfg: Doc, path: Path) -> dict:
    """A `Siglip2Config` / `Siglip2VisionConfig` -> our NaFlex encoder config: the patch budget is the folder's
    image processor's `max_num_patches`, else transformers' default 256."""
    v = _tower(cfg, "vision_config", "vision")
    p = v["patch_size"]
    n = HF_MAX_NUM_PATCHES
    # The image processor's settings: preprocessor_config.json (the hub's folders, transformers 4.x), or the
    # "image_processor" entry of processor_config.json (transformers 5.x's save_pretrained).
    for name, entry in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        if not (path / name).exists():
            continue
        pre = read_json(path / name, what="Hugging Face processor config",
                        fix="re-save the processor with save_pretrained").require_obj("a JSON object")
        pre = pre.obj(entry, {}, null_is_default=True) if entry else pre
        if pre.has("max_num_patches"):
            n = pre.int("max_num_patches", min=1)
            break
    return dict(width=v["width"], depth=v["num_hidden_layers"], mlp_dim=v["intermediate_size"],
                num_heads=v["heads"], patch_size=(p, p), pool_type="map" if v["vision_use_head"] else "none",
                posemb="learn", max_num_patches=n)


def gemma_tokenizer_files(path: Path, cfg: Doc) -> str | None:
    """A SigLIP 2 folder's vocabulary (its Gemma tokenizer): `tokenizer.model` (sentencepiece), else
    `tokenizer.json` (the `tokenizers` serialisation); None for a SigLIP (v1) folder. A folder is SigLIP 2's
    when its tokenizer_config.json names a Gemma tokenizer class, its config is a Siglip2Model's, or it has
    those files and no SigLIP `spiece.model`."""
    tok_file = path / "tokenizer_config.json"
    tok_cfg = read_json(tok_file, what="Hugging Face tokenizer config", fix="re-save the tokenizer with "
                        "save_pretrained").require_obj("a JSON object") if tok_file.exists() else Doc({}, tok_file)
    tok_class = tok_cfg.str("tokenizer_class", None, null_is_default=True)
    files = [path / f for f in ("tokenizer.model", "tokenizer.json") if (path / f).is_file()]
    gemma = tok_class in GEMMA_TOKENIZER_CLASSES or is_siglip2(cfg) or \
        (files and not (path / "spiece.model").is_file() and tok_class is None)
    if not gemma:
        return None
    if not files:
        raise HarnessError(f"checkpoint {path}: a SigLIP 2 folder without its Gemma tokenizer (tokenizer.model or "
                           "tokenizer.json); save the processor into it (AutoProcessor.from_pretrained(name)"
                           ".save_pretrained(folder)) or pass --set tokenizer=PATH")
    return str(files[0])
