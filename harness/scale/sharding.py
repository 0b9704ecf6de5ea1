"""Sharded execution on JAX's own runtime: one `Mesh` over every device of every process.

The mesh has a single `data` axis. Batches are split along it; parameters are replicated, or, for large
variants, sharded FSDP-style: each large leaf is split along one of its dimensions over the same axis and
XLA gathers it where it is used. `Encoder.features` and `train.fit` take this path whenever more than one
device is visible; on one device they keep their single-device code, so results there are bit-identical to
a harness without this module.

Two ways a batch reaches the mesh (`global_batch`):
- `local=False` (the default of `features` and `fit`): every process holds the same, whole batch (tasks read
  data as on one process) and puts only its own devices' rows on the mesh; the encoder and training
  compute is divided, the input pipeline is not. Results equal a single-process run's.
- `local=True`: each process holds its own part (`harness.data.iterate(..., process_index=i,
  process_count=n)`), and per-process metric sums and counts are combined with `reduce_sums`.

Multi-process: `initialize` (flags, or $JAX_COORDINATOR_ADDRESS / $JAX_NUM_PROCESSES / $JAX_PROCESS_ID, or a
cluster jax detects: SLURM, Open MPI, ...) starts `jax.distributed`, with gloo collectives on CPU.
`guard()` makes a failure of one process end every process with a message naming it, instead of leaving
the others blocked in a collective: the failing process publishes its error in the coordination service's
key-value store and exits at once (its peers' collectives then fail: "connection closed"), and a watchdog
thread in every process stops it when another one has failed. A process that dies without a word (killed)
is caught by the coordination service's heartbeat timeout. `harness run --coordinator host:port
--num-processes N --process-id I` runs a task that way (`harness.run.distributed`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import os
import sys
import threading
import traceback
from typing import Any

import jax
import numpy as np
from jax._src import distributed as jax_distributed
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from harness.errors import HarnessError, first_line

log = logging.getLogger("harness")

DATA_AXIS = "data"
PARAM_STRATEGIES = ("replicate", "fsdp")
# Leaves smaller than this stay replicated under FSDP: gathering a bias costs more than storing it.
FSDP_MIN_SIZE = 2**14
# How many params trees `placed_params` keeps on the mesh (an image and a text tower); older ones are dropped.
PLACED_MAX = 2
ERROR_KEY = "harness/failed"
WATCHDOG_POLL_S = 0.5  # how often each process looks for a peer's failure
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

_state: dict[str, Any] = {"param_strategy": "replicate", "watchdog": None}


# ----------------------------------------------------------------------------------------- runtime
def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, heartbeat_timeout_s: int = 30,
               init_timeout_s: int = 120, auto: bool = False) -> bool:
    """Starts `jax.distributed` if flags or the environment ask for more than one process; returns whether
    it did. Must run before anything touches a jax device. `auto` lets jax detect a cluster (SLURM, ...)."""
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if not auto and (num_processes or 1) <= 1 and coordinator_address is None:
        return False
    if _client() is not None:  # already joined (a program that called this before the CLI did)
        return True
    if not auto and None in (coordinator_address, num_processes, process_id):
        raise HarnessError("multi-process run: give all of --coordinator host:port, --num-processes and "
                           f"--process-id (or ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID})")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise HarnessError(f"--process-id {process_id} is not in [0, {num_processes}); number processes from 0")
    # CPU devices of different processes talk through gloo (the default CPU client has no collectives).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=init_timeout_s,
                                   heartbeat_timeout_seconds=heartbeat_timeout_s)
    except Exception as e:  # jax raises RuntimeError/XlaRuntimeError/ValueError with long texts
        raise HarnessError(f"could not join the distributed run at {coordinator_address} as process "
                           f"{process_id} of {num_processes}: {first_line(e)}; start every process within "
                           f"{init_timeout_s}s with the same --coordinator and --num-processes") from None
    _start_watchdog()
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())
    return True


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError:
        raise HarnessError(f"${name}={v!r} is not an integer") from None


def _client():
    return jax_distributed.global_state.client


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def device_count() -> int:
    """Devices of the whole run, every process's together."""
    return jax.device_count()


def is_writer() -> bool:
    """Only process 0 writes records, checkpoints and caches that every process would write alike."""
    return process_index() == 0


def barrier(name: str, timeout_s: float = 600) -> None:
    if process_count() > 1:
        _client().wait_at_barrier(f"harness/{name}", int(timeout_s * 1000))


