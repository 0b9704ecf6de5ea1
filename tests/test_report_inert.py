"""Reports are inert (issue 23, "code in a report"): whatever text a record holds, no report runs it or
changes shape for it.

Records with a hostile string in every field that reaches a report (it closes an attribute and an element,
runs a script, opens Markdown blocks, links and code spans, TeX math and commands, a spreadsheet formula,
moves a terminal's cursor, reverses the text after it) are rendered in every format and checked with
parsers that are not ours: html.parser (only our elements and attributes, every value shown as text),
markdown-it (the Markdown's HTML: no element from the data, every table row as wide as its header),
csv.reader (each text comes back as written, a formula start neutralised), pdflatex when installed (the
LaTeX compiles; structural checks otherwise), headless Chromium when installed (no script ran, nothing
loaded). A Hypothesis property test does the same for generated names (`slow`: a bigger budget).
"""

from __future__ import annotations

import csv
import html.parser
import io
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import report
from harness.report.escape import FORMULA_STARTS, csv_text, latex_text, md_cell, md_item, md_text, visible

# What a crafted record would hold. console.error: a script that runs shows in Chromium's console.
ATTACK = ("\"'><script>console.error('pwned')</script><img src=x onerror=console.error('pwned')>"
          " | `x` $\\frac{1}{$ \\input{/etc/passwd} & % # _ ^ ~ {} [x](javascript:alert(1)) *em* <!--"
          "\n# heading\r\n- item\n1. one\n=1+1 \x1b[2J \u202egnp.exe\x00 ]]>")


def hostile(field: str, lead: str = "") -> str:
    """`field`'s hostile value (it names the field, so each is told apart), starting with `lead`."""
    return f"{lead}{field}:{ATTACK}"


FS_DATASET = hostile("fewshot dataset").replace("/", "\\")  # a few-shot metric's dataset holds no "/"
TASK = hostile("task", "+").replace("/", "\\")  # a task not installed here (the metric's first part)
METRIC = f"{TASK}/{hostile('dataset')}/{hostile('leaf')}"


def hostile_records() -> list[dict]:
    """Two runs of an installed task made under different (hostile) settings, and one record of a hostile
    `_kind` with a task not installed here; hostile names, units, notes, sources and checkpoint facts."""
    def rec(name: str, value: float, setting: str, pp: str, text_pp: str, **checkpoint) -> dict:
        return {
            "schema_version": 1, "created": "2025-01-02T00:00:00+00:00",
            "task": {"name": "fewshot", "version": hostile("version"), "preset": "proxy",
                     "config": {hostile("setting"): setting}, "config_hash": hostile("config hash")},
            "checkpoint": {"name": name, **checkpoint},
            "datasets": [{"name": FS_DATASET, "split": hostile("split"), "num_examples": hostile("examples"),
                          "pp": pp, "role": hostile("role")}],
            "metrics": {f"fewshot/{FS_DATASET}/{k}shot": {"value": value + k, "higher_is_better": True,
                                                           "unit": hostile("fewshot unit", "-"),
                                                           "note": hostile("note", "@")} for k in (1, 10)},
            "info": {"text_pp": text_pp}, "source": hostile("source", "="),
        }

    a = rec(hostile("checkpoint a", "="), 50.0, hostile("value a"), hostile("pp a"), hostile("text pp a"),
            spec=hostile("spec a"), sha256=hostile("sha256 a"), variant=hostile("variant"),
            params_m=hostile("params"), gflops={hostile("res"): hostile("gflops")},
            config={"res": hostile("encoder res")})
    b = rec(hostile("checkpoint b", "-"), 48.5, hostile("value b"), hostile("pp b"), hostile("text pp b"),
            spec=hostile("spec b"), sha256=hostile("sha256 b"), gflops=hostile("gflops b"),
            config={"width": hostile("width"), "depth": hostile("depth"), "mlp_dim": hostile("mlp"),
                    "patch_size": hostile("patch"), "res": hostile("encoder res")})
    del b["source"]  # the checkpoint table shows the spec instead
    c = {"schema_version": 1, "created": "2025-01-03T00:00:00+00:00", "_kind": hostile("kind"),
         "source": hostile("source c"), "checkpoint": {"name": hostile("checkpoint c", "@"), "spec": hostile("spec c")},
         "metrics": {METRIC: {"value": 12.5, "higher_is_better": False, "unit": hostile("unit", "-"),
                              "note": hostile("note c"), "ci95": [11.0, 14.0]}}}
    return [a, b, c]


