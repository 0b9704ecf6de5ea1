"""Checkpoint files: reading, writing and converting parameter trees. Never unpickles.

Trees are handled as flat dicts `{"a/b/c": np.ndarray}` ("/"-joined paths), the form big_vision's `.npz`
files use; `unflatten` turns them into the nested dicts flax wants.

Formats read (see shared/docs/reference.md):
- big_vision `.npz` (optionally `file.npz:img` for a sub-tree), with `params/` or `opt/target/` wrapping
  and bfloat16 stored as 2-byte void;
- big_vision tensorstore folders `checkpoint.bv-<step>` (one zarr array per leaf, "/" written as "~");
- the harness's own folders (orbax arrays + `harness.json` with the encoder config);
- Hugging Face SigLIP folders (`config.json` + `model.safetensors`), converted by name;
- timm and open_clip safetensors checkpoints, converted by name in `harness.torch_formats`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from harness import torch_formats
from harness.errors import HarnessError

HARNESS_META = "harness.json"


# ----------------------------------------------------------------------------------------------- specs
def parse_spec(spec: str) -> tuple[Path, str | None]:
    """"ckpt.npz:img" -> (Path("ckpt.npz"), "img"). A colon is a sub-tree only if the path before it exists."""
    spec = str(spec)
    m = re.match(r"^(.*):([\w/]+)$", spec)
    if m and not os.path.exists(spec) and os.path.exists(m.group(1)):
        return Path(m.group(1)), m.group(2)
    return Path(spec), None


def detect_format(path: Path) -> str:
    if (fmt := torch_formats.detect(path)) is not None:  # timm / open_clip (also refuses pickled torch files)
        return fmt
    if path.is_file():
        return "npz"
    if path.is_dir():
        if (path / HARNESS_META).exists():
            return "harness"
        if (path / "config.json").exists() and list(path.glob("*.safetensors")):
            return "hf"
        if (path / "config.json").exists():
            raise HarnessError(f"checkpoint {path}: a Hugging Face folder without .safetensors weights; "
                               "export it with save_pretrained(..., safe_serialization=True) (pickled .bin "
                               "files are never loaded)")
        if any("~" in p.name for p in path.iterdir()):
            return "tensorstore"
        raise HarnessError(f"checkpoint {path}: folder is not a known checkpoint format (big_vision "
                           "tensorstore, Hugging Face SigLIP, or a harness checkpoint)")
    # big_vision writes `<path>-LAST` naming the newest `<path>-<step>` folder.
    last = Path(f"{path}-LAST")
    if last.exists():
        return "tensorstore"
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


def _recover_dtype(a: np.ndarray) -> np.ndarray:
    # numpy has no bfloat16: np.save writes it as 2-byte void, which we view back.
    if a.dtype.kind == "V" and a.dtype.itemsize == 2 and a.dtype.fields is None:
        import ml_dtypes
        return a.view(ml_dtypes.bfloat16)
    return a


def unwrap(flat: dict[str, np.ndarray], subtree: str | None = None, *, path="checkpoint") -> dict:
    """Drops training-checkpoint wrappers (`params/`, `opt/target/`) and selects `subtree` if given."""
    for prefix in ("params/", "opt/target/"):
        if flat and any(k.startswith(prefix) for k in flat):
            flat = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
            break
    if subtree:
        prefix = subtree.strip("/") + "/"
        sub = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        if not sub:
            tops = sorted({k.split("/")[0] for k in flat})
            raise HarnessError(f"checkpoint {path}: has no sub-tree {subtree!r}; top-level keys are {tops[:8]}")
        flat = sub
    return flat


# ------------------------------------------------------------------------------------------- reading
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
                out[k] = _recover_dtype(z[k])
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


def read_tensorstore(path: Path, prefix: str = "params/") -> dict[str, np.ndarray]:
    import tensorstore as ts

    last = Path(f"{path}-LAST")
    if not path.is_dir() and last.exists():
        path = Path(f"{path}-{last.read_text().strip()}")
    out = {}
    for entry in sorted(path.iterdir()):
        name = entry.name.replace("~", "/")
        if prefix and not name.startswith(prefix):
            continue
        try:
            arr = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(entry)}},
                          open=True).result().read().result()
        except Exception as e:  # tensorstore raises ValueError with a long status message
            raise HarnessError(f"checkpoint {path}: cannot read array {entry.name} "
                               f"({str(e).splitlines()[0][:200]}); the folder may be incomplete") from None
        out[name] = np.asarray(arr)
    if not out:
        raise HarnessError(f"checkpoint {path}: no '{prefix}*' arrays in this tensorstore folder")
    return out


def read_harness(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    import orbax.checkpoint as ocp

    try:
        meta = json.loads((path / HARNESS_META).read_text())
        tree = ocp.StandardCheckpointer().restore((path / "params").absolute())
    except Exception as e:  # orbax reports a missing/corrupt folder in many ways
        raise HarnessError(f"checkpoint {path}: cannot read harness checkpoint "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return {k: np.asarray(v) for k, v in flatten(tree).items()}, meta


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(path.glob("*.safetensors")):
        try:
            out.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise HarnessError(f"checkpoint {f}: not a readable .safetensors file ({e}); re-export it") from None
    return out


# ------------------------------------------------------------------------------------------- writing
def _atomic_dir_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_npz(path: str | Path, params, *, wrap: str | None = None) -> Path:
    """Writes a big_vision-style .npz (flat "/" keys; bfloat16 lands as V2), atomically."""
    path = _atomic_dir_target(Path(path))
    flat = {k: np.asarray(v) for k, v in (params.items() if _is_flat(params) else flatten(params).items())}
    if wrap:
        flat = {f"{wrap.rstrip('/')}/{k}": v for k, v in flat.items()}
    from harness.results import atomic_file  # fsync, rename, the umask's permissions, full disk as one line

    with atomic_file(path, "wb", what="checkpoint") as f:
        np.savez(f, **dict(sorted(flat.items())))
    return path


def save_harness(path: str | Path, params, config: dict, extra: dict | None = None) -> Path:
    """The harness's own checkpoint: orbax arrays in `params/` + `harness.json` (config), atomically."""
    import shutil
    import orbax.checkpoint as ocp

    path = _atomic_dir_target(Path(path)).absolute()
    tmp = path.parent / f".{path.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tree = unflatten(dict(params)) if _is_flat(params) else params
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp / "params", tree)
    ckptr.wait_until_finished()
    meta = {"format": "sovit-harness/1", "config": config, **(extra or {})}
    (tmp / HARNESS_META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))


