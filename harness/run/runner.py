"""Runs one task on one checkpoint and writes its result record (the engine behind `harness run`).

The path of one run: the task is looked up once in the registry; the `--set` values are split into the
task's settings and encoder keys (`split_sets`); the record's key is the task, its config hash and the
checkpoint's sha256 (hashed once, and handed to the encoder loader); a finished record with that key is
reused; otherwise, under a lock on the record, the encoder is loaded (or taken from `Encoders`, which a
suite shares between its tasks), the task runs, its metric names are checked against what it declares,
and the record is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import time
from pathlib import Path

from harness import api
from harness.api.registry import get_task
from harness.checkpoints import file_sha256, parse_spec
from harness.errors import HarnessError, did_you_mean
from harness.eval.cache import default_cache_dir
from harness.files import file_lock, write_json_atomic
from harness.models.encoder import CONFIG_KEYS, Encoder, load_encoder
from harness.models.variants import decode_variant
from harness.report import records as results

log = logging.getLogger("harness")


# ---------------------------------------------------------------------------------- settings
# The encoder keys' types and allowed values (`--set key=value`): (kind, choices or None).
ENCODER_KEY_TYPES = {
    "variant": ("str", None), "width": ("size", None), "depth": ("size", None), "mlp_dim": ("size", None),
    "num_heads": ("size", None), "patch_size": ("size", None), "res": ("size", None),
    "num_classes": ("size_or_none", None), "rep_size": ("size_or_bool", None), "scan": ("bool", None),
    "pool_type": ("choice", ("gap", "map", "tok", "0", "none")), "posemb": ("choice", ("learn", "sincos2d")),
    "dtype_mm": ("choice", ("float32", "bfloat16")), "gelu": ("choice", ("tanh", "exact")),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def encoder_value(key: str, value: str):
    """A `--set` encoder key's value in its type; anything else is one line naming the key and the range."""
    kind, choices = ENCODER_KEY_TYPES.get(key, ("str", None))
    v = value.strip().lower()

    def size(allowed: str):
        try:
            n = int(v)
        except ValueError:
            n = 0
        if n < 1:
            raise HarnessError(f"--set {key}={value}: expected {allowed}")
        return n

    if kind == "size":
        return size("a positive integer")
    if kind == "size_or_none":
        return None if v in ("none", "0") else size("a positive integer, or none for no classifier head")
    if kind == "size_or_bool":
        if v in _TRUE[1:] or v in _FALSE[1:]:
            return v in _TRUE
        return False if v == "0" else size("a positive integer, true (as wide as the encoder) or false")
    if kind == "bool":
        if v not in _TRUE + _FALSE:
            raise HarnessError(f"--set {key}={value}: expected true or false")
        return v in _TRUE
    if kind == "choice":
        if value.strip() not in choices:
            raise HarnessError(f"--set {key}={value}: expected one of {', '.join(choices)}")
        return value.strip()
    if key == "variant":
        decode_variant(value)
    return value


def split_sets(task: api.Task, sets: dict[str, str] | None) -> tuple[dict[str, str], dict]:
    """`--set` values -> (the task's settings, as strings; encoder keys, typed). A key that is neither is
    one line with the nearest of both."""
    task_keys = {f.name for f in dataclasses.fields(task.Config)}
    task_sets, enc = {}, {}
    for k, v in (sets or {}).items():
        if k in task_keys:
            task_sets[k] = v
        elif k in CONFIG_KEYS:
            enc[k] = encoder_value(k, v)
        else:
            raise HarnessError(f"--set {k}: not a setting of task {task.name!r} nor an encoder key"
                               + did_you_mean(k, [*task_keys, *CONFIG_KEYS]))
    return task_sets, enc


# ---------------------------------------------------------------------------------- encoders
class Encoders:
    """The loaded encoder of one checkpoint, kept for the next task that asks for the same encoder
    config (a suite's tasks mostly do); at most one model is held in memory."""

    def __init__(self):
        self._key = None
        self._encoder: Encoder | None = None

    def get(self, ckpt: str | None, config: dict, *, sha256: str | None = None) -> Encoder:
        key = (str(ckpt), repr(sorted(config.items())))
        if key != self._key:
            self._key = self._encoder = None  # drop the old model before loading the next one
            self._encoder = load_encoder(ckpt, sha256=sha256, **config)
            self._key = key
        return self._encoder


