"""SentencePiece tokenizer with big_vision's `tokenize` pp semantics, on numpy arrays.

`encode` matches big_vision's `pp/ops_text.py` (`tokenize(max_len, eos, lower=True)`):
- `lower`: ASCII-only lower-casing, as `tf.strings.lower` does without an encoding
  ("É" stays "É").
- `eos="yes"`: append EOS, then cut to `max_len` (a truncated text loses its EOS).
- `eos="sticky"`: append EOS; if too long keep the first `max_len - 1` tokens and the EOS, so the
  last non-pad token is always EOS (two-tower text encoders pool there).
- `eos="no"` (alias "none"): no EOS, cut to `max_len`.
- Padding uses the id of "<pad>", which sentencepiece resolves to the unknown id when the model has
  no such piece: 0 for T5-style and for default-trained models, as in the reference.

The model file is loaded by path with sentencepiece's own parser; nothing is unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from harness.errors import HarnessError

_EOS_MODES = ("yes", "sticky", "no")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _as_text(text: str | bytes) -> str:
    # Batches from the data pipeline hold bytes; accept them as UTF-8.
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)


class Tokenizer:
    """A user-supplied sentencepiece `.model` file."""

    def __init__(self, model_path: str | os.PathLike):
        import sentencepiece

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
               eos: str = "sticky", add_bos: bool = False) -> np.ndarray:
        """Texts -> int32 [N, max_len], padded with `pad_id` (see the module doc for `eos`)."""
        if eos == "none":
            eos = "no"
        if eos not in _EOS_MODES:
            raise HarnessError(f"eos={eos!r} is not one of {', '.join(_EOS_MODES)}")
        if not isinstance(max_len, (int, np.integer)) or max_len <= 0:
            raise HarnessError(f"max_len must be a positive int; got {max_len!r}")
        if isinstance(texts, (str, bytes)):
            raise HarnessError("encode takes a list of texts; wrap a single text in a list")
        if eos != "no" and self.eos_id < 0:
            raise HarnessError(f"sentencepiece model {self.model_path} has no EOS piece; use "
                               "eos='no'")
        if add_bos and self.bos_id < 0:
            raise HarnessError(f"sentencepiece model {self.model_path} has no BOS piece; use "
                               "add_bos=False")
        texts = [_as_text(t) for t in texts]
        if lower:
            texts = [t.translate(_ASCII_LOWER) for t in texts]
        out = np.full((len(texts), max_len), self.pad_id, np.int32)
        for row, ids in enumerate(self._sp.EncodeAsIds(texts)):
            ids = ([self.bos_id] if add_bos else []) + list(ids)
            if eos != "no":
                ids.append(self.eos_id)
            if eos == "sticky" and len(ids) > max_len:
                ids = ids[:max_len - 1] + ids[-1:]
            ids = ids[:max_len]
            out[row, :len(ids)] = ids
        return out

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


__all__ = ["Tokenizer"]
