"""`harness bench` (harness/tools/bench*.py) on tiny models: the arithmetic of every reported figure, the FLOP
count against XLA's own, the child-process RSS, the HF model's shape, and the suite-cost summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.tools import bench, bench_costs, bench_encoder, bench_peak, bench_report

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(width=64, depth=2, mlp_dim=256, num_heads=4, patch_size=8)


def test_matmul_peak_is_flops_over_seconds():
    impls = ["xla", "numpy"]
    try:
        import torch  # noqa: F401
        impls.append("torch")
    except ImportError:
        pass
    for impl in impls:
        p = bench_peak.matmul_peak("float32", n=128, min_seconds=0.01, impl=impl)
        assert p["impl"] == impl and p["gflops_per_s"] == pytest.approx(2 * 128**3 / p["seconds"] / 1e9)
        assert p["gflops_per_s"] > 0.1
    with pytest.raises(HarnessError, match="float32 only"):
        bench_peak.matmul_peak("bfloat16", n=128, impl="numpy")
    # The peak is the best library's: every one measured is listed, the best is the one reported.
    peaks = bench_peak.peaks(64, 0.01)
    assert set(peaks["float32"]["by_impl"]) == {"xla", "numpy"} and set(peaks["bfloat16"]["by_impl"]) == {"xla"}
    for v in peaks.values():
        assert v["gflops_per_s"] == max(v["by_impl"].values()) and v["by_impl"][v["impl"]] == v["gflops_per_s"]


def test_analytic_flops_match_xla_cost_analysis():
    """Shape.gflops counts matmuls (2 x multiply-adds); XLA's count of the unrolled forward adds only the
    elementwise work (LayerNorm, softmax, GELU), a few percent at these sizes."""
    import jax
    import jax.numpy as jnp

    cfg = bench_encoder.encoder_config("Ti/16", 64, "float32", scan=False, **{**TINY, "width": 128, "mlp_dim": 512})
    model, params = bench_encoder.random_params(cfg)
    compiled = jax.jit(lambda p, x: model.apply({"params": p}, x)[1]["pre_logits"]).lower(
        params, jnp.zeros((2, 64, 64, 3))).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    from harness.models.variants import Shape
    analytic = Shape(128, 2, 512, 4, 8, "map").gflops(64) * 1e9 * 2
    assert 1.0 <= cost["flops"] / analytic <= 1.05


def test_random_params_have_the_model_shapes():
    from harness import checkpoints
    from harness.models.encoder import abstract_params

    cfg = bench_encoder.encoder_config("Ti/16", 32, "bfloat16", scan=True, **TINY)
    model, params = bench_encoder.random_params(cfg)
    flat = checkpoints.flatten(params)
    target = abstract_params(model, 32)
    assert set(flat) == set(target)
    for k, t in target.items():
        assert flat[k].shape == t.shape and flat[k].dtype == t.dtype
    w = np.asarray(flat["Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"], np.float32)
    assert w.shape[0] == 2 and 0.015 < w.std() < 0.025  # scanned: leading depth axis; N(0, 0.02)


def test_encoder_rows_are_consistent():
    rows = bench_encoder.measure_encoder("Ti/16", 32, [1, 2], "float32", min_seconds=0.02, overrides=TINY)
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["seconds_per_batch"])
        assert r["achieved_gflops_per_s"] == pytest.approx(r["gflops_per_image"] * r["images_per_s"])
        assert r["compile_seconds"] > 0 and r["scan"] is True
        assert r["params_m"] == pytest.approx(
            __import__("harness.models.variants", fromlist=["Shape"]).Shape(64, 2, 256, 4, 8, "map").num_params(32) / 1e6)


def test_run_bench_in_children_with_peak_rss(tmp_path):
    out = tmp_path / "bench.json"
    res = bench.bench_command(variants=["Ti/16"], res=32, batches=[1, 8], dtypes=["float32"], min_seconds=0.02,
                              peak_n=128, out=str(out), overrides=TINY, cpu_devices=(1, 2), echo=lambda s: None,
                              note=lambda s: None)
    saved = json.loads(out.read_text())
    assert saved["schema"] == "sovit-harness-bench/1" and len(saved["rows"]) == 3
    # The second child really ran on two CPU devices (its own jax.device_count()); batch 1 does not split.
    assert [(r["cpu_devices"], r["batch"]) for r in saved["rows"]] == [(1, 1), (1, 8), (2, 8)]
    peak = max(res["matmul_peak"]["float32"]["gflops_per_s"], res["matmul_peak_after"]["float32"]["gflops_per_s"])
    assert res["peak_gflops_per_s"]["float32"] == peak
    for r in res["rows"]:
        assert 0.05 < r["peak_rss_gb"] < 3.0  # the child's own ru_maxrss: jax + a tiny model
        assert r["pct_of_float32_peak"] == pytest.approx(100 * r["achieved_gflops_per_s"] / peak)
    # Full-size default widths would never run here: the overrides reached the child.
    assert res["rows"][0]["params_m"] < 1.0
    targets = {t["target"] for t in res["targets"]}
    assert targets == {"pct_of_float32_peak"}  # batch 8 float32 only; no So400m row, no HF row
    text = bench_report.format_report(res)
    assert "| harness (jax) | Ti/16 | 32 | 8 | float32 |" in text
    assert "| harness (jax, 2 CPU devices) | Ti/16 | 32 | 8 | float32 |" in text
    assert len([t for t in res["targets"] if t["target"] == "pct_of_float32_peak"]) == 2


def test_extraction_goal_is_the_slower_stage_on_a_device_and_the_serial_rate_on_a_cpu():
    row = dict(variant="So400m/14", res=224, dtype="bfloat16", batch=256, images=3000, pipeline_images_per_s=3000.0,
               encoder_images_per_s=2000.0, serial_images_per_s=1200.0, end_to_end_images_per_s=1900.0,
               overlap=0.95, of_serial=1900 / 1200)
    gpu = bench_report.goals({"end_to_end": [dict(row, host_bound=False)]})
    assert [(g["goal"].split(",")[0], g["value"], g["met"]) for g in gpu] == [("extraction / slower stage", 0.95, True)]
    # On a CPU the two stages share the cores: 1100 images/s is 0.55 of the slower stage but 0.92 of the ceiling.
    cpu_row = dict(row, host_bound=True, end_to_end_images_per_s=1100.0, overlap=0.55, of_serial=1100 / 1200)
    (cpu,) = bench_report.goals({"end_to_end": [cpu_row]})
    assert cpu["goal"].startswith("extraction / serial rate") and cpu["value"] == 1100 / 1200 and cpu["met"]
    assert "| 0.55 | 0.92 |" in bench_report.format_report({"end_to_end": [cpu_row]})


def test_check_targets_met_and_missed():
    rows = [
        dict(impl="harness (jax)", variant="So400m/14", batch=8, dtype="float32", scan=True, compile_seconds=4.0,
             pct_of_float32_peak=91.0, speedup_vs_hf=1.1, peak_rss_gb=2.7),
        dict(impl="harness (jax)", variant="So400m/14", batch=1, dtype="float32", scan=True, compile_seconds=6.0,
             pct_of_float32_peak=50.0, peak_rss_gb=2.7),
    ]
    got = {(t["target"], t["batch"]): t["met"] for t in bench_report.check_targets(rows)}
    assert got == {("pct_of_float32_peak", 8): True, ("speedup_vs_hf", 8): False,
                   ("compile_seconds", 8): True, ("compile_seconds", 1): False, ("peak_rss_gb", 8): False}
    # Each CPU-device count's child has its own RSS check (replicated params: one copy per device).
    two = dict(rows[0], impl="harness (jax, 2 CPU devices)", cpu_devices=2, peak_rss_gb=2.5)
    rss = [(t["cpu_devices"], t["met"]) for t in bench_report.check_targets([dict(rows[0], peak_rss_gb=2.0), two])
           if t["target"] == "peak_rss_gb"]
    assert rss == [(1, True), (2, True)]


def test_repeats_keep_the_fastest_run_and_the_largest_rss():
    row = dict(impl="harness (jax)", variant="Ti/16", batch=8, dtype="float32", cpu_devices=1)
    rows = [dict(row, images_per_s=2.0, peak_rss_gb=1.0, compile_seconds=0.5),
            dict(row, images_per_s=3.0, peak_rss_gb=0.9, compile_seconds=0.7),
            dict(row, cpu_devices=2, images_per_s=4.0, peak_rss_gb=1.5)]
    got = bench._best_of_repeats(rows)
    assert [(r["cpu_devices"], r["images_per_s"], r["peak_rss_gb"], r["repeats"]) for r in got] == [
        (1, 3.0, 1.0, 2), (2, 4.0, 1.5, 1)]
    assert got[0]["compile_seconds"] == 0.7 and got[0]["images_per_s_repeats"] == [2.0, 3.0]


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(HarnessError, match="--repeats 0"):
        bench.run_bench(["Ti/16"], repeats=0, progress=lambda s: None)
    with pytest.raises(HarnessError, match="unknown variant"):
        bench.run_bench(["So401m/14"], progress=lambda s: None)
    with pytest.raises(HarnessError, match="not one of"):
        bench.run_bench(["Ti/16"], dtypes=["float16"], progress=lambda s: None)
    with pytest.raises(HarnessError, match="only 'hf'"):
        bench.run_bench(["Ti/16"], compare="onnx", progress=lambda s: None)
    with pytest.raises(HarnessError, match="nothing to measure"):
        bench.bench_command(variants=[], res=32, batches=[1], dtypes=["float32"], encoder=False)


def test_hf_model_has_the_same_shape():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from harness.models.variants import Shape

    cfg = bench_encoder.encoder_config("Ti/16", 32, "float32", **TINY)
    model = bench_encoder.hf_vision_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == Shape(64, 2, 256, 4, 8, "map").num_params(32)
    rows = bench_encoder.measure_hf("Ti/16", 32, [2], "float32", min_seconds=0.02, overrides=TINY)
    assert rows[0]["images_per_s"] == pytest.approx(2 / rows[0]["seconds_per_batch"])


def test_suite_costs_from_real_records(tmp_path):
    """Two fewshot runs on one encoder and data: the second is served by the feature cache."""
    from harness.models.encoder import load_encoder
    from harness.run.runner import run_task

    ckpt = load_encoder("random:0", **TINY, res=32, pool_type="map").save(str(tmp_path / "tiny.npz"))
    sets = {"datasets": "proxy_digits", "shots": "1", "seeds": "0", "batch_size": "32",
            "max_train_examples": "64", "max_test_examples": "32"}
    kw = dict(out_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", progress=False)
    cold, _, _ = run_task("fewshot", ckpt, sets=sets, **kw)
    warm, _, _ = run_task("fewshot", ckpt, sets={**sets, "l2_reg": "16.0"}, **kw)
    s = bench_costs.suite_costs(tmp_path / "runs")
    assert [t["images_encoded"] for t in s["tasks"]] == [96, 0]
    assert [t["images_from_cache"] for t in s["tasks"]] == [0, 96]
    assert s["cache_hits"] == 2 and s["cache_hits_with_cold_record"] == 2
    cold_s = sum(e["seconds"] for e in cold["info"]["feature_extraction"])
    warm_s = sum(e["seconds"] for e in warm["info"]["feature_extraction"])
    assert s["cache_saved_seconds"] == pytest.approx(cold_s - warm_s)
    assert s["suite_total_seconds"] == pytest.approx(cold["timings"]["total_seconds"]
                                                     + warm["timings"]["total_seconds"])
    from click.testing import CliRunner

    from harness.cli import main
    r = CliRunner().invoke(main, ["bench", "--no-encoder", "--runs", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    assert "| fewshot | - |" in r.output and "2 hits" in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(main, ["bench", "--no-encoder", "--runs", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no result records" in r.output


def test_tune_malloc_in_a_fresh_process():
    # glibc keeps and reuses freed memory on the CPU backend; `HARNESS_MALLOC=system` and other backends
    # leave the allocator alone. In children: mallopt changes the whole process.
    import os
    import subprocess
    import sys

    code = ("import sys; from harness.scale.runtime import tune_malloc; "
            "print(tune_malloc(sys.argv[1] or None), tune_malloc('gpu'))")
    env = {**os.environ, "HARNESS_MALLOC": ""}
    run = lambda backend, **e: subprocess.run([sys.executable, "-c", code, backend], env={**env, **e},  # noqa: E731
                                              capture_output=True, text=True, check=True).stdout.split()
    assert run("") == ["True", "True"]  # jax's default backend here is cpu; the second call is a no-op
    assert run("gpu") == ["False", "False"]
    assert run("", HARNESS_MALLOC="system") == ["False", "False"]

    # What it is for: by default glibc maps a 30 MB request of a fresh process (above its initial 128 KB
    # mmap threshold) and unmaps it on free; tuned, it comes from the heap (which grows by it) and stays
    # there, so the next ten such buffers fault in nothing.
    probe = "\n".join([
        "import ctypes, resource, numpy as np",
        "from harness.scale.runtime import tune_malloc",
        "tune_malloc('cpu')",
        "libc = ctypes.CDLL(None)",
        "libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, [ctypes.c_long]",
        "top0 = libc.sbrk(0)",
        "a = np.empty(30 * 2**20 // 4, np.float32); a.fill(1.0); del a",
        "grown = (libc.sbrk(0) - top0) >> 20",
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt",
        "for _ in range(10):",
        "    a = np.empty(30 * 2**20 // 4, np.float32); a.fill(1.0); del a",
        "print(grown, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)"])
    measure = lambda **e: [int(v) for v in subprocess.run(  # noqa: E731
        [sys.executable, "-c", probe], env={**env, **e}, capture_output=True, text=True, check=True).stdout.split()]
    (grown_default, _), (grown_tuned, faults_tuned) = measure(HARNESS_MALLOC="system"), measure()
    assert grown_default < 25 <= grown_tuned, (grown_default, grown_tuned)
    assert faults_tuned < 10, faults_tuned


def test_use_cpu_devices_before_and_after_jax_starts(tmp_path):
    from harness.scale import runtime

    code = ("from harness.scale.runtime import use_cpu_devices; n = use_cpu_devices('3'); import jax; "
            "print(n, jax.device_count(), jax.devices()[0].platform)")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=5"}  # replaced, not added to
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["3", "3", "cpu"]
    import jax
    jax.devices()  # this process's backend has started, with one CPU device
    assert runtime.use_cpu_devices(1) == 1
    with pytest.raises(HarnessError, match="already running with 1 CPU device"):
        runtime.use_cpu_devices(2)
    for bad in ("0", "two", "-1"):
        with pytest.raises(HarnessError, match="positive integer or 'auto'"):
            runtime.parse_cpu_devices(bad)
    assert runtime.parse_cpu_devices("auto") == runtime.cpu_core_count() >= 1


# ------------------------------------------------------------------------------------ issue 27: the device path
def test_published_peaks_by_device_kind():
    # jax's device_kind strings (CUDA's device names, libtpu's chip names); dense bf16 TFLOP/s.
    kinds = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100 PCIe": 756.0, "NVIDIA H200": 989.0,
             "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100 80GB PCIe": 312.0, "NVIDIA L4": 121.0, "TPU v4": 275.0,
             "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5": 459.0, "TPU v5p": 459.0, "TPU v6 lite": 918.0,
             "NVIDIA H100 NVL": None, "NVIDIA H200 NVL": None, "NVIDIA L40S": None, "cpu": None}
    for kind, tflops in kinds.items():
        got = bench_peak.device_peak(kind)
        assert (got and got[0]) == tflops, kind
        if got:
            assert "https://" in got[1] and ("sparsity" in got[1] or "TPU" in got[1] or "A100" in got[1])


def test_csv_has_timm_benchmark_columns(tmp_path):
    import csv

    rows = bench_encoder.measure_encoder("Ti/16", 32, [2], "float32", min_seconds=0.02, overrides=TINY)
    for r in rows:
        r.update(device="cpu: test", mfu=0.5)
    bench_report.write_csv(tmp_path / "b.csv", rows)
    with open(tmp_path / "b.csv") as f:
        got = list(csv.DictReader(f))
    # timm's benchmark.py writes model, then its `infer_`-prefixed results, then param_count (infer_macts, an
    # fvcore activation count, is not computed here); ours follow.
    assert list(got[0]) == ["model", "infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size",
                            "infer_gmacs", "param_count", "precision", "mfu", "device"]
    r = rows[0]
    assert got[0]["model"] == "Ti/16" and got[0]["infer_batch_size"] == "2" and got[0]["infer_img_size"] == "32"
    assert float(got[0]["infer_samples_per_sec"]) == pytest.approx(r["images_per_s"], abs=0.01)
    assert float(got[0]["infer_step_time"]) == pytest.approx(1000 * r["seconds_per_batch"], abs=1e-3)
    assert float(got[0]["infer_gmacs"]) == pytest.approx(r["gflops_per_image"] / 2, abs=0.01)
    assert got[0]["mfu"] == "0.5" and got[0]["precision"] == "float32"
    # So400m/14 at 224 px, as timm's published vit_so400m_patch14_siglip_224 row counts it: 427.68 M params and
    # 110.26 GMACs (fvcore, which also counts a few non-matmul ops); ours 110.18.
    from harness.models.variants import shape_of

    so400m = shape_of("So400m/14", pool_type="map")
    assert round(so400m.num_params(224) / 1e6, 2) == 427.68
    assert so400m.gflops(224) / 2 == pytest.approx(110.26, rel=2e-3)


def _imagenet_from_photo(root: Path, n: int) -> str:
    """TFDS's own imagenet2012 builder on archives of real-format JPEGs cut from a real photograph."""
    import io
    import tarfile

    import matplotlib.cbook
    import tensorflow_datasets as tfds
    from PIL import Image

    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    manual = root / "manual"
    manual.mkdir(parents=True)

    def jpeg(i):
        buf = io.BytesIO()
        photo.crop((i * 7, i * 3, 400 + i * 7, 480)).resize((500 - 13 * i, 375), Image.BICUBIC).save(
            buf, "JPEG", quality=90 + i % 6)
        return buf.getvalue()

    def add(tar, name, payload):
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(1, n + 1):
            add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", jpeg(i))
    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w") as t:
            add(t, "n01440764_1.JPEG", jpeg(0))
        add(outer, "n01440764.tar", inner.getvalue())
    data_dir = str(root / "tfds")
    tfds.builder("imagenet2012", data_dir=data_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return data_dir


def test_pipeline_and_end_to_end_on_real_format_files(tmp_path):
    from harness import data
    from harness.data.pp import Preprocess
    from harness.tools import bench_pipeline

    data_dir = _imagenet_from_photo(tmp_path, 12)
    assert bench_pipeline.imagenet_pp(224) == "decode|resize_small(256)|central_crop(224)|value_range(-1,1)"
    pp = bench_pipeline.imagenet_pp(64)
    # The reference pipeline computes the same pp on the same files (in its own order).
    ours = np.concatenate([b["image"][b["_mask"]] for b in data.iterate(
        "imagenet2012", "validation", batch_size=5, pp=pp, data_dir=data_dir)])
    ref = np.concatenate(list(bench_pipeline.reference_pipeline("imagenet2012", "validation", pp, 5, data_dir, 12)))
    assert ours.shape == ref.shape == (12, 64, 64, 3)
    key = lambda a: sorted(a.reshape(len(a), -1).tolist())  # noqa: E731
    assert key(ours) == key(ref)
    # One round: the ratio is that round's quotient (with more, the median of the rounds' quotients).
    rows = bench_pipeline.pipeline_rows([64], data_dir=data_dir, batch_size=5, rounds=1, progress=lambda m: None)
    assert [(r["res"], r["output"]) for r in rows] == [(64, "uint8"), (64, "float32")]
    assert str(Preprocess(rows[0]["pp"])) == "decode|resize_small(73)|central_crop(64)"
    for r in rows:
        assert r["images"] == 12 and r["ratio"] == pytest.approx(r["harness_images_per_s"] / r["reference_images_per_s"])
        assert r["harness_per_core"] == pytest.approx(r["harness_images_per_s"] / r["host_cores"])
    (e,) = bench_pipeline.end_to_end_rows("Ti/16", [32], "float32", data_dir=data_dir, batch_size=4,
                                          overrides=TINY, progress=lambda m: None)
    assert e["images"] == 12 and e["compilations"] == 1  # the extraction reused the encoder pass's compilation
    slower = min(e["pipeline_images_per_s"], e["encoder_images_per_s"])
    assert e["overlap"] == pytest.approx(e["end_to_end_images_per_s"] / slower)
    assert e["serial_images_per_s"] < slower
    assert e["host_bound"] and e["of_serial"] == pytest.approx(e["end_to_end_images_per_s"] / e["serial_images_per_s"])


def test_make_jpegs_is_deterministic_and_imagenet_sized():
    pytest.importorskip("skimage")
    import importlib.util
    import io

    from PIL import Image

    spec = importlib.util.spec_from_file_location("make_jpegs", ROOT / "benchmarks" / "make_jpegs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    images = [script.make_jpeg(0, i) for i in range(8)]
    assert images == [script.make_jpeg(0, i) for i in range(8)] and len(set(images)) == 8
    for jpeg in images:
        im = Image.open(io.BytesIO(jpeg))
        assert im.format == "JPEG" and im.mode == "RGB" and 333 <= min(im.size) <= max(im.size) <= 500


def test_bench_res_list_is_checked():
    from click.testing import CliRunner

    from harness.cli import main

    r = CliRunner().invoke(main, ["bench", "--res", "224,x", "--no-encoder", "--pipeline"])
    assert r.exit_code == 2 and "--res 'x'" in r.output
