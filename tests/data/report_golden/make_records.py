"""Writes the fixed result records (and a baseline) that tests/test_report.py renders into golden files.

Run once; the outputs are committed. Values are made up but shaped like real proxy runs: two proxy
checkpoints, few-shot (4 shots x 3 seeds on two proxy datasets), VQA and captioning with per-example
scores, one linear-probe record, and an older few-shot record that a newer one must override.

    .venv/bin/python tests/data/report_golden/make_records.py
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV = {"python": "3.11.7", "platform": "Linux-x86_64", "libraries": {"jax": "0.10.2", "flax": "0.12.8"},
       "devices": ["cpu:cpu"]}
CKPTS = {
    "sovit_proxy.npz": {"spec": "runs/pretrain/sovit_proxy.npz", "sha256": "5a" * 32, "params_m": 1.9, "gflops": 0.12,
                        "config": {"variant": None, "width": 96, "depth": 6, "mlp_dim": 384, "num_heads": 4,
                                   "patch_size": 8, "pool_type": "map", "posemb": "learn", "res": 64}},
    "vit_b_proxy.npz": {"spec": "runs/pretrain/vit_b_proxy.npz", "sha256": "b7" * 32, "params_m": 1.6, "gflops": 0.10,
                        "config": {"variant": None, "width": 128, "depth": 4, "mlp_dim": 256, "num_heads": 4,
                                   "patch_size": 8, "pool_type": "map", "posemb": "learn", "res": 64}},
}


# The task versions of the installed tasks, so that these records are current (an older version is
# flagged by the report as made under another protocol).
VERSIONS = {"fewshot": "1", "vqa": "2", "coco_captioning": "2", "linear_probe": "2"}


def record(task, ckpt, created, metrics, per_example=None, preset="proxy", config_hash="0" * 16):
    m = {}
    for name, (value, hib, unit) in metrics.items():
        m[name] = {"value": value, "higher_is_better": hib, "unit": unit}
    return {
        "schema_version": 1,
        "harness": {"version": "0.1.0", "git_commit": "0" * 40},
        "created": created,
        "task": {"name": task, "version": VERSIONS[task], "preset": preset, "config": {}, "config_hash": config_hash},
        "checkpoint": {"name": ckpt, **CKPTS[ckpt]},
        "datasets": [],
        "metrics": m,
        "per_example": per_example or {},
        "artifacts": {},
        "info": {},
        "seeds": [0, 1, 2],
        "timings": {"total_seconds": 12.5},
        "environment": ENV,
    }


def fewshot(ckpt, created, table):
    """table: {dataset: {shots: (seed0, seed1, seed2)}} -> mean, population std, per-seed metrics."""
    metrics = {}
    for ds, by_k in table.items():
        for k, seeds in by_k.items():
            base = f"fewshot/{ds}/{k}shot"
            mean = sum(seeds) / 3
            std = (sum((s - mean) ** 2 for s in seeds) / 3) ** 0.5
            metrics[base] = (mean, True, "%")
            metrics[base + "/std"] = (std, False, "%")
            for s, v in enumerate(seeds):
                metrics[f"{base}/seed-{s}"] = (v, True, "%")
    return record("fewshot", ckpt, created, metrics, config_hash="f1" * 8)


def vqa_scores(pattern, n):
    """Per-question VQA accuracies x100 (0, 30, 60, 90, 100) cycling through `pattern`."""
    return [float(pattern[i % len(pattern)]) for i in range(n)]


def mean(xs):
    return sum(xs) / len(xs)


def main():
    out = HERE / "records"
    out.mkdir(exist_ok=True)
    recs = {}
    recs["fewshot_sovit_old"] = fewshot("sovit_proxy.npz", "2025-01-01T09:00:00+00:00", {
        "proxy_scenes": {10: (50.0, 51.0, 52.0)}})
    recs["fewshot_sovit"] = fewshot("sovit_proxy.npz", "2025-01-02T10:00:00+00:00", {
        "proxy_scenes": {1: (31.5, 30.25, 33.0), 5: (52.0, 53.5, 51.25), 10: (61.0, 62.5, 60.75),
                         25: (70.25, 71.0, 69.5)},
        "proxy_digits": {1: (40.0, 42.5, 38.75), 5: (71.25, 70.0, 72.5), 10: (80.0, 81.25, 79.5),
                         25: (88.75, 89.5, 88.0)}})
    recs["fewshot_vitb"] = fewshot("vit_b_proxy.npz", "2025-01-02T11:00:00+00:00", {
        "proxy_scenes": {1: (29.0, 28.5, 30.0), 5: (49.75, 50.5, 48.0), 10: (58.5, 59.0, 57.25),
                         25: (68.0, 67.25, 68.5)},
        "proxy_digits": {1: (41.0, 39.5, 40.25), 5: (69.0, 68.75, 70.5), 10: (81.5, 80.75, 82.0),
                         25: (87.5, 88.25, 87.0)}})
    for key, ckpt, pattern, created in (("vqa_sovit", "sovit_proxy.npz", (100, 90, 0, 60, 100, 30, 100, 0), "2025-01-02T12:00:00+00:00"),
                                        ("vqa_vitb", "vit_b_proxy.npz", (100, 0, 0, 60, 100, 30, 90, 0), "2025-01-02T12:30:00+00:00")):
        acc = vqa_scores(pattern, 40)
        yes_no = acc[:16]
        recs[key] = record("vqa", ckpt, created, {
            "vqa/proxy_scenes/accuracy": (mean(acc), True, "%"),
            "vqa/proxy_scenes/yes_no": (mean(yes_no), True, "%"),
            "vqa/proxy_scenes/number": (55.0 if ckpt.startswith("sovit") else 52.5, True, "%"),
        }, per_example={"vqa/proxy_scenes/accuracy": acc}, config_hash="a2" * 8)
    cider = [0.12, 0.85, 0.40, 0.05, 1.35, 0.60, 0.22, 0.91, 0.33, 0.48, 0.0, 0.75, 0.18, 0.66, 1.02, 0.29,
             0.44, 0.58, 0.09, 0.81]
    rouge = [0.31, 0.52, 0.44, 0.20, 0.71, 0.49, 0.35, 0.58, 0.40, 0.47, 0.12, 0.55, 0.30, 0.50, 0.63, 0.38,
             0.45, 0.48, 0.25, 0.57]
    logppl = [2.91, 2.40, 2.75, 3.10, 2.05, 2.60, 2.88, 2.35, 2.70, 2.62, 3.35, 2.50, 2.95, 2.55, 2.20, 2.80,
              2.66, 2.58, 3.05, 2.44]
    recs["coco_sovit"] = record("coco_captioning", "sovit_proxy.npz", "2025-01-02T13:00:00+00:00", {
        "coco_captioning/cider": (mean(cider), True, "raw"),
        "coco_captioning/bleu4": (0.1875, True, "raw"),  # corpus BLEU-4: not the mean of per-example scores
        "coco_captioning/rouge_l": (mean(rouge), True, "raw"),
        "coco_captioning/log_perplexity": (mean(logppl), False, "nats"),
    }, per_example={"coco_captioning/cider": cider, "coco_captioning/rouge_l": rouge,
                    "coco_captioning/log_perplexity": logppl,
                    "coco_captioning/bleu4": [0.1, 0.2, 0.3, 0.25]}, config_hash="c3" * 8)
    recs["linear_probe_vitb"] = record("linear_probe", "vit_b_proxy.npz", "2025-01-02T14:00:00+00:00", {
        "linear_probe/proxy_digits/val": (91.25, True, "%")}, config_hash="d4" * 8)
    for key, rec in recs.items():
        (out / f"{key}.json").write_text(json.dumps(rec, indent=2) + "\n")

    # A hand-written baseline of the SoViT proxy: slightly different numbers, so deltas are not zero.
    baseline = {
        "schema": "sovit-harness-baseline/1",
        "created": "2024-12-20T08:00:00+00:00",
        "checkpoint": {"name": "sovit_proxy.npz", "spec": "runs/pretrain/sovit_proxy.npz", "sha256": "5a" * 32},
        "tasks": {"fewshot": {"preset": "proxy", "config_hash": "f1" * 8, "version": "1"}},
        "metrics": {
            "fewshot/proxy_scenes/10shot": {"value": 60.0, "higher_is_better": True, "unit": "%"},
            "fewshot/proxy_digits/10shot": {"value": 81.5, "higher_is_better": True, "unit": "%", "tolerance": 2.0},
            "vqa/proxy_scenes/accuracy": {"value": 60.0, "higher_is_better": True, "unit": "%",
                                          "ci95": [48.0, 71.0]},
            "coco_captioning/cider": {"value": 0.5, "higher_is_better": True, "unit": "raw"},
            "coco_captioning/log_perplexity": {"value": 2.75, "higher_is_better": False, "unit": "nats"},
        },
    }
    (HERE / "baseline.json").write_text(json.dumps(baseline, indent=2) + "\n")


if __name__ == "__main__":
    main()
