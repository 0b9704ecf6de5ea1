"""The paper's shape scaling law: fit it to a sweep, and turn its exponents into a recommended shape.

Per shape dimension x (width, depth or MLP size) and training compute t, Section 3 of "Getting ViT in
Shape" models a downstream loss as

    f(x, t) = alpha * x^-a + (beta * x^b + xi) * t^-c + eps,        all seven parameters > 0,

fitted by minimising the relative error. At fixed t the loss is lowest at
x*(t) = (alpha*a*t^c / (beta*b))^(1/(a+b)), so x* ~ t^s with s = c / (a+b).

Shapes are then scaled the paper's way: start from a small compute-optimal shape and, to scale compute by
tau, grow dimension k by tau^(s_k/D) (equal compute shares w_k = 1/D over the D dimensions).

Input records (`points_from_records`): result records of the sweep's pretraining runs carry
`rec["info"]["sweep"]`, see that function. numpy + scipy only at import; matplotlib inside the plot functions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.models.variants import Shape, rep_width

log = logging.getLogger("harness")

DIMENSIONS = ("width", "depth", "mlp_dim")

# s_k = c/(a_k+b_k) as fitted in the paper (v5): ImageNet 10-shot error, and multitask decoding
# log-perplexity.
PAPER_EXPONENTS: dict[str, dict[str, float]] = {
    "classification": {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6},
    "decoding": {"width": 0.25, "depth": 0.49, "mlp_dim": 0.62},
}

# The small compute-optimal shape of the paper's grid sweep (width, depth, MLP).
PAPER_START = (608, 10, 928)

# The paper's shapes, for comparing recommendations: (width, depth, mlp_dim), 16 heads, patch 14.
SOVIT_SHAPES = {"SoViT-150m/14": (880, 18, 2320), "SoViT-400m/14": (1152, 27, 4304)}


# ----------------------------------------------------------------------------------------------------
# The law.

@dataclasses.dataclass(frozen=True)
class LawParams:
    """Parameters of f(x, t) = alpha*x^-a + (beta*x^b + xi)*t^-c + eps; all > 0."""

    alpha: float
    a: float
    beta: float
    b: float
    xi: float
    c: float
    eps: float

    @property
    def s(self) -> float:
        """Exponent of the compute-optimal size: x* ~ t^s."""
        return self.c / (self.a + self.b)

    def as_array(self) -> np.ndarray:
        return np.array(dataclasses.astuple(self), dtype=np.float64)

    @classmethod
    def from_array(cls, values: Iterable[float]) -> LawParams:
        return cls(*(float(v) for v in values))


PARAM_NAMES = tuple(f.name for f in dataclasses.fields(LawParams))


def law(x, t, params: LawParams) -> np.ndarray:
    """The loss the law predicts at size x and compute t (arrays broadcast)."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    p = params
    return p.alpha * x ** -p.a + (p.beta * x ** p.b + p.xi) * t ** -p.c + p.eps


def optimum(t, params: LawParams) -> np.ndarray:
    """x*(t) = (alpha*a*t^c / (beta*b))^(1/(a+b)), the size with the lowest predicted loss at compute t."""
    p = params
    t = np.asarray(t, dtype=np.float64)
    return (p.alpha * p.a * t ** p.c / (p.beta * p.b)) ** (1.0 / (p.a + p.b))


@dataclasses.dataclass(frozen=True)
class FitResult:
    params: LawParams
    train_rel_rmse: float  # sqrt(mean(((pred - f)/f)^2)) on the fitted points
    loss: float  # the minimised objective, sum(((pred - f)/f)^2)
    n_points: int
    restarts: int

    @property
    def s(self) -> float:
        return self.params.s

    def optimum(self, t) -> np.ndarray:
        return optimum(t, self.params)

    def predict(self, x, t) -> np.ndarray:
        return law(x, t, self.params)


# ----------------------------------------------------------------------------------------------------
# Fitting.

