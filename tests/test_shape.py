"""Tests for the shape scaling law (harness/shape/: law, fit, points, recommend, plots, report): fit recovery
on synthetic sweeps, SoViT shapes."""

import logging

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.models.variants import Shape
from harness.shape.fit import bootstrap_fit, fit_law, held_out_error
from harness.shape.law import DIMENSIONS, PAPER_EXPONENTS, PARAM_NAMES, SOVIT_SHAPES, LawParams, law, optimum
from harness.shape.plots import plot_fit, plot_frontier
from harness.shape.points import analyse_sweep, points_from_records
from harness.shape.recommend import exponents_of, recommend_shape, scale_shape
from harness.shape.report import format_shape_report

C_TRUE = 0.65  # the paper's data exponent
CENTRE = {"width": 768.0, "depth": 16.0, "mlp_dim": 3072.0}
T_CENTRE = 1e9  # GFLOPs of training: the fit must not care about the units


def _truth(dimension: str) -> LawParams:
    """Known parameters with s = c/(a+b) equal to the paper's exponent for `dimension`.

    Built in units of the sweep centre (x' = x/CENTRE, t' = t/T_CENTRE) with the optimum at x' = 1 for
    t' = 1 (alpha*a = beta*b), then converted to real units.
    """
    s = PAPER_EXPONENTS["classification"][dimension]
    a = b = C_TRUE / s / 2
    beta, xi, eps = 0.1, 0.2, 0.1
    alpha = beta * b / a
    x0 = CENTRE[dimension]
    return LawParams(alpha * x0 ** a, a, beta * x0 ** -b * T_CENTRE ** C_TRUE, b, xi * T_CENTRE ** C_TRUE,
                     C_TRUE, eps)


def _star_arm(dimension: str, *, noise: float = 0.01, seed: int = 0):
    """One arm of a star sweep: 6 sizes spanning 16x (36x for MLP) around the centre, at 3 budgets 100x apart."""
    spread = {"width": 4.0, "depth": 4.0, "mlp_dim": 6.0}[dimension]  # x* moves ~t^s: wider for larger s
    xs = CENTRE[dimension] * np.geomspace(1 / spread, spread, 6)
    ts = T_CENTRE * np.array([0.1, 1.0, 10.0])
    x, t = (v.ravel() for v in np.meshgrid(xs, ts))
    p = _truth(dimension)
    f = law(x, t, p) * (1.0 + noise * np.random.default_rng(seed).normal(size=x.size))
    return x, t, f, p


def test_law_optimum_is_the_minimum_at_fixed_compute():
    p = _truth("depth")
    for t in (1e8, 1e9, 1e10):
        grid = np.geomspace(0.5, 2000, 200_001)
        best = grid[np.argmin(law(grid, t, p))]
        assert optimum(t, p) == pytest.approx(best, rel=1e-3)
    # x* ~ t^s: ten times the compute moves the optimum by 10^s.
    assert optimum(1e10, p) / optimum(1e9, p) == pytest.approx(10 ** p.s, rel=1e-9)
    assert p.s == pytest.approx(0.45)


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_fit_recovers_exponent_and_optimum(dimension):
    x, t, f, p = _star_arm(dimension)
    fit = fit_law(x, t, f, restarts=10, seed=0)
    assert all(v > 0 for v in fit.params.as_array())
    # Tolerances: over 200 noise draws of this design the largest |s error| was 0.008 / 0.045 / 0.064
    # (width / depth / MLP); this draw must be within 0.05, and x* within 10% at every budget.
    assert abs(fit.s - p.s) < 0.05, (fit.s, p.s)
    for level in np.unique(t):
        assert fit.optimum(level) == pytest.approx(optimum(level, p), rel=0.10)
    # 1% noise: a fit at the noise level, not below it (overfitting) nor far above (a bad optimum).
    assert 0.005 < fit.train_rel_rmse < 0.015
    assert fit.n_points == 18


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_fit_recovery_over_many_noise_draws(dimension):
    """The recovery is not one lucky draw: 40 noise draws, 5 restarts each (~1 s per dimension).

    Measured over 500 draws: |s error| median 0.002 / 0.010 / 0.014, 90th percentile 0.004 / 0.024 / 0.034
    (width / depth / MLP); x* error at the middle budget median 0.5% / 1.7% / 2.3%.
    """
    s_err, opt_err = [], []
    for seed in range(40):
        x, t, f, p = _star_arm(dimension, seed=seed)
        fit = fit_law(x, t, f, restarts=5, seed=seed)
        s_err.append(abs(fit.s - p.s))
        opt_err.append(abs(fit.optimum(T_CENTRE) / optimum(T_CENTRE, p) - 1))
    assert np.median(s_err) < 0.02
    assert np.percentile(s_err, 90) < 0.05
    assert np.median(opt_err) < 0.05


