"""Preprocessing as a pp string, with big_vision's op names and semantics.

A pp string such as `decode|resize_small(256)|central_crop(224)|value_range(-1,1)` becomes a
`Preprocess` callable that maps one example (a dict of tf tensors) to a dict. Every op is
validated when the string is parsed, so a typo fails before any data is read.

Semantics follow big_vision's `pp/ops_image.py` and `pp/ops_general.py`, because checkpoints and
published numbers were produced with them:
- `resize` is bilinear without antialias, then clipped to the input dtype's range and cast back:
  a uint8 image is *truncated* (tf.cast), not rounded.
- `resize_small` uses the "area" method (no antialias); the new size is `tf.round(side * factor)`
  in float32 (round half to even).
- `central_crop` offsets are `(side - crop) // 2`.
- `value_range(vmin, vmax)` maps [in_min, in_max] linearly to [vmin, vmax] in float32.

One deliberate difference: random ops (`random_crop`, `inception_crop`, `flip_lr`, `randaug`) use
stateless tf.random ops seeded per example (see `example_seed`), so a training stream is reproducible
and resumable; big_vision uses stateful ops. The distributions are the same.

Image ops read and write key "image" unless told otherwise (big_vision's `key=` / `inkey=` /
`outkey=` convention); `onehot` uses `key=` / `key_result=`.

The ops live as big_vision splits them: `image` (decode, resizes, crops, flip, value_range), `general`
(keep / drop / copy / onehot), `randaug` (RandAugment), and `dense` (ops that move an image and its dense
target together: DINOv3's segmentation and depth augmentations, big_vision's NYU crop); `registry` holds the
op table and the argument checks. This module parses pp strings into `Preprocess` and writes the standard eval pp strings
(`eval_pp`). TensorFlow is imported when the first op runs (`harness.tf_import.tf`), not at import:
parsing and validating a pp string (task configs, `harness ls tasks`) must not pay TF's seconds.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# The op modules register their ops on import.
from harness.data.pp import dense, general, image, naflex  # noqa: F401
from harness.data.pp.image import ValueRange
from harness.data.pp.randaug import RANDAUG_OPS
from harness.data.pp.registry import KEY_KWARGS, OPS, ArgError, OpDef, known_ops
from harness.errors import HarnessError, did_you_mean
from harness.tf_import import tf

# --------------------------------------------------------------------------------------------------
# Parsing


@dataclasses.dataclass(frozen=True)
class OpCall:
    """One parsed op of a pp string."""

    name: str
    args: tuple
    kwargs: Mapping[str, Any]
    text: str


def _split_ops(spec: str) -> list[str]:
    """Split on '|' outside quotes and brackets (a string argument may contain '|')."""
    parts, depth, quote, current = [], 0, None, []
    for ch in spec:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _parse_op(text: str, spec: str) -> tuple[str, tuple, dict]:
    where = f"in pp '{spec}'"
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise HarnessError(f"cannot parse pp op '{text}' {where}; write ops like resize(224) "
                           "or value_range(-1, 1), joined by '|'") from None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise HarnessError(f"cannot parse pp op '{text}' {where}; write ops like resize(224) "
                           "or value_range(-1, 1), joined by '|'")
    name = node.func.id

    def literal(arg_node):
        if isinstance(arg_node, ast.Starred):
            raise ValueError
        return ast.literal_eval(arg_node)

    try:
        args = tuple(literal(a) for a in node.args)
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise ValueError
            kwargs[kw.arg] = literal(kw.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise HarnessError(f"pp op '{text}' {where}: arguments must be Python literals (numbers, "
                           "quoted strings, tuples, key=value)") from None
    return name, args, kwargs


def _unknown_op_error(name: str, spec: str) -> HarnessError:
    known = sorted(OPS)
    return HarnessError(
        f"unknown pp op '{name}' in pp '{spec}'{did_you_mean(name, known, n=3)}; known ops: {', '.join(known)}")


def _build_op(name: str, args: tuple, kwargs: dict, spec: str):
    """Validate the arguments of one op and return (op definition, function)."""
    if name not in OPS:
        raise _unknown_op_error(name, spec)
    op = OPS[name]
    kwargs = dict(kwargs)
    keys = {}
    if op.keyed:
        keys = {k: kwargs.pop(k, default) for k, default in KEY_KWARGS.items()}
    try:
        inspect.signature(op.factory).bind(*args, **kwargs)
        for k, v in keys.items():
            if v is not None and not isinstance(v, str):
                raise ArgError(f"{k} must be a string; got {v!r}")
        fn = op.factory(*args, **kwargs)
    except (TypeError, ArgError) as e:  # TypeError: from binding the arguments
        raise HarnessError(
            f"pp op '{name}' in pp '{spec}': {e}; signature: {op.signature()}") from None
    return op, fn, keys


class Preprocess:
    """A parsed pp string: `Preprocess("decode|resize(224)")(example) -> example`.

    `str(pp)` is the original string (recorded in result records). Random ops draw from
    `seed` (a shape-[2] int tensor), else from the example's "_seed" entry (which is removed),
    else from a fixed seed; each op folds in its position, so two random ops differ.
    """

    def __init__(self, spec: str | None):
        self.spec = (spec or "").strip()
        self.ops: tuple[OpCall, ...] = ()
        self._fns: list[tuple[OpDef, Callable, dict]] = []
        if not self.spec:
            return
        calls = []
        for text in _split_ops(self.spec):
            if not text:
                raise HarnessError(f"empty op in pp '{self.spec}'; remove the extra '|'")
            name, args, kwargs = _parse_op(text, self.spec)
            self._fns.append(_build_op(name, args, kwargs, self.spec))
            calls.append(OpCall(name, args, kwargs, text))
        self.ops = tuple(calls)

    def split_value_range(self, key: str = "image") -> tuple[Preprocess, ValueRange | None]:
        """(this pp without its last op, that op) when the last op is a `value_range` of `key` (reading and
        writing it); else (this pp, None). The extraction runs the first part on the host and the op on the
        device, where it is bit-identical (`harness.eval.features`)."""
        if not self._fns:
            return self, None
        op, fn, keys = self._fns[-1]
        if op.name != "value_range" or {keys["key"] or keys["inkey"], keys["key"] or keys["outkey"]} != {key}:
            return self, None
        return Preprocess("|".join(call.text for call in self.ops[:-1])), fn

    @property
    def is_random(self) -> bool:
        """Whether any op draws random numbers (then the output depends on the seed)."""
        return any(op.random for op, _, _ in self._fns)

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"Preprocess({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Preprocess) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def __call__(self, data: Mapping[str, Any], seed=None) -> dict[str, Any]:
        data = dict(data)
        example_seed_t = data.pop("_seed", None)
        if seed is None:
            seed = example_seed_t
        if seed is None and self.is_random:
            seed = tf.constant([0, 0], tf.int64)
        for position, (op, fn, keys) in enumerate(self._fns):
            if op.random:
                op_seed = tf.random.experimental.stateless_fold_in(seed, position)
            if op.keyed:
                inkey = keys["key"] or keys["inkey"]
                outkey = keys["key"] or keys["outkey"]
                if inkey not in data:
                    raise HarnessError(
                        f"pp op '{op.name}' in pp '{self.spec}' reads key '{inkey}', but the "
                        f"example has only {sorted(data)}; pass key=... to the op")
                value = fn(data[inkey], op_seed) if op.random else fn(data[inkey])
                data[outkey] = value
            else:
                data = fn(data, op_seed) if op.random else fn(data)
        return data


def as_preprocess(pp: str | Preprocess | None) -> Preprocess:
    """Accept a pp string or an already parsed `Preprocess`."""
    return pp if isinstance(pp, Preprocess) else Preprocess(pp)


def example_seed(seed: int, index, *, process_index: int = 0):
    """The per-example seed of random ops: a function of (seed, process, example index) only."""
    base = tf.constant([seed, process_index], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def preprocess_numpy(pp: str | Preprocess, images_uint8, *, seed: int = 0,
                     key: str = "image") -> np.ndarray:
    """Run a pp on uint8 images [N, H, W, C] (or a list of [H, W, C]) and stack data[key].

    If the pp has a `decode` op, each image is PNG-encoded first (lossless), so the same pp
    string as the data pipeline's can be used. Image i gets `example_seed(seed, i)`.
    """
    pp = as_preprocess(pp)
    encode = any(call.name == "decode" for call in pp.ops)
    outputs = []
    for index, raw in enumerate(images_uint8):
        array = np.asarray(raw)
        if array.dtype != np.uint8 or array.ndim != 3:
            raise HarnessError(f"preprocess_numpy takes uint8 [H, W, C] images; image {index} "
                               f"is {array.dtype} {array.shape}")
        value = tf.io.encode_png(array) if encode else tf.constant(array)
        out = pp({key: value}, seed=example_seed(seed, index))
        outputs.append(np.asarray(out[key]))
    return np.stack(outputs) if outputs else np.zeros((0,), np.float32)


# --------------------------------------------------------------------------------------------------
# The standard eval pp strings; each task passes its own big_vision choice of resize.


def side_before_crop(res: int, resize: int = 256, crop: int = 224) -> int:
    """The side an image is resized to before a central crop of `res`: big_vision's `resize` for a
    `crop` (resize 256 / crop 224, as its ImageNet and few-shot configs) scaled to `res` (64 px -> 73)."""
    return round(res * resize / crop)


def eval_pp(res: int, resize: int | None = None, *, resize_op: str = "resize") -> str:
    """decode, `resize_op(resize)|central_crop(res)` (or `resize_op(res)` alone when `resize` is None: the
    whole image), then big_vision's value_range(-1, 1)."""
    if resize is None:
        return f"decode|{resize_op}({res})|value_range(-1,1)"
    return f"decode|{resize_op}({resize})|central_crop({res})|value_range(-1,1)"


def naflex_pp(patch_size: int, max_num_patches: int, decode: str = "decode") -> str:
    """big_vision's NaFlex eval pp (SigLIP 2 demo colab, `get_pp_naflex`), after `decode`: value_range(-1, 1)
    first, then the aspect-preserving resize to at most `max_num_patches` patches, the patches, padded to
    `max_num_patches` (see `harness.data.pp.naflex`)."""
    n, p = int(max_num_patches), int(patch_size)
    pads = "|".join(f'pad_to_shape(({n},), key="image/{k}")' for k in ("type", "yidx", "xidx"))
    return (f"{decode}|value_range(-1,1)|resize_to_sequence({p}, {n})|patchify({p})|"
            f'pad_to_shape(({n}, None), key="image/patches")|{pads}')


__all__ = [
    "RANDAUG_OPS",
    "OpCall",
    "ValueRange",
    "Preprocess",
    "as_preprocess",
    "eval_pp",
    "example_seed",
    "known_ops",
    "naflex_pp",
    "preprocess_numpy",
    "side_before_crop",
]