# Search box for the log-parameters of the *normalised* problem (x and t divided by their geometric
# means, so that coefficients are of the order of the loss whatever the units). Exponents are kept in
# [1e-3, 8]: beyond that the law is a step function and the fit is meaningless anyway.
_LOG_EXPONENT_BOUNDS = (np.log(1e-3), np.log(8.0))
_LOG_COEF_BOUNDS = (-40.0, 40.0)
_EXPONENT_IDX = (1, 3, 5)


def _bounds() -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(7, _LOG_COEF_BOUNDS[0])
    hi = np.full(7, _LOG_COEF_BOUNDS[1])
    lo[list(_EXPONENT_IDX)] = _LOG_EXPONENT_BOUNDS[0]
    hi[list(_EXPONENT_IDX)] = _LOG_EXPONENT_BOUNDS[1]
    return lo, hi


def _terms(theta: np.ndarray, lx: np.ndarray, lt: np.ndarray):
    alpha, a, beta, b, xi, c, eps = np.exp(theta)
    size_term = alpha * np.exp(-a * lx)
    mixed_term = beta * np.exp(b * lx - c * lt)
    data_term = xi * np.exp(-c * lt)
    return (alpha, a, beta, b, xi, c, eps), size_term, mixed_term, data_term


def _residuals(theta, lx, lt, f):
    (*_, eps), size_term, mixed_term, data_term = _terms(theta, lx, lt)
    return (size_term + mixed_term + data_term + eps) / f - 1.0


def _jacobian(theta, lx, lt, f):
    # d pred / d log(param): each term times its log-derivative.
    (_, a, _, b, _, c, eps), size_term, mixed_term, data_term = _terms(theta, lx, lt)
    jac = np.stack([
        size_term,
        size_term * (-a * lx),
        mixed_term,
        mixed_term * (b * lx),
        data_term,
        (mixed_term + data_term) * (-c * lt),
        np.full_like(lx, eps),
    ], axis=1)
    return jac / f[:, None]


def _random_start(rng: np.random.Generator, f_scale: float) -> np.ndarray:
    """A random log-parameter vector of the normalised problem, in the range real sweeps land in."""
    a, b, c = np.exp(rng.uniform(np.log(0.05), np.log(3.0), size=3))
    alpha, beta, xi, eps = f_scale * np.exp(rng.uniform(np.log(1e-2), np.log(2.0), size=4))
    return np.log([alpha, a, beta, b, xi, c, eps])


def _to_normalised(p: LawParams, x0: float, t0: float) -> np.ndarray:
    # x = x0*x', t = t0*t': alpha' = alpha*x0^-a, beta' = beta*x0^b*t0^-c, xi' = xi*t0^-c.
    return np.log([p.alpha * x0 ** -p.a, p.a, p.beta * x0 ** p.b * t0 ** -p.c, p.b, p.xi * t0 ** -p.c, p.c, p.eps])


def _from_normalised(theta: np.ndarray, x0: float, t0: float) -> LawParams:
    alpha, a, beta, b, xi, c, eps = np.exp(theta)
    return LawParams(alpha * x0 ** a, a, beta * x0 ** -b * t0 ** c, b, xi * t0 ** c, c, eps)


def _check_points(x, t, f) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t, f = (np.asarray(v, dtype=np.float64).ravel() for v in (x, t, f))
    if not (len(x) == len(t) == len(f)):
        raise HarnessError(f"x, t and f have different lengths ({len(x)}, {len(t)}, {len(f)}); "
                           "pass one value of each per training run")
    if len(x) < 8:
        raise HarnessError(f"{len(x)} points are too few to fit the 7-parameter scaling law; "
                           "sweep at least ~6 sizes at 2-3 compute budgets")
    for name, v in (("x", x), ("t", t), ("f", f)):
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise HarnessError(f"the scaling law needs positive finite {name} values; "
                               f"got {v[~(np.isfinite(v) & (v > 0))][:3].tolist()}")
    if len(np.unique(x)) < 3 or len(np.unique(t)) < 2:
        raise HarnessError("the sweep needs >= 3 distinct sizes and >= 2 distinct compute budgets to "
                           "separate the size and compute terms; add runs")
    return x, t, f


