"""`harness sweep`: the paper's star sweep, the data behind `harness shape --from`.

A star sweep varies one shape dimension at a time around a centre shape (the others stay at the centre),
and trains every shape at several training lengths. The paper's was around (1968, 40, 6144) on JFT; the
`proxy` preset is the same procedure in miniature around the proxy SoViT (64, 6, 256) on proxy_scenes'
pretrain split. Each model is pretrained with `harness.train.pretrain` (its own cosine schedule per length, as
separate runs), then scored with the few-shot task, and the few-shot result record is stamped with
`info.sweep` (arm, training steps, examples seen, training GFLOPs) so `scaling.points_from_records` can
fit it.

Layout of the output folder:
    models/<tag>.npz (+ .json summary)   finished pretrained encoders (big_vision .npz)
    state/<tag>/                         resumable training state of an unfinished run
    records/*.json                       few-shot result records with info.sweep
    plan.json                            the sweep's config and runs
A rerun skips every finished model and record, and resumes an interrupted training run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.files import write_json_atomic
from harness.schema import read_json
from harness.models.variants import Shape
from harness.shape.law import DIMENSIONS

log = logging.getLogger("harness")

# Forward + backward of a training step costs ~3 forward passes (the usual convention; only ratios of
# training compute matter for the exponents).
TRAIN_FLOPS_PER_FORWARD = 3.0


@dataclasses.dataclass
class SweepConfig:
    # The centre shape; arms list the other values of each dimension (the centre value is added).
    width: int = 64
    depth: int = 6
    mlp_dim: int = 256
    widths: tuple[int, ...] = (32, 48, 96, 128)
    depths: tuple[int, ...] = (2, 3, 4, 9)
    mlp_dims: tuple[int, ...] = (64, 128, 512, 1024)
    may_be_empty = ("widths", "depths", "mlp_dims")  # an empty arm is not swept (harness.api.validate_config)
    # Training lengths: every shape is trained once per length, each with its own schedule.
    steps: tuple[int, ...] = (100, 200, 400)
    batch_size: int = 32
    num_heads: int = 4
    patch_size: int = 8
    res: int = 64
    dataset: str = "proxy_scenes"
    split: str = "pretrain"
    # Single-label targets and a higher lr than the proxy checkpoint's recipe: at a few hundred steps the
    # multi-label objects target still sits at random-encoder few-shot accuracy (measured: 12.5% vs 13.5%
    # random at 300 steps, lr 3e-3), single labels reach 20%.
    targets: str = "label"
    lr: float = 3e-3
    warmup_frac: float = 0.1
    seed: int = 0
    # Evaluation: the few-shot task's preset, restricted to these datasets; the fitted metric.
    eval_preset: str = "proxy"
    eval_datasets: tuple[str, ...] = ("proxy_scenes",)
    eval_max_test_examples: int = 0
    metric: str = "fewshot/proxy_scenes/10shot"


PRESETS: dict[str, dict] = {
    # 13 shapes x 3 lengths = 39 runs, 0.047 PFLOPs of training (`harness sweep --dry-run`).
    "proxy": {},
    # A smoke test of the machinery on proxy_scenes' tiny config (2 shapes x 2 lengths, a few steps):
    # seconds per run, and too few points to fit.
    "tiny": dict(width=16, depth=1, mlp_dim=32, widths=(8,), depths=(), mlp_dims=(), steps=(4, 8),
                 batch_size=8, dataset="proxy_scenes/tiny", eval_datasets=("proxy_scenes/tiny",),
                 # fewshot's "tiny" preset: a pool of 2 images per class cannot give the proxy's 5-25 shots
                 eval_preset="tiny", metric="fewshot/proxy_scenes/tiny/1shot"),
}


@dataclasses.dataclass(frozen=True)
class SweepRun:
    dimension: str  # "centre" or the varied dimension
    width: int
    depth: int
    mlp_dim: int
    steps: int

    @property
    def tag(self) -> str:
        return f"w{self.width}-d{self.depth}-m{self.mlp_dim}-s{self.steps}"


def make_config(preset: str | None = "proxy", sets: dict[str, str] | None = None) -> SweepConfig:
    from harness import api

    class _Sweep(api.Task):
        name = "sweep"
        Config = SweepConfig
        presets = PRESETS

    return api.make_config(_Sweep(), preset, sets)


def plan(cfg: SweepConfig) -> list[SweepRun]:
    """Every (shape, length) of the star: the centre once per length, then each arm's other values."""
    centre = {"width": cfg.width, "depth": cfg.depth, "mlp_dim": cfg.mlp_dim}
    arms = {"width": cfg.widths, "depth": cfg.depths, "mlp_dim": cfg.mlp_dims}
    if not cfg.steps or any(s < 1 for s in cfg.steps):
        raise HarnessError(f"sweep steps {cfg.steps}: give positive training lengths, e.g. --set steps=250,500,1000")
    shapes = [("centre", dict(centre))]
    for k in DIMENSIONS:
        for v in sorted(set(arms[k]) - {centre[k]}):
            if v < 1:
                raise HarnessError(f"sweep {k} value {v} must be >= 1")
            shapes.append((k, {**centre, k: int(v)}))
    for _, s in shapes:
        if s["width"] % cfg.num_heads:
            raise HarnessError(f"sweep width {s['width']} is not a multiple of num_heads={cfg.num_heads}; "
                               "pick widths divisible by the heads")
    return [SweepRun(k, s["width"], s["depth"], s["mlp_dim"], int(n)) for k, s in shapes for n in sorted(set(cfg.steps))]


