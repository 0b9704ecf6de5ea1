"""open_clip checkpoints (safetensors only): a folder with `open_clip_config.json` (`model_cfg`,
`preprocess_cfg`) and `open_clip_model.safetensors`, as `open_clip.push_to_hf_hub` writes it (SigLIP: a timm
trunk under `visual.trunk.`, converted as a timm model (`harness.checkpoints.timm`), and open_clip's
`TextTransformer` under `text.`, plus `logit_scale` / `logit_bias`). Whatever the harness's towers cannot
compute exactly is refused with one line naming it, never loaded approximately.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from harness.checkpoints.safetensors_io import load_safetensors
from harness.checkpoints.timm import arch_facts, timm_to_bv
from harness.checkpoints.torch_common import (
    OPEN_CLIP_CONFIG,
    Tensors,
    attention,
    check_image_subtree,
    fold_normalisation,
    hints,
    layernorm,
    linear,
    norm_of,
    read_json,
    refuse,
    unsupported,
    weights_file,
)
from harness.checkpoints.torch_common import detect as torch_format
from harness.errors import HarnessError

# open_clip's `PreprocessCfg` default (OPENAI_DATASET_MEAN/STD), used where the file does not state its own
# input normalisation.
OPEN_CLIP_DEFAULT_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def _open_clip_sources(path: Path) -> tuple[Path, dict]:
    if path.is_dir():
        return weights_file(path, "open_clip_model.safetensors"), read_json(path / OPEN_CLIP_CONFIG)
    if (path.parent / OPEN_CLIP_CONFIG).is_file():
        return path, read_json(path.parent / OPEN_CLIP_CONFIG)
    raise HarnessError(f"checkpoint {path}: an open_clip .safetensors without its {OPEN_CLIP_CONFIG} (the model "
                       "config: timm trunk name, text tower); give the folder open_clip.push_to_hf_hub writes")


def _model_cfg(cfg: dict, path) -> dict:
    mc = cfg.get("model_cfg", cfg)
    if not isinstance(mc, dict) or "vision_cfg" not in mc:
        raise HarnessError(f"checkpoint {path}: {OPEN_CLIP_CONFIG} has no model_cfg.vision_cfg")
    if mc.get("multimodal_cfg"):
        raise refuse(path, "open_clip model", "a multimodal text decoder (CoCa)")
    return mc


def open_clip_vision_facts(vision_cfg: dict, path) -> tuple[dict, str]:
    """(facts of the timm trunk, the projection after it) from open_clip's `CLIPVisionCfg`, as
    `open_clip/timm_model.py::TimmModel` builds it: `timm_pool` overrides the architecture's pooling
    (default 'avg'), `timm_proj` 'none' keeps no head, '' keeps timm's own head as the projection,
    'linear' adds `visual.head.proj`."""
    arch = vision_cfg.get("timm_model_name")
    if not arch:
        raise refuse(path, "open_clip model", "open_clip's own VisionTransformer image tower (not a timm trunk)")
    pool = vision_cfg.get("timm_pool", "avg")
    proj = vision_cfg.get("timm_proj", "linear")
    if pool in ("abs_attn", "rot_attn"):
        raise refuse(path, "open_clip model", f"timm_pool={pool!r}")
    if proj not in ("none", "", "linear"):
        raise refuse(path, "open_clip model", f"timm_proj={proj!r}")
    if proj == "linear" and not pool:
        pool = None  # TimmModel then resets the classifier keeping timm's own pooling
    return arch_facts(arch, None, pool, path=path), proj


def detect(path: Path) -> bool:
    """Whether `path` is an open_clip checkpoint (`READERS`' detect)."""
    return torch_format(path) == "open_clip"


def read_image(path: Path, subtree: str | None) -> tuple[dict, dict]:
    """(flat big_vision tree, config hints) of an open_clip checkpoint's image tower."""
    check_image_subtree(path, "open_clip", subtree)
    weights, cfg = _open_clip_sources(path)
    mc = _model_cfg(cfg, path)
    facts, proj = open_clip_vision_facts(mc["vision_cfg"], path)
    sd = load_safetensors(weights, keep=lambda k: k.startswith("visual."))  # the text tower: read_text
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
        raise unsupported(path, what, left)
    flat = timm_to_bv(sd, facts, prefix="visual.trunk.", path=path, what=what)
    flat.update(head)
    flat = fold_normalisation(flat, *norm_of(cfg.get("preprocess_cfg"), OPEN_CLIP_DEFAULT_NORM))
    return flat, hints(facts)


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
        raise refuse(path, what, f"a Hugging Face text encoder ({tc['hf_model_name']})")
    if not tc["no_causal_mask"]:
        raise refuse(path, what, "a causal attention mask (CLIP-style; SigLIP's text tower has none)")
    if tc["pool_type"] not in ("last", "first"):
        raise refuse(path, what, f"pool_type={tc['pool_type']!r} (the harness pools at the last or first token)")
    for k in ("embed_cls", "qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn",
              "scale_fc"):
        if tc[k]:
            raise refuse(path, what, f"{k}={tc[k]!r}")
    if tc["ls_init_value"] is not None:
        raise refuse(path, what, "layer scale (ls_init_value)")
    if tc["block_type"] not in (None, "default"):
        raise refuse(path, what, f"block_type={tc['block_type']!r}")
    if tc["proj_type"] not in ("linear", "none"):
        raise refuse(path, what, f"proj_type={tc['proj_type']!r}")
    norm = dict(tc["norm_kwargs"] or {})
    eps = norm.pop("eps", 1e-5)  # open_clip's LayerNorm is torch's: eps 1e-5 unless norm_kwargs set it
    if norm or eps != 1e-6:
        raise refuse(path, what, f"LayerNorm {dict(eps=eps, **norm)} (the harness's is eps 1e-6)")
    if mc.get("quick_gelu"):
        raise refuse(path, what, "QuickGELU (quick_gelu=true)")
    act = dict(tc["act_kwargs"] or {})
    approximate = act.pop("approximate", "none")  # nn.GELU(**act_kwargs); SigLIP 2 configs set "tanh"
    if act or approximate not in ("none", "tanh"):
        raise refuse(path, what, f"activation nn.GELU(**{tc['act_kwargs']})")
    return {"num_heads": int(tc["heads"]), "gelu": "exact" if approximate == "none" else "tanh",
            "pool_type": tc["pool_type"], "proj_type": tc["proj_type"]}


def open_clip_text_to_bv(sd: dict, facts: dict, *, path="checkpoint") -> dict:
    """open_clip's TextTransformer (`text.*`, or top-level in a non-custom-text CLIP) -> big_vision's
    text_transformer tree: `token_embedding` -> `Embed_0/embedding`, `positional_embedding` (L, D) ->
    `pos_embedding` (1, L, D), `transformer.resblocks.{i}` (torch MultiheadAttention: `in_proj_weight` rows
    [q; k; v]) -> `Encoder_0/encoderblock_{i}`, `ln_final` -> `Encoder_0/encoder_norm`, `text_projection`
    (a Linear, or a (D, out) matrix without bias) -> `head`."""
    prefix = "text." if "text.token_embedding.weight" in sd else ""
    t = Tensors(sd, prefix, path)
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
        layernorm(t, f"{src}.ln_1", f"{dst}/LayerNorm_0", out, what)
        w, b = t.take(f"{src}.attn.in_proj_weight").T, t.take(f"{src}.attn.in_proj_bias")
        attention(out, f"{dst}/MultiHeadDotProductAttention_0",
                  *[(w[:, j * d:(j + 1) * d], b[j * d:(j + 1) * d]) for j in range(3)],
                  linear(t, f"{src}.attn.out_proj"), heads)
        layernorm(t, f"{src}.ln_2", f"{dst}/LayerNorm_1", out, what)
        for j, fc in enumerate(("c_fc", "c_proj")):
            out[f"{dst}/MlpBlock_0/Dense_{j}/kernel"], out[f"{dst}/MlpBlock_0/Dense_{j}/bias"] = \
                linear(t, f"{src}.mlp.{fc}")
    layernorm(t, "ln_final", "Encoder_0/encoder_norm", out, what)
    if t.has("text_projection.weight"):
        out["head/kernel"], out["head/bias"] = linear(t, "text_projection")
    elif t.has("text_projection"):
        p = t.take("text_projection")  # pooled @ text_projection
        out["head/kernel"], out["head/bias"] = p, np.zeros(p.shape[1], p.dtype)
    if t.left():
        raise unsupported(path, what, [prefix + k for k in t.left()])
    return out


def read_text(path: Path) -> dict:
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
    # is the one saved into the folder (tokenizer_config.json + its vocabulary: SigLIP's spiece.model, SigLIP 2's
    # Gemma tokenizer.json); a bare sentencepiece model
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