# ----------------------------------------------------------------------------------------- a run
def run_task(task: str | api.Task, ckpt: str | None, *, preset: str | None = None,
             sets: dict[str, str] | None = None, encoder_config: dict | None = None, data_dir: str | None = None,
             out_dir: str | Path = "runs", cache_dir: str | Path | None = None, force: bool = False,
             progress: bool = True, name: str | None = None, encoder: Encoder | None = None,
             encoders: Encoders | None = None) -> tuple[dict, Path, bool]:
    """Returns (record, path, reused). A finished identical run (same task, config hash and checkpoint
    sha256) is reused unless `force`.

    `task`: a registered task's name, or the task itself (already looked up). `sets`: `--set` values, the
    task's settings and encoder keys alike; `encoder_config`: encoder keys given otherwise (--variant,
    --res). `encoder`: an encoder loaded already; else it is loaded from `ckpt` (through `encoders`, to
    share it with later runs)."""
    task = get_task(task) if isinstance(task, str) else task
    if ckpt and str(ckpt).startswith("random") and not re.fullmatch(r"random(:\d+)?", str(ckpt)):
        raise HarnessError(f"--ckpt {ckpt}: a random encoder is random or random:SEED with an integer seed "
                           "(e.g. random:0)")
    task_sets, enc_sets = split_sets(task, sets)
    config = api.make_config(task, preset, task_sets)
    cfg = api.config_dict(config)
    enc_cfg = {**(encoder_config or {}), **enc_sets, **task.encoder_overrides(config)}
    # The record key covers the encoder settings too: the same weights at another resolution differ.
    cfg_hash = api.config_hash(config) if not enc_cfg else _hash({"task": cfg, "encoder": enc_cfg})
    out_dir = Path(out_dir)
    sha = None
    if encoder is not None:
        sha = encoder.sha256
    elif ckpt and not str(ckpt).startswith("random"):
        path = parse_spec(ckpt)[0]
        if not path.exists() and not Path(f"{path}-LAST").exists():
            raise HarnessError(f"checkpoint {path}: no such file or folder; check the --ckpt path")
        sha = file_sha256(path) if path.exists() else None
    rec_path = results.record_path(out_dir, task.name, sha or (ckpt or "random").replace("/", "_"), cfg_hash)
    if not force and (done := _finished(rec_path)) is not None:
        return done, rec_path, True

    def on_wait():
        log.warning("another run is computing %s; waiting for it", rec_path.name)

    # One writer per record: a second run of the same (task, config, checkpoint) into this folder waits for
    # the first and then reuses its record instead of computing it twice into the same artefact folder.
    with file_lock(rec_path.parent / ".locks" / f"{rec_path.stem}.lock", on_wait=on_wait) as waited:
        if waited and not force and (done := _finished(rec_path)) is not None:
            return done, rec_path, True
        t0 = time.perf_counter()
        if encoder is None:
            encoder = (encoders or Encoders()).get(ckpt, enc_cfg, sha256=sha)
        record = _compute(task, config, cfg, cfg_hash, preset, rec_path, out_dir, encoder, t0,
                          data_dir=data_dir, cache_dir=cache_dir, progress=progress, name=name)
        return record, rec_path, False


def _finished(rec_path: Path) -> dict | None:
    if not rec_path.exists():
        return None
    try:
        return json.loads(rec_path.read_text())
    except (OSError, json.JSONDecodeError):
        # Records are written by rename, so this is a foreign or damaged file, not a half-written one.
        log.warning("unreadable record %s; recomputing", rec_path)
        return None


def _compute(task, config, cfg, cfg_hash, preset, rec_path, out_dir, encoder, t0, *, data_dir, cache_dir,
             progress, name) -> dict:
    t_load = time.perf_counter() - t0
    ctx = api.RunContext(data_dir=data_dir, cache_dir=Path(cache_dir or default_cache_dir()),
                         out_dir=out_dir / "artifacts" / rec_path.stem, progress=progress,
                         seed=int(getattr(config, "seed", 0) or 0))
    config = task.resolve_config(config, encoder)
    metrics = task.run(encoder, ctx, config)
    t_total = time.perf_counter() - t0
    info = {m.name: m for m in task.metrics(config)}
    check_metric_names(task, metrics, info)
    # A NaN or infinite metric is garbage, not a result: no record (a rerun would reuse it) and one line.
    bad = sorted(k for k, v in metrics.items() if v is not None and not math.isfinite(float(v)))
    if bad:
        raise HarnessError(f"{task.name}: {', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''} came out "
                           f"{metrics[bad[0]]}, so no record was written; a training run diverged or a setting "
                           "is degenerate: check the task's settings")
    seeds = getattr(config, "seeds", None) or [getattr(config, "seed", 0)]
    record = results.make_record(task=task, preset=preset, config=cfg, cfg_hash=cfg_hash,
                                 encoder=encoder.describe(), metrics=metrics, metric_info=info, ctx=ctx,
                                 seeds=seeds, name=name,
                                 timings={"load_seconds": t_load, "total_seconds": t_total,
                                          **ctx.info.pop("timings", {})})
    write_json_atomic(rec_path, record, what="the result record")
    return record


def check_metric_names(task: api.Task, metrics: dict, declared: dict[str, api.Metric]) -> None:
    """`run()` must return the metrics `metrics(config)` declares, all but the optional ones, and no other
    (their directions and units go into the record; reports and the gate read them there): otherwise the
    task has a bug."""
    extra = sorted(set(metrics) - set(declared))
    missing = sorted(k for k, m in declared.items() if k not in metrics and not m.optional)
    if not extra and not missing:
        return
    parts = ([f"returned {_names(extra)}, which metrics() does not declare"] if extra else []) + \
            ([f"did not return {_names(missing)}, which metrics() declares"] if missing else [])
    raise HarnessError(f"task {task.name!r} ({type(task).__module__}.{type(task).__qualname__}) is inconsistent: "
                       f"run() {' and '.join(parts)}; this is a bug in the task, not in your settings: fix its "
                       "run() or metrics()")


def _names(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:16]
