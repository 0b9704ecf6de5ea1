"""This machine's matmul peak for `harness bench`: the best sustained rate over a few timed rounds of a
square matmul by every library on hand (a jitted `jnp.dot`, on a CPU numpy's BLAS, and with `--compare hf`
`torch.mm`), the timer every bench figure uses, and an accelerator's published dense bfloat16 peak, against
which MFU is quoted (on a CPU: the measured peak)."""

from __future__ import annotations

import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from harness.errors import HarnessError


# Dense (no 2:4 sparsity) bfloat16 peak per chip, TFLOP/s, by jax's `device_kind` (first match wins). NVIDIA's
# tables quote bf16 "with sparsity", twice the dense rate (their footnote: "1/2 lower without sparsity").
DEVICE_PEAKS: tuple[tuple[str, float, str], ...] = (
    (r"H100.*PCIe", 756.0, "H100 PCIe product brief PB-11133-001: BFLOAT16 Tensor Core 1,513 TFLOPS with "
     "sparsity; https://www.nvidia.com/en-us/data-center/h100/"),
    (r"H100(?!.*(NVL|PCIe))", 989.0, "H100 SXM datasheet: BFLOAT16 Tensor Core 1,979 TFLOPS with sparsity; "
     "https://www.nvidia.com/en-us/data-center/h100/"),
    (r"H200(?!.*NVL)", 989.0, "H200 SXM datasheet: BFLOAT16 Tensor Core 1,979 TFLOPS with sparsity; "
     "https://www.nvidia.com/en-us/data-center/h200/"),
    (r"A100", 312.0, "A100 datasheet: BFLOAT16 Tensor Core 312 TFLOPS (624 with sparsity); https://www.nvidia.com/"
     "content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"),
    (r"^NVIDIA L4$", 121.0, "L4 datasheet: BF16 Tensor Core 242 TFLOPS with sparsity; "
     "https://www.nvidia.com/en-us/data-center/l4/"),
    (r"^TPU v4$", 275.0, "Cloud TPU v4: peak compute per chip 275 TFLOPs (bf16); https://cloud.google.com/tpu/docs/v4"),
    (r"^TPU v5 ?(lite|e)", 197.0, "Cloud TPU v5e: peak compute per chip (bf16) 197 TFLOPs; "
     "https://cloud.google.com/tpu/docs/v5e"),
    (r"^TPU v5p?$", 459.0, "Cloud TPU v5p: peak compute per chip (bf16) 459 TFLOPs; https://cloud.google.com/tpu/docs/v5p"),
    (r"^TPU v6 ?(lite|e)", 918.0, "Cloud TPU v6e (Trillium): peak compute per chip (bf16) 918 TFLOPs; "
     "https://cloud.google.com/tpu/docs/v6e"),
)


def device_peak(device_kind: str) -> tuple[float, str] | None:
    """(dense bf16 TFLOP/s, source) of a device by its jax `device_kind`, or None for a kind not in the table."""
    for pattern, tflops, source in DEVICE_PEAKS:
        if re.search(pattern, device_kind.strip(), re.IGNORECASE):
            return tflops, source
    return None


def timed(fn, *, min_seconds: float, min_iters: int = 1, rounds: int = 3) -> float:
    """Best per-call seconds over `rounds` rounds, each at least `min_seconds` and `min_iters` calls long.
    Best, not mean: on a shared machine interference only ever slows a round down."""
    best = float("inf")
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if n >= min_iters and dt >= min_seconds:
                break
        best = min(best, dt / n)
    return best


def matmul_peak(dtype: str = "float32", n: int = 2048, min_seconds: float = 0.5, impl: str = "xla") -> dict:
    """This machine's matmul rate in GFLOP/s: an (n x n) @ (n x n) in `dtype`, by `impl`: "xla" (jitted
    `jnp.dot`, float32 accumulate for bfloat16 as the encoder's bf16 mode), "numpy" (its BLAS, float32
    only) or "torch" (`torch.mm` on this process's threads)."""
    rng = np.random.default_rng(0)
    a32, b32 = (rng.standard_normal((n, n), np.float32) for _ in range(2))
    if impl == "xla":
        a, b = jnp.asarray(a32, dtype), jnp.asarray(b32, dtype)
        f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
        call = lambda: f(a, b).block_until_ready()  # noqa: E731
    elif impl == "numpy":
        if dtype != "float32":
            raise HarnessError("the numpy matmul peak is float32 only")
        call = lambda: a32 @ b32  # noqa: E731
    elif impl == "torch":
        import torch

        a, b = (torch.from_numpy(x).to(getattr(torch, dtype)) for x in (a32, b32))
        call = lambda: torch.mm(a, b)  # noqa: E731
    else:
        raise HarnessError(f"matmul peak impl {impl!r} is not one of xla, numpy, torch")
    call()
    seconds = timed(call, min_seconds=min_seconds)
    return {"dtype": dtype, "n": n, "impl": impl, "seconds": seconds, "gflops_per_s": 2 * n**3 / seconds / 1e9}


def peaks(n: int, min_seconds: float, torch: bool = False) -> dict:
    """Per dtype, the best of two sizes and of every matmul on hand: the peak is the machine's, not one
    shape's nor one library's (XLA's own dot runs below what BLAS libraries get from the same cores).
    `by_impl`: each library's best."""
    sec = min(min_seconds, 1.0)
    host = ["numpy"] if jax.default_backend() == "cpu" else []  # numpy's BLAS runs on the host's cores
    impls = {"float32": ["xla", *host] + (["torch"] if torch else []),
             "bfloat16": ["xla"] + (["torch"] if torch else [])}
    out = {}
    for d, names in impls.items():
        by = {i: max((matmul_peak(d, m, min_seconds=sec, impl=i) for m in (n, 2 * n)),
                     key=lambda p: p["gflops_per_s"]) for i in names}
        best = max(by.values(), key=lambda p: p["gflops_per_s"])
        out[d] = {**best, "by_impl": {i: p["gflops_per_s"] for i, p in by.items()}}
    return out
