"""`harness report --compare A B`: per metric, checkpoint B against checkpoint A on the examples both evaluated.

A and B are checkpoints (report row names among the records given) or folders / files of one checkpoint's
records. Per task, each side's newest record is read with its samples file (`harness.eval.samples`); per
metric with per-example scores, the examples are paired by their id (a TFDS id or the dataset's own), and:

- the difference B - A of the means over the paired examples, on the printed scale;
- its 95% interval: the paired percentile bootstrap (`harness.eval.metrics.paired_bootstrap_ci`: the same
  examples drawn for both, 1000 resamples, seed 0, as the report's intervals);
- a two-sided p-value: McNemar's exact test for 0/1 scores (accuracies, recalls: the binomial test on the
  examples only one of the two gets right), the sign-flip permutation test for other scores (VQA accuracy,
  CIDEr, a mean over seeds, a log-perplexity), which needs no normal approximation and is exact when the
  2^m sign patterns of the m non-zero differences are at most 10,000;
- the examples a difference of the observed size needs to be found at 5% with 80% power (Connor 1987 for
  McNemar's test; the paired normal approximation otherwise).

A difference with p < 0.05 is marked `*` (Markdown, LaTeX) / bold (HTML); nothing corrects for the number of
metrics compared. Every value from a record is escaped for its format (`harness.report.escape`).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.errors import HarnessError, did_you_mean
from harness.eval import metrics as M
from harness.eval.samples import BINARY_RULES, read_record_samples
from harness.files import write_text_atomic
from harness.report.escape import csv_line, csv_text, latex_text, md_cell, md_item, md_text
from harness.report.html import CSS, template
from harness.report.records import load_records
from harness.report import facts
from harness.report.table import CI_RESAMPLES, CI_SEED, Column, is_hidden, metric_sort_key, row_names

ALPHA = 0.05
POWER = 0.8


@dataclasses.dataclass
class Comparison:
    """B against A on one metric (values on the printed scale)."""

    task: str
    metric: str
    column: Column
    n: int  # paired examples
    only_a: int
    only_b: int
    a: float | None = None
    b: float | None = None
    diff: float | None = None
    ci95: tuple[float, float] | None = None
    p: float | None = None
    test: str = ""
    n_power: float | None = None

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < ALPHA


def _side(spec: str, records: list[dict], what: str) -> tuple[str, list[dict]]:
    """(row name, records) of one side of --compare: a folder / file of one checkpoint's records, or a row name."""
    if Path(spec).exists():
        recs = load_records(spec)
        names = sorted(set(row_names(recs)))
        if not recs:
            raise HarnessError(f"--compare {what} {spec}: no result records there; run `harness run` first")
        if len(names) > 1:
            raise HarnessError(f"--compare {what} {spec}: records of {len(names)} checkpoints ({', '.join(names[:4])}); "
                               "pass one checkpoint's folder, or its row name")
        return names[0], recs
    names = row_names(records)
    mine = [r for r, n in zip(records, names) if n == spec]
    if not mine:
        hint = did_you_mean(spec, set(names))
        raise HarnessError(f"--compare {what} {spec!r}: neither a folder of records nor a checkpoint of the records "
                           f"given{hint}; checkpoints: {', '.join(sorted(set(names))[:6]) or 'none'}")
    return spec, mine


def _newest_per_task(records: list[dict]) -> dict[str, dict]:
    out = {}
    for rec in sorted(records, key=lambda r: str(r.get("created") or "")):
        task = (rec.get("task") or {}).get("name")
        if isinstance(task, str):
            out[task] = rec
    return out


