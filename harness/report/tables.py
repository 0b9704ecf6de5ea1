"""Cell formatting every renderer shares, and the Markdown, CSV and LaTeX renderers of a `Table`. Every value
from a record goes through its format's escaping (`harness.report.escape`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from harness.errors import HarnessError
from harness.report.build import as_table
from harness.report.escape import csv_line, csv_text, latex_text, md_cell, md_item, md_text, visible
from harness.report.table import (
    CI_RESAMPLES,
    CI_SEED,
    PROTOCOL_MARK,
    Cell,
    Column,
    Row,
    Table,
)


# ------------------------------------------------------------------------------------ cells and notes
def _num(v: float, decimals: int) -> str:
    if abs(v) >= 1e5:
        return f"{v:.4g}"
    return f"{v:.{decimals}f}"


def _decimals(cell: Cell, col: Column) -> int:
    return col.decimals if cell.decimals is None else cell.decimals


def fmt_value(cell: Cell | None, col: Column) -> str:
    """The printed value (display scale), or "-" when missing."""
    if cell is None or cell.value is None:
        return "-"
    return _num(cell.value * col.scale, _decimals(cell, col))


def fmt_ci(cell: Cell, col: Column) -> str:
    lo, hi = cell.ci95
    d = col.decimals
    return f"[{_num(lo * col.scale, d)}, {_num(hi * col.scale, d)}]"


def fmt_half_width(cell: Cell, col: Column) -> str:
    """Half the width of the cell's CI, for `value ± half-width`."""
    lo, hi = cell.ci95
    return _num((hi - lo) / 2 * col.scale, col.decimals)


def fmt_delta(cell: Cell, col: Column, *, arrows: tuple[str, str] = ("▲", "▼"), unchanged: str = "±") -> str:
    """`+d▲` / `-d▼`; `unchanged` replaces the sign of a change too small to print (the long Markdown
    layout, where ± is the CI's, gives none)."""
    text = f"{cell.delta * col.scale:+.{col.decimals}f}"
    if float(text) == 0:  # no visible change: neither better nor worse
        return unchanged + text[1:]
    if cell.better is None:
        return text
    return text + (arrows[0] if cell.better else arrows[1])


def table_notes(table: Table, cols: Sequence[Column], arrows: tuple[str, str] = ("▲", "▼"),
                half_widths: bool = False) -> list[str]:
    """The notes under a table: scales, intervals (as [lo, hi], or as ± half-widths), deltas, directions,
    sources, † notes and ‡ marks."""
    notes = []
    if any(c.scale != 1 for c in cols):
        notes.append("x100: captioning scores (CIDEr, BLEU-4, ROUGE-L) are stored raw and printed x100, as "
                     "papers do.")
    shown = {c.metric for c in cols}
    if any(cell.ci95 for (_, metric), cell in table.cells.items() if metric in shown):
        interval = (f"bootstrap 95% CI of the mean of the per-example scores ({CI_RESAMPLES} resamples, seed "
                    f"{CI_SEED})")
        if half_widths:
            notes.append(f"± h: h is half the width of the {interval}; the percentile interval need not be "
                         "symmetric: `--layout wide` and the HTML page print it as [lo, hi].")
        else:
            notes.append(f"[lo, hi]: {interval}.")
    if table.baseline is not None:
        notes.append(f"(+d): value minus the baseline {table.baseline!r}; {arrows[0]} better, {arrows[1]} worse "
                     f"(for lower-is-better metrics a negative change is {arrows[0]}).")
    lower = [c.metric for c in cols if not c.higher_is_better]
    if lower:
        notes.append("Lower is better: " + ", ".join(lower) + ".")
    notes.append("-: not measured.")
    if any(r.kind == "paper" for r in table.rows):
        notes.append(f"(paper) rows: published numbers, {table.paper_source} (harness/assets/paper.json).")
    by_note: dict[tuple[str, str], list[str]] = {}
    for (row, metric), cell in table.cells.items():
        if cell.note and metric in shown and cell.value is not None:
            by_note.setdefault((metric, cell.note), []).append(row)
    for (metric, note), rows in by_note.items():
        notes.append(f"† {metric} ({', '.join(rows)}): {note}")
    for (row, metric), cell in table.cells.items():
        if cell.protocol and metric in shown and cell.value is not None:
            notes.append(f"{PROTOCOL_MARK} {metric} ({row}): {cell.protocol}; not comparable as it stands.")
    return notes


