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
from harness.schema import Doc

# open_clip's `PreprocessCfg` default (OPENAI_DATASET_MEAN/STD), used where the file does not state its own
# input normalisation.
OPEN_CLIP_DEFAULT_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def _open_clip_sources(path: Path) -> tuple[Path, Doc]:
    if path.is_dir():
        return weights_file(path, "open_clip_model.safetensors"), read_json(path / OPEN_CLIP_CONFIG)
    if (path.parent / OPEN_CLIP_CONFIG).is_file():
        return path, read_json(path.parent / OPEN_CLIP_CONFIG)
    raise HarnessError(f"checkpoint {path}: an open_clip .safetensors without its {OPEN_CLIP_CONFIG} (the model "
                       "config: timm trunk name, text tower); give the folder open_clip.push_to_hf_hub writes")


def _model_cfg(cfg: Doc, path) -> Doc:
    mc = cfg.obj("model_cfg") if cfg.has("model_cfg") else cfg
    mc.obj("vision_cfg")
    if mc.raw("multimodal_cfg"):
        raise refuse(path, "open_clip model", "a multimodal text decoder (CoCa)")
    return mc


def open_clip_vision_facts(vision_cfg: Doc, path) -> tuple[dict, str]:
    """(facts of the timm trunk, the projection after it) from open_clip's `CLIPVisionCfg`, as
    `open_clip/timm_model.py::TimmModel` builds it: `timm_pool` overrides the architecture's pooling
    (default 'avg'), `timm_proj` 'none' keeps no head, '' keeps timm's own head as the projection,
    'linear' adds `visual.head.proj`."""
    arch = vision_cfg.str("timm_model_name", None, null_is_default=True)
    if not arch:
        raise refuse(path, "open_clip model", "open_clip's own VisionTransformer image tower (not a timm trunk)")
    pool = vision_cfg.str("timm_pool", "avg")
    proj = vision_cfg.str("timm_proj", "linear")
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
    vision_cfg = mc.obj("vision_cfg")
    facts, proj = open_clip_vision_facts(vision_cfg, path)
    norm = norm_of(cfg.obj("preprocess_cfg", {}, null_is_default=True), OPEN_CLIP_DEFAULT_NORM)
    sd = load_safetensors(weights, keep=lambda k: k.startswith("visual."))  # the text tower: read_text
    what = f"open_clip image trunk {vision_cfg.str('timm_model_name')}"
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
    return fold_normalisation(flat, *norm), hints(facts)


# open_clip/model.py::CLIPTextCfg defaults, for the keys a SigLIP-style config may leave out.
_TEXT_DEFAULTS = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12, mlp_ratio=4.0,
                      ls_init_value=None, embed_cls=False, no_causal_mask=False, pool_type="argmax",
                      proj_bias=False, proj_type="linear", act_kwargs=None, norm_kwargs=None, hf_model_name=None,
                      block_type=None, qk_norm=False, scaled_cosine_attn=False, scale_heads=False,
                      scale_attn_inner=False, scale_attn=False, scale_fc=False)


def open_clip_text_facts(mc: Doc, path) -> dict:
    """{num_heads, gelu, pool_type} of open_clip's `TextTransformer` as `open_clip/model.py::_build_text_tower`
    builds it from `text_cfg`, or a refusal naming what the harness's text tower (big_vision's: pre-LN
    blocks, no causal mask, final LN, pooled at one position, Dense head) does not compute."""
    t = mc.obj("text_cfg", {}, null_is_default=True)
    d = _TEXT_DEFAULTS
    tc = {"hf_model_name": t.str("hf_model_name", None, null_is_default=True),
          "no_causal_mask": t.bool("no_causal_mask", d["no_causal_mask"]),
          "pool_type": t.str("pool_type", d["pool_type"]),
          **{k: t.bool(k, d[k]) for k in ("embed_cls", "qk_norm", "scaled_cosine_attn", "scale_heads",
                                            "scale_attn_inner", "scale_attn", "scale_fc")},
          "ls_init_value": t.number("ls_init_value", None, null_is_default=True),
          "block_type": t.str("block_type", None, null_is_default=True),
          "proj_type": t.str("proj_type", d["proj_type"]),
          "heads": t.int("heads", d["heads"], min=1)}
    norm_kwargs = t.obj("norm_kwargs", {}, null_is_default=True)
    act_kwargs = t.obj("act_kwargs", {}, null_is_default=True)
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
    norm = dict(norm_kwargs.value)
    eps = norm_kwargs.number("eps", 1e-5)  # open_clip's LayerNorm is torch's: eps 1e-5 unless norm_kwargs set it
    norm.pop("eps", None)
    if norm or eps != 1e-6:
        raise refuse(path, what, f"LayerNorm {dict(eps=eps, **norm)} (the harness's is eps 1e-6)")
    if mc.bool("quick_gelu", False, null_is_default=True):
        raise refuse(path, what, "QuickGELU (quick_gelu=true)")
    act = dict(act_kwargs.value)
    approximate = act_kwargs.str("approximate", "none")  # nn.GELU(**act_kwargs); SigLIP 2 configs set "tanh"
    act.pop("approximate", None)
    if act or approximate not in ("none", "tanh"):
        raise refuse(path, what, f"activation nn.GELU(**{act_kwargs.value})")
    return {"num_heads": tc["heads"], "gelu": "exact" if approximate == "none" else "tanh",
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
    tc = mc.obj("text_cfg", {}, null_is_default=True)
    hf_name = tc.str("hf_tokenizer_name", None, null_is_default=True)
    # HFTokenizer's default clean is "whitespace"
    clean = tc.obj("tokenizer_kwargs", {}, null_is_default=True).str("clean", "whitespace", null_is_default=True)
    if hf_name and clean != "canonicalize":
        raise HarnessError(f"checkpoint {path}: open_clip cleans this tower's text with clean={clean!r}; only "
                           "'canonicalize' (every SigLIP config's) is replicated: pass --set text_pp=big_vision")
    hf_folder = str(folder) if (folder / "tokenizer_config.json").exists() else None
    spm = sorted(folder.glob("*.model"))
    return {"txt": txt, "t": scale, "b": bias, "path": str(path), "format": "open_clip",
            "tokenizer": str(spm[0]) if spm else None, "gelu": facts["gelu"], "pool_type": facts["pool_type"],
            "text_pp": "open_clip" if hf_name else "big_vision",
            "hf_tokenizer_folder": hf_folder, "hf_tokenizer_name": hf_name}
