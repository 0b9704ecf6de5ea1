"""Result records: one JSON file per task run, written atomically (`harness.files`). The schema is in docs/reports.md.

A record is keyed by (task, config hash, checkpoint sha256): `record_path` names the file after them, so a
finished run can be found (and skipped) on rerun, and two runs writing to one folder never share a file.
"""

from __future__ import annotations

import datetime
import importlib.metadata as md
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from harness import __version__, schema
from harness.errors import HarnessError
from harness.schema import Doc

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


# Far above a real record (ImageNet val's per-example scores: ~250 kB a metric), and a bound on what
# parsing one may take (at worst ~25 bytes of Python objects per byte of JSON: `[{},{},...]`).
MAX_RECORD_BYTES = 64 << 20
RECORD_FIX = "delete it or rerun the task"


def read_json(f: Path, what: str = "result record", fix: str = RECORD_FIX) -> Doc:
    """The JSON document in file `f` (`harness.schema.read_json`: a regular file of at most MAX_RECORD_BYTES,
    nested at most MAX_DEPTH deep); anything else is one error line."""
    return schema.read_json(f, what=what, fix=fix, max_bytes=MAX_RECORD_BYTES)


def _read_record(f: Path) -> dict | None:
    """The record in `f`, every field the reports and the gate read typed (`check_record`); None for a JSON
    file that is not a record."""
    doc = read_json(f)
    if not (doc.is_obj() and doc.has("schema_version") and doc.has("metrics")):
        return None
    version = doc.raw("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise HarnessError(f"{f}: schema_version {version!r} is not a number; not a record of this "
                           "harness: delete it or rerun the task")
    if version > SCHEMA_VERSION:
        raise HarnessError(f"{f}: schema version {version} is newer than this harness "
                           f"({SCHEMA_VERSION}); upgrade sovit-harness")
    check_record(doc)
    rec = doc.value
    rec["_path"] = str(f)
    return rec


def _str_or_null(doc: Doc, *keys: str) -> None:
    for k in keys:
        doc.str(k, None, null_is_default=True)


def check_metric(m: Doc, name: str, *, finite: bool = False) -> None:
    """One metric entry, {"value": number or null, "higher_is_better", "unit", "note", "decimals", "ci95",
    "tolerance"}: each field the reports read, typed (NaN and Inf are numbers of a record: the gate reports
    them as failures; a baseline's must be finite)."""
    value = m.raw("value") if m.is_obj() else m.value
    if not m.is_obj() or not (value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))):
        raise HarnessError(f"{m.file}: metric {name!r} has the value {schema.describe(value)}, not a number; "
                           f"{m.fix}")
    m.number("value", None, finite=finite, null_is_default=not finite)
    m.bool("higher_is_better", True)
    m.str("unit", "%")
    m.str("note", None, null_is_default=True)
    m.int("decimals", None, min=0, max=12, null_is_default=True)
    if m.raw("ci95") is not None:
        lo, hi = m.numbers("ci95", length=2)
        if lo > hi:
            raise m.error("a list [low, high] with low <= high", "ci95", m.raw("ci95"))


def check_record(doc: Doc) -> None:
    """A result record's fields, typed as `make_record` writes them and the reports read them: "metrics"
    {name: metric}, "per_example" {metric: [numbers]}, "checkpoint" and "task" objects (their names, digests,
    configs), "datasets" a list of objects, "info" an object, "created" a string. A field of the wrong type
    is one error line naming the file and the field."""
    metrics = doc.obj("metrics")
    for name, m in metrics.items():
        check_metric(m, name)
    per_example = doc.obj("per_example", {}, null_is_default=True)
    for key, _ in per_example.items():
        per_example.numbers(key, finite=False)
    ck = doc.obj("checkpoint", {}, null_is_default=True)
    _str_or_null(ck, "name", "spec", "sha256", "format", "subtree", "variant")
    ck.int("step", None, min=0, null_is_default=True)
    ck.obj("config", {}, null_is_default=True)
    for k in ("params_m", "gflops"):
        ck.number(k, None, null_is_default=True)
    task = doc.obj("task", {}, null_is_default=True)
    _str_or_null(task, "name", "preset", "config_hash")
    task.check("version", lambda v: v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
               "a string or an integer", None)
    task.obj("config", {}, null_is_default=True)
    for d in doc.list("datasets", [], null_is_default=True).entries():
        d.require_obj()
    doc.obj("info", {}, null_is_default=True)
    _str_or_null(doc, "created", "source")
    if doc.has("_kind"):
        raise doc.error("no such field (reports set it, not files)", "_kind", doc.raw("_kind"))


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