def _start_watchdog() -> None:
    if _state["watchdog"] is not None:
        return
    client = _client()
    stop = threading.Event()

    def watch():
        while not stop.wait(WATCHDOG_POLL_S):
            try:
                msg = client.key_value_try_get(ERROR_KEY)
            except Exception:  # NOT_FOUND while every process is healthy; any error once shut down
                continue
            _die(f"error: stopping process {process_index()} because {msg}")

    def stop_watchdog():
        # A daemon thread still inside a C++ call (the key-value lookup releases the GIL) when the
        # interpreter finalizes is ended by pthread_exit, and that unwind through C++ frames aborts the
        # process ("FATAL: exception not rethrown") after all its work is done. So stop it first: atexit
        # handlers run before finalization, and this one, registered after jax.distributed.initialize,
        # runs before jax's own shutdown.
        stop.set()
        t.join(timeout=10)

    t = threading.Thread(target=watch, name="harness-distributed-watchdog", daemon=True)
    t.start()
    atexit.register(stop_watchdog)
    _state["watchdog"] = t


def _die(message: str, code: int = 1):
    # os._exit, not sys.exit: a normal exit would wait in jax's shutdown barrier for peers that are
    # themselves blocked in a collective with this process, i.e. hang until a timeout.
    sys.stderr.write(message.rstrip() + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)


@contextlib.contextmanager
def guard():
    """Wrap a multi-process program: an exception here ends every process with a message that names this
    one (exit code 2 for a HarnessError, else 1). A no-op in a single-process run."""
    try:
        yield
    except BaseException as e:
        if process_count() <= 1:
            raise
        code = 2 if isinstance(e, HarnessError) else 1
        what = f"process {process_index()} failed: {type(e).__name__}: {first_line(e)}"
        with contextlib.suppress(Exception):
            _client().key_value_set(ERROR_KEY, what)
        if not isinstance(e, HarnessError):
            traceback.print_exc()
        _die(f"error: {what}; every process of this run stops", code)


# -------------------------------------------------------------------------------------------- mesh
def is_sharded() -> bool:
    """Whether work goes over a mesh: more than one device in the run (all processes together)."""
    return jax.device_count() > 1


@functools.cache
def _mesh_for(devices: tuple):
    return Mesh(np.array(devices, dtype=object), (DATA_AXIS,))


def default_mesh():
    """A 1-D mesh over every device of the run, in jax's global device order."""
    return _mesh_for(tuple(jax.devices()))


def set_param_strategy(strategy: str) -> None:
    """The default parameter placement of `features` and `fit`: "replicate" or "fsdp"."""
    if strategy not in PARAM_STRATEGIES:
        raise HarnessError(f"parameter sharding {strategy!r} is not one of {', '.join(PARAM_STRATEGIES)}")
    _state["param_strategy"] = strategy


def param_strategy() -> str:
    return _state["param_strategy"]


def leaf_spec(shape: tuple[int, ...], num_shards: int, strategy: str, min_size: int | None = None):
    """FSDP: split the largest dimension that divides evenly (the model's width or MLP axis in practice);
    a function of the shape alone, so Adam's moments get the same placement as their parameter."""
    min_size = FSDP_MIN_SIZE if min_size is None else min_size
    if strategy == "replicate" or num_shards <= 1 or math.prod(shape) < min_size:
        return P()
    if strategy != "fsdp":
        raise HarnessError(f"parameter sharding {strategy!r} is not one of {', '.join(PARAM_STRATEGIES)}")
    best = None
    for i, n in enumerate(shape):
        if n % num_shards == 0 and (best is None or n > shape[best]):
            best = i
    if best is None:
        return P()
    return P(*([None] * best + [DATA_AXIS]))


def param_shardings(tree, mesh=None, strategy: str | None = None, min_size: int | None = None):
    """A tree of `NamedSharding`s for `tree` (arrays or `ShapeDtypeStruct`s)."""
    mesh = mesh or default_mesh()
    strategy = strategy or param_strategy()
    return jax.tree.map(lambda a: NamedSharding(mesh, leaf_spec(tuple(np.shape(a)), mesh.size, strategy, min_size)),
                        tree)


def batch_sharding(mesh=None):
    return NamedSharding(mesh or default_mesh(), P(DATA_AXIS))


def replicated(mesh=None):
    return NamedSharding(mesh or default_mesh(), P())


def place(tree, shardings):
    """Puts host or device arrays onto the mesh. Every process must pass the same values; each one
    transfers only the slices its own devices hold (works on one process and on many)."""
    def put(x, sh):
        if isinstance(x, jax.Array) and x.sharding == sh:
            return x
        if sh.is_fully_addressable:
            return jax.device_put(x, sh)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sh, lambda idx: host[idx])

    return jax.tree.map(put, tree, shardings)


