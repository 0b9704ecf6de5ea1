"""`harness bench`'s figures checked against the issue's targets, printed as Markdown, and written as CSV rows
in the columns of timm's `benchmark.py`."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from harness import cpu_core_count
from harness.files import atomic_file

# timm's benchmark.py (huggingface/pytorch-image-models): the inference columns it writes, in its order
# (`infer_macts`, fvcore's activation count, is not computed here), then ours. Its samples/s is the images of
# the timed steps over their wall time, its step time the mean per step in ms, its GMACs the multiply-adds of
# one image, its param_count in millions; here images/s is the best of three timed rounds, and GMACs are
# `Shape.gflops` / 2 (So400m/14 at 224: 110.18, timm's fvcore count 110.26; params 427.68 both).
TIMM_COLUMNS = ("model", "infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size",
                "infer_gmacs", "param_count")
EXTRA_COLUMNS = ("precision", "mfu", "device")
# Issue 27's goals (benchmarks, not tests): MFU of So400m/14 bf16 at 224 px, batch 256, on an accelerator;
# the host pipeline against the best-practice tf.data one on the same files and pp; the extraction against
# the slower of its pipeline and its encoder.
GOALS = {"mfu": 0.60, "pipeline_ratio": 0.90, "overlap": 0.90}

# The targets on the 2-core CPU: (row filter, field, comparison, bound).
TARGETS = {
    "pct_of_float32_peak": (">=", 90.0, "batch 8, float32"),
    "speedup_vs_hf": (">=", 1.15, "batch 8, float32"),
    "compile_seconds": ("<=", 5.0, "So400m/14, scanned"),
    "peak_rss_gb": ("<=", 2.6, "So400m/14"),
}


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": cpu_core_count(), "load_average": load}


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, each checked on the rows it is about (missing rows: not measured)."""
    out = []
    ours = [r for r in rows if r["impl"].startswith("harness")]

    def add(name, pick, field):
        op, bound, about = TARGETS[name]
        for r in pick:
            v = r.get(field)
            if v is None:
                continue
            ok = v >= bound if op == ">=" else v <= bound
            out.append({"target": name, "about": about, "variant": r["variant"], "batch": r["batch"],
                        "dtype": r["dtype"], "cpu_devices": r.get("cpu_devices", 1), "value": v,
                        "bound": f"{op} {bound}", "met": bool(ok)})

    b8 = [r for r in ours if r["batch"] == 8 and r["dtype"] == "float32"]
    add("pct_of_float32_peak", b8, "pct_of_float32_peak")
    add("speedup_vs_hf", b8, "speedup_vs_hf")
    so400 = [r for r in ours if r["variant"].startswith("So400m")]
    add("compile_seconds", [r for r in so400 if r.get("scan")], "compile_seconds")
    seen = set()
    for r in so400:  # one RSS per child: (variant, dtype, CPU devices)
        key = (r["variant"], r["dtype"], r.get("cpu_devices", 1))
        if key not in seen:
            seen.add(key)
            add("peak_rss_gb", [r], "peak_rss_gb")
    return out


def csv_rows(rows: list[dict]) -> list[dict]:
    """The encoder rows in timm's columns (and precision, MFU, device)."""
    out = []
    for r in rows:
        model = r["variant"] if r["impl"].startswith("harness") else f"{r['variant']} [{r['impl']}]"
        if r.get("cpu_devices", 1) > 1:
            model += f" [{r['cpu_devices']} CPU devices]"
        mfu = r.get("mfu")
        out.append({"model": model, "infer_samples_per_sec": round(r["images_per_s"], 2),
                    "infer_step_time": round(1000 * r["seconds_per_batch"], 3), "infer_batch_size": r["batch"],
                    "infer_img_size": r["res"], "infer_gmacs": round(r["gflops_per_image"] / 2, 2),
                    "param_count": round(r["params_m"], 2), "precision": r["dtype"],
                    "mfu": "" if mfu is None else round(mfu, 4), "device": r.get("device", "")})
    return out


def write_csv(path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TIMM_COLUMNS + EXTRA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(rows))
    with atomic_file(path, "w", what="--csv") as f:
        f.write(buf.getvalue())


def goals(result: dict) -> list[dict]:
    """Issue 27's goals on the rows that measure them (none measured: none listed)."""
    out = []
    for r in result.get("rows", []):
        if (r["impl"].startswith("harness") and r["variant"] == "So400m/14" and r["res"] == 224 and r["batch"] == 256
                and r["dtype"] == "bfloat16" and r.get("mfu") is not None
                and not str(r.get("device", "")).startswith("cpu")):
            out.append({"goal": "MFU, So400m/14 bf16 224 px b256", "value": r["mfu"], "bound": GOALS["mfu"]})
    for p in result.get("pipeline", []):
        out.append({"goal": f"host pipeline / tf.data reference, {p['res']} px, {p['output']}", "value": p["ratio"],
                    "bound": GOALS["pipeline_ratio"]})
    for e in result.get("end_to_end", []):
        what = f"{e['variant']} {e['res']} px {e['dtype']}"
        if e.get("host_bound"):  # the encoder on the pipeline's own cores: the serial rate is the ceiling
            out.append({"goal": f"extraction / serial rate (CPU: both stages share the cores), {what}",
                        "value": e["of_serial"], "bound": GOALS["overlap"]})
        else:
            out.append({"goal": f"extraction / slower stage, {what}", "value": e["overlap"], "bound": GOALS["overlap"]})
    for g in out:
        g["met"] = g["value"] >= g["bound"]
    return out


