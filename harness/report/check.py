"""The regression gate: compare result records with a committed baseline (`harness check`; the baseline
file is described in `harness.report.baseline`).

Every baseline metric is checked in every checkpoint row of the run (usually one); the newest record wins
a cell, as in reports. A metric regresses when it is worse than the baseline by more than the allowed
amount, which is, first match wins:

1. `--tolerance X` / `--rel-tolerance Y` when given: max(X, Y * |baseline|), for every metric;
2. the metric's own `tolerance` in the baseline file;
3. the metric's `ci95` in the baseline file: the run must not fall outside the band on the worse side;
4. the default for its unit: 1.0 for "%" (points), 0.01 for "raw" (CIDEr 1.0 when printed x100) and for
   "nats"; else 1% of |baseline|.

Values are compared on the stored scale (CIDEr raw). A baseline metric missing from a row, or with no
value, fails, and so does a NaN or infinite value in the run (it cannot be compared); a baseline whose
value, tolerance or band is not finite is an error (exit 2), never a pass. Metrics the baseline does not
list are not checked. Being better never fails.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from harness.errors import HarnessError
from harness.report import protocol
from harness.report.baseline import validate_baseline
from harness.report.escape import md_cell, md_item, visible
from harness.report.table import collect, is_hidden, metric_sort_key, row_names

DEFAULT_TOLERANCE = {"%": 1.0, "raw": 0.01, "nats": 0.01}
DEFAULT_REL_TOLERANCE = 0.01  # units without an entry above
# Float noise allowed on top of any tolerance, so "exactly at the limit" passes.
_EPS = 1e-9


@dataclasses.dataclass
class CheckRow:
    checkpoint: str
    metric: str
    unit: str
    higher_is_better: bool
    baseline: float
    value: float | None
    delta: float | None  # value - baseline
    allowed: float  # how much worse than the baseline is still a pass
    rule: str  # where `allowed` came from
    status: str  # "ok", "better", "REGRESSED", "MISSING", "NOT FINITE"


@dataclasses.dataclass
class Regression:
    checkpoint: str
    name: str  # metric
    baseline: float
    value: float | None  # None: missing from the run or no value
    delta: float | None
    allowed: float
    reason: str  # "worse", "missing" or "not finite"

    def describe(self) -> str:
        if self.value is None:
            return f"{self.name} (missing in {self.checkpoint})"
        if not math.isfinite(self.value):
            return f"{self.name} ({self.checkpoint}: the run's value is {self.value}, which cannot be compared)"
        return (f"{self.name} ({self.checkpoint}: {self.baseline:.4g} -> {self.value:.4g}, "
                f"delta {self.delta:+.4g}, allowed {self.allowed:.4g})")


@dataclasses.dataclass
class CheckResult:
    ok: bool
    rows: list[CheckRow]
    regressions: list[Regression]
    baseline_name: str
    notes: list[str]

    @property
    def table(self) -> str:
        """Markdown table of every checked metric with a status column, then notes."""
        lines = ["| checkpoint | metric | unit | baseline | value | delta | allowed | rule | status |",
                 "|---|---|---|---:|---:|---:|---:|---|---|"]
        for r in self.rows:
            d = 2 if r.unit == "%" else 4
            value = "-" if r.value is None else f"{r.value:.{d}f}"
            delta = "-" if r.delta is None else f"{r.delta:+.{d}f}"
            lines.append(f"| {md_cell(r.checkpoint)} | {md_cell(r.metric)} | {md_cell(r.unit)}"
                         f"{'' if r.higher_is_better else ' (lower better)'}"
                         f" | {r.baseline:.{d}f} | {value} | {delta} | {r.allowed:.{d}f} | {r.rule} | {r.status} |")
        lines.append("")
        lines += [md_item(n) for n in self.notes]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """One line: the verdict, naming each regressed or missing metric (names `visible`)."""
        n = len(self.rows)
        if self.ok:
            return visible(f"check passed: {n} metric(s) within tolerance of baseline {self.baseline_name!r}")
        return visible(f"check FAILED: {len(self.regressions)} of {n} metric(s) regressed against baseline "
                       f"{self.baseline_name!r}: " + "; ".join(r.describe() for r in self.regressions))


def allowed_drop(entry: dict, *, tolerance: float | None = None,
                 rel_tolerance: float | None = None) -> tuple[float, str]:
    """(how much worse than the baseline still passes, which rule said so) for one baseline metric."""
    base = float(entry["value"])
    if tolerance is not None or rel_tolerance is not None:
        parts = []
        if tolerance is not None:
            parts.append("--tolerance")
        if rel_tolerance is not None:
            parts.append("--rel-tolerance")
        return max(tolerance or 0.0, (rel_tolerance or 0.0) * abs(base)), " & ".join(parts)
    if entry.get("tolerance") is not None:
        return float(entry["tolerance"]), "baseline tolerance"
    if entry.get("ci95"):
        lo, hi = (float(x) for x in entry["ci95"])
        worse_edge = lo if entry.get("higher_is_better", True) else hi
        return max(0.0, abs(base - worse_edge)), "baseline ci95"
    unit = entry.get("unit", "%")
    if unit in DEFAULT_TOLERANCE:
        return DEFAULT_TOLERANCE[unit], f"default ({unit})"
    return DEFAULT_REL_TOLERANCE * abs(base), f"default ({DEFAULT_REL_TOLERANCE:.0%} relative)"


def check(records: Sequence[dict], baseline: dict, *, tolerance: float | None = None,
          rel_tolerance: float | None = None) -> CheckResult:
    """Compare every checkpoint row of `records` with `baseline` (see the module docstring)."""
    for flag, v in (("--tolerance", tolerance), ("--rel-tolerance", rel_tolerance)):
        if v is not None and not 0 <= v < math.inf:
            raise HarnessError(f"{flag} {v}: must be a finite number >= 0")
    validate_baseline(baseline, "baseline")
    rows, cells, meta = collect(records)
    rows = [r for r in rows if r.kind == "run"]
    if not rows:
        raise HarnessError("no result records to check; run the tasks first (e.g. `harness run ... --out runs/`)")
    base_ck = baseline.get("checkpoint") or {}
    base_name = str(base_ck.get("name") or base_ck.get("spec") or "baseline")
    metrics = sorted(baseline["metrics"], key=metric_sort_key)
    # Reports show a NaN as "no value"; the gate names it for what it is (a broken run, not a missing task).
    non_finite = {}
    for rec, row_name in zip(records, row_names(records)):
        for metric, m in (rec.get("metrics") or {}).items():
            v = m.get("value") if isinstance(m, dict) else None
            if isinstance(v, float) and not math.isfinite(v):
                non_finite[(row_name, metric)] = v
    out, regressions, notes = [], [], []
    for row in rows:
        for metric in metrics:
            entry = baseline["metrics"][metric]
            base = float(entry["value"])
            hib = bool(entry.get("higher_is_better", True))
            unit = str(entry.get("unit", "%"))
            allowed, rule = allowed_drop(entry, tolerance=tolerance, rel_tolerance=rel_tolerance)
            cell = cells.get((row.name, metric))
            value = cell.value if cell is not None else None
            if value is None and (row.name, metric) in non_finite:
                value = non_finite[(row.name, metric)]
            if value is not None and not math.isfinite(value):
                out.append(CheckRow(row.name, metric, unit, hib, base, value, None, allowed, rule, "NOT FINITE"))
                regressions.append(Regression(row.name, metric, base, value, None, allowed, "not finite"))
                continue
            if value is None:
                out.append(CheckRow(row.name, metric, unit, hib, base, None, None, allowed, rule, "MISSING"))
                regressions.append(Regression(row.name, metric, base, None, None, allowed, "missing"))
                continue
            delta = cell.value - base
            worse_by = -delta if hib else delta
            if worse_by > allowed + _EPS * max(1.0, abs(base)):
                status = "REGRESSED"
                regressions.append(Regression(row.name, metric, base, cell.value, delta, allowed, "worse"))
            else:
                status = "better" if -worse_by > allowed else "ok"
            out.append(CheckRow(row.name, metric, unit, hib, base, cell.value, delta, allowed, rule, status))
        if base_ck.get("sha256") and row.checkpoint.get("sha256") and base_ck["sha256"] != row.checkpoint["sha256"]:
            notes.append(f"{row.name}: checkpoint sha256 {row.checkpoint['sha256'][:12]} differs from the "
                         f"baseline's {base_ck['sha256'][:12]}")
    # Tell apart "the model changed" from "the protocol changed": the settings that moved are named (a
    # baseline written before it held `protocol` gets the config hash compared instead).
    run_tasks: dict[str, list[dict]] = {}
    for rec in sorted(records, key=lambda r: str(r.get("created") or "")):
        if rec.get("task"):
            run_tasks.setdefault(rec["task"].get("name"), []).append(rec)
    for task, info in (baseline.get("tasks") or {}).items():
        recs = run_tasks.get(task, [])
        if not recs:
            continue
        if isinstance(info.get("protocol"), dict):
            diffs = protocol.changed(protocol.settings(recs[-1]), info["protocol"])
            if diffs:
                notes.append(f"task {task}: made under another protocol than the baseline: "
                             f"{protocol.describe(diffs, limit=4)} (the baseline's value last)")
            continue
        hashes = {r["task"].get("config_hash") for r in recs}
        if info.get("config_hash") and info["config_hash"] not in hashes:
            notes.append(f"task {task}: config hash {', '.join(sorted(str(h) for h in hashes))} differs from the "
                         f"baseline's {info['config_hash']} (settings changed)")
    unchecked = {m for (r, m), c in cells.items() if m not in baseline["metrics"] and not is_hidden(m)}
    if unchecked:
        notes.append(f"{len(unchecked)} metric(s) of the run are not in the baseline and were not checked")
    return CheckResult(not regressions, out, regressions, base_name, notes)
