"""The dense probes' parts against their references: mIoU against DINOv3's / mmseg's / torchmetrics' own
computation (tests/data/make_miou_fixtures.py), the NYU depth metrics against big_vision's evaluator
(make_nyu_depth_fixtures.py), and the linear heads, their schedules, the sliding-window inference and torch's
interpolation against DINOv3's own code (make_dense_head_fixtures.py); the head trainer on a separable
problem; the dense pp ops."""

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from harness.data.pp import Preprocess
from harness.errors import HarnessError
from harness.eval import dense as ev
from harness.train import dense as hd

MIOU = np.load("tests/data/miou_reference.npz")
MIOU_JSON = json.loads(Path("tests/data/miou_reference.json").read_text())
NYU = np.load("tests/data/nyu_depth_reference.npz")
NYU_JSON = json.loads(Path("tests/data/nyu_depth_reference.json").read_text())
HEAD = np.load("tests/data/dense_head_reference.npz")
NYU_NAMES = {"RMSE": "rmse", "abs_RE": "abs_rel", "log10": "log10", "delta1": "delta1", "delta2": "delta2",
             "delta3": "delta3"}


# ---------------------------------------------------------------------------------------------- mIoU
def _fixture_areas():
    out = []
    for i in range(6):
        label = ev.reduce_zero_label(MIOU[f"label_raw_{i}"])
        np.testing.assert_array_equal(label, MIOU[f"label_reduced_{i}"])
        out.append(ev.intersect_and_union(MIOU[f"pred_{i}"], label, 150))
    return np.stack(out)


