"""Fitting the scaling law (`harness.shape.law`) to (x, t, f) points: the least relative-squared-error
fit, bootstrap intervals and held-out errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
from scipy.optimize import least_squares

from harness.errors import HarnessError
from harness.shape.law import PARAM_NAMES, LawParams, law, optimum


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


def check_points(x, t, f) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    x, t, f = check_points(x, t, f)
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
    x, t, f = check_points(x, t, f)
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
    x, t, f = check_points(x, t, f)
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
