"""The end-to-end cost of each task from result records' timings, and what the feature cache saved
(`harness bench --runs DIR`)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.report.records import load_records


def _extractions(obj) -> list[dict]:
    """Feature-extraction entries (harness.eval.features stats) anywhere in a record's `info`."""
    found = []
    if isinstance(obj, dict):
        if "cache_key" in obj and "computed_images" in obj:
            return [obj]
        for v in obj.values():
            found += _extractions(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _extractions(v)
    return found


def suite_costs(runs_dir: str | Path) -> dict:
    """Per record: task, preset, total / load / extraction seconds and images encoded; and the feature
    cache's savings: for every hit (an extraction that encoded 0 images) the cold extraction of the same
    key, where the records hold one, minus the hit's own seconds."""
    recs = load_records(runs_dir)
    if not recs:
        raise HarnessError(f"no result records in {runs_dir}; run e.g. `harness run --suite proxy --out {runs_dir}`")
    tasks, cold, hits = [], {}, []
    for rec in sorted(recs, key=lambda r: r.get("created", "")):
        t = rec.get("timings", {})
        ex = _extractions(rec.get("info", {}))
        tasks.append({"task": rec["task"]["name"], "preset": rec["task"].get("preset"),
                      "total_seconds": t.get("total_seconds"), "load_seconds": t.get("load_seconds"),
                      "extract_seconds": sum(e.get("seconds", 0.0) for e in ex) if ex else None,
                      "images_encoded": sum(int(e["computed_images"]) for e in ex),
                      "images_from_cache": sum(int(e["num_examples"]) - int(e["computed_images"]) for e in ex)})
        for e in ex:
            if int(e["computed_images"]) >= int(e["num_examples"]) > 0:
                cold.setdefault(e["cache_key"], e)
            elif int(e["computed_images"]) == 0:
                hits.append(e)
    saved = [{"dataset": h.get("dataset"), "split": h.get("split"), "images": h["num_examples"],
              "hit_seconds": h["seconds"], "cold_seconds": cold[h["cache_key"]]["seconds"],
              "saved_seconds": cold[h["cache_key"]]["seconds"] - h["seconds"]}
             for h in hits if h["cache_key"] in cold]
    return {"runs": str(runs_dir), "tasks": tasks,
            "suite_total_seconds": sum(t["total_seconds"] or 0 for t in tasks),
            "cache_hits": len(hits), "cache_hits_with_cold_record": len(saved),
            "cache_saved_seconds": sum(s["saved_seconds"] for s in saved), "cache_savings": saved}
