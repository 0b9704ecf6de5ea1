"""What `harness shape` prints: the fit of a sweep (parameters with intervals, s_k against the paper's,
held-out errors) and the recommended shapes, as Markdown; optionally the plots."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.shape.fit import FitResult
from harness.shape.law import DIMENSIONS, PAPER_EXPONENTS, PAPER_START, PARAM_NAMES
from harness.shape.plots import plot_fit, plot_frontier
from harness.shape.points import analyse_sweep
from harness.shape.recommend import exponents_of, recommend_shape, sovit_budgets, with_reference


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
    rows = [with_reference(recommend_shape(b, exponents=exponents, start=start, num_heads=num_heads, patch=patch,
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
