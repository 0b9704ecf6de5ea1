"""The harness's own checkpoint folder: orbax arrays in `params/` and `harness.json` (format, encoder
config): what a fine-tuned encoder is saved as, so that it loads with its config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

from harness.checkpoints.layout import flatten, is_flat, unflatten, unwrap
from harness.errors import HarnessError, first_line
from harness.files import fresh_dir, replace_dir, write_text_atomic
from harness.schema import read_json

HARNESS_META = "harness.json"
FORMAT = "sovit-harness/1"


def detect(path: Path) -> bool:
    return path.is_dir() and (path / HARNESS_META).exists()


def read_meta(path: Path) -> dict:
    """harness.json: {"format": FORMAT, "config": {encoder key: value}, ...}; its `config` keys are typed
    by the encoder (`harness.models.encoder.file_config`)."""
    doc = read_json(path / HARNESS_META, what="harness checkpoint file",
                    fix="fix it or save the checkpoint again (Encoder.save(path, fmt='harness'))").require_obj("a JSON object")
    doc.str("format", choices=(FORMAT,))
    doc.obj("config")
    return doc.value


def read_harness(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    meta = read_meta(path)
    try:
        tree = ocp.StandardCheckpointer().restore((path / "params").absolute())
    except Exception as e:  # orbax reports a missing/corrupt folder in many ways
        raise HarnessError(f"checkpoint {path}: cannot read harness checkpoint "
                           f"({type(e).__name__}: {first_line(e, 200)})") from None
    return {k: np.asarray(v) for k, v in flatten(tree).items()}, meta


def read_image(path: Path, subtree: str | None) -> tuple[dict, dict]:
    flat, meta = read_harness(path)
    return unwrap(flat, subtree, path=path), dict(meta.get("config", {}))


def save_harness(path: str | Path, params, config: dict, extra: dict | None = None) -> Path:
    """The harness's own checkpoint: orbax arrays in `params/` + `harness.json` (config), atomically:
    written into `.<name>.tmp` beside it, then renamed into place."""
    path = Path(path).absolute()
    tmp = fresh_dir(path.parent / f".{path.name}.tmp")
    tree = unflatten(dict(params)) if is_flat(params) else params
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp / "params", tree)
    ckptr.wait_until_finished()
    meta = {"format": FORMAT, "config": config, **(extra or {})}
    write_text_atomic(tmp / HARNESS_META, json.dumps(meta, indent=2, sort_keys=True, default=_json_default),
                      what="checkpoint")
    replace_dir(tmp, path)
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))
