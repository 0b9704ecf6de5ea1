"""`harness check`, the regression gate: an unchanged run passes, an injected regression fails naming the
metric, each tolerance rule (flag, per-metric, confidence band, unit default) decides as documented, and
a baseline written from runs gates those runs."""

import copy
import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import HarnessError
from harness.report import baseline
from harness.report import check as chk
from harness.report.records import load_records

GOLDEN = Path(__file__).parent / "data" / "report_golden"
RECORDS = GOLDEN / "records"
BASELINE = GOLDEN / "baseline.json"


@pytest.fixture()
def sovit_runs(tmp_path):
    """A run folder with the SoViT proxy checkpoint's records only."""
    out = tmp_path / "runs"
    out.mkdir()
    for f in RECORDS.glob("*.json"):
        if json.loads(f.read_text())["checkpoint"]["name"] == "sovit_proxy.npz":
            shutil.copy(f, out / f.name)
    return out


def _edit(folder: Path, metric: str, fn):
    """Changes one metric's value in the newest record of `folder` that has it."""
    recs = [(json.loads(f.read_text()), f) for f in folder.glob("*.json")]
    rec, f = max(((r, f) for r, f in recs if metric in r["metrics"]), key=lambda rf: rf[0]["created"])
    rec["metrics"][metric]["value"] = fn(rec["metrics"][metric]["value"])
    f.write_text(json.dumps(rec))


def test_unchanged_run_passes_and_prints_table(sovit_runs):
    r = CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(BASELINE)])
    assert r.exit_code == 0, r.output
    assert "| checkpoint | metric |" in r.output
    assert "check passed: 5 metric(s)" in r.output
    # the margins by hand: fewshot/proxy_digits/10shot 80.25 vs 81.5 with its own tolerance 2.0
    assert "| sovit_proxy.npz | fewshot/proxy_digits/10shot | % | 81.50 | 80.25 | -1.25 | 2.00 | baseline tolerance | ok |" \
        in r.output


def test_injected_regression_fails_naming_the_metric(sovit_runs):
    # default tolerance for % is 1.0 point: 61.4167 - 1.5 = 59.9167 is 0.083 below 60: within it
    _edit(sovit_runs, "fewshot/proxy_scenes/10shot", lambda v: v - 1.5)
    assert CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(BASELINE)]).exit_code == 0
    # 1.0 more: 58.9167 is 1.083 below the baseline 60 -> regressed
    _edit(sovit_runs, "fewshot/proxy_scenes/10shot", lambda v: v - 1.0)
    # lower-is-better: log-perplexity 2.672 -> 2.772 is 0.022 above 2.75 (allowed 0.01)
    _edit(sovit_runs, "coco_captioning/log_perplexity", lambda v: v + 0.1)
    r = CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(BASELINE)])
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("check FAILED: 2 of 5 metric(s) regressed")
    assert "fewshot/proxy_scenes/10shot (sovit_proxy.npz: 60 -> 58.92" in last
    assert "coco_captioning/log_perplexity (sovit_proxy.npz: 2.75 -> 2.772" in last
    assert "fewshot/proxy_digits/10shot" not in last
    assert r.output.count("REGRESSED") == 2
    # a looser flag lets both through; it overrides the baseline's per-metric rules
    r = CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(BASELINE), "--tolerance", "1.5"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(BASELINE), "--rel-tolerance", "0.015"])
    # 1.5% of 60 = 0.9 < 1.083 fails; 1.5% of 2.75 = 0.041 > 0.022 passes
    last = r.output.strip().splitlines()[-1]
    assert r.exit_code == 1 and "fewshot/proxy_scenes/10shot" in last and "log_perplexity" not in last


def test_other_checkpoint_regresses_and_missing_metrics_fail():
    res = chk.check(load_records(RECORDS), baseline.load_baseline(BASELINE))
    assert not res.ok
    named = {(r.checkpoint, r.name, r.reason) for r in res.regressions}
    assert named == {
        ("vit_b_proxy.npz", "fewshot/proxy_scenes/10shot", "worse"),  # 58.25 vs 60, allowed 1.0
        ("vit_b_proxy.npz", "vqa/proxy_scenes/accuracy", "worse"),  # 47.5 below the band's lower edge 48
        ("vit_b_proxy.npz", "coco_captioning/cider", "missing"),
        ("vit_b_proxy.npz", "coco_captioning/log_perplexity", "missing"),
    }
    assert any("sha256 b7b7b7b7b7b7 differs" in n for n in res.notes)


