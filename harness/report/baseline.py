"""Baselines: one checkpoint's committed numbers, which the gate (`harness check`) and reports compare with.

Baseline file (`reports/baselines/*.json`), written by `make_baseline` / `write_baseline`:

    {"schema": "sovit-harness-baseline/1", "created": "<UTC ISO time>",
     "checkpoint": {"name", "spec", "sha256", ...},
     "tasks": {"<task>": {"preset", "config_hash", "version", "protocol"}},
     "metrics": {"<metric>": {"value", "higher_is_better", "unit", "tolerance"?: abs, "ci95"?: [lo, hi]}}}

A baseline's value, tolerance or band that is not finite is an error, never a pass.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.files import write_json_atomic
from harness.report import protocol
from harness.report.records import check_metric, load_records, read_json
from harness.schema import Doc, describe
from harness.report.table import collect, is_hidden, metric_sort_key, row_names

BASELINE_SCHEMA = "sovit-harness-baseline/1"


def make_baseline(records: Sequence[dict], *, name: str | None = None, tolerance: float | None = None,
                  include_seeds: bool = False) -> dict:
    """A baseline from the records of ONE checkpoint (`name` picks one when there are several).

    Per-seed and std metrics are left out unless `include_seeds`; a metric with per-example scores gets
    its bootstrap `ci95`; `tolerance` (absolute) is written into every metric when given.
    """
    rows, cells, meta = collect(records, with_ci=True)
    names = [r.name for r in rows]
    if not names:
        raise HarnessError("no result records to make a baseline from; run the tasks first")
    if name is None:
        if len(names) > 1:
            raise HarnessError(f"the records hold {len(names)} checkpoints ({', '.join(names)}); a baseline "
                               "is one checkpoint: pass a folder of one checkpoint's records (or name=...)")
        name = names[0]
    elif name not in names:
        raise HarnessError(f"no checkpoint named {name!r} in the records (have: {', '.join(names)})")
    row = next(r for r in rows if r.name == name)
    metrics = {}
    for metric in sorted(meta, key=metric_sort_key):
        cell = cells.get((name, metric))
        if cell is None or cell.value is None or (is_hidden(metric) and not include_seeds):
            continue
        entry = {"value": cell.value, "higher_is_better": meta[metric].higher_is_better, "unit": meta[metric].unit}
        if tolerance is not None:
            entry["tolerance"] = float(tolerance)
        if cell.ci95 is not None:
            entry["ci95"] = [cell.ci95[0], cell.ci95[1]]
        metrics[metric] = entry
    tasks = {}
    records = sorted(records, key=lambda r: str(r.get("created") or ""))
    for rec, rec_row in zip(records, row_names(records)):
        if rec_row == name and rec.get("task"):
            t = rec["task"]
            # `protocol`: the settings that move a number (harness.report.protocol), so `check` can name what
            # changed between the baseline's run and a later one, not only that a config hash differs.
            tasks[t.get("name", "?")] = {"preset": t.get("preset"), "config_hash": t.get("config_hash"),
                                         "version": t.get("version"), "protocol": protocol.settings(rec)}
    checkpoint = {k: v for k, v in row.checkpoint.items() if k in ("name", "spec", "sha256", "variant", "config",
                                                                   "params_m", "gflops")}
    return {"schema": BASELINE_SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": checkpoint, "tasks": tasks, "metrics": metrics}


def write_baseline(path: str | Path, baseline: dict) -> Path:
    """Write a baseline JSON atomically."""
    validate_baseline(baseline, str(path))
    return write_json_atomic(path, baseline)


BASELINE_FIX = "fix or regenerate the baseline from a good run"


def validate_baseline(doc, where: str) -> dict:
    """A baseline document (read from file `where`, or made in memory) with every field the gate and the
    reports read typed; a wrong one is one error line naming the field. A baseline's value, tolerance or
    band that is not finite is an error, never a pass."""
    if not isinstance(doc, dict) or doc.get("schema") != BASELINE_SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise HarnessError(f"{where}: not a baseline file (schema {describe(got)}, expected {BASELINE_SCHEMA!r}); "
                           "make one with harness.report.baseline.make_baseline")
    d = Doc(doc, where, fix=BASELINE_FIX)
    metrics = doc.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise HarnessError(f"{where}: the baseline lists no metrics; regenerate it from a finished run")
    for metric, m in d.obj("metrics").items():
        if not m.is_obj() or not _is_number(m.raw("value")):
            raise HarnessError(f"{where}: metric {metric!r} has no numeric 'value'; fix or regenerate the baseline")
        # A gate must never pass on a value it cannot compare: every comparison with NaN is False.
        if not math.isfinite(m.raw("value")):
            raise HarnessError(f"{where}: metric {metric!r} has the value {m.raw('value')}, not a finite number; "
                               "fix or regenerate the baseline from a good run")
        tolerance = m.raw("tolerance")
        if m.has("tolerance") and not (_is_number(tolerance) and 0 <= tolerance < math.inf):
            raise HarnessError(f"{where}: metric {metric!r} has a bad tolerance {describe(tolerance)}; use a finite "
                               "number >= 0")
        ci = m.raw("ci95")
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(
                _is_number(x) and math.isfinite(x) for x in ci)):
            raise HarnessError(f"{where}: metric {metric!r} has a bad ci95 {describe(ci)}; use [low, high] finite "
                               "numbers or drop it")
        check_metric(m, metric, finite=True)
    ck = d.obj("checkpoint", {}, null_is_default=True)
    for k in ("name", "spec", "sha256", "variant"):
        ck.str(k, None, null_is_default=True)
    ck.obj("config", {}, null_is_default=True)
    for task, info in d.obj("tasks", {}, null_is_default=True).items():
        info.require_obj()
        for k in ("preset", "config_hash"):
            info.str(k, None, null_is_default=True)
        info.check("version", lambda v: v is None or isinstance(v, (str, int)) and not isinstance(v, bool),
                   "a string or an integer", None)
        protocol_doc = info.obj("protocol", {}, null_is_default=True)
        for k, _ in protocol_doc.items():
            protocol_doc.str(k)
    d.str("created", None, null_is_default=True)
    return doc


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_baseline(spec: str | Path) -> dict:
    """A baseline from a baseline JSON, or made from a result record / folder of records of one checkpoint."""
    path = Path(spec)
    if path.is_file():
        doc = read_json(path, what="baseline", fix="regenerate it or pass another --baseline").value
        if isinstance(doc, dict) and "schema_version" in doc and "metrics" in doc and "schema" not in doc:
            return make_baseline(load_records(path))
        return validate_baseline(doc, str(path))
    if path.is_dir():
        records = load_records(path)
        if not records:
            raise HarnessError(f"{path}: no result records to use as a baseline; pass a baseline JSON or a run folder")
        return make_baseline(records)
    raise HarnessError(f"{path}: no such baseline file or run folder; pass e.g. --baseline reports/baselines/proxy.json")


def baseline_as_record(doc: dict) -> dict:
    """A baseline as a record-shaped dict for reports; its row is named "<checkpoint> (baseline)"."""
    ck = dict(doc.get("checkpoint") or {})
    name = ck.get("name") or ck.get("spec") or "baseline"
    ck["name"] = name if name.endswith("(baseline)") else f"{name} (baseline)"
    return {"schema_version": 1, "_kind": "baseline", "created": doc.get("created", ""), "checkpoint": ck,
            "source": "baseline", "metrics": doc["metrics"], "per_example": {}}
