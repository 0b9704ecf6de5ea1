"""The table model (`Column`, `Cell`, `Row`, `Table`) and `collect`: records -> rows, cells and columns.

Also what a cell knows beyond its value: the bootstrap 95% CI of its per-example scores, and the mark of
a record made under another protocol than its column's others (`harness.report.protocol`). Columns sort
in the paper's order (`metric_sort_key`), read from the tasks and the data registry (`facts`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from harness import data
from harness.eval.metrics import bootstrap_ci
from harness.report import facts, protocol

# Captioning scores stored raw that papers print x100.
X100_LEAVES = frozenset({"cider", "bleu", "bleu4", "rouge_l", "meteor", "spice"})
_HIDDEN_LEAF = re.compile(r"^(std|seed-\d+)$")
FEWSHOT_METRIC = re.compile(r"^fewshot/([^/]+)/(\d{1,9})shot(?:/(.+))?$")

CI_RESAMPLES = 1000
CI_SEED = 0
PROTOCOL_MARK = "‡"  # a cell made under another protocol than its column's others (harness.report.protocol)


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
        m = FEWSHOT_METRIC.match(self.metric)
        if m:
            top, sub = f"{m.group(2)}-shot", m.group(1) + (f"/{m.group(3)}" if m.group(3) else "")
        else:
            parts = self.metric.split("/")[1:] or [self.metric]
            top, sub = "/".join(parts[:-1]), parts[-1]
        return top, (f"{sub} ({self.suffix})" if self.suffix else sub)

    @property
    def decimals(self) -> int:
        return 3 if self.unit == "nats" else 2

    @property
    def dataset(self) -> str:
        """What the long layout groups a metric's row by: the part after the task (the dataset; for the
        paper's ImageNet fine-tuning rows the resolution); "" for a metric of the task as a whole."""
        parts = self.metric.split("/")
        return parts[1] if len(parts) > 2 else ""

    @property
    def row_label(self) -> str:
        """The metric inside its task's long table: the name after the task, plus the printed scale or unit."""
        sub = self.metric.split("/", 1)[-1]
        return f"{sub} ({self.suffix})" if self.suffix else sub


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
    titles: dict[str, str] = dataclasses.field(default_factory=dict)  # task -> caption of its table

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

    def unpublished(self, cols: Sequence[Column]) -> bool:
        """The paper's rows are shown but hold none of `cols`: a task the paper has no number for (kNN,
        dense probes), which a report says in words rather than as an empty column."""
        papers = [r for r in self.rows if r.kind == "paper"]
        return bool(papers) and not any(self.cell(r.name, c.metric) for r in papers for c in cols)

    def rows_with_values(self, cols: Sequence[Column]) -> list[Row]:
        """Rows holding at least one of `cols` (a task's table leaves out rows that never ran it)."""
        return [r for r in self.rows if any(self.cell(r.name, c.metric) for c in cols)]

    def long_blocks(self, cols: Sequence[Column]) -> list[tuple[list[Column], list[Row]]]:
        """One task's long layout: (metrics, checkpoints) blocks, each printed as one table whose rows are
        metrics and whose columns are checkpoints.

        Metrics are grouped by dataset (datasets in the paper's order, `dataset_sort_key`; inside one, its
        metrics in `cols`' order); a block's checkpoints are those holding one of its metrics, so no column
        is empty. A dataset that shares no checkpoint with the block before it starts a new block: the
        paper's rows stand only beside the metrics the paper has, and proxy runs only beside theirs.
        """
        by_dataset: dict[str, list[Column]] = {}
        for c in cols:
            by_dataset.setdefault(c.dataset, []).append(c)
        blocks: list[tuple[list[Column], list[Row]]] = []
        for group in sorted(by_dataset.values(), key=lambda g: dataset_sort_key(g[0].metric)):
            group = [c for c in group if self.rows_with_values([c])]  # a metric no checkpoint has: no row
            rows = self.rows_with_values(group)
            if not rows:
                continue
            if blocks and {r.name for r in rows} & {r.name for r in blocks[-1][1]}:
                merged = [*blocks[-1][0], *group]
                blocks[-1] = (merged, self.rows_with_values(merged))
            else:
                blocks.append((group, rows))
        return blocks

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


# ------------------------------------------------------------------------------------ column order
def is_hidden(metric: str) -> bool:
    """Per-seed and std-over-seeds metrics, hidden from default tables."""
    return bool(_HIDDEN_LEAF.match(metric.rsplit("/", 1)[-1]))


def _number(digits: str) -> float:
    """A run of decimal digits (any script's) as a number; one longer than int() reads, infinity."""
    return int(digits) if len(digits) <= 4000 else math.inf


def _natural(s: str) -> list:
    return [_number(t) if t.isdecimal() else t for t in re.split(r"(\d+)", s)]


