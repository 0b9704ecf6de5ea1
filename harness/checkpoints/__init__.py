"""Checkpoint files: reading, writing and converting parameter trees. Never unpickles.

A checkpoint is opened once as a `Checkpoint` handle (`open_checkpoint(spec)`, `handle.py`): its format
detected once in the reader table `READERS` (format -> detect, read the image tower, read the text tower; one
module per format), its content digest computed once, each array read once. `read_params` (an encoder) and
`read_text_tower` (a two-tower model's text tower) read a spec or handle through it. The formats:
- `npz`: big_vision `.npz` (optionally `file.npz:img` for a sub-tree), with `params/` or `opt/target/`
  wrapping and bfloat16 stored as 2-byte void;
- `tensorstore`: big_vision tensorstore folders `checkpoint.bv-<step>` (one zarr array per leaf);
- `harness`: the harness's own folders (orbax arrays + `harness.json` with the encoder config);
- `hf`: Hugging Face SigLIP folders (`config.json` + `model.safetensors`), converted by name;
- `timm`, `open_clip`: their safetensors checkpoints, converted by name (`timm`, `open_clip`, sharing `torch_common`).
Every reader's tree comes back in the current big_vision layout (`layout`).
"""

from __future__ import annotations

import numpy as np

from harness.checkpoints.handle import READERS, Checkpoint, Reader, detect_format, open_checkpoint, parse_spec
from harness.checkpoints.harness_dir import HARNESS_META, read_harness, save_harness
from harness.checkpoints.layout import (
    TEXT_BLOCKS,
    VIT_BLOCKS,
    as_flat,
    fix_old_layout,
    flatten,
    is_flat,
    is_scanned,
    resample_patchemb,
    resample_posemb,
    scan_to_unrolled,
    to_layout,
    unflatten,
    unrolled_to_scan,
    unwrap,
)
from harness.checkpoints.npz import read_npz, save_npz


# ------------------------------------------------------------------------------------------- reading
def read_params(spec) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Reads any supported checkpoint's image tower into (flat params in the current big_vision layout, config
    hints, info); see `Checkpoint.read_image`. `spec`: a spec string or an open `Checkpoint`."""
    ckpt = open_checkpoint(spec)
    try:
        return ckpt.read_image()
    finally:
        if ckpt is not spec:
            ckpt.close()


def read_text_tower(spec) -> dict | None:
    """The text tower of a two-tower checkpoint (see `Checkpoint.read_text`); None when it holds none.
    `spec` may name the image sub-tree ("file.npz:img"), or be an open `Checkpoint`."""
    ckpt = open_checkpoint(spec)
    try:
        tower = ckpt.read_text()
        if tower is not None and ckpt is not spec:  # read before the file is closed (npz members are lazy)
            tower = {**tower, "txt": {k: np.asarray(v) for k, v in tower["txt"].items()},
                     **{k: None if tower.get(k) is None else np.asarray(tower[k]) for k in ("t", "b")}}
        return tower
    finally:
        if ckpt is not spec:
            ckpt.close()


def file_sha256(path) -> str:
    """The content digest of a checkpoint file or folder (`Checkpoint.sha256`)."""
    with Checkpoint(path) as ckpt:
        return ckpt.sha256


__all__ = ["HARNESS_META", "READERS", "TEXT_BLOCKS", "VIT_BLOCKS", "Checkpoint", "Reader", "as_flat",
           "detect_format", "file_sha256", "fix_old_layout", "flatten", "is_flat", "is_scanned", "open_checkpoint",
           "parse_spec", "read_harness", "read_npz", "read_params", "read_text_tower", "resample_patchemb", "resample_posemb",
           "save_harness", "save_npz", "scan_to_unrolled", "to_layout", "unflatten", "unrolled_to_scan", "unwrap"]
