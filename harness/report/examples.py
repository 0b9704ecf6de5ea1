"""The HTML report's pages of examples: per task, the worst and the most uncertain examples of each checkpoint,
from the records' samples files (`harness.eval.samples`), with the image, the target and the prediction.

`write_example_pages(records, report)` writes `<report stem>_examples/<task>.html` beside the report and, for
the generated proxies (whose images are on this machine once prepared), small PNG thumbnails in
`<report stem>_examples/img/`; for other datasets a page names each example by its TFDS id (or the dataset's
own id) and its position in the split. The main page links each task's page (`harness.report.html.to_html`).

Per evaluated set, examples are ranked by the set's first reported metric (in the record's order, std and
per-seed metrics left aside): the worst are the lowest scores (the highest, for a lower-is-better metric such
as a log-perplexity), ties broken by the most confident prediction first (a confident mistake is worse); the
most uncertain are the smallest margins between a prediction's two best scores (classes, retrieved items) or,
for generated text, the highest per-example log-perplexity. Pages are made with the main page's template
escaping (`harness.report.html.template`): a record or samples file cannot add markup to them."""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError
from harness.eval.samples import Samples, read_record_samples
from harness.files import atomic_file, write_text_atomic
from harness.report import facts
from harness.report.html import CSS, template
from harness.report.table import is_hidden, row_names

log = logging.getLogger("harness")

PER_LIST = 8  # examples in each list (worst, most uncertain) per set
THUMB = 64  # px, the thumbnails' side


def _file_name(task: str) -> str:
    """A task's page file name: its name when it is a plain one, else a sanitised name with a hash."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", task)[:60].lstrip(".") or "task"
    if safe != task:
        safe += "-" + hashlib.sha256(task.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return safe + ".html"


def _primary(samples: Samples, record: dict, set_name: str) -> str | None:
    """The set's first reported metric with per-example scores (std and per-seed metrics left aside)."""
    have = {m for ln in samples.lines if ln["set"] == set_name for m in ln["scores"]}
    order = [m for m in record.get("metrics", {}) if m in have and not is_hidden(m)]
    order += sorted(m for m in have if m not in order and not is_hidden(m))
    return order[0] if order else None


def _head(prediction, rule: dict):
    field = rule.get("field")
    if field is not None and isinstance(prediction, dict):
        return prediction.get(field)
    return prediction


def _scores(head) -> list[float]:
    if not isinstance(head, dict):
        return []
    vals = head.get("top5_scores", head.get("scores"))
    return [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)] if isinstance(vals, list) else []


def _uncertainty(line: dict, rule: dict, nll_metric: str | None) -> float | None:
    """Higher is less certain: minus the margin of the two best scores, or the per-example log-perplexity."""
    s = _scores(_head(line["prediction"], rule))
    if len(s) >= 2:
        return -(float(s[0]) - float(s[1]))
    if nll_metric and nll_metric in line["scores"]:
        return float(line["scores"][nll_metric])
    return None


def _rank(lines: list[dict], metric: str, rule: dict, higher_is_better: bool, nll_metric: str | None):
    """(worst, most uncertain) lines of a set."""
    scored = [ln for ln in lines if metric in ln["scores"]]

    def confidence(ln):
        s = _scores(_head(ln["prediction"], rule))
        return float(s[0]) if s else 0.0

    sign = 1.0 if higher_is_better else -1.0
    worst = sorted(scored, key=lambda ln: (sign * float(ln["scores"][metric]), -confidence(ln)))[:PER_LIST]
    unsure = [ln for ln in scored if _uncertainty(ln, rule, nll_metric) is not None]
    unsure = sorted(unsure, key=lambda ln: -_uncertainty(ln, rule, nll_metric))[:PER_LIST]
    return worst, unsure


def _named(c, names: list[str] | None) -> str:
    if isinstance(c, int) and not isinstance(c, bool) and names and 0 <= c < len(names):
        return f"{c} {names[c]}"
    return str(c)


def _short(value, limit: int = 160) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _depth_text(value) -> str | None:
    """A depth image's target or prediction (`tasks/depth.py`): its mean depth over the valid pixels."""
    if isinstance(value, dict) and "mean_depth" in value and isinstance(value["mean_depth"], (int, float)) \
            and not isinstance(value["mean_depth"], bool):
        pixels = value.get("valid_pixels")
        return f"mean depth {value['mean_depth']:.3g} m" + (f" over {pixels} valid pixels"
                                                           if isinstance(pixels, int) else "")
    return None


