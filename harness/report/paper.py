"""The paper's published numbers (`harness/assets/paper.json`), as record-shaped rows for reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness import ASSETS
from harness.errors import HarnessError

PAPER_ROWS_PATH = ASSETS / "paper.json"
PAPER_SCHEMA = "sovit-harness-paper/1"

_PAPER_CACHE: dict[str, dict] = {}


def paper_doc(path: str | Path | None = None) -> dict:
    """paper.json, read once per process."""
    path = Path(path or PAPER_ROWS_PATH)
    key = str(path)
    if key not in _PAPER_CACHE:
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise HarnessError(f"{path}: cannot read the paper's rows ({e}); restore harness/assets/paper.json "
                               "from the repository") from None
        if doc.get("schema") != PAPER_SCHEMA:
            raise HarnessError(f"{path}: not a paper-rows file (schema {doc.get('schema')!r}, expected "
                               f"{PAPER_SCHEMA!r}); restore harness/assets/paper.json from the repository")
        _PAPER_CACHE[key] = doc
    return _PAPER_CACHE[key]


def task_titles() -> dict[str, str]:
    """Titles of the paper's tasks that the harness has no task for (e.g. panoptic segmentation); {} when
    paper.json cannot be read (a caption is not worth failing a report over: asking for the paper's rows
    names the problem)."""
    try:
        doc = paper_doc()
    except HarnessError:
        return {}
    return {name: t["title"] for name, t in (doc.get("tasks") or {}).items() if t.get("title")}


def load_paper_rows(path: str | Path | None = None) -> list[dict]:
    """The paper's published numbers as record-shaped dicts: `checkpoint.name`, `metrics`, `source`.

    One dict per (model, table) of harness/assets/paper.json; dicts with one name form one report row.
    CIDEr is on the harness's raw scale (the paper's 125 is 1.25); `printed` keeps the paper's text.
    """
    doc = paper_doc(path)
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