def test_fit_is_exact_without_noise_and_unit_free():
    x, t, f, p = _star_arm("mlp_dim", noise=0.0)
    fit = fit_law(x, t, f, restarts=10)
    assert fit.train_rel_rmse < 1e-6
    assert fit.s == pytest.approx(p.s, abs=1e-3)
    # The same sweep in other units (EFLOPs, thousands of channels) gives the same s and x*.
    fit2 = fit_law(x / 1e3, t / 1e9, f, restarts=10)
    assert fit2.s == pytest.approx(fit.s, abs=1e-4)
    assert fit2.optimum(1.0) * 1e3 == pytest.approx(fit.optimum(1e9), rel=1e-3)


def test_fit_on_a_realistic_sweep_where_compute_grows_with_the_model():
    """Training compute = 3 x model GFLOPs x examples: at a fixed training length t differs per width."""
    centre = {"width": 1968, "depth": 40, "mlp_dim": 6144}
    widths = 1968 / 1.5 ** np.arange(6)
    examples = np.array([1e8, 4e8, 1.6e9])
    w, e = (v.ravel() for v in np.meshgrid(widths, examples))
    t = np.array([3 * Shape(int(wi), centre["depth"], centre["mlp_dim"], 16, 14).gflops(224) for wi in w]) * e
    s_true, a = 0.22, 0.65 / 0.22 / 2
    wm, tm = np.exp(np.log(w).mean()), np.exp(np.log(t).mean())
    p = LawParams(0.1 * wm ** a, a, 0.1 * wm ** -a * tm ** 0.65, a, 0.2 * tm ** 0.65, 0.65, 0.1)
    f = law(w, t, p) * (1 + 0.01 * np.random.default_rng(1).normal(size=w.size))
    fit = fit_law(w, t, f, restarts=10)
    assert abs(fit.s - s_true) < 0.03
    assert fit.optimum(tm) == pytest.approx(optimum(tm, p), rel=0.05)


def test_fit_minimises_the_relative_error():
    """At the fit, the relative objective is stationary in every log-parameter (an absolute-error fit
    would not be: here f is tilted 3x, so the two objectives weigh points very differently)."""
    x, t, f, _ = _star_arm("width", noise=0.03, seed=2)
    f = f * np.exp(np.linspace(0, np.log(3), f.size))  # off-law, so the two objectives disagree
    fit = fit_law(x, t, f, restarts=10)
    theta = np.log(fit.params.as_array())

    def rel_loss(th):
        return float(np.sum((law(x, t, LawParams.from_array(np.exp(th))) / f - 1) ** 2))

    assert rel_loss(theta) == pytest.approx(fit.loss, rel=1e-9)
    assert fit.train_rel_rmse == pytest.approx(np.sqrt(fit.loss / f.size))
    for k in range(7):
        for step in (1e-3, -1e-3):
            th = theta.copy()
            th[k] += step
            assert rel_loss(th) >= fit.loss * (1 - 1e-7), (PARAM_NAMES[k], step)


def test_restarts_correct_a_bad_start():
    x, t, f, p = _star_arm("depth")
    # Exponents at the top of the box: the optimiser stalls in a flat region from there.
    bad = LawParams(1.0, 7.9, 1.0, 7.9, 1.0, 7.9, 1e-6)
    stuck = fit_law(x, t, f, restarts=0, init=bad)
    assert stuck.train_rel_rmse > 0.1 and abs(stuck.s - p.s) > 0.5
    rescued = fit_law(x, t, f, restarts=5, init=bad)
    assert rescued.restarts == 6
    assert rescued.loss < stuck.loss / 100
    assert abs(rescued.s - p.s) < 0.05


def test_fit_keeps_parameters_positive_on_data_the_law_cannot_explain():
    rng = np.random.default_rng(3)
    x = np.repeat([1.0, 2, 4, 8, 16, 32], 3)
    t = np.tile([1.0, 10, 100], 6)
    f = rng.uniform(0.2, 0.8, size=x.size)  # no structure at all
    fit = fit_law(x, t, f, restarts=5)
    values = fit.params.as_array()
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert np.isfinite(fit.s) and fit.s > 0


