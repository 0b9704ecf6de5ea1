"""Parameter trees as flat dicts, and the conversions between the layouts checkpoints come in.

Trees are handled as flat dicts `{"a/b/c": np.ndarray}` ("/"-joined paths), the form big_vision's `.npz`
files use; `unflatten` turns them into the nested dicts flax wants. Every reader hands back a tree in the
current big_vision layout: training wrappers dropped (`unwrap`), pre-Linen numbering and the old public
ViT layout fixed (`fix_old_layout`); the model then takes its encoder blocks scanned or unrolled
(`to_layout`) and its posemb at its resolution (`resample_posemb`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import scipy.ndimage

from harness.errors import HarnessError

# The prefix of the encoder blocks in a tree: a ViT's, and a two-tower text tower's (whose blocks are the
# ViT's own, `harness.models.text`).
VIT_BLOCKS = "Transformer/"
TEXT_BLOCKS = "Encoder_0/"


# ------------------------------------------------------------------------------------- lazy leaves
class LazyArray:
    """A checkpoint leaf known by its `shape` and `dtype` before its data is read: the model is checked
    against the shapes first, and the data is read (`_read`) only when numpy asks for it (`np.asarray`),
    so a leaf the model does not need is never read and a tree that does not fit is refused before
    anything large is allocated. Readers subclass it (`npz.Member`, `tensorstore.TsArray`)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    def _read(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __array__(self, dtype=None, copy=None):
        a = self._read()
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, index):
        return np.asarray(self)[index]

    def astype(self, dtype, copy: bool = True):
        return np.asarray(self).astype(dtype, copy=copy)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape}, dtype={self.dtype})"


# ----------------------------------------------------------------------------------------- flat trees
def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def unflatten(flat: dict) -> dict:
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def is_flat(tree) -> bool:
    return all(not hasattr(v, "items") for v in tree.values())


def as_flat(tree) -> dict:
    """`tree` as a flat dict, whichever form it comes in."""
    return tree if is_flat(tree) else flatten(tree)


WRAPPERS = ("params/", "opt/target/")  # training checkpoints' wrappers of the parameter tree


def wrapper_of(names) -> str:
    """The training wrapper a tree's keys share ("params/", "opt/target/"), or "" for a bare tree."""
    return next((w for w in WRAPPERS if any(n.startswith(w) for n in names)), "")


def tower_prefix(names, subtree: str | None = None, *, path="checkpoint") -> tuple[str, str | None]:
    """(the key prefix of the arrays an image encoder is read from, the sub-tree that is): the training
    wrapper, then `subtree`, or `img` for a two-tower (SigLIP / LiT) tree when none is named. Only the
    names are looked at, so a reader decompresses just that tower."""
    wrapper = wrapper_of(names)
    inner = [n[len(wrapper):] for n in names if n.startswith(wrapper)]
    if subtree is None and {"img", "txt"} <= {n.split("/")[0] for n in inner}:
        subtree = "img"
    if not subtree:
        return wrapper, None
    prefix = wrapper + subtree.strip("/") + "/"
    if not any(n.startswith(prefix) for n in names):
        tops = sorted({n.split("/")[0] for n in inner})
        raise HarnessError(f"checkpoint {path}: has no sub-tree {subtree!r}; top-level keys are {tops[:8]}")
    return prefix, subtree


def unwrap(flat: dict[str, np.ndarray], subtree: str | None = None, *, path="checkpoint") -> dict:
    """Drops training-checkpoint wrappers (`params/`, `opt/target/`) and selects `subtree` if given."""
    wrapper = wrapper_of(flat)
    flat = {k[len(wrapper):]: v for k, v in flat.items() if k.startswith(wrapper)}
    if subtree:
        prefix = subtree.strip("/") + "/"
        sub = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        if not sub:
            tops = sorted({k.split("/")[0] for k in flat})
            raise HarnessError(f"checkpoint {path}: has no sub-tree {subtree!r}; top-level keys are {tops[:8]}")
        flat = sub
    return flat


# The Gemma vocabulary of big_vision's SigLIP 2 text towers (pp/proj/paligemma/ops.py `tokenizers.gemma`:
# gs://big_vision/gemma_tokenizer.model): a big_vision two-tower checkpoint with this file beside it uses it.
BV_GEMMA_TOKENIZER = "gemma_tokenizer.model"