def _is_flat(tree) -> bool:
    return all(not hasattr(v, "items") for v in tree.values())


# ---------------------------------------------------------------------------------------- conversions
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
    """Brings the old public ViT layout into the current one (see reference.md)."""
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


_BLOCK = re.compile(r"^Transformer/encoderblock_(\d+)/(.+)$")
_SCANNED = re.compile(r"^Transformer/encoderblock/(.+)$")


def is_scanned(flat: dict) -> bool:
    return any(_SCANNED.match(k) for k in flat)


def unrolled_to_scan(flat: dict) -> dict:
    blocks: dict[str, dict[int, np.ndarray]] = {}
    out = {}
    for k, v in flat.items():
        m = _BLOCK.match(k)
        if m:
            blocks.setdefault(m.group(2), {})[int(m.group(1))] = v
        else:
            out[k] = v
    for leaf in list(blocks):
        per_layer = blocks.pop(leaf)
        depth = max(per_layer) + 1
        if sorted(per_layer) != list(range(depth)):
            raise HarnessError(f"checkpoint: encoder blocks are not numbered 0..{depth - 1} for {leaf}")
        shapes = [np.shape(per_layer[i]) for i in range(depth)]
        common = max(set(shapes), key=shapes.count)
        if (odd := next((i for i, sh in enumerate(shapes) if sh != common), None)) is not None:
            raise HarnessError(f"checkpoint: wrong shape at Transformer/encoderblock_{odd}/{leaf}: "
                               f"{shapes[odd]}, the other layers have {common}; the leaf is corrupt")
        out[f"Transformer/encoderblock/{leaf}"] = np.stack([per_layer[i] for i in range(depth)])
    return out