def test_fit_rejects_bad_input():
    with pytest.raises(HarnessError, match="too few"):
        fit_law([1, 2, 3], [1, 1, 2], [0.5, 0.4, 0.3])
    x, t, f, _ = _star_arm("width")
    with pytest.raises(HarnessError, match="positive"):
        fit_law(x, t, -f)
    with pytest.raises(HarnessError, match="different lengths"):
        fit_law(x, t[:-1], f)
    with pytest.raises(HarnessError, match="distinct"):
        fit_law(x, np.full_like(t, 5.0), f)


def test_bootstrap_intervals_cover_the_truth():
    x, t, f, p = _star_arm("depth")
    iv = bootstrap_fit(x, t, f, n=20, seed=0, restarts=1)
    assert set(iv) == {*PARAM_NAMES, "s"}
    for name, (lo, hi) in iv.items():
        assert 0 < lo <= hi, name
    lo, hi = iv["s"]
    assert lo < p.s < hi
    assert hi - lo < 0.3  # informative, not the whole box
    assert iv["c"][0] < C_TRUE < iv["c"][1]


def test_held_out_error_separates_law_from_noise():
    x, t, f, _ = _star_arm("width")
    on_law = held_out_error(x, t, f, frac=0.2, seed=0, restarts=5)
    assert on_law < 0.03
    rng = np.random.default_rng(0)
    scrambled = held_out_error(x, t, rng.permutation(f), frac=0.2, seed=0, restarts=5)
    assert scrambled > 2 * on_law
    with pytest.raises(HarnessError, match="fraction"):
        held_out_error(x, t, f, frac=1.5)
    # The held-out points must not reach the fit: on exact data with the largest-compute runs doubled,
    # an honest fit predicts their undoubled value, so the error is exactly 1/2.
    x, t, f, _ = _star_arm("width", noise=0.0)
    largest = np.flatnonzero(t == t.max())
    f[largest] *= 2
    assert held_out_error(x, t, f, held_out=largest, restarts=5) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(HarnessError, match="indices"):
        held_out_error(x, t, f, held_out=[99])


# ----------------------------------------------------------------------------------------------------
# Shapes.

def _sovit_gflops(name: str) -> float:
    w, d, m = SOVIT_SHAPES[name]
    return Shape(w, d, m, 16, 14, pool_type="map").gflops(224)


def test_start_shape_is_the_fixed_point():
    start_gflops = Shape(608, 10, 928, 16, 14).gflops(224)
    r = recommend_shape(start_gflops)
    assert (r["width"], r["depth"], r["mlp_dim"]) == (608, 10, 928)
    assert r["tau"] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("name,max_ratio", [("SoViT-150m/14", 1.07), ("SoViT-400m/14", 1.16)])
def test_paper_procedure_lands_near_the_sovits(name, max_ratio):
    budget = _sovit_gflops(name)  # 71.4 and 220.4 GFLOPs at 224px, patch 14, MAP head
    r = recommend_shape(budget)
    ref = SOVIT_SHAPES[name]
    ratios = [r["width"] / ref[0], r["depth"] / ref[1], r["mlp_dim"] / ref[2]]
    # Measured: 150m -> (848, 19, 2256): 0.96 / 1.06 / 0.97; 400m -> (1056, 31, 4184): 0.92 / 1.15 / 0.97.
    assert all(1 / max_ratio <= q <= max_ratio for q in ratios), (r, ratios)
    assert r["gflops"] == pytest.approx(budget, rel=0.02)  # rounding costs < 2%
    assert r["width"] % 16 == 0 and r["mlp_dim"] % 8 == 0 and isinstance(r["depth"], int)
    ref_params = Shape(*ref, 16, 14).num_params(224) / 1e6
    assert r["params_m"] == pytest.approx(ref_params, rel=0.03)


def test_sovits_lie_on_one_ray_of_the_rule():
    """With exponents (0.246, 0.387, 0.6) (fitted to both SoViTs) the rule reproduces both within 2%."""
    implied = {"width": 0.246, "depth": 0.387, "mlp_dim": 0.6}
    for name, ref in SOVIT_SHAPES.items():
        r = recommend_shape(_sovit_gflops(name), exponents=implied)
        for got, want in zip((r["width"], r["depth"], r["mlp_dim"]), ref):
            assert got == pytest.approx(want, rel=0.02), (name, r)


