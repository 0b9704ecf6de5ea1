"""The self-contained HTML report: inline CSS, per-task tables with grouped bar charts, few-shot
accuracy-vs-shots curves, the checkpoints. Plots are base64 PNGs drawn with matplotlib, which is imported
only when a page is drawn (`harness report` in the other formats does not need it).

The page is one Jinja2 template (`PAGE`) with autoescape on: every value it prints, in an element or an
attribute, is escaped there and nowhere else, after `harness.report.escape.visible` (the environment's
`finalize`); the Python code hands the template values, never markup. Text that a plot draws from a
record is plain text (`_PLAIN`: no math text, no TeX), one line (`visible`), and a legend shows every label
(matplotlib would leave out one starting with "_")."""

from __future__ import annotations

import base64
import datetime
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from harness.files import write_text_atomic
from harness.report.build import as_table
from harness.report.escape import visible
from harness.report.table import (
    FEWSHOT_METRIC,
    PROTOCOL_MARK,
    Column,
    Row,
    Table,
    is_hidden,
    metric_sort_key,
)
from harness.report.tables import (
    UNPUBLISHED,
    fmt_ci,
    fmt_delta,
    fmt_value,
    header_spans,
    table_notes,
)

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
nav a, p.links a { color: var(--accent); text-decoration: none; margin-right: 14px; }
p.links { font-size: 13px; margin: 2px 0 8px; }
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


# The page. Values reach it only through {{ }}: Jinja2 escapes each (autoescape) after `visible` (finalize).
# Whitespace control keeps each table on one line; `{#- #}` joins a line to the one before.
_TEMPLATE = """\
{%- macro data_table(t) -%}
<div class="scroll"><table><thead>
  {%- if t.spans -%}
    <tr><th></th>{% for top, n in t.spans %}<th class="group" colspan="{{ n }}">{{ top }}</th>{% endfor %}</tr>
  {%- endif -%}
  <tr><th>checkpoint</th>{% for metric, head in t.heads %}<th title="{{ metric }}">{{ head }}</th>{% endfor %}</tr>
  {#- #}</thead><tbody>
  {%- for r in t.rows -%}
    <tr class="{{ r.kind }}"><td>{{ r.label }}
    {%- if r.kind != "run" %}<span class="kind">{{ r.kind }}</span>{% endif %}</td>
    {%- for metric, c in r.cells -%}
      {%- if c is none -%}
        <td class="missing">–</td>
      {%- else -%}
        <td{% if c.best %} class="best"{% endif %} title="{{ metric }}">{{ c.value }}
        {%- if c.note %}<sup title="{{ c.note }}">†</sup>{% endif %}
        {%- if c.protocol %}<sup class="protocol" title="{{ c.protocol }}">{{ mark }}</sup>{% endif %}
        {%- if c.ci %}<span class="ci">{{ c.ci }}</span>{% endif %}
        {%- if c.delta %}<span class="delta {{ c.change }}">{{ c.delta }}</span>{% endif -%}
        </td>
      {%- endif -%}
    {%- endfor -%}
    </tr>
  {%- endfor -%}
</tbody></table></div>
{%- endmacro -%}
{%- macro checkpoint_table(rows) -%}
<div class="scroll"><table class="meta"><thead><tr><th>checkpoint</th><th>kind</th><th>variant / shape</th>
{#- #}<th>res</th><th>params (M)</th><th>GFLOPs</th><th>sha256</th><th>source</th></tr></thead><tbody>
{%- for kind, cells in rows -%}
  <tr class="{{ kind }}">{% for c in cells %}<td>{{ c }}</td>{% endfor %}</tr>
{%- endfor -%}
</tbody></table></div>
{%- endmacro -%}
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{% raw %}""" + _CSS + """{% endraw %}</style></head><body>
<header><h1>{{ title }}</h1><p>{{ n_runs }} checkpoint(s)
{%- if baseline %}, baseline {{ baseline }}{% endif %}
{%- if with_paper %}, with the paper's published rows{% endif %} &middot; {{ n_metrics }} metrics
{#- #} &middot; generated {{ generated }}</p></header><main>
<nav>
{%- for s in sections %}<a href="#task-{{ s.task }}">{{ s.task }}</a>{% endfor %}
{%- if has_curves %}<a href="#fewshot-curves">few-shot curves</a>{% endif -%}
{%- if patch_curves %}<a href="#patch-size">patch size</a>{% endif -%}
<a href="#checkpoints">checkpoints</a></nav>
{% for s in sections %}
<section id="task-{{ s.task }}"><h2>{{ s.task }}<small>{{ s.title }}</small></h2>
{% if s.unpublished %}<p class="unpublished">{{ unpublished }}</p>{% endif %}
{% if s.examples %}<p class="links"><a href="{{ s.examples }}">{{ s.task }}: the worst and the most uncertain
{#- #} examples</a></p>{% endif %}
{{ data_table(s.table) }}
{% for caption, png in s.charts %}
<figure><img src="data:image/png;base64,{{ png }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>
{% endfor %}
</section>
{% endfor %}
{% if curves %}
<section id="fewshot-curves"><h2>Few-shot accuracy vs shots<small>log x axis; error bars: std over seeds</small></h2>
{#- #}<figure><img src="data:image/png;base64,{{ curves }}" alt="few-shot accuracy vs shots">
{#- #}<figcaption>One line per checkpoint per dataset; the paper's rows are 10-shot points</figcaption>
{#- #}</figure></section>
{% endif %}
{% if patch_curves %}
<section id="patch-size"><h2>Metrics vs patch size<small>one checkpoint evaluated at several patch sizes (FlexiViT
{#- #} resize); the top axis gives each point's GFLOPs per image</small></h2>
{% for caption, png in patch_curves %}
<figure><img src="data:image/png;base64,{{ png }}" alt="{{ caption }}"><figcaption>{{ caption }}</figcaption></figure>
{% endfor %}
</section>
{% endif %}
<section id="checkpoints"><h2>Checkpoints</h2>{{ checkpoint_table(checkpoints) }}</section>
<ul class="notes">{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul></main></body></html>
"""


