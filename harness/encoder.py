"""`load_encoder`: one shared encoder, built from a checkpoint, used by every task.

The config is read off the checkpoint tree wherever the tree determines it (width, depth, MLP size, heads,
patch, pooling, posemb, rep_size, classifier size), so `--ckpt` alone is enough. Explicit keys or a
variant string override and are checked against the tree. Parameters are built abstractly with
`jax.eval_shape` (never a jitted init, which would materialise a second copy of a large model).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from typing import Any

import numpy as np

from harness import checkpoints
from harness.errors import HarnessError
from harness.variants import Shape, decode_variant

CONFIG_KEYS = ("variant", "width", "depth", "mlp_dim", "num_heads", "patch_size", "pool_type", "posemb",
               "rep_size", "num_classes", "scan", "dtype_mm", "res")
# Keys the checkpoint tree can disagree with (the others are free choices of the user).
TREE_KEYS = ("width", "depth", "mlp_dim", "num_heads", "patch_size", "rep_size", "num_classes", "posemb")
DEFAULTS = dict(pool_type="gap", posemb="learn", rep_size=False, num_classes=None, scan=False,
                dtype_mm="float32")


def infer_config(flat: dict[str, np.ndarray]) -> dict:
    """What the parameter tree says about the model (a partial config)."""
    cfg: dict[str, Any] = {}
    if "embedding/kernel" in flat:
        k = flat["embedding/kernel"]
        cfg["patch_size"] = (int(k.shape[0]), int(k.shape[1]))
        cfg["width"] = int(k.shape[-1])
    scanned = checkpoints.is_scanned(flat)
    if scanned:
        ln = flat.get("Transformer/encoderblock/LayerNorm_0/scale")
        if ln is not None:
            cfg["depth"] = int(ln.shape[0])
        prefix = "Transformer/encoderblock/"
        lead = 1
    else:
        idx = {int(m.group(1)) for k in flat if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))}
        if idx:
            cfg["depth"] = max(idx) + 1
        prefix = "Transformer/encoderblock_0/"
        lead = 0
    mlp = flat.get(prefix + "MlpBlock_0/Dense_0/kernel")
    if mlp is not None:
        cfg["mlp_dim"] = int(mlp.shape[lead + 1])
    q = flat.get(prefix + "MultiHeadDotProductAttention_0/query/kernel")
    if q is not None:
        cfg["num_heads"] = int(q.shape[lead + 1])
    cfg["scan"] = scanned
    if "MAPHead_0/probe" in flat:
        cfg["pool_type"] = "map"
    elif "cls" in flat:
        cfg["pool_type"] = "tok"
    cfg["posemb"] = "learn" if "pos_embedding" in flat else "sincos2d"
    if "pos_embedding" in flat and "patch_size" in cfg:
        g = int(round(np.sqrt(flat["pos_embedding"].shape[1])))
        cfg["res"] = g * cfg["patch_size"][0]
    cfg["rep_size"] = int(flat["pre_logits/kernel"].shape[1]) if "pre_logits/kernel" in flat else False
    cfg["num_classes"] = int(flat["head/kernel"].shape[1]) if "head/kernel" in flat else None
    return cfg


def _norm_patch(p):
    if p is None:
        return None
    if isinstance(p, (int, np.integer)):
        return (int(p), int(p))
    return tuple(int(x) for x in p)


def resolve_config(tree_cfg: dict, hints: dict, user: dict, *, path: str = "checkpoint") -> dict:
    """Merges, in increasing priority: defaults, checkpoint hints, the tree, the variant, explicit keys.
    Explicit keys that contradict the tree are an error (the weights could not be loaded)."""
    unknown = set(user) - set(CONFIG_KEYS) - {"head_zeroinit", "dropout", "remat_policy"}
    if unknown:
        import difflib
        bad = sorted(unknown)[0]
        close = difflib.get_close_matches(bad, CONFIG_KEYS, n=1)
        raise HarnessError(f"unknown encoder config key {bad!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                           + f"; known: {', '.join(CONFIG_KEYS)}")
    explicit = {k: v for k, v in user.items() if v is not None and k != "variant"}
    if user.get("variant"):
        explicit = {**decode_variant(user["variant"]), **explicit}
    if "patch_size" in explicit:
        explicit["patch_size"] = _norm_patch(explicit["patch_size"])
    cfg = {**DEFAULTS, **hints, **tree_cfg}
    cfg.pop("variant", None)
    if "patch_size" in cfg:
        cfg["patch_size"] = _norm_patch(cfg["patch_size"])
    for k, v in explicit.items():
        if k in TREE_KEYS and k in tree_cfg and tree_cfg[k] != v and not (k == "rep_size" and not v and not tree_cfg[k]):
            raise HarnessError(f"{path}: {k}={v} was asked for but the checkpoint has {k}={tree_cfg[k]}; "
                               f"drop the flag or pick the matching checkpoint")
        cfg[k] = v
    missing = [k for k in ("width", "depth", "mlp_dim", "num_heads", "patch_size") if k not in cfg]
    if missing:
        raise HarnessError(f"{path}: cannot tell {', '.join(missing)} from the checkpoint; pass --variant "
                           "(e.g. So400m/14) or --set key=value")
    if cfg.get("pool_type") not in ("gap", "map", "tok", "0", "none"):
        raise HarnessError(f"pool_type {cfg.get('pool_type')!r} is not one of gap, map, tok, 0, none")
    if cfg.get("posemb") not in ("learn", "sincos2d"):
        raise HarnessError(f"posemb {cfg.get('posemb')!r} is not one of learn, sincos2d")
    if cfg.get("dtype_mm") not in ("float32", "bfloat16"):
        raise HarnessError(f"dtype_mm {cfg.get('dtype_mm')!r} is not one of float32, bfloat16")
    if cfg["width"] % cfg["num_heads"]:
        raise HarnessError(f"width {cfg['width']} is not divisible by num_heads {cfg['num_heads']}")
    cfg.setdefault("res", 224)
    if cfg["res"] % cfg["patch_size"][0]:
        raise HarnessError(f"resolution {cfg['res']} is not a multiple of the patch size {cfg['patch_size'][0]}")
    cfg["scan"] = bool(cfg["scan"])
    return cfg


def build_model(cfg: dict):
    from harness.vit import ViT

    kw = {k: cfg[k] for k in ("width", "depth", "mlp_dim", "num_heads", "pool_type", "posemb", "rep_size",
                              "num_classes", "scan", "dtype_mm") if k in cfg}
    kw["patch_size"] = tuple(cfg["patch_size"])
    for k in ("head_zeroinit", "dropout", "remat_policy"):
        if k in cfg:
            kw[k] = cfg[k]
    return ViT(**kw)


def abstract_params(model, res: int) -> dict[str, Any]:
    """The parameter tree's shapes and dtypes, without allocating it (flat "/" keys)."""
    import jax
    import jax.numpy as jnp

    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, res, res, 3), jnp.float32)))
    return checkpoints.flatten(shapes["params"])