def _target_text(target, names) -> str:
    if (depth := _depth_text(target)) is not None:
        return _short(depth)
    if isinstance(target, dict):
        if isinstance(target.get("classes"), list):  # segmentation: the classes in the label
            return _short("classes " + ", ".join(_named(t, names) for t in target["classes"]))
        if "answers" in target:  # VQA: the annotators' answers
            return _short(", ".join(map(str, target["answers"][:10])) +
                          (f" ({target['answer_type']})" if target.get("answer_type") else ""))
        if "caption" in target:  # text -> image retrieval: the query caption and its image
            return _short(f"\"{target['caption']}\" -> {', '.join(map(str, target.get('ids') or []))}")
        if "ids" in target:  # image -> text retrieval: the image's own captions
            ids = target["ids"] if isinstance(target["ids"], list) else []
            return _short(f"{len(ids)} caption(s): " + ", ".join(map(str, ids[:3])))
    if isinstance(target, list):
        if target and all(isinstance(t, str) for t in target):  # reference captions
            return _short(" | ".join(target[:2]) + (f" (+{len(target) - 2})" if len(target) > 2 else ""))
        return _short(", ".join(_named(t, names) for t in target))
    return _short(_named(target, names))


def _prediction_text(prediction, rule: dict, names) -> str:
    head = _head(prediction, rule)
    if isinstance(head, dict) and isinstance(head.get("top5"), list):
        scores = _scores(head)
        return _short(" · ".join(f"{_named(c, names)} ({s:.3g})" if i < len(scores) else _named(c, names)
                                 for i, (c, s) in enumerate(zip(head["top5"], scores + [0.0] * 5))), 240)
    if isinstance(head, dict) and isinstance(head.get("retrieved"), list):
        return _short(" · ".join(map(str, head["retrieved"][:5])), 240)
    if (depth := _depth_text(head)) is not None:
        return _short(depth)
    if isinstance(head, dict) and "text" in head:
        return _short(f"\"{head['text']}\"")
    return _short(head)


def _thumbnails(dataset: str, split: str, positions: set[int], data_dir, folder: Path) -> dict[int, str]:
    """{position: thumbnail file name} for a generated proxy prepared under `data_dir`; {} for other data."""
    from harness import data  # the pipeline (TensorFlow): only when a page with images is made

    if not positions or data.base_name(dataset) not in data.GENERATED or not data.is_prepared(dataset, data_dir):
        return {}
    from PIL import Image

    import numpy as np

    out, last = {}, max(positions)
    key = data.get_info(dataset).image_key
    try:
        for batch in data.iterate(dataset, split, batch_size=64, pp=f'decode(key="{key}")|keep("{key}")',
                                  data_dir=data_dir, num_examples=last + 1):
            for img, pos, real in zip(batch[key], batch["_index"], batch["_mask"]):
                if real and int(pos) in positions:
                    name = hashlib.sha256(f"{dataset}\0{split}\0{int(pos)}".encode()).hexdigest()[:20] + ".png"
                    pic = Image.fromarray(np.asarray(img, np.uint8)).resize((THUMB, THUMB), Image.NEAREST)
                    with atomic_file(folder / name, "wb", what="a thumbnail") as f:
                        pic.save(f, format="PNG")
                    out[int(pos)] = name
    except HarnessError as e:
        log.warning("report: no thumbnails of %s/%s (%s)", dataset, split, e)
        return {}
    return out


_PAGE = template("""\
<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{% raw %}""" + CSS + """
td.img { width: 68px; } td.img img { width: 64px; height: 64px; image-rendering: pixelated; border: 0; }
td.text { white-space: normal; text-align: left; max-width: 420px; }
td.id { white-space: normal; text-align: left; font-size: 12px; max-width: 260px; word-break: break-all; }
h3 { font-size: 14.5px; margin: 16px 0 6px; }
{% endraw %}</style></head><body>
<header><h1>{{ title }}</h1><p>{{ subtitle }} &middot; generated {{ generated }}</p></header><main>
<nav><a href="{{ back }}">back to the report</a></nav>
{% for r in rows %}
<section><h2>{{ r.name }}<small>{{ r.samples }}</small></h2>
{% if r.error %}<p>{{ r.error }}</p>{% endif %}
{% for s in r.sets %}
<h3>{{ s.name }}: {{ s.list }}<small> ranked by {{ s.metric }}</small></h3>
<div class="scroll"><table><thead><tr><th>image</th><th>example</th><th>target</th><th>prediction</th>
{#- #}<th>{{ s.metric_leaf }}</th><th>{{ s.measure }}</th></tr></thead><tbody>
{%- for e in s.examples -%}
<tr><td class="img">{% if e.thumb %}<img src="{{ e.thumb }}" alt="{{ e.id }}">{% else %}–{% endif %}</td>
{#- #}<td class="id">{{ e.id }}<br>{{ e.where }}</td><td class="text">{{ e.target }}</td>
{#- #}<td class="text">{{ e.prediction }}</td><td>{{ e.score }}</td><td>{{ e.measure }}</td></tr>
{%- endfor -%}
</tbody></table></div>
{% endfor %}
</section>
{% endfor %}
<ul class="notes">{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul></main></body></html>
""")