def _finalize(value: Any) -> Any:
    """What the page prints of a value: a macro's markup as it is, anything else as `visible` text (which
    autoescape escapes next)."""
    return value if hasattr(value, "__html__") else visible(value)


def template(text: str) -> jinja2.Template:
    """A page template with this page's escaping (autoescape after `visible`; an undefined name is an error):
    the report's other pages (`harness.report.compare`, `harness.report.examples`) are made with it."""
    return jinja2.Environment(autoescape=True, finalize=_finalize, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True).from_string(text)


CSS = _CSS
PAGE = template(_TEMPLATE)


def _cell(table: Table, row: Row, col: Column, best: set[str]) -> dict | None:
    cell = table.cell(row.name, col.metric)
    if cell is None:
        return None
    return {"best": row.name in best, "value": fmt_value(cell, col), "note": cell.note, "protocol": cell.protocol,
            "ci": fmt_ci(cell, col) if cell.ci95 else None,
            "delta": fmt_delta(cell, col) if cell.delta is not None else None,
            "change": "same" if cell.better is None else ("good" if cell.better else "bad")}


def _data_table(table: Table, cols: Sequence[Column]) -> dict:
    """One task's table: the group headers (when any), the column headers, the rows and their cells."""
    rows = table.rows_with_values(cols)
    spans = header_spans(cols)
    best = {c.metric: table.best(c, rows) for c in cols}
    return {"spans": spans if any(top for top, _ in spans) else [],
            "heads": [(c.metric, c.header[1]) for c in cols],
            "rows": [{"kind": r.kind, "label": r.label,
                      "cells": [(c.metric, _cell(table, r, c, best[c.metric])) for c in cols]} for r in rows]}


def _checkpoint_rows(table: Table) -> list[tuple[str, list]]:
    """(kind, cells) of each checkpoint: name, kind, variant or shape, res, params, GFLOPs, sha256, source."""
    out = []
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
        out.append((r.kind, [r.label, r.kind, variant, cfg.get("res", ""), params, gflops or "",
                             str(ck.get("sha256") or "")[:12], r.source or ck.get("spec") or ""]))
    return out

# Text properties of every text a plot draws from a record: plain, never math text ($...$) or TeX.
_PLAIN = {"parse_math": False, "usetex": False}


