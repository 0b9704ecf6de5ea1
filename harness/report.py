"""Comparison tables from result records: rows = checkpoints, columns = task metrics.

`build_table` turns records (plus, optionally, a baseline and the paper's published rows) into a `Table`;
the renderers `to_markdown`, `to_csv`, `to_latex` and `to_html` print it. Conventions:

- A row is a checkpoint (`checkpoint.name`); when several records give the same cell, the newest
  (`created`) wins.
- Columns are grouped by task in the paper's order (Table 1 fine-tuning, Table 2 linear probe, Table 3
  few-shot, Table 4 LiT / VQA / captioning, then other tasks); few-shot columns go shot by shot, each in
  Table 3's dataset order. Per-seed and std columns (`.../std`, `.../seed-<s>`) are hidden unless asked.
- Missing cells are shown as missing ("-", empty, `\\text{--}`), never as zero.
- Values are stored on the record's scale; captioning scores (CIDEr, BLEU-4, ROUGE-L, unit "raw") are
  printed x100 as papers do. CSV keeps the stored scale, for machines.
- A 95% CI is the percentile bootstrap of the mean of the cell's `per_example` scores (1000 resamples,
  seed 0), shown only when those scores average to the reported value.
- With a baseline, each cell shows `value - baseline`; ▲ marks a change for the better and ▼ one for the
  worse, respecting `higher_is_better` (a lower log-perplexity is ▲).
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime
import fnmatch
import html
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

PAPER_ROWS_PATH = Path(__file__).resolve().parent.parent / "reports" / "paper.json"
PAPER_SCHEMA = "sovit-harness-paper/1"

# The paper's table order; tasks not listed follow alphabetically.
TASK_ORDER = ("imagenet_finetune", "linear_probe", "fewshot", "lit_zeroshot", "vqa", "coco_captioning",
              "panoptic")
TASK_TITLES = {
    "imagenet_finetune": "ImageNet fine-tuning, top-1 % (paper Table 1)",
    "linear_probe": "Linear probe on frozen features, top-1 % (paper Table 2)",
    "fewshot": "Few-shot closed-form probes, accuracy % (paper Table 3)",
    "lit_zeroshot": "LiT zero-shot (paper Table 4)",
    "vqa": "VQA accuracy % (paper Table 4)",
    "coco_captioning": "COCO captioning (paper Table 4)",
    "panoptic": "Panoptic segmentation (UViM)",
}
# Table 3's dataset order (TFDS names); other datasets (e.g. the proxies) follow alphabetically.
FEWSHOT_DATASETS = ("imagenet2012", "cifar100", "oxford_iiit_pet", "caltech_birds2011", "caltech101", "cars196",
                    "colorectal_histology", "dtd", "uc_merced")
# Order of path segments inside a task: datasets as the paper lists them, then metric leaves.
_SEGMENT_ORDER = (*FEWSHOT_DATASETS, "ocrvqa", "gqa", "vqav2", "coco",
                  "val", "real", "v2", "r", "a", "objectnet",
                  "top1", "top5", "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
                  "accuracy", "yes_no", "number", "other",
                  "cider", "bleu4", "rouge_l", "log_perplexity", "pq")
# Captioning scores stored raw that papers print x100.
X100_LEAVES = frozenset({"cider", "bleu", "bleu4", "rouge_l", "meteor", "spice"})
_HIDDEN_LEAF = re.compile(r"^(std|seed-\d+)$")
_FEWSHOT = re.compile(r"^fewshot/([^/]+)/(\d+)shot(?:/(.+))?$")

CI_RESAMPLES = 1000
CI_SEED = 0
PROTOCOL_MARK = "‡"  # a cell made under another protocol than its column's others (harness.protocol)


# ---------------------------------------------------------------------------------------------------
# Table model
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Column:
    """One metric column."""

    metric: str
    higher_is_better: bool
    unit: str

    @property
    def task(self) -> str:
        return self.metric.split("/", 1)[0]

    @property
    def scale(self) -> float:
        """Factor from the stored to the printed scale (100 for CIDEr & co., else 1)."""
        leaf = self.metric.rsplit("/", 1)[-1]
        return 100.0 if self.unit == "raw" and leaf in X100_LEAVES else 1.0

    @property
    def suffix(self) -> str:
        if self.scale != 1.0:
            return "x100"
        return "" if self.unit in ("%", "raw", "", None) else self.unit

    @property
    def label(self) -> str:
        """The full metric name (plus the printed scale or unit), for flat tables."""
        return f"{self.metric} ({self.suffix})" if self.suffix else self.metric

    @property
    def header(self) -> tuple[str, str]:
        """(group header, column header) inside the task's own table, e.g. ("10-shot", "cifar100")."""
        m = _FEWSHOT.match(self.metric)
        if m:
            top, sub = f"{m.group(2)}-shot", m.group(1) + (f"/{m.group(3)}" if m.group(3) else "")
        else:
            parts = self.metric.split("/")[1:] or [self.metric]
            top, sub = "/".join(parts[:-1]), parts[-1]
        return top, (f"{sub} ({self.suffix})" if self.suffix else sub)

    @property
    def decimals(self) -> int:
        return 3 if self.unit == "nats" else 2


