"""One handle per checkpoint: `open_checkpoint(spec)` detects the format once, resolves what the spec names
(a sub-tree, a tensorstore `-LAST` pointer), and gives the content identity and the towers' arrays.

Identity is the content that is loaded. `sha256` is a digest of the files the readers read: an `.npz`'s bytes
(hashed through the same open file the arrays are then read from), a tensorstore step's `params~*` array
files (names and bytes, the step the pointer names, not the pointer), a folder's regular files (relative
names and bytes) or a single `.safetensors` with the config file beside it. It is computed once per process
per unchanged set of files (a memo keyed by every file's device, inode, size and modification time), and
`verify_unchanged` re-checks those stats: a checkpoint replaced or rewritten between hashing and the end of a
run is refused instead of filed under the wrong content.
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
from harness.checkpoints.torch_common import OPEN_CLIP_CONFIG
from harness.checkpoints.layout import fix_old_layout
from harness.errors import HarnessError


@dataclasses.dataclass(frozen=True)
class Reader:
    """How one checkpoint format is recognised and read."""

    detect: Callable[[Path], bool]  # may refuse a file outright (pickled torch weights) with a HarnessError
    read_image: Callable[[Checkpoint], tuple[dict, dict]]  # -> (flat tree, config hints)
    read_text: Callable[[Checkpoint], dict | None]  # -> `Checkpoint.read_text`'s answer, None without a text tower


def _no_text_tower(ckpt: Checkpoint) -> None:
    return None


def _by_path(read: Callable[[Path, str | None], tuple[dict, dict]]):
    return lambda ckpt: read(ckpt.path, ckpt.subtree)


# Detection goes down the table in this order; the first format whose `detect` holds is the file's.
READERS: dict[str, Reader] = {
    "open_clip": Reader(open_clip.detect, _by_path(open_clip.read_image), lambda ckpt: open_clip.read_text(ckpt.path)),
    "timm": Reader(timm.detect, _by_path(timm.read_image), _no_text_tower),
    "npz": Reader(npz.detect, npz.read_image, npz.read_text),
    "harness": Reader(harness_dir.detect, _by_path(harness_dir.read_image), _no_text_tower),
    "hf": Reader(hf.detect, _by_path(hf.read_image), lambda ckpt: hf.read_text(ckpt.path)),
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
    if path.exists():
        raise HarnessError(f"checkpoint {path}: not a regular file or folder; give a checkpoint file or folder")
    raise HarnessError(f"checkpoint {path}: no such file or folder; check the --ckpt path")


# ------------------------------------------------------------------------------------------- identity
_DIGESTS: dict[tuple, str] = {}  # the files' stats -> their digest, for this process


def _stats(files: list[tuple[str, Path]]) -> tuple:
    out = []
    for name, f in files:
        try:
            st = f.stat()
        except OSError as e:
            raise HarnessError(f"checkpoint {f}: cannot be read ({e.strerror}); check the --ckpt path") from None
        out.append((name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _digest(files: list[tuple[str, Path]], *, named: bool, opened=None) -> str:
    """sha256 of the files' bytes (each preceded by its relative name when `named`). `opened`: the one
    file already open, hashed through that file object (the same bytes its arrays are read from)."""
    h = hashlib.sha256()
    for name, f in files:
        if named:
            h.update(name.encode())
        fh = opened if opened is not None else open(f, "rb")
        try:
            fh.seek(0)
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        except OSError as e:
            raise HarnessError(f"checkpoint {f}: cannot be read ({e.strerror or e}); check the file") from None
        finally:
            if opened is None:
                fh.close()
    return h.hexdigest()


def folder_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative name, path) of every regular file under `folder` (file symlinks followed, as in a Hugging Face
    cache snapshot; folder symlinks not descended), in sorted order."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for n in sorted(names):
            p = Path(root) / n
            if p.is_file():
                out.append((str(p.relative_to(folder)), p))
    return out


# ------------------------------------------------------------------------------------------ the handle
class Checkpoint:
    """A checkpoint named by a spec: its format (detected once), the file or folder read (`path`, a
    tensorstore pointer resolved to its step folder), the sub-tree, the resolved `step`, its content
    `sha256` (computed once), and the towers' arrays (`read_image`, `read_text`: each array read when asked
    for). An `.npz` stays open between reads (`close` closes it; a later read opens it again and checks that
    it is the same file)."""

    def __init__(self, spec: str | os.PathLike):
        self.spec = str(spec)
        path, self.subtree = parse_spec(self.spec)
        self.step: int | None = None
        if not path.exists() and not path.is_symlink() and Path(f"{path}-LAST").is_file():
            path, self.step = tensorstore.resolve_last(path)
        self.path = path
        self.format = detect_format(path)
        self._npz = None
        self._fh = None
        self._stats: tuple | None = None
        self._sha256: str | None = None

    def __repr__(self) -> str:
        return f"Checkpoint({self.spec!r}, format={self.format!r})"

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- identity
    def _files(self) -> list[tuple[str, Path]]:
        if self.format == "tensorstore":
            return tensorstore.array_files(self.path)
        if self.path.is_dir():
            return folder_files(self.path)
        files = [(self.path.name, self.path)]
        if self.format in ("timm", "open_clip"):  # a single .safetensors reads the config file beside it
            files += [(c, self.path.parent / c) for c in ("config.json", OPEN_CLIP_CONFIG)
                      if (self.path.parent / c).is_file()]
        return files

    @property
    def sha256(self) -> str:
        """The content digest (see the module docstring); hashed once per process per unchanged file set."""
        if self._sha256 is None:
            files = self._files()
            opened = self._open_file() if self.format == "npz" else None
            stats = _stats(files) if opened is None else (self._fstat(),)
            if stats not in _DIGESTS:
                _DIGESTS[stats] = _digest(files, named=self.path.is_dir() or len(files) > 1, opened=opened)
            self._stats, self._sha256 = stats, _DIGESTS[stats]
        return self._sha256

    def verify_unchanged(self) -> None:
        """Refuses a checkpoint whose files changed (replaced, rewritten, removed, added) since it was hashed.
        An `.npz` still open is checked as the open file (its arrays were read from it, whatever the path
        names now)."""
        if self._stats is None:
            return
        if self.format == "npz" and self._fh is not None:
            now = (self._fstat(),)
        else:
            try:
                now = _stats(self._files())
            except HarnessError:
                now = None
        if now != self._stats:
            raise HarnessError(f"checkpoint {self.path}: changed while it was evaluated (its files differ from "
                               "when it was hashed), so no result is filed for it; rerun when it is no longer "
                               "being written")

    # --- an .npz, opened once
    def _open_file(self):
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")
            except OSError as e:
                raise HarnessError(f"checkpoint {self.path}: cannot be opened ({e.strerror}); check the "
                                   "--ckpt path") from None
            if self._stats is not None and (self._fstat(),) != self._stats:
                self.close()
                raise HarnessError(f"checkpoint {self.path}: changed while it was evaluated (it is not the file "
                                   "that was hashed); rerun when it is no longer being written")
        return self._fh

    def _fstat(self) -> tuple:
        st = os.fstat(self._fh.fileno())
        return (self.path.name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def npz(self):
        """The open `.npz` (numpy's lazy NpzFile: a member is decompressed when it is read)."""
        if self._npz is None:
            fh = self._open_file()
            fh.seek(0)
            self._npz = npz.open_npz(fh, self.path)
        return self._npz

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()
            self._npz = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # --- the towers
    def read_image(self) -> tuple[dict[str, np.ndarray], dict, dict]:
        """(flat image-tower params in the current big_vision layout, config hints, info): hints are what the
        file states outright (HF config.json, harness.json); info names the path, format, sub-tree read (a
        two-tower checkpoint without one reads `img`) and step."""
        flat, hints = READERS[self.format].read_image(self)
        hints = dict(hints)
        subtree = hints.pop("subtree", self.subtree)
        if not flat:
            raise HarnessError(f"checkpoint {self.path}: contains no arrays")
        return fix_old_layout(flat), hints, {"path": str(self.path), "format": self.format, "subtree": subtree,
                                             "step": self.step}

    def read_text(self) -> dict | None:
        """The text tower of a two-tower checkpoint: {"txt": flat big_vision tree, "t", "b" (log-temperature,
        bias; None if absent), "path", "format", "tokenizer" (a sentencepiece file shipped alongside, or None),
        "text_pp" (the family of its text pp: "hf_siglip" for a HF folder, else "big_vision"), and what else
        the format states (open_clip: "gelu", "pool_type", its Hugging Face tokenizer)}. None when the
        checkpoint holds no text tower."""
        return READERS[self.format].read_text(self)

    def describe(self) -> dict:
        """The JSON-able identity for result records."""
        out = {"spec": self.spec, "sha256": self.sha256, "format": self.format, "subtree": self.subtree}
        if self.step is not None:
            out["step"] = self.step
        return out


def open_checkpoint(spec) -> Checkpoint:
    """The handle of a checkpoint spec (a `Checkpoint` is returned as it is)."""
    return spec if isinstance(spec, Checkpoint) else Checkpoint(spec)