def hostile_table(**kwargs):
    records = hostile_records()
    return report.build_table(records, baseline=records[0]["checkpoint"]["name"], **kwargs)


def shown_values() -> list[str]:
    """Every hostile value a report prints in full (protocol notes cut values at 80 characters)."""
    a, b, c = hostile_records()
    return [a["checkpoint"]["name"], b["checkpoint"]["name"], c["checkpoint"]["name"], TASK, METRIC,
            hostile("unit", "-"), hostile("note", "@"), hostile("note c")]


# ------------------------------------------------------------------------------------------- HTML
OUR_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "p", "main", "nav", "a", "section",
            "h2", "small", "div", "table", "thead", "tbody", "tr", "th", "td", "sup", "span", "figure", "img",
            "figcaption", "ul", "li"}
OUR_ATTRIBUTES = {"lang", "charset", "name", "content", "href", "id", "class", "colspan", "title", "src", "alt"}


class _Page(html.parser.HTMLParser):
    """The elements, attributes and text of a page, as a browser's tokenizer sees them."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.comments: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes += [(tag, k, v or "") for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)

    def handle_comment(self, data):
        self.comments.append(data)


_OWN_PAGE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*/[A-Za-z0-9_-][A-Za-z0-9_.-]*\.html")


def assert_inert_html(page: str, values: list[str] = ()) -> None:
    """Only our elements and attributes, links inside the page or to the report's own pages of examples (a
    plain relative `folder/name.html`: no scheme, no `..`), inline PNGs; each of `values` shown whole."""
    p = _Page(page)
    assert p.tags <= OUR_TAGS, p.tags - OUR_TAGS
    assert {k for _, k, _ in p.attributes} <= OUR_ATTRIBUTES, p.attributes
    assert not p.comments, p.comments
    for tag, key, value in p.attributes:
        assert key != "href" or value.startswith("#") or _OWN_PAGE.fullmatch(value), (tag, key, value)
        assert key != "src" or value.startswith("data:image/png;base64,"), (tag, key, value[:80])
    assert page.count("<script") == 0
    shown = "\n".join([*p.text, *(v for _, _, v in p.attributes)])
    for v in values:
        assert visible(v) in shown, v


def test_html_of_hostile_records_is_inert():
    page = report.to_html(hostile_table(), generated="2025-01-03 00:00 UTC")
    a, b, c = hostile_records()
    values = [*shown_values(), c["_kind"], a["source"], b["checkpoint"]["spec"], a["checkpoint"]["variant"],
              hostile("gflops"), hostile("res"), hostile("encoder res"), hostile("width"), hostile("patch"),
              hostile("gflops b"), hostile("fewshot unit", "-")]
    assert_inert_html(page, values)
    p = _Page(page)
    kinds = [v for tag, k, v in p.attributes if tag == "tr" and k == "class"]
    assert visible(c["_kind"]) in kinds  # the class attribute holds the whole value: nothing broke out of it
    assert visible(hostile("sha256 a"))[:12] in "\n".join(p.text)
    # The protocol notes name the hostile settings (values cut at 80 characters).
    notes = " ".join(p.text)
    for v in (hostile("value a"), hostile("value b"), hostile("pp a"), hostile("text pp b")):
        assert visible(v[:77]) in notes, v
    for v in (hostile("version"), FS_DATASET, hostile("split"), hostile("role"), hostile("setting")):
        assert visible(v) in notes, v
    assert len(re.findall(r"data:image/png;base64,", page)) == 3  # a bar chart per task, the few-shot curves


def test_hostile_html_runs_no_script_in_headless_chromium(tmp_path):
    from tests.test_report import _render_check

    rhc = _render_check()
    page = tmp_path / "hostile.html"
    report.to_html(hostile_table(), page)
    rendered = rhc.render(page, tmp_path / "hostile.png")
    assert not isinstance(rendered, str), rendered
    assert rendered.console == [] and rendered.hook["errors"] == []
    assert rendered.dom.external == [] and rendered.dom.other_images == []
    assert rendered.dom.png_images == 3 and all(img["w"] > 100 for img in rendered.hook["imgs"])
    text = " ".join(rendered.dom.text)
    assert visible(hostile("checkpoint a", "=")) in text


def test_plots_draw_dollars_and_underscores_as_text():
    """`$...$` in a name made matplotlib's math text raise; a legend left out a label starting with `_`."""
    recs = [{"schema_version": 1, "created": "2025-01-02T00:00:00+00:00", "checkpoint": {"name": name},
             "metrics": {f"fewshot/$\\frac{{{name}$/{k}shot": {"value": 50.0 + k, "unit": "$x^$"} for k in (1, 10)}}
            for name in ("$\\alpha$", "_hidden", "a$b")]
    page = report.to_html(recs, generated="x")
    assert_inert_html(page, ["$\\alpha$", "_hidden", "fewshot/$\\frac{a$b$/10shot"])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from harness.report import html as html_report

    fig = Figure()
    ax = fig.add_subplot()
    bars = ax.bar([0, 1], [1, 2])
    html_report._legend(ax, [bars, bars], ["_hidden", "$\\frac{$"])
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["_hidden", "$\\frac{$"]
    assert not any(t.get_parse_math() or t.get_usetex() for t in legend.get_texts())
    FigureCanvasAgg(fig).draw()  # math text would raise on the unclosed group


