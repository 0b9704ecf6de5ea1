"""`harness bench`: how fast the encoder runs on this machine, measured against the machine itself. This
module runs the measurements (each in a child process) and the command; `bench_peak` (the matmul peak and the
timer), `bench_encoder` (the models timed), `bench_costs` (`--runs`) and `bench_report` (targets, the printed
table) do the rest.

- The float32 (and bfloat16) matmul peak is measured in the same run: the best sustained rate over a few
  timed rounds of a square matmul by every library on hand (a jitted `jnp.dot`, numpy's BLAS, and with
  `--compare hf` `torch.mm`): XLA's own dot runs below what a BLAS gets from the same cores, and a peak
  from it alone would flatter both the encoder and the torch model (which then ran "above peak").
  Achieved GFLOP/s of the encoder are the analytic FLOPs of `harness.models.variants.Shape.gflops`
  (2 x multiply-adds) times images/s, and are quoted as % of that peak.
- Every (variant, dtype) runs in a fresh child process, so its peak RSS (the kernel's `ru_maxrss` of that
  child, via wait4) is the cost of that model alone: parameters are built with `jax.eval_shape` and filled
  leaf by leaf from numpy (a jitted init of So400m would peak at 4.6 GB), layers are scanned, and compile
  time is `lower` + `compile` of the forward for one batch shape.
- `--cpu-devices 1,2`: the encoder also on N XLA CPU devices (`harness.scale.runtime.use_cpu_devices`), each
  batch split over them as `Encoder.features` does on a mesh (replicated params: N copies in host RAM).
- `--repeats N`: every child N times, ours and theirs interleaved; the fastest of each is reported (the
  spread is in the JSON), the largest peak RSS of any.
- `--compare hf`: the same shape as a Hugging Face `SiglipVisionModel` in PyTorch (random init, eval, no
  grad, SDPA attention), timed the same way in its own child; the ratio is ours / theirs.
- `--runs DIR`: the end-to-end cost of each task from result records' timings, and what the feature
  cache saved (a cache hit costs its read; the same key's cold extraction is the price it avoided).
- MFU: achieved FLOP/s over the device's published dense bfloat16 peak (`bench_peak.DEVICE_PEAKS`) on an
  accelerator, over the measured matmul peak (the best dtype's) on a CPU. `--csv FILE` writes the rows in
  the columns of timm's `benchmark.py` (`bench_report.TIMM_COLUMNS`) plus precision, MFU and device, so a row
  compares with timm's published `benchmark-infer-*.csv`.
- `--pipeline`, `--end-to-end`: the input pipeline on real-format files and the whole extraction
  (`bench_pipeline`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax

from harness.errors import HarnessError
from harness.files import write_json_atomic
from harness.models.variants import decode_variant
from harness.scale.runtime import use_cpu_devices
from harness.tools.bench_costs import suite_costs
from harness.tools.bench_encoder import measure_encoder, measure_hf
from harness.tools.bench_peak import device_peak
from harness.tools.bench_peak import peaks as matmul_peaks
from harness.tools.bench_pipeline import end_to_end_rows, pipeline_rows
from harness.tools.bench_report import check_targets, format_report, machine_info, write_csv

DEFAULT_VARIANTS = ("So400m/14", "So150m/14")
DEFAULT_BATCHES = (1, 8)
DEFAULT_DTYPES = ("float32", "bfloat16")


# ----------------------------------------------------------------------------------- orchestration
def _child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec["impl"] != "hf":
        use_cpu_devices(spec.get("cpu_devices", 1))  # before jax starts its backends
    kw = dict(min_seconds=spec["min_seconds"], overrides=spec.get("overrides"))
    if spec["impl"] == "hf":
        rows = measure_hf(spec["variant"], spec["res"], spec["batches"], spec["dtype"], **kw)
    else:
        rows = measure_encoder(spec["variant"], spec["res"], spec["batches"], spec["dtype"], scan=spec["scan"], **kw)
    print("BENCH_JSON " + json.dumps(rows))


def _popen_wait4(args, env, timeout_s):
    """Popen + wait4 on the child itself (ru_maxrss of that one process, not RUSAGE_CHILDREN)."""
    # The child's working directory is the one holding this `harness` package: `python -m` puts its cwd
    # first on sys.path, and the child must measure the same code as its parent.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2])
    chunks = {"out": [], "err": []}

    def pump(stream, key):
        for line in stream:
            chunks[key].append(line)

    threads = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            os.wait4(proc.pid, 0)
            raise TimeoutError
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, "".join(chunks["out"]), "".join(chunks["err"]), usage.ru_maxrss * 1024 / 1e9


def run_child(spec: dict, timeout_s: float = 1800) -> list[dict]:
    """One measurement in a fresh interpreter; its rows carry that process's peak RSS in GB."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        code, out, err, peak_gb = _popen_wait4([sys.executable, "-m", "harness.tools.bench", json.dumps(spec)], env,
                                               timeout_s)
    except TimeoutError:
        raise HarnessError(f"bench of {spec['variant']} ({spec['impl']}) took over {timeout_s:.0f}s; "
                           "use a smaller --variants / --batches") from None
    if code:
        tail = (err.strip().splitlines() or ["(no output)"])[-1]
        raise HarnessError(f"bench of {spec['variant']} ({spec['impl']}, {spec['dtype']}) failed: {tail}")
    line = [ln for ln in out.splitlines() if ln.startswith("BENCH_JSON ")][-1]
    rows = json.loads(line[len("BENCH_JSON "):])
    for r in rows:
        r["peak_rss_gb"] = peak_gb
    return rows


