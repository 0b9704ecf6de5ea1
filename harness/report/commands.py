"""What `harness report` and `harness check` do, for `harness.cli` (which only parses their arguments)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.files import write_text_atomic
from harness.report.baseline import load_baseline, make_baseline, write_baseline
from harness.report.build import build_table
from harness.report.check import check
from harness.report.examples import write_example_pages
from harness.report.html import to_html
from harness.report.records import load_records
from harness.report.tables import MARKDOWN_LAYOUTS, to_csv, to_latex, to_markdown

FORMATS = ("md", "csv", "latex", "html")


def report_command(runs: Sequence[str], *, fmt: str = "md", output: str | None = None,
                   baseline: str | None = None, with_paper: bool = False, show_seeds: bool = False,
                   layout: str | None = None, data_dir: str | None = None) -> str:
    """What `harness report` prints: the rendered table, or "wrote FILE" when `output` is given. `layout`
    (Markdown only): "long" (the default) or "wide" (`to_markdown`). HTML: with the pages of examples of the
    records that have samples files beside them (`harness.report.examples`; the proxies' images read from
    `data_dir`)."""
    if fmt not in FORMATS:
        raise HarnessError(f"--format {fmt!r}: not one of {', '.join(FORMATS)}")
    if layout is not None and fmt != "md":
        raise HarnessError(f"--layout applies to --format md; {fmt} has one layout (drop --layout)")
    if layout is not None and layout not in MARKDOWN_LAYOUTS:
        raise HarnessError(f"--layout {layout!r}: not one of {', '.join(MARKDOWN_LAYOUTS)}")
    if not runs and not with_paper:
        raise HarnessError("no RUNS given; pass folders or files of result records (or --with paper)")
    if fmt == "html" and not output:
        raise HarnessError("--format html writes a page with embedded plots; give -o FILE.html")
    records = load_records(runs)
    if runs and not records and not with_paper:
        raise HarnessError(f"no result records under {', '.join(runs)}; run `harness run` first")
    table = build_table(records, baseline=baseline, with_paper=with_paper, show_seeds=show_seeds)
    if fmt == "html":
        pages = write_example_pages(records, output, data_dir=data_dir)
        to_html(table, output, example_pages=pages)
        return f"wrote {output}" + (f" and {len(pages)} page(s) of examples" if pages else "") + "\n"
    if fmt == "md":
        text = to_markdown(table, layout=layout or "long")
    else:
        text = {"csv": to_csv, "latex": to_latex}[fmt](table)
    if output:
        write_text_atomic(output, text)
        return f"wrote {output}\n"
    return text


def check_command(runs: Sequence[str], baseline: str, *, tolerance: float | None = None,
                  rel_tolerance: float | None = None, echo: Callable[[str], None] = print) -> int:
    """What `harness check` does: print the table and the verdict; return the exit code (0 ok, 1 regressed)."""
    doc = load_baseline(baseline)
    result = check(load_records(runs), doc, tolerance=tolerance, rel_tolerance=rel_tolerance)
    echo(result.table)
    echo(result.summary())
    return 0 if result.ok else 1


def write_baseline_command(runs: Sequence[str], path: str | Path, *, name: str | None = None,
                           tolerance: float | None = None) -> str:
    """What `harness check RUNS --write-baseline FILE` does; returns the line to print."""
    doc = make_baseline(load_records(runs), name=name, tolerance=tolerance)
    write_baseline(path, doc)
    n_ci = sum("ci95" in m for m in doc["metrics"].values())
    return (f"wrote {path}: {len(doc['metrics'])} metric(s) of {doc['checkpoint'].get('name')!r} from "
            f"{len(doc['tasks'])} task(s), {n_ci} with a bootstrap 95% band")