def test_miou_is_dinov3s_and_mmsegs():
    areas = _fixture_areas()
    np.testing.assert_array_equal(areas, MIOU["dinov3_areas"])  # every count of every image
    scores = ev.segmentation_scores(areas)
    for ref in ("dinov3", "mmseg"):
        np.testing.assert_allclose(scores["iou"], MIOU[f"{ref}_iou"], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(scores["acc"], MIOU[f"{ref}_acc"], rtol=1e-6, equal_nan=True)
    summary = MIOU_JSON["dinov3_summary"]
    assert scores["miou"] == pytest.approx(summary["mIoU"], rel=1e-6)
    assert scores["aacc"] == pytest.approx(summary["aAcc"], rel=1e-6) == pytest.approx(float(MIOU["mmseg_aAcc"]))
    assert scores["macc"] == pytest.approx(summary["acc"], rel=1e-6)
    assert scores["miou"] == pytest.approx(float(MIOU["torchmetrics_miou"]), rel=1e-6)
    # Classes with an empty union are left out of the mean, not counted as 0 (the fixture's wrong answer).
    assert int(np.isnan(scores["iou"]).sum()) == MIOU_JSON["classes_with_nan_iou"]
    assert abs(scores["miou"] - MIOU_JSON["mean_of_all_150_with_nan_as_0"]) > 0.05
    # Summing per-image areas is the whole-set metric, not a mean of per-image mIoUs.
    per_image = np.nanmean([ev.segmentation_scores(a)["miou"] for a in areas])
    assert abs(per_image - scores["miou"]) > 1e-3


def test_miou_edges():
    label = np.array([[0, 1, 255], [2, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 7], [2, 9, 3]])  # 9 is outside the 4 classes: counted nowhere
    areas = ev.intersect_and_union(pred, label, 4)
    # Rows: intersection, union, prediction, label.
    np.testing.assert_array_equal(areas, [[1, 1, 1, 0], [1, 1, 2, 0], [1, 1, 1, 0], [1, 1, 2, 0]])
    scores = ev.segmentation_scores(areas)
    assert math.isnan(scores["iou"][3]) and scores["miou"] == pytest.approx(2.5 / 3) and scores["aacc"] == 0.75
    with pytest.raises(HarnessError, match="differ in size"):
        ev.intersect_and_union(pred[:1], label, 4)


# --------------------------------------------------------------------------------------------- depth
def test_nyu_depth_metrics_are_big_visions():
    per_image = []
    for i in range(4):
        gt = ev.nyu_eval_crop(NYU["depth_raw"][i])
        np.testing.assert_array_equal(gt, NYU["ground_truth"][i])
        scores = ev.depth_scores(gt, NYU[f"pred_{i}"].astype(np.float32))
        ref = NYU_JSON["per_image"][i]
        for theirs, ours in NYU_NAMES.items():
            assert scores[ours] == pytest.approx(ref[theirs], rel=1e-6, abs=1e-7), (i, ours)
        per_image.append(scores)
    for theirs, ours in NYU_NAMES.items():  # the reported value: the mean over images
        assert np.mean([s[ours] for s in per_image]) == pytest.approx(NYU_JSON["metrics"][theirs], rel=1e-6)
    assert ev.NYU_EVAL_CROP == (NYU["crop_rows"][0], NYU["crop_rows"][-1] + 1, NYU["crop_cols"][0],
                                NYU["crop_cols"][-1] + 1)


def test_nearest_resize_is_jax_images():
    for i in (2, 3):
        index = np.arange(NYU[f"pred_{i}"].size).reshape(NYU[f"pred_{i}"].shape)
        out = ev.resize_nearest(index, (426, 560))
        w = index.shape[1]
        np.testing.assert_array_equal(out // w, np.broadcast_to(NYU[f"resize_rows_{i}"][:, None], out.shape))
        np.testing.assert_array_equal(out % w, np.broadcast_to(NYU[f"resize_cols_{i}"][None], out.shape))


def test_depth_scores_edges():
    gt = np.full((4, 4), 2.0, np.float32)
    gt[0] = 0.0  # missing
    gt[1] = 10.0  # max_depth is excluded
    scores = ev.depth_scores(gt, np.full((2, 2), 2.4, np.float32))  # resized nearest to 4x4
    assert scores["rmse"] == pytest.approx(0.4) and scores["abs_rel"] == pytest.approx(0.2)
    assert scores["delta1"] == 1.0
    assert ev.depth_scores(gt, np.full((2, 2), 2.5, np.float32))["delta1"] == 0.0  # 1.25 is not < 1.25
    assert math.isnan(ev.depth_scores(np.zeros((2, 2)), np.ones((2, 2)))["rmse"])  # no valid pixel


# ----------------------------------------------------------------------------------- interpolation
@pytest.mark.parametrize("name, size", [("up", (17, 23)), ("down", (3, 4)), ("mixed", (9, 5))])
def test_bilinear_is_torchs(name, size):
    x = HEAD["interp_x"].transpose(2, 3, 0, 1)  # NCHW -> HWNC
    want = HEAD[f"interp_{name}"].transpose(2, 3, 0, 1)
    np.testing.assert_allclose(ev.resize_bilinear(x, size), want, atol=2e-6)
    on_device = hd.upsample(jnp.asarray(HEAD["interp_x"].transpose(0, 2, 3, 1)), size)  # NHWC
    np.testing.assert_allclose(np.asarray(on_device), HEAD[f"interp_{name}"].transpose(0, 2, 3, 1), atol=2e-6)
    logits = np.random.default_rng(0).normal(size=(5, 7, 4)).astype(np.float32)
    np.testing.assert_array_equal(ev.resized_argmax(logits, size, rows=2), ev.resize_bilinear(logits, size).argmax(-1))


def test_label_nearest_is_torchs():
    import tensorflow as tf

    from harness.data.pp.dense import resize_label_nearest

    x = tf.constant(HEAD["interp_x"][0, 0])  # (5, 7)
    for size in ((12, 9), (3, 4)):
        np.testing.assert_array_equal(np.asarray(resize_label_nearest(x, size)),
                                      HEAD[f"interp_nearest_{size[0]}x{size[1]}"][0, 0])


# ----------------------------------------------------------------------------------- DINOv3's heads
def _init(prefix, outputs):
    params, state = hd.init_head(8, outputs)
    params["conv"]["kernel"] = HEAD[f"{prefix}_init_conv_w"][:, :, 0, 0].T.copy()
    params["conv"]["bias"] = HEAD[f"{prefix}_init_conv_b"].copy()
    return params, state


def _check_final(head, prefix):
    np.testing.assert_allclose(head.params["conv"]["kernel"], HEAD[f"{prefix}_final_conv_w"][:, :, 0, 0].T, atol=1e-5)
    np.testing.assert_allclose(head.params["conv"]["bias"], HEAD[f"{prefix}_final_conv_b"], atol=1e-5)
    np.testing.assert_allclose(head.params["bn"]["scale"], HEAD[f"{prefix}_final_bn_w"], atol=1e-5)
    np.testing.assert_allclose(head.params["bn"]["bias"], HEAD[f"{prefix}_final_bn_b"], atol=1e-5)
    np.testing.assert_allclose(head.state["mean"], HEAD[f"{prefix}_final_bn_mean"], atol=1e-6)
    np.testing.assert_allclose(head.state["var"], HEAD[f"{prefix}_final_bn_var"], rtol=1e-6)


def _batches(prefix, targets):
    feats = HEAD[f"{prefix}_feats"].transpose(0, 1, 3, 4, 2)

    def batches(start):
        for t in range(start, len(feats)):
            yield {"features": feats[t], "target": targets[t]}

    return batches


def test_segmentation_head_trains_as_dinov3s():
    objective = hd.Objective("segmentation", 5, dropout=0.0)
    recipe = hd.Recipe(steps=12, lr=0.1, weight_decay=1e-3, b1=0.9, b2=0.999, warmup_steps=4, warmup_ratio=1e-6,
                       final_div_factor=float("inf"), use_beta1=False, scheduler_lag=1)
    np.testing.assert_allclose(hd.schedule(recipe)[0], HEAD["seg_lr"], rtol=1e-6)
    head = hd.train_head(objective, recipe, dim=8, batches=_batches("seg", HEAD["seg_labels"]),
                         init=_init("seg", 5), progress=False)
    np.testing.assert_allclose(head.losses, HEAD["seg_loss"], atol=1e-5)
    _check_final(head, "seg")
    logits = hd.make_predict(objective, (13, 11))(head.params, head.state, None,
                                                  HEAD["seg_eval_feats"].transpose(0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(logits), HEAD["seg_eval_logits"].transpose(0, 2, 3, 1), atol=1e-4)


def test_depth_head_trains_as_dinov3s():
    objective = hd.Objective("depth", 16, sigloss_warmup=4)
    recipe = hd.Recipe(steps=12, lr=0.03, weight_decay=1e-4, b1=0.0, b2=0.99, warmup_steps=4,
                       grad_clip=float(HEAD["depth_clip"]))
    lrs, b1s = hd.schedule(recipe)
    np.testing.assert_allclose(lrs, HEAD["depth_lr"], rtol=1e-6)
    np.testing.assert_allclose(b1s, HEAD["depth_beta1"], atol=1e-7)
    assert (HEAD["depth_grad_norm"] > float(HEAD["depth_clip"])).sum() >= 3  # the clip acted
    head = hd.train_head(objective, recipe, dim=8, batches=_batches("depth", HEAD["depth_gt"][:, :, 0]),
                         init=_init("depth", 16), progress=False)
    np.testing.assert_allclose(head.losses, HEAD["depth_loss"], atol=1e-5)
    _check_final(head, "depth")
    pred = hd.make_predict(objective)(head.params, head.state, None, HEAD["depth_eval_feats"].transpose(0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(pred), HEAD["depth_eval_pred"][:, 0], rtol=1e-5)


@pytest.mark.parametrize("kind", ["seg", "depth"])
def test_the_configs_schedules_are_dinov3s(kind):
    if kind == "seg":  # config-ade20k-linear-training.yaml, train.py's stepping
        recipe = hd.Recipe(steps=40000, lr=1e-3, weight_decay=1e-3, b1=0.9, b2=0.999, warmup_steps=1500,
                           warmup_ratio=1e-6, final_div_factor=float("inf"), use_beta1=False, scheduler_lag=1)
    else:  # config-nyu.yaml
        recipe = hd.Recipe(steps=38400, lr=3e-4, weight_decay=1e-4, b1=0.0, b2=0.99, warmup_steps=12800)
    lrs, b1s = hd.schedule(recipe)
    steps = HEAD[f"sched_{kind}_steps"]
    np.testing.assert_allclose(lrs[steps], HEAD[f"sched_{kind}_lr"], rtol=2e-6, atol=1e-15)
    if kind == "depth":
        np.testing.assert_allclose(b1s[steps], HEAD["sched_depth_beta1"], atol=1e-7)
        assert b1s[12799] == 0 and b1s[12800] == pytest.approx(0.85)
    else:
        assert set(b1s) == {np.float32(0.9)}


def test_sliding_window_inference_is_dinov3s():
    """DINOv3's make_inference(slide) on a 40x70 image, windows 24 at stride 16, logits resized to 50x87."""
    objective = hd.Objective("segmentation", 5)
    params, state = hd.init_head(8, 5)
    params = {"conv": {"kernel": HEAD["seg_final_conv_w"][:, :, 0, 0].T, "bias": HEAD["seg_final_conv_b"]},
              "bn": {"scale": HEAD["seg_final_bn_w"], "bias": HEAD["seg_final_bn_b"]}}
    state = {"mean": HEAD["seg_final_bn_mean"], "var": HEAD["seg_final_bn_var"]}
    w = jnp.asarray(HEAD["slide_patch_w"].transpose(2, 3, 1, 0))  # OIHW -> HWIO

    def embed(_, images):  # the fixture's patch embedding: a 6x6 conv at stride 6
        from jax import lax

        return lax.conv_general_dilated(images, w, (6, 6), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=lax.Precision.HIGHEST) + HEAD["slide_patch_b"]

    predict = hd.make_predict(objective, (24, 24), features=embed)
    image = HEAD["slide_image"][0].transpose(1, 2, 0)
    assert len(ev.slide_windows(40, 70, 24, 16)) == 2 * 4
    logits = ev.slide_logits(image, 24, 16, lambda x: predict(params, state, None, x), 5)
    full = ev.resize_bilinear(logits, (50, 87))
    probs = np.exp(full - full.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, HEAD["slide_probs"][0].transpose(1, 2, 0), atol=1e-5)
    np.testing.assert_array_equal(ev.resized_argmax(logits, (50, 87), rows=7), probs.argmax(-1))


def test_slide_windows_geometry():
    # DINOv3's grid: the last window ends at the border; windows cover every pixel.
    assert ev.slide_windows(512, 683, 512, 341) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    assert ev.slide_windows(224, 224, 224, 149) == [(0, 224, 0, 224)]
    # A window taller than the image keeps its width (DINOv3 shrinks it only when both sides are smaller).
    assert ev.slide_windows(10, 30, 16, 8) == [(0, 10, 0, 16), (0, 10, 8, 24), (0, 10, 14, 30)]
    assert ev.slide_windows(10, 12, 16, 8) == [(0, 10, 0, 10), (0, 10, 2, 12)]
    with pytest.raises(HarnessError, match="smaller than the 16 px window"):
        ev.slide_logits(np.zeros((10, 30, 3), np.float32), 16, 8, lambda x: x, 3)


# ------------------------------------------------------------------------------- trainer behaviour
def test_head_learns_a_separable_problem():
    """Pixel classes that are a linear function of the tokens: the head (BatchNorm + 1x1 conv, dropout, the
    upsampled loss) reaches near-perfect pixel accuracy; depth that is a function of the tokens is learnt."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(16, 4)).astype(np.float32)
    feats = rng.normal(size=(256, 4, 4, 16)).astype(np.float32) * 3 + 1

    def classes(x):  # labels at 16 x 16: the argmax of a linear map of the tokens, bilinearly upsampled
        return np.stack([ev.resize_bilinear(v, (16, 16)).argmax(-1) for v in x @ direction]).astype(np.int64)

    labels = classes(feats)
    labels[:, :1] = 255  # an ignored border row
    objective = hd.Objective("segmentation", 4, dropout=0.1)
    recipe = hd.Recipe(steps=300, lr=3e-2, weight_decay=1e-3, b1=0.9, b2=0.999, warmup_steps=20, warmup_ratio=1e-6,
                       final_div_factor=float("inf"), use_beta1=False, scheduler_lag=1)
    batches = hd.cached_batches(feats, labels, 32, seed=0, to_grid=lambda x: x)
    head = hd.train_head(objective, recipe, dim=16, batches=batches, progress=False)
    assert head.losses[-1] < 0.5 * head.losses[0]
    test = rng.normal(size=(64, 4, 4, 16)).astype(np.float32) * 3 + 1
    pred = np.asarray(hd.make_predict(objective, (16, 16))(head.params, head.state, None, test)).argmax(-1)
    assert (pred == classes(test)).mean() > 0.9

    depth = (2.0 + np.tanh(feats[..., 0] / 3)).repeat(4, 1).repeat(4, 2).astype(np.float32)
    depth[:, :, :2] = 0.0  # missing depth: no loss there
    objective = hd.Objective("depth", 32, sigloss_warmup=10)
    recipe = hd.Recipe(steps=300, lr=1e-2, weight_decay=1e-4, b1=0.0, b2=0.99, warmup_steps=50, grad_clip=35.0)
    head = hd.train_head(objective, recipe, dim=16, batches=hd.cached_batches(feats, depth, 32, seed=0,
                                                                                to_grid=lambda x: x), progress=False)
    pred = np.asarray(hd.make_predict(objective)(head.params, head.state, None, test))
    truth = 2.0 + np.tanh(test[..., 0] / 3)
    assert np.abs(pred - truth).mean() < 0.3 * np.abs(truth.mean() - truth).mean()  # far better than a constant


def test_dropout_is_channel_dropout_and_batchnorm_uses_batch_statistics():
    params, state = hd.init_head(6, 3)
    x = jnp.asarray(np.random.default_rng(1).normal(2.0, 3.0, size=(4, 5, 5, 6)).astype(np.float32))
    import jax

    _, new = hd.head_apply(params, state, x, train=True, dropout=0.0)
    np.testing.assert_allclose(new["mean"], 0.1 * np.asarray(x).mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * np.asarray(x).var((0, 1, 2), ddof=1), rtol=1e-5)
    params["conv"]["kernel"] = np.eye(6, 3, dtype=np.float32)
    train_out, _ = hd.head_apply(params, state, x, train=True, dropout=0.5, rng=jax.random.PRNGKey(0))
    # A dropped channel is dropped at every position of its sample (Dropout2d), not pixel by pixel.
    dropped = np.all(np.asarray(train_out) == train_out[:, :1, :1], axis=(1, 2))
    assert dropped.any() and not dropped.all()
    _, same = hd.head_apply(params, new, x, train=False)
    assert same is new  # eval mode reads the running statistics and leaves them


# -------------------------------------------------------------------------------------------- pp ops
def _example(h=20, w=30, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (h, w, 3)).astype(np.uint8),
            "segmentation": rng.integers(0, 5, (h, w, 1)).astype(np.uint8),
            "depth": rng.uniform(1, 5, (h, w)).astype(np.float16)}


def _run(pp, example, seed=0):
    import tensorflow as tf

    out = Preprocess(pp)({k: tf.constant(v) for k, v in example.items()}, seed=tf.constant([0, seed], tf.int64))
    return {k: np.asarray(v) for k, v in out.items()}


def test_reduce_zero_label_and_resize_short():
    ex = _example()
    ex["segmentation"][0, :4, 0] = [0, 1, 150, 255]
    out = _run('reduce_zero_label|resize_short(40, label="segmentation")', ex)
    assert out["image"].shape == (40, 60, 3) and out["segmentation"].shape == (40, 60, 1)
    assert list(out["segmentation"][0, [0, 2, 4, 6], 0]) == [255, 0, 149, 255]  # nearest: each source pixel twice
    # DINOv3's FixedSideResize rounding: the long side is int(short * long / short_in + 0.5).
    assert _run("resize_short(7)", _example(20, 30))["image"].shape == (7, 11, 3)  # 10.5 -> 11
    assert _run("resize_short(7)", _example(30, 20))["image"].shape == (11, 7, 3)
    assert _run("resize_short(20)", _example(20, 30))["segmentation"].shape == (20, 30, 1)  # label kept


def test_random_crop_cat_redraws_a_crop_dominated_by_one_class():
    ex = _example(40, 40)
    ex["segmentation"][:] = 1
    ex["segmentation"][30:, 30:] = 2  # only the bottom-right crops hold a second class
    ex["image"] = (ex["segmentation"] * 100).repeat(3, -1).astype(np.uint8)
    for seed in range(8):
        plain = _run("random_crop_cat(12, cat_max_ratio=1.0)", ex, seed)
        cat = _run("random_crop_cat(12, cat_max_ratio=0.75)", ex, seed)
        np.testing.assert_array_equal(cat["image"][..., 0], cat["segmentation"][..., 0] * 100)  # moved together
        assert cat["segmentation"].shape == (12, 12, 1) == plain["segmentation"].shape
        counts = np.bincount(cat["segmentation"].ravel(), minlength=3)
        if np.count_nonzero(counts) > 1:
            assert counts.max() / counts.sum() < 0.75
    # Over many seeds the check moves crops towards the corner with two classes.
    two = sum(len(np.unique(_run("random_crop_cat(12)", ex, s)["segmentation"])) > 1 for s in range(20))
    two_plain = sum(len(np.unique(_run("random_crop_cat(12, cat_max_ratio=1.0)", ex, s)["segmentation"])) > 1
                    for s in range(20))
    assert two > two_plain
    small = _run("random_crop_cat(64)", _example(20, 30))  # smaller than the crop: kept whole, then padded
    assert small["image"].shape == (20, 30, 3)
    padded = _run('value_range(-1,1)|pad_to(32, label="segmentation")', _example(20, 30))
    assert padded["image"].shape == (32, 32, 3) and (padded["image"][20:] == 0).all()
    assert (padded["segmentation"][:, 30:] == 255).all() and padded["segmentation"].shape == (32, 32, 1)


def test_flip_rotate_and_nyu_crops_move_image_and_target_together():
    ex = _example()
    ex["image"][..., 0] = ex["segmentation"][..., 0] * 40
    flips = [_run("random_flip_lr", ex, s) for s in range(6)]
    assert {bool((f["segmentation"] != ex["segmentation"]).any()) for f in flips} == {True, False}
    for f in flips:
        np.testing.assert_array_equal(f["image"][..., 0], f["segmentation"][..., 0] * 40)
    rot = _run('random_rotate(20, prob=1.0, label="depth")', ex)
    assert set(np.unique(rot["depth"])) <= set(np.unique(ex["depth"])) | {0}  # nearest: no new depths
    assert (rot["depth"] == 0).any() and rot["depth"].dtype == np.float16
    nyu = {"image": np.zeros((480, 640, 3), np.uint8),
           "depth": np.arange(480 * 640, dtype=np.float32).reshape(480, 640)}
    out = _run("nyu_eval_crop", nyu)
    np.testing.assert_array_equal(out["depth"], ev.nyu_eval_crop(nyu["depth"]))
    out = _run("nyu_train_crop", nyu)
    assert out["depth"].shape == (427, 565) and out["depth"][0, 0] == 45 * 640 + 43  # DINOv3's box (43, 45, 608, 472)


def test_photometric_and_colour_augmentation_stay_in_range():
    ex = _example()
    outs = [_run("photometric_distortion", ex, s)["image"] for s in range(6)]
    for out in outs:
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255 and (out == np.floor(out)).all()
    assert len({out.tobytes() for out in outs}) > 3
    col = [_run("color_aug(prob=1.0)", ex, s)["image"] for s in range(3)]
    assert all(c.min() >= 0 and c.max() <= 255 for c in col) and not np.allclose(col[0], ex["image"])
    again = _run("photometric_distortion", ex, 3)["image"]
    np.testing.assert_array_equal(again, outs[3])  # a function of the seed
