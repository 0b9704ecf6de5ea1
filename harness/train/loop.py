"""The shared training loop: pretraining, fine-tuning, decoders and LiT all train through `fit`.

It jits one step, shows progress (steps/s, ETA, loss), stops with a clear message on a NaN or diverging
loss, and checkpoints params + optimizer state + step so that a killed run resumes where it stopped and
ends exactly as an uninterrupted run would (the data stream is a function of the step).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp

from harness import schema
from harness.errors import HarnessError
from harness.files import replace_dir, write_text_atomic
from harness.progress import Progress
from harness.scale import sharding

log = logging.getLogger("harness")


@dataclasses.dataclass
class FitResult:
    params: Any
    opt_state: Any
    steps: int
    losses: list[float]
    seconds: float
    resumed_from: int = 0


def _save_state(ckpt_dir: Path, step: int, params, opt_state, extra: dict | None = None):
    """Writes `state-<step>` next to the previous one, then moves the `LATEST` pointer: a crash at any
    point leaves a complete older checkpoint.

    In a multi-process run every process calls this with the same host tree: orbax's save is itself a
    collective (it synchronises all processes and writes from process 0), and process 0 alone moves the
    folders and the pointer, between two barriers."""
    final = (ckpt_dir / f"state-{step:09d}").absolute()
    tmp = (ckpt_dir / f".state-{step:09d}.tmp").absolute()
    writer = sharding.is_writer()
    if writer:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)  # an interrupted save of this step
    sharding.barrier(f"ckpt-{step}-begin")
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp / "state", {"params": jax.device_get(params), "opt_state": jax.device_get(opt_state)})
    ckptr.wait_until_finished()
    if writer:
        write_text_atomic(tmp / "meta.json", json.dumps({"step": step, **(extra or {})}), what="the training state")
        replace_dir(tmp, final)
        write_text_atomic(ckpt_dir / "LATEST", final.name, what="the training state", devices=False)
        for old in ckpt_dir.glob("state-*"):
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
    sharding.barrier(f"ckpt-{step}-end")


def _restore_state(ckpt_dir: Path, params, opt_state):
    pointer = ckpt_dir / "LATEST"
    if not pointer.exists():
        return None
    fix = f"delete {ckpt_dir} to train from the start"
    name = schema.read_bytes(pointer, what="training-state pointer", fix=fix, max_bytes=64).decode(
        "utf-8", "replace").strip()
    if not re.fullmatch(r"state-\d{9}", name) or not (ckpt_dir / name).is_dir():
        raise HarnessError(f"{pointer}: names {name[:40]!r}, not a saved training state (state-<step>) in "
                           f"{ckpt_dir}; {fix}")
    path = (ckpt_dir / name).absolute()
    meta = {"step": schema.read_json(path / "meta.json", what="training state", fix=fix).require_obj()
            .int("step", min=0)}
    target = {"params": params, "opt_state": opt_state}
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), getattr(a, "dtype", np.float32)), target)
    state = ocp.StandardCheckpointer().restore(path / "state", abstract)
    return meta["step"], state["params"], state["opt_state"]


def fit(*, params, tx, loss_fn: Callable, batches: Callable[[int], Iterator[dict]], total_steps: int,
        seed: int = 0, ckpt_dir: str | Path | None = None, ckpt_every: int = 0, progress: bool = True,
        desc: str = "train", diverge_factor: float = 1e3, log_every: int = 50,
        stop_after: int | None = None, param_sharding: str | None = None,
        process_local_batches: bool = False) -> FitResult:
    """Minimises `loss_fn(params, batch, rng) -> (loss, aux)` with optax transform `tx`.

    `batches(start_step)` returns the batch stream from `start_step` on (so a resumed run sees the same
    data). `stop_after` ends the loop early at that step (used by tests to simulate a kill).

    With more than one device the step runs over `harness.scale.sharding`'s mesh: each batch is split over the
    `data` axis, params and optimizer state are replicated or FSDP-sharded (`param_sharding`, default
    `harness.scale.sharding.param_strategy()`); `process_local_batches` says that each process's `batches`
    yields only its own rows instead of the whole batch. On one device none of this runs.
    """
    on_mesh = sharding.is_sharded()
    if on_mesh:
        mesh = sharding.default_mesh()
        p_sh = sharding.param_shardings(params, mesh, param_sharding)
        params = sharding.place(params, p_sh)
        # Placement is a function of a leaf's shape, so Adam's moments land where their parameter is.
        o_sh = sharding.param_shardings(jax.eval_shape(tx.init, params), mesh, param_sharding)
        opt_state = jax.jit(tx.init, out_shardings=o_sh)(params)
    else:
        opt_state = tx.init(params)
    start = 0
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else None
    if ckpt_dir is not None:
        restored = _restore_state(ckpt_dir, params, opt_state)
        if restored is not None:
            start, params, opt_state = restored
            if on_mesh:
                params, opt_state = sharding.place(params, p_sh), sharding.place(opt_state, o_sh)
            log.info("%s: resumed from step %d (%s)", desc, start, ckpt_dir)

    def step_fn(params, opt_state, batch, step):
        rng = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, aux

    step_fn = jax.jit(step_fn, out_shardings=(p_sh, o_sh, None, None)) if on_mesh else jax.jit(step_fn)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = Progress(total_steps, desc, "step", initial=start, enabled=progress)
    first_loss = None
    it = batches(start)
    step = start
    try:
        for step in range(start, total_steps):
            if stop_after is not None and step >= stop_after:
                break
            batch = next(it)
            if on_mesh:
                batch = sharding.global_batch(batch, mesh, local=process_local_batches)
            params, opt_state, loss, _ = step_fn(params, opt_state, batch, step)
            loss = float(loss)
            losses.append(loss)
            if not math.isfinite(loss):
                raise HarnessError(f"{desc}: the loss became {loss} at step {step}; lower the learning rate "
                                   "or check the data")
            if first_loss is None:
                first_loss = abs(loss) + 1e-3
            elif abs(loss) > diverge_factor * first_loss:
                raise HarnessError(f"{desc}: the loss diverged at step {step} ({loss:.3g} vs {first_loss:.3g} at "
                                   "the start); lower the learning rate")
            if progress:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}")
            elif log_every and step % log_every == 0:
                log.info("%s step %d/%d loss %.4f", desc, step, total_steps, loss)
            if ckpt_dir is not None and ckpt_every and (step + 1) % ckpt_every == 0 and step + 1 < total_steps:
                # On the mesh, gathering the state to the host is a collective: every process takes part.
                state = sharding.to_host_tree((params, opt_state)) if on_mesh else (params, opt_state)
                _save_state(ckpt_dir, step + 1, *state)
        else:
            step = total_steps
    finally:
        bar.close()
    return FitResult(params=params, opt_state=opt_state, steps=step, losses=losses,
                     seconds=time.perf_counter() - t0, resumed_from=start)