def text_tower(flat: dict | None, *, path, fmt: str, tokenizer: str | None = None,
               text_pp: str = "big_vision") -> dict | None:
    """`harness.checkpoints.read_text_tower`'s answer from a two-tower tree's `txt/...`, `t` and `b`
    entries; None when it has no `txt/` tree. `text_pp` is the family whose text pp the tower was trained
    with (`harness.data.text_pp.TextPP`): a HF folder's own processor, else big_vision's SigLIP / LiT
    `tokenize`."""
    if not flat or not any(k.startswith("txt/") for k in flat):
        return None
    if tokenizer is None and fmt in ("npz", "tensorstore") and (Path(path).parent / BV_GEMMA_TOKENIZER).is_file():
        tokenizer = str(Path(path).parent / BV_GEMMA_TOKENIZER)
    return {"txt": {k[4:]: v for k, v in flat.items() if k.startswith("txt/")}, "t": flat.get("t"),
            "b": flat.get("b"), "path": str(path), "format": fmt, "tokenizer": tokenizer, "text_pp": text_pp}


# ---------------------------------------------------------------------------------------- old layouts
def renumber_pre_linen(flat: dict) -> dict:
    """Pre-Linen modules were numbered across types (LayerNorm_0, MultiHeadDotProductAttention_1,
    LayerNorm_2, MlpBlock_3); Linen numbers each type from 0. Renumber per parent and type, keeping order.
    A tree already in Linen numbering is unchanged."""
    children: dict[str, set[str]] = {}
    for key in flat:
        parts = key.split("/")
        for i, part in enumerate(parts[:-1]):
            children.setdefault("/".join(parts[:i]), set()).add(part)
    renames: dict[tuple[str, str], str] = {}
    for parent, names in children.items():
        by_type: dict[str, list[tuple[int, str]]] = {}
        for n in names:
            m = re.fullmatch(r"(.+)_(\d+)", n)
            if m and m.group(1) != "encoderblock":
                by_type.setdefault(m.group(1), []).append((int(m.group(2)), n))
        for typ, items in by_type.items():
            for new_idx, (_, old) in enumerate(sorted(items)):
                renames[(parent, old)] = f"{typ}_{new_idx}"
    out = {}
    for key, v in flat.items():
        parts = key.split("/")
        new = [renames.get(("/".join(parts[:i]), p), p) if i < len(parts) - 1 else p for i, p in enumerate(parts)]
        out["/".join(new)] = v
    return out


def fix_old_layout(flat: dict) -> dict:
    """Brings the old public ViT layout into the current one (big_vision `vit.fix_old_checkpoints`)."""
    flat = renumber_pre_linen(flat)
    for old in ("Transformer/posembed_input/pos_embedding", "Transformer/pos_embedding"):
        if old in flat:
            flat["pos_embedding"] = flat.pop(old)
    pe = flat.get("pos_embedding")
    if pe is not None and pe.ndim == 3 and "cls" in flat:
        n = int(pe.shape[1])
        if n > 1 and math.isqrt(n) ** 2 + 1 == n:
            # The old model prepended cls before adding posemb: fold the cls row into the cls token
            # (big_vision `vit.fix_old_checkpoints`, same token-count test). big_vision also drops such a
            # row from a tree WITHOUT a cls token; only cls models ever had the layout, so there the
            # count is refused instead (`encoder.check_posemb`): a corrupt posemb must not load.
            flat["pos_embedding"] = pe[:, 1:]
            flat["cls"] = flat["cls"] + pe[:, :1].astype(flat["cls"].dtype)
    if "probe" in flat:  # MAP head inlined at top level (ViT-G era).
        for top in ("probe", "MlpBlock_0", "MultiHeadDotProductAttention_0", "LayerNorm_0"):
            for k in [k for k in flat if k == top or k.startswith(top + "/")]:
                flat["MAPHead_0/" + k] = flat.pop(k)
    return flat


# ------------------------------------------------------------------------------- scanned <-> unrolled
def is_scanned(flat: dict, blocks: str = VIT_BLOCKS) -> bool:
    """Whether the encoder blocks under `blocks` are stacked along a leading depth axis
    (`<blocks>encoderblock/...`, flax's `nn.scan`) rather than one sub-tree per layer
    (`<blocks>encoderblock_<i>/...`)."""
    scanned = f"{blocks}encoderblock/"
    return any(k.startswith(scanned) for k in flat)