def model_gflops(cfg: SweepConfig, run: SweepRun, num_classes: int = 0) -> float:
    """GFLOPs of one training forward pass per image (encoder, MAP head and the pretraining classifier)."""
    return Shape(run.width, run.depth, run.mlp_dim, cfg.num_heads, cfg.patch_size, pool_type="map",
                 num_classes=num_classes).gflops(cfg.res)


def train_gflops(cfg: SweepConfig, run: SweepRun, num_classes: int = 0) -> float:
    return TRAIN_FLOPS_PER_FORWARD * model_gflops(cfg, run, num_classes) * run.steps * cfg.batch_size


def _pretrain_config(cfg: SweepConfig, run: SweepRun):
    from harness.train.pretrain import PretrainConfig

    return PretrainConfig(dataset=cfg.dataset, split=cfg.split, width=run.width, depth=run.depth,
                          mlp_dim=run.mlp_dim, num_heads=cfg.num_heads, patch_size=cfg.patch_size, res=cfg.res,
                          pool_type="map", targets=cfg.targets, steps=run.steps, batch_size=cfg.batch_size,
                          lr=cfg.lr, warmup_steps=max(1, round(cfg.warmup_frac * run.steps)), seed=cfg.seed)


def _finished_model(path: Path) -> dict | None:
    """The pretraining summary if the model at `path` is complete (the summary is written last)."""
    summary = Path(str(path) + ".json")
    if not (path.exists() and summary.exists()):
        return None
    try:
        return read_json(summary, what="pretraining summary", fix="it is retrained").require_obj().value
    except HarnessError:
        return None


def _remove_stale_records(folder: Path, tag: str, keep: Path) -> None:
    """Records of an earlier model of this run (retrained after an interruption, so other weights) would
    count twice in the fit: only the record of the current model stays."""
    for path in folder.glob("fewshot__*.json"):
        if path == keep:
            continue
        try:
            rec = read_json(path, what="result record", fix="it is skipped").require_obj()
            sweep_record = rec.obj("info", {}, null_is_default=True).raw("sweep")
            name = rec.obj("checkpoint", {}, null_is_default=True).raw("name")
        except HarnessError:
            continue
        if sweep_record and name == tag:
            log.warning("sweep: %s is a record of an earlier model of %s; removed", path.name, tag)
            path.unlink()