def header_spans(cols: Sequence[Column]) -> list[tuple[str, int]]:
    """(group header, number of columns under it), left to right."""
    spans: list[tuple[str, int]] = []
    for c in cols:
        top = c.header[0]
        if spans and spans[-1][0] == top:
            spans[-1] = (top, spans[-1][1] + 1)
        else:
            spans.append((top, 1))
    return spans


# ------------------------------------------------------------------------------------ Markdown / CSV / LaTeX
def _md_cell(table: Table, row: Row, col: Column, *, half_width: bool = False) -> str:
    cell = table.cell(row.name, col.metric)
    if cell is None:
        return "-"
    text = fmt_value(cell, col)
    if cell.note:
        text += "†"
    if cell.protocol:
        text += PROTOCOL_MARK
    if cell.ci95:
        text += f" ± {fmt_half_width(cell, col)}" if half_width else " " + fmt_ci(cell, col)
    if cell.delta is not None:
        text += f" ({fmt_delta(cell, col, unchanged='' if half_width else '±')})"
    return text


MARKDOWN_LAYOUTS = ("long", "wide")
UNPUBLISHED = "No published number: the paper reports no result for this task."
NOTE_WIDTH = 100  # the long layout's notes, in characters: a terminal's width with room to spare


def to_markdown(records_or_table, *, layout: str = "long", **build_kwargs) -> str:
    """Markdown tables per task, then notes.

    layout "long" (the default; lm-evaluation-harness's shape, readable for any number of metrics): per
    task, rows are metrics grouped by dataset and columns are checkpoints, `value ± half-width of the CI`,
    split into blocks that share checkpoints (`Table.long_blocks`), so no column is empty. "wide": rows
    are checkpoints and columns are the task's metrics (full names), `value [lo, hi]`.
    """
    if layout not in MARKDOWN_LAYOUTS:
        raise HarnessError(f"--layout {layout!r}: not one of {', '.join(MARKDOWN_LAYOUTS)}")
    table = as_table(records_or_table, build_kwargs)
    if not table.rows:
        return "(no result records)\n"
    out = []
    for task, cols in table.groups():
        if layout == "wide":
            rows = table.rows_with_values(cols)
            out.append(f"### {md_text(task)}\n")
            if table.unpublished(cols):
                out.append(f"{UNPUBLISHED}\n")
            out.append("| checkpoint | " + " | ".join(md_cell(c.label) for c in cols) + " |")
            out.append("|---|" + "|".join("---:" for _ in cols) + "|")
            for r in rows:
                out.append(f"| {md_cell(r.label)} | " + " | ".join(_md_cell(table, r, c) for c in cols) + " |")
            out.append("")
            continue
        title = table.titles.get(task)
        out.append(f"### {md_text(task)}" + (f": {md_text(title)}" if title else "") + "\n")
        if table.unpublished(cols):
            out.append(f"{UNPUBLISHED}\n")
        for block_cols, rows in table.long_blocks(cols):
            out.append("| metric | " + " | ".join(md_cell(r.label) for r in rows) + " |")
            out.append("|---|" + "|".join("---:" for _ in rows) + "|")
            for c in block_cols:
                out.append(f"| {md_cell(c.row_label)} | "
                           + " | ".join(_md_cell(table, r, c, half_width=True) for r in rows) + " |")
            out.append("")
    if not table.columns:
        out.append("(no metrics)\n")
    notes = table_notes(table, table.columns, half_widths=layout == "long")
    # The long layout's notes are wrapped to fit a terminal, continuation lines indented (still one Markdown
    # list item each).
    out += [md_item(n, NOTE_WIDTH if layout == "long" else None) for n in notes]
    return "\n".join(out) + "\n"



