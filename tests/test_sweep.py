"""Tests for the star sweep driver (harness/shape/sweep.py) and `harness sweep`: a real tiny sweep, resume."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import HarnessError
from harness.models.variants import Shape
from harness.shape import sweep as sw
from harness.shape.points import points_from_records

METRIC = "fewshot/proxy_scenes/tiny/1shot"


def test_proxy_plan_is_a_star():
    cfg = sw.make_config("proxy")
    runs = sw.plan(cfg)
    centre = (cfg.width, cfg.depth, cfg.mlp_dim)
    assert len(runs) == 39 and len({r.tag for r in runs}) == 39
    assert len({(r.width, r.depth, r.mlp_dim) for r in runs}) == 13
    for r in runs:
        shape = (r.width, r.depth, r.mlp_dim)
        if r.dimension == "centre":
            assert shape == centre
        else:  # exactly the named dimension differs from the centre
            k = ("width", "depth", "mlp_dim").index(r.dimension)
            assert [i for i in range(3) if shape[i] != centre[i]] == [k]
    assert sorted({r.steps for r in runs}) == [100, 200, 400]
    # Each arm with the centre: 5 sizes x 3 lengths, enough for the 7-parameter law.
    assert sum(r.dimension in ("width", "centre") for r in runs) == 15


def test_plan_and_config_errors():
    with pytest.raises(HarnessError, match="multiple of num_heads"):
        sw.plan(sw.make_config("proxy", {"widths": "30"}))
    with pytest.raises(HarnessError, match="positive training lengths"):
        sw.plan(sw.make_config("proxy", {"steps": "0"}))
    with pytest.raises(HarnessError, match="no setting 'widht'"):
        sw.make_config("proxy", {"widht": "3"})
    cfg = sw.make_config("proxy", {"widths": "32,64", "depths": "", "mlp_dims": "", "steps": "10"})
    assert [r.tag for r in sw.plan(cfg)] == ["w64-d6-m256-s10", "w32-d6-m256-s10"]  # the centre value is not repeated


def test_training_compute_is_three_forward_passes_per_example():
    cfg = sw.make_config("proxy")
    run = sw.SweepRun("width", 96, 6, 256, 200)
    # By hand: 64 tokens, width 96, MLP 256, 6 blocks; MAP head; 24-class classifier.
    n, d, m = 64, 96, 256
    fwd = 2 * n * 8 * 8 * 3 * d + 6 * (8 * n * d * d + 4 * n * n * d + 4 * n * d * m)
    fwd += 2 * 2 * d * d + 2 * 2 * n * d * d + 2 * 2 * n * d + 4 * d * m + 2 * d * 24
    assert sw.model_gflops(cfg, run, 24) == pytest.approx(fwd / 1e9, rel=1e-12)
    assert sw.train_gflops(cfg, run, 24) == pytest.approx(3 * fwd / 1e9 * 200 * 32, rel=1e-12)


def test_dry_run_lists_every_run():
    out = CliRunner().invoke(main, ["sweep", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("| arm |") and out.output.count("\n| ") == 39  # header, then a row per run
    assert "| centre | 64 | 6 | 256 | 400 | 12800 |" in out.output and "39 runs" in out.output


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A real sweep: 2 shapes x 1 length, pretrained on proxy_scenes/tiny and scored few-shot, via the CLI."""
    root = tmp_path_factory.mktemp("sweep")
    args = ["sweep", "--preset", "tiny", "--set", "steps=3", "--out", str(root / "sweep"),
            "--data-dir", str(root / "tfds"), "--cache-dir", str(root / "cache")]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    return dict(root=root, out=root / "sweep", args=args, output=out.output)


def _records(out):
    from harness.report.records import load_records
    return load_records(out / "records")


@pytest.mark.heavy
def test_tiny_sweep_writes_fittable_records(tiny_sweep):
    recs = _records(tiny_sweep["out"])
    assert len(recs) == 2 and "2 sweep records" in tiny_sweep["output"]
    by_width = {r["checkpoint"]["config"]["width"]: r for r in recs}
    assert set(by_width) == {16, 8}
    for width, rec in by_width.items():
        info = rec["info"]["sweep"]
        assert info["dimension"] == ("centre" if width == 16 else "width")
        assert info["train_steps"] == 3 and info["batch_size"] == 8 and info["examples_seen"] == 24
        # An independent count: the encoder as the record describes it (24-class pretraining head).
        fwd = Shape(width, 1, 32, 4, 8, num_classes=24).gflops(64)
        assert info["train_gflops"] == pytest.approx(3 * fwd * 24, rel=1e-12)
        assert info["metric"] == METRIC and np.isfinite(info["pretrain_final_loss"])
        assert rec["task"]["name"] == "fewshot" and rec["task"]["config"]["datasets"] == ["proxy_scenes/tiny"]
        assert rec["checkpoint"]["name"] == f"w{width}-d1-m32-s3"
        assert 0 <= rec["metrics"][METRIC]["value"] <= 100
    plan = json.loads((tiny_sweep["out"] / "plan.json").read_text())
    assert [r["tag"] for r in plan["runs"]] == ["w16-d1-m32-s3", "w8-d1-m32-s3"]
    x, t, f = points_from_records(recs, METRIC, dimension="width")
    assert sorted(x.tolist()) == [8.0, 16.0]
    assert sorted(f.tolist()) == sorted(100 - r["metrics"][METRIC]["value"] for r in recs)
    # Two runs cannot be fitted: the CLI says so in one line, exit code 2.
    out = CliRunner().invoke(main, ["shape", "--from", str(tiny_sweep["out"] / "records")])
    assert out.exit_code == 2 and "too few" in out.output and len(out.output.strip().splitlines()) == 1


@pytest.mark.heavy
def test_rerun_skips_finished_work_and_redoes_only_the_broken(tiny_sweep):
    cfg = sw.make_config("tiny", {"steps": "3"})
    kw = dict(data_dir=str(tiny_sweep["root"] / "tfds"), cache_dir=str(tiny_sweep["root"] / "cache"),
              progress=False, echo=lambda m: None)
    before = {r["checkpoint"]["sha256"]: r["metrics"][METRIC]["value"] for r in _records(tiny_sweep["out"])}

    def no_training(*a, **k):
        raise AssertionError("a finished model was trained again")

    lines = []
    again = sw.run_sweep(cfg, tiny_sweep["out"], pretrain_fn=no_training, **{**kw, "echo": lines.append})
    assert {r["checkpoint"]["sha256"]: r["metrics"][METRIC]["value"] for r in again} == before
    assert all("model reused, record reused" in line for line in lines[1:]) and len(lines) == 3

    # A model whose summary never got written (killed while saving) is trained again; the other is not.
    from harness.train.pretrain import pretrain

    trained = []

    def counting(pcfg, out, **k):
        trained.append(pcfg.width)
        return pretrain(pcfg, out, **k)

    (tiny_sweep["out"] / "models" / "w8-d1-m32-s3.npz.json").unlink()
    sw.run_sweep(cfg, tiny_sweep["out"], pretrain_fn=counting, **kw)
    assert trained == [8]
    recs = _records(tiny_sweep["out"])  # a retrained model's old record (if its weights differ) is gone
    assert sorted(r["checkpoint"]["name"] for r in recs) == ["w16-d1-m32-s3", "w8-d1-m32-s3"]

    # Another recipe into the same folder would mix incomparable runs.
    with pytest.raises(HarnessError, match="other batch_size"):
        sw.run_sweep(sw.make_config("tiny", {"steps": "3", "batch_size": "4"}), tiny_sweep["out"], **kw)
