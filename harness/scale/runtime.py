"""Process-wide settings that make XLA:CPU runs fast: glibc's allocator told to keep and reuse memory.

XLA:CPU takes each call's large buffers (a block's activations, the attention scores, the MLP's hidden
layer: tens of MB at batch 8) from `malloc`. glibc serves requests above its mmap threshold (adaptive, at
most 32 MB) with a fresh `mmap` and gives the pages back on `free`, so every call faults the same buffers
in again, page by page: on this project's 2-core machine a 33 MB elementwise op ran at 1/6 of its speed
and a So400m/14 forward spent a large share of its time in the kernel (the proxy sweep: 527 s system vs
1681 s user CPU). `tune_malloc()` asks glibc (`mallopt`) to serve requests up to 32 MB from its heap
always (not only once its adaptive threshold has risen), to keep freed memory there, and to use one
arena for all threads: those buffers are then reused from call to call instead of faulted in anew.
Larger ones are still mapped per call (serving them from the heap too cost ~5% more peak memory).

The cost: memory freed by a run is kept by the process for its next allocations instead of going back to
the OS. It is a no-op off Linux/glibc, on accelerator backends and with `$HARNESS_MALLOC=system`.
`load_encoder` calls it once the weights are loaded (so the load's own large temporaries still go back
to the OS at once), the benchmark children after building their models.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

from harness.errors import HarnessError

# jax is imported inside the functions that need it: the CLI imports this module at its top (for
# --cpu-devices), and `harness --help` must not load jax.
log = logging.getLogger("harness")

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ENV = "HARNESS_MALLOC"

_done: dict[str, bool] = {}


def tune_malloc(backend: str | None = None) -> bool:
    """Returns whether glibc's allocator now keeps and reuses freed memory (idempotent). Only for the CPU
    backend (`backend`: default jax's): accelerators' buffers do not come from malloc."""
    if "malloc" in _done:
        return _done["malloc"]
    if backend is None:
        import jax
        backend = jax.default_backend()
    ok = False
    if backend == "cpu" and os.environ.get(ENV, "").lower() != "system" and sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL(None).mallopt  # glibc; musl and others have no mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            # Requests up to 32 MB (glibc's largest mmap threshold) always from the heap, fixed instead of
            # adaptive; trim the heap top only above 2 GiB free; one arena, so that memory freed by one
            # XLA thread is reused by the next instead of being kept once per thread. (Taking even larger
            # requests from the heap too, M_MMAP_MAX=0, was ~3% faster still but raised the peak RSS of a
            # So400m/14 load + batch-8 forward from ~2.45 GB to 2.56-2.67 GB, over its 2.6 GB budget.)
            ok = (mallopt(M_MMAP_THRESHOLD, 32 * 2**20) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
                  and mallopt(M_ARENA_MAX, 1) == 1)
    if ok:
        log.debug("glibc malloc: mmap threshold 32 MB, trim threshold 2 GiB, one arena")
    _done["malloc"] = ok
    return ok


# ------------------------------------------------------------------------------- CPU devices
ENV_CPU_DEVICES = "HARNESS_CPU_DEVICES"
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def cpu_core_count() -> int:
    """The cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_cpu_devices(value) -> int:
    """`value`: a positive integer or "auto" (one device per core of this process)."""
    text = str(value).strip().lower()
    if text == "auto":
        return cpu_core_count()
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise HarnessError(f"CPU devices {value!r}: give a positive integer or 'auto' (one per core)")
    return n


def use_cpu_devices(value) -> int:
    """Splits the host CPU into `value` XLA devices (an integer or "auto"); returns the count.

    XLA:CPU runs a batched matmul (attention's scores and weighted sum) and many fusions on one thread;
    one device per core puts the harness's batch-split mesh (`harness.scale.sharding`) over the cores, so those
    run side by side (`harness bench --cpu-devices 1,2` measures it). It sets `XLA_FLAGS` and therefore
    must come before jax starts its backends; accelerators are unaffected (the flag is the host
    platform's). Batches must then split over the devices (training batch sizes: multiples of it)."""
    n = parse_cpu_devices(value)
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_COUNT_FLAG + "=")]
    if n > 1:
        flags.append(f"{_DEVICE_COUNT_FLAG}={n}")
    if "jax" in sys.modules:
        from jax._src import xla_bridge
        if xla_bridge.backends_are_initialized():
            import jax
            have = len(jax.devices("cpu"))
            if have != n:
                raise HarnessError(f"jax is already running with {have} CPU device(s); set {ENV_CPU_DEVICES}={n} "
                                   "(or XLA_FLAGS) before the harness starts")
            return n
    os.environ["XLA_FLAGS"] = " ".join(flags)
    return n