def to_csv(records_or_table, **build_kwargs) -> str:
    """One wide CSV: `checkpoint` then one column per metric (stored scale, full precision; empty =
    missing); with a baseline, a `<metric> delta` column follows each metric."""
    table = as_table(records_or_table, build_kwargs)
    # A `<metric> protocol` column follows a metric with a cell made under another protocol (empty: same).
    flagged = {m for (_, m), cell in table.cells.items() if cell.protocol and cell.value is not None}
    header = ["checkpoint"]
    for c in table.columns:
        header += [c.metric] + ([f"{c.metric} delta"] if table.baseline is not None else [])
        header += [f"{c.metric} protocol"] if c.metric in flagged else []
    lines = [csv_line([header[0], *map(csv_text, header[1:])])]
    for r in table.rows:
        line = [csv_text(r.label)]
        for c in table.columns:
            cell = table.cell(r.name, c.metric)
            line.append("" if cell is None else repr(cell.value))
            if table.baseline is not None:
                line.append("" if cell is None or cell.delta is None else repr(cell.delta))
            if c.metric in flagged:
                line.append(csv_text(cell.protocol or "") if cell is not None else "")
        lines.append(csv_line(line))
    return "".join(lines)


def _latex_cell(table: Table, row: Row, col: Column, best: set[str]) -> str:
    cell = table.cell(row.name, col.metric)
    if cell is None:
        return r"\text{--}"
    text = fmt_value(cell, col)
    if row.name in best:
        text = rf"\textbf{{{text}}}"
    if cell.note:
        text += r"$^\dagger$"
    if cell.protocol:
        text += r"$^\ddagger$"
    if cell.ci95:
        text += r" {\scriptsize " + fmt_ci(cell, col) + "}"
    if cell.delta is not None:
        delta = fmt_delta(cell, col, arrows=(r"$\uparrow$", r"$\downarrow$"))
        delta = delta.replace("±", r"$\pm$").replace("-", "$-$", 1) if delta[0] in "±-" else delta
        text += r" {\scriptsize (" + delta + ")}"
    return text


def to_latex(records_or_table, **build_kwargs) -> str:
    """One booktabs `table` per task; best value per column in bold (respecting higher_is_better).
    Needs `\\usepackage{booktabs,amsmath}`."""
    table = as_table(records_or_table, build_kwargs)
    out = ["% Generated by sovit-harness (harness report --format latex).",
           r"% Needs \usepackage{booktabs,amsmath}."]
    for task, cols in table.groups():
        rows = table.rows_with_values(cols)
        spans = header_spans(cols)
        out += ["", r"\begin{table}[ht]", r"\centering", r"\small",
                rf"\caption{{{latex_text(table.titles.get(task, task))}}}",
                rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', task)}}}",
                r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule"]
        if any(top for top, _ in spans):
            heads, rules, at = [], [], 2
            for top, n in spans:
                heads.append(rf"\multicolumn{{{n}}}{{c}}{{{latex_text(top)}}}" if top else "")
                if top:
                    rules.append(rf"\cmidrule(lr){{{at}-{at + n - 1}}}")
                at += n
            out.append(" & " + " & ".join(heads) + r" \\")
            out.append(" ".join(rules))
        out.append("checkpoint & " + " & ".join(latex_text(c.header[1]) for c in cols) + r" \\")
        out.append(r"\midrule")
        best = {c.metric: table.best(c, rows) for c in cols}
        prev_kind = None
        for r in rows:
            if prev_kind is not None and r.kind != prev_kind:  # baseline | runs | paper
                out.append(r"\midrule")
            prev_kind = r.kind
            out.append(latex_text(r.label) + " & "
                       + " & ".join(_latex_cell(table, r, c, best[c.metric]) for c in cols) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    notes = table_notes(table, table.columns, arrows=("up-arrow", "down-arrow"))
    out += ["", *(f"% {visible(n)}" for n in notes)]
    return "\n".join(out) + "\n"
