"""Peak memory of loading a So400m/14 checkpoint and running one forward at batch 8 (target: < 2.6 GB).

    python benchmarks/load_rss.py [--variant So400m/14] [--res 224] [--batch 8] [--ckpt FILE]

Writes a randomly filled big_vision `.npz` of the variant (built from `jax.eval_shape`, never a jitted init)
unless --ckpt is given, then measures a fresh child process that only loads it with `load_encoder` and runs
`features` once: peak RSS from the kernel (`ru_maxrss` of the child), load and forward seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
import numpy as np
from harness.models.encoder import load_encoder
t0 = time.perf_counter()
enc = load_encoder(sys.argv[1])
t1 = time.perf_counter()
out = enc.features(np.zeros((int(sys.argv[2]), enc.res, enc.res, 3), np.float32), ["pre_logits"])
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "forward_s": t2 - t1, "params_m": enc.describe()["params_m"],
                  "pre_logits": list(out["pre_logits"].shape)}))
"""


def write_random_checkpoint(variant: str, res: int, path: Path) -> None:
    import jax
    import numpy as np

    from harness.checkpoints import flatten, save_npz
    from harness.models.encoder import abstract_params, build_model, resolve_config

    cfg = resolve_config({}, {}, {"variant": variant, "res": res, "pool_type": "map"}, path="bench")
    shapes = flatten(abstract_params(build_model(cfg), res))
    rng = np.random.default_rng(0)
    flat = {k: (rng.standard_normal(v.shape, np.float32) * 0.02) for k, v in shapes.items()}
    save_npz(path, flat)
    del jax


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="So400m/14")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    ckpt = Path(args.ckpt) if args.ckpt else Path(tempfile.gettempdir()) / f"bench_{args.variant.replace('/', '_')}.npz"
    if not ckpt.exists():
        # In a child process, so that writing the file does not count towards the measured peak.
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"import load_rss; load_rss.write_random_checkpoint({args.variant!r}, {args.res}, "
                        f"__import__('pathlib').Path({str(ckpt)!r}))"], check=True)
    # The measured child's own rusage (wait4), not RUSAGE_CHILDREN, which would include the writer above.
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ckpt), str(args.batch)], stdout=subprocess.PIPE,
                            text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the measured process failed with exit code {proc.returncode}")
    res = json.loads(stdout.strip().splitlines()[-1])
    peak_gb = usage.ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    res.update(variant=args.variant, res=args.res, batch=args.batch, checkpoint_gb=round(ckpt.stat().st_size / 1e9, 3),
               peak_rss_gb=round(peak_gb, 3), target_gb=2.6)
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0 if peak_gb < 2.6 else 1


if __name__ == "__main__":
    sys.exit(main())
