"""A/B of the encoder forward: this checkout's harness/models/vit.py against another vit.py, same machine, same run.

    python benchmarks/bench_encoder.py --vit other_vit.py [--variants So150m/14] [--batches 8] [--dtypes float32]

For each side, `harness bench` (harness/tools/bench*.py: child processes, matmul peak, peak RSS) runs with the
`harness` package taken from this checkout or from a temporary copy whose vit.py is replaced; then both
sides' `pre_logits` for the same random parameters and images are compared (max |difference|), so a
faster model that computes something else is caught. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FORWARD = """
import sys, numpy as np, jax, jax.numpy as jnp
from harness.tools.bench_encoder import encoder_config, random_params
cfg = encoder_config(sys.argv[1], int(sys.argv[2]), sys.argv[3], True)
model, params = random_params(cfg)
x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, cfg["res"], cfg["res"], 3)).astype(np.float32))
np.save(sys.argv[4], np.asarray(model.apply({"params": params}, x)[1]["pre_logits"], np.float32))
"""


def _side(pythonpath: str, args, out_json: Path, forward_npy: Path, variant: str, dtype: str) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-c", "from harness.cli import main; main()", "bench", "--variants", variant,
           "--res", str(args.res), "--batches", args.batches, "--dtypes", dtype, "--seconds", str(args.seconds), "--out", str(out_json)]
    # cwd = that side's root: `python -c` puts the cwd first on sys.path, ahead of PYTHONPATH.
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=pythonpath)
    subprocess.run([sys.executable, "-c", FORWARD, variant, str(args.res), dtype, str(forward_npy)], env=env,
                   check=True, cwd=pythonpath)
    return json.loads(out_json.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vit", required=True, help="the other harness/models/vit.py")
    ap.add_argument("--variants", default="So150m/14")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--batches", default="8")
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="bench_ab_"))
    shutil.copytree(ROOT / "harness", tmp / "other" / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(args.vit, tmp / "other" / "harness" / "vit.py")
    report = []
    for variant in args.variants.split(","):
        for dtype in args.dtypes.split(","):
            a = _side(str(ROOT), args, tmp / "a.json", tmp / "a.npy", variant, dtype)
            b = _side(str(tmp / "other"), args, tmp / "b.json", tmp / "b.npy", variant, dtype)
            diff = float(np.abs(np.load(tmp / "a.npy") - np.load(tmp / "b.npy")).max())
            for ra, rb in zip(a["rows"], b["rows"]):
                report.append({"variant": variant, "dtype": dtype, "batch": ra["batch"],
                               "images_per_s": {"this": ra["images_per_s"], "other": rb["images_per_s"]},
                               "pct_of_float32_peak": {"this": ra["pct_of_float32_peak"],
                                                       "other": rb["pct_of_float32_peak"]},
                               "speedup": rb["images_per_s"] / ra["images_per_s"],
                               "max_abs_pre_logits_diff": diff})
    print(json.dumps(report, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
