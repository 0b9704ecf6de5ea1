"""One task on every process of a multi-process (`jax.distributed`) run: `harness run --coordinator ...`.

`harness.scale.sharding.initialize` joins the processes and `guard` stops all of them when one fails; this
module runs the task through the same runner as a one-process run, on every process at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from harness.run.runner import run_task
from harness.scale import sharding


def run_task_distributed(task, ckpt: str | None, *, out_dir: str | Path = "runs", preset: str | None = None,
                         sets: dict[str, str] | None = None, data_dir: str | None = None, **kw):
    """`harness.run.runner.run_task` on every process of an initialised run; process 0 writes the record (once:
    the process count is in it from the start), the others write theirs into a temporary folder. Returns
    (record, path).

    Every process always computes (no reuse of a finished record, fresh per-run feature caches): a cache hit
    on one process and a miss on another would leave the miss waiting in a collective forever."""
    with sharding.guard(), tempfile.TemporaryDirectory(prefix=f"harness_p{sharding.process_index()}_") as tmp:
        own_out = out_dir if sharding.is_writer() else os.path.join(tmp, "runs")
        info = {"distributed": {"process_count": sharding.process_count(),
                                "device_count": sharding.device_count()}}
        record, path, _ = run_task(task, ckpt, preset=preset, sets=sets, data_dir=data_dir, out_dir=own_out,
                                   cache_dir=os.path.join(tmp, "cache"), force=True,
                                   progress=sharding.is_writer(), info=info, **kw)
        sharding.barrier("run_task_done")
    return record, path
