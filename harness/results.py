"""Result records: one JSON file per task run, written atomically. The schema is in README.md.

A record is keyed by (task, config hash, checkpoint sha256): `record_path` names the file after them, so a
finished run can be found (and skipped) on rerun, and two runs writing to one folder never share a file.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from harness.errors import HarnessError

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
    import importlib.metadata as md

    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "tensorflow-cpu", "tensorflow", "tensorflow-datasets"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    devices = []
    try:
        import jax
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
    from harness import __version__

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


def current_umask() -> int:
    """The process's umask, read without changing it where /proc allows (os.umask can only swap it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def os_error(e: OSError, path: str | Path, what: str = "") -> HarnessError | None:
    """The one-line HarnessError for an OSError a user can fix (full disk, read-only or forbidden folder,
    a file where a folder should be), naming `path`; None for any other error (a bug: keep its traceback)."""
    where = f"{what} {path}" if what else str(path)
    if e.errno in _DISK_FULL:
        return HarnessError(f"no space left on the device of {where}; free space there (or use another folder) "
                            "and rerun: finished work is kept and the run resumes")
    if e.errno == errno.EROFS:
        return HarnessError(f"{where} is on a read-only file system; pass a writable folder")
    if e.errno in (errno.EACCES, errno.EPERM):
        return HarnessError(f"{where}: permission denied ({e.filename or path}); pass a folder you can write to")
    if e.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return HarnessError(f"{where}: {e.strerror} ({e.filename or path}); pass a path whose folders are folders")
    return None


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", *, what: str = ""):
    """Yields a file object for `path`; on success it is fsynced and renamed into place, so readers see the
    old file or the complete new one, never a part. The file gets the permissions a plain `open` would
    (0666 less the umask): mkstemp's 0600 survives the rename and would hide a shared runs folder or cache
    from everyone else. A full disk or unwritable folder is a one-line HarnessError naming the path (`what`
    says whose path it is, e.g. "--out"); nothing is left behind."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError) and (mapped := os_error(e, path, what)) is not None:
            raise mapped from None
        raise


def write_json_atomic(path: str | Path, obj, *, what: str = "") -> Path:
    with atomic_file(path, "w", what=what) as f:
        json.dump(obj, f, indent=2, sort_keys=False, allow_nan=True)
        f.write("\n")
    return Path(path)


def load_records(folder: str | Path) -> list[dict]:
    """Every result record under `folder` (recursively); unreadable files are an error naming them."""
    folder = Path(folder)
    if folder.is_file():
        files = [folder]
    elif folder.is_dir():
        # Artefacts (predictions, fine-tuned checkpoints' JSON) live under artifacts/: not records.
        files = sorted(p for p in folder.rglob("*.json") if not p.name.startswith(".")
                       and "artifacts" not in p.relative_to(folder).parts[:-1])
    else:
        raise HarnessError(f"{folder}: no such file or folder of result records")
    records = []
    for f in files:
        try:
            rec = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HarnessError(f"{f}: not a readable result record ({e}); delete it or rerun the task") from None
        if isinstance(rec, dict) and "schema_version" in rec and "metrics" in rec:
            version = rec["schema_version"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise HarnessError(f"{f}: schema_version {version!r} is not a number; not a record of this "
                                   "harness: delete it or rerun the task")
            if version > SCHEMA_VERSION:
                raise HarnessError(f"{f}: schema version {version} is newer than this harness "
                                   f"({SCHEMA_VERSION}); upgrade sovit-harness")
            _check_metrics(f, rec["metrics"])
            rec["_path"] = str(f)
            records.append(rec)
    return records


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


def write_text_atomic(path: str | Path, text: str, *, what: str = "") -> Path:
    with atomic_file(path, "w", what=what) as f:
        f.write(text)
    return Path(path)
