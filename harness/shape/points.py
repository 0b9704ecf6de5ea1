"""Sweep records -> the scaling law's points, and the fit of every arm of a star sweep.

Input records (`points_from_records`): result records of the sweep's pretraining runs carry
`rec["info"]["sweep"]`, see that function.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from harness.errors import HarnessError
from harness.models.variants import Shape, rep_width
from harness.shape.fit import FitResult, bootstrap_fit, check_points, fit_law, held_out_error
from harness.shape.law import DIMENSIONS

log = logging.getLogger("harness")


def points_from_records(records: list[dict], metric: str, *,
                        dimension: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t, f) of one arm of a star sweep, from result records.

    Expected fields of a record (written by `harness sweep`):
      rec["info"]["sweep"] = {"dimension": "width"|"depth"|"mlp_dim"|"centre", "train_gflops": float, ...}
        ("centre" runs belong to every arm); t = train_gflops, the pretraining compute in GFLOPs. If it is
        absent, t = 3 * rec["checkpoint"]["gflops"] * sweep["examples_seen"] (forward + backward ~ 3x
        forward): keep one convention within a sweep, since only ratios of t matter for s.
      rec["checkpoint"]["config"][dimension]: x.
      rec["metrics"][metric] = {"value", "unit", "higher_is_better"}: an accuracy in % becomes the error
        in %, f = 100 - value (the paper's 10-shot error); a lower-is-better metric (a loss,
        log-perplexity) is used as is.
    Records of other arms are left out silently; records outside a sweep or without the metric are left
    out with one warning each kind. Several records of one checkpoint (re-evaluations) count once: the
    newest.
    """
    if dimension not in DIMENSIONS:
        raise HarnessError(f"unknown shape dimension {dimension!r}; use one of {', '.join(DIMENSIONS)}")
    xs, ts, fs = [], [], []
    no_sweep, no_metric = [], []
    for rec in _newest_per_checkpoint(records, metric):
        name = rec.get("_path") or rec.get("checkpoint", {}).get("name", "?")
        sweep = (rec.get("info") or {}).get("sweep")
        if not isinstance(sweep, dict):
            no_sweep.append(name)
            continue
        if sweep.get("dimension") not in (dimension, "centre"):
            continue
        m = (rec.get("metrics") or {}).get(metric)
        if not m or m.get("value") is None:
            no_metric.append(name)
            continue
        ckpt = rec.get("checkpoint") or {}
        cfg = ckpt.get("config") or {}
        if dimension not in cfg:
            raise HarnessError(f"{name}: checkpoint config has no {dimension!r}; rerun the sweep with a "
                               "harness that records the encoder config")
        if sweep.get("train_gflops") is not None:
            t = float(sweep["train_gflops"])
        elif sweep.get("examples_seen") is not None and _record_gflops(ckpt) is not None:
            t = 3.0 * _record_gflops(ckpt) * float(sweep["examples_seen"])
        else:
            raise HarnessError(f"{name}: sweep info has neither train_gflops nor examples_seen; rerun "
                               "`harness sweep` so records carry the training compute")
        value = float(m["value"])
        if m.get("higher_is_better", True):
            if m.get("unit", "%") != "%":
                raise HarnessError(f"metric {metric!r} is higher-is-better in {m.get('unit')!r}, not a % "
                                   "accuracy; fit an accuracy (%) or a loss (lower is better)")
            f = 100.0 - value
        else:
            f = value
        xs.append(float(cfg[dimension]))
        ts.append(t)
        fs.append(f)
    if no_sweep:
        log.warning("scaling: %d record(s) are not from a sweep (no info.sweep), left out: %s",
                    len(no_sweep), ", ".join(map(str, no_sweep[:3])) + (" ..." if len(no_sweep) > 3 else ""))
    if no_metric:
        log.warning("scaling: %d sweep record(s) lack metric %r, left out: %s", len(no_metric), metric,
                    ", ".join(map(str, no_metric[:3])) + (" ..." if len(no_metric) > 3 else ""))
    if not xs:
        raise HarnessError(f"no sweep records with metric {metric!r} for dimension {dimension!r}; check the "
                           "folder and the metric name (see `harness report`)")
    return np.array(xs), np.array(ts), np.array(fs)


