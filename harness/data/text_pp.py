"""Text pp: how a text tower's texts become token ids, and which tokenizer and rule a tower is fed.

`TextPP` names the rule (a checkpoint family's own: big_vision SigLIP / LiT: sticky EOS, padded with the EOS
id; a HF SigLIP folder: its processor's tokens; an open_clip folder: its tokenizer call), recorded in every
result; `choose_text_pp` picks the tokenizer and the rule for a tower (`harness.models.text.TextTower`) from
what its checkpoint states and the task's settings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.data.tokenizer import PROXY_TOKENIZER, SiglipTokenizer, Tokenizer, as_text, canonicalize_text
from harness.errors import HarnessError


def tokenize(tokenizer, texts, max_len: int, *, pad_value: int | None = None) -> np.ndarray:
    """big_vision's `tokenize(max_len, eos='sticky', pad_value=...)`: lower-cased, EOS kept on truncation,
    padded with `pad_value` (the tokenizer's "<pad>" id when None, as big_vision's default)."""
    return tokenizer.encode(list(texts), max_len, eos="sticky", pad_id=pad_value)


# "big_vision": SigLIP / LiT two-tower checkpoints (.npz, tensorstore); "hf_siglip": a Hugging Face SigLIP
# folder's own processor; "open_clip": an open_clip SigLIP folder's tokenizer call; "lit": a tower the
# harness trains (the big_vision rule, for training and eval).
TEXT_PP_FAMILIES = ("big_vision", "hf_siglip", "open_clip", "lit")


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
    ("_" -> " ", punctuation removed, lower-cased), then the folder's Hugging Face SigLIP tokenizer as
    `batch_encode_plus(max_length=L, padding="max_length", truncation=True)`, i.e. hf_siglip's ids.
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
    if pp.family == "hf_siglip":
        return tokenizer.encode_hf(list(texts), pp.max_len, pad_id=pp.pad_id)
    if pp.family == "open_clip":
        return tokenizer.encode_hf([canonicalize_text(as_text(t)) for t in texts], pp.max_len, pad_id=pp.pad_id)
    return tokenizer.encode(list(texts), pp.max_len, eos=pp.eos, lower=pp.lower == "ascii", pad_id=pp.pad_id)

# The `text_pp` setting: "auto" = the checkpoint family's own; or force one of the rules.
TEXT_PP_CHOICES = ("auto", "big_vision", "hf_siglip", "open_clip")


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
    if family == "hf_siglip":
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
        chosen = SiglipTokenizer(folder, vocab_file=tokenizer or None)
    elif tokenizer:
        chosen = Tokenizer(tokenizer)
    elif tower_config is not None and tower_config.get("tokenizer"):
        chosen = Tokenizer(tower_config["tokenizer"])
    else:
        if not proxy_ok:
            raise HarnessError("no tokenizer: pass a sentencepiece model with --set tokenizer=PATH (the "
                               "checkpoint's own for a two-tower checkpoint; e.g. a 32k c4_en model for LiT, as in "
                               "the paper)")
        chosen = Tokenizer(PROXY_TOKENIZER)
    return chosen, text_pp_for(family, chosen, max_len, pad_value=None if pad_value < 0 else pad_value)


__all__ = ["TEXT_PP_CHOICES", "TEXT_PP_FAMILIES", "TextPP", "choose_text_pp", "text_pp_for", "tokenize",
           "tokenize_pp"]
