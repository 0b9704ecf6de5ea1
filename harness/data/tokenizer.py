"""SentencePiece tokenizer with big_vision's `tokenize` pp semantics, on numpy arrays.

`encode` matches big_vision's `pp/ops_text.py` (`tokenize(max_len, eos, lower=True)`):
- `lower`: ASCII-only lower-casing, as `tf.strings.lower` does without an encoding
  ("É" stays "É").
- `eos="yes"`: append EOS, then cut to `max_len` (a truncated text loses its EOS).
- `eos="sticky"`: append EOS; if too long keep the first `max_len - 1` tokens and the EOS, so the
  last non-pad token is always EOS (two-tower text encoders pool there).
- `eos="no"` (alias "none"): no EOS, cut to `max_len`.
- Padding uses the id of "<pad>", which sentencepiece resolves to the unknown id when the model has
  no such piece: 0 for T5-style and for default-trained models, as in the reference; `pad_id=N` pads
  with N instead (big_vision's `pad_value=N`; SigLIP's text pp pads with the EOS id, 1).

`SiglipTokenizer` is Hugging Face's SigLIP tokenizer (transformers `models/siglip/tokenization_siglip.py`
with its `SentencePieceBackend` / `PreTrainedTokenizer` base), replicated on the same sentencepiece calls
for a HF SigLIP folder's `spiece.model` + `tokenizer_config.json`, so transformers is never imported.

The model file is loaded by path with sentencepiece's own parser; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece
from sentencepiece import sentencepiece_model_pb2

from harness import ASSETS
from harness.errors import HarnessError, first_line
from harness.schema import Doc, read_json

# The small BPE vocabulary of the offline proxy tasks (made by scripts/make_proxy_spm.py).
PROXY_TOKENIZER = ASSETS / "proxy_spm.model"
_EOS_MODES = ("yes", "sticky", "no")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def as_text(text: str | bytes) -> str:
    # Batches from the data pipeline hold bytes; accept them as UTF-8.
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)


class Tokenizer:
    """A user-supplied sentencepiece `.model` file."""

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = os.fspath(model_path)
        if not os.path.isfile(self.model_path):
            raise HarnessError(f"sentencepiece model {self.model_path} does not exist; pass the "
                               "path of a .model file")
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            with open(self.model_path, "rb") as f:
                proto = f.read()
            loaded = self._sp.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError, ValueError, TypeError) as e:
            raise HarnessError(f"sentencepiece model {self.model_path} cannot be loaded ({e}); "
                               "pass a valid sentencepiece .model file") from None
        if loaded is False or self._sp.GetPieceSize() <= 0:
            raise HarnessError(f"sentencepiece model {self.model_path} cannot be loaded; pass a "
                               "valid sentencepiece .model file")

    def __repr__(self) -> str:
        return f"Tokenizer({self.model_path!r}, vocab_size={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        return int(self._sp.GetPieceSize())

    @property
    def pad_id(self) -> int:
        # big_vision pads with the id of the "<pad>" piece; an absent piece maps to unk.
        return int(self._sp.PieceToId("<pad>"))

    @property
    def eos_id(self) -> int:
        """-1 when the model has no EOS piece."""
        return int(self._sp.eos_id())

    @property
    def bos_id(self) -> int:
        """-1 when the model has no BOS piece."""
        return int(self._sp.bos_id())

    @property
    def unk_id(self) -> int:
        return int(self._sp.unk_id())

    def encode(self, texts: Iterable[str | bytes], max_len: int, *, lower: bool = True,
               eos: str = "sticky", add_bos: bool = False, pad_id: int | None = None) -> np.ndarray:
        """Texts -> int32 [N, max_len], padded with `pad_id` (None: the model's "<pad>" id; see the
        module doc for `eos`)."""
        if eos == "none":
            eos = "no"
        if eos not in _EOS_MODES:
            raise HarnessError(f"eos={eos!r} is not one of {', '.join(_EOS_MODES)}")
        _check_max_len(max_len)
        if isinstance(texts, (str, bytes)):
            raise HarnessError("encode takes a list of texts; wrap a single text in a list")
        if eos != "no" and self.eos_id < 0:
            raise HarnessError(f"sentencepiece model {self.model_path} has no EOS piece; use "
                               "eos='no'")
        if add_bos and self.bos_id < 0:
            raise HarnessError(f"sentencepiece model {self.model_path} has no BOS piece; use "
                               "add_bos=False")
        texts = [as_text(t) for t in texts]
        if lower:
            texts = [t.translate(_ASCII_LOWER) for t in texts]
        out = np.full((len(texts), max_len), self.pad_id if pad_id is None else int(pad_id), np.int32)
        for row, ids in enumerate(self._encode_ids(texts)):
            ids = ([self.bos_id] if add_bos else []) + list(ids)
            if eos != "no":
                ids.append(self.eos_id)
            if eos == "sticky" and len(ids) > max_len:
                ids = ids[:max_len - 1] + ids[-1:]
            ids = ids[:max_len]
            out[row, :len(ids)] = ids
        return out

    def _encode_ids(self, texts: list[str]) -> list[list[int]]:
        return self._sp.EncodeAsIds(texts)

    @property
    def spm_pad_id(self) -> int:
        """sentencepiece's own pad id (`pad_id()`, -1 without one): what big_vision's `tok` op pads with
        (pp/proj/paligemma/ops.py `pad_value=tokenizer.pad_token`)."""
        return int(self._sp.pad_id())

    def decode(self, ids: np.ndarray | Sequence[Sequence[int]] | Sequence[int]) -> list[str]:
        """Token ids [N, L] (or one sequence [L]) -> texts; stops at EOS, skips pad and BOS."""
        rows = np.asarray(ids) if not isinstance(ids, (list, tuple)) else ids
        if isinstance(rows, np.ndarray):
            if rows.ndim == 1:
                rows = rows[None]
            if rows.ndim != 2:
                raise HarnessError(f"decode takes ids of shape [N, L]; got {rows.shape}")
            rows = rows.tolist()
        elif rows and all(isinstance(x, (int, np.integer)) for x in rows):
            rows = [list(rows)]
        skip = {self.pad_id, self.bos_id}
        texts = []
        for row in rows:
            kept = []
            for token in row:
                token = int(token)
                if token == self.eos_id:
                    break
                if token in skip or not 0 <= token < self.vocab_size:
                    continue
                kept.append(token)
            texts.append(self._sp.DecodeIds(kept))
        return texts

    def to_piece(self, token: int) -> str:
        """The vocabulary entry of one id (for debugging and tests)."""
        return self._sp.IdToPiece(int(token))


def canonicalize_text(text: str, *, keep: str | None = None) -> str:
    """big_vision's `evaluators/proj/image_text/prompt_engineering.py::canonicalize_text` (open_clip's
    `clean="canonicalize"` is the same function): "_" -> " ", punctuation removed (except the exact string
    `keep`), lower-cased (Python's str.lower), whitespace collapsed."""
    text = text.replace("_", " ")
    if keep:
        text = keep.join(part.translate(_PUNCTUATION) for part in text.split(keep))
    else:
        text = text.translate(_PUNCTUATION)
    return re.sub(r"\s+", " ", text.lower()).strip()


def _check_max_len(max_len) -> None:
    if not isinstance(max_len, (int, np.integer)) or max_len <= 0:
        raise HarnessError(f"max_len must be a positive int; got {max_len!r}")


# ------------------------------------------------------------------------ Hugging Face's SigLIP tokenizer
SPIECE_UNDERLINE = "\u2581"
# The vocabulary file SiglipTokenizer reads from a folder (tokenization_siglip.py `VOCAB_FILES_NAMES`).
HF_SIGLIP_VOCAB_FILE = "spiece.model"


def _token(doc: Doc, key: str | int) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json write it: a string, or an
    AddedToken object whose `content` is one (None where the file leaves it out or null)."""
    value = doc.value.get(key) if isinstance(key, str) else doc.value[key]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        item = Doc(value, doc.file, doc.field(key), doc.fix)
        return item.str("content")
    raise doc.error("a token string or an object with its content", key, value)


def _token_list(doc: Doc, key: str) -> list[str]:
    """The tokens of a list of them (additional_special_tokens), or of an object's values (transformers'
    newer extra_special_tokens: {name: token})."""
    value = doc.value.get(key)
    if value is None:
        return []
    items = doc.list(key) if not isinstance(value, dict) else doc.obj(key)
    keys = range(len(value)) if isinstance(value, list) else list(value)
    return [t for k in keys if (t := _token(items, k))]


def _config(folder: Path, name: str) -> Doc:
    file = folder / name
    if not file.exists() and not file.is_symlink():
        return Doc({}, file)  # SiglipTokenizer's own defaults (an old export without the file)
    return read_json(file, what="Hugging Face tokenizer config", fix="re-save the tokenizer with "
                     "save_pretrained, or pass --set text_pp=big_vision").require_obj("a JSON object")


def hf_tokenizer_class(folder: str | os.PathLike) -> str | None:
    """The `tokenizer_class` a Hugging Face folder's tokenizer_config.json names (None without one)."""
    return _config(Path(folder), "tokenizer_config.json").str("tokenizer_class", None, null_is_default=True)