def run_sweep(cfg: SweepConfig, out_dir: str | Path, *, data_dir: str | None = None,
              cache_dir: str | Path | None = None, progress: bool = True,
              echo: Callable[[str], None] = print, pretrain_fn=None) -> list[dict]:
    """Trains and scores every run of `plan(cfg)` that is not already done; returns the sweep's records."""
    from harness import data
    from harness.run.runner import run_task
    from harness.train.pretrain import pretrain

    pretrain_fn = pretrain_fn or pretrain
    out_dir = Path(out_dir)
    runs = plan(cfg)
    data.require_prepared(cfg.dataset, data_dir)
    num_classes = data.get_info(cfg.dataset).num_classes or data.num_classes(cfg.dataset, data_dir)
    cfg_dict = json.loads(json.dumps(dataclasses.asdict(cfg), default=list))
    plan_path = out_dir / "plan.json"
    if plan_path.exists():
        try:
            old = read_json(plan_path, what="sweep plan", fix="it is rewritten").obj("config").value
        except HarnessError:
            old = None
        # Lengths or arms may grow between calls; a changed recipe would mix incomparable runs.
        recipe = [k for k in ("batch_size", "num_heads", "patch_size", "res", "dataset", "split", "targets", "lr",
                              "warmup_frac", "seed", "eval_preset", "eval_datasets", "metric")
                  if old and old.get(k) != cfg_dict[k]]
        if recipe:
            raise HarnessError(f"{out_dir} holds a sweep with other {', '.join(recipe)}; use a new --out folder "
                               "or the same settings")
    write_json_atomic(plan_path, {"config": cfg_dict, "runs": [dataclasses.asdict(r) | {"tag": r.tag}
                                                                      for r in runs]})
    total_pflops = sum(train_gflops(cfg, r, num_classes) for r in runs) / 1e6
    echo(f"sweep: {len(runs)} runs ({len({(r.width, r.depth, r.mlp_dim) for r in runs})} shapes x "
         f"{len(set(cfg.steps))} lengths), {total_pflops:.3g} PFLOPs of training, into {out_dir}")

    records = []
    for i, run in enumerate(runs):
        label = f"[{i + 1}/{len(runs)}] {run.dimension} {run.tag}"
        model_path = out_dir / "models" / f"{run.tag}.npz"
        state_dir = out_dir / "state" / run.tag
        t0 = time.perf_counter()
        summary = _finished_model(model_path)
        trained = summary is None
        if trained:
            summary = pretrain_fn(_pretrain_config(cfg, run), model_path, data_dir=data_dir, progress=progress,
                                  ckpt_dir=state_dir)
            shutil.rmtree(state_dir, ignore_errors=True)  # the finished .npz supersedes it
        sets = {"datasets": ",".join(cfg.eval_datasets)}
        if cfg.eval_max_test_examples:
            sets["max_test_examples"] = str(cfg.eval_max_test_examples)
        record, rec_path, reused = run_task("fewshot", str(model_path), preset=cfg.eval_preset, sets=sets,
                                            data_dir=data_dir, out_dir=out_dir / "records", cache_dir=cache_dir,
                                            progress=progress, name=run.tag)
        if cfg.metric not in record.get("metrics", {}):
            raise HarnessError(f"sweep metric {cfg.metric!r} is not among the few-shot metrics "
                               f"({', '.join(list(record['metrics'])[:4])}, ...); set --set metric=...")
        sweep_info = {
            "dimension": run.dimension, "value": getattr(run, run.dimension) if run.dimension != "centre" else None,
            "centre": [cfg.width, cfg.depth, cfg.mlp_dim], "train_steps": run.steps, "batch_size": cfg.batch_size,
            "examples_seen": run.steps * cfg.batch_size, "model_gflops": model_gflops(cfg, run, num_classes),
            "train_gflops": train_gflops(cfg, run, num_classes), "metric": cfg.metric,
            "pretrain_final_loss": summary.get("final_loss"), "pretrain_seconds": summary.get("seconds"),
            "dataset": cfg.dataset, "split": cfg.split,
        }
        if record.get("info", {}).get("sweep") != sweep_info:
            record.setdefault("info", {})["sweep"] = sweep_info
            write_json_atomic(rec_path, record)
        _remove_stale_records(out_dir / "records", run.tag, keep=rec_path)
        record["_path"] = str(rec_path)
        records.append(record)
        state = ("trained" if trained else "model reused") + (", record reused" if reused else ", evaluated")
        echo(f"{label}: {state} in {time.perf_counter() - t0:.0f}s; {cfg.metric} = "
             f"{record['metrics'][cfg.metric]['value']:.2f}")
    return records


def describe_plan(cfg: SweepConfig, num_classes: int | None = None) -> str:
    """The runs of a sweep with their compute, for `harness sweep --dry-run` (nothing is trained)."""
    from harness import data

    runs = plan(cfg)
    if num_classes is None:
        num_classes = data.get_info(cfg.dataset).num_classes or 0
    lines = ["| arm | width | depth | MLP | steps | examples | model GFLOPs | training GFLOPs |", "|---" * 8 + "|"]
    for r in runs:
        lines.append(f"| {r.dimension} | {r.width} | {r.depth} | {r.mlp_dim} | {r.steps} | {r.steps * cfg.batch_size} "
                     f"| {model_gflops(cfg, r, num_classes):.4g} | {train_gflops(cfg, r, num_classes):.4g} |")
    total = sum(train_gflops(cfg, r, num_classes) for r in runs)
    lines += ["", f"{len(runs)} runs, {total / 1e6:.3g} PFLOPs of training in all (3 x forward GFLOPs x examples; "
              f"classifier of {num_classes} classes included)."]
    return "\n".join(lines) + "\n"
