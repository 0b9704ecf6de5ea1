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
import re
import subprocess
import sys

from harness import cpu_core_count
from harness.errors import HarnessError, first_line

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


# ------------------------------------------------------------------------------- starting jax
# XLA parses $XLA_FLAGS when jax starts its first backend and aborts the whole process (LOG(FATAL), no
# Python exception) on a flag it does not know or a value it cannot parse. A child process that starts
# XLA's CPU client with the same flags tells first: ~2.5 s wall and 1.5-2 s CPU, only when $XLA_FLAGS is
# set, once per value in a process. `check_xla_flags` starts it and `start_backend` waits for its verdict,
# so the child runs while the command imports its modules. Measured on `harness run` with a bad setting (a
# 2-core machine at load 9-13): 6.9-9.6 s without XLA_FLAGS, 11.5-13.8 s with the check overlapped,
# 12.1-16.2 s with it run before the imports.
_PROBE = "from jax._src.lib import xla_client; xla_client.make_cpu_client()"
_XLA_LOG = re.compile(r"^[EF]\d{4} [^\]]*\] (.*)$")
_flags_ok: set[str] = set()
_probes: dict[str, subprocess.Popen] = {}


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge
    return xla_bridge.backends_are_initialized()


def check_xla_flags() -> None:
    """Starts checking $XLA_FLAGS in a child process (see above; `start_backend` takes its verdict); a no-op
    when it is unset, already checked, or jax's backends have started (the flags were read then)."""
    flags = os.environ.get("XLA_FLAGS", "").strip()
    if not flags or flags in _flags_ok or flags in _probes or _backends_started():
        return
    try:
        _probes[flags] = subprocess.Popen([sys.executable, "-c", _PROBE], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True,
                                          env={**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "0"})
    except OSError as e:
        log.warning("could not check XLA_FLAGS in a child process (%s); starting jax with them", first_line(e))


def _xla_flags_verdict() -> None:
    """One error line (naming the flag) where XLA would abort the process on $XLA_FLAGS."""
    flags = os.environ.get("XLA_FLAGS", "").strip()
    probe = _probes.pop(flags, None)
    for other in _probes.values():  # flags changed since (--cpu-devices adds its own): not ours to judge
        other.kill()
    _probes.clear()
    if probe is None:
        return
    try:
        _, stderr = probe.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.communicate()
        return
    if probe.returncode == 0:
        _flags_ok.add(flags)
        return
    said = [m.group(1) for line in stderr.splitlines() if (m := _XLA_LOG.match(line))]
    why = next((s for s in said if s.startswith(("Unknown flag", "Couldn't interpret"))), None) or \
        (said[0] if said else first_line(stderr.strip().splitlines()[-1] if stderr.strip() else "", 200))
    raise HarnessError(f"XLA_FLAGS={flags[:200]!r}: XLA refuses it and would abort ({why[:200]}); fix or remove "
                       "that flag (`unset XLA_FLAGS` runs with XLA's defaults)")


def start_backend() -> list:
    """jax's devices, its backend started now, after `check_xla_flags`' verdict; a backend that cannot start
    ($JAX_PLATFORMS naming a platform this machine or this jax install lacks, e.g. cuda without a GPU) is
    one line naming the variable."""
    _xla_flags_verdict()
    import jax

    try:
        return jax.devices()
    except Exception as e:  # jax raises RuntimeError, or an AssertionError for a platform it has no plugin for
        said = first_line(e, 200)
        why = type(e).__name__ + (f": {said}" if said != type(e).__name__ else "")
        var = next((v for v in ("JAX_PLATFORMS", "JAX_PLATFORM_NAME") if os.environ.get(v)), None)
        if var:
            raise HarnessError(f"{var}={os.environ[var]}: jax cannot start that backend here ({why}); unset {var} "
                               "to run on the CPU, or install jax for that accelerator (e.g. pip install "
                               "'jax[cuda12]')") from None
        raise HarnessError(f"jax cannot start its backend ({why}); check the jax / jaxlib install") from None


def start_jax() -> list:
    """`check_xla_flags`, then `start_backend`: for a command that runs no `jax.distributed` (whose start
    must come between the two)."""
    check_xla_flags()
    return start_backend()