NOTES = ["Worst: the lowest per-example scores of the set's first reported metric (the highest, for a "
         "lower-is-better one), the most confident prediction first among equal scores.",
         "Most uncertain: the smallest margin between the prediction's two best scores (classes, retrieved "
         "items); for generated text, the highest per-example log-perplexity.",
         "Images: thumbnails of the generated proxies (read from --data-dir); other datasets' examples are named "
         "by their TFDS id (shard file and position in it) or the dataset's own id, and their position in the "
         "split."]


def _page_sets(samples: Samples, record: dict, data_dir, img_dir: Path, folder_name: str) -> list[dict]:
    out = []
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    for set_name, info in samples.sets.items():
        lines = samples.of_set(set_name)
        metric = _primary(samples, record, set_name)
        if metric is None or not lines:
            continue
        rule = samples.metrics.get(metric, {})
        if rule.get("rule") in ("mean_of", "std_of"):  # a mean over seeds: the first seed's predictions
            rule = samples.metrics.get(rule["metrics"][0], rule)
        entry = metrics.get(metric) if isinstance(metrics.get(metric), dict) else {}
        higher = bool(entry.get("higher_is_better", True))
        nll = next((m for m, r in samples.metrics.items() if r.get("set") == set_name and r.get("rule") == "mean"
                    and m.endswith("log_perplexity")), None)
        worst, unsure = _rank(lines, metric, rule, higher, nll)
        dataset, split = str(info.get("dataset")), str(info.get("split"))
        names = None
        try:
            from harness import data

            if data.is_prepared(dataset, data_dir):
                names = data.class_names(dataset, data_dir)
        except (HarnessError, KeyError, LookupError):
            names = None
        positions = {ln["index"] for ln in worst + unsure if isinstance(ln.get("index"), int)}
        thumbs = _thumbnails(dataset, split, positions, data_dir, img_dir)
        for title, chosen in (("worst", worst), ("most uncertain", unsure)):
            if not chosen:
                continue
            has_scores = bool(_scores(_head(chosen[0]["prediction"], rule)))
            out.append({"name": set_name, "list": title, "metric": metric, "metric_leaf": metric.rsplit("/", 1)[-1],
                        "measure": ("top score" if title == "worst" else "margin") if has_scores else
                        ("NLL" if nll else "-"),
                        "examples": [_example(ln, rule, metric, names, thumbs, folder_name, title, nll)
                                     for ln in chosen]})
    return out


def _example(ln, rule, metric, names, thumbs, folder_name, title, nll) -> dict:
    s = _scores(_head(ln["prediction"], rule))
    if s:
        measure = f"{s[0]:.3g}" if title == "worst" else (f"{s[0] - s[1]:.3g}" if len(s) > 1 else "-")
    else:
        measure = f"{ln['scores'][nll]:.3g}" if nll and nll in ln["scores"] else "-"
    index = ln.get("index")
    thumb = thumbs.get(index) if isinstance(index, int) else None
    return {"id": _short(ln["id"], 120), "where": f"position {index}" if isinstance(index, int) else "",
            "thumb": f"img/{thumb}" if thumb else None, "target": _target_text(ln["target"], names),
            "prediction": _prediction_text(ln["prediction"], rule, names),
            "score": f"{ln['scores'][metric]:.4g}", "measure": measure}


def write_example_pages(records: Sequence[dict], report: str | Path, *, data_dir=None,
                        generated: str | None = None) -> dict[str, str]:
    """Writes the pages of examples of every task whose records have samples files beside `report` (the main
    page's path); returns {task: the page's path relative to the report}."""
    report = Path(report)
    folder_name = f"{report.stem}_examples"
    folder = report.parent / folder_name
    records = [r for r in records if r.get("samples") and isinstance(r.get("task"), dict)
               and isinstance(r["task"].get("name"), str) and r.get("_path")]
    if not records:
        return {}
    newest: dict[tuple[str, str], dict] = {}
    for rec, name in sorted(zip(records, row_names(records)), key=lambda rn: str(rn[0].get("created") or "")):
        newest[(rec["task"]["name"], name)] = rec
    links = {}
    stamp = generated or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for task in sorted({t for t, _ in newest}):
        rows = []
        for (t, name), rec in newest.items():
            if t != task:
                continue
            try:
                samples = read_record_samples(rec)
            except HarnessError as e:  # one unreadable samples file costs its own section, not the report
                rows.append({"name": name, "samples": "", "error": str(e), "sets": []})
                continue
            rows.append({"name": name, "samples": samples.path.name, "error": None,
                         "sets": _page_sets(samples, rec, data_dir, folder / "img", folder_name)})
        page = _file_name(task)
        write_text_atomic(folder / page, _PAGE.render(
            title=f"{task}: worst and most uncertain examples", subtitle=facts.task_title(task) or task,
            rows=rows, notes=NOTES, generated=stamp, back=f"../{report.name}"), what="a page of examples")
        links[task] = f"{folder_name}/{page}"
    return links