def format_report(result: dict) -> str:
    lines = []
    if "rows" in result:
        p = result["matmul_peak"]
        m = result["machine"]
        lines.append(f"machine: {m['cpu']} ({m['cores']} cores), load average at start "
                     f"{', '.join(f'{x:.1f}' for x in m['load_average'] or [])}")
        def peak_text(peaks, unit=""):
            return ", ".join(f"{d} {v['gflops_per_s']:.1f}{unit} ("
                             + "/".join(f"{i} {g:.0f}" for i, g in v.get("by_impl", {}).items()) + ")"
                             for d, v in peaks.items())

        lines.append(f"matmul peak: {peak_text(p, ' GFLOP/s')}; after: {peak_text(result['matmul_peak_after'])}")
        dev = result.get("device") or {}
        if dev:
            lines.append(f"device: {dev['kind']}; MFU against {dev['peak_gflops_per_s'] / 1e3:.4g} TFLOP/s "
                         f"({dev['peak_source']})")
        lines.append("")
        lines.append("| impl | variant | res | batch | dtype | attention | images/s | GFLOP/s | MFU % | % fp32 peak | "
                     "% dtype peak | compile s | peak RSS GB | vs HF |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in result["rows"]:
            comp = f"{r['compile_seconds']:.2f}" if "compile_seconds" in r else "-"
            vs = f"{r['speedup_vs_hf']:.2f}x" if "speedup_vs_hf" in r else "-"
            rss = f"{r['peak_rss_gb']:.2f}" if r.get("peak_rss_gb") is not None else "-"
            mfu = f"{100 * r['mfu']:.1f}" if r.get("mfu") is not None else "-"
            lines.append(f"| {r['impl']} | {r['variant']} | {r['res']} | {r['batch']} | {r['dtype']} | "
                         f"{r.get('attention', '-')} | {r['images_per_s']:.2f} | {r['achieved_gflops_per_s']:.1f} | "
                         f"{mfu} | {r['pct_of_float32_peak']:.1f} | {r['pct_of_dtype_peak']:.1f} | {comp} | {rss} | "
                         f"{vs} |")
        if result["targets"]:
            lines.append("")
            for t in result["targets"]:
                v = t["value"]
                devices = f", {t['cpu_devices']} CPU devices" if t.get("cpu_devices", 1) > 1 else ""
                lines.append(f"{'met ' if t['met'] else 'MISS'}  {t['target']} ({t['about']}; {t['variant']} "
                             f"b{t['batch']} {t['dtype']}{devices}): {v:.3g} {t['bound']}")
    if result.get("pipeline"):
        lines.append("")
        lines.append(f"input pipeline ({result['pipeline'][0]['host_cores']} host cores; images/s, and per core):")
        lines.append("| res | output | harness | per core | tf.data reference | per core | ratio |")
        lines.append("|---|---|---|---|---|---|---|")
        for p in result["pipeline"]:
            lines.append(f"| {p['res']} | {p['output']} | {p['harness_images_per_s']:.1f} | {p['harness_per_core']:.1f} | "
                         f"{p['reference_images_per_s']:.1f} | {p['reference_per_core']:.1f} | {p['ratio']:.2f} |")
    if result.get("end_to_end"):
        lines.append("")
        lines.append("end to end (pipeline + encoder + feature cache; images/s):")
        lines.append("| variant | res | dtype | batch | images | pipeline | encoder | serial | extraction | overlap | "
                     "of serial |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for e in result["end_to_end"]:
            lines.append(f"| {e['variant']} | {e['res']} | {e['dtype']} | {e['batch']} | {e['images']} | "
                         f"{e['pipeline_images_per_s']:.1f} | {e['encoder_images_per_s']:.1f} | "
                         f"{e['serial_images_per_s']:.1f} | {e['end_to_end_images_per_s']:.1f} | {e['overlap']:.2f} | "
                         + (f"{e['of_serial']:.2f} |" if "of_serial" in e else "- |"))
    met = goals(result)
    if met:
        lines.append("")
        for g in met:
            lines.append(f"{'met ' if g['met'] else 'MISS'}  goal: {g['goal']}: {g['value']:.3g} >= {g['bound']}")
    if "suite" in result:
        s = result["suite"]
        lines.append("")
        lines.append(f"records in {s['runs']}: suite total {s['suite_total_seconds']:.1f} s")
        lines.append("| task | preset | total s | load s | extract s | images encoded | images from cache |")
        lines.append("|---|---|---|---|---|---|---|")
        for t in s["tasks"]:
            f = (lambda x: "-" if x is None else f"{x:.1f}")
            lines.append(f"| {t['task']} | {t['preset'] or '-'} | {f(t['total_seconds'])} | {f(t['load_seconds'])} | "
                         f"{f(t['extract_seconds'])} | {t['images_encoded']} | {t['images_from_cache']} |")
        lines.append(f"feature cache: {s['cache_hits']} hits, {s['cache_saved_seconds']:.1f} s saved "
                     f"({s['cache_hits_with_cold_record']} hits with a cold extraction on record)")
    return "\n".join(lines)