def fit_law(x, t, f, *, restarts: int = 20, seed: int = 0, init: LawParams | None = None) -> FitResult:
    """Least relative-squared-error fit of the law, over log-parameters (so all stay > 0).

    `restarts` random starts (plus `init` when given, tried first) each run scipy's bounded
    least_squares; the lowest objective wins. x and t are normalised by their geometric means inside,
    so the result does not depend on units (GFLOPs vs EFLOPs).
    """
    from scipy.optimize import least_squares

    x, t, f = _check_points(x, t, f)
    x0, t0 = float(np.exp(np.log(x).mean())), float(np.exp(np.log(t).mean()))
    lx, lt = np.log(x / x0), np.log(t / t0)
    lo, hi = _bounds()
    rng = np.random.default_rng(seed)
    starts = [np.clip(_to_normalised(init, x0, t0), lo, hi)] if init is not None else []
    starts += [_random_start(rng, float(np.median(f))) for _ in range(max(restarts, 0))]
    if not starts:
        raise HarnessError("fit_law needs restarts >= 1 or an init; pass restarts=20")
    best = None
    for theta0 in starts:
        try:
            sol = least_squares(_residuals, np.clip(theta0, lo, hi), jac=_jacobian, bounds=(lo, hi),
                                args=(lx, lt, f), method="trf", x_scale="jac", max_nfev=2000)
        except (ValueError, FloatingPointError):  # a start that overflows is just a bad start
            continue
        loss = float(np.sum(sol.fun ** 2))
        if np.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, sol.x)
    if best is None:
        raise HarnessError("every start of the scaling-law fit failed numerically; check that f is a loss "
                           "of order 0.01-10 and that x, t are positive")
    loss, theta = best
    return FitResult(params=_from_normalised(theta, x0, t0), train_rel_rmse=float(np.sqrt(loss / len(f))),
                     loss=loss, n_points=len(f), restarts=len(starts))


def bootstrap_fit(x, t, f, *, n: int = 100, seed: int = 0, restarts: int = 4) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of every parameter and of s over `n` resample-with-replacement refits.

    Each refit starts from the full-data fit (and `restarts` random starts), so few restarts suffice.
    Returns {"alpha": (lo, hi), ..., "eps": (lo, hi), "s": (lo, hi)}.
    """
    x, t, f = _check_points(x, t, f)
    full = fit_law(x, t, f, restarts=max(restarts, 8), seed=seed)
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        idx = rng.integers(0, len(f), len(f))
        # A resample can lose the spread the law needs; such a draw says nothing about the fit: redraw.
        for _ in range(20):
            if len(np.unique(x[idx])) >= 3 and len(np.unique(t[idx])) >= 2:
                break
            idx = rng.integers(0, len(f), len(f))
        fit = fit_law(x[idx], t[idx], f[idx], restarts=restarts, seed=seed + 1 + i, init=full.params)
        samples.append([*fit.params.as_array(), fit.s])
    samples = np.asarray(samples)
    lo, hi = np.percentile(samples, [2.5, 97.5], axis=0)
    return {name: (float(lo[j]), float(hi[j])) for j, name in enumerate((*PARAM_NAMES, "s"))}


def held_out_error(x, t, f, *, frac: float = 0.2, seed: int = 0, restarts: int = 10,
                   held_out: Iterable[int] | None = None) -> float:
    """Relative RMSE, sqrt(mean(((pred - f)/f)^2)), on points left out of the fit.

    By default a random `frac` of the points; `held_out` names them instead (e.g. the largest-compute
    runs, to check extrapolation).
    """
    x, t, f = _check_points(x, t, f)
    if held_out is not None:
        out = np.unique(np.asarray(list(held_out), dtype=int))
        if len(out) == 0 or out.min() < 0 or out.max() >= len(f):
            raise HarnessError(f"held-out indices must be in [0, {len(f)}); got {list(held_out)[:5]}")
    else:
        if not 0.0 < frac < 1.0:
            raise HarnessError(f"held-out fraction {frac} must be in (0, 1); e.g. 0.2")
        n_out = max(1, round(frac * len(f)))
        out = np.random.default_rng(seed).permutation(len(f))[:n_out]
    keep = np.setdiff1d(np.arange(len(f)), out)
    fit = fit_law(x[keep], t[keep], f[keep], restarts=restarts, seed=seed)
    rel = fit.predict(x[out], t[out]) / f[out] - 1.0
    return float(np.sqrt(np.mean(rel ** 2)))


# ----------------------------------------------------------------------------------------------------
# Sweep records -> points.

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
            _check_points(x, t, f)
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


# ----------------------------------------------------------------------------------------------------
# Shapes.

def _round_to(value: float, multiple: int) -> int:
    return max(multiple, multiple * round(value / multiple))


def scale_shape(tau: float, *, exponents: dict[str, float] = PAPER_EXPONENTS["classification"],
                start: tuple[float, float, float] = PAPER_START) -> dict[str, float]:
    """The paper's rule, unrounded: to scale compute by tau, grow dimension k by tau^(s_k/D), D = 3."""
    missing = [k for k in DIMENSIONS if k not in exponents]
    if missing:
        raise HarnessError(f"exponents lack {', '.join(missing)}; give s for width, depth and mlp_dim")
    d = len(DIMENSIONS)
    return {k: float(x0) * float(tau) ** (float(exponents[k]) / d) for k, x0 in zip(DIMENSIONS, start)}


