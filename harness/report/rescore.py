"""`harness rescore RECORD`: every metric of a record recomputed from its samples file with the metric code
installed now (`harness.eval.samples.rescore`), printed beside the recorded value. A metric moved when the
two differ at all (the rules repeat the tasks' arithmetic, so an unchanged metric code gives the recorded
values bit for bit)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.eval.samples import read_record_samples, rescore
from harness.report.escape import md_cell, md_text
from harness.report.records import load_records


def _shown(v) -> str:
    return "-" if v is None else f"{v:.10g}"


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b or (math.isnan(a) and math.isnan(b))


def rescore_command(paths: Sequence[str | Path]) -> tuple[str, int]:
    """(the report to print, the exit code: 0 when every metric recomputed equals its record, 1 when one
    moved). `paths`: record files, or folders of them."""
    records = load_records(list(paths))
    if not records:
        raise HarnessError(f"no result records under {', '.join(map(str, paths))}; pass a record file")
    out, moved, counted = [], [], 0
    for rec in records:
        samples = read_record_samples(rec)
        new = rescore(samples)
        recorded = {m: (e.get("value") if isinstance(e, dict) else None) for m, e in rec["metrics"].items()}
        out += [f"### {md_text(rec['_path'])}", "",
                f"samples: {md_text(samples.path.name)}, {len(samples.lines)} examples in {len(samples.sets)} set(s)",
                "", "| metric | recorded | rescored | |", "|---|---:|---:|---|"]
        for metric in [*recorded, *(m for m in new if m not in recorded)]:
            if metric not in new:
                out.append(f"| {md_cell(metric)} | {_shown(recorded[metric])} | - | not computed from examples "
                           "(kept as recorded) |")
                continue
            counted += 1
            old = recorded.get(metric)
            if _same(old, new[metric]):
                state = "same"
            else:
                state = "**moved**" if metric in recorded else "**not in the record**"
                moved.append(f"{metric} ({old!r} -> {new[metric]!r})")
            out.append(f"| {md_cell(metric)} | {_shown(old)} | {_shown(new[metric])} | {state} |")
        out.append("")
    if moved:
        out.append(f"rescore: {len(moved)} of {counted} metric(s) moved: " + md_text("; ".join(moved)))
    else:
        out.append(f"rescore: all {counted} metric(s) computed from the examples equal their records")
    return "\n".join(out) + "\n", 1 if moved else 0