def test_tau_is_training_compute_not_model_gflops():
    r = recommend_shape(221.0)
    # The rule grows dims by tau^(s_k/3); matching 221 GFLOPs needs tau far above the 14x model growth.
    assert r["gflops_ratio"] == pytest.approx(221.0 / Shape(608, 10, 928, 16, 14).gflops(224), rel=0.02)
    assert r["tau"] > 10 * r["gflops_ratio"]
    assert r["tau"] == pytest.approx(r["gflops_ratio"] * r["examples_ratio"])
    unrounded = scale_shape(r["tau"])
    assert Shape(unrounded["width"], unrounded["depth"], unrounded["mlp_dim"], 16, 14).gflops(224) == \
        pytest.approx(221.0, rel=1e-6)
    # MLP grows fastest, then depth, then width (the paper's rule of thumb).
    growth = [r["mlp_dim"] / 928, r["depth"] / 10, r["width"] / 608]
    assert growth == sorted(growth, reverse=True)


def test_recommend_shape_rejects_bad_budgets():
    with pytest.raises(HarnessError, match="positive"):
        recommend_shape(-3)
    with pytest.raises(HarnessError, match="> 0"):
        recommend_shape(100, exponents={"width": 0.2, "depth": 0.4})


# ----------------------------------------------------------------------------------------------------
# Records, plots, report.

def _record(dimension, x, train_gflops, value, *, metric="fewshot/proxy_scenes/10shot", unit="%", hib=True,
            sweep=True, examples_seen=None, centre=None):
    cfg = {"width": 64, "depth": 6, "mlp_dim": 256, "num_heads": 4, "patch_size": 8, "res": 64, **(centre or {})}
    if dimension in cfg:
        cfg[dimension] = x
    info = {}
    if sweep:
        info["sweep"] = {"dimension": dimension, "train_steps": 100, "batch_size": 8,
                         "examples_seen": examples_seen, "train_gflops": train_gflops, "metric": metric}
    return {"schema_version": 1, "checkpoint": {"name": f"run-{dimension}-{x}", "config": cfg, "gflops": 0.5},
            "metrics": {metric: {"value": value, "unit": unit, "higher_is_better": hib}},
            "task": {"config": {}}, "info": info}


def test_points_from_records(caplog):
    records = [
        _record("width", 32, 1e4, 60.0),
        _record("width", 48, 2e4, 65.0),
        _record("centre", 64, 3e4, 70.0),
        _record("depth", 3, 1e4, 50.0),  # another arm: silently not ours
        _record("width", 96, 1e4, 61.0, sweep=False),
        _record("width", 128, 1e4, 62.0, metric="other/metric"),
        _record("width", 80, None, 68.0, examples_seen=1000),  # compute from examples_seen
    ]
    with caplog.at_level(logging.WARNING, logger="harness"):
        x, t, f = points_from_records(records, "fewshot/proxy_scenes/10shot", dimension="width")
    np.testing.assert_array_equal(x, [32, 48, 64, 80])
    # Without train_gflops: 3 x forward GFLOPs x examples, the GFLOPs recounted from the config (the
    # record's rounded 0.5 would be wrong): 64 tokens, width 80, MLP 256, 6 blocks, MAP head, by hand.
    n, d, m = 64, 80, 256
    fwd = 2 * n * 8 * 8 * 3 * d + 6 * (8 * n * d * d + 4 * n * n * d + 4 * n * d * m)
    fwd += 2 * 2 * d * d + 2 * 2 * n * d * d + 2 * 2 * n * d + 4 * d * m
    np.testing.assert_allclose(t, [1e4, 2e4, 3e4, 3 * fwd / 1e9 * 1000], rtol=1e-12)
    np.testing.assert_allclose(f, [40.0, 35.0, 30.0, 32.0])  # 10-shot error = 100 - accuracy (%)
    text = caplog.text
    assert "not from a sweep" in text and "lack metric" in text
    # A loss (lower is better) is used as is; the centre run joins the depth arm too.
    losses = [_record(arm, d, 1e4, 2.5 - 0.1 * d, metric="loss", unit="nats", hib=False)
              for arm, d in (("depth", 2), ("depth", 4), ("width", 8), ("centre", 6))]
    x, t, f = points_from_records(losses, "loss", dimension="depth")
    np.testing.assert_allclose(f, [2.3, 2.1, 1.9])
    assert x.tolist() == [2, 4, 6]
    # A re-evaluated checkpoint counts once, with its newest record.
    old, new = _record("width", 40, 1e4, 50.0), _record("width", 40, 1e4, 55.0)
    for rec, created, sha in ((old, "2026-01-01T00:00:00", "abc"), (new, "2026-02-01T00:00:00", "abc")):
        rec["created"], rec["checkpoint"]["sha256"] = created, sha
    with caplog.at_level(logging.WARNING, logger="harness"):
        x, _, f = points_from_records([new, old], "fewshot/proxy_scenes/10shot", dimension="width")
    assert x.tolist() == [40] and f.tolist() == [45.0] and "older record" in caplog.text
    with pytest.raises(HarnessError, match="no sweep records"):
        points_from_records(records, "missing/metric", dimension="width")
    with pytest.raises(HarnessError, match="unknown shape dimension"):
        points_from_records(records, "loss", dimension="heads")


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_and_report(tmp_path):
    x, t, f, _ = _star_arm("mlp_dim")
    fit = fit_law(x, t, f, restarts=5)
    out = plot_fit(x, t, f, fit, tmp_path / "fit_mlp.png", "mlp_dim", metric="10-shot error")
    assert _is_png(out)
    # Scattered compute (t grows with the model): curves at spread levels, points coloured by t.
    t_scattered = t * np.geomspace(0.7, 1.4, t.size)
    assert _is_png(plot_fit(x, t_scattered, f, fit, tmp_path / "scattered.png", "mlp_dim"))
    frontier = plot_frontier(tmp_path / "sub" / "frontier.png", PAPER_EXPONENTS["classification"],
                                     [20, 71.4, 220.4, 700])
    assert _is_png(frontier)

    iv = {"mlp_dim": bootstrap_fit(x, t, f, n=5, restarts=1)}
    recs = [recommend_shape(b) for b in (71.4, 220.4)]
    report = format_shape_report({"mlp_dim": fit}, intervals=iv, held_out={"mlp_dim": 0.0123},
                                         recommendations=recs, metric="10-shot error")
    assert f"{fit.s:.4g}" in report and "1.23%" in report and "0.60" in report
    lo, hi = iv["mlp_dim"]["s"]
    assert f"[{lo:.3g}, {hi:.3g}]" in report
    assert f"| {recs[1]['width']} | {recs[1]['depth']} | {recs[1]['mlp_dim']} |" in report
    assert report.count("\n| ") == 2 + 3  # header + 1 fit row, header + 2 shapes


