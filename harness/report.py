"""Comparison tables from result records: rows = checkpoints, columns = task metrics.

Missing cells are shown as missing ("-" / empty), never as zero.
"""

from __future__ import annotations

import csv
import io
import math


def collect(records: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """(row names, metric columns grouped by task, cell values). The newest record wins a cell."""
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], float] = {}
    for rec in sorted(records, key=lambda r: r.get("created", "")):
        row = rec["checkpoint"].get("name") or rec["checkpoint"].get("spec") or "?"
        if row not in rows:
            rows.append(row)
        for metric, m in rec["metrics"].items():
            if metric not in cols:
                cols.append(metric)
            cells[(row, metric)] = m["value"] if isinstance(m, dict) else m
    cols.sort(key=lambda c: (c.split("/")[0], _natural(c)))
    return rows, cols, cells


def _natural(s: str):
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}" if abs(v) < 1e4 else f"{v:.4g}"


def to_markdown(records: list[dict]) -> str:
    rows, cols, cells = collect(records)
    if not rows:
        return "(no result records)\n"
    head = "| checkpoint | " + " | ".join(cols) + " |"
    sep = "|---|" + "|".join("---:" for _ in cols) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(_fmt(cells.get((r, c))) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def to_csv(records: list[dict]) -> str:
    rows, cols, cells = collect(records)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["checkpoint", *cols])
    for r in rows:
        w.writerow([r, *["" if cells.get((r, c)) is None else repr(float(cells[(r, c)])) for c in cols]])
    return buf.getvalue()