def test_rules_by_hand():
    e = {"value": 60.0, "higher_is_better": True, "unit": "%", "ci95": [48.0, 71.0]}
    assert chk.allowed_drop(e) == (12.0, "baseline ci95")  # 60 - 48
    assert chk.allowed_drop({**e, "higher_is_better": False}) == (11.0, "baseline ci95")  # 71 - 60
    assert chk.allowed_drop({**e, "tolerance": 0.5}) == (0.5, "baseline tolerance")
    assert chk.allowed_drop(e, tolerance=2.0) == (2.0, "--tolerance")
    assert chk.allowed_drop(e, tolerance=2.0, rel_tolerance=0.1)[0] == 6.0  # max(2, 0.1 * 60)
    assert chk.allowed_drop({"value": 0.5, "unit": "raw"}) == (0.01, "default (raw)")
    assert chk.allowed_drop({"value": 200.0, "unit": "images_per_s"})[0] == pytest.approx(2.0)
    base = {"schema": baseline.BASELINE_SCHEMA, "checkpoint": {"name": "m"},
            "metrics": {"t/a": {"value": 50.0, "unit": "%"}, "t/loss": {"value": 1.0, "unit": "nats",
                                                                          "higher_is_better": False}}}

    def rec(a, loss):
        return {"schema_version": 1, "created": "x", "checkpoint": {"name": "m"}, "task": {"name": "t"},
                "metrics": {"t/a": {"value": a, "unit": "%"},
                            "t/loss": {"value": loss, "unit": "nats", "higher_is_better": False}}}

    assert chk.check([rec(49.0, 1.01)], base).ok  # exactly at both limits passes
    assert not chk.check([rec(48.99, 1.0)], base).ok
    assert not chk.check([rec(50.0, 1.0101)], base).ok
    assert [r.status for r in chk.check([rec(52.0, 0.5)], base).rows] == ["better", "better"]
    nan = chk.check([rec(float("nan"), 1.0)], base)  # a NaN metric is a failure, not a pass
    assert not nan.ok and nan.regressions[0].reason == "not finite"


def test_write_baseline_then_gate(sovit_runs, tmp_path):
    out = tmp_path / "baselines" / "proxy.json"
    r = CliRunner().invoke(main, ["check", str(sovit_runs), "--write-baseline", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == baseline.BASELINE_SCHEMA and doc["checkpoint"]["name"] == "sovit_proxy.npz"
    assert set(doc["tasks"]) == {"fewshot", "vqa", "coco_captioning"}
    assert not any(m.endswith("/std") or "/seed-" in m for m in doc["metrics"])
    # per-example metrics carry their bootstrap band; corpus BLEU-4 does not
    assert "ci95" in doc["metrics"]["vqa/proxy_scenes/accuracy"]
    assert "ci95" not in doc["metrics"]["coco_captioning/bleu4"]
    assert r.output.startswith(f"wrote {out}: 15 metric(s)")
    assert CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(out)]).exit_code == 0
    _edit(sovit_runs, "fewshot/proxy_digits/25shot", lambda v: v - 3.0)
    r = CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(out)])
    assert r.exit_code == 1 and "fewshot/proxy_digits/25shot" in r.output.splitlines()[-1]
    # --tolerance at write time is stored per metric
    doc = baseline.make_baseline(load_records(sovit_runs), tolerance=0.25)
    assert all(m["tolerance"] == 0.25 for m in doc["metrics"].values())


def test_baseline_from_a_run_folder(sovit_runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(sovit_runs, other)
    assert CliRunner().invoke(main, ["check", str(other), "--baseline", str(sovit_runs)]).exit_code == 0
    _edit(other, "vqa/proxy_scenes/yes_no", lambda v: v - 5)
    r = CliRunner().invoke(main, ["check", str(other), "--baseline", str(sovit_runs)])
    assert r.exit_code == 1 and "vqa/proxy_scenes/yes_no" in r.output.splitlines()[-1]


@pytest.mark.parametrize("args,msg", [
    (["check", "RUNS"], "--baseline FILE is required"),
    (["check", "RUNS", "--baseline", "/no/such.json"], "no such baseline file"),
    (["check", "RUNS", "--baseline", "BAD"], "not a baseline file"),
    (["check", "RUNS", "--baseline", "BASELINE", "--tolerance", "-1"], "must be a finite number >= 0"),
    (["check", "RUNS", "--write-baseline", "OUT"], "a baseline is one checkpoint"),
    (["check", "/no/such/runs", "--baseline", "BASELINE"], "no such file or folder"),
])
def test_errors_one_line_exit_2(args, msg, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "something-else"}))
    subs = {"RUNS": str(RECORDS), "BAD": str(bad), "BASELINE": str(BASELINE), "OUT": str(tmp_path / "b.json")}
    r = CliRunner().invoke(main, [subs.get(a, a) for a in args])
    assert r.exit_code == 2, r.output
    assert msg in r.output and len(r.output.strip().splitlines()) == 1