def _best_of_repeats(rows: list[dict]) -> list[dict]:
    """One row per measurement (impl, variant, batch, dtype, devices): the fastest repeat's, with the
    largest peak RSS of any repeat (the memory figure must hold every time) and the repeat count."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["impl"], r["variant"], r["batch"], r["dtype"], r.get("cpu_devices")), []).append(r)
    out = []
    for same in groups.values():
        best = dict(max(same, key=lambda r: r["images_per_s"]))
        rss = [r["peak_rss_gb"] for r in same if r.get("peak_rss_gb") is not None]
        best["peak_rss_gb"] = max(rss) if rss else None
        best["repeats"] = len(same)
        best["images_per_s_repeats"] = [r["images_per_s"] for r in same]
        out.append(best)
    return out


def run_bench(variants=DEFAULT_VARIANTS, res=(224,), batches=DEFAULT_BATCHES, dtypes=DEFAULT_DTYPES, *,
              compare: str | None = None, scan: bool = True, min_seconds: float = 2.0, peak_n: int = 2048,
              overrides: dict | None = None, cpu_devices=(1,), repeats: int = 1, progress=print) -> dict:
    """Every measurement of the issue, as one JSON-able dict (see the module docstring)."""
    if compare not in (None, "hf"):
        raise HarnessError(f"--compare {compare!r}: only 'hf' (Hugging Face SiglipVisionModel) is known")
    if compare == "hf":
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError:
            raise HarnessError("--compare hf needs PyTorch and transformers: `pip install torch==2.13.0 "
                               "transformers` into this virtualenv") from None
    for v in variants:
        decode_variant(v)
    bad = [d for d in dtypes if d not in DEFAULT_DTYPES]
    if bad:
        raise HarnessError(f"dtype {bad[0]!r} is not one of {', '.join(DEFAULT_DTYPES)}")
    if repeats < 1:
        raise HarnessError(f"--repeats {repeats}: give a positive integer")
    if not batches or any(int(b) < 1 for b in batches):
        raise HarnessError(f"batch sizes {list(batches)}: give positive integers, e.g. --batches 1,8")

    progress(f"matmul peak ({peak_n} and {2 * peak_n} square) ...")
    peaks = matmul_peaks(peak_n, min_seconds, torch=compare == "hf")
    res_list = [res] if isinstance(res, int) else list(res)
    rows: list[dict] = []
    for v, px, d in ((v, px, d) for v in variants for px in res_list for d in dtypes):
        base = dict(variant=v, res=px, batches=list(batches), dtype=d, scan=scan, min_seconds=min_seconds,
                    overrides=overrides)
        ours, theirs = [], []
        for rep in range(repeats):  # interleaved, so that a slow spell of the machine hits both sides
            tag = f" (repeat {rep + 1}/{repeats})" if repeats > 1 else ""
            for n in cpu_devices:
                progress(f"{v} {px} px {d}: harness" + (f" on {n} CPU devices" if n > 1 else "") + f"{tag} ...")
                ours += run_child({**base, "impl": "harness", "cpu_devices": n})
            if compare == "hf":
                progress(f"{v} {px} px {d}: hf{tag} ...")
                theirs += run_child({**base, "impl": "hf"})
        ours, theirs = _best_of_repeats(ours), _best_of_repeats(theirs)
        for row in ours:
            match = [t for t in theirs if t["batch"] == row["batch"]]
            if match:
                row["hf_images_per_s"] = match[0]["images_per_s"]
                row["speedup_vs_hf"] = row["images_per_s"] / match[0]["images_per_s"]
        rows += ours + theirs
    # Peaks again at the end; the percentages use the higher of the two, so that a machine that was busy
    # at one of the two moments cannot inflate them.
    peaks_after = matmul_peaks(peak_n, min_seconds, torch=compare == "hf")
    best = {d: max(peaks[d]["gflops_per_s"], peaks_after[d]["gflops_per_s"]) for d in peaks}
    device = device_info(best)
    for r in rows:
        r["pct_of_float32_peak"] = 100 * r["achieved_gflops_per_s"] / best["float32"]
        r["pct_of_dtype_peak"] = 100 * r["achieved_gflops_per_s"] / best[r["dtype"]]
        r["device"] = device["kind"]
        if r["impl"].startswith("harness"):  # the other side may run elsewhere (torch on the host's CPU)
            r["mfu"] = r["achieved_gflops_per_s"] / device["peak_gflops_per_s"]
    return {"schema": "sovit-harness-bench/1", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_info(), "jax": jax.__version__, "device": device, "matmul_peak": peaks,
            "matmul_peak_after": peaks_after, "peak_gflops_per_s": best, "rows": rows, "targets": check_targets(rows)}


def device_info(measured: dict) -> dict:
    """The device the encoder ran on and the peak its MFU is quoted against: the published dense bf16 peak of
    an accelerator, the best measured matmul rate (any dtype) of a CPU."""
    dev = jax.devices()[0]
    kind = dev.device_kind if dev.platform != "cpu" else f"cpu: {machine_info()['cpu'] or dev.device_kind}"
    published = device_peak(dev.device_kind) if dev.platform != "cpu" else None
    if published:
        return {"platform": dev.platform, "kind": kind, "peak_gflops_per_s": published[0] * 1e3,
                "peak_source": published[1]}
    if dev.platform != "cpu":
        raise HarnessError(f"no published bf16 peak for device {dev.device_kind!r}: add it to "
                           "harness/tools/bench_peak.py DEVICE_PEAKS with its datasheet")
    return {"platform": dev.platform, "kind": kind, "peak_gflops_per_s": max(measured.values()),
            "peak_source": "measured matmul peak of this host (best dtype)"}


def bench_command(*, variants, res, batches, dtypes, compare=None, scan=True, min_seconds=2.0, runs=None,
                  out=None, csv=None, peak_n=2048, encoder=True, overrides=None, cpu_devices=(1,), repeats=1,
                  pipeline=False, end_to_end=False, data_dir=None, dataset="imagenet2012", split="validation",
                  num_images=None, pipeline_batch=64, echo=print, note=print) -> dict:
    """What `harness bench` does: encoder measurements (unless `encoder=False`), the pipeline and the whole
    extraction on real-format files, suite costs from `runs`, a printed report, the JSON at `out`, the CSV
    rows at `csv`."""
    res_list = [res] if isinstance(res, int) else list(res)
    if csv and not encoder:
        raise HarnessError("--csv writes the encoder rows: drop --no-encoder")
    result: dict[str, Any] = {}
    if encoder:
        result = run_bench(variants, res_list, batches, dtypes, compare=compare, scan=scan, min_seconds=min_seconds,
                           peak_n=peak_n, overrides=overrides, cpu_devices=cpu_devices, repeats=repeats,
                           progress=note)
    where = dict(dataset=dataset, split=split, data_dir=data_dir, num_examples=num_images, batch_size=pipeline_batch,
                 progress=note)
    if pipeline:
        result["pipeline"] = pipeline_rows(res_list, **where)
    if end_to_end:
        result["end_to_end"] = [row for v in variants for d in dtypes
                                for row in end_to_end_rows(v, res_list, d, overrides=overrides, **where)]
    if runs:
        result["suite"] = suite_costs(runs)
    if not result:
        raise HarnessError("nothing to measure: drop --no-encoder, or give --pipeline, --end-to-end or --runs DIR")
    result.setdefault("machine", machine_info())
    echo(format_report(result))
    if out:
        write_json_atomic(out, result)
    if csv:
        write_csv(csv, result["rows"])
    return result


if __name__ == "__main__":
    _child_main(sys.argv[1])
