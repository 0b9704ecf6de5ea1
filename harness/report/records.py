"""Result records: one JSON file per task run, written atomically (`harness.files`). The schema is in docs/reports.md.

A record is keyed by (task, config hash, checkpoint sha256): `record_path` names the file after them, so a
finished run can be found (and skipped) on rerun, and two runs writing to one folder never share a file.
"""

from __future__ import annotations

import datetime
import importlib.metadata as md
import json
import os
import platform
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from harness import __version__
from harness.errors import HarnessError, first_line

SCHEMA_VERSION = 1


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict:
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "tensorflow-cpu", "tensorflow", "tensorflow-datasets"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    devices = []
    try:
        import jax  # only when a record is made: `harness report` / `check` read records without jax

        devices = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    except Exception:  # a broken accelerator setup should not lose the record
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "libraries": versions,
            "devices": devices}


def record_path(out_dir: str | Path, task: str, checkpoint_sha256: str | None, cfg_hash: str) -> Path:
    ck = (checkpoint_sha256 or "random")[:12]
    return Path(out_dir) / f"{task}__{ck}__{cfg_hash[:12]}.json"


def make_record(*, task, preset, config: dict, cfg_hash: str, encoder: dict, metrics: dict[str, float],
                metric_info: dict, ctx, seeds, timings: dict, name: str | None = None) -> dict:
    m = {}
    for k, v in metrics.items():
        info = metric_info.get(k)
        m[k] = {"value": None if v is None else float(v),
                "higher_is_better": True if info is None else info.higher_is_better,
                "unit": "%" if info is None else info.unit}
    return {
        "schema_version": SCHEMA_VERSION,
        "harness": {"version": __version__, "git_commit": git_commit()},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "task": {"name": task.name, "version": task.version, "preset": preset, "config": config,
                 "config_hash": cfg_hash},
        "checkpoint": {"name": name or _ckpt_name(encoder.get("spec")), **encoder},
        "datasets": ctx.datasets,
        "metrics": m,
        "per_example": ctx.per_example,
        "artifacts": ctx.artifacts,
        "info": ctx.info,
        "seeds": list(seeds),
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
        "environment": environment(),
    }


def _ckpt_name(spec: str | None) -> str:
    if not spec:
        return "random"
    path, _, sub = str(spec).partition(":") if not os.path.exists(str(spec)) else (str(spec), "", "")
    base = Path(path.rstrip("/")).name
    return f"{base}:{sub}" if sub else base


def load_records(paths: str | Path | Sequence[str | Path]) -> list[dict]:
    """The result records in `paths` (record files, or folders searched recursively), in that order;
    unreadable files are an error naming them. Task artefacts (`<out>/artifacts/`: prediction files,
    fine-tuned checkpoints' JSON) and hidden files and folders are not records and are not read, so a run
    still writing its artefacts cannot break a report."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records = []
    for path in map(Path, paths):
        if path.is_file():
            files = [path]
        elif path.is_dir():
            # Regular files only: a FIFO or device named *.json is not a record (and would block a read).
            files = sorted(f for f in path.rglob("*.json") if not _skipped(f.relative_to(path).parts)
                           and f.is_file())
        else:
            raise HarnessError(f"{path}: no such file or folder of result records")
        records += [rec for f in files if (rec := _read_record(f)) is not None]
    return records


MAX_RECORD_BYTES = 1 << 30  # far above a real record (ImageNet val's per-example scores: a few MB)


def read_json(f: Path, what: str = "result record"):
    """The JSON value in file `f`, read only if it is a regular file of at most MAX_RECORD_BYTES (a FIFO or
    device would block or never end); anything else is one error line."""
    try:
        st = f.stat()
        if not stat.S_ISREG(st.st_mode):
            raise HarnessError(f"{f}: not a regular file, so not a {what}; remove it from the folder")
        if st.st_size > MAX_RECORD_BYTES:
            raise HarnessError(f"{f}: {st.st_size} bytes is too large for a {what}; remove it from the folder")
        return json.loads(f.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise HarnessError(f"{f}: not a readable {what} ({first_line(e)}); delete it or rerun the task") from None


def _read_record(f: Path) -> dict | None:
    """The record in `f`; None for a JSON file that is not a record."""
    rec = read_json(f)
    if not (isinstance(rec, dict) and "schema_version" in rec and "metrics" in rec):
        return None
    version = rec["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise HarnessError(f"{f}: schema_version {version!r} is not a number; not a record of this "
                           "harness: delete it or rerun the task")
    if version > SCHEMA_VERSION:
        raise HarnessError(f"{f}: schema version {version} is newer than this harness "
                           f"({SCHEMA_VERSION}); upgrade sovit-harness")
    _check_metrics(f, rec["metrics"])
    rec["_path"] = str(f)
    return rec


def record_of(f: Path, expect: dict) -> tuple[dict | None, str | None]:
    """(the record in `f`, None) if it is a complete record of the run `expect` describes (its "task" name,
    "version", "config_hash", and checkpoint "sha256"); else (None, why not)."""
    try:
        rec = _read_record(f)
    except HarnessError as e:
        return None, str(e).removeprefix(f"{f}: ")
    if rec is None:
        return None, "not a result record"
    task, ckpt = rec.get("task"), rec.get("checkpoint")
    if not isinstance(task, dict) or not isinstance(ckpt, dict):
        return None, "a record without its task or checkpoint"
    for field, have, want in (("task", task.get("name"), expect["task"]),
                              ("task version", str(task.get("version")), str(expect["version"])),
                              ("config hash", task.get("config_hash"), expect["config_hash"]),
                              ("checkpoint sha256", ckpt.get("sha256"), expect["sha256"])):
        if have != want:
            return None, f"a record of another run ({field} {have!r}, this run's is {want!r})"
    if not rec["metrics"]:
        return None, "a record without metrics"
    rec.pop("_path")
    return rec, None


def _skipped(rel_parts: tuple[str, ...]) -> bool:
    return "artifacts" in rel_parts[:-1] or any(part.startswith(".") for part in rel_parts)


def _check_metrics(f: Path, metrics) -> None:
    """A record's metrics are {name: {"value": number or null, ...}}: anything else is a damaged or foreign
    file, an error naming it (NaN is a number here: the gate reports it as a failure)."""
    if not isinstance(metrics, dict):
        raise HarnessError(f"{f}: 'metrics' is not a table of metrics; delete the file or rerun the task")
    for name, m in metrics.items():
        value = m.get("value") if isinstance(m, dict) else m
        if not isinstance(m, dict) or not (value is None or (isinstance(value, (int, float))
                                                            and not isinstance(value, bool))):
            raise HarnessError(f"{f}: metric {name!r} has the value {value!r}, not a number; delete the file "
                               "or rerun the task")
