"""big_vision `.npz` checkpoints: flat "/" keys, optionally under `params/` or `opt/target/`, bfloat16
stored as 2-byte void; `file.npz:img` names a sub-tree (a two-tower checkpoint's image tower)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

from harness.checkpoints.layout import as_flat, text_tower, unwrap
from harness.errors import HarnessError
from harness.files import atomic_file


def recover_dtype(a: np.ndarray) -> np.ndarray:
    # numpy has no bfloat16: np.save writes it as 2-byte void, which we view back.
    if a.dtype.kind == "V" and a.dtype.itemsize == 2 and a.dtype.fields is None:
        return a.view(ml_dtypes.bfloat16)
    return a


def detect(path: Path) -> bool:
    # After the torch formats (which take `.safetensors` and refuse pickles), any other file is an .npz.
    return path.is_file()


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if path.exists() and not zipfile.is_zipfile(path):
        raise HarnessError(f"checkpoint {path}: not a readable .npz (not a zip archive); the file may be "
                           "truncated or corrupt, re-download or re-export it")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise HarnessError(f"checkpoint {path}: is a single .npy array, not a .npz of named arrays")
            out = {}
            for k in z.files:
                out[k] = recover_dtype(z[k])
            return out
    except HarnessError:
        raise
    except FileNotFoundError:
        raise HarnessError(f"checkpoint {path}: no such file; check the --ckpt path") from None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise HarnessError(f"checkpoint {path}: holds pickled object arrays; refusing to unpickle "
                               "(re-save it with plain numeric arrays)") from None
        raise HarnessError(f"checkpoint {path}: not a readable .npz ({e}); the file may be truncated or "
                           "corrupt, re-download or re-export it") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise HarnessError(f"checkpoint {path}: not a readable .npz ({type(e).__name__}: {e}); the file may "
                           "be truncated or corrupt, re-download or re-export it") from None


def read_image(path: Path, subtree: str | None) -> tuple[dict, dict]:
    return unwrap(read_npz(path), subtree, path=path), {}


def read_text(path: Path) -> dict | None:
    """The `txt/`, `t`, `b` entries of a big_vision two-tower .npz, reading only those arrays."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                return None
            names = list(z.files)
            wrapper = next((w for w in ("params/", "opt/target/") if any(n.startswith(w) for n in names)), "")
            wanted = [n for n in names if n.startswith(wrapper)
                      and (n[len(wrapper):].startswith("txt/") or n[len(wrapper):] in ("t", "b"))]
            if not any(n[len(wrapper):].startswith("txt/") for n in wanted):
                return None
            flat = {n[len(wrapper):]: recover_dtype(z[n]) for n in wanted}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise HarnessError(f"checkpoint {path}: not a readable .npz ({type(e).__name__}: {e})") from None
    return text_tower(flat, path=path, fmt="npz")


def save_npz(path: str | Path, params, *, wrap: str | None = None) -> Path:
    """Writes a big_vision-style .npz (flat "/" keys; bfloat16 lands as V2), atomically."""
    path = Path(path)
    flat = {k: np.asarray(v) for k, v in as_flat(params).items()}
    if wrap:
        flat = {f"{wrap.rstrip('/')}/{k}": v for k, v in flat.items()}
    with atomic_file(path, "wb", what="checkpoint") as f:
        np.savez(f, **dict(sorted(flat.items())))
    return path
