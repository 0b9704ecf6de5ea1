"""big_vision tensorstore checkpoints: a folder `checkpoint.bv-<step>` of one zarr array per leaf ("/" in
a leaf's name written as "~"), and `<path>-LAST` naming the newest complete step
(big_vision `utils.save_checkpoint_ts`: it holds `f"{step:09d}"`, with `-tmp` for a step not kept).

Each array is opened by its metadata first (`TsArray`, a `LazyArray`): it must be stored complete (every
chunk present: a chunk that is missing would read as zeros) and in chunks no larger than the array (or
1 MiB), so what reading it allocates is what its shape declares, and that is checked against the model
before any array is read."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import tensorstore as ts

from harness.checkpoints.layout import LazyArray, text_tower, tower_prefix
from harness.errors import HarnessError, first_line

PREFIX = "params/"  # the arrays read: the parameters, never the optimiser state
_POINTER = re.compile(r"^(\d+)(-tmp)?$")


def detect(path: Path) -> bool:
    return path.is_dir() and any("~" in p.name for p in path.iterdir())


def resolve_last(path: Path) -> tuple[Path, int]:
    """`<path>-LAST` -> (the step folder it names, the step); a pointer that names no step folder is one
    error line."""
    last = Path(f"{path}-LAST")
    try:
        text = last.read_text(errors="replace")[:100].strip()
    except OSError as e:
        raise HarnessError(f"checkpoint {last}: cannot be read ({e.strerror}); check the --ckpt path") from None
    m = _POINTER.match(text)
    if not m:
        raise HarnessError(f"checkpoint {last}: holds {text[:40]!r}, not a big_vision step (e.g. 000001000); the "
                           "pointer is damaged: give the step folder itself, e.g. --ckpt <path>-<step>")
    folder = Path(f"{path}-{text}")
    if not folder.is_dir():
        raise HarnessError(f"checkpoint {last}: names step folder {folder.name}, which does not exist (deleted, or "
                           "not written completely); give an existing step folder with --ckpt")
    return folder, int(m.group(1))


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.replace("~", "/").startswith(PREFIX))


def array_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative name, path) of every file of the arrays this reader reads (the `params~*` ones): what a
    tensorstore checkpoint's identity is the digest of."""
    out = []
    for entry in _entries(folder):
        files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
        out += [(str(f.relative_to(folder)), f) for f in files]
    return out


MAX_SMALL_CHUNK = 1 << 20  # a chunk may exceed its array's size up to this many bytes (zarr pads edges)


class TsArray(LazyArray):
    """One zarr array of a step folder, known by its metadata; read when numpy asks for it."""

    def __init__(self, folder: Path, name: str):
        self.name, self.path = name, folder
        entry = folder / name.replace("/", "~")
        try:
            self._store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(entry)}},
                                  open=True, read=True).result()
            self.shape = tuple(int(d) for d in self._store.shape)
            self.dtype = np.dtype(self._store.dtype.numpy_dtype)
            chunk = self._store.chunk_layout.read_chunk.shape
            stats = self._store.storage_statistics(query_fully_stored=True).result()
        except Exception as e:  # tensorstore raises ValueError with a long status message
            raise HarnessError(f"checkpoint {folder}: cannot read array {entry.name} ({first_line(e, 200)}); the "
                               "folder may be incomplete") from None
        declared = self.size * self.dtype.itemsize
        chunk_bytes = math.prod(chunk or ()) * self.dtype.itemsize
        if chunk_bytes > max(declared, MAX_SMALL_CHUNK):
            raise HarnessError(f"checkpoint {folder}: array {entry.name} of shape {self.shape} declares chunks of "
                               f"shape {tuple(chunk)} ({chunk_bytes} bytes), larger than the array: its metadata "
                               "is corrupt or crafted; re-save the checkpoint")
        if self.size and not stats.fully_stored:
            raise HarnessError(f"checkpoint {folder}: array {entry.name} of shape {self.shape} is missing chunks "
                               "(they would read as zeros): the folder is incomplete or damaged; use a complete "
                               "step folder")

    def _read(self) -> np.ndarray:
        try:
            return np.asarray(self._store.read().result())
        except Exception as e:  # tensorstore raises ValueError with a long status message
            raise HarnessError(f"checkpoint {self.path}: cannot read array {self.name.replace('/', '~')} "
                               f"({first_line(e, 200)}); the folder may be incomplete or corrupt") from None


def _read(folder: Path, names: list[str]) -> dict[str, TsArray]:
    return {name: TsArray(folder, name) for name in names}


def _names(folder: Path) -> list[str]:
    names = [p.name.replace("~", "/") for p in _entries(folder)]
    if not names:
        raise HarnessError(f"checkpoint {folder}: no '{PREFIX}*' arrays in this tensorstore folder")
    return names


def read_tensorstore(folder: Path) -> dict[str, np.ndarray]:
    """Every parameter array of a step folder, by its tree path (`params/...`), read."""
    return {k: np.asarray(v) for k, v in _read(folder, _names(folder)).items()}


def read_image(ckpt) -> tuple[dict, dict]:
    names = _names(ckpt.path)
    prefix, subtree = tower_prefix(names, ckpt.subtree, path=ckpt.path)
    flat = _read(ckpt.path, [n for n in names if n.startswith(prefix)])
    return {k[len(prefix):]: v for k, v in flat.items()}, {"subtree": subtree}


def read_text(ckpt) -> dict | None:
    wanted = [n for n in _names(ckpt.path) if n[len(PREFIX):].startswith("txt/") or n[len(PREFIX):] in ("t", "b")]
    if not any(n[len(PREFIX):].startswith("txt/") for n in wanted):
        return None
    return text_tower({k[len(PREFIX):]: v for k, v in _read(ckpt.path, wanted).items()}, path=ckpt.path,
                      fmt="tensorstore")
