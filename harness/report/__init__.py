"""Reports and the gate: result records -> comparison tables (rows = checkpoints, columns = task metrics),
and a run checked against a committed baseline.

`build_table` turns records (plus, optionally, a baseline and the paper's published rows) into a `Table`;
the renderers `to_markdown`, `to_csv`, `to_latex` and `to_html` print it. The table model's rows are
checkpoints and its columns metrics, as CSV, LaTeX, HTML and `to_markdown(layout="wide")` print it; the
default Markdown is the long layout (per task, a row per metric grouped by dataset, a column per checkpoint,
`value ± CI half-width`, in blocks of datasets that share checkpoints: `Table.long_blocks`). Conventions:

- A row is a checkpoint (`checkpoint.name`); when several records give the same cell, the newest
  (`created`) wins.
- Columns are grouped by task in the paper's order (Table 1 fine-tuning, Table 2 linear probe, Table 3
  few-shot, Table 4 LiT / VQA / captioning, then other tasks); few-shot columns go shot by shot, each in
  Table 3's dataset order. Per-seed and std columns (`.../std`, `.../seed-<s>`) are hidden unless asked.
  Each task declares its title and place (`harness.api.Task.report_*`).
- Missing cells are shown as missing ("-", empty, `\\text{--}`), never as zero.
- Values are stored on the record's scale; captioning scores (CIDEr, BLEU-4, ROUGE-L, unit "raw") are
  printed x100 as papers do. CSV keeps the stored scale, for machines.
- A 95% CI is the percentile bootstrap of the mean of the cell's `per_example` scores (1000 resamples,
  seed 0), shown only when those scores average to the reported value.
- With a baseline, each cell shows `value - baseline`; ▲ marks a change for the better and ▼ one for the
  worse, respecting `higher_is_better` (a lower log-perplexity is ▲).

Every value from a record is escaped for its output format (`escape`; the HTML page is a Jinja2 template
with autoescape): a report is inert, whatever a record holds.

Modules, each importing only those before it: `escape` (each format's escaping), `records` (the record schema;
reading records), `facts` (what the installed tasks and the data registry say about order and titles),
`protocol` (the settings that move a number), `paper` (the paper's published rows), `table` (the table model,
column order, `collect`, CIs, protocol marks), `baseline` (make / write / validate / load a baseline), `build`
(`build_table`), `tables` (Markdown / CSV / LaTeX), `html` (the page and its plots), `check` (the gate),
`commands` (what `harness report` and `harness check` do).
"""

from harness.report.build import build_table
from harness.report.commands import (
    FORMATS,
    check_command,
    report_command,
    write_baseline_command,
)
from harness.report.html import to_html
from harness.report.paper import load_paper_rows
from harness.report.records import load_records
from harness.report.table import Cell, Column, Row, Table
from harness.report.tables import to_csv, to_latex, to_markdown

__all__ = ["FORMATS", "Cell", "Column", "Row", "Table", "build_table", "check_command", "load_paper_rows",
           "load_records", "report_command", "to_csv", "to_html", "to_latex", "to_markdown",
           "write_baseline_command"]
