"""`build_table`: result records, plus a baseline and the paper's published rows when asked -> a `Table`."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report import facts, paper
from harness.report.baseline import baseline_as_record, load_baseline, make_baseline
from harness.report.table import (
    Table,
    collect,
    is_hidden,
    metric_sort_key,
    row_name,
    row_names,
)


def build_table(records: Sequence[dict], *, columns: Sequence[str] | None = None, baseline: Any = None,
                with_paper: bool = False, show_seeds: bool = False, ci: bool = True) -> Table:
    """The comparison table of `records`.

    columns: metric names or glob patterns to keep (default: all, minus std/seed columns unless
      `show_seeds`). baseline: a baseline dict (`harness.report.baseline` format), a list of records of one
      checkpoint, a path to either, or the name of a row (e.g. "SoViT-400m/14 (paper)"); its row comes first
      and every other cell gets a delta. with_paper: append the paper's published rows
      (harness/assets/paper.json).
    """
    records = list(records)
    paper_rows = paper.load_paper_rows() if with_paper else []
    base_rec = None
    base_name = None
    if baseline is not None:
        names = set(row_names(records))
        if isinstance(baseline, str) and baseline in names:
            base_name = baseline
        elif isinstance(baseline, str) and not Path(baseline).exists() and baseline.endswith("(paper)"):
            match = [r for r in paper.load_paper_rows() if row_name(r) == baseline]
            if not match:
                raise HarnessError(f"--baseline {baseline!r}: no such paper row; see harness/assets/paper.json")
            paper_rows = [r for r in paper_rows if row_name(r) != baseline]
            base_name, base_rec = baseline, match
        else:
            doc = load_baseline(baseline) if isinstance(baseline, (str, Path)) else baseline
            if isinstance(doc, list):
                doc = make_baseline(doc)
            base_rec = [baseline_as_record(doc)]
            base_name = row_name(base_rec[0])
    all_records = [*(base_rec or []), *records, *paper_rows]
    rows, cells, meta = collect(all_records, with_ci=ci)
    if base_name is not None:
        base_row = next(r for r in rows if r.name == base_name)
        base_row.kind = "baseline"
        rows = [base_row, *[r for r in rows if r.name != base_name]]
    # Paper rows last, whatever their timestamps.
    rows = [r for r in rows if r.kind != "paper"] + [r for r in rows if r.kind == "paper"]

    metrics = sorted(meta, key=metric_sort_key)
    if columns is not None:
        metrics = [m for m in metrics if any(m == p or fnmatch.fnmatchcase(m, p) for p in columns)]
    elif not show_seeds:
        metrics = [m for m in metrics if not is_hidden(m)]

    if base_name is not None:
        kinds = {r.name: r.kind for r in rows}
        for (row, metric), cell in cells.items():
            base = cells.get((base_name, metric))
            # The paper's rows are references, not candidates: they get no deltas.
            if kinds[row] != "run" or cell.value is None or base is None or base.value is None:
                continue
            cell.delta = cell.value - base.value
            if cell.delta != 0:
                cell.better = (cell.delta > 0) == meta[metric].higher_is_better
    paper_source = None
    if paper_rows or (base_rec and base_rec[0].get("_kind") == "paper"):
        paper_source = paper.paper_doc().get("paper")
    columns_shown = [meta[m] for m in metrics]
    return Table(rows, columns_shown, cells, base_name, paper_source, _titles({c.task for c in columns_shown}))


def _titles(tasks: set[str]) -> dict[str, str]:
    """Each task's caption: the installed task's own; for one not installed here, the paper's."""
    titles = {t: title for t in tasks if (title := facts.task_title(t))}
    if tasks - set(titles):
        titles.update({t: title for t, title in paper.task_titles().items() if t in tasks and t not in titles})
    return titles


def as_table(records_or_table, build_kwargs: dict) -> Table:
    """What every renderer takes: a built `Table`, or records (and `build_table`'s options)."""
    if isinstance(records_or_table, Table):
        if build_kwargs:
            raise TypeError("pass build_table options when giving records, not a Table")
        return records_or_table
    return build_table(list(records_or_table), **build_kwargs)