def unrolled_to_scan(flat: dict, blocks: str = VIT_BLOCKS) -> dict:
    block = re.compile(rf"^{re.escape(blocks)}encoderblock_(\d+)/(.+)$")
    per_leaf: dict[str, dict[int, np.ndarray]] = {}
    out = {}
    for k, v in flat.items():
        m = block.match(k)
        if m:
            per_leaf.setdefault(m.group(2), {})[int(m.group(1))] = v
        else:
            out[k] = v
    for leaf in list(per_leaf):
        per_layer = per_leaf.pop(leaf)
        depth = max(per_layer) + 1
        if sorted(per_layer) != list(range(depth)):
            raise HarnessError(f"checkpoint: encoder blocks are not numbered 0..{depth - 1} for {leaf}")
        shapes = [np.shape(per_layer[i]) for i in range(depth)]
        common = max(set(shapes), key=shapes.count)
        if (odd := next((i for i, sh in enumerate(shapes) if sh != common), None)) is not None:
            raise HarnessError(f"checkpoint: wrong shape at {blocks}encoderblock_{odd}/{leaf}: "
                               f"{shapes[odd]}, the other layers have {common}; the leaf is corrupt")
        out[f"{blocks}encoderblock/{leaf}"] = np.stack([per_layer[i] for i in range(depth)])
    return out


def scan_to_unrolled(flat: dict, blocks: str = VIT_BLOCKS) -> dict:
    scanned = f"{blocks}encoderblock/"
    out = {}
    for k, v in flat.items():
        if k.startswith(scanned):
            for i in range(v.shape[0]):
                out[f"{blocks}encoderblock_{i}/{k[len(scanned):]}"] = v[i]
        else:
            out[k] = v
    return out


def to_layout(flat: dict, scan: bool, blocks: str = VIT_BLOCKS) -> dict:
    """The tree with its encoder blocks under `blocks` scanned (`scan`) or unrolled; `flat` itself when
    it is in that layout already."""
    if is_scanned(flat, blocks) == scan:
        return flat
    return unrolled_to_scan(flat, blocks) if scan else scan_to_unrolled(flat, blocks)


# ----------------------------------------------------------------------------------------------- posemb
def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: TF2's `tf.image.resize(method="bilinear")` along one axis (half-pixel centres, no
    antialias: source coordinate (i + 0.5) * n_in / n_out - 0.5, clamped to the edge pixels)."""
    m = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        x = (i + 0.5) * n_in / n_out - 0.5
        lo = int(np.floor(x))
        frac = x - lo
        m[i, min(max(lo, 0), n_in - 1)] += 1 - frac
        m[i, min(max(lo + 1, 0), n_in - 1)] += frac
    return m


def resample_patchemb(kernel: np.ndarray, new_hw: tuple[int, int]) -> np.ndarray:
    """FlexiViT's pseudo-inverse resize of a patch-embedding kernel (p, p, C, D) to (h, w, C, D) (big_vision
    `models/proj/flexi/vit.py::resample_patchemb`): with B the bilinear resize of a patch as a matrix
    (new pixels x old pixels), the new kernel is pinv(B^T) applied to each old (p*p) filter, the minimum-norm
    w' with B^T w' = w, so <resize(x), w'> = <x, w> for every patch x when upsampling."""
    old_h, old_w = kernel.shape[:2]
    new_h, new_w = (int(v) for v in new_hw)
    if (old_h, old_w) == (new_h, new_w):
        return kernel
    resize = np.kron(_bilinear_matrix(old_h, new_h), _bilinear_matrix(old_w, new_w))  # [new_n, old_n]
    pinv = np.linalg.pinv(resize.T)  # [new_n, old_n]
    flat = np.asarray(kernel, np.float64).reshape(old_h * old_w, -1)
    return (pinv @ flat).reshape(new_h, new_w, *kernel.shape[2:]).astype(kernel.dtype)


def resample_posemb(posemb: np.ndarray, new_tokens: int) -> np.ndarray:
    """Learned posemb (1, g*g, D) -> (1, G*G, D): bilinear (order-1 spline) zoom of the square grid."""
    n, d = posemb.shape[1], posemb.shape[2]
    if n == new_tokens:
        return posemb
    g_old, g_new = int(round(np.sqrt(n))), int(round(np.sqrt(new_tokens)))
    if g_old * g_old != n or g_new * g_new != new_tokens:
        raise HarnessError(f"cannot resample a posemb of {n} tokens to {new_tokens}: both must be square grids")
    dtype = posemb.dtype
    grid = np.asarray(posemb, np.float32).reshape(g_old, g_old, d)
    grid = scipy.ndimage.zoom(grid, (g_new / g_old, g_new / g_old, 1), order=1)
    return grid.reshape(1, g_new * g_new, d).astype(dtype)