def global_batch(tree, mesh=None, *, local: bool = False):
    """numpy batch tree -> jax Arrays split along the `data` axis on dimension 0.

    local=False: every process holds the same whole batch; local=True: each holds its own rows (in
    process order), and the global batch is their concatenation."""
    mesh = mesh or default_mesh()
    sh = batch_sharding(mesh)
    rows = mesh.size // (jax.process_count() if local else 1)

    def put(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % rows:
            raise HarnessError(f"a batch of {x.shape[0] if x.ndim else 'scalar'} rows does not split over "
                               f"{rows} devices; use a batch size that is a multiple of {rows}")
        if local:
            return jax.make_array_from_process_local_data(sh, x)
        return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def pad_rows(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
    """Pads dimension 0 with zeros up to a multiple; returns (padded, original row count)."""
    n = x.shape[0]
    pad = (-n) % multiple
    if pad:
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
    return x, n


def to_host(x) -> np.ndarray:
    """The whole value of a (possibly multi-process) array on every process."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_host_tree(tree):
    return jax.tree.map(to_host, tree)


def to_mesh(arrays):
    """An array (or array tree) with its rows split over the mesh, zero-padded to a multiple of the device
    count: (global arrays, the real row count)."""
    mesh = default_mesh()
    n = len(jax.tree.leaves(arrays)[0])
    padded = jax.tree.map(lambda a: pad_rows(np.asarray(a), mesh.size)[0], arrays)
    return global_batch(padded, mesh), n


def from_mesh(out, rows: int):
    """The numpy value of a mesh computation's outputs without the padding rows of `to_mesh`; a 0-d output
    (a sum over the batch) comes back as is."""
    return jax.tree.map(lambda v: to_host(v)[:rows] if np.ndim(v) else to_host(v), out)


def apply_to_batch(fn, params, *arrays):
    """`fn(params, *arrays)` with the arrays' (or array trees') rows split over the mesh (zero-padded to a
    multiple of the device count, the padding dropped from the outputs) and `params` placed by the current
    strategy (`placed_params`); numpy outputs. A 0-d output (a sum over the batch) comes back as is: `fn` must
    mask the zero rows out of it. On one device: `fn` as is. For a task's own jitted passes (a fine-tuned
    model's predictions, a decoder's encoder tokens and generation, a text tower's embeddings); the encoder's
    `put` / `dispatch` / `fetch` use `to_mesh` and `from_mesh` themselves."""
    if not is_sharded():
        return jax.tree.map(np.asarray, jax.device_get(fn(params, *arrays)))
    placed, n = to_mesh(arrays)
    return from_mesh(fn(placed_params(params), *placed), n)


def placed_params(params):
    """`params` on the default mesh by the current strategy, placed once per params object: a task that
    alternates between two models (an image and a text tower) keeps both placed."""
    cache = _state.setdefault("placed", {})
    key = (id(params), param_strategy())  # the entry holds `params` itself, so its id is not reused meanwhile
    if key not in cache:
        if len(cache) >= PLACED_MAX:
            cache.pop(next(iter(cache)))
        cache[key] = (params, place(params, param_shardings(params, default_mesh())))
    return cache[key][1]


def local_rows(x) -> np.ndarray:
    """This process's rows of an array split on dimension 0 (the inverse of `global_batch(local=True)`)."""
    if not isinstance(x, jax.Array) or jax.process_count() == 1:
        return np.asarray(jax.device_get(x))
    shards = sorted({s.index[0].start or 0: s for s in x.addressable_shards}.items())
    return np.concatenate([np.asarray(s.data) for _, s in shards])


def reduce_sums(values: dict[str, Any]) -> dict[str, np.ndarray]:
    """Sums of per-process metric sums and counts over all processes (float64), the same on every one.
    Means are computed from these sums, never averaged per process (processes hold unequal counts)."""
    out = {k: np.asarray(v, np.float64) for k, v in values.items()}
    if process_count() == 1:
        return out
    keys = sorted(out)
    # Gathered as float32 pairs (hi, lo) would lose nothing either; jax defaults to 32-bit, so split.
    hi = {k: out[k].astype(np.float32) for k in keys}
    lo = {k: (out[k] - hi[k].astype(np.float64)).astype(np.float32) for k in keys}
    g_hi = multihost_utils.process_allgather(hi)
    g_lo = multihost_utils.process_allgather(lo)
    return {k: np.asarray(g_hi[k], np.float64).sum(0) + np.asarray(g_lo[k], np.float64).sum(0) for k in keys}
