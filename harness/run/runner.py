"""Runs one task on one checkpoint and writes its result record (the engine behind `harness run`).

The path of one run (`run_task`): the task is looked up once in the registry; the `--set` values are split
into the task's settings and encoder keys (`split_sets`) and the config is checked, before anything is read;
the checkpoint is opened once as a handle (`harness.checkpoints.Checkpoint`, which a suite shares between
its entries: detected and hashed once); the record's key is the task, its config hash and the checkpoint's
content digest; a complete record of exactly this run at that key is reused (anything else there is
recomputed); otherwise, under a lock on the record, the encoder is loaded (or taken from `Encoders`, shared
by a suite's tasks), the task runs (`execute`: resolve, run, check the metrics), the checkpoint is checked
to be the content that was hashed, and the samples file (what was predicted per example,
`harness.eval.samples`) and then the record naming it are written once, atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from pathlib import Path

from harness import api
from harness.api.registry import get_task
from harness.checkpoints import Checkpoint, open_checkpoint
from harness.errors import HarnessError, did_you_mean
from harness.eval.cache import default_cache_dir
from harness.eval.samples import check_samples_file, samples_path, write_samples
from harness.files import file_lock, write_json_atomic
from harness.models.encoder import CONFIG_KEYS, ENCODER_KEY_TYPES, Encoder, load_encoder
from harness.models.variants import decode_variant
from harness.report import records as results
from harness.settings import FALSE_WORDS, TRUE_WORDS, parse_bool, settings_hash

log = logging.getLogger("harness")


# ---------------------------------------------------------------------------------- settings
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
        if v in TRUE_WORDS[1:] or v in FALSE_WORDS[1:]:
            return v in TRUE_WORDS
        return False if v == "0" else size("a positive integer, true (as wide as the encoder) or false")
    if kind == "bool":
        if (b := parse_bool(v)) is None:
            raise HarnessError(f"--set {key}={value}: expected true or false")
        return b
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

    def get(self, ckpt: Checkpoint | str | None, config: dict) -> Encoder:
        key = (ckpt.spec if isinstance(ckpt, Checkpoint) else str(ckpt), repr(sorted(config.items())))
        if key != self._key:
            self._key = self._encoder = None  # drop the old model before loading the next one
            self._encoder = load_encoder(ckpt, **config)
            self._key = key
        return self._encoder


# ----------------------------------------------------------------------------------------- a run
def run_task(task: str | api.Task, ckpt: Checkpoint | str | None, *, preset: str | None = None,
             sets: dict[str, str] | None = None, encoder_config: dict | None = None, data_dir: str | None = None,
             out_dir: str | Path = "runs", cache_dir: str | Path | None = None, force: bool = False,
             progress: bool = True, name: str | None = None, encoder: Encoder | None = None,
             encoders: Encoders | None = None, info: dict | None = None,
             log_samples: bool = True) -> tuple[dict, Path, bool]:
    """Returns (record, path, reused). A finished identical run (same task, config hash and checkpoint
    content) is reused unless `force` (and, with `log_samples`, only if its samples file is there as written).

    `task`: a registered task's name, or the task itself (already looked up). `ckpt`: a checkpoint spec, an
    open `Checkpoint` (a suite's, hashed once for all its entries), or "random[:seed]". `sets`: `--set`
    values, the task's settings and encoder keys alike; `encoder_config`: encoder keys given otherwise
    (--variant, --res). `encoder`: an encoder loaded already; else it is loaded from `ckpt` (through
    `encoders`, to share it with later runs). `info`: entries added to the record's `info` (a distributed
    run's process count). `log_samples`: write what was predicted per example beside the record
    (`<record>.samples.jsonl.gz`)."""
    task = get_task(task) if isinstance(task, str) else task
    if isinstance(ckpt, str) and ckpt.startswith("random") and not re.fullmatch(r"random(:\d+)?", ckpt):
        raise HarnessError(f"--ckpt {ckpt}: a random encoder is random or random:SEED with an integer seed "
                           "(e.g. random:0)")
    task_sets, enc_sets = split_sets(task, sets)
    config = api.make_config(task, preset, task_sets)
    cfg = api.config_dict(config)
    enc_cfg = {**(encoder_config or {}), **enc_sets, **task.encoder_overrides(config)}
    # The record key covers the encoder settings too: the same weights at another resolution differ.
    cfg_hash = api.config_hash(config, enc_cfg)
    opened = None
    if encoder is None and ckpt is not None and not isinstance(ckpt, Checkpoint) and not str(ckpt).startswith("random"):
        ckpt = opened = open_checkpoint(ckpt)
    try:
        return _run(task, ckpt, config, cfg, cfg_hash, enc_cfg, preset=preset, data_dir=data_dir,
                    out_dir=Path(out_dir), cache_dir=cache_dir, force=force, progress=progress, name=name,
                    encoder=encoder, encoders=encoders, info=info, log_samples=log_samples)
    finally:
        if opened is not None:
            opened.close()


def _run(task, ckpt, config, cfg, cfg_hash, enc_cfg, *, preset, data_dir, out_dir, cache_dir, force, progress,
         name, encoder, encoders, info, log_samples) -> tuple[dict, Path, bool]:
    handle = encoder.checkpoint if encoder is not None else ckpt if isinstance(ckpt, Checkpoint) else None
    sha = encoder.sha256 if encoder is not None else handle.sha256 if handle is not None else None
    subtree = handle.subtree if handle is not None else None
    key = sha if not subtree else settings_hash({"sha256": sha, "subtree": subtree})  # one file, two towers
    spec = encoder.spec if encoder is not None else str(ckpt or "random")
    rec_path = results.record_path(out_dir, task.name, key or spec.replace("/", "_"), cfg_hash)
    expect = {"task": task.name, "version": task.version, "config_hash": cfg_hash, "sha256": sha}
    if not force and (done := _finished(rec_path, expect, log_samples)) is not None:
        return done, rec_path, True

    def on_wait():
        log.warning("another run is computing %s; waiting for it", rec_path.name)

    # One writer per record: a second run of the same (task, config, checkpoint) into this folder waits for
    # the first and then reuses its record instead of computing it twice into the same artefact folder.
    with file_lock(rec_path.parent / ".locks" / f"{rec_path.stem}.lock", on_wait=on_wait) as waited:
        if waited and not force and (done := _finished(rec_path, expect, log_samples)) is not None:
            return done, rec_path, True
        t0 = time.perf_counter()
        if encoder is None:
            encoder = (encoders or Encoders()).get(ckpt, enc_cfg)
        t_load = time.perf_counter() - t0
        ctx = api.RunContext(data_dir=data_dir, cache_dir=Path(cache_dir or default_cache_dir()),
                             out_dir=out_dir / "artifacts" / rec_path.stem, progress=progress,
                             seed=int(getattr(config, "seed", 0) or 0))
        metrics, declared = execute(task, config, encoder, ctx)
        if encoder.checkpoint is not None:  # the record is filed under the digest: the content must be that
            encoder.checkpoint.verify_unchanged()
        ctx.info.update(info or {})
        if not log_samples:
            ctx.info["log_samples"] = False
        seeds = getattr(config, "seeds", None) or [getattr(config, "seed", 0)]
        record = results.make_record(
            task=task, preset=preset, config=cfg, cfg_hash=cfg_hash, encoder=encoder.describe(), metrics=metrics,
            metric_info=declared, ctx=ctx, seeds=seeds, name=name,
            timings={"load_seconds": t_load, "total_seconds": time.perf_counter() - t0, **ctx.record_timings()})
        # The samples first: a record names the file and its sha256, so a record never lacks its samples.
        record["samples"] = write_samples(samples_path(rec_path), task.name, ctx.samples, data_dir=data_dir) \
            if log_samples and ctx.samples else None
        if record["samples"] is None:
            samples_path(rec_path).unlink(missing_ok=True)  # an earlier run's, which no record names now
        write_json_atomic(rec_path, record, what="the result record", devices=False)
        return record, rec_path, False


def execute(task: api.Task, config, encoder: Encoder, ctx: api.RunContext) -> tuple[dict, dict[str, api.Metric]]:
    """Runs `task` with its encoder-dependent settings resolved; returns (its metrics, the declared Metric of
    each name). The metric names must be the declared ones and every value finite: otherwise no record."""
    if getattr(encoder, "naflex", False) and not task.naflex_inputs:
        raise HarnessError(f"{task.name} feeds the encoder square images, which a NaFlex encoder (SigLIP 2 NaFlex) "
                           "does not take; run it on fewshot, linear_probe, knn or lit_zeroshot")
    config = task.resolve_config(config, encoder)
    metrics = task.run(encoder, ctx, config)
    declared = {m.name: m for m in task.metrics(config)}
    check_metric_names(task, metrics, declared)
    # A NaN or infinite metric is garbage, not a result: no record (a rerun would reuse it) and one line.
    bad = sorted(k for k, v in metrics.items() if v is not None and not math.isfinite(float(v)))
    if bad:
        raise HarnessError(f"{task.name}: {', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''} came out "
                           f"{metrics[bad[0]]}, so no record was written; a training run diverged or a setting "
                           "is degenerate: check the task's settings")
    ctx.info["feature_extraction"] = ctx.extractions
    return metrics, declared


def _finished(rec_path: Path, expect: dict, log_samples: bool = True) -> dict | None:
    """The record at `rec_path` if it is a complete record of exactly this run (task and its version, config
    hash, checkpoint digest, metrics) whose samples file is there as it was written (with `log_samples`, one
    must be: a record made with --no-log-samples is recomputed); None otherwise. Anything else there (a
    damaged or foreign file, a record of an older task version) is recomputed, never reused, with one
    warning."""
    if not rec_path.exists() and not rec_path.is_symlink():
        return None
    record, why = results.record_of(rec_path, expect)
    if record is not None and record.get("samples") is not None:
        bad = check_samples_file(rec_path, record["samples"])
        why, record = (bad, None) if bad else (None, record)
    elif record is not None and log_samples and (record.get("info") or {}).get("log_samples") is False:
        why, record = "it was made with --no-log-samples (pass --no-log-samples to reuse it as it is)", None
    if why:
        log.warning("%s: %s; recomputing", rec_path, why)
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