def scan_to_unrolled(flat: dict) -> dict:
    out = {}
    for k, v in flat.items():
        m = _SCANNED.match(k)
        if m:
            for i in range(v.shape[0]):
                out[f"Transformer/encoderblock_{i}/{m.group(1)}"] = v[i]
        else:
            out[k] = v
    return out


def resample_posemb(posemb: np.ndarray, new_tokens: int) -> np.ndarray:
    """Learned posemb (1, g*g, D) -> (1, G*G, D): bilinear (order-1 spline) zoom of the square grid."""
    import scipy.ndimage

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


# ------------------------------------------------------------------------------- Hugging Face SigLIP
def hf_vision_to_bv(hf: dict[str, np.ndarray], num_heads: int, prefix: str = "vision_model.") -> dict:
    """Renames a Hugging Face SigLIP vision tower (torch layout) into big_vision's tree, transposing
    Linear weights (out, in) -> (in, out) and splitting heads."""
    def t(name):
        if name not in hf:
            raise HarnessError(f"Hugging Face checkpoint lacks tensor {name!r}; is it a SigLIP vision tower?")
        return np.asarray(hf[name])

    p = prefix
    out: dict[str, np.ndarray] = {}
    w = t(p + "embeddings.patch_embedding.weight")  # (D, 3, p, p)
    d = w.shape[0]
    hd = d // num_heads
    out["embedding/kernel"] = w.transpose(2, 3, 1, 0)
    out["embedding/bias"] = t(p + "embeddings.patch_embedding.bias")
    out["pos_embedding"] = t(p + "embeddings.position_embedding.weight")[None]

    def attn(dst, q, k, v, o):
        for name, (wn, bn) in zip(("query", "key", "value"), (q, k, v)):
            out[f"{dst}/{name}/kernel"] = wn.T.reshape(d, num_heads, hd)
            out[f"{dst}/{name}/bias"] = bn.reshape(num_heads, hd)
        out[f"{dst}/out/kernel"] = o[0].T.reshape(num_heads, hd, d)
        out[f"{dst}/out/bias"] = o[1]

    def ln(dst, src):
        out[f"{dst}/scale"], out[f"{dst}/bias"] = t(src + ".weight"), t(src + ".bias")

    def mlp(dst, src):
        for i, fc in enumerate(("fc1", "fc2")):
            out[f"{dst}/Dense_{i}/kernel"] = t(f"{src}.{fc}.weight").T
            out[f"{dst}/Dense_{i}/bias"] = t(f"{src}.{fc}.bias")

    layers = sorted({int(m.group(1)) for k in hf if (m := re.match(re.escape(p) + r"encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"{p}encoder.layers.{i}", f"Transformer/encoderblock_{i}"
        ln(f"{dst}/LayerNorm_0", f"{src}.layer_norm1")
        a = f"{src}.self_attn"
        attn(f"{dst}/MultiHeadDotProductAttention_0",
             *[(t(f"{a}.{n}_proj.weight"), t(f"{a}.{n}_proj.bias")) for n in ("q", "k", "v")],
             (t(f"{a}.out_proj.weight"), t(f"{a}.out_proj.bias")))
        ln(f"{dst}/LayerNorm_1", f"{src}.layer_norm2")
        mlp(f"{dst}/MlpBlock_0", f"{src}.mlp")
    ln("Transformer/encoder_norm", p + "post_layernorm")
    if p + "head.probe" in hf:
        out["MAPHead_0/probe"] = t(p + "head.probe")
        wi, bi = t(p + "head.attention.in_proj_weight"), t(p + "head.attention.in_proj_bias")
        attn("MAPHead_0/MultiHeadDotProductAttention_0",
             *[(wi[j * d:(j + 1) * d], bi[j * d:(j + 1) * d]) for j in range(3)],
             (t(p + "head.attention.out_proj.weight"), t(p + "head.attention.out_proj.bias")))
        ln("MAPHead_0/LayerNorm_0", p + "head.layernorm")
        mlp("MAPHead_0/MlpBlock_0", p + "head.mlp")
    return out


def hf_vision_config(cfg: dict) -> dict:
    """Reads a Hugging Face SigLIP `config.json` (vision or two-tower) into our encoder config."""
    v = cfg.get("vision_config", cfg)
    act = v.get("hidden_act", "gelu_pytorch_tanh")
    if act not in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
        raise HarnessError(f"Hugging Face vision config uses activation {act!r}; only the tanh-approximated "
                           "GELU of SigLIP is supported")
    p = int(v.get("patch_size", 16))
    return dict(width=int(v.get("hidden_size", 768)), depth=int(v.get("num_hidden_layers", 12)),
                mlp_dim=int(v.get("intermediate_size", 3072)), num_heads=int(v.get("num_attention_heads", 12)),
                patch_size=(p, p), pool_type="map" if v.get("vision_use_head", True) else "none",
                posemb="learn", res=int(v.get("image_size", 224)))


def read_hf(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise HarnessError(f"checkpoint {path}/config.json: not readable JSON ({e})") from None
    hf = read_safetensors(path)
    config = hf_vision_config(cfg)
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in hf) else ""
    return hf_vision_to_bv(hf, config["num_heads"], prefix), config


# ------------------------------------------------------------------------------------- entry point
def read_params(spec: str) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Reads any supported checkpoint into (flat params in the current big_vision layout, config hints,
    info). Config hints are what the file states outright (HF config.json, harness.json)."""
    path, subtree = parse_spec(spec)
    fmt = detect_format(path)
    hints: dict = {}
    if fmt == "npz":
        flat = unwrap(read_npz(path), subtree, path=path)
    elif fmt == "tensorstore":
        flat = unwrap(read_tensorstore(path), subtree, path=path)
    elif fmt == "harness":
        flat, meta = read_harness(path)
        flat = unwrap(flat, subtree, path=path)
        hints = dict(meta.get("config", {}))
    elif fmt in torch_formats.FORMATS:
        flat, hints = torch_formats.read_image_tower(path, fmt, subtree)
    else:
        if subtree not in (None, "img", "vision_model"):
            raise HarnessError(f"checkpoint {path}: a Hugging Face folder has no sub-tree {subtree!r}; use ':img'")
        flat, hints = read_hf(path)
    if not flat:
        raise HarnessError(f"checkpoint {path}: contains no arrays")
    if subtree is None and {"img", "txt"} <= {k.split("/")[0] for k in flat}:
        # A two-tower (SigLIP / LiT) checkpoint without ':img': its image tower is the encoder.
        flat, subtree = unwrap(flat, "img", path=path), "img"
    flat = fix_old_layout(flat)
    return flat, hints, {"path": str(path), "format": fmt, "subtree": subtree}


# ------------------------------------------------------------------------- two-tower text towers
def hf_text_to_bv(hf: dict[str, np.ndarray], num_heads: int, prefix: str = "text_model.") -> dict:
    """Renames a Hugging Face SiglipTextModel (torch layout) into big_vision's text_transformer tree.

    HF's `final_layer_norm` is big_vision's `Encoder_0/encoder_norm` and its `head` is big_vision's
    `head`; both pool at the last position, so the converted tower reproduces HF's pooler_output.
    """
    def t(name):
        if name not in hf:
            raise HarnessError(f"Hugging Face checkpoint lacks tensor {name!r}; is it a SigLIP text tower?")
        return np.asarray(hf[name])

    p = prefix
    out: dict[str, np.ndarray] = {}
    out["Embed_0/embedding"] = t(p + "embeddings.token_embedding.weight")
    out["pos_embedding"] = t(p + "embeddings.position_embedding.weight")[None]
    d = out["Embed_0/embedding"].shape[1]
    if d % num_heads:
        raise HarnessError(f"Hugging Face text config: hidden size {d} is not divisible by {num_heads} heads")
    hd = d // num_heads
    layers = sorted({int(m.group(1)) for k in hf if (m := re.match(re.escape(p) + r"encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"{p}encoder.layers.{i}", f"Encoder_0/encoderblock_{i}"
        for ln_dst, ln_src in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_1", "layer_norm2")):
            out[f"{dst}/{ln_dst}/scale"] = t(f"{src}.{ln_src}.weight")
            out[f"{dst}/{ln_dst}/bias"] = t(f"{src}.{ln_src}.bias")
        att = f"{dst}/MultiHeadDotProductAttention_0"
        for name, proj in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            out[f"{att}/{name}/kernel"] = t(f"{src}.self_attn.{proj}.weight").T.reshape(d, num_heads, hd)
            out[f"{att}/{name}/bias"] = t(f"{src}.self_attn.{proj}.bias").reshape(num_heads, hd)
        out[f"{att}/out/kernel"] = t(f"{src}.self_attn.out_proj.weight").T.reshape(num_heads, hd, d)
        out[f"{att}/out/bias"] = t(f"{src}.self_attn.out_proj.bias")
        for j, fc in enumerate(("fc1", "fc2")):
            out[f"{dst}/MlpBlock_0/Dense_{j}/kernel"] = t(f"{src}.mlp.{fc}.weight").T
            out[f"{dst}/MlpBlock_0/Dense_{j}/bias"] = t(f"{src}.mlp.{fc}.bias")
    out["Encoder_0/encoder_norm/scale"] = t(p + "final_layer_norm.weight")
    out["Encoder_0/encoder_norm/bias"] = t(p + "final_layer_norm.bias")
    if p + "head.weight" in hf:
        out["head/kernel"] = t(p + "head.weight").T
        out["head/bias"] = t(p + "head.bias")
    return out


def _npz_two_tower(path: Path) -> dict | None:
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
            flat = {n[len(wrapper):]: _recover_dtype(z[n]) for n in wanted}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise HarnessError(f"checkpoint {path}: not a readable .npz ({type(e).__name__}: {e})") from None
    return flat


def read_text_tower(spec: str) -> dict | None:
    """The text tower of a two-tower checkpoint: {"txt": flat big_vision tree, "t", "b" (log-temperature,
    bias; None if absent), "path", "format", "tokenizer" (a sentencepiece file shipped alongside, or None),
    "text_pp" (the family of its text pp: "hf_siglip" for a HF folder, else "big_vision")}.
    None when the checkpoint holds no text tower. `spec` may name the image sub-tree ("file.npz:img")."""
    path, _ = parse_spec(spec)
    fmt = detect_format(path)
    tokenizer = None
    if fmt == "npz":
        flat = _npz_two_tower(path)
    elif fmt == "tensorstore":
        flat = unwrap(read_tensorstore(path), None, path=path)
        flat = {k: v for k, v in flat.items() if k.startswith("txt/") or k in ("t", "b")}
        if not any(k.startswith("txt/") for k in flat):
            flat = None
    elif fmt in torch_formats.FORMATS:
        return torch_formats.read_text_tower(path, fmt)
    elif fmt == "hf":
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HarnessError(f"checkpoint {path}/config.json: not readable JSON ({e})") from None
        hf = read_safetensors(path)
        prefix = "text_model."
        if not any(k.startswith(prefix) for k in hf):
            return None
        tc = cfg.get("text_config", {})
        act = tc.get("hidden_act", "gelu_pytorch_tanh")
        if act not in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
            raise HarnessError(f"Hugging Face text config uses activation {act!r}; only the tanh-approximated "
                               "GELU of SigLIP is supported")
        flat = {f"txt/{k}": v for k, v in hf_text_to_bv(hf, int(tc.get("num_attention_heads", 12)), prefix).items()}
        for src, dst in (("logit_scale", "t"), ("logit_bias", "b")):
            if src in hf:
                flat[dst] = np.asarray(hf[src])
        # SiglipTokenizer's vocabulary file is `spiece.model` (tokenization_siglip.py VOCAB_FILES_NAMES).
        spm = [path / "spiece.model"] if (path / "spiece.model").is_file() else sorted(path.glob("*.model"))
        tokenizer = str(spm[0]) if spm else None
    else:
        return None
    if not flat:
        return None
    # The family whose text pp the tower was trained with (harness.text.TextPP): a HF folder's own
    # processor, else big_vision's SigLIP / LiT `tokenize`.
    return {"txt": {k[4:]: v for k, v in flat.items() if k.startswith("txt/")}, "t": flat.get("t"),
            "b": flat.get("b"), "path": str(path), "format": fmt, "tokenizer": tokenizer,
            "text_pp": "hf_siglip" if fmt == "hf" else "big_vision"}