def fit_params(flat: dict, target: dict, *, path: str = "checkpoint") -> dict:
    """Converts layouts, resamples the posemb, and checks every key and shape against the model."""
    if checkpoints.is_scanned(target) and not checkpoints.is_scanned(flat):
        flat = checkpoints.unrolled_to_scan(flat)
    elif not checkpoints.is_scanned(target) and checkpoints.is_scanned(flat):
        flat = checkpoints.scan_to_unrolled(flat)
    if "pos_embedding" in flat and "pos_embedding" in target:
        flat["pos_embedding"] = checkpoints.resample_posemb(flat["pos_embedding"], target["pos_embedding"].shape[1])
    missing = sorted(set(target) - set(flat))
    extra = sorted(set(flat) - set(target))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:4]}" + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""))
        if extra:
            parts.append(f"unexpected keys {extra[:4]}" + (f" (+{len(extra) - 4} more)" if len(extra) > 4 else ""))
        raise HarnessError(f"checkpoint {path}: does not match the model: {'; '.join(parts)}; check the variant, "
                           "pool_type and rep_size (or pick a sub-tree with 'file.npz:img')")
    out = {}
    for k, t in target.items():
        a = np.asarray(flat.pop(k))  # pop: never hold two full copies of a large model
        if tuple(a.shape) != tuple(t.shape):
            raise HarnessError(f"checkpoint {path}: wrong shape at {k}: checkpoint {tuple(a.shape)} vs model "
                               f"{tuple(t.shape)}; check the variant flags")
        if not np.issubdtype(a.dtype, np.floating) and a.dtype.name != "bfloat16":
            raise HarnessError(f"checkpoint {path}: {k} has non-float dtype {a.dtype}")
        out[k] = a.astype(t.dtype, copy=False)
    return out