def _record_gflops(ckpt: dict) -> float | None:
    """Forward GFLOPs per image of a record's encoder: recounted from its config where possible, since the
    record's own `gflops` is rounded to 3 decimals (too coarse for proxy-sized models)."""
    cfg = ckpt.get("config") or {}
    try:
        patch = cfg["patch_size"]
        patch = int(patch[0] if isinstance(patch, list | tuple) else patch)
        return Shape(int(cfg["width"]), int(cfg["depth"]), int(cfg["mlp_dim"]), int(cfg["num_heads"]), patch,
                     pool_type=cfg.get("pool_type", "map"), posemb=cfg.get("posemb", "learn"),
                     rep_size=rep_width(cfg.get("rep_size"), int(cfg["width"])),
                     num_classes=int(cfg.get("num_classes") or 0)).gflops(int(cfg["res"]))
    except (KeyError, TypeError, ValueError):
        return float(ckpt["gflops"]) if ckpt.get("gflops") is not None else None


def _newest_per_checkpoint(records: list[dict], metric: str) -> list[dict]:
    by_ckpt: dict = {}
    order = []
    for rec in records:
        sha = (rec.get("checkpoint") or {}).get("sha256")
        key = sha if sha and metric in (rec.get("metrics") or {}) else id(rec)
        if key not in by_ckpt:
            order.append(key)
        elif str(rec.get("created", "")) < str(by_ckpt[key].get("created", "")):
            continue
        by_ckpt[key] = rec
    dropped = len(records) - len(order)
    if dropped:
        log.warning("scaling: %d older record(s) of an already-counted checkpoint left out", dropped)
    return [by_ckpt[k] for k in order]


def sweep_metric(records: list[dict]) -> str:
    """The metric the sweep that wrote `records` was run for (its info.sweep.metric)."""
    names = {(r.get("info") or {}).get("sweep", {}).get("metric") for r in records
             if isinstance((r.get("info") or {}).get("sweep"), dict)}
    names.discard(None)
    if len(names) != 1:
        raise HarnessError("the records do not name one sweep metric" + (f" ({', '.join(sorted(names))})" if names
                           else "") + "; pass --metric, e.g. --metric fewshot/proxy_scenes/10shot")
    return names.pop()


@dataclasses.dataclass
class SweepAnalysis:
    """Per-dimension fits of one sweep, with the evidence `harness shape` reports."""

    metric: str
    points: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    fits: dict[str, FitResult]
    intervals: dict[str, dict[str, tuple[float, float]]]
    held_out: dict[str, float]  # random 20% of the points
    extrapolation: dict[str, float]  # the 20% of largest training compute, fitted on the rest
    skipped: dict[str, str]  # dimension -> why it was not fitted
    quantity: str  # what f is, e.g. "100 - fewshot/proxy_scenes/10shot (error, %)"


def analyse_sweep(records: list[dict], metric: str | None = None, *, bootstrap: int = 100, seed: int = 0,
                  restarts: int = 20) -> SweepAnalysis:
    """Fits the law to every arm of a star sweep found in `records`; arms with too few points are skipped
    (named in `skipped`), and it is an error only if none can be fitted."""
    metric = metric or sweep_metric(records)
    points, fits, intervals, held_out, extrapolation, skipped = {}, {}, {}, {}, {}, {}
    for k in DIMENSIONS:
        try:
            x, t, f = points_from_records(records, metric, dimension=k)
            check_points(x, t, f)
        except HarnessError as e:
            skipped[k] = str(e)
            continue
        points[k] = (x, t, f)
        fits[k] = fit_law(x, t, f, restarts=restarts, seed=seed)
        if bootstrap:
            intervals[k] = bootstrap_fit(x, t, f, n=bootstrap, seed=seed)
        n_out = max(1, round(0.2 * len(f)))
        if len(f) - n_out >= 8:
            held_out[k] = held_out_error(x, t, f, frac=0.2, seed=seed)
            largest = np.argsort(t, kind="stable")[-n_out:]
            try:
                extrapolation[k] = held_out_error(x, t, f, held_out=largest, seed=seed)
            except HarnessError:  # the rest lacks the spread to fit: no extrapolation figure
                pass
    if not fits:
        first = next(iter(skipped.values()))
        raise HarnessError(f"no arm of the sweep could be fitted for {metric!r} ({', '.join(skipped)}); "
                           f"first: {first}")
    m = next((r["metrics"][metric] for r in records if metric in (r.get("metrics") or {})), {})
    quantity = f"error (%) = 100 - {metric}" if m.get("higher_is_better", True) else metric
    return SweepAnalysis(metric, points, fits, intervals, held_out, extrapolation, skipped, quantity)
