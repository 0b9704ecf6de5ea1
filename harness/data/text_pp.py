"""Text pp: how a text tower's texts become token ids, and which tokenizer and rule a tower is fed.

`TextPP` names the rule (a checkpoint family's own: big_vision SigLIP / LiT: sticky EOS, padded with the EOS
id; a HF SigLIP folder: its processor's tokens; an open_clip folder: its tokenizer call), recorded in every
result; `choose_text_pp` picks the tokenizer and the rule for a tower (`harness.models.text.TextTower`) from
what its checkpoint states and the task's settings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.data.tokenizer import (
    HF_GEMMA_CLASSES,
    PROXY_TOKENIZER,
    HFGemmaTokenizer,
    JsonTokenizer,
    SiglipTokenizer,
    Tokenizer,
    as_text,
    canonicalize_text,
    hf_tokenizer_class,
    is_gemma_vocabulary,
)
from harness.errors import HarnessError


def tokenize(tokenizer, texts, max_len: int, *, pad_value: int | None = None) -> np.ndarray:
    """big_vision's `tokenize(max_len, eos='sticky', pad_value=...)`: lower-cased, EOS kept on truncation,
    padded with `pad_value` (the tokenizer's "<pad>" id when None, as big_vision's default)."""
    return tokenizer.encode(list(texts), max_len, eos="sticky", pad_id=pad_value)


# "big_vision": SigLIP / LiT two-tower checkpoints (.npz, tensorstore); "siglip2": big_vision's SigLIP 2 text
# pp (its Gemma vocabulary), for SigLIP 2 checkpoints of every layout; "hf_siglip": a Hugging Face SigLIP
# folder's own processor; "hf_siglip2": a SigLIP 2 folder's processor (transformers 5.24); "open_clip": an
# open_clip SigLIP folder's tokenizer call; "lit": a tower the harness trains (the big_vision rule, for
# training and eval).
TEXT_PP_FAMILIES = ("big_vision", "siglip2", "hf_siglip", "hf_siglip2", "open_clip", "lit")


@dataclasses.dataclass(frozen=True)
class TextPP:
    """How texts become a tower's token ids; `info()` goes into the result record.

    big_vision / lit: `tokenize(max_len=L, eos="sticky", pad_value=<EOS id>)`, ASCII lower-casing
    (tf.strings.lower), no other canonicalisation (`configs/proj/image_text/common.py::get_coco`,
    `evaluators/proj/image_text/discriminative_classifier.py` pp_txt: pad_value=1, c4_en's EOS).
    hf_siglip: `SiglipProcessor(text, padding="max_length", truncation=True, max_length=L)`: every text
    lower-cased (Python's str.lower, `do_lower_case`) and stripped of punctuation, EOS kept on truncation,
    padded with the tokenizer's `pad_token` ("</s>" for google/siglip-*); see `harness.data.tokenizer`.
    open_clip: `open_clip.tokenizer.HFTokenizer(clean="canonicalize")`: big_vision's `canonicalize_text`
    ("_" -> " ", punctuation removed, lower-cased), then the folder's Hugging Face tokenizer as
    `tokenizer(texts, max_length=L, padding="max_length", truncation=True)`: hf_siglip's ids for a SigLIP
    tokenizer, hf_siglip2's (`HFGemmaTokenizer`) for a SigLIP 2 tower's Gemma tokenizer.
    siglip2: big_vision's SigLIP 2 text pp, `lower(key="text")|tok(length=L, model="gemma", bos="no",
    eos="sticky")` (configs/proj/image_text/SigLIP2_demo.ipynb, L = SEQLEN = 64): ASCII lower-casing
    (tf.strings.lower), the Gemma vocabulary, no BOS, EOS appended and kept last on truncation, padded with
    sentencepiece's pad id (`<pad>` = 0 in Gemma's; pp/proj/paligemma/ops.py `tok`), not with EOS as SigLIP's.
    hf_siglip2: `tokenizer(text, padding="max_length", max_length=L, truncation=True)` of the folder's tokenizer
    as transformers 5.24 loads it (`harness.data.tokenizer.HFGemmaTokenizer`): no lower-casing for a
    fixed-resolution SigLIP 2 folder (GemmaTokenizer), Unicode lower-casing for a NaFlex one (Siglip2Tokenizer),
    special-token strings in a text read as those tokens, padded on the folder's padding_side.
    """

    family: str
    max_len: int
    pad_id: int
    eos: str = "sticky"
    lower: str = "ascii"  # "ascii" (tf.strings.lower), "unicode" (str.lower) or "none"
    canonicalize: bool = False  # punctuation removed and whitespace collapsed in every text

    def info(self) -> dict:
        return dataclasses.asdict(self)


def text_pp_for(family: str, tokenizer, max_len: int, *, pad_value: int | None = None) -> TextPP:
    """The family's own text pp for `tokenizer` at `max_len`; `pad_value` (>= 0) overrides the pad id."""
    if family not in TEXT_PP_FAMILIES:
        raise HarnessError(f"text_pp {family!r} is not one of {', '.join(TEXT_PP_FAMILIES)}")
    if family == "hf_siglip2":
        if not isinstance(tokenizer, HFGemmaTokenizer):
            raise HarnessError("text_pp hf_siglip2 needs a Hugging Face SigLIP 2 folder (tokenizer.json + "
                               "tokenizer_config.json); use text_pp=siglip2 with a sentencepiece .model file")
        pad = tokenizer.hf_pad_id if pad_value is None else int(pad_value)
        return TextPP(family, int(max_len), pad, lower="unicode" if tokenizer.lowercase else "none")
    if isinstance(tokenizer, HFGemmaTokenizer) and family == "open_clip":  # open_clip's SigLIP 2 towers
        pad = tokenizer.hf_pad_id if pad_value is None else int(pad_value)
        return TextPP(family, int(max_len), pad, lower="unicode", canonicalize=True)
    if isinstance(tokenizer, HFGemmaTokenizer):
        raise HarnessError(f"text_pp {family} takes a sentencepiece model (or a SigLIP 2 folder's tokenizer.json "
                           "through text_pp=siglip2), not the HF processor")
    if family == "siglip2":
        if tokenizer.eos_id < 0:
            raise HarnessError(f"tokenizer {tokenizer.model_path} has no EOS piece; big_vision's SigLIP 2 text pp "
                               "appends EOS (pass the Gemma vocabulary)")
        pad = tokenizer.spm_pad_id if pad_value is None else int(pad_value)
        if pad < 0:
            raise HarnessError(f"tokenizer {tokenizer.model_path} has no pad piece; big_vision's SigLIP 2 text pp "
                               "pads with it (pass the Gemma vocabulary, or --set pad_value=N)")
        return TextPP(family, int(max_len), pad)
    if family in ("hf_siglip", "open_clip"):
        if not isinstance(tokenizer, SiglipTokenizer):
            raise HarnessError(f"text_pp {family} needs a Hugging Face SigLIP tokenizer folder (spiece.model "
                               "+ tokenizer_config.json); use text_pp=big_vision with a plain .model file")
        pad = tokenizer.hf_pad_id if pad_value is None else int(pad_value)
        lower = "unicode" if tokenizer.do_lower_case or family == "open_clip" else "none"
        return TextPP(family, int(max_len), pad, lower=lower, canonicalize=True)
    if tokenizer.eos_id < 0:
        raise HarnessError(f"sentencepiece model {tokenizer.model_path} has no EOS piece; big_vision's text pp "
                           "pads with EOS (pass a model with one)")
    # big_vision's SigLIP text pp pads with the EOS id so the pooled last position is an EOS
    # (configs/proj/image_text/common.py::get_coco `pad_value=1`, 1 = c4_en's "</s>").
    pad = tokenizer.eos_id if pad_value is None else int(pad_value)
    return TextPP(family, int(max_len), pad)


def tokenize_pp(tokenizer, texts, pp: TextPP) -> np.ndarray:
    """Texts -> int32 [N, pp.max_len] under `pp`."""
    if pp.family in ("hf_siglip", "hf_siglip2"):
        return tokenizer.encode_hf(list(texts), pp.max_len, pad_id=pp.pad_id)
    if pp.family == "open_clip":
        return tokenizer.encode_hf([canonicalize_text(as_text(t)) for t in texts], pp.max_len, pad_id=pp.pad_id)
    return tokenizer.encode(list(texts), pp.max_len, eos=pp.eos, lower=pp.lower == "ascii", pad_id=pp.pad_id)

# The `text_pp` setting: "auto" = the checkpoint family's own; or force one of the rules.
TEXT_PP_CHOICES = ("auto", "big_vision", "siglip2", "hf_siglip", "hf_siglip2", "open_clip")


def _vocabulary(path: str) -> Tokenizer:
    """A sentencepiece `.model`, or a Hugging Face `tokenizer.json` read under big_vision's rules."""
    return JsonTokenizer(path) if str(path).endswith(".json") else Tokenizer(path)


def choose_text_pp(tower_config: dict | None, max_len: int, *, text_pp: str = "auto", tokenizer: str = "",
                   pad_value: int = -1, proxy_ok: bool = False) -> tuple[Tokenizer, TextPP]:
    """(tokenizer, TextPP) for a loaded checkpoint tower (`tower_config`: its `config`) or for a tower about
    to be trained (None: family "lit"), `max_len` tokens long. `text_pp`: "auto" (the family's own) or a
    rule; `tokenizer`: a sentencepiece file (for a HF / open_clip folder: only its vocabulary); `pad_value`:
    -1 for the rule's own pad id; `proxy_ok`: with no tokenizer given or shipped, the proxy tasks' own
    vocabulary may be used (every dataset is a generated proxy)."""
    if text_pp not in TEXT_PP_CHOICES:
        raise HarnessError(f"text_pp {text_pp!r} is not one of {', '.join(TEXT_PP_CHOICES)}")
    own = tower_config.get("text_pp", "big_vision") if tower_config is not None else "lit"
    family = own if text_pp == "auto" else text_pp
    ckpt = (tower_config.get("checkpoint") or {}) if tower_config is not None else {}
    if family == "hf_siglip2":
        if ckpt.get("format") != "hf" or not tower_config.get("hf_tokenizer_folder"):
            raise HarnessError("text_pp hf_siglip2 needs a Hugging Face SigLIP 2 folder as the checkpoint; use "
                               "text_pp=siglip2 or auto")
        if tokenizer:
            raise HarnessError("text_pp hf_siglip2 is the folder's own processor: drop --set tokenizer")
        chosen = HFGemmaTokenizer(tower_config["hf_tokenizer_folder"], model_type=tower_config.get("hf_model_type"))
    elif family == "hf_siglip":
        if tower_config.get("text_pp") == "siglip2":
            raise HarnessError("text_pp hf_siglip is SigLIP's SiglipTokenizer; this is a SigLIP 2 folder (a Gemma "
                               "tokenizer): use text_pp=hf_siglip2 for its processor")
        if ckpt.get("format") != "hf":
            raise HarnessError("text_pp hf_siglip needs a Hugging Face SigLIP folder as the checkpoint; use "
                               "text_pp=big_vision or auto")
        # The folder's processor rules; --set tokenizer swaps only the vocabulary file.
        chosen = SiglipTokenizer(ckpt["path"], vocab_file=tokenizer or tower_config.get("tokenizer"))
    elif family == "open_clip":
        if ckpt.get("format") != "open_clip":
            raise HarnessError("text_pp open_clip needs an open_clip SigLIP folder as the checkpoint; use "
                               "text_pp=big_vision or auto")
        folder = tower_config.get("hf_tokenizer_folder")
        if not folder:
            raise HarnessError(
                f"checkpoint {ckpt['path']}: open_clip tokenizes this tower's text with the Hugging Face tokenizer "
                f"{tower_config.get('hf_tokenizer_name') or '(see open_clip_config.json)'}, which the folder does "
                "not hold; save it there (AutoTokenizer.from_pretrained(name).save_pretrained(folder)), or pass "
                "--set text_pp=big_vision --set tokenizer=PATH")
        chosen = HFGemmaTokenizer(folder) if hf_tokenizer_class(folder) in HF_GEMMA_CLASSES and not tokenizer else \
            SiglipTokenizer(folder, vocab_file=tokenizer or None)
    elif tokenizer:
        chosen = _vocabulary(tokenizer)
    elif tower_config is not None and tower_config.get("tokenizer"):
        chosen = _vocabulary(tower_config["tokenizer"])
    else:
        if not proxy_ok:
            raise HarnessError("no tokenizer: pass a sentencepiece model with --set tokenizer=PATH (the "
                               "checkpoint's own for a two-tower checkpoint; e.g. a 32k c4_en model for LiT, as in "
                               "the paper)")
        chosen = Tokenizer(PROXY_TOKENIZER)
    if text_pp == "auto" and family == "big_vision" and is_gemma_vocabulary(chosen):
        # A big_vision two-tower tower on the Gemma vocabulary is a SigLIP 2 tower: its own text pp is SigLIP 2's.
        family = "siglip2"
    return chosen, text_pp_for(family, chosen, max_len, pad_value=None if pad_value < 0 else pad_value)


__all__ = ["TEXT_PP_CHOICES", "TEXT_PP_FAMILIES", "TextPP", "choose_text_pp", "text_pp_for", "tokenize",
           "tokenize_pp"]
