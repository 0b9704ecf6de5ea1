"""Checkpoint files: reading, writing and converting parameter trees. Never unpickles.

One reader table, `READERS`: format -> (detect, read the image tower, read the text tower), one module
per format; `read_params` (an encoder) and `read_text_tower` (a two-tower model's text tower) both
detect a checkpoint's format there and read it with that format's reader:
- `npz`: big_vision `.npz` (optionally `file.npz:img` for a sub-tree), with `params/` or `opt/target/`
  wrapping and bfloat16 stored as 2-byte void;
- `tensorstore`: big_vision tensorstore folders `checkpoint.bv-<step>` (one zarr array per leaf);
- `harness`: the harness's own folders (orbax arrays + `harness.json` with the encoder config);
- `hf`: Hugging Face SigLIP folders (`config.json` + `model.safetensors`), converted by name;
- `timm`, `open_clip`: their safetensors checkpoints, converted by name (`timm`, `open_clip`; what the two
  share is `torch_common`, timm's architecture table `timm_arch`).
Every reader's tree comes back in the current big_vision layout (`layout`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.checkpoints import harness_dir, hf, npz, open_clip, tensorstore, timm
from harness.checkpoints.harness_dir import HARNESS_META, read_harness, save_harness
from harness.checkpoints.layout import (
    TEXT_BLOCKS,
    VIT_BLOCKS,
    as_flat,
    fix_old_layout,
    flatten,
    is_flat,
    is_scanned,
    resample_posemb,
    scan_to_unrolled,
    to_layout,
    unflatten,
    unrolled_to_scan,
    unwrap,
)
from harness.checkpoints.npz import read_npz, save_npz
from harness.errors import HarnessError


@dataclasses.dataclass(frozen=True)
class Reader:
    """How one checkpoint format is recognised and read."""

    detect: Callable[[Path], bool]  # may refuse a file outright (pickled torch weights) with a HarnessError
    read_image: Callable[[Path, str | None], tuple[dict, dict]]  # (path, sub-tree) -> (flat tree, config hints)
    read_text: Callable[[Path], dict | None]  # -> `read_text_tower`'s answer, None without a text tower


def _no_text_tower(path: Path) -> None:
    return None


# Detection goes down the table in this order; the first format whose `detect` holds is the file's.
READERS: dict[str, Reader] = {
    "open_clip": Reader(open_clip.detect, open_clip.read_image, open_clip.read_text),
    "timm": Reader(timm.detect, timm.read_image, _no_text_tower),
    "npz": Reader(npz.detect, npz.read_image, npz.read_text),
    "harness": Reader(harness_dir.detect, harness_dir.read_image, _no_text_tower),
    "hf": Reader(hf.detect, hf.read_image, hf.read_text),
    "tensorstore": Reader(tensorstore.detect, tensorstore.read_image, tensorstore.read_text),
}


# ----------------------------------------------------------------------------------------------- specs
def parse_spec(spec: str) -> tuple[Path, str | None]:
    """"ckpt.npz:img" -> (Path("ckpt.npz"), "img"). A colon is a sub-tree only if the path before it exists."""
    spec = str(spec)
    m = re.match(r"^(.*):([\w/]+)$", spec)
    if m and not os.path.exists(spec) and os.path.exists(m.group(1)):
        return Path(m.group(1)), m.group(2)
    return Path(spec), None


def detect_format(path: Path) -> str:
    for fmt, reader in READERS.items():
        if reader.detect(path):
            return fmt
    if path.is_dir():
        raise HarnessError(f"checkpoint {path}: folder is not a known checkpoint format (big_vision "
                           "tensorstore, a Hugging Face SigLIP, timm or open_clip folder, or a harness checkpoint)")
    raise HarnessError(f"checkpoint {path}: no such file or folder; check the --ckpt path")


def file_sha256(path: Path) -> str:
    """sha256 of a checkpoint file, or of a folder's files (names and bytes, in sorted order)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- reading
def read_params(spec: str) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Reads any supported checkpoint into (flat params in the current big_vision layout, config hints,
    info). Config hints are what the file states outright (HF config.json, harness.json)."""
    path, subtree = parse_spec(spec)
    fmt = detect_format(path)
    flat, hints = READERS[fmt].read_image(path, subtree)
    if not flat:
        raise HarnessError(f"checkpoint {path}: contains no arrays")
    if subtree is None and {"img", "txt"} <= {k.split("/")[0] for k in flat}:
        # A two-tower (SigLIP / LiT) checkpoint without ':img': its image tower is the encoder.
        flat, subtree = unwrap(flat, "img", path=path), "img"
    flat = fix_old_layout(flat)
    return flat, hints, {"path": str(path), "format": fmt, "subtree": subtree}


def read_text_tower(spec: str) -> dict | None:
    """The text tower of a two-tower checkpoint: {"txt": flat big_vision tree, "t", "b" (log-temperature,
    bias; None if absent), "path", "format", "tokenizer" (a sentencepiece file shipped alongside, or None),
    "text_pp" (the family of its text pp: "hf_siglip" for a HF folder, else "big_vision"), and what else
    the format states (open_clip: "gelu", "pool_type", its Hugging Face tokenizer)}.
    None when the checkpoint holds no text tower. `spec` may name the image sub-tree ("file.npz:img")."""
    path, _ = parse_spec(spec)
    return READERS[detect_format(path)].read_text(path)


__all__ = ["HARNESS_META", "READERS", "TEXT_BLOCKS", "VIT_BLOCKS", "Reader", "as_flat", "detect_format",
           "file_sha256", "fix_old_layout", "flatten", "is_flat", "is_scanned", "parse_spec", "read_harness",
           "read_npz", "read_params", "read_text_tower", "resample_posemb", "save_harness", "save_npz",
           "scan_to_unrolled", "to_layout", "unflatten", "unrolled_to_scan", "unwrap"]