def _segment_key(part: str, ranked: Sequence[str]) -> tuple:
    if part.isdecimal():  # resolutions, shot counts: numeric order
        return (0, _number(part), [])
    m = _HIDDEN_LEAF.match(part)
    if m:  # std and seeds after the mean they belong to
        return (2, 0, _natural(part))
    rank = ranked.index(part) if part in ranked else len(ranked)
    return (1, rank, _natural(part))


def metric_sort_key(metric: str) -> tuple:
    """The paper's order: tasks by their `report_order` (uninstalled ones after, by name); few-shot by
    shots, then Table 3's datasets; else part by part: numbers in numeric order, then the paper's datasets
    and ImageNet test sets in its order, then the task's `report_columns`, then the rest by name."""
    task = metric.split("/", 1)[0]
    order = facts.task_order(task)
    task_key = (0, order, task) if order is not None else (1, (), task)
    ranked = (*data.PAPER_DATASET_ORDER, *facts.task_columns(task))
    m = FEWSHOT_METRIC.match(metric)
    if m:
        ds, shots, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        order = data.FEWSHOT_DATASETS
        ds_key = (order.index(ds), "") if ds in order else (len(order), ds)
        return (task_key, ((shots,), ds_key, tuple(_segment_key(p, ranked) for p in rest.split("/") if p)))
    return (task_key, tuple(_segment_key(p, ranked) for p in metric.split("/")[1:]))


def dataset_sort_key(metric: str) -> tuple:
    """`metric_sort_key` of the metric's dataset: few-shot datasets in Table 3's order whatever the shots."""
    m = FEWSHOT_METRIC.match(metric)
    return metric_sort_key(f"fewshot/{m.group(1)}/0shot" if m else metric)


# ------------------------------------------------------------------------------------ collecting
def _interval(v: Any) -> tuple[float, float] | None:
    """A record's `ci95`: two numbers, else none."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return float(v[0]), float(v[1])
    return None


def _decimals(v: Any) -> int | None:
    """A record's printed precision: a whole number of digits, 0 to 10, else none."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10 else None


def _value(entry: Any) -> float | None:
    v = entry.get("value") if isinstance(entry, dict) else entry
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def row_name(rec: dict) -> str:
    """A record's checkpoint name (before `row_names` tells apart checkpoints that share one)."""
    ck = rec.get("checkpoint") or {}
    return str(ck.get("name") or ck.get("spec") or "?")


# Encoder settings that never make another row: `scan` moves no number, and a task's resolution is in its
# metric names where it varies (imagenet_finetune's `.../384/...`).
ROW_NEUTRAL = frozenset({"scan", "res"})


def _shown(value) -> str:
    """An encoder setting as a row name shows it: a square patch (14, 14) as 14."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    return str(value)


def row_names(records: Sequence[dict]) -> list[str]:
    """The report row of each record: its checkpoint's name, plus the sha256 prefix where one name covers
    several different checkpoints (two `model.npz` in different folders must not share a row), plus the
    encoder settings that differ between records of one checkpoint (the same weights at another patch size
    or resolution are another row: `proxy.npz [patch_size=4]`)."""
    shas: dict[str, set] = {}
    configs: dict[tuple, list[dict]] = {}
    for rec in records:
        ck = rec.get("checkpoint") or {}
        shas.setdefault(row_name(rec), set()).add(ck.get("sha256"))
        config = ck.get("config") if isinstance(ck.get("config"), dict) else {}
        configs.setdefault((row_name(rec), ck.get("sha256")), []).append(config)
    out = []
    for rec in records:
        name = row_name(rec)
        ck = rec.get("checkpoint") or {}
        sha = ck.get("sha256")
        label = name if len(shas[name]) == 1 else f"{name} [{(sha or 'no sha256')[:8]}]"
        group = configs[(name, sha)]
        varying = sorted(k for k in set().union(*group) - ROW_NEUTRAL if len({repr(c.get(k)) for c in group}) > 1)
        config = ck.get("config") if isinstance(ck.get("config"), dict) else {}
        if varying:
            label += " [" + ", ".join(f"{k}={_shown(config.get(k))}" for k in varying) + "]"
        out.append(label)
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
        source = None if rec.get("source") is None else str(rec["source"])
        if name not in rows:
            rows[name] = Row(name, kind, source, dict(rec.get("checkpoint") or {}))
        elif source and source not in (rows[name].source or ""):
            rows[name].source = _join_sources(rows[name].source, source)
        per_example = rec.get("per_example") or {}
        for metric, entry in (rec.get("metrics") or {}).items():
            info = entry if isinstance(entry, dict) else {}
            meta[metric] = Column(metric, bool(info.get("higher_is_better", True)), str(info.get("unit", "%")))
            value = _value(entry)
            note = info.get("note")
            cell = Cell(value, note=None if note is None else str(note), decimals=_decimals(info.get("decimals")))
            if info.get("ci95"):
                cell.ci95 = _interval(info["ci95"])
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
    that moves the number (`harness.report.protocol.settings`), or was made by an older version of its task."""
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