@dataclasses.dataclass
class Cell:
    """One value on the stored scale, with what is known about it."""

    value: float | None
    ci95: tuple[float, float] | None = None
    num_examples: int | None = None
    delta: float | None = None  # value - baseline value
    better: bool | None = None  # delta is an improvement (None: no baseline value, or no change)
    decimals: int | None = None  # printed precision when the source fixed it (the paper's rows)
    note: str | None = None
    protocol: str | None = None  # how this cell's record was made differently from the column's others


@dataclasses.dataclass
class Row:
    name: str
    kind: str = "run"  # "run", "baseline" or "paper"
    source: str | None = None
    checkpoint: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.kind == "baseline" and "baseline" not in self.name:
            return f"{self.name} (baseline)"
        return self.name


@dataclasses.dataclass
class Table:
    rows: list[Row]
    columns: list[Column]  # the visible ones, in display order
    cells: dict[tuple[str, str], Cell]  # (row name, metric) -> cell; hidden metrics (std, seeds) included
    baseline: str | None = None  # name of the baseline row
    paper_source: str | None = None

    def cell(self, row: str, metric: str) -> Cell | None:
        c = self.cells.get((row, metric))
        return c if c is not None and c.value is not None else None

    def groups(self) -> list[tuple[str, list[Column]]]:
        """Visible columns per task, in display order."""
        out: list[tuple[str, list[Column]]] = []
        for col in self.columns:
            if not out or out[-1][0] != col.task:
                out.append((col.task, []))
            out[-1][1].append(col)
        return out

    def rows_with_values(self, cols: Sequence[Column]) -> list[Row]:
        """Rows holding at least one of `cols` (a task's table leaves out rows that never ran it)."""
        return [r for r in self.rows if any(self.cell(r.name, c.metric) for c in cols)]

    def best(self, col: Column, rows: Sequence[Row] | None = None) -> set[str]:
        """Rows with the best printed value of `col` (ties all count)."""
        vals = {}
        for r in rows if rows is not None else self.rows:
            c = self.cell(r.name, col.metric)
            if c is not None:
                vals[r.name] = round(c.value * col.scale, col.decimals)
        if len(vals) < 2:
            return set()
        best = max(vals.values()) if col.higher_is_better else min(vals.values())
        return {name for name, v in vals.items() if v == best}


# ---------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------

def is_hidden(metric: str) -> bool:
    """Per-seed and std-over-seeds metrics, hidden from default tables."""
    return bool(_HIDDEN_LEAF.match(metric.rsplit("/", 1)[-1]))


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _segment_key(part: str) -> tuple:
    if part.isdigit():  # resolutions, shot counts: numeric order
        return (0, int(part), [])
    m = _HIDDEN_LEAF.match(part)
    if m:  # std and seeds after the mean they belong to
        return (2, 0, _natural(part))
    rank = _SEGMENT_ORDER.index(part) if part in _SEGMENT_ORDER else len(_SEGMENT_ORDER)
    return (1, rank, _natural(part))


def metric_sort_key(metric: str) -> tuple:
    """Paper order: task by TASK_ORDER; few-shot by shots, then Table 3's datasets; else segment-wise."""
    task = metric.split("/", 1)[0]
    task_key = (TASK_ORDER.index(task), "") if task in TASK_ORDER else (len(TASK_ORDER), task)
    m = _FEWSHOT.match(metric)
    if m:
        ds, shots, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        ds_key = (FEWSHOT_DATASETS.index(ds), "") if ds in FEWSHOT_DATASETS else (len(FEWSHOT_DATASETS), ds)
        return (task_key, ((shots,), ds_key, tuple(_segment_key(p) for p in rest.split("/") if p)))
    return (task_key, tuple(_segment_key(p) for p in metric.split("/")[1:]))


def _value(entry: Any) -> float | None:
    v = entry.get("value") if isinstance(entry, dict) else entry
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _row_name(rec: dict) -> str:
    ck = rec.get("checkpoint") or {}
    return str(ck.get("name") or ck.get("spec") or "?")


def row_names(records: Sequence[dict]) -> list[str]:
    """The report row of each record: its checkpoint's name, plus the sha256 prefix where one name covers
    several different checkpoints (two `model.npz` in different folders must not share a row)."""
    shas: dict[str, set] = {}
    for rec in records:
        shas.setdefault(_row_name(rec), set()).add((rec.get("checkpoint") or {}).get("sha256"))
    out = []
    for rec in records:
        name = _row_name(rec)
        sha = (rec.get("checkpoint") or {}).get("sha256")
        out.append(name if len(shas[name]) == 1 else f"{name} [{(sha or 'no sha256')[:8]}]")
    return out


def _join_sources(a: str | None, b: str) -> str:
    """"arXiv X, Table 1" + "arXiv X, Table 2" -> "arXiv X, Table 1; Table 2"."""
    if not a:
        return b
    prefix = a.split(", ", 1)[0] + ", "
    return f"{a}; {b[len(prefix):]}" if b.startswith(prefix) else f"{a}; {b}"


