"""`harness report`: every format rendered from fixed records against committed golden files, deltas and
bootstrap intervals checked by hand / an independent numpy bootstrap, missing cells, the paper's rows, the
long Markdown layout (every measured number shown, no empty column), the HTML page opened in headless
Chromium.

Regenerate the goldens after an intended change with `UPDATE_GOLDEN=1 pytest tests/test_report.py` and
review the diff.
"""

import base64
import csv
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness import data, report
from harness.cli import main
from harness.errors import HarnessError
from harness.report.records import load_records
from harness.report.table import ci95, is_hidden
from harness.report.tables import fmt_value

GOLDEN = Path(__file__).parent / "data" / "report_golden"
RECORDS = GOLDEN / "records"
BASELINE = GOLDEN / "baseline.json"
GENERATED = "2025-01-03 00:00 UTC"
_PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


@pytest.fixture(scope="module")
def records():
    return load_records(RECORDS)


def _golden(name: str, text: str):
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once and commit it"
    assert text == path.read_text(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"


def _html_without_pngs(page: str) -> str:
    # PNG bytes depend on matplotlib/freetype builds; the page around them must match exactly.
    return _PNG.sub("data:image/png;base64,<png>", page)


# ------------------------------------------------------------------------------------------- goldens
def test_golden_markdown(records):
    _golden("report.md", report.to_markdown(records))


def test_golden_markdown_with_baseline(records):
    _golden("report_baseline.md", report.to_markdown(records, baseline=str(BASELINE)))


def test_golden_markdown_with_paper_and_baseline(records):
    _golden("report_paper.md", report.to_markdown(records, baseline=str(BASELINE), with_paper=True))


def test_golden_markdown_wide(records):
    # The wide layout is the one the long layout replaced as the default: byte for byte the same.
    _golden("report_wide.md", report.to_markdown(records, layout="wide"))
    _golden("report_wide_baseline.md", report.to_markdown(records, layout="wide", baseline=str(BASELINE)))


def test_golden_csv_with_baseline(records):
    _golden("report_baseline.csv", report.to_csv(records, baseline=str(BASELINE)))


def test_golden_latex_with_paper_and_baseline(records):
    _golden("report_paper.tex", report.to_latex(records, baseline=str(BASELINE), with_paper=True))


def test_golden_html(records):
    page = report.to_html(records, baseline=str(BASELINE), with_paper=True, generated=GENERATED)
    _golden("report.html.golden", _html_without_pngs(page))
    from PIL import Image

    pngs = _PNG.findall(page)
    # A bar chart per task and unit (captioning: x100 and nats) + the few-shot curves.
    assert len(pngs) == 9
    for b64 in pngs:
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert img.format == "PNG" and img.width > 300 and img.height > 200
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
        assert pixels.std() > 10  # something is drawn


# ------------------------------------------------------------------------------------------- values
def _md_rows(text: str, task: str) -> dict[str, list[str]]:
    """{row label: cells} of one task's wide Markdown table."""
    block = text.split(f"### {task}\n", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {"": header}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        out[cells[0]] = cells
    return out


def _md_long(text: str, task: str) -> list[tuple[list[str], dict[str, list[str]]]]:
    """One task's long Markdown tables: [(checkpoint columns, {metric row label: cells})] per block."""
    section = text.split(f"### {task}", 1)[1].split("\n### ", 1)[0]
    blocks = []
    for chunk in section.split("\n\n"):
        lines = [ln for ln in chunk.splitlines() if ln.startswith("|")]
        if not lines:
            continue
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        assert header[0] == "metric" and set(lines[1].strip("|").split("|")[1:]) == {"---:"}, lines[:2]
        rows = {}
        for ln in lines[2:]:
            cells = [c.strip() for c in ln.strip("|").split("|")]
            assert len(cells) == len(header), ln
            rows[cells[0]] = cells[1:]
        blocks.append((header[1:], rows))
    return blocks


def _long_cells(text: str, task: str) -> dict[tuple[str, str], str]:
    """{(metric row label, checkpoint): cell} over one task's long blocks (each pair printed once)."""
    out = {}
    for names, rows in _md_long(text, task):
        for label, cells in rows.items():
            for name, cell in zip(names, cells):
                assert (label, name) not in out, (label, name)
                out[(label, name)] = cell
    return out


def test_newest_record_wins_and_values_by_hand(records):
    t = report.build_table(records)
    # fewshot_sovit_old (2025-01-01) said 51.0; the newer record (2025-01-02) says mean(61, 62.5, 60.75).
    assert t.cell("sovit_proxy.npz", "fewshot/proxy_scenes/10shot").value == pytest.approx((61 + 62.5 + 60.75) / 3)
    md = report.to_markdown(records)
    assert _long_cells(md, "fewshot")[("proxy_scenes/10shot", "sovit_proxy.npz")] == "61.42"
    # CIDEr is stored raw and printed x100; log-perplexity in nats with 3 decimals; the CI as ± half-width.
    ((names, coco),) = _md_long(md, "coco_captioning")
    assert names == ["sovit_proxy.npz"]
    assert list(coco) == ["cider (x100)", "bleu4 (x100)", "rouge_l (x100)", "log_perplexity (nats)"]
    assert coco["cider (x100)"] == ["50.65 ± 15.18"]  # [35.80, 66.15]: (66.15 - 35.80) / 2
    assert coco["log_perplexity (nats)"] == ["2.672 ± 0.134"]  # [2.537, 2.806]
    # Corpus BLEU-4 is not the mean of its per-example list: no interval for it.
    assert coco["bleu4 (x100)"] == ["18.75"]
    wide = _md_rows(report.to_markdown(records, layout="wide"), "coco_captioning")
    assert wide[""][1:] == ["coco_captioning/cider (x100)", "coco_captioning/bleu4 (x100)",
                            "coco_captioning/rouge_l (x100)", "coco_captioning/log_perplexity (nats)"]
    assert wide["sovit_proxy.npz"][1] == "50.65 [35.80, 66.15]" and wide["sovit_proxy.npz"][2] == "18.75"


def _newest_values(records: list[dict]) -> dict[tuple[str, str], float]:
    """(checkpoint, metric) -> value of the newest record that has it, straight from the records."""
    out = {}
    for rec in sorted(records, key=lambda r: r["created"]):
        for metric, m in rec["metrics"].items():
            out[(rec["checkpoint"]["name"], metric)] = m["value"]
    return out


@pytest.mark.parametrize("with_paper", [False, True])
def test_long_layout_shows_every_measured_number_in_its_place(records, with_paper):
    t = report.build_table(records, baseline=str(BASELINE), with_paper=with_paper)
    md = report.to_markdown(t)
    cols = {c.metric: c for c in t.columns}
    shown = {task: _long_cells(md, task) for task, _ in t.groups()}
    # Every value of every record (the newest per checkpoint and metric), the paper's and the baseline's.
    expected = {k: v for k, v in _newest_values(records).items() if not is_hidden(k[1])}
    assert len(expected) == 27  # 2 x 8 few-shot, 2 x 3 VQA, 4 captioning, 1 linear probe
    if with_paper:
        expected.update({(r["checkpoint"]["name"], m): e["value"] for r in report.load_paper_rows()
                         for m, e in r["metrics"].items()})
    base = json.loads(BASELINE.read_text())
    expected.update({("sovit_proxy.npz (baseline)", m): e["value"] for m, e in base["metrics"].items()})
    labels = {r.name: r.label for r in t.rows}
    for (name, metric), value in expected.items():
        col = cols[metric]
        cell = shown[col.task][(col.row_label, labels[name])]
        printed = fmt_value(report.Cell(value, decimals=t.cells[(name, metric)].decimals), col)
        assert cell == printed or cell.startswith((printed + " ", printed + "†")), (name, metric, cell, printed)
    # And nothing else: every printed number is one of them (the rest are "-").
    printed_cells = [c for task in shown.values() for c in task.values() if c != "-"]
    assert len(printed_cells) == len(expected)


def test_long_layout_prints_no_empty_column_and_no_empty_row(records):
    # Proxy runs and the paper's rows share no metric: they never share a table, so neither gets a
    # column of "-"; a checkpoint that ran one dataset of two still stands beside the other's checkpoint.
    only_scenes = json.loads((RECORDS / "fewshot_vitb.json").read_text())
    only_scenes["checkpoint"] = {**only_scenes["checkpoint"], "name": "scenes_only.npz", "sha256": "d4" * 32}
    only_scenes["metrics"] = {m: e for m, e in only_scenes["metrics"].items() if "proxy_scenes" in m}
    for kwargs in ({}, {"with_paper": True}, {"with_paper": True, "baseline": str(BASELINE)}):
        t = report.build_table([*records, only_scenes], **kwargs)
        md = report.to_markdown(t)
        for task, _ in t.groups():
            for names, rows in _md_long(md, task):
                for j, name in enumerate(names):
                    assert any(cells[j] != "-" for cells in rows.values()), (task, name, "empty column")
                for label, cells in rows.items():
                    assert any(c != "-" for c in cells), (task, label, "empty row")
                paper = [n for n in names if n.endswith("(paper)")]
                runs = [n for n in names if not n.endswith("(paper)")]
                assert not (paper and runs) or task == "coco_captioning", (task, names)  # shares cider
    fewshot = _md_long(report.to_markdown(report.build_table([*records, only_scenes], with_paper=True)), "fewshot")
    assert [names for names, _ in fewshot] == [
        ["ViT-L/16 (paper)", "SoViT-400m/14 (paper)", "ViT-g/14 (paper)"],  # Table 3's datasets first
        ["sovit_proxy.npz", "vit_b_proxy.npz", "scenes_only.npz"]]
    proxy = fewshot[1][1]
    assert list(proxy)[:4] == ["proxy_digits/1shot", "proxy_digits/5shot", "proxy_digits/10shot",
                               "proxy_digits/25shot"]  # grouped by dataset, shots in order
    assert proxy["proxy_digits/1shot"][2] == "-" and proxy["proxy_scenes/1shot"][2] != "-"
    # The widest line fits a terminal; the wide layout of the same table does not.
    t = report.build_table(records, with_paper=True, baseline=str(BASELINE))
    assert max(map(len, report.to_markdown(t).splitlines())) <= 120
    assert max(map(len, report.to_markdown(t, layout="wide").splitlines())) > 300


def test_paper_order_of_columns(records):
    t = report.build_table(records, with_paper=True)
    tasks = [task for task, _ in t.groups()]
    assert tasks == ["imagenet_finetune", "linear_probe", "fewshot", "lit_zeroshot", "vqa", "coco_captioning",
                     "panoptic"]
    fs = [c.metric for c in t.columns if c.task == "fewshot"]
    # shot by shot; inside 10 shots Table 3's dataset order, then the proxies
    ten = [m.split("/")[1] for m in fs if m.endswith("/10shot")]
    assert ten[:9] == list(data.FEWSHOT_DATASETS) and ten[9:] == ["proxy_digits", "proxy_scenes"]
    assert fs.index("fewshot/proxy_scenes/5shot") < fs.index("fewshot/imagenet2012/10shot")
    assert not any(is_hidden(m) for m in fs)
    seeds = report.build_table(records, show_seeds=True)
    assert "fewshot/proxy_scenes/10shot/seed-2" in [c.metric for c in seeds.columns]


def test_deltas_by_hand(records):
    t = report.build_table(records, baseline=str(BASELINE))
    base = "sovit_proxy.npz (baseline)"
    assert t.rows[0].name == base and t.rows[0].kind == "baseline"
    # fewshot/proxy_scenes/10shot: 61.41667 - 60.0 = +1.41667, better
    c = t.cell("sovit_proxy.npz", "fewshot/proxy_scenes/10shot")
    assert c.delta == pytest.approx(61.416666666666664 - 60.0) and c.better is True
    # vit_b VQA: mean of the 40 cycled scores (100, 0, 0, 60, 100, 30, 90, 0) = 47.5; 47.5 - 60 = -12.5, worse
    c = t.cell("vit_b_proxy.npz", "vqa/proxy_scenes/accuracy")
    assert c.value == pytest.approx(380 / 8) and c.delta == pytest.approx(-12.5) and c.better is False
    # Lower-is-better log-perplexity: 2.672 - 2.75 = -0.078 is an improvement
    c = t.cell("sovit_proxy.npz", "coco_captioning/log_perplexity")
    assert c.delta == pytest.approx(2.672 - 2.75) and c.better is True
    # A metric the baseline lacks gets no delta; an equal value is neither better nor worse.
    assert t.cell("sovit_proxy.npz", "fewshot/proxy_scenes/1shot").delta is None
    same = t.cell("sovit_proxy.npz", "vqa/proxy_scenes/accuracy")
    assert same.delta == 0 and same.better is None
    md = _long_cells(report.to_markdown(t), "coco_captioning")
    assert md[("cider (x100)", "sovit_proxy.npz")].endswith("(+0.65▲)")  # printed x100: (0.5065 - 0.5) * 100
    assert md[("log_perplexity (nats)", "sovit_proxy.npz")] == "2.672 ± 0.134 (-0.078▲)"
    wide = _md_rows(report.to_markdown(t, layout="wide"), "coco_captioning")
    assert wide["sovit_proxy.npz"][1] == "50.65 [35.80, 66.15] (+0.65▲)"
    rows = list(csv.reader(io.StringIO(report.to_csv(t))))
    header = rows[0]
    by_name = {r[0]: r for r in rows[1:]}
    i = header.index("vqa/proxy_scenes/accuracy delta")
    assert float(by_name["vit_b_proxy.npz"][i]) == -12.5
    # A baseline given as the name of a row, and as a folder of one checkpoint's records.
    t2 = report.build_table(records, baseline="vit_b_proxy.npz")
    assert t2.cell("sovit_proxy.npz", "vqa/proxy_scenes/accuracy").delta == pytest.approx(12.5)


def _numpy_bootstrap(scores, n_resamples=1000, seed=0):
    """An independent percentile bootstrap: one resample at a time."""
    rng = np.random.default_rng(seed)
    x = np.asarray(scores, dtype=np.float64)
    means = np.array([x[rng.integers(0, len(x), len(x))].mean() for _ in range(n_resamples)])
    return np.percentile(means, 2.5), np.percentile(means, 97.5)


def test_bootstrap_intervals(records):
    t = report.build_table(records)
    vqa = next(r for r in records if r["task"]["name"] == "vqa" and r["checkpoint"]["name"] == "sovit_proxy.npz")
    scores = vqa["per_example"]["vqa/proxy_scenes/accuracy"]
    c = t.cell("sovit_proxy.npz", "vqa/proxy_scenes/accuracy")
    assert c.ci95 == pytest.approx(_numpy_bootstrap(scores), abs=1e-9)
    assert c.num_examples == 40
    lo, hi = c.ci95
    assert lo < c.value < hi
    # Normal-approximation sanity check: the half-width is about 1.96 standard errors.
    se = np.std(scores) / np.sqrt(len(scores))
    assert (hi - lo) / 2 == pytest.approx(1.96 * se, rel=0.15)
    # Constant scores: a zero-width interval; scores that do not average to the value: none.
    assert ci95([0.5] * 10, 0.5) == (0.5, 0.5)
    assert ci95([0.0, 1.0], 0.9) is None
    assert ci95([1.0], 1.0) is None
    assert t.cell("sovit_proxy.npz", "coco_captioning/bleu4").ci95 is None


def test_missing_cells_are_missing_not_zero(records):
    t = report.build_table(records, with_paper=True)
    md = report.to_markdown(t, layout="wide")  # the long layout prints no column of "-" (tested above)
    lp = _md_rows(md, "linear_probe")
    assert "sovit_proxy.npz" not in lp  # never ran the task: no row in that table
    assert lp["vit_b_proxy.npz"][1:7] == ["-"] * 6 and lp["vit_b_proxy.npz"][7] == "91.25"
    assert lp["ViT-L/16 (paper)"][-1] == "-"
    rows = {r[0]: r for r in csv.reader(io.StringIO(report.to_csv(t)))}
    header = rows["checkpoint"]
    assert rows["vit_b_proxy.npz"][header.index("coco_captioning/cider")] == ""
    assert "0.00" not in _md_rows(md, "imagenet_finetune")["ViT-L/16 (paper)"]
    tex = report.to_latex(t)
    assert r"\text{--}" in tex
    # A NaN metric value is missing too.
    rec = json.loads((RECORDS / "linear_probe_vitb.json").read_text())
    rec["metrics"]["linear_probe/proxy_digits/val"]["value"] = float("nan")
    assert "| vit_b_proxy.npz |" not in report.to_markdown([rec], layout="wide")
    assert "vit_b_proxy.npz" not in report.to_markdown([rec]) and "proxy_digits/val" not in report.to_markdown([rec])


def test_paper_rows_match_paper_md():
    rows = {r["checkpoint"]["name"]: r for r in report.load_paper_rows()}
    t = report.build_table([], with_paper=True)
    so = "SoViT-400m/14 (paper)"
    assert t.cell(so, "imagenet_finetune/518/val").value == 90.3
    assert t.cell(so, "linear_probe/imagenet2012/a").value == 76.4
    assert t.cell(so, "fewshot/cars196/10shot").value == 93.6
    assert t.cell("ViT-g/14 (paper)", "fewshot/uc_merced/10shot").value == 98.2
    assert t.cell(so, "lit_zeroshot/imagenet2012/top1").value == 82.2
    cider = t.cell(so, "coco_captioning/cider")
    assert cider.value == pytest.approx(1.25)
    assert rows[so]["source"].startswith("arXiv 2305.13035")
    col = next(c for c in t.columns if c.metric == "coco_captioning/cider")
    assert fmt_value(cider, col) == "125"  # printed x100 with the paper's own precision
    assert fmt_value(t.cell(so, "vqa/vqav2/accuracy"), next(c for c in t.columns
                                                                 if c.metric == "vqa/vqav2/accuracy")) == "67.7"
    # ViT-g/14 has no ImageNet-v2 number at 518 in Table 1: missing, never 0.
    assert t.cell("ViT-g/14 (paper)", "imagenet_finetune/518/v2") is None
    # A paper row as the baseline.
    tb = report.build_table([], with_paper=True, baseline=so)
    assert tb.rows[0].name == so and tb.rows[0].kind == "baseline"


# ------------------------------------------------------------------------------------------- CLI
def test_cli_formats(records, tmp_path):
    runner = CliRunner()
    md = runner.invoke(main, ["report", str(RECORDS)])
    assert md.exit_code == 0 and md.output == report.to_markdown(records)
    assert md.output.startswith("### linear_probe: Linear probe on frozen features") and "| metric |" in md.output
    wide = runner.invoke(main, ["report", str(RECORDS), "--layout", "wide"])
    assert wide.exit_code == 0 and wide.output == report.to_markdown(records, layout="wide")
    assert wide.output == (GOLDEN / "report_wide.md").read_text()
    for fmt, marker in (("csv", "checkpoint,imagenet_finetune/224/val,imagenet_finetune/224/val delta,"),
                        ("latex", r"\begin{tabular}")):
        r = runner.invoke(main, ["report", str(RECORDS), "--format", fmt, "--baseline", str(BASELINE),
                                 "--with", "paper"])
        assert r.exit_code == 0, r.output
        assert marker in r.output
    out = tmp_path / "r.html"
    r = runner.invoke(main, ["report", str(RECORDS), "--format", "html", "-o", str(out), "--with", "paper"])
    assert r.exit_code == 0 and out.exists() and r.output == f"wrote {out}\n"
    r = runner.invoke(main, ["report", "--with", "paper"])
    assert r.exit_code == 0 and "SoViT-400m/14 (paper)" in r.output


@pytest.mark.parametrize("args,msg", [
    (["report", "RECORDS", "--format", "html"], "give -o FILE.html"),
    (["report"], "no RUNS given"),
    (["report", "RECORDS", "--baseline", "/no/such/baseline.json"], "no such baseline file"),
    (["report", "RECORDS", "--baseline", "Nope (paper)"], "no such paper row"),
    (["report", "RECORDS", "--format", "csv", "--layout", "wide"], "--layout applies to --format md"),
])
def test_cli_errors_one_line(args, msg):
    r = CliRunner().invoke(main, [str(RECORDS) if a == "RECORDS" else a for a in args])
    assert r.exit_code == 2, r.output
    assert msg in r.output and len(r.output.strip().splitlines()) == 1


def test_load_records_skips_artifacts_and_hidden_files(tmp_path):
    shutil.copytree(RECORDS, tmp_path / "runs")
    art = tmp_path / "runs" / "artifacts" / "vqa__x__y"
    art.mkdir(parents=True)
    (art / "predictions.json").write_text('[{"question_id": 1, "ans')  # a half-written artefact
    (tmp_path / "runs" / ".fewshot.json.tmp.json").write_text("{")
    assert len(report.load_records([tmp_path / "runs"])) == 7
    (tmp_path / "runs" / ".locks").mkdir()
    (tmp_path / "runs" / ".locks" / "x.json").write_text("{")  # hidden folders are not read either
    assert len(report.load_records(tmp_path / "runs")) == 7
    (tmp_path / "runs" / "broken.json").write_text("{")
    with pytest.raises(HarnessError, match="broken.json"):
        report.load_records([tmp_path / "runs"])


# ------------------------------------------------------------------------------------------- Chromium
def _render_check():
    """scripts/render_html_check.py as a module; skips the test when no Chromium is installed."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "render_html_check.py"
    sys.path.insert(0, str(script.parent))
    try:
        import render_html_check as rhc
    finally:
        sys.path.pop(0)
    if rhc.find_chromium() is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    return rhc


def test_html_renders_in_headless_chromium(records, tmp_path):
    rhc = _render_check()
    page = tmp_path / "report.html"
    report.to_html(records, page, baseline=str(BASELINE), with_paper=True)
    shot = tmp_path / "report.png"
    rendered = rhc.render(page, shot)
    assert not isinstance(rendered, str), rendered
    # No console message, every plot decoded and painted, known cells' text in the DOM Chromium built.
    failures = rhc.check_rendered(rendered, page, shot, min_rows=30, min_images=9,
                                  expect=["61.42", "+1.42▲", "50.65", "[35.80, 66.15]", "SoViT-400m/14 (paper)"])
    assert failures == []
    assert rendered.console == [] and rendered.hook["errors"] == []
    assert rendered.dom.tables == 8 and rendered.dom.png_images == 9 and len(rendered.hook["imgs"]) == 9
    assert all(img["w"] > 300 and img["h"] > 200 for img in rendered.hook["imgs"])
    h, w = rendered.screenshot.shape[:2]
    assert w == 1200 and h == rendered.hook["height"] > 2000  # the whole page
    assert shot.stat().st_size > 20_000


def test_the_chromium_check_fails_a_broken_page(records, tmp_path):
    """The check can fail: a script error, an image that does not decode, one that decodes to a blank
    plot, a missing text."""
    from PIL import Image

    rhc = _render_check()
    page = report.to_html(records, baseline=str(BASELINE), generated=GENERATED)
    pngs = _PNG.findall(page)
    buf = io.BytesIO()
    first = Image.open(io.BytesIO(base64.b64decode(pngs[1])))
    Image.new("RGB", first.size, "white").save(buf, format="PNG")
    white = base64.b64encode(buf.getvalue()).decode()
    page = page.replace(pngs[0], "AAAA" + pngs[0][40:], 1).replace(pngs[1], white, 1)
    page = page.replace("</body>", "<script>notDefined()</script></body>")
    (tmp_path / "broken.html").write_text(page)
    failures = rhc.check(tmp_path / "broken.html", tmp_path / "broken.png", min_images=9, expect=["no such cell"])
    text = "\n".join(failures)
    assert "console: \"Uncaught ReferenceError: notDefined is not defined\"" in text, text
    assert "page error: img failed to load" in text and "image 0 did not decode" in text, text
    assert re.search(r"image 1 at \d+,\d+ \(\d+x\d+\) is blank in the screenshot", text), text
    assert "text 'no such cell' is not in the rendered page" in text, text
    assert not any(f.startswith("image 2") for f in failures), text


def test_same_file_name_different_checkpoints_get_separate_rows(records):
    other = json.loads((RECORDS / "linear_probe_vitb.json").read_text())
    other["checkpoint"] = {**other["checkpoint"], "sha256": "c9" * 32}
    other["metrics"]["linear_probe/proxy_digits/val"]["value"] = 50.0
    t = report.build_table([*records, other])
    names = [r.name for r in t.rows]
    assert "vit_b_proxy.npz [b7b7b7b7]" in names and "vit_b_proxy.npz [c9c9c9c9]" in names
    assert t.cell("vit_b_proxy.npz [b7b7b7b7]", "linear_probe/proxy_digits/val").value == 91.25
    assert t.cell("vit_b_proxy.npz [c9c9c9c9]", "linear_probe/proxy_digits/val").value == 50.0


def test_a_task_declares_its_own_title_order_and_columns(records, monkeypatch):
    """A third-party task's report facts come from its class; a task not installed here follows the others."""
    from harness.api import Task
    from harness.report import facts

    class MyTask(Task):
        name = "mytask"
        report_title = "My task (my Table 0)"
        report_order = (0, 0)
        report_columns = ("zeta", "alpha")

    installed = facts.installed_task
    monkeypatch.setattr(facts, "installed_task", lambda name: MyTask() if name == "mytask" else installed(name))

    def rec(task: str, metrics: list[str]) -> dict:
        return {"schema_version": 1, "created": "2025-01-05T00:00:00+00:00", "checkpoint": {"name": "m"},
                "task": {"name": task}, "metrics": {m: {"value": 1.0} for m in metrics}}

    extra = [rec("mytask", ["mytask/cifar100/alpha", "mytask/cifar100/zeta", "mytask/imagenet2012/beta"]),
             rec("another_uninstalled", ["another_uninstalled/x"])]
    t = report.build_table([*records, *extra], with_paper=True)
    assert [task for task, _ in t.groups()] == ["mytask", "imagenet_finetune", "linear_probe", "fewshot",
                                                "lit_zeroshot", "vqa", "coco_captioning", "another_uninstalled",
                                                "panoptic"]
    # Datasets in the paper's order (imagenet2012 before cifar100), then the task's own leaf order.
    assert [c.metric for c in t.columns if c.task == "mytask"] == [
        "mytask/imagenet2012/beta", "mytask/cifar100/zeta", "mytask/cifar100/alpha"]
    assert t.titles["mytask"] == "My task (my Table 0)"
    assert t.titles["panoptic"] == "Panoptic segmentation (UViM)"  # not installed: the paper's title
    assert "another_uninstalled" not in t.titles
    tex = report.to_latex(t)
    assert r"\caption{My task (my Table 0)}" in tex and r"\caption{another\_uninstalled}" in tex


# --------------------------------------------------------------------------------- protocol differences
def _record(name: str, *, config: dict, version: str = "1", pp: str = "decode|resize(73)|central_crop(64)",
            value: float = 50.0, res: int = 64, created: str = "2025-01-02T00:00:00+00:00") -> dict:
    return {"schema_version": 1, "created": created,
            "task": {"name": "fewshot", "version": version, "preset": "proxy", "config": config,
                     "config_hash": "x"},
            "checkpoint": {"name": name, "sha256": name * 8, "config": {"res": res, "dtype_mm": "float32"}},
            "datasets": [{"name": "proxy_digits", "split": "test", "num_examples": 797, "pp": pp,
                          "role": "fewshot_test"}],
            "metrics": {"fewshot/proxy_digits/10shot": {"value": value, "higher_is_better": True, "unit": "%"}},
            "info": {}}


BASE = dict(l2_reg=1024.0, seeds=[0, 1, 2], shots=[1, 10], datasets=["proxy_digits"], batch_size=50,
            solve_dtype="float64")


def test_a_cell_made_under_another_protocol_is_marked_with_the_setting_and_both_values():
    from harness.tasks.fewshot import FewShot

    recs = [_record("a", config=BASE), _record("b", config=BASE),
            _record("c", config={**BASE, "solve_dtype": "float32"}, pp="decode|resize(80)|central_crop(64)")]
    version = FewShot.version
    for r in recs:
        r["task"]["version"] = version
    table = report.build_table(recs)
    metric = "fewshot/proxy_digits/10shot"
    assert table.cell("a", metric).protocol is None and table.cell("b", metric).protocol is None
    note = table.cell("c", metric).protocol
    assert "--set solve_dtype `float32` vs `float64`" in note
    assert "proxy_digits/test (fewshot_test) pp `decode|resize(80)|central_crop(64)` vs " \
           "`decode|resize(73)|central_crop(64)`" in note
    md = report.to_markdown(table)
    assert "| metric | a | b | c |" in md and "| proxy_digits/10shot | 50.00 | 50.00 | 50.00‡ |" in md
    assert f"‡ {metric} (c): other protocol than the column's other cells" in " ".join(md.split())
    wide = report.to_markdown(table, layout="wide")
    assert "| c | 50.00‡ |" in wide and "| a | 50.00 |" in wide
    assert f"‡ {metric} (c): other protocol than the column's other cells" in wide
    rows = list(csv.reader(io.StringIO(report.to_csv(table))))
    assert rows[0][-1] == f"{metric} protocol" and rows[3][-1] == note and rows[1][-1] == ""
    assert "$^\\ddagger$" in report.to_latex(table)
    assert 'class="protocol"' in report.to_html(table, generated=GENERATED)


def test_two_cells_that_disagree_are_both_marked_and_neutral_settings_are_not_protocol():
    from harness.tasks.fewshot import FewShot

    a = _record("a", config=BASE)
    # Another dataset list, shot list and extraction batch size: what is computed, not how.
    b = _record("b", config={**BASE, "datasets": ["proxy_digits", "proxy_scenes"], "shots": [10],
                             "batch_size": 7})
    for r in (a, b):
        r["task"]["version"] = FewShot.version
    table = report.build_table([a, b])
    assert table.cell("a", "fewshot/proxy_digits/10shot").protocol is None
    assert table.cell("b", "fewshot/proxy_digits/10shot").protocol is None
    c = _record("c", config={**BASE, "l2_reg": 1.0})
    c["task"]["version"] = FewShot.version
    d = _record("d", config=BASE, res=96)
    d["task"]["version"] = FewShot.version
    table = report.build_table([c, d])
    assert "--set l2_reg `1.0` vs `1024.0`" in table.cell("c", "fewshot/proxy_digits/10shot").protocol
    assert "--set l2_reg `1024.0` vs `1.0`" in table.cell("d", "fewshot/proxy_digits/10shot").protocol
    assert "encoder res `96` vs `64`" in table.cell("d", "fewshot/proxy_digits/10shot").protocol


def test_records_of_an_older_task_version_are_flagged_even_alone():
    from harness.tasks.fewshot import FewShot

    old = _record("old", config=BASE, version="0")
    table = report.build_table([old])
    note = table.cell("old", "fewshot/proxy_digits/10shot").protocol
    assert note == f"made by fewshot version 0; the installed task is version {FewShot.version}"
    new = _record("new", config=BASE, version=FewShot.version)
    note = report.build_table([old, new]).cell("old", "fewshot/proxy_digits/10shot").protocol
    assert note.startswith("made by fewshot version 0") and f"task version `0` vs `{FewShot.version}`" in note