# ------------------------------------------------------------------------------------------- Markdown
_MD_UNESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_MD_SPLIT = re.compile(r"(?<!\\)\|")  # GFM: a pipe after a backslash is not a column separator
# What starts a block where a line of a paragraph begins (CommonMark): heading, list item, quote, fence,
# thematic break or setext underline, HTML.
_MD_BLOCK_START = re.compile(r"^ {0,3}(#{1,6}(\s|$)|[-+*](\s|$)|\d{1,9}[.)](\s|$)|>|```|~~~|[-=_*]{3,}\s*$|<)")


def md_unescape(s: str) -> str:
    return _MD_UNESCAPE.sub(r"\1", s)


def md_tables(text: str) -> list[list[list[str]]]:
    """The tables of a Markdown report: rows of cells (unescaped), each table's header first."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [md_unescape(c.strip()) for c in _MD_SPLIT.split(line)[1:-1]]
            current = current if current is not None else []
            current.append(cells)
        elif current is not None:
            tables.append(current)
            current = None
    return tables + ([current] if current else [])


def assert_inert_markdown(text: str) -> None:
    """Every line is a heading, a table row, a list item or its continuation; tables keep their shape;
    no `<` opens HTML; no line of text starts a block; markdown-it (with raw HTML on, as most renderers
    that are not GitHub's) makes only headings, tables, lists and text of it."""
    for line in text.splitlines():
        assert line == "" or line.startswith(("### ", "| ", "|-", "- ", "  ")) or line.startswith("(no "), line
        if line.startswith(("- ", "  ")) and not line.startswith("| "):
            assert not _MD_BLOCK_START.match(line[2:]), line
        for m in re.finditer(r"(\\*)<", line):
            assert len(m.group(1)) % 2 == 1, line  # escaped
    for table in md_tables(text):
        assert all(len(row) == len(table[0]) for row in table), table
        assert set(table[1]) <= {"---", "---:"}, table[1]
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(text)
    p = _Page(rendered)
    assert p.tags <= {"h3", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "p", "code", "em", "strong",
                      "br"}, p.tags
    assert not p.comments and {k for _, k, _ in p.attributes} <= {"style"}, p.attributes
    lines = text.splitlines()
    assert rendered.count("<h3>") == sum(ln.startswith("### ") for ln in lines)
    assert rendered.count("<tr>") == sum(ln.startswith("| ") for ln in lines)  # delimiter rows start "|-"
    assert rendered.count("<li>") == sum(ln.startswith("- ") for ln in lines)


@pytest.mark.parametrize("layout", ["long", "wide"])
def test_markdown_of_hostile_records_is_inert(layout):
    table = hostile_table()
    text = report.to_markdown(table, layout=layout)
    assert_inert_markdown(text)
    cells = {c for t in md_tables(text) for row in t for c in row}
    names = [r.label for r in table.rows]
    assert {visible(n) for n in names} <= cells
    assert visible(TASK) in {md_unescape(ln[4:]) for ln in text.splitlines() if ln.startswith("### ")}
    if layout == "wide":
        assert visible(f"{METRIC} ({hostile('unit', '-')})") in cells
    else:
        assert visible(f"{METRIC.split('/', 1)[1]} ({hostile('unit', '-')})") in cells


def test_gate_table_of_hostile_records_is_inert():
    from harness.report.baseline import make_baseline
    from harness.report.check import check

    records = hostile_records()
    result = check(records[1:2], make_baseline(records[:1]))  # b is worse than a
    assert_inert_markdown(result.table)
    assert "\n" not in result.summary() and result.summary().startswith("check FAILED")
    assert visible(hostile("checkpoint b", "-")) in result.summary()


# ------------------------------------------------------------------------------------------- CSV
def test_csv_of_hostile_records_round_trips_with_formulas_neutralised():
    table = hostile_table()
    rows = list(csv.reader(io.StringIO(report.to_csv(table))))
    assert all(len(r) == len(rows[0]) for r in rows)
    header = rows[0]
    expected = ["checkpoint"]
    for c in table.columns:
        expected += [csv_text(c.metric), csv_text(f"{c.metric} delta")]
        expected += [csv_text(f"{c.metric} protocol")] if c.metric.startswith("fewshot/") else []
    assert header == expected
    assert [r[0] for r in rows[1:]] == [csv_text(r.label) for r in table.rows]
    # A text cell starting a formula gets a quote; the value after it is the record's, unchanged.
    for cell in [*header[1:], *(r[0] for r in rows[1:])]:
        assert not cell.startswith(FORMULA_STARTS), cell
    assert rows[1][0] == f"'{hostile('checkpoint a', '=')} (baseline)"
    assert rows[2][0] == "'" + hostile("checkpoint b", "-")
    protocol = [r[header.index(f"fewshot/{FS_DATASET}/10shot protocol")] for r in rows[1:3]]
    assert all("other protocol" in p for p in protocol)
    # Numbers are not text: a negative delta keeps its sign.
    deltas = [r[header.index(csv_text(f"fewshot/{FS_DATASET}/10shot delta"))] for r in rows[1:3]]
    assert deltas == ["", "-1.5"]


def test_csv_text_cells_quote_every_formula_start():
    for lead in FORMULA_STARTS:
        assert csv_text(f"{lead}cmd|' /C calc'!A0") == f"'{lead}cmd|' /C calc'!A0"
    assert csv_text("fewshot/cifar100/10shot") == "fewshot/cifar100/10shot"
    assert csv_text("a=b") == "a=b" and csv_text("'=x") == "'=x"


# ------------------------------------------------------------------------------------------- LaTeX
# The control sequences our LaTeX uses (`latex_text`'s escapes included); the record's text adds none.
_LATEX_COMMANDS = {"begin", "end", "centering", "small", "caption", "label", "toprule", "midrule", "bottomrule",
                   "cmidrule", "multicolumn", "textbf", "text", "scriptsize", "dagger", "ddagger", "uparrow",
                   "downarrow", "pm", "textbackslash", "textasciitilde", "textasciicircum", "textless",
                   "textgreater", "textbar", "&", "%", "$", "#", "_", "{", "}", "\\"}


def assert_latex_safe(tex: str) -> None:
    """Only our control sequences, braces balanced and `$` paired on every line, every tabular row as wide
    as its column spec, comments one line each."""
    in_tabular, ncols = False, 0
    for line in tex.splitlines():
        if line.startswith("%") or not line:
            continue
        commands = set(re.findall(r"\\([A-Za-z]+|.)", line))
        assert commands <= _LATEX_COMMANDS, (commands - _LATEX_COMMANDS, line)
        plain = re.sub(r"\\.", "", line)
        assert plain.count("{") == plain.count("}") and plain.count("$") % 2 == 0, line
        assert not set("%#~_") & set(plain) and "^" not in plain.replace("$^", ""), line
        if line.startswith(r"\begin{tabular}"):
            in_tabular, ncols = True, len(re.match(r"\\begin\{tabular\}\{(\w+)\}", line).group(1))
        elif line.startswith(r"\end{tabular}"):
            in_tabular = False
        elif in_tabular and line.endswith(r"\\") and "multicolumn" not in line:
            assert plain.count("&") == ncols - 1, line
        if in_tabular:  # the `\\` before would take a leading `[...]` or `*` as its argument
            assert not line.startswith(("[", "*")), line


def test_latex_of_hostile_records_is_safe(tmp_path):
    table = hostile_table()
    tex = report.to_latex(table)
    assert_latex_safe(tex)
    for r in table.rows:
        assert latex_text(r.label) + " & " in tex
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex not installed (Debian: apt-get install -y texlive-latex-recommended)")
    doc = tmp_path / "report.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs,amsmath}\\begin{document}\n" + tex
                   + "\n\\end{document}\n")
    r = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", doc.name],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    assert (tmp_path / "report.pdf").stat().st_size > 1000


