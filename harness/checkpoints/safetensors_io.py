"""`.safetensors` files as numpy (Hugging Face, timm and open_clip checkpoints alike); nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

from harness.errors import HarnessError


def load_safetensors(file: Path, keep=None) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file (those whose name `keep` accepts) as numpy, each read once.
    bfloat16 (which numpy lacks, so the package's numpy loader refuses it) is read from the file's
    documented layout: an 8-byte little-endian header size, a JSON header of {name: {dtype, shape,
    data_offsets}}, then the raw bytes."""
    out, bf16 = {}, []
    try:
        with safe_open(str(file), framework="numpy") as f:
            for k in f.keys():
                if keep is not None and not keep(k):
                    continue
                if f.get_slice(k).get_dtype() == "BF16":
                    bf16.append(k)
                else:
                    out[k] = f.get_tensor(k)
        if bf16:
            with open(file, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
                for k in bf16:
                    start, stop = header[k]["data_offsets"]
                    fh.seek(8 + n + start)
                    raw = np.frombuffer(fh.read(stop - start), np.uint16)
                    out[k] = raw.view(ml_dtypes.bfloat16).reshape(header[k]["shape"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise HarnessError(f"checkpoint {file}: not a readable .safetensors file ({e}); re-export it") from None
    return out


def safetensors_keys(file: Path) -> list[str]:
    """The tensor names of a `.safetensors` file (its header only)."""
    try:
        with safe_open(str(file), framework="numpy") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise HarnessError(f"checkpoint {file}: not a readable .safetensors file ({e}); re-export it") from None