# ----------------------------------------------------------------------------------------------------
# A whole synthetic star sweep as result records: analysis and `harness shape`.

SYNTH_CENTRE = {"width": 768, "depth": 16, "mlp_dim": 3072, "num_heads": 16, "patch_size": 14, "res": 224}
ERROR_SCALE = 60.0  # the truths' f ~ 0.5 becomes a 10-shot error of ~30%


def _synthetic_sweep(*, dims=DIMENSIONS, noise=0.01, seed=0) -> tuple[list[dict], dict]:
    """Each arm from its own known law (so every arm carries its own centre point, tagged with the arm)."""
    records, truths = [], {}
    for j, k in enumerate(dims):
        x, t, _, p = _star_arm(k, noise=0.0)
        x = np.round(x)
        f = law(x, t, p) * (1 + noise * np.random.default_rng(seed + j).normal(size=x.size))
        truths[k] = p
        for i, (xi, ti, fi) in enumerate(zip(x, t, f)):
            rec = _record(k, int(xi), float(ti), 100.0 - ERROR_SCALE * float(fi), centre=SYNTH_CENTRE)
            rec["checkpoint"]["sha256"] = f"{k}-{i}"
            records.append(rec)
    return records, truths


def _write(records, folder):
    from harness.files import write_json_atomic

    for i, rec in enumerate(records):
        write_json_atomic(folder / f"fewshot__{i:04d}.json", rec)
    return folder


def test_analyse_sweep_recovers_every_exponent_from_records():
    records, truths = _synthetic_sweep()
    a = analyse_sweep(records, bootstrap=20, seed=0)
    assert a.metric == "fewshot/proxy_scenes/10shot" and not a.skipped
    assert a.quantity == "error (%) = 100 - fewshot/proxy_scenes/10shot"
    for k, p in truths.items():
        fit = a.fits[k]
        assert fit.n_points == 18
        assert abs(fit.s - p.s) < 0.05, (k, fit.s, p.s)  # the tolerance of test_fit_recovers_exponent_...
        lo, hi = a.intervals[k]["s"]
        assert lo < p.s < hi, (k, lo, hi)
        # 1% noise: held-out error near the noise. Extrapolating the 4 largest-compute points from a fit
        # with only 2 others at that budget is harder: over 5 noise draws 0.6%-10% (width worst).
        assert a.held_out[k] < 0.03 and a.extrapolation[k] < 0.15, (k, a.held_out[k], a.extrapolation[k])
        # Error in % scaled by 60: the fitted law is the truth times 60, wherever the optimum is.
        assert fit.optimum(T_CENTRE) == pytest.approx(optimum(T_CENTRE, p), rel=0.10)
    assert exponents_of(a.fits) == pytest.approx(PAPER_EXPONENTS["classification"], abs=0.05)