def recommend_shape(gflops_budget: float, *, exponents: dict[str, float] = PAPER_EXPONENTS["classification"],
                    start: tuple[float, float, float] = PAPER_START, num_heads: int = 16, patch: int = 14,
                    res: int = 224, pool_type: str = "map", mlp_multiple: int = 8) -> dict:
    """The shape the paper's procedure gives for an encoder of `gflops_budget` GFLOPs per image.

    tau is solved numerically so that the (unrounded) shape `scale_shape(tau)` costs `gflops_budget` at
    `res`; since GFLOPs are not a power of tau, tau is not the model-GFLOPs ratio. In the paper's terms tau
    is the growth of *training* compute t (x_k* ~ t^s_k); the rest of it beyond the model's own growth
    (`gflops_ratio`) is longer training (`examples_ratio`). Rounded: depth to an int, MLP to a multiple of
    `mlp_multiple`, width to a multiple of `num_heads` (integer head dim); `gflops`/`params_m` are those
    of the rounded shape.
    """
    from scipy.optimize import brentq

    if not np.isfinite(gflops_budget) or gflops_budget <= 0:
        raise HarnessError(f"GFLOPs budget {gflops_budget} must be a positive number, e.g. 221")
    if any(float(exponents.get(k, 0)) <= 0 for k in DIMENSIONS):
        raise HarnessError(f"exponents {exponents} must all be > 0 (width, depth, mlp_dim)")

    def shape(dims: dict[str, float]) -> Shape:
        return Shape(width=dims["width"], depth=dims["depth"], mlp_dim=dims["mlp_dim"], num_heads=num_heads,
                     patch=patch, pool_type=pool_type)

    start_gflops = shape(scale_shape(1.0, exponents=exponents, start=start)).gflops(res)

    def gap(log_tau: float) -> float:
        return np.log(shape(scale_shape(np.exp(log_tau), exponents=exponents, start=start)).gflops(res) / gflops_budget)

    lo, hi = -1.0, 1.0
    for _ in range(200):  # GFLOPs grow monotonically with tau: widen the bracket until it holds the budget
        if gap(lo) < 0:
            break
        lo *= 2
    for _ in range(200):
        if gap(hi) > 0:
            break
        hi *= 2
    if not gap(lo) < 0 < gap(hi):
        raise HarnessError(f"no shape on the scaling path costs {gflops_budget} GFLOPs; pick a budget "
                           f"nearer the start's {start_gflops:.1f}")
    log_tau = brentq(gap, lo, hi, xtol=1e-10)
    tau = float(np.exp(log_tau))
    dims = scale_shape(tau, exponents=exponents, start=start)
    rounded = Shape(width=_round_to(dims["width"], num_heads), depth=max(1, round(dims["depth"])),
                    mlp_dim=_round_to(dims["mlp_dim"], mlp_multiple), num_heads=num_heads, patch=patch,
                    pool_type=pool_type)
    gflops = rounded.gflops(res)
    return {"width": rounded.width, "depth": rounded.depth, "mlp_dim": rounded.mlp_dim, "num_heads": num_heads,
            "patch": patch, "res": res, "params_m": rounded.num_params(res) / 1e6, "gflops": gflops,
            "gflops_budget": float(gflops_budget), "tau": tau, "gflops_ratio": gflops / start_gflops,
            "examples_ratio": tau / (gflops / start_gflops), "unrounded": dims}