def _legend(owner, handles: list, labels: list[str], **kwargs) -> None:
    """A legend on `owner` (axes or figure) showing every label as plain text."""
    legend = owner.legend(handles, [visible(label) for label in labels], **kwargs)
    for text in legend.get_texts():
        text.set(**_PLAIN)


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
        shots = sorted({int(FEWSHOT_METRIC.match(c.metric).group(2)) for c in cols if FEWSHOT_METRIC.match(c.metric)})
        pick = 10 if 10 in shots else (shots[-1] if shots else None)
        cols = [c for c in cols if (m := FEWSHOT_METRIC.match(c.metric)) and int(m.group(2)) == pick and not m.group(3)]
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
        handles, labels = [], []
        for r in rows:
            sr = series[r.name]
            if not sr["x"]:
                continue
            bars = ax.bar(sr["x"], sr["y"], width * 0.92, color=colors[r.name],
                          hatch="//" if r.kind == "paper" else None, alpha=0.8 if r.kind == "paper" else 1.0,
                          edgecolor="black" if r.kind == "baseline" else "white", linewidth=0.6)
            if sr["ex"]:
                ax.errorbar(sr["ex"], sr["ey"], yerr=[sr["lo"], sr["hi"]], fmt="none", capsize=2, ecolor="#333",
                            elinewidth=1.0)
            if n_bars <= 48:
                ax.bar_label(bars, labels=sr["label"], fontsize=6.5, padding=1.5,
                             rotation=90 if n_bars > 16 else 0)
            handles.append(bars)
            labels.append(r.label)
        ax.set_xlim(-0.6, len(ucols) - 0.4)
        ticks = [visible(c.header[1] if c.header[0] in ("", None) or task == "fewshot"
                         else f"{c.header[0]}/{c.header[1]}") for c in ucols]
        # Slant the labels once they would run into each other (about 14 characters fit under a slot).
        slant = len(ucols) > 4 or max(len(t) for t in ticks) > 14 * fig.get_figwidth() / (len(ucols) + 1.5)
        ax.set_xticks(range(len(ucols)), ticks, rotation=25 if slant else 0, ha="right" if slant else "center",
                      fontsize=8.5, **_PLAIN)
        ax.set_ylabel(visible({"%": "%", "x100": "score x100"}.get(unit, unit)), **_PLAIN)
        ax.margins(y=0.15)
        ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        _legend(ax, handles, labels, fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        what = "10-shot" if task == "fewshot" and cols and "10shot" in cols[0].metric else task
        caption = f"{what}: one bar per checkpoint per metric ({unit})"
        if any(table.cell(r.name, c.metric) and table.cell(r.name, c.metric).ci95 for r in rows for c in ucols):
            caption += "; error bars: bootstrap 95% CI"
        charts.append((caption, _png(fig)))
    return charts


def _patch(row: Row) -> int | None:
    size = (row.checkpoint.get("config") or {}).get("patch_size") if isinstance(row.checkpoint, dict) else None
    return int(size[0]) if isinstance(size, (list, tuple)) and size and isinstance(size[0], int) else None


def _patch_curves(table: Table) -> list[tuple[str, str]]:
    """Per task, each metric against the patch size for every checkpoint (name and sha256) evaluated at two or
    more patch sizes: the FlexiViT sweep (`harness run --suite flexi`), GFLOPs per point on the top axis."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    sweeps: dict[tuple, dict[int, Row]] = {}
    for r in table.rows:
        if r.kind == "run" and _patch(r) is not None:
            sweeps.setdefault((r.checkpoint.get("name"), r.checkpoint.get("sha256")), {})[_patch(r)] = r
    sweeps = {k: v for k, v in sweeps.items() if len(v) > 1}
    out = []
    for task, cols in table.groups():
        lines = []  # (checkpoint, metric, {patch: value})
        for (name, _), by_patch in sweeps.items():
            for c in cols:
                pts = {p: cell.value * c.scale for p, row in by_patch.items()
                       if (cell := table.cell(row.name, c.metric)) is not None}
                if len(pts) > 1:
                    lines.append((str(name), c, pts))
        if not lines:
            continue
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot(1, 1, 1)
        handles, labels = [], []
        patches: dict[int, float] = {}
        for name, c, pts in lines:
            xs = sorted(pts)
            (h,) = ax.plot(xs, [pts[x] for x in xs], marker="o", markersize=4, linewidth=1.4)
            handles.append(h)
            labels.append(f"{name}: {c.row_label}" if len(sweeps) > 1 else c.row_label)
            for (n, _), by_patch in sweeps.items():
                if str(n) == name:
                    patches.update({p: row.checkpoint.get("gflops") for p, row in by_patch.items()})
        ticks = sorted(patches)
        ax.set_xscale("log", base=2)
        for axis in (ax.xaxis,):
            axis.set_major_locator(FixedLocator(ticks))
            axis.set_minor_locator(NullLocator())
            axis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("patch size (pixels)", fontsize=8.5)
        ax.set_ylabel(cols[0].unit if cols else "", fontsize=8.5, **_PLAIN)
        top = ax.secondary_xaxis("top")
        top.xaxis.set_major_locator(FixedLocator(ticks))
        top.xaxis.set_minor_locator(NullLocator())
        top.set_xticklabels([f"{patches[t]:.3g}" if isinstance(patches[t], (int, float)) else "?" for t in ticks])
        top.set_xlabel("GFLOPs per image", fontsize=8.5)
        ax.tick_params(labelsize=8)
        top.tick_params(labelsize=8)
        ax.grid(color="#e5e7eb", linewidth=0.8)
        _legend(ax, handles, labels, fontsize=7.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        out.append((f"{task}: each metric against the patch size", _png(fig)))
    return out


def _fewshot_curves(table: Table) -> str | None:
    """Accuracy vs shots (log x), one line per checkpoint per dataset, std over seeds as error bars."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    points: dict[str, dict[str, dict[int, tuple[float, float | None]]]] = {}
    for c in table.columns:
        m = FEWSHOT_METRIC.match(c.metric)
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
            h = ax.errorbar(ks, ys, yerr=errs if any(errs) else None, **style)
            handles.setdefault(row.label, h)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sorted(all_shots)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_title(visible(ds), fontsize=10, **_PLAIN)
        ax.set_xlabel("shots per class", fontsize=8.5)
        ax.set_ylabel("accuracy %", fontsize=8.5)
        ax.tick_params(labelsize=8)
        ax.grid(color="#e5e7eb", linewidth=0.8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    _legend(fig, list(handles.values()), list(handles.keys()), loc="center left", bbox_to_anchor=(1.0, 0.5),
            fontsize=8.5, frameon=False)
    return _png(fig)


def to_html(records_or_table, path: str | Path | None = None, *, title: str = "sovit-harness report",
            generated: str | None = None, example_pages: dict[str, str] | None = None, **build_kwargs) -> str:
    """A self-contained HTML page (inline CSS, plots as base64 PNG): per-task tables with grouped bar
    charts, few-shot accuracy-vs-shots curves, and the checkpoints; `example_pages` ({task: relative
    path}, `harness.report.examples`) adds a link per task to its page of examples. Written atomically when
    `path` is given; returns the page."""
    table = as_table(records_or_table, build_kwargs)
    has_curves = any(FEWSHOT_METRIC.match(c.metric) for c in table.columns)
    page = PAGE.render(
        title=title, n_runs=sum(r.kind != "paper" for r in table.rows), baseline=table.baseline,
        with_paper=any(r.kind == "paper" for r in table.rows), n_metrics=len(table.columns),
        generated=generated or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        sections=[{"task": task, "title": table.titles.get(task, ""), "table": _data_table(table, cols),
                   "charts": _bar_charts(table, task, cols), "unpublished": table.unpublished(cols),
                   "examples": (example_pages or {}).get(task)}
                  for task, cols in table.groups()], unpublished=UNPUBLISHED,
        mark=PROTOCOL_MARK, has_curves=has_curves, curves=_fewshot_curves(table) if has_curves else None,
        patch_curves=_patch_curves(table),
        checkpoints=_checkpoint_rows(table), notes=table_notes(table, table.columns))
    if path is not None:
        write_text_atomic(path, page)
    return page