# ------------------------------------------------------------------------------------------- escapes
def test_each_format_escapes_exactly():
    assert visible("a\nb\r\t\x1b[2J\x00\x7f\x85\u2028\u202e\u2066\ud800é€😀") == \
        "a\\nb\\r\\t\\x1b[2J\\x00\\x7f\\x85\\u2028\\u202e\\u2066\\ud800é€😀"
    assert md_text("<b>[x](y) a\\*b \\") == "\\<b>[x\\](y) a\\\\*b \\"
    assert md_cell("a|b `c`") == "a\\|b \\`c\\`"
    assert md_item("# x\n- y", 8) == "- \\# x\\n-\n  y"
    assert md_item("ok 1. two", 5) == "- ok\n  1\\.\n  two"
    assert latex_text("\\{}$&#^_%~<>|[x]*") == (r"\textbackslash{}\{\}\$\&\#\textasciicircum{}\_\%"
                                                 r"\textasciitilde{}\textless{}\textgreater{}\textbar{}{[}x{]}{*}")


def test_lone_surrogates_are_written_as_escapes(tmp_path):
    """JSON allows `\\ud800`; UTF-8 cannot hold it: every format writes it as an escape."""
    rec = {"schema_version": 1, "created": "2025-01-02T00:00:00+00:00", "checkpoint": {"name": "x\ud800y"},
           "metrics": {"t/\udfff/m": {"value": 1.0}}}
    for fmt in ("md", "csv", "latex", "html"):
        path = tmp_path / f"r.{fmt}"
        if fmt == "html":
            report.to_html([rec], path, generated="x")
        else:
            text = {"md": report.to_markdown, "csv": report.to_csv, "latex": report.to_latex}[fmt]([rec])
            path.write_text(text, encoding="utf-8")
        assert "ud800" in path.read_text(encoding="utf-8"), fmt


