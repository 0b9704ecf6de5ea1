"""Runs one task on one checkpoint and writes its result record (the engine behind `harness run`)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from pathlib import Path

from harness import api, results
from harness.errors import HarnessError
from harness.registry import get_task

log = logging.getLogger("harness")


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "sovit-harness"))


def run_task(task_name: str, ckpt: str | None, *, preset: str | None = None, sets: dict[str, str] | None = None,
             encoder_config: dict | None = None, data_dir: str | None = None, out_dir: str | Path = "runs",
             cache_dir: str | Path | None = None, force: bool = False, progress: bool = True,
             name: str | None = None, encoder=None, encoder_loader=None) -> tuple[dict, Path, bool]:
    """Returns (record, path, reused). A finished identical run (same task, config hash and checkpoint
    sha256) is reused unless `force`."""
    from harness.checkpoints import file_sha256, parse_spec

    task = get_task(task_name)
    if ckpt and str(ckpt).startswith("random") and not re.fullmatch(r"random(:\d+)?", str(ckpt)):
        raise HarnessError(f"--ckpt {ckpt}: a random encoder is random or random:SEED with an integer seed "
                           "(e.g. random:0)")
    config = api.make_config(task, preset, sets)
    cfg = api.config_dict(config)
    enc_cfg = {**(encoder_config or {}), **task.encoder_overrides(config)}
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
    # One writer per record: a second run of the same (task, config, checkpoint) into this folder waits for
    # the first and then reuses its record instead of computing it twice into the same artefact folder.
    with _record_lock(rec_path) as waited:
        if waited and not force and (done := _finished(rec_path)) is not None:
            return done, rec_path, True
        return _compute(task, config, cfg, cfg_hash, enc_cfg, ckpt, preset, rec_path, out_dir, data_dir=data_dir,
                        cache_dir=cache_dir, progress=progress, name=name, encoder=encoder,
                        encoder_loader=encoder_loader), rec_path, False


def _finished(rec_path: Path) -> dict | None:
    if not rec_path.exists():
        return None
    try:
        return json.loads(rec_path.read_text())
    except (OSError, json.JSONDecodeError):
        # Records are written by rename, so this is a foreign or damaged file, not a half-written one.
        log.warning("unreadable record %s; recomputing", rec_path)
        return None


@contextlib.contextmanager
def _record_lock(rec_path: Path):
    """An exclusive flock on `<out>/.locks/<record>.lock`; yields whether it had to wait for another run.
    The kernel drops the lock when its holder dies, so a killed run never leaves a stale one behind."""
    import fcntl

    lock_path = rec_path.parent / ".locks" / f"{rec_path.stem}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            log.warning("another run is computing %s; waiting for it", rec_path.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        yield waited
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _compute(task, config, cfg, cfg_hash, enc_cfg, ckpt, preset, rec_path, out_dir, *, data_dir, cache_dir,
             progress, name, encoder, encoder_loader) -> dict:
    t0 = time.perf_counter()
    if encoder is None and encoder_loader is not None:
        encoder = encoder_loader(enc_cfg)
    if encoder is None:
        from harness.encoder import load_encoder
        encoder = load_encoder(ckpt, **enc_cfg)
    t_load = time.perf_counter() - t0
    ctx = api.RunContext(data_dir=data_dir, cache_dir=Path(cache_dir or default_cache_dir()),
                         out_dir=out_dir / "artifacts" / rec_path.stem, progress=progress,
                         seed=int(getattr(config, "seed", 0) or 0))
    metrics = task.run(encoder, ctx, config)
    t_total = time.perf_counter() - t0
    # A NaN or infinite metric is garbage, not a result: no record (a rerun would reuse it) and one line.
    bad = sorted(k for k, v in metrics.items() if v is not None and not math.isfinite(float(v)))
    if bad:
        raise HarnessError(f"{task.name}: {', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''} came out "
                           f"{metrics[bad[0]]}, so no record was written; a training run diverged or a setting "
                           "is degenerate: check the task's settings")
    info = {m.name: m for m in task.metrics(config)}
    seeds = getattr(config, "seeds", None) or [getattr(config, "seed", 0)]
    record = results.make_record(task=task, preset=preset, config=cfg, cfg_hash=cfg_hash,
                                 encoder=encoder.describe(), metrics=metrics, metric_info=info, ctx=ctx,
                                 seeds=seeds, name=name,
                                 timings={"load_seconds": t_load, "total_seconds": t_total,
                                          **ctx.info.pop("timings", {})})
    results.write_json_atomic(rec_path, record, what="the result record")
    return record


def _hash(obj) -> str:
    import hashlib
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:16]