class SiglipTokenizer(Tokenizer):
    """Hugging Face's `SiglipTokenizer` on a folder's `spiece.model` and `tokenizer_config.json`.

    `encode_hf(texts, max_len)` gives the ids of `SiglipProcessor(text=texts, padding="max_length",
    truncation=True, max_length=max_len)` (what HF's zero-shot pipeline calls for SigLIP):
    1. `tokenize`: "\u2581" + text (inner "\u2581" -> " "), split on the special / added tokens (their
       lstrip / rstrip applied to the neighbours);
    2. each other chunk is canonicalised (`do_lower_case`: Python's `str.lower`; punctuation removed;
       whitespace runs -> one space; stripped), encoded as `unk_token + chunk` and the unk token's
       pieces cut off again; a leading lone "\u2581" before a special token is dropped;
    3. pieces -> ids (added tokens first); truncation keeps the first `max_len - 1` ids, then EOS is
       appended unless the ids already end in it; padding with `pad_token`'s id ("</s>" = EOS for the
       google/siglip-* tokenizers) on the right.
    `encode` (inherited) stays big_vision's op on the same model, for a `text_pp=big_vision` override.
    """

    def __init__(self, folder: str | os.PathLike, vocab_file: str | os.PathLike | None = None):
        """`folder`: a HF SigLIP folder (its tokenizer_config.json); `vocab_file`: another sentencepiece
        model under the same rules (default: the folder's own `spiece.model`)."""
        folder = Path(folder)
        cfg = _config(folder, "tokenizer_config.json")
        special_map = _config(folder, "special_tokens_map.json")
        cls = cfg.str("tokenizer_class", "SiglipTokenizer", null_is_default=True)
        if cls not in ("SiglipTokenizer", "SiglipTokenizerFast"):
            raise HarnessError(f"{folder}: tokenizer_class {cls!r} is not SiglipTokenizer; for a SigLIP 2 folder (a "
                               "Gemma tokenizer) use text_pp=siglip2 or hf_siglip2")
        if cfg.obj("sp_model_kwargs", {}, null_is_default=True).value:
            raise HarnessError(f"{folder}/tokenizer_config.json: sp_model_kwargs {cfg.raw('sp_model_kwargs')} "
                               "(sampling) is not supported; remove it for deterministic evaluation")
        # A file name in the folder, never a path elsewhere.
        vocab_name = cfg.check("vocab_file", lambda v: isinstance(v, str) and v not in ("", ".", "..")
                               and "/" not in v and "\\" not in v, "a file name in the tokenizer's folder",
                               HF_SIGLIP_VOCAB_FILE)
        super().__init__(vocab_file or folder / vocab_name)
        self.folder = str(folder)
        # SiglipTokenizer.__init__'s defaults where the folder does not say otherwise.
        tok = {k: _token(special_map, k) or _token(cfg, k) or default
               for k, default in (("eos_token", "</s>"), ("unk_token", "<unk>"), ("pad_token", "</s>"))}
        self.eos_token, self.unk_token, self.pad_token = tok["eos_token"], tok["unk_token"], tok["pad_token"]
        self.do_lower_case = cfg.bool("do_lower_case", True, null_is_default=True)
        self.model_max_length = cfg.number("model_max_length", None, finite=False, null_is_default=True)
        self.legacy = cfg.bool("legacy", True, null_is_default=True)
        if not self.legacy:
            # SentencePieceBackend: legacy=False switches the model's add_dummy_prefix off.
            proto = sentencepiece_model_pb2.ModelProto.FromString(self._sp.serialized_model_proto())
            if proto.normalizer_spec.add_dummy_prefix:
                proto.normalizer_spec.add_dummy_prefix = False
                self._sp.LoadFromSerializedProto(proto.SerializeToString())
        # Added tokens: id -> (content, lstrip, rstrip). The special tokens are there too; one the config
        # does not list gets SiglipTokenizer's AddedToken(lstrip=True, rstrip=True).
        self._added: dict[str, tuple[int, bool, bool]] = {}
        vocab = self._sp.GetPieceSize()
        decoder = cfg.obj("added_tokens_decoder", {}, null_is_default=True)
        for idx, spec in decoder.items():
            # An id the tower's embedding does not have would be clamped by the lookup, silently.
            if not (re.fullmatch(r"[0-9]{1,12}", idx) and int(idx) < vocab):
                raise HarnessError(f"{decoder.file}: field {decoder.path} lists token id {idx[:20]!r}; expected "
                                   f"ids below the vocabulary size {vocab} of {self.model_path}; {decoder.fix}")
            content = _token(decoder, idx)
            if content:
                flags = spec if spec.is_obj() else Doc({}, spec.file, spec.path)
                self._added[content] = (int(idx), flags.bool("lstrip", False), flags.bool("rstrip", False))
        extra = _token_list(cfg, "additional_special_tokens") + _token_list(cfg, "extra_special_tokens")
        for content in (self.eos_token, self.unk_token, self.pad_token, *extra):
            if content not in self._added:
                self._added[content] = (int(self._sp.PieceToId(content)), True, True)
        self._split = re.compile("(" + "|".join(re.escape(t) for t in sorted(self._added, key=len, reverse=True))
                                 + ")")
        self._unk_len = len(self._sp.EncodeAsPieces(self.unk_token))

    def __repr__(self) -> str:
        return f"SiglipTokenizer({self.folder!r}, vocab_size={self.vocab_size})"

    @property
    def hf_pad_id(self) -> int:
        return self._added[self.pad_token][0]

    @property
    def hf_eos_id(self) -> int:
        return self._added[self.eos_token][0]

    def canonicalize(self, text: str) -> str:
        """tokenization_siglip.py `canonicalize_text` (no kept string)."""
        if self.do_lower_case:
            text = text.lower()
        return re.sub(r"\s+", " ", text.translate(_PUNCTUATION)).strip()

    def _tokenize_chunk(self, chunk: str) -> list[str]:
        # `_tokenize`: encode "<unk>" + text and cut the unk pieces, so sentencepiece's dummy prefix does
        # not see the chunk's own start.
        pieces = self._sp.EncodeAsPieces(self.unk_token + self.canonicalize(chunk))
        return pieces[self._unk_len:] if len(pieces) >= self._unk_len else pieces

    def pieces(self, text: str) -> list[str]:
        """`SiglipTokenizer.tokenize(text)`."""
        chunks = [c for c in self._split.split(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "))]
        for i, c in enumerate(chunks):  # an added token's lstrip / rstrip eat its neighbours' spaces
            if c in self._added:
                _, lstrip, rstrip = self._added[c]
                if rstrip and i + 1 < len(chunks) and chunks[i + 1]:
                    chunks[i + 1] = chunks[i + 1].lstrip()
                if lstrip and i > 0 and chunks[i - 1]:
                    chunks[i - 1] = chunks[i - 1].rstrip()
        out: list[str] = []
        for i, c in enumerate(chunks):
            if not c:
                continue
            out.extend([c] if i % 2 else self._tokenize_chunk(c))  # odd chunks are the split tokens
        if len(out) > 1 and out[0] == SPIECE_UNDERLINE and out[1] in self._added:
            out = out[1:]
        return out

    def encode_hf(self, texts: Iterable[str | bytes], max_len: int, *, pad_id: int | None = None) -> np.ndarray:
        """Texts -> int32 [N, max_len] as the HF processor gives them (class doc); `pad_id` overrides the
        pad token's id."""
        _check_max_len(max_len)
        if isinstance(texts, (str, bytes)):
            raise HarnessError("encode_hf takes a list of texts; wrap a single text in a list")
        texts = list(texts)
        eos = self.hf_eos_id
        out = np.full((len(texts), max_len), self.hf_pad_id if pad_id is None else int(pad_id), np.int32)
        for row, text in enumerate(texts):
            ids = [self._added[p][0] if p in self._added else int(self._sp.PieceToId(p))
                   for p in self.pieces(as_text(text))]
            ids = ids[:max_len - 1] if len(ids) + 1 > max_len else ids  # room for the one EOS
            if not ids or ids[-1] != eos:
                ids.append(eos)
            out[row, :len(ids)] = ids
        return out


# ------------------------------------------------------------------------------------ SigLIP 2 (Gemma)
def is_gemma_vocabulary(tokenizer) -> bool:
    """The Gemma vocabulary of SigLIP 2's text towers (big_vision `tokenizers.gemma`, transformers'
    GemmaTokenizer): its EOS and BOS pieces are `<eos>` and `<bos>` (T5-style vocabularies such as c4_en / mc4,
    SigLIP's, spell EOS `</s>`)."""
    return tokenizer.eos_id >= 0 and tokenizer.to_piece(tokenizer.eos_id) == "<eos>" and \
        tokenizer.bos_id >= 0 and tokenizer.to_piece(tokenizer.bos_id) == "<bos>"


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise HarnessError("reading a tokenizer.json needs the `tokenizers` package: pip install tokenizers (or "
                           "pass the sentencepiece model with --set tokenizer=PATH.model)") from None
    return tokenizers


def _load_tokenizer_json(path: Path):
    tokenizers = _tokenizers()
    try:
        return tokenizers.Tokenizer.from_file(os.fspath(path))
    except Exception as e:  # noqa: BLE001 - the Rust parser raises plain Exceptions
        raise HarnessError(f"{path}: not a tokenizer.json the tokenizers library reads ({first_line(e)}); pass "
                           "the folder's sentencepiece tokenizer.model with --set tokenizer=PATH") from None


class JsonTokenizer(Tokenizer):
    """big_vision's tokenize semantics (`Tokenizer.encode`) on a Hugging Face `tokenizer.json` (read with the
    `tokenizers` library, for a folder that has no sentencepiece model): the file's normaliser without its
    `Lowercase` steps (big_vision lower-cases ASCII itself), its pre-tokeniser and BPE model, special-token
    strings in a text read as plain text (as sentencepiece reads them), no special tokens added: the ids
    sentencepiece's EncodeAsIds gives on the model the file was converted from."""

    def __init__(self, path: str | os.PathLike):  # no super().__init__: it reads a sentencepiece file
        self.model_path = os.fspath(path)
        tok = _load_tokenizer_json(Path(path))
        spec = json.loads(tok.to_str())
        norm = spec.get("normalizer")
        if norm is not None:
            steps = norm["normalizers"] if norm.get("type") == "Sequence" else [norm]
            steps = [n for n in steps if n.get("type") != "Lowercase"]
            spec["normalizer"] = None if not steps else (steps[0] if len(steps) == 1 else
                                                         {"type": "Sequence", "normalizers": steps})
        spec["post_processor"], spec["truncation"], spec["padding"] = None, None, None
        self._tok = _tokenizers().Tokenizer.from_str(json.dumps(spec))
        self._tok.encode_special_tokens = True
        self._vocab = self._tok.get_vocab(with_added_tokens=True)
        self._pieces = {i: p for p, i in self._vocab.items()}

    def __repr__(self) -> str:
        return f"JsonTokenizer({self.model_path!r}, vocab_size={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def _id(self, piece: str) -> int:
        return int(self._vocab.get(piece, -1))

    @property
    def pad_id(self) -> int:
        return self._id("<pad>")

    @property
    def spm_pad_id(self) -> int:
        return self.pad_id

    @property
    def eos_id(self) -> int:
        return self._id("<eos>") if "<eos>" in self._vocab else self._id("</s>")

    @property
    def bos_id(self) -> int:
        return self._id("<bos>") if "<bos>" in self._vocab else self._id("<s>")

    @property
    def unk_id(self) -> int:
        return self._id("<unk>")

    def _encode_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> list[str]:
        raise HarnessError("JsonTokenizer does not decode; use the folder's sentencepiece model")

    def to_piece(self, token: int) -> str:
        return self._pieces.get(int(token), "")


# transformers 5.24's tokenizers of SigLIP 2 folders (models/gemma/tokenization_gemma.py `GemmaTokenizer`,
# models/siglip2/tokenization_siglip2.py `Siglip2Tokenizer`: the Gemma tokenizer with a Lowercase normaliser).
# AutoTokenizer gives a Siglip2Model folder (model_type "siglip2") a Siglip2Tokenizer whatever its
# tokenizer_config.json names (auto/tokenization_auto.py MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS), and any
# other folder the class its tokenizer_config.json names.
HF_GEMMA_CLASSES = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer", "Siglip2TokenizerFast")


class HFGemmaTokenizer:
    """What transformers 5.24's processor of a SigLIP 2 folder does to texts, replicated on the `tokenizers`
    library from the folder's `tokenizer.json` and `tokenizer_config.json` (transformers is never imported):
    `tokenizer(texts, padding="max_length", max_length=L, truncation=True)` (what HF's zero-shot pipeline
    calls for SigLIP models, and Siglip2Processor's defaults):

    - the tokenizer is rebuilt as `GemmaTokenizer.__init__` builds it from the file's vocabulary and merges
      (`convert_to_native_format`): BPE with `fuse_unk` and byte fallback, normaliser `Replace(" ", "▁")`,
      pre-tokeniser `Split(" ", merged_with_previous)`; `Siglip2Tokenizer` (a `siglip2` model folder) puts
      `Lowercase` (Unicode) in front of the normaliser;
    - special tokens: the file's added tokens (matched in the raw text), the file's post-processor, replaced
      by `[<bos>] $A [<eos>]` when tokenizer_config.json sets `add_bos_token` / `add_eos_token`;
    - truncation to L with the special tokens counted (an EOS stays last), padding with `pad_token`'s id on
      `padding_side` (the class default is "left"; SigLIP 2's hub folders say "right").
    """

    def __init__(self, folder: str | os.PathLike, *, model_type: str | None = None):
        folder = Path(folder)
        self.folder = str(folder)
        self.model_path = str(folder / "tokenizer.json")
        if not (folder / "tokenizer.json").is_file():
            raise HarnessError(f"{folder}: text_pp hf_siglip2 replicates transformers' fast Gemma tokenizer from the "
                               "folder's tokenizer.json, which it does not have; use text_pp=siglip2 (big_vision's, "
                               "on tokenizer.model)")
        cfg = _config(folder, "tokenizer_config.json")
        cls = "Siglip2Tokenizer" if model_type == "siglip2" else \
            cfg.str("tokenizer_class", "GemmaTokenizer", null_is_default=True)
        if cls not in HF_GEMMA_CLASSES:
            raise HarnessError(f"{folder}: tokenizer_class {cls!r} is not a Gemma tokenizer; text_pp hf_siglip2 "
                               "replicates GemmaTokenizer / Siglip2Tokenizer only")
        self.lowercase = cls.startswith("Siglip2")
        tokenizers = _tokenizers()
        source = _load_tokenizer_json(folder / "tokenizer.json")
        spec = json.loads(source.to_str())
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            raise HarnessError(f"{folder}/tokenizer.json: a {model.get('type')} model, not the Gemma tokenizer's BPE")
        tok = tokenizers.Tokenizer(tokenizers.models.BPE(
            vocab=model["vocab"], merges=[tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                                          for m in model.get("merges", [])],
            fuse_unk=True, unk_token=_token(cfg, "unk_token") or "<unk>", dropout=None,
            byte_fallback=True))
        steps = [tokenizers.normalizers.Replace(" ", "▁")]
        tok.normalizer = tokenizers.normalizers.Sequence([tokenizers.normalizers.Lowercase(), *steps]) \
            if self.lowercase else steps[0]
        tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous",
                                                            invert=False)
        tok.add_special_tokens([tokenizers.AddedToken(a["content"], single_word=a.get("single_word", False),
                                                      lstrip=a.get("lstrip", False), rstrip=a.get("rstrip", False),
                                                      normalized=a.get("normalized", False), special=True)
                                for a in spec.get("added_tokens", []) if a.get("special", True)])
        tok.add_tokens([tokenizers.AddedToken(a["content"], normalized=a.get("normalized", True))
                        for a in spec.get("added_tokens", []) if not a.get("special", True)])
        self.eos_token = _token(cfg, "eos_token") or "<eos>"
        self.bos_token = _token(cfg, "bos_token") or "<bos>"
        self.pad_token = _token(cfg, "pad_token") or "<pad>"
        if cfg.has("add_bos_token") or cfg.has("add_eos_token") or source.post_processor is None:
            bos = cfg.bool("add_bos_token", False, null_is_default=True)
            eos = cfg.bool("add_eos_token", False, null_is_default=True)
            single = " ".join(([f"{self.bos_token}:0"] if bos else []) + ["$A:0"] + ([f"{self.eos_token}:0"] if eos else []))
            special = ([(self.bos_token, tok.token_to_id(self.bos_token))] if bos else []) + \
                ([(self.eos_token, tok.token_to_id(self.eos_token))] if eos else [])
            tok.post_processor = tokenizers.processors.TemplateProcessing(single=single, special_tokens=special)
        else:
            tok.post_processor = source.post_processor
        self.padding_side = cfg.str("padding_side", "left", choices=("left", "right"), null_is_default=True)
        self._tok = tok
        self.model_max_length = cfg.number("model_max_length", None, finite=False, null_is_default=True)

    def __repr__(self) -> str:
        return f"HFGemmaTokenizer({self.folder!r}, vocab_size={self.vocab_size})"

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def hf_pad_id(self) -> int:
        pad = self._tok.token_to_id(self.pad_token)
        if pad is None:
            raise HarnessError(f"{self.folder}: the pad token {self.pad_token!r} is not in the vocabulary")
        return int(pad)

    def encode_hf(self, texts: Iterable[str | bytes], max_len: int, *, pad_id: int | None = None) -> np.ndarray:
        """Texts -> int32 [N, max_len], as the processor gives them (class doc); `pad_id` overrides the pad id."""
        _check_max_len(max_len)
        if isinstance(texts, (str, bytes)):
            raise HarnessError("encode_hf takes a list of texts; wrap a single text in a list")
        self._tok.enable_truncation(max_length=max_len)
        rows = [e.ids for e in self._tok.encode_batch([as_text(t) for t in texts], add_special_tokens=True)]
        out = np.full((len(rows), max_len), self.hf_pad_id if pad_id is None else int(pad_id), np.int32)
        for row, ids in enumerate(rows):
            if self.padding_side == "right":
                out[row, :len(ids)] = ids
            elif ids:
                out[row, -len(ids):] = ids
        return out


__all__ = ["HFGemmaTokenizer", "JsonTokenizer", "SiglipTokenizer", "Tokenizer", "as_text", "canonicalize_text",
           "is_gemma_vocabulary"]
