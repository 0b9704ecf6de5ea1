"""`harness bench`'s figures checked against the issue's targets, and printed as Markdown."""

from __future__ import annotations

import os
from pathlib import Path

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
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "load_average": load}


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
        lines.append("")
        lines.append("| impl | variant | res | batch | dtype | images/s | GFLOP/s | % fp32 peak | % dtype peak | "
                     "compile s | peak RSS GB | vs HF |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in result["rows"]:
            comp = f"{r['compile_seconds']:.2f}" if "compile_seconds" in r else "-"
            vs = f"{r['speedup_vs_hf']:.2f}x" if "speedup_vs_hf" in r else "-"
            rss = f"{r['peak_rss_gb']:.2f}" if r.get("peak_rss_gb") is not None else "-"
            lines.append(f"| {r['impl']} | {r['variant']} | {r['res']} | {r['batch']} | {r['dtype']} | "
                         f"{r['images_per_s']:.2f} | {r['achieved_gflops_per_s']:.1f} | "
                         f"{r['pct_of_float32_peak']:.1f} | {r['pct_of_dtype_peak']:.1f} | {comp} | {rss} | {vs} |")
        if result["targets"]:
            lines.append("")
            for t in result["targets"]:
                v = t["value"]
                devices = f", {t['cpu_devices']} CPU devices" if t.get("cpu_devices", 1) > 1 else ""
                lines.append(f"{'met ' if t['met'] else 'MISS'}  {t['target']} ({t['about']}; {t['variant']} "
                             f"b{t['batch']} {t['dtype']}{devices}): {v:.3g} {t['bound']}")
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