@dataclasses.dataclass
class Encoder:
    """A loaded encoder: flax model + params + config, with a jitted `features`."""

    model: Any
    params: dict
    config: dict
    spec: str | None
    sha256: str | None
    load_seconds: float = 0.0

    @property
    def res(self) -> int:
        return int(self.config["res"])

    @property
    def shape(self) -> Shape:
        c = self.config
        return Shape(width=c["width"], depth=c["depth"], mlp_dim=c["mlp_dim"], num_heads=c["num_heads"],
                     patch=c["patch_size"][0], pool_type=c["pool_type"], posemb=c["posemb"],
                     rep_size=int(c["rep_size"] or 0), num_classes=int(c["num_classes"] or 0))

    @property
    def outputs(self) -> tuple[str, ...]:
        out = ["stem", "encoded", "pre_logits_2d", "pre_logits"]
        if self.config.get("num_classes"):
            out += ["logits", "logits_2d"]
        return tuple(out)

    def describe(self) -> dict:
        """The JSON-able identity of this encoder, for result records and cache keys."""
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.items()}
        return {"spec": self.spec, "sha256": self.sha256, "config": cfg,
                "params_m": round(self.shape.num_params(self.res) / 1e6, 3),
                "gflops": round(self.shape.gflops(self.res), 3)}

    @functools.cached_property
    def _apply(self):
        import jax

        @functools.partial(jax.jit, static_argnames=("names",))
        def apply(params, images, names):
            _, out = self.model.apply({"params": params}, images)
            return {n: out[n] for n in names}

        return apply

    def features(self, images, outputs: tuple[str, ...] | list[str] | None = None) -> dict[str, np.ndarray]:
        """images: float array [N, H, W, 3] in [-1, 1] at `self.res`; returns the named outputs as numpy."""
        import jax

        names = tuple(outputs or self.outputs)
        bad = [n for n in names if n not in self.outputs]
        if bad:
            raise HarnessError(f"output {bad[0]!r} is not available for this encoder; available: {', '.join(self.outputs)}")
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise HarnessError(f"images must be [N, H, W, 3], got shape {images.shape}")
        from harness import sharding
        if sharding.is_sharded():
            return {k: v.astype(np.float32) for k, v in self._apply_on_mesh(images, names).items()}
        out = self._apply(self.params, images, names)
        return {k: np.asarray(jax.device_get(v)).astype(np.float32) for k, v in out.items()}

    def _apply_on_mesh(self, images: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The batch split over every device of the run, params placed once (see `harness.sharding`)."""
        from harness import sharding
        return sharding.apply_to_batch(lambda p, x: self._apply(p, x, names), self.params, images)

    def save(self, path: str, fmt: str = "npz") -> str:
        if fmt == "npz":
            return str(checkpoints.save_npz(path, self.params_numpy()))
        return str(checkpoints.save_harness(path, self.params_numpy(), self.config))

    def params_numpy(self) -> dict[str, np.ndarray]:
        import jax
        return {k: np.asarray(jax.device_get(v)) for k, v in checkpoints.flatten(self.params).items()}


def random_encoder(seed: int = 0, **config) -> Encoder:
    """A randomly initialised encoder (e.g. the baseline every probe must beat)."""
    import jax
    import jax.numpy as jnp

    cfg = resolve_config({}, {}, config, path="random init")
    model = build_model(cfg)
    res = cfg["res"]
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, res, res, 3), jnp.float32))["params"]
    return Encoder(model=model, params=params, config=cfg, spec=f"random:{seed}", sha256=None)


def load_encoder(spec: str | None = None, **config) -> Encoder:
    """Loads an encoder from a checkpoint spec (see `harness.checkpoints`), or random init for
    `spec="random[:seed]"`. Keyword config uses big_vision's names plus `res`."""
    import jax
    import jax.numpy as jnp

    if spec is None or str(spec).startswith("random"):
        seed = int(str(spec).split(":", 1)[1]) if spec and ":" in str(spec) else 0
        return random_encoder(seed, **config)
    t0 = time.perf_counter()
    flat, hints, info = checkpoints.read_params(spec)
    cfg = resolve_config(infer_config(flat), hints, config, path=info["path"])
    model = build_model(cfg)
    target = abstract_params(model, cfg["res"])
    flat = fit_params(flat, target, path=info["path"])
    params = {}
    for k in list(flat):  # one leaf at a time, so host memory holds ~one copy of the weights
        params[k] = jnp.asarray(flat.pop(k))
    params = checkpoints.unflatten(params)
    sha = checkpoints.file_sha256(checkpoints.parse_spec(spec)[0])
    jax.block_until_ready(params)
    # After loading (whose big temporaries go back to the OS at once), before the forward passes.
    from harness.runtime import tune_malloc
    tune_malloc()
    return Encoder(model=model, params=params, config=cfg, spec=str(spec), sha256=sha,
                   load_seconds=time.perf_counter() - t0)