# ------------------------------------------------------------------------------------------- property
SPECIALS = "|$<>\"'`&\\#-=+@*_[](){}%^~!:/ \n\r\t\x00\x1b\u202e\u2028é"
NAME = st.one_of(st.text(max_size=16), st.text(alphabet=SPECIALS + "ab1", max_size=16))


def _records(names: list[str], tasks: list[str], leaves: list[str], unit: str) -> list[dict]:
    out = []
    for i, name in enumerate(names):
        metrics = {f"{task}/{leaf}": {"value": 10.0 * (i + 1) + j, "unit": unit, "note": leaf}
                   for j, (task, leaf) in enumerate(zip(tasks, leaves))}
        metrics |= {f"fewshot/{leaves[0].replace('/', '')}/{k}shot": {"value": 30.0 + i + k} for k in (1, 5)}
        out.append({"schema_version": 1, "created": f"2025-01-0{i + 1}T00:00:00+00:00",
                    "checkpoint": {"name": name, "sha256": str(i)}, "metrics": metrics})
    return out


def _every_format_is_inert(names, tasks, leaves, unit) -> None:
    table = report.build_table(_records(names, tasks, leaves, unit))
    for layout in ("long", "wide"):
        assert_inert_markdown(report.to_markdown(table, layout=layout))
    rows = list(csv.reader(io.StringIO(report.to_csv(table))))
    assert rows[0][1:] == [csv_text(c.metric) for c in table.columns]
    assert [r[0] for r in rows[1:]] == [csv_text(r.label) for r in table.rows]
    assert_latex_safe(report.to_latex(table))
    assert_inert_html(report.to_html(table, generated="x"), [r.label for r in table.rows])


_PROPERTY = dict(names=st.lists(NAME, min_size=1, max_size=2), tasks=st.lists(NAME, min_size=1, max_size=2),
                 leaves=st.lists(NAME, min_size=2, max_size=2), unit=NAME)


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_PROPERTY)
def test_any_names_make_inert_reports(names, tasks, leaves, unit):
    _every_format_is_inert(names, tasks, leaves, unit)


@pytest.mark.slow
@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(**_PROPERTY)
def test_any_names_make_inert_reports_many(names, tasks, leaves, unit):
    _every_format_is_inert(names, tasks, leaves, unit)