def _table_column(text: str, title: str, column: str) -> dict[str, str]:
    """{first cell: cell of `column`} of the markdown table under `## title`."""
    block = text.split(f"## {title}", 1)[1].strip().splitlines()
    header = [c.strip() for c in block[0].strip("|").split("|")]
    out = {}
    for line in block[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[header.index(column)]
    return out


def test_cli_shape_with_the_paper_exponents():
    from click.testing import CliRunner

    from harness.cli import main

    out = CliRunner().invoke(main, ["shape"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "s_width = 0.220, s_depth = 0.450, s_mlp_dim = 0.600" in text and "Scaling-law fit" not in text
    # The two SoViT budgets, each next to the paper's shape (ratios width / depth / MLP).
    assert "| 848 | 19 | 2256 | 16 | 14 | 224 | 135 |" in text and "SoViT-150m/14 (880/18/2320) | 0.96 / 1.06 / 0.97 |" in text
    assert "| 1056 | 31 | 4184 | 16 | 14 | 224 |" in text and "SoViT-400m/14 (1152/27/4304) | 0.92 / 1.15 / 0.97 |" in text
    params = _table_column(text, "Recommended shapes", "params (M)")
    assert float(params["71.4"]) == pytest.approx(Shape(848, 19, 2256, 16, 14).num_params(224) / 1e6, abs=0.06)

    out = CliRunner().invoke(main, ["shape", "--budget", "35", "--budget", "1000", "--kind", "decoding"])
    assert out.exit_code == 0, out.output
    assert "s_width = 0.250, s_depth = 0.490, s_mlp_dim = 0.620" in out.output
    gflops = _table_column(out.output, "Recommended shapes", "GFLOPs")
    assert set(gflops) == {"35", "1000"} and "paper shape" not in out.output
    for budget, got in gflops.items():
        assert float(got) == pytest.approx(float(budget), rel=0.02)

    for bad in (["--start", "608,10"], ["--budget", "-5"], ["--from", "/nonexistent/runs"]):
        out = CliRunner().invoke(main, ["shape", *bad])
        assert out.exit_code == 2 and out.output.startswith("error: ") and out.output.count("\n") == 1, out.output


def test_cli_shape_from_a_folder_of_sweep_records(tmp_path):
    from click.testing import CliRunner

    from harness.cli import main

    records, truths = _synthetic_sweep()
    folder = _write(records, tmp_path / "records")
    args = ["shape", "--from", str(folder), "--bootstrap", "10", "--plots", str(tmp_path / "plots"),
            "-o", str(tmp_path / "shape.md"), "--budget", "220.4"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    text = out.output
    assert text.startswith("Exponents (fitted)") and (tmp_path / "shape.md").read_text() == text
    s_cells = _table_column(text, "Scaling-law fit of fewshot/proxy_scenes/10shot", "s = c/(a+b)")
    fitted = {k: float(v.split()[0]) for k, v in s_cells.items()}
    for k, p in truths.items():
        assert abs(fitted[k] - p.s) < 0.05
    # The recommendation follows the fitted exponents (printed to 4 digits), from the paper's start.
    r = recommend_shape(220.4, exponents=fitted)
    assert f"| {r['width']} | {r['depth']} | {r['mlp_dim']} |" in text
    for name in ("fit_width", "fit_depth", "fit_mlp_dim", "frontier"):
        assert _is_png(tmp_path / "plots" / f"{name}.png")

    # Only the width arm swept: the other dimensions fall back to the paper's exponents, and it says so.
    width_only = _write(_synthetic_sweep(dims=("width",))[0], tmp_path / "width_only")
    out = CliRunner().invoke(main, ["shape", "--from", str(width_only), "--bootstrap", "0"])
    assert out.exit_code == 0, out.output
    assert "depth: not fitted" in out.output and "s_depth = 0.450" in out.output