def _pair(sa, sb, metric) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Both sides' scores of `metric` on the examples both have (by id, in A's order), and how many only one has."""
    def scores(samples):
        rule = samples.metrics[metric]
        return {(type(ln["id"]).__name__, ln["id"]): ln["scores"][metric] for ln in samples.lines
                if ln["set"] == rule["set"] and metric in ln["scores"]}

    a, b = scores(sa), scores(sb)
    common = [k for k in a if k in b]
    return (np.array([a[k] for k in common], np.float64), np.array([b[k] for k in common], np.float64),
            len(a) - len(common), len(b) - len(common))


def compare_metric(task: str, metric: str, column: Column, a: np.ndarray, b: np.ndarray, binary: bool,
                   only_a: int = 0, only_b: int = 0) -> Comparison:
    """The statistics of one metric from the paired per-example scores `a`, `b` (stored scale)."""
    c = Comparison(task, metric, column, len(a), only_a, only_b)
    if not len(a):
        return c
    s = column.scale
    c.a, c.b = float(a.mean()) * s, float(b.mean()) * s
    c.diff = float((b - a).mean()) * s
    lo, hi = M.paired_bootstrap_ci(a, b, n_resamples=CI_RESAMPLES, seed=CI_SEED)
    c.ci95 = (lo * s, hi * s)
    values = np.unique(np.concatenate([a, b]))
    if binary and values.size <= 2 and set(values.tolist()) <= {0.0, 1.0, 100.0}:
        c.p, n10, n01 = M.mcnemar_exact(a, b)
        c.test = f"McNemar exact (only A right {n10}, only B right {n01})"
        c.n_power = M.mcnemar_sample_size(n10, n01, len(a), alpha=ALPHA, power=POWER)
    else:
        c.p, exact = M.paired_permutation_p(a, b, seed=CI_SEED)
        c.test = "sign-flip permutation" + (" (exact)" if exact else f" ({M.PERMUTATION_RESAMPLES} resamples)")
        c.n_power = M.paired_sample_size(a, b, alpha=ALPHA, power=POWER)
    return c


def compare(records: Sequence[dict], spec_a: str, spec_b: str, *, show_seeds: bool = False
            ) -> tuple[str, str, list[Comparison], list[str]]:
    """(A's name, B's name, the comparisons in the report's metric order, notes on what could not be compared)."""
    records = list(records)
    name_a, recs_a = _side(spec_a, records, "A")
    name_b, recs_b = _side(spec_b, records, "B")
    if name_a == name_b and recs_a == recs_b:
        raise HarnessError(f"--compare {spec_a} {spec_b}: A and B are the same records; name two checkpoints")
    by_a, by_b = _newest_per_task(recs_a), _newest_per_task(recs_b)
    notes, out = [], []
    for task in sorted(set(by_a) | set(by_b), key=lambda t: metric_sort_key(f"{t}/")):
        if task not in by_a or task not in by_b:
            notes.append(f"{task}: only {'A' if task in by_a else 'B'} has a record; not compared")
            continue
        sa, sb = read_record_samples(by_a[task]), read_record_samples(by_b[task])
        info = by_a[task]["metrics"]
        for metric in sorted(set(sa.metrics) & set(sb.metrics), key=metric_sort_key):
            if is_hidden(metric) and not show_seeds:
                continue
            a, b, only_a, only_b = _pair(sa, sb, metric)
            if not len(a) and not only_a and not only_b:
                continue  # no per-example scores (a corpus-level score such as BLEU-4, a std over seeds)
            entry = info.get(metric) if isinstance(info.get(metric), dict) else {}
            column = Column(metric, bool(entry.get("higher_is_better", True)), str(entry.get("unit", "%")))
            binary = sa.metrics[metric]["rule"] in BINARY_RULES and sb.metrics[metric]["rule"] in BINARY_RULES
            out.append(compare_metric(task, metric, column, a, b, binary, only_a, only_b))
        for metric in sorted(set(sa.metrics) ^ set(sb.metrics), key=metric_sort_key):
            notes.append(f"{metric}: only {'A' if metric in sa.metrics else 'B'} has it; not compared")
    if not out:
        raise HarnessError(f"--compare: {name_a} and {name_b} share no metric with per-example scores; run the same "
                           "tasks on both (with --log-samples)")
    return name_a, name_b, out, notes


# ------------------------------------------------------------------------------------------------ rendering
def _num(v: float | None, decimals: int = 2, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:+.{decimals}f}" if sign else f"{v:.{decimals}f}"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def _examples(n: float | None) -> str:
    if n is None or not math.isfinite(n):
        return "-"
    return f"{math.ceil(n):,}"


def _interval(c: Comparison) -> str:
    return "-" if c.ci95 is None else f"[{_num(c.ci95[0])}, {_num(c.ci95[1])}]"


def _leaf(c: Comparison) -> str:
    return c.column.row_label


def _notes(name_a: str, name_b: str, out: list[Comparison], extra: list[str]) -> list[str]:
    notes = [f"A = {name_a}, B = {name_b}; B - A is the mean difference over the examples both evaluated, paired by "
             "their id (a TFDS id, or the dataset's own: COCO image id, VQA question id).",
             f"95% CI: the paired percentile bootstrap of the mean difference ({CI_RESAMPLES} resamples, seed "
             f"{CI_SEED}: the same examples drawn for A and B).",
             "p: two-sided; McNemar's exact test for 0/1 scores (the binomial test on the examples only one of A "
             "and B gets right), the sign-flip permutation test for other scores (exact when the 2^m sign "
             f"patterns of the m non-zero differences are at most {M.PERMUTATION_RESAMPLES + 1:,}).",
             f"*: significant at {ALPHA:.0%} (p below {ALPHA}); no correction for the number of metrics compared.",
             f"examples for {POWER:.0%} power: how many examples a difference of the observed size needs at "
             f"{ALPHA:.0%} (McNemar: Connor 1987, n = (z_a/2 sqrt(psi) + z_b sqrt(psi - delta^2))^2 / delta^2 "
             "with psi the discordant and delta the difference proportion; otherwise the paired normal "
             "approximation n = ((z_a/2 + z_b) sd / d)^2); - where the difference is 0."]
    unpaired = [c for c in out if c.only_a or c.only_b]
    if unpaired:
        notes.append("Examples only one side evaluated are left out: " + "; ".join(
            f"{c.metric}: {c.only_a} only in A, {c.only_b} only in B" for c in unpaired[:6])
            + (f" and {len(unpaired) - 6} more" if len(unpaired) > 6 else ""))
    return notes + extra


def _groups(out: list[Comparison]) -> list[tuple[str, list[Comparison]]]:
    groups: list[tuple[str, list[Comparison]]] = []
    for c in out:
        if not groups or groups[-1][0] != c.task:
            groups.append((c.task, []))
        groups[-1][1].append(c)
    return groups


def compare_markdown(name_a, name_b, out, notes) -> str:
    lines = [f"## Paired comparison: {md_text(name_b)} (B) - {md_text(name_a)} (A)", ""]
    for task, rows in _groups(out):
        lines += [f"### {md_text(task)}: {md_text(facts.task_title(task) or task)}", "",
                  f"| metric | examples | A | B | B - A | 95% CI | p | test | examples for {POWER:.0%} power |",
                  "|---|---:|---:|---:|---:|---|---:|---|---:|"]
        for c in rows:
            diff = _num(c.diff, sign=True) + ("*" if c.significant else "")
            lines.append(f"| {md_cell(_leaf(c))} | {c.n:,} | {_num(c.a)} | {_num(c.b)} | {md_cell(diff)} | "
                         f"{_interval(c)} | {_p(c.p)} | {md_cell(c.test)} | {_examples(c.n_power)} |")
        lines.append("")
    lines += [md_item(n, 110) for n in _notes(name_a, name_b, out, notes)]
    return "\n".join(lines) + "\n"


def compare_csv(name_a, name_b, out, notes) -> str:
    head = ["task", "metric", "a", "b", "examples", "only_a", "only_b", "a_value", "b_value", "b_minus_a",
            "ci95_lo", "ci95_hi", "p", "test", "significant", f"examples_for_{int(POWER * 100)}pct_power"]
    lines = [csv_line(head)]
    for c in out:
        lo, hi = c.ci95 or (None, None)
        nums = [c.a, c.b, c.diff, lo, hi, c.p]
        lines.append(csv_line([csv_text(c.task), csv_text(c.metric), csv_text(name_a), csv_text(name_b), str(c.n),
                               str(c.only_a), str(c.only_b), *("" if v is None else repr(v) for v in nums),
                               csv_text(c.test), str(c.significant).lower(),
                               "" if c.n_power is None or not math.isfinite(c.n_power) else str(math.ceil(c.n_power))]))
    return "".join(lines)


def compare_latex(name_a, name_b, out, notes) -> str:
    parts = []
    for task, rows in _groups(out):
        body = []
        for c in rows:
            diff = _num(c.diff, sign=True)
            diff = f"\\textbf{{{diff}}}$^{{*}}$" if c.significant else diff
            body.append(f"{latex_text(_leaf(c))} & {c.n} & {_num(c.a)} & {_num(c.b)} & {diff} & {_interval(c)} & "
                        f"{latex_text(_p(c.p))} & {latex_text(_examples(c.n_power))} \\\\")
        parts.append("\n".join([
            "\\begin{table}[t]", "\\centering",
            f"\\caption{{{latex_text(task)}: {latex_text(name_b)} (B) $-$ {latex_text(name_a)} (A) on the examples "
            f"both evaluated; $^*$: $p < {ALPHA}$}}",
            "\\begin{tabular}{lrrrrlrr}", "\\toprule",
            f"metric & $n$ & A & B & B $-$ A & 95\\% CI & $p$ & $n_{{{int(POWER * 100)}\\%}}$ \\\\", "\\midrule",
            *body, "\\bottomrule", "\\end{tabular}", "\\end{table}"]))
    return "\n\n".join(parts) + "\n"


_PAGE = template("""\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{% raw %}""" + CSS + """
td.sig { font-weight: 700; color: var(--good); } td.sig.worse { color: var(--bad); }
{% endraw %}</style></head><body>
<header><h1>{{ title }}</h1><p>B = {{ b }}, A = {{ a }} &middot; generated {{ generated }}</p></header><main>
{% for task, title, rows in groups %}
<section id="task-{{ task }}"><h2>{{ task }}<small>{{ title }}</small></h2>
<div class="scroll"><table><thead><tr><th>metric</th><th>examples</th><th>A</th><th>B</th><th>B - A</th>
{#- #}<th>95% CI</th><th>p</th><th>test</th><th>examples for {{ power }} power</th></tr></thead><tbody>
{%- for r in rows -%}
<tr><td title="{{ r.metric }}">{{ r.leaf }}</td><td>{{ r.n }}</td><td>{{ r.a }}</td><td>{{ r.b }}</td>
{#- #}<td{% if r.sig %} class="sig{% if r.worse %} worse{% endif %}"{% endif %}>{{ r.diff }}</td><td>{{ r.ci }}</td>
{#- #}<td>{{ r.p }}</td><td>{{ r.test }}</td><td>{{ r.power }}</td></tr>
{%- endfor -%}
</tbody></table></div></section>
{% endfor %}
<ul class="notes">{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul></main></body></html>
""")


def compare_html(name_a, name_b, out, notes, generated: str | None = None) -> str:
    groups = [(task, facts.task_title(task) or "", [
        {"metric": c.metric, "leaf": _leaf(c), "n": f"{c.n:,}", "a": _num(c.a), "b": _num(c.b),
         "diff": _num(c.diff, sign=True) + ("*" if c.significant else ""), "sig": c.significant,
         "worse": c.diff is not None and (c.diff > 0) != c.column.higher_is_better, "ci": _interval(c),
         "p": _p(c.p), "test": c.test, "power": _examples(c.n_power)} for c in rows]) for task, rows in _groups(out)]
    return _PAGE.render(title=f"Paired comparison: {name_b} - {name_a}", a=name_a, b=name_b, groups=groups,
                        power=f"{POWER:.0%}", notes=_notes(name_a, name_b, out, notes),
                        generated=generated or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def compare_command(runs: Sequence[str], spec_a: str, spec_b: str, *, fmt: str = "md", output: str | None = None,
                    show_seeds: bool = False) -> str:
    """What `harness report [RUNS] --compare A B` prints (or "wrote FILE")."""
    if fmt == "html" and not output:
        raise HarnessError("--format html writes a page; give -o FILE.html")
    records = load_records(list(runs)) if runs else []
    name_a, name_b, out, notes = compare(records, spec_a, spec_b, show_seeds=show_seeds)
    render = {"md": compare_markdown, "csv": compare_csv, "latex": compare_latex, "html": compare_html}[fmt]
    text = render(name_a, name_b, out, notes)
    if output:
        write_text_atomic(output, text)
        return f"wrote {output}\n"
    return text
