"""This machine's matmul peak for `harness bench`: the best sustained rate over a few timed rounds of a
square matmul by every library on hand (a jitted `jnp.dot`, numpy's BLAS, and with `--compare hf`
`torch.mm`), and the timer every bench figure uses."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from harness.errors import HarnessError


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
    impls = {"float32": ["xla", "numpy"] + (["torch"] if torch else []),
             "bfloat16": ["xla"] + (["torch"] if torch else [])}
    out = {}
    for d, names in impls.items():
        by = {i: max((matmul_peak(d, m, min_seconds=sec, impl=i) for m in (n, 2 * n)),
                     key=lambda p: p["gflops_per_s"]) for i in names}
        best = max(by.values(), key=lambda p: p["gflops_per_s"])
        out[d] = {**best, "by_impl": {i: p["gflops_per_s"] for i, p in by.items()}}
    return out