def exponents_of(fits: dict[str, FitResult]) -> dict[str, float]:
    """{"width": s, ...} from fits keyed by dimension, for `recommend_shape(exponents=...)`."""
    return {k: float(fit.s) for k, fit in fits.items()}


# ----------------------------------------------------------------------------------------------------
# Plots.

def _compute_levels(t: np.ndarray) -> tuple[np.ndarray, bool]:
    """The distinct compute budgets if there are few (a sweep at fixed budgets), else 4 spread levels."""
    distinct = np.unique(np.round(np.log(t), 6))
    if len(distinct) <= 6:
        return np.exp(distinct), True
    return np.geomspace(t.min(), t.max(), 4), False


def plot_fit(x, t, f, fit: FitResult, path, dimension: str, *, metric: str | None = None):
    """Loss vs the dimension with the fitted law at each compute budget; x*(t) marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, t, f = (np.asarray(v, dtype=np.float64) for v in (x, t, f))
    levels, discrete = _compute_levels(t)
    cmap = plt.get_cmap("viridis")
    lt_lo, lt_hi = np.log(t.min()), np.log(t.max())

    def colour(tv):
        return cmap(0.0 if lt_hi == lt_lo else (np.log(tv) - lt_lo) / (lt_hi - lt_lo) * 0.9)

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, 200)
    for level in levels:
        ax.plot(grid, fit.predict(grid, level), color=colour(level), lw=1.5, label=f"t = {level:.3g}")
        xs = fit.optimum(level)
        if grid[0] <= xs <= grid[-1]:
            ax.plot([xs], fit.predict(xs, level), marker="*", ms=12, color=colour(level), mec="k")
    ax.scatter(x, f, c=[colour(v) for v in t], edgecolors="k", zorder=3, s=28)
    ax.set_xscale("log")
    ax.set_xlabel(dimension)
    ax.set_ylabel(metric or "loss (lower is better)", fontsize=8)
    kind = "compute budgets" if discrete else "compute levels (points coloured by their t)"
    ax.set_title(f"{dimension}: s = {fit.s:.3f}, rel. RMSE {fit.train_rel_rmse:.3%}; curves at {kind}",
                 fontsize=9)
    ax.legend(fontsize=8, title="training compute t", title_fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_frontier(path, exponents: dict[str, float] = PAPER_EXPONENTS["classification"],
                  budgets: Iterable[float] = tuple(np.geomspace(10, 2000, 25)), **shape_kwargs):
    """Recommended width / depth / MLP (rounded) vs model GFLOPs, with the SoViTs marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = np.asarray(list(budgets), dtype=np.float64)
    rows = [recommend_shape(b, exponents=exponents, **shape_kwargs) for b in budgets]
    gflops = np.array([r["gflops"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    for ax, k in zip(axes, DIMENSIONS):
        ax.plot(gflops, [r[k] for r in rows], "-o", ms=3, label=f"s = {exponents[k]:.2f}")
        paper_setting = (shape_kwargs.get("patch", 14), shape_kwargs.get("res", 224)) == (14, 224)
        for j, (name, dims) in enumerate(SOVIT_SHAPES.items() if paper_setting else ()):
            ref = Shape(*dims, num_heads=16, patch=14, pool_type=shape_kwargs.get("pool_type", "map"))
            ax.plot([ref.gflops(224)], [dims[DIMENSIONS.index(k)]], marker="sD"[j],
                    mfc="none", mec="C3", ls="none", ms=8, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"model GFLOPs @{shape_kwargs.get('res', 224)}")
        ax.set_title(k)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("compute-optimal shape (paper's rule from the start shape)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------------------------------
# Report.

def _cell(value: float, interval: tuple[float, float] | None) -> str:
    return f"{value:.4g}" + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")


def format_shape_report(fits: dict[str, FitResult], *, intervals: dict[str, dict] | None = None,
                        held_out: dict[str, float] | None = None, recommendations: list[dict] | None = None,
                        metric: str | None = None, task_kind: str = "classification",
                        extrapolation: dict[str, float] | None = None) -> str:
    """Markdown for the CLI: fitted parameters (with 95% intervals), s_k vs the paper's, held-out errors
    (random 20%, and the 20% of largest compute fitted on the rest), and the recommended shapes (rows of
    `recommend_shape`, optionally with a `reference` shape to compare with)."""
    intervals, held_out, extrapolation = intervals or {}, held_out or {}, extrapolation or {}
    paper = PAPER_EXPONENTS.get(task_kind, {})
    lines = []
    if fits:
        lines += [f"## Scaling-law fit{f' of {metric}' if metric else ''}", ""]
        header = ["dimension", "points", *PARAM_NAMES, "s = c/(a+b)", "paper s", "train rel. RMSE",
                  "held-out rel. RMSE", "largest-compute rel. RMSE"]
        lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for k, fit in fits.items():
            iv = intervals.get(k, {})
            ho = held_out.get(k)
            row = [k, str(fit.n_points), *(_cell(getattr(fit.params, n), iv.get(n)) for n in PARAM_NAMES),
                   _cell(fit.s, iv.get("s")), f"{paper[k]:.2f}" if k in paper else "-",
                   f"{fit.train_rel_rmse:.2%}", f"{ho:.2%}" if ho is not None else "-",
                   f"{extrapolation[k]:.2%}" if k in extrapolation else "-"]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", f"Intervals: 95% bootstrap percentiles. x*(t) ~ t^s; paper s: {task_kind} (v5). "
                  "Held-out: relative RMSE on a random 20% of the runs left out of the fit; largest-compute: "
                  "the 20% of runs with the most training compute, predicted from the others."]
    if recommendations:
        lines += [""] if lines else []
        header = ["GFLOPs budget", "width", "depth", "MLP", "heads", "patch", "res", "params (M)", "GFLOPs", "tau",
                  "model GFLOPs x", "examples x"]
        with_ref = any(r.get("reference") for r in recommendations)
        if with_ref:
            header += ["paper shape", "width / depth / MLP vs paper"]
        lines += ["## Recommended shapes", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        for r in recommendations:
            row = [f"{r['gflops_budget']:.4g}", *(str(r[k]) for k in ("width", "depth", "mlp_dim", "num_heads",
                                                                       "patch", "res")),
                   f"{r['params_m']:.4g}", f"{r['gflops']:.4g}", f"{r['tau']:.3g}", f"{r['gflops_ratio']:.3g}",
                   f"{r['examples_ratio']:.3g}"]
            if with_ref:
                ref = r.get("reference")
                row += [f"{ref['name']} ({ref['width']}/{ref['depth']}/{ref['mlp_dim']})",
                        " / ".join(f"{r[k] / ref[k]:.2f}" for k in DIMENSIONS)] if ref else ["-", "-"]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", ("tau: the training-compute factor of the paper's rule (dimension k grows by tau^(s_k/3)) "
                       "from the start shape; 'model GFLOPs x' is the encoder's own growth, 'examples x' the "
                       "implied growth of training examples.")]
    return "\n".join(lines) + "\n"


def sovit_budgets(*, patch: int = 14, res: int = 224, pool_type: str = "map") -> dict[str, float]:
    """GFLOPs per image of the paper's SoViTs (16 heads): 71.4 and 220.4 at 224 px, patch 14, MAP head."""
    return {name: Shape(*dims, num_heads=16, patch=patch, pool_type=pool_type).gflops(res)
            for name, dims in SOVIT_SHAPES.items()}


def _with_reference(row: dict, *, exponents_are_paper: bool) -> dict:
    """Marks a recommendation made at a SoViT's own compute (paper setting) with that SoViT's shape."""
    if not exponents_are_paper or (row["num_heads"], row["patch"], row["res"]) != (16, 14, 224):
        return row
    for name, gflops in sovit_budgets().items():
        if abs(row["gflops_budget"] / gflops - 1) < 0.01:
            w, d, m = SOVIT_SHAPES[name]
            return {**row, "reference": {"name": name, "width": w, "depth": d, "mlp_dim": m}}
    return row


def shape_report(*, budgets: Iterable[float] = (), kind: str = "classification", records: list[dict] | None = None,
                 metric: str | None = None, start: tuple[float, float, float] = PAPER_START, num_heads: int = 16,
                 patch: int = 14, res: int = 224, bootstrap: int = 100, seed: int = 0,
                 plots_dir: str | Path | None = None) -> str:
    """Everything `harness shape` prints: the fit of `records` (if given) and shapes for `budgets`
    (default: the SoViTs' compute), using the fitted exponents or else the paper's for `kind`."""
    if kind not in PAPER_EXPONENTS:
        raise HarnessError(f"unknown exponent kind {kind!r}; use one of {', '.join(PAPER_EXPONENTS)}")
    budgets = [float(b) for b in budgets] or list(sovit_budgets(patch=patch, res=res).values())
    exponents = dict(PAPER_EXPONENTS[kind])
    lines = []
    analysis = None
    if records is not None:
        analysis = analyse_sweep(records, metric, bootstrap=bootstrap, seed=seed)
        exponents.update(exponents_of(analysis.fits))
        for k, why in analysis.skipped.items():
            lines.append(f"- {k}: not fitted ({why}); the paper's {kind} s = {PAPER_EXPONENTS[kind][k]:.2f} is used.")
    source = "fitted" if analysis else f"paper ({kind})"
    rows = [_with_reference(recommend_shape(b, exponents=exponents, start=start, num_heads=num_heads, patch=patch,
                                            res=res), exponents_are_paper=analysis is None and tuple(start) == PAPER_START)
            for b in budgets]
    text = format_shape_report(analysis.fits if analysis else {},
                               intervals=analysis.intervals if analysis else None,
                               held_out=analysis.held_out if analysis else None,
                               extrapolation=analysis.extrapolation if analysis else None,
                               recommendations=rows, metric=analysis.metric if analysis else None, task_kind=kind)
    head = [f"Exponents ({source}): " + ", ".join(f"s_{k} = {exponents[k]:.3f}" for k in DIMENSIONS)
            + f"; start shape {'/'.join(str(round(v)) for v in start)}, {num_heads} heads, patch {patch}, {res} px.",
            ""]
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        written = []
        if analysis:
            for k, fit in analysis.fits.items():
                x, t, f = analysis.points[k]
                written.append(plot_fit(x, t, f, fit, plots_dir / f"fit_{k}.png", k, metric=analysis.quantity))
        lo, hi = min(budgets), max(budgets)
        grid = np.geomspace(min(lo, 10.0) / 2, max(hi, 700.0) * 2, 25)
        written.append(plot_frontier(plots_dir / "frontier.png", exponents, grid, start=start, num_heads=num_heads,
                                     patch=patch, res=res))
        lines += ["", "Plots: " + ", ".join(str(p) for p in written)]
    return "\n".join(head) + "\n" + text + ("\n".join(lines) + "\n" if lines else "")

