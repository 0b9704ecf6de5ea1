"""big_vision `.npz` checkpoints: flat "/" keys, optionally under `params/` or `opt/target/`, bfloat16
stored as 2-byte void; `file.npz:img` names a sub-tree (a two-tower checkpoint's image tower).

The readers take the checkpoint's handle (`harness.checkpoints.handle.Checkpoint`), whose `.npz` is opened
once. They return `Member`s: arrays known by their headers, checked against the archive, decompressed when
the loader takes them (after it has checked every key and shape against the model), each once."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
from numpy.lib import format as npy_format

from harness.checkpoints.layout import LazyArray, as_flat, text_tower, tower_prefix, wrapper_of
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


def _member(z, name: str, path) -> np.ndarray:
    """The array `name` of the open NpzFile `z`, read and decompressed now."""
    try:
        return recover_dtype(z[name])
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise HarnessError(f"checkpoint {path}: {name} holds pickled object arrays; refusing to unpickle "
                               "(re-save it with plain numeric arrays)") from None
        raise HarnessError(f"checkpoint {path}: {name} is not a readable array ({e}); the file may be truncated "
                           "or corrupt, re-download or re-export it") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise HarnessError(f"checkpoint {path}: {name} is not readable ({type(e).__name__}: {e}); the file may "
                           "be truncated or corrupt, re-download or re-export it") from None


class Member(LazyArray):
    """An array of an open `.npz` known by its `.npy` header alone (a `LazyArray`): a member the model does
    not need is never inflated, and one whose header declares more bytes than the archive holds for it is
    refused before anything is allocated. It reads through its checkpoint's handle
    (`ckpt.npz()`), which opens the file again, checked unchanged, if it was closed in between."""

    def __init__(self, ckpt, name: str):
        self._ckpt, self.name, self.path = ckpt, name, ckpt.path
        z, path = ckpt.npz(), ckpt.path
        try:
            info = z.zip.getinfo(f"{name}.npy")  # numpy lists members without their ".npy"
        except KeyError:
            info = z.zip.getinfo(name)
        try:
            with z.zip.open(info) as f:
                version = npy_format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f".npy format version {version}")
                read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
                shape, _, dtype = read(f)  # numpy's own limit on the header's size (10,000 bytes) applies
                header = f.tell()
        except ValueError as e:
            why = ("a .npy header longer than numpy reads safely" if "large" in str(e) else
                   "not a .npy array" if "magic" in str(e).lower() else str(e))
            raise HarnessError(f"checkpoint {path}: member {name!r} is {why}; it is not an array numpy wrote: "
                               "re-export the checkpoint with numpy.savez") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise HarnessError(f"checkpoint {path}: member {name!r} is not readable ({type(e).__name__}: {e}); the "
                               "file may be truncated or corrupt, re-download or re-export it") from None
        if dtype.hasobject:
            raise HarnessError(f"checkpoint {path}: {name} holds pickled object arrays; refusing to unpickle "
                               "(re-save it with plain numeric arrays)")
        self.shape = tuple(int(d) for d in shape)
        self.dtype = recover_dtype(np.empty(0, dtype)).dtype
        declared = math.prod(self.shape) * dtype.itemsize
        if declared > info.file_size - header:
            raise HarnessError(f"checkpoint {path}: member {name!r} declares shape {self.shape} of {dtype} "
                               f"({declared} bytes) but holds {max(info.file_size - header, 0)}: the file is "
                               "truncated or crafted; re-download or re-export it")

    def _read(self) -> np.ndarray:
        return _member(self._ckpt.npz(), self.name, self.path)


def _files(z, path) -> list[str]:
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise HarnessError(f"checkpoint {path}: is a single .npy array, not a .npz of named arrays")
    return list(z.files)


def _names(ckpt) -> list[str]:
    return _files(ckpt.npz(), ckpt.path)


def open_npz(file, path):
    """numpy's lazy NpzFile over `file` (a path or an open binary file; no pickles), or one error line."""
    if not zipfile.is_zipfile(file):
        raise HarnessError(f"checkpoint {path}: not a readable .npz (not a zip archive); the file may be "
                           "truncated or corrupt, re-download or re-export it")
    try:
        return np.load(file, allow_pickle=False)
    except FileNotFoundError:
        raise HarnessError(f"checkpoint {path}: no such file; check the --ckpt path") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise HarnessError(f"checkpoint {path}: not a readable .npz ({type(e).__name__}: {e}); the file may "
                           "be truncated or corrupt, re-download or re-export it") from None


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file (a checkpoint written by `save_npz`, say), as saved."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"checkpoint {path}: no such file; check the --ckpt path")
    with open(path, "rb") as fh, open_npz(fh, path) as z:
        return {n: _member(z, n, path) for n in _files(z, path)}


def read_image(ckpt) -> tuple[dict, dict]:
    """The image tower's arrays (the spec's sub-tree; `img` of a two-tower tree when none is named), with
    the sub-tree read as the hint "subtree"."""
    names = _names(ckpt)
    prefix, subtree = tower_prefix(names, ckpt.subtree, path=ckpt.path)
    flat = {n[len(prefix):]: Member(ckpt, n) for n in names if n.startswith(prefix)}
    return flat, {"subtree": subtree}


def read_text(ckpt) -> dict | None:
    """The `txt/`, `t`, `b` entries of a big_vision two-tower .npz, reading only those arrays."""
    names = _names(ckpt)
    wrapper = wrapper_of(names)
    wanted = [n for n in names if n.startswith(wrapper)
              and (n[len(wrapper):].startswith("txt/") or n[len(wrapper):] in ("t", "b"))]
    if not any(n[len(wrapper):].startswith("txt/") for n in wanted):
        return None
    flat = {n[len(wrapper):]: Member(ckpt, n) for n in wanted}
    return text_tower(flat, path=ckpt.path, fmt="npz")


def save_npz(path: str | Path, params, *, wrap: str | None = None) -> Path:
    """Writes a big_vision-style .npz (flat "/" keys; bfloat16 lands as V2), atomically."""
    path = Path(path)
    flat = {k: np.asarray(v) for k, v in as_flat(params).items()}
    if wrap:
        flat = {f"{wrap.rstrip('/')}/{k}": v for k, v in flat.items()}
    with atomic_file(path, "wb", what="checkpoint") as f:
        np.savez(f, **dict(sorted(flat.items())))
    return path
