#!/usr/bin/env bash
# The prepared device check of issue 27, one command on whatever jax finds (a GPU, a TPU, or a CPU at tiny
# sizes, as CI runs it):
#
#     bash benchmarks/accelerator.sh [OUT_DIR]        # default OUT_DIR: reports/bench
#
# 1. realistic ImageNet-format JPEGs from scikit-image's photographs (benchmarks/make_jpegs.py);
# 2. `harness bench`: the encoder (So400m/14 and So150m/14, bfloat16, batch 64 and 256, 224 and 384 px), as
#    timm benchmark.py's CSV columns plus MFU against the device's published dense bf16 peak;
# 3. `harness bench --pipeline --end-to-end`: the input pipeline against a best-practice tf.data one, and the
#    whole extraction (So400m/14, 224 and 384 px, batch 256) against its pipeline and its encoder;
# 4. `harness run --suite proxy` and `harness check` against reports/baselines/proxy.json ($PROXY_RUNS: a
#    folder of an earlier proxy run, whose exact records are then reused, as CI does after `make proxy-check`).
# It writes OUT_DIR/<device>.json (every figure, the commands, each step's seconds, the check's verdict),
# OUT_DIR/<device>.md (the tables) and OUT_DIR/<device>.csv (the encoder rows), and exits with the check's
# status. On a CPU every size is tiny (Ti/16, 32 and 64 px, batch 8, 256 images): about 2 minutes on 2 cores with PROXY_RUNS, 7 without.
# Needs the bench extra: pip install -e ".[bench]".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-reports/bench}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
HARNESS=("$PY" -m harness.cli)
export TF_CPP_MIN_LOG_LEVEL=3
mkdir -p "$OUT"
WORK="$(mktemp -d -t accelerator-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

read -r PLATFORM SLUG < <("$PY" -c '
import os, re, jax
from harness.tools.bench_report import machine_info
d = jax.devices()[0]
cpu = "cpu " + (machine_info()["cpu"] or "host") + " %dcore" % len(os.sched_getaffinity(0))
kind = d.device_kind if d.platform != "cpu" else cpu
print(d.platform, re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-"))')
if [ "$PLATFORM" = cpu ]; then
    VARIANTS="Ti/16"; RES="32,64"; BATCHES="8"; E2E_VARIANT="Ti/16"; E2E_BATCH=8; NUM=256; SECONDS_=0.05; PEAK_N=256
else
    VARIANTS="So400m/14,So150m/14"; RES="224,384"; BATCHES="64,256"; E2E_VARIANT="So400m/14"; E2E_BATCH=256
    NUM=3000; SECONDS_=1; PEAK_N=4096
fi
echo "accelerator check on $PLATFORM ($SLUG): results in $OUT/$SLUG.{json,md,csv}" >&2

STEPS=()
step() {  # step NAME COMMAND...: runs it, keeps its seconds
    local name="$1" t0=$SECONDS
    shift
    echo "== $name: $*" >&2
    "$@"
    STEPS+=("$name=$((SECONDS - t0))")
}

step jpegs "$PY" benchmarks/make_jpegs.py --data-dir "$WORK/jpegs" --num "$NUM" > "$WORK/jpegs.json"
step encoder "${HARNESS[@]}" bench --variants "$VARIANTS" --res "$RES" --batches "$BATCHES" --dtypes bfloat16 \
    --seconds "$SECONDS_" --peak-n "$PEAK_N" --out "$WORK/encoder.json" --csv "$OUT/$SLUG.csv" > /dev/null
step end_to_end "${HARNESS[@]}" bench --no-encoder --pipeline --end-to-end --variants "$E2E_VARIANT" --res "$RES" \
    --dtypes bfloat16 --data-dir "$WORK/jpegs" --num-images "$NUM" --pipeline-batch "$E2E_BATCH" \
    --out "$WORK/end_to_end.json" > /dev/null
PROXY="${PROXY_RUNS:-$WORK/proxy}"
step proxy "${HARNESS[@]}" run --suite proxy --out "$PROXY/runs" --cache-dir "$PROXY/cache" --data-dir "$PROXY/tfds"
CHECK=0
t0=$SECONDS
"${HARNESS[@]}" check "$PROXY/runs" --baseline reports/baselines/proxy.json > "$WORK/check.txt" 2>&1 || CHECK=$?
STEPS+=("check=$((SECONDS - t0))")
cat "$WORK/check.txt" >&2

"$PY" - "$OUT" "$SLUG" "$WORK" "$CHECK" "${STEPS[@]}" <<'EOF'
import json, sys, time
from pathlib import Path
from harness.files import write_json_atomic, write_text_atomic
from harness.tools.bench_report import format_report

out, slug, work, check = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
steps = {k: int(v) for k, v in (s.split("=") for s in sys.argv[5:])}
encoder = json.loads((work / "encoder.json").read_text())
e2e = json.loads((work / "end_to_end.json").read_text())
bench = {**encoder, "pipeline": e2e.get("pipeline", []), "end_to_end": e2e.get("end_to_end", [])}
check_text = (work / "check.txt").read_text()
report = {"schema": "sovit-harness-accelerator/1", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
          "device": encoder["device"], "jpegs": json.loads((work / "jpegs.json").read_text()), "steps_seconds": steps,
          "bench": bench, "proxy_check": {"exit_code": check, "output": check_text.splitlines()[-40:]}}
write_json_atomic(out / f"{slug}.json", report)
md = [f"# Accelerator check: {encoder['device']['kind']}", "", f"{report['created']}; steps (s): "
      + ", ".join(f"{k} {v}" for k, v in steps.items()) + f"; proxy check exit code {check}", "", "```",
      format_report(bench), "```", ""]
write_text_atomic(out / f"{slug}.md", "\n".join(md))
print(f"wrote {out / (slug + '.json')}, {out / (slug + '.md')}, {out / (slug + '.csv')}")
EOF
exit "$CHECK"
