"""The `segmentation` and `depth` tasks end to end on the tiny proxy (cached features, and the online protocol
with augmentation and the sliding window), their settings checked before any data is read, a missing dataset
named with its download, and the report's words for a task the paper has no number for."""

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.run.runner import run_task
from tests.tiny import TINY_DS, TINY_RUNS


def _kw(env):
    return dict(data_dir=env["data_dir"], out_dir=env["out"], cache_dir=env["cache_dir"], progress=False)


def _values(rec):
    return {k.rsplit("/", 1)[1]: v["value"] for k, v in rec["metrics"].items()}


def test_segmentation_cached_end_to_end(task_env):
    preset, sets = TINY_RUNS["segmentation"]
    rec, _, _ = run_task("segmentation", task_env["ckpt"], preset=preset, sets=sets, **_kw(task_env))
    m = _values(rec)
    assert set(m) == {"miou", "aacc", "macc"} and all(0 <= v <= 100 for v in m.values())
    assert rec["per_example"] == {}  # mIoU is not a mean over images
    roles = {d["role"]: d["num_examples"] for d in rec["datasets"]}
    assert roles == {"segmentation_train": 48, "segmentation_eval": 24}
    assert rec["info"]["geometry"] == {"crop": 32, "short_side": 32, "eval_stride": 21, "grid": [4, 4]}
    assert len(rec["info"]["iou_per_class"]) == 25
    # The features came from the cache: a second run with another lr extracts nothing.
    again, _, _ = run_task("segmentation", task_env["ckpt"], preset=preset, sets={**sets, "lr": "0.01"},
                           **_kw(task_env))
    assert all(e["computed_images"] == 0 for e in again["info"]["feature_extraction"])


def test_segmentation_online_slides_windows_over_the_resized_image(task_env):
    sets = {"dataset": TINY_DS, "steps": "3", "warmup_steps": "1", "batch_size": "4", "short_side": "48",
            "max_eval_examples": "5", "eval_batch_size": "2"}
    rec, _, _ = run_task("segmentation", task_env["ckpt"], sets=sets, **_kw(task_env))
    assert rec["info"]["geometry"] == {"crop": 32, "short_side": 48, "eval_stride": 21, "grid": [4, 4]}
    train = next(d for d in rec["datasets"] if d["role"] == "segmentation_train")
    for op in ("random_resize_short(48", "random_crop_cat(32, cat_max_ratio=0.75", "random_flip_lr",
               "photometric_distortion", 'pad_to(32, label="segmentation")'):
        assert op in train["pp"]
    evaluated = next(d for d in rec["datasets"] if d["role"] == "segmentation_eval")
    assert evaluated["num_examples"] == 5 and "resize_short(48)" in evaluated["pp"]
    assert all(0 <= v <= 100 for v in _values(rec).values())


def test_depth_cached_end_to_end(task_env):
    preset, sets = TINY_RUNS["depth"]
    rec, _, _ = run_task("depth", task_env["ckpt"], preset=preset, sets=sets, **_kw(task_env))
    m = _values(rec)
    assert set(m) == {"rmse", "abs_rel", "delta1"} and m["rmse"] > 0 and 0 <= m["delta1"] <= 100
    for name, value in rec["metrics"].items():  # per image, and the metric is their mean
        per = rec["per_example"][name]
        assert len(per) == 24 and np.mean(per) == pytest.approx(value["value"])
    assert rec["metrics"][f"depth/{TINY_DS}/rmse"]["higher_is_better"] is False


def test_depth_online_end_to_end(task_env):
    sets = {"dataset": TINY_DS, "steps": "3", "warmup_steps": "1", "batch_size": "4", "random_crop": "56,48",
            "max_eval_examples": "6", "sigloss_warmup": "1"}
    rec, _, _ = run_task("depth", task_env["ckpt"], sets=sets, **_kw(task_env))
    train = next(d for d in rec["datasets"] if d["role"] == "depth_train")
    assert "random_rotate(2.5, 0.5" in train["pp"] and "random_crop_cat((56, 48), cat_max_ratio=1.0" in train["pp"]
    assert len(rec["per_example"][f"depth/{TINY_DS}/rmse"]) == 6


@pytest.mark.parametrize("task, sets, says", [
    ("segmentation", {"dataset": "imagenet2012"}, "dataset=imagenet2012 has no per-pixel class labels"),
    ("segmentation", {"features": "mmap"}, "features=mmap is not one of online, cached"),
    ("segmentation", {"warmup_steps": "50", "steps": "50"}, "warmup_steps=50 must be below steps=50"),
    ("segmentation", {"crop": "64", "short_side": "32"}, "short_side=32 must be at least crop=64"),
    ("segmentation", {"scale_range": "2,1"}, "scale_range=2.0,1.0 must be two numbers"),
    ("segmentation", {"cat_max_ratio": "0"}, "cat_max_ratio=0.0 is out of range"),
    ("depth", {"dataset": "ade20k"}, "dataset=ade20k has no depth maps"),
    ("depth", {"max_depth": "0.001"}, "max_depth=0.001 must be above min_depth=0.001"),
    ("depth", {"random_crop": "416"}, "random_crop=416 must be two sizes"),
    ("depth", {"dataset": "nosuch"}, "not in the harness's registry"),
])
def test_bad_settings_are_one_line_before_any_data(task_env, task, sets, says):
    with pytest.raises(HarnessError, match=says):
        run_task(task, task_env["ckpt"], sets=sets, **_kw(task_env))


@pytest.mark.parametrize("task, says", [
    ("segmentation", r"dataset 'ade20k' is not prepared under .*: run `harness prepare ade20k --data-dir .*`; it needs "
                     r"ADEChallengeData2016\.zip in .*/downloads/manual/ \(from http://data\.csail\.mit\.edu/places/"
                     r"ADEchallenge/ADEChallengeData2016\.zip, as it is or unzipped\)"),
    ("depth", r"dataset 'nyu_depth_v2' is not prepared under .*: run `harness prepare nyu_depth_v2 --data-dir .*`; it "
              r"needs internet \(TFDS downloads nyudepthv2\.tar\.gz, 32 GiB\) or that file in .*/downloads/manual/"),
])
def test_a_missing_dataset_names_its_download(task_env, task, says):
    with pytest.raises(HarnessError, match=says):
        run_task(task, task_env["ckpt"], sets={"steps": "2", "warmup_steps": "1"}, **_kw(task_env))


def test_the_report_says_no_published_number(task_env):
    from harness.report import load_records, to_markdown
    from harness.report.tables import UNPUBLISHED

    for task in ("segmentation", "depth"):
        preset, sets = TINY_RUNS[task]
        run_task(task, task_env["ckpt"], preset=preset, sets=sets, **_kw(task_env))
    recs = [r for r in load_records(task_env["out"]) if r["task"]["name"] in ("segmentation", "depth")]
    md = to_markdown(recs, with_paper=True)
    for task in ("segmentation", "depth"):
        part = md[md.index(f"### {task}"):]
        assert part.splitlines()[2] == UNPUBLISHED


def test_ls_datasets_names_the_dense_datasets_and_their_preparation(tmp_path):
    from click.testing import CliRunner

    from harness.cli import main

    r = CliRunner().invoke(main, ["ls", "datasets", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for name, prepare in (("ade20k", "harness prepare ade20k --data-dir"),
                          ("nyu_depth_v2", "harness prepare nyu_depth_v2 --data-dir")):
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
        assert "missing" in lines[i] and prepare in lines[i + 1] and str(tmp_path) in lines[i + 1]