def ci95(per_example: Sequence[float] | None, value: float | None) -> tuple[float, float] | None:
    """Bootstrap 95% CI of the mean of `per_example`, or None when it would not describe `value`."""
    if value is None or not per_example or len(per_example) < 2:
        return None
    import numpy as np

    from harness.metrics import bootstrap_ci

    scores = np.asarray(per_example, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        return None
    # A metric that is not the mean of its per-example scores (corpus BLEU-4) gets no interval: one of
    # another statistic would mislead.
    if abs(float(scores.mean()) - value) > 1e-6 * max(1.0, abs(value)):
        return None
    return bootstrap_ci(scores, n_resamples=CI_RESAMPLES, seed=CI_SEED)


def collect(records: Iterable[dict], *, with_ci: bool = False) -> tuple[list[Row], dict[tuple[str, str], Cell],
                                                                        dict[str, Column]]:
    """(rows in order of first appearance, cells, column metadata by metric); the newest record wins.
    Cells whose record was made under another protocol than the column's others get `Cell.protocol`."""
    rows: dict[str, Row] = {}
    cells: dict[tuple[str, str], Cell] = {}
    meta: dict[str, Column] = {}
    sources: dict[tuple[str, str], dict] = {}  # the record behind each run cell
    records = sorted(records, key=lambda r: str(r.get("created") or ""))
    for rec, name in zip(records, row_names(records)):
        kind = rec.get("_kind", "run")
        if name not in rows:
            rows[name] = Row(name, kind, rec.get("source"), dict(rec.get("checkpoint") or {}))
        elif rec.get("source") and rec["source"] not in (rows[name].source or ""):
            rows[name].source = _join_sources(rows[name].source, rec["source"])
        per_example = rec.get("per_example") or {}
        for metric, entry in (rec.get("metrics") or {}).items():
            info = entry if isinstance(entry, dict) else {}
            meta[metric] = Column(metric, bool(info.get("higher_is_better", True)), str(info.get("unit", "%")))
            value = _value(entry)
            cell = Cell(value, note=info.get("note"), decimals=info.get("decimals"))
            if info.get("ci95"):
                cell.ci95 = (float(info["ci95"][0]), float(info["ci95"][1]))
            elif with_ci and metric in per_example:
                cell.ci95 = ci95(per_example[metric], value)
                cell.num_examples = len(per_example[metric])
            cells[(name, metric)] = cell
            if kind == "run" and rec.get("task"):
                sources[(name, metric)] = rec
    mark_protocol_differences(cells, sources)
    return list(rows.values()), cells, meta


def mark_protocol_differences(cells: dict[tuple[str, str], Cell], sources: dict[tuple[str, str], dict]) -> None:
    """Sets `Cell.protocol` where a cell's record differs from the other records of its column in a setting
    that moves the number (`harness.protocol.settings`), or was made by an older version of its task."""
    from harness import protocol

    by_metric: dict[str, list[tuple[str, str]]] = {}
    for key in sources:
        if cells[key].value is not None:
            by_metric.setdefault(key[1], []).append(key)
    for metric, keys in by_metric.items():
        found = {key: protocol.settings(sources[key], metric) for key in keys}
        for key in keys:
            notes = []
            if (old := protocol.outdated(sources[key])) is not None:
                notes.append(old)
            others = [found[k] for k in keys if k != key]
            if others and (diffs := protocol.differences(found[key], others)):
                notes.append("other protocol than the column's other cells: " + protocol.describe(diffs))
            cells[key].protocol = "; ".join(notes) or None


def build_table(records: Sequence[dict], *, columns: Sequence[str] | None = None, baseline: Any = None,
                with_paper: bool = False, show_seeds: bool = False, ci: bool = True) -> Table:
    """The comparison table of `records`.

    columns: metric names or glob patterns to keep (default: all, minus std/seed columns unless
      `show_seeds`). baseline: a baseline dict (`harness.check` format), a list of records of one
      checkpoint, a path to either, or the name of a row (e.g. "SoViT-400m/14 (paper)"); its row comes first
      and every other cell gets a delta. with_paper: append the paper's published rows (reports/paper.json).
    """
    from harness import check as _check

    records = list(records)
    paper = load_paper_rows() if with_paper else []
    base_rec = None
    base_name = None
    if baseline is not None:
        names = set(row_names(records))
        if isinstance(baseline, str) and baseline in names:
            base_name = baseline
        elif isinstance(baseline, str) and not Path(baseline).exists() and baseline.endswith("(paper)"):
            match = [r for r in load_paper_rows() if _row_name(r) == baseline]
            if not match:
                raise HarnessError(f"--baseline {baseline!r}: no such paper row; see reports/paper.json")
            paper = [r for r in paper if _row_name(r) != baseline]
            base_name, base_rec = baseline, match
        else:
            doc = _check.load_baseline(baseline) if isinstance(baseline, (str, Path)) else baseline
            if isinstance(doc, list):
                doc = _check.make_baseline(doc)
            base_rec = [_check.baseline_as_record(doc)]
            base_name = _row_name(base_rec[0])
    all_records = [*(base_rec or []), *records, *paper]
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
    if paper or (base_rec and base_rec[0].get("_kind") == "paper"):
        paper_source = _paper_doc().get("paper")
    return Table(rows, [meta[m] for m in metrics], cells, base_name, paper_source)


def _as_table(records_or_table, kwargs: dict) -> Table:
    if isinstance(records_or_table, Table):
        if kwargs:
            raise TypeError("pass build_table options when giving records, not a Table")
        return records_or_table
    return build_table(list(records_or_table), **kwargs)


# ---------------------------------------------------------------------------------------------------
# The paper's rows
# ---------------------------------------------------------------------------------------------------

_PAPER_CACHE: dict[str, dict] = {}


def _paper_doc(path: str | Path | None = None) -> dict:
    path = Path(path or PAPER_ROWS_PATH)
    key = str(path)
    if key not in _PAPER_CACHE:
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HarnessError(f"{path}: cannot read the paper's rows ({e}); restore reports/paper.json "
                               "from the repository") from None
        if doc.get("schema") != PAPER_SCHEMA:
            raise HarnessError(f"{path}: not a paper-rows file (schema {doc.get('schema')!r}, expected "
                               f"{PAPER_SCHEMA!r}); restore reports/paper.json from the repository")
        _PAPER_CACHE[key] = doc
    return _PAPER_CACHE[key]


def load_paper_rows(path: str | Path | None = None) -> list[dict]:
    """The paper's published numbers as record-shaped dicts: `checkpoint.name`, `metrics`, `source`.

    One dict per (model, table) of reports/paper.json; dicts with one name form one report row. CIDEr is
    on the harness's raw scale (the paper's 125 is 1.25); `printed` keeps the paper's text.
    """
    doc = _paper_doc(path)
    out = []
    for row in doc["rows"]:
        model = dict(doc.get("models", {}).get(row["name"], {}))
        metrics = {}
        for name, m in row["metrics"].items():
            entry = dict(m)
            number = re.match(r"\s*-?\d+(?:\.(\d+))?", str(m.get("printed", "")))
            if number:  # print with the paper's own precision (x100 for CIDEr: "125" has 0 decimals)
                entry["decimals"] = len(number.group(1) or "")
            metrics[name] = entry
        out.append({
            "schema_version": 1,
            "_kind": "paper",
            "created": "",
            "task": {"name": "paper", "preset": None, "config": {}, "config_hash": ""},
            "checkpoint": {"name": row["name"], "spec": None, "sha256": None, **model},
            "source": row["source"],
            "metrics": metrics,
            "per_example": {},
        })
    return out


# ---------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------

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


def fmt_delta(cell: Cell, col: Column, *, arrows: tuple[str, str] = ("▲", "▼")) -> str:
    text = f"{cell.delta * col.scale:+.{col.decimals}f}"
    if float(text) == 0:  # no visible change: neither better nor worse
        return "±" + text[1:]
    if cell.better is None:
        return text
    return text + (arrows[0] if cell.better else arrows[1])


def _notes(table: Table, cols: Sequence[Column], arrows: tuple[str, str] = ("▲", "▼")) -> list[str]:
    notes = []
    if any(c.scale != 1 for c in cols):
        notes.append("x100: captioning scores (CIDEr, BLEU-4, ROUGE-L) are stored raw and printed x100, as "
                     "papers do.")
    visible = {c.metric for c in cols}
    if any(cell.ci95 for (_, metric), cell in table.cells.items() if metric in visible):
        notes.append(f"[lo, hi]: bootstrap 95% CI of the mean of the per-example scores ({CI_RESAMPLES} "
                     f"resamples, seed {CI_SEED}).")
    if table.baseline is not None:
        notes.append(f"(+d): value minus the baseline {table.baseline!r}; {arrows[0]} better, {arrows[1]} worse "
                     f"(for lower-is-better metrics a negative change is {arrows[0]}).")
    lower = [c.metric for c in cols if not c.higher_is_better]
    if lower:
        notes.append("Lower is better: " + ", ".join(lower) + ".")
    notes.append("-: not measured.")
    if any(r.kind == "paper" for r in table.rows):
        notes.append(f"(paper) rows: published numbers, {table.paper_source} (reports/paper.json).")
    by_note: dict[tuple[str, str], list[str]] = {}
    for (row, metric), cell in table.cells.items():
        if cell.note and metric in visible and cell.value is not None:
            by_note.setdefault((metric, cell.note), []).append(row)
    for (metric, note), rows in by_note.items():
        notes.append(f"† {metric} ({', '.join(rows)}): {note}")
    for (row, metric), cell in table.cells.items():
        if cell.protocol and metric in visible and cell.value is not None:
            notes.append(f"{PROTOCOL_MARK} {metric} ({row}): {cell.protocol}; not comparable as it stands.")
    return notes


# ---------------------------------------------------------------------------------------------------
# Markdown / CSV / LaTeX
# ---------------------------------------------------------------------------------------------------

def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def _md_cell(table: Table, row: Row, col: Column) -> str:
    cell = table.cell(row.name, col.metric)
    if cell is None:
        return "-"
    text = fmt_value(cell, col)
    if cell.note:
        text += "†"
    if cell.protocol:
        text += PROTOCOL_MARK
    if cell.ci95:
        text += " " + fmt_ci(cell, col)
    if cell.delta is not None:
        text += f" ({fmt_delta(cell, col)})"
    return text


def to_markdown(records_or_table, **build_kwargs) -> str:
    """One Markdown table per task (full metric names as headers), then notes."""
    table = _as_table(records_or_table, build_kwargs)
    if not table.rows:
        return "(no result records)\n"
    out = []
    for task, cols in table.groups():
        rows = table.rows_with_values(cols)
        out.append(f"### {task}\n")
        out.append("| checkpoint | " + " | ".join(_md_escape(c.label) for c in cols) + " |")
        out.append("|---|" + "|".join("---:" for _ in cols) + "|")
        for r in rows:
            out.append(f"| {_md_escape(r.label)} | " + " | ".join(_md_cell(table, r, c) for c in cols) + " |")
        out.append("")
    if not table.columns:
        out.append("(no metrics)\n")
    out += [f"- {n}" for n in _notes(table, table.columns)]
    return "\n".join(out) + "\n"


def to_csv(records_or_table, **build_kwargs) -> str:
    """One wide CSV: `checkpoint` then one column per metric (stored scale, full precision; empty =
    missing); with a baseline, a `<metric> delta` column follows each metric."""
    table = _as_table(records_or_table, build_kwargs)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    # A `<metric> protocol` column follows a metric with a cell made under another protocol (empty: same).
    flagged = {m for (_, m), cell in table.cells.items() if cell.protocol and cell.value is not None}
    header = ["checkpoint"]
    for c in table.columns:
        header += [c.metric] + ([f"{c.metric} delta"] if table.baseline is not None else [])
        header += [f"{c.metric} protocol"] if c.metric in flagged else []
    w.writerow(header)
    for r in table.rows:
        line = [r.label]
        for c in table.columns:
            cell = table.cell(r.name, c.metric)
            line.append("" if cell is None else repr(cell.value))
            if table.baseline is not None:
                line.append("" if cell is None or cell.delta is None else repr(cell.delta))
            if c.metric in flagged:
                line.append((cell.protocol or "") if cell is not None else "")
        w.writerow(line)
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))


