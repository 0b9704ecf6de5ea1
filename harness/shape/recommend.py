"""The recommended shape for a compute budget: the paper's rule for scaling a start shape by the
exponents s_k (`harness.shape.law`), and the paper's SoViTs to compare with."""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from harness.errors import HarnessError
from harness.models.variants import Shape
from harness.shape.fit import FitResult
from harness.shape.law import DIMENSIONS, PAPER_EXPONENTS, PAPER_START, SOVIT_SHAPES


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


def sovit_budgets(*, patch: int = 14, res: int = 224, pool_type: str = "map") -> dict[str, float]:
    """GFLOPs per image of the paper's SoViTs (16 heads): 71.4 and 220.4 at 224 px, patch 14, MAP head."""
    return {name: Shape(*dims, num_heads=16, patch=patch, pool_type=pool_type).gflops(res)
            for name, dims in SOVIT_SHAPES.items()}


def with_reference(row: dict, *, exponents_are_paper: bool) -> dict:
    """Marks a recommendation made at a SoViT's own compute (paper setting) with that SoViT's shape."""
    if not exponents_are_paper or (row["num_heads"], row["patch"], row["res"]) != (16, 14, 224):
        return row
    for name, gflops in sovit_budgets().items():
        if abs(row["gflops_budget"] / gflops - 1) < 0.01:
            w, d, m = SOVIT_SHAPES[name]
            return {**row, "reference": {"name": name, "width": w, "depth": d, "mlp_dim": m}}
    return row