def test_validate_baseline_rejects_bad_values():
    good = baseline.load_baseline(BASELINE)
    bad = copy.deepcopy(good)
    bad["metrics"]["coco_captioning/cider"]["value"] = "0.5"
    with pytest.raises(HarnessError, match="no numeric 'value'"):
        baseline.validate_baseline(bad, "b.json")
    bad = copy.deepcopy(good)
    bad["metrics"]["coco_captioning/cider"]["tolerance"] = -0.1
    with pytest.raises(HarnessError, match="bad tolerance"):
        baseline.validate_baseline(bad, "b.json")
    assert math.isclose(good["metrics"]["coco_captioning/cider"]["value"], 0.5)


def test_gate_on_a_real_fewshot_run(tmp_path, monkeypatch):
    """End to end: a real (cheap) fewshot run, a baseline written from it, a forced identical rerun that
    passes, and a regression injected into the rerun's record that fails."""
    from harness.models.encoder import load_encoder

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    ck = load_encoder("random:0", width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=8, res=16,
                      pool_type="map").save(str(tmp_path / "tiny.npz"))
    run = ["run", "--task", "fewshot", "--ckpt", ck, "--preset", "proxy", "--set", "datasets=proxy_digits",
           "--set", "shots=1,5", "--set", "seeds=0,1", "--out"]
    r = CliRunner().invoke(main, [*run, str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    base = tmp_path / "proxy.json"
    assert CliRunner().invoke(main, ["check", str(tmp_path / "a"), "--write-baseline", str(base)]).exit_code == 0
    assert set(json.loads(base.read_text())["metrics"]) == {"fewshot/proxy_digits/1shot", "fewshot/proxy_digits/5shot"}
    r = CliRunner().invoke(main, [*run, str(tmp_path / "b"), "--force"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["check", str(tmp_path / "b"), "--baseline", str(base)])
    assert r.exit_code == 0, r.output
    assert "| +0.00 |" in r.output  # the features and the probe are deterministic: no drift at all
    _edit(tmp_path / "b", "fewshot/proxy_digits/5shot", lambda v: v - 1.01)
    r = CliRunner().invoke(main, ["check", str(tmp_path / "b"), "--baseline", str(base)])
    assert r.exit_code == 1
    assert "fewshot/proxy_digits/5shot" in r.output.splitlines()[-1]
    assert "fewshot/proxy_digits/1shot" not in r.output.splitlines()[-1]


def test_gate_names_the_protocol_setting_that_changed_since_the_baseline(sovit_runs, tmp_path):
    """The baseline keeps each task's protocol settings; a later run made differently is named setting by
    setting with both values (a config hash alone would only say that something changed)."""
    doc = baseline.make_baseline(load_records(sovit_runs))
    assert doc["tasks"]["vqa"]["protocol"]["task version"] == "2"
    out = tmp_path / "b.json"
    baseline.write_baseline(out, doc)
    r = CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(out)])
    assert r.exit_code == 0 and "another protocol" not in r.output
    for f in sovit_runs.glob("vqa_*.json"):
        rec = json.loads(f.read_text())
        rec["task"]["config"]["label_smoothing"] = 0.0
        rec["datasets"] = [{"name": "proxy_scenes", "split": "test", "num_examples": 100, "pp": "decode",
                            "role": "eval"}]
        f.write_text(json.dumps(rec))
    r = CliRunner().invoke(main, ["check", str(sovit_runs), "--baseline", str(out)])
    assert r.exit_code == 0, r.output  # a note, not a failure: the values still pass
    note = next(line for line in r.output.splitlines() if "task vqa: made under another protocol" in line)
    assert "--set label_smoothing `0.0` vs `(absent)`" in note
    assert "proxy_scenes/test (eval) examples `100` vs `(absent)`" in note