def _header_spans(cols: Sequence[Column]) -> list[tuple[str, int]]:
    spans: list[tuple[str, int]] = []
    for c in cols:
        top = c.header[0]
        if spans and spans[-1][0] == top:
            spans[-1] = (top, spans[-1][1] + 1)
        else:
            spans.append((top, 1))
    return spans


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
    table = _as_table(records_or_table, build_kwargs)
    out = ["% Generated by sovit-harness (harness report --format latex).",
           r"% Needs \usepackage{booktabs,amsmath}."]
    for task, cols in table.groups():
        rows = table.rows_with_values(cols)
        spans = _header_spans(cols)
        out += ["", r"\begin{table}[ht]", r"\centering", r"\small",
                rf"\caption{{{latex_escape(TASK_TITLES.get(task, task))}}}",
                rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', task)}}}",
                r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule"]
        if any(top for top, _ in spans):
            heads, rules, at = [], [], 2
            for top, n in spans:
                heads.append(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(top)}}}" if top else "")
                if top:
                    rules.append(rf"\cmidrule(lr){{{at}-{at + n - 1}}}")
                at += n
            out.append(" & " + " & ".join(heads) + r" \\")
            out.append(" ".join(rules))
        out.append("checkpoint & " + " & ".join(latex_escape(c.header[1]) for c in cols) + r" \\")
        out.append(r"\midrule")
        best = {c.metric: table.best(c, rows) for c in cols}
        prev_kind = None
        for r in rows:
            if prev_kind is not None and r.kind != prev_kind:  # baseline | runs | paper
                out.append(r"\midrule")
            prev_kind = r.kind
            out.append(latex_escape(r.label) + " & "
                       + " & ".join(_latex_cell(table, r, c, best[c.metric]) for c in cols) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    notes = _notes(table, table.columns, arrows=("up-arrow", "down-arrow"))
    out += ["", *(f"% {n}" for n in notes)]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------
# HTML with plots
# ---------------------------------------------------------------------------------------------------

_CSS = """
:root { --fg:#1d2330; --muted:#6b7280; --line:#e3e6ec; --head:#f4f6fa; --accent:#2f5fd0;
        --good:#137333; --bad:#b3261e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); margin: 0; background: #fafbfc; }
header { background: #1d2a4d; color: #fff; padding: 22px 32px 18px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #c9d3ee; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 32px 40px; }
nav { margin: 16px 0 4px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 6px 20px 16px;
          margin: 18px 0; }
h2 { font-size: 17px; margin: 14px 0 10px; }
h2 small { color: var(--muted); font-weight: 400; font-size: 13px; margin-left: 6px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 4px 0 8px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: var(--head); font-weight: 600; font-size: 12.5px; text-align: right; }
th.group { text-align: center; border-bottom: 2px solid #cfd5e0; }
th:first-child, td:first-child { text-align: left; position: sticky; left: 0; background: inherit; }
thead th:first-child { background: var(--head); }
td { text-align: right; }
tbody tr:nth-child(even) { background: #fbfcfe; }
tbody tr { background: #fff; }
tr.baseline td { background: #fff8e1; }
tr.paper td { color: #374151; font-style: italic; }
td.best { font-weight: 700; }
td.missing { color: #b0b6c3; }
.ci { color: var(--muted); font-size: 11.5px; margin-left: 4px; }
.delta { font-size: 11.5px; margin-left: 4px; }
.delta.good { color: var(--good); } .delta.bad { color: var(--bad); } .delta.same { color: var(--muted); }
.kind { font-size: 11px; color: var(--muted); border: 1px solid var(--line); border-radius: 9px;
        padding: 0 6px; margin-left: 6px; font-style: normal; }
figure { margin: 10px 0 4px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
table.meta td, table.meta th { text-align: left; }
table.meta td:last-child { white-space: normal; min-width: 220px; }
ul.notes { color: var(--muted); font-size: 12.5px; padding-left: 18px; }
code { font-size: 12px; }
"""


def _h(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _html_cell(table: Table, row: Row, col: Column, best: set[str]) -> str:
    cell = table.cell(row.name, col.metric)
    if cell is None:
        return '<td class="missing">–</td>'
    classes = ["best"] if row.name in best else []
    text = _h(fmt_value(cell, col))
    if cell.note:
        text += f'<sup title="{_h(cell.note)}">†</sup>'
    if cell.protocol:
        text += f'<sup class="protocol" title="{_h(cell.protocol)}">{PROTOCOL_MARK}</sup>'
    if cell.ci95:
        text += f'<span class="ci">{_h(fmt_ci(cell, col))}</span>'
    if cell.delta is not None:
        kind = "same" if cell.better is None else ("good" if cell.better else "bad")
        text += f'<span class="delta {kind}">{_h(fmt_delta(cell, col))}</span>'
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f'<td{cls} title="{_h(col.metric)}">{text}</td>'


def _html_table(table: Table, cols: Sequence[Column]) -> str:
    rows = table.rows_with_values(cols)
    spans = _header_spans(cols)
    head = []
    if any(top for top, _ in spans):
        head.append("<tr><th></th>" + "".join(f'<th class="group" colspan="{n}">{_h(top)}</th>'
                                               for top, n in spans) + "</tr>")
    head.append("<tr><th>checkpoint</th>" + "".join(f'<th title="{_h(c.metric)}">{_h(c.header[1])}</th>'
                                                     for c in cols) + "</tr>")
    best = {c.metric: table.best(c, rows) for c in cols}
    body = []
    for r in rows:
        tag = f'<span class="kind">{r.kind}</span>' if r.kind != "run" else ""
        body.append(f'<tr class="{r.kind}"><td>{_h(r.label)}{tag}</td>'
                    + "".join(_html_cell(table, r, c, best[c.metric]) for c in cols) + "</tr>")
    return ('<div class="scroll"><table><thead>' + "".join(head) + "</thead><tbody>" + "".join(body)
            + "</tbody></table></div>")


def _checkpoint_table(table: Table) -> str:
    head = ("<tr><th>checkpoint</th><th>kind</th><th>variant / shape</th><th>res</th><th>params (M)</th>"
            "<th>GFLOPs</th><th>sha256</th><th>source</th></tr>")
    body = []
    for r in table.rows:
        ck = r.checkpoint
        cfg = ck.get("config") or {}
        variant = ck.get("variant") or cfg.get("variant") or ""
        if not variant and cfg.get("width"):
            variant = (f"width {cfg['width']}, depth {cfg.get('depth', '?')}, MLP {cfg.get('mlp_dim', '?')}, "
                       f"patch {cfg.get('patch_size', '?')}")
        gflops = ck.get("gflops")
        if isinstance(gflops, dict):
            gflops = ", ".join(f"{v} @{k}" for k, v in gflops.items())
        elif isinstance(gflops, (int, float)):
            gflops = f"{gflops:.4g}"
        params = ck.get("params_m")
        params = f"{params:.4g}" if isinstance(params, (int, float)) else ""
        cells = [r.label, r.kind, variant, cfg.get("res", ""), params, gflops or "",
                 (ck.get("sha256") or "")[:12], r.source or ck.get("spec") or ""]
        body.append(f'<tr class="{r.kind}">' + "".join(f"<td>{_h(c)}</td>" for c in cells) + "</tr>")
    return (f'<div class="scroll"><table class="meta"><thead>{head}</thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def _colors(table: Table) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {r.name: cmap(i % 10) for i, r in enumerate(table.rows)}


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bar_charts(table: Table, task: str, cols: Sequence[Column]) -> list[tuple[str, str]]:
    """Grouped bars (one bar per checkpoint per metric), one chart per printed unit; (caption, png)."""
    from matplotlib.figure import Figure

    if task == "fewshot":  # the curves show every shot; the bars show Table 3's 10 shots (or the most)
        shots = sorted({int(_FEWSHOT.match(c.metric).group(2)) for c in cols if _FEWSHOT.match(c.metric)})
        pick = 10 if 10 in shots else (shots[-1] if shots else None)
        cols = [c for c in cols if (m := _FEWSHOT.match(c.metric)) and int(m.group(2)) == pick and not m.group(3)]
    by_unit: dict[str, list[Column]] = {}
    for c in cols:
        if not is_hidden(c.metric):
            by_unit.setdefault(c.suffix or c.unit, []).append(c)
    colors = _colors(table)
    charts = []
    for unit, ucols in by_unit.items():
        rows = table.rows_with_values(ucols)
        if not rows:
            continue
        # Each metric's bars are packed and centred over its tick: only the checkpoints that have it take a
        # slot, so sparse tables (paper rows next to proxy runs) keep no empty gaps.
        present = [[r for r in rows if table.cell(r.name, c.metric)] for c in ucols]
        width = min(0.25, 0.8 / max(len(p) for p in present))
        n_bars = sum(len(p) for p in present)
        fig = Figure(figsize=(min(13.0, max(5.0, 0.3 * n_bars + 3.0)), 3.4))
        ax = fig.add_subplot()
        series: dict[str, dict[str, list]] = {r.name: {"x": [], "y": [], "label": [], "ex": [], "ey": [], "lo": [], "hi": []}
                                              for r in rows}
        for j, (c, prs) in enumerate(zip(ucols, present)):
            for i, r in enumerate(prs):
                cell = table.cell(r.name, c.metric)
                v = cell.value * c.scale
                sr = series[r.name]
                sr["x"].append(j + width * (i - (len(prs) - 1) / 2))
                sr["y"].append(v)
                sr["label"].append(fmt_value(cell, c))
                if cell.ci95:  # only cells with an interval get a whisker (none is not a zero-width one)
                    lo, hi = cell.ci95
                    sr["ex"].append(sr["x"][-1])
                    sr["ey"].append(v)
                    sr["lo"].append(max(0.0, v - lo * c.scale))
                    sr["hi"].append(max(0.0, hi * c.scale - v))
        for r in rows:
            sr = series[r.name]
            if not sr["x"]:
                continue
            bars = ax.bar(sr["x"], sr["y"], width * 0.92, label=r.label, color=colors[r.name],
                          hatch="//" if r.kind == "paper" else None, alpha=0.8 if r.kind == "paper" else 1.0,
                          edgecolor="black" if r.kind == "baseline" else "white", linewidth=0.6)
            if sr["ex"]:
                ax.errorbar(sr["ex"], sr["ey"], yerr=[sr["lo"], sr["hi"]], fmt="none", capsize=2, ecolor="#333",
                            elinewidth=1.0)
            if n_bars <= 48:
                ax.bar_label(bars, labels=sr["label"], fontsize=6.5, padding=1.5,
                             rotation=90 if n_bars > 16 else 0)
        ax.set_xlim(-0.6, len(ucols) - 0.4)
        ticks = [c.header[1] if c.header[0] in ("", None) or task == "fewshot" else f"{c.header[0]}/{c.header[1]}"
                 for c in ucols]
        # Slant the labels once they would run into each other (about 14 characters fit under a slot).
        slant = len(ucols) > 4 or max(len(t) for t in ticks) > 14 * fig.get_figwidth() / (len(ucols) + 1.5)
        ax.set_xticks(range(len(ucols)), ticks, rotation=25 if slant else 0, ha="right" if slant else "center",
                      fontsize=8.5)
        ax.set_ylabel({"%": "%", "x100": "score x100"}.get(unit, unit))
        ax.margins(y=0.15)
        ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        what = "10-shot" if task == "fewshot" and cols and "10shot" in cols[0].metric else task
        caption = f"{what}: one bar per checkpoint per metric ({unit})"
        if any(table.cell(r.name, c.metric) and table.cell(r.name, c.metric).ci95 for r in rows for c in ucols):
            caption += "; error bars: bootstrap 95% CI"
        charts.append((caption, _png(fig)))
    return charts


def _fewshot_curves(table: Table) -> str | None:
    """Accuracy vs shots (log x), one line per checkpoint per dataset, std over seeds as error bars."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    points: dict[str, dict[str, dict[int, tuple[float, float | None]]]] = {}
    for c in table.columns:
        m = _FEWSHOT.match(c.metric)
        if not m or m.group(3):
            continue
        ds, k = m.group(1), int(m.group(2))
        for r in table.rows:
            cell = table.cell(r.name, c.metric)
            if cell is None:
                continue
            std = table.cell(r.name, c.metric + "/std")
            points.setdefault(ds, {}).setdefault(r.name, {})[k] = (cell.value, std.value if std else None)
    # A curve needs two shot counts; datasets with single points only (the paper's 10-shot) are in the bars.
    points = {ds: by_row for ds, by_row in points.items() if any(len(by_k) > 1 for by_k in by_row.values())}
    if not points:
        return None
    datasets = sorted(points, key=lambda d: metric_sort_key(f"fewshot/{d}/1shot"))
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.1 * nrows))
    colors = _colors(table)
    rows = {r.name: r for r in table.rows}
    handles = {}
    for i, ds in enumerate(datasets):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        all_shots = set()
        for name, by_k in points[ds].items():
            ks = sorted(by_k)
            all_shots.update(ks)
            ys = [by_k[k][0] for k in ks]
            errs = [by_k[k][1] or 0.0 for k in ks]
            row = rows[name]
            style = dict(color=colors[name], marker="D" if row.kind == "paper" else "o", markersize=4,
                         linestyle="--" if row.kind == "baseline" else "-", linewidth=1.6, capsize=2.5)
            h = ax.errorbar(ks, ys, yerr=errs if any(errs) else None, label=row.label, **style)
            handles.setdefault(row.label, h)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sorted(all_shots)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel("shots per class", fontsize=8.5)
        ax.set_ylabel("accuracy %", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.grid(color="#e5e7eb", linewidth=0.8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.legend(list(handles.values()), list(handles.keys()), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8.5, frameon=False)
    return _png(fig)


def to_html(records_or_table, path: str | Path | None = None, *, title: str = "sovit-harness report",
            generated: str | None = None, **build_kwargs) -> str:
    """A self-contained HTML page (inline CSS, plots as base64 PNG): per-task tables with grouped bar
    charts, few-shot accuracy-vs-shots curves, and the checkpoints. Written atomically when `path` is
    given; returns the page."""
    table = _as_table(records_or_table, build_kwargs)
    now = generated or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_runs = sum(r.kind != "paper" for r in table.rows)
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_h(title)}</h1><p>{n_runs} checkpoint(s)"
        + (f", baseline {_h(table.baseline)}" if table.baseline else "")
        + (", with the paper's published rows" if any(r.kind == "paper" for r in table.rows) else "")
        + f" &middot; {len(table.columns)} metrics &middot; generated {now}</p></header><main>",
    ]
    groups = table.groups()
    has_curves = any(_FEWSHOT.match(c.metric) for c in table.columns)
    links = [f'<a href="#task-{_h(t)}">{_h(t)}</a>' for t, _ in groups]
    if has_curves:
        links.append('<a href="#fewshot-curves">few-shot curves</a>')
    parts.append("<nav>" + "".join(links) + '<a href="#checkpoints">checkpoints</a></nav>')
    for task, cols in groups:
        parts.append(f'<section id="task-{_h(task)}"><h2>{_h(task)}<small>{_h(TASK_TITLES.get(task, ""))}'
                     "</small></h2>")
        parts.append(_html_table(table, cols))
        for caption, png in _bar_charts(table, task, cols):
            parts.append(f'<figure><img src="data:image/png;base64,{png}" alt="{_h(caption)}">'
                         f"<figcaption>{_h(caption)}</figcaption></figure>")
        parts.append("</section>")
    if has_curves:
        png = _fewshot_curves(table)
        if png:
            parts.append('<section id="fewshot-curves"><h2>Few-shot accuracy vs shots<small>log x axis; error '
                         "bars: std over seeds</small></h2>"
                         f'<figure><img src="data:image/png;base64,{png}" alt="few-shot accuracy vs shots">'
                         "<figcaption>One line per checkpoint per dataset; the paper's rows are 10-shot points"
                         "</figcaption></figure></section>")
    parts.append('<section id="checkpoints"><h2>Checkpoints</h2>' + _checkpoint_table(table) + "</section>")
    parts.append('<ul class="notes">' + "".join(f"<li>{_h(n)}</li>" for n in _notes(table, table.columns))
                 + "</ul></main></body></html>")
    page = "\n".join(parts) + "\n"
    if path is not None:
        from harness.results import write_text_atomic

        write_text_atomic(path, page)
    return page


# ---------------------------------------------------------------------------------------------------
# The `harness report` command
# ---------------------------------------------------------------------------------------------------

FORMATS = ("md", "csv", "latex", "html")


def load_runs(runs: Sequence[str | Path]) -> list[dict]:
    """The result records under each of `runs` (files or folders, searched recursively). Task artefacts
    (`<out>/artifacts/`, e.g. prediction files and training checkpoints) and hidden files are not records
    and are not read, so a run still writing its artefacts cannot break a report."""
    from harness.results import load_records

    records = []
    for run in runs:
        run = Path(run)
        if not run.is_dir():
            records += load_records(run)  # a file, or the "no such file or folder" error
            continue
        for f in sorted(run.rglob("*.json")):
            rel = f.relative_to(run).parts
            if "artifacts" in rel[:-1] or any(part.startswith(".") for part in rel):
                continue
            records += load_records(f)
    return records


def report_command(runs: Sequence[str], *, fmt: str = "md", output: str | None = None,
                   baseline: str | None = None, with_paper: bool = False, show_seeds: bool = False) -> str:
    """What `harness report` prints: the rendered table, or "wrote FILE" when `output` is given."""
    from harness.results import write_text_atomic

    if fmt not in FORMATS:
        raise HarnessError(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
    if not runs and not with_paper:
        raise HarnessError("no RUNS given; pass folders or files of result records (or --with paper)")
    if fmt == "html" and not output:
        raise HarnessError("--format html writes a page with embedded plots; give -o FILE.html")
    records = load_runs(runs)
    if runs and not records and not with_paper:
        raise HarnessError(f"no result records under {', '.join(runs)}; run `harness run` first")
    table = build_table(records, baseline=baseline, with_paper=with_paper, show_seeds=show_seeds)
    if fmt == "html":
        to_html(table, output)
        return f"wrote {output}\n"
    text = {"md": to_markdown, "csv": to_csv, "latex": to_latex}[fmt](table)
    if output:
        write_text_atomic(output, text)
        return f"wrote {output}\n"
    return text
