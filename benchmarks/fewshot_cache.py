"""Cost of the full few-shot sweep relative to one feature extraction (issue: "at most 1.1x").

    python benchmarks/fewshot_cache.py [--variant S/16] [--res 224] [--dataset proxy_digits] [--out FILE]

Three timings on one dataset (train + test split), each from a fresh state where it says so:
  extract_s  : `harness.eval.features.extract` of both splits into an empty cache (the encoder pass alone);
  task_cold_s: the `fewshot` task, 4 shots x 3 seeds, into another empty cache (extraction + 12 probes);
  task_warm_s: the same task with another l2 setting, features from the cache (12 probes, no encoder).
Reported as ratios to extract_s. The encoder is randomly initialised: cost does not depend on weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="S/16")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--dataset", default="proxy_digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)

    import numpy as np

    from harness import data
    from harness.eval.features import extract
    from harness.models.encoder import load_encoder
    from harness.run.runner import run_task
    from harness.tasks.fewshot import default_pp

    data.require_prepared(args.dataset, args.data_dir)
    tmp = Path(tempfile.mkdtemp(prefix="bench_fewshot_"))
    ckpt = load_encoder("random:0", variant=args.variant, res=args.res, pool_type="map").save(str(tmp / "enc.npz"))
    enc = load_encoder(ckpt)
    info = data.get_info(args.dataset)
    pp = default_pp(args.res)
    enc.features(np.zeros((args.batch_size, args.res, args.res, 3)), ["pre_logits"])  # compile

    t0 = time.perf_counter()
    n = 0
    for role in ("fewshot_train", "fewshot_test"):
        out = extract(enc, args.dataset, info.split(role), pp=pp, cache_dir=tmp / "cache_a", data_dir=args.data_dir,
                      batch_size=args.batch_size, progress=False)
        n += len(out["index"])
    extract_s = time.perf_counter() - t0

    sets = {"datasets": args.dataset, "batch_size": str(args.batch_size)}
    kw = dict(data_dir=args.data_dir, out_dir=tmp / "runs", progress=False, encoder=enc)
    t0 = time.perf_counter()
    run_task("fewshot", ckpt, sets=sets, cache_dir=tmp / "cache_b", **kw)
    task_cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_task("fewshot", ckpt, sets={**sets, "l2_reg": "512.0"}, cache_dir=tmp / "cache_b", **kw)
    task_warm_s = time.perf_counter() - t0

    res = {"variant": args.variant, "res": args.res, "dataset": args.dataset, "images": n,
           "extract_s": round(extract_s, 2), "task_cold_s": round(task_cold_s, 2),
           "task_warm_s": round(task_warm_s, 2), "images_per_s": round(n / extract_s, 2),
           "cold_task_over_extract": round(task_cold_s / extract_s, 3),
           "warm_task_over_extract": round(task_warm_s / extract_s, 3), "target_cold_ratio": 1.1}
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0 if res["cold_task_over_extract"] <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())
