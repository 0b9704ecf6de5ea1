"""The scaling law's plots (PNG, matplotlib imported when one is drawn): a fit per dimension, and the
recommended shapes against compute."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.models.variants import Shape
from harness.shape.fit import FitResult
from harness.shape.law import DIMENSIONS, PAPER_EXPONENTS, SOVIT_SHAPES
from harness.shape.recommend import recommend_shape


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
