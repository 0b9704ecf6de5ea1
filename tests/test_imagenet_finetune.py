"""imagenet_finetune: the loss, head, optimizer and ReaL scoring against hand/numpy computations, and the
task end to end on a tiny TFDS dataset built here (train / validation / test, with ReaL-style label sets)."""

import json
import math

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from harness import api, checkpoints, data  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.models.encoder import (  # noqa: E402
    Encoder,
    abstract_params,
    build_model,
    load_encoder,
    resolve_config,
)
from harness.tasks.imagenet_finetune import ImageNetFinetune, metric_base  # noqa: E402
from harness.train import finetune, optim  # noqa: E402
from harness.train import loop as train  # noqa: E402
from tests.tiny import TINIEST  # noqa: E402

NAME = "ft_test_colours"
COLOURS = np.array([[200, 40, 40], [40, 190, 60], [50, 70, 210]], np.float64)
SIZES = {"train": 60, "validation": 24, "test": 30}
TINY = dict(TINIEST, pool_type="gap")


def _real_labels(i: int, label: int) -> list[int]:
    # Every 5th image has no ReaL label (left out), every 5th + 1 has two (either is right).
    return [] if i % 5 == 0 else [label, (label + 1) % 3] if i % 5 == 1 else [label]


class FtTestColours(tfds.core.GeneratorBasedBuilder):
    """32x32 noisy images whose class is their dominant colour (3 classes), plus ReaL-style label sets."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(32, 32, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
            "real_label": tfds.features.Sequence(tfds.features.ClassLabel(names=["red", "green", "blue"])),
        }))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(code, n) for code, (split, n) in enumerate(SIZES.items())}

    def _generate_examples(self, code, n):
        for i in range(n):
            rng = np.random.default_rng([code, i])
            label = int(rng.integers(3))
            image = COLOURS[label] * rng.uniform(0.6, 1.0) + rng.normal(0, 25, (32, 32, 3))
            yield i, {"image": np.clip(image, 0, 255).astype(np.uint8), "label": label,
                      "real_label": _real_labels(i, label)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    tfds.disable_progress_bar()
    root = tmp_path_factory.mktemp("tfds")
    FtTestColours(data_dir=str(root)).download_and_prepare()
    return str(root)


@pytest.fixture(scope="module")
def ckpt16(tmp_path_factory):
    """A tiny random encoder saved at 16 px (a 2x2 posemb grid), to be fine-tuned at 32 px."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny16.npz"
    load_encoder("random:1", res=16, **TINY).save(str(path), fmt="npz")
    return str(path)


@pytest.fixture(scope="module")
def tiny32():
    return load_encoder("random:2", res=32, **TINY)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, data_dir, ckpt16):
    """One fine-tune at 32 px of the 16 px checkpoint (posemb resampled at load), shared by the tests."""
    tmp = tmp_path_factory.mktemp("finetuned")
    metrics, ctx = _run(load_encoder(ckpt16, res=32), tmp, data_dir, **FINETUNE)
    return metrics, ctx, tmp


def _config(**kw):
    sets = dict(dataset=NAME, train_split="train", minival_split="validation", test_split="test",
                real_dataset=NAME, v2_dataset=NAME, batch_size=16, train_steps=30, lr=0.1, warmup_steps=3,
                layer_decay=1.0, mixup=0.0, ckpt_every=0, eval_batch_size=16,
                pp_train="decode|inception_crop(32, area_min=50)|flip_lr|value_range(-1,1)")
    sets.update(kw)
    return api.make_config(ImageNetFinetune(), None, {k: v for k, v in sets.items()})


def _run(encoder, tmp_path, data_dir, name="run", **kw):
    ctx = api.RunContext(data_dir=data_dir, cache_dir=tmp_path / "cache", out_dir=tmp_path / name, progress=False)
    metrics = ImageNetFinetune().run(encoder, ctx, _config(**kw))
    return metrics, ctx


BASE = metric_base(NAME, 32)
# mixup and checkpoints on, so the resume test below covers the host-side mixup draws too.
FINETUNE = dict(train_steps=30, ckpt_every=10, mixup=0.2)


# ------------------------------------------------------------------------------------------- pure parts
def test_sigmoid_xent_matches_hand_computed():
    logits = np.array([[0.0, 2.0, -1.0], [3.0, 0.5, 0.0]], np.float32)
    labels = np.array([[0, 1, 0], [0.5, 0, 0.5]], np.float32)
    # Row 0: -log(1-s(0)) - log s(2) - log(1-s(-1)) = log 2 + log(1+e^-2) + log(1+e^-1).
    row0 = math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))
    # Row 1 (soft labels, as after mixup): 0.5*[log(1+e^-3) + log(1+e^3)] + log(1+e^0.5) + log 2.
    row1 = 0.5 * (math.log(1 + math.exp(-3)) + math.log(1 + math.exp(3))) + math.log(1 + math.exp(0.5)) + math.log(2)
    assert float(finetune.sigmoid_xent(logits, labels)) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_new_head_is_zero_kernel_and_bias_minus_6_9_and_replaces_an_old_head(tiny32):
    old = checkpoints.flatten(tiny32.params)
    with_old_head = checkpoints.unflatten({**old, "head/kernel": np.ones((16, 5), np.float32),
                                           "head/bias": np.ones(5, np.float32)})  # a head of the wrong size
    model = build_model({**tiny32.config, "num_classes": 3})
    params = finetune.with_new_head(with_old_head, abstract_params(model, 32))
    flat = checkpoints.flatten(params)
    assert flat["head/kernel"].shape == (16, 3) and not np.any(np.asarray(flat["head/kernel"]))
    np.testing.assert_array_equal(np.asarray(flat["head/bias"]), np.full(3, -6.9, np.float32))
    assert set(flat) == set(old) | {"head/kernel", "head/bias"}
    for k in old:
        np.testing.assert_array_equal(np.asarray(flat[k]), np.asarray(old[k]))
    # At init every class sits at the 1/1000 prior: loss = -log s(-6.9) + 2 * -log(1 - s(-6.9)).
    logits, _ = model.apply({"params": params}, np.zeros((2, 32, 32, 3), np.float32))
    np.testing.assert_allclose(np.asarray(logits), -6.9, rtol=1e-6)
    s = 1 / (1 + math.exp(6.9))
    expected = -math.log(s) - 2 * math.log(1 - s)
    assert float(finetune.sigmoid_xent(logits, np.eye(3)[[0, 2]])) == pytest.approx(expected, rel=1e-5)


def test_real_scoring_multi_hot_and_empty_label_sets():
    # Padded label lists as batches deliver them (-1 = nothing); a duplicate counts once.
    sets = np.array([[1, 4, -1], [-1, -1, -1], [0, 0, -1], [5, -1, -1], [2, 3, 1]])
    hot = finetune.multi_hot(sets, 6)
    np.testing.assert_array_equal(hot.sum(1), [2, 0, 1, 1, 3])
    preds = np.array([4, 2, 0, 3, 0])
    scores, keep = finetune.real_correct(preds, hot)
    np.testing.assert_array_equal(keep, [True, False, True, True, True])
    np.testing.assert_array_equal(scores, [1, 1, 0, 0])  # 4 in {1,4}; 0 in {0}; 3 not in {5}; 0 not in {1,2,3}
    assert finetune.real_accuracy(preds, hot) == pytest.approx(50.0)
    assert math.isnan(finetune.real_accuracy(preds[:1], np.zeros((1, 6))))
    with pytest.raises(HarnessError):
        finetune.multi_hot(np.array([[7]]), 6)


def test_layer_decay_multipliers_unrolled_and_scanned_agree():
    cfg = resolve_config({}, {}, dict(res=16, num_classes=3, **{**TINY, "depth": 3}))
    shapes = abstract_params(build_model(cfg), 16)
    params = checkpoints.unflatten({k: np.zeros(v.shape, np.float32) for k, v in shapes.items()})
    d = 0.5
    m = checkpoints.flatten(finetune.layer_decay_multipliers(params, 3, d))
    assert float(m["embedding/kernel"]) == d ** 4 and float(m["pos_embedding"]) == d ** 4
    for i in range(3):
        assert float(m[f"Transformer/encoderblock_{i}/MlpBlock_0/Dense_0/kernel"]) == pytest.approx(d ** (3 - i))
    assert float(m["head/kernel"]) == 1.0 and float(m["Transformer/encoder_norm/scale"]) == 1.0
    scanned = checkpoints.unrolled_to_scan(checkpoints.flatten(params))
    ms = checkpoints.flatten(finetune.layer_decay_multipliers(checkpoints.unflatten(scanned), 3, d))
    leaf = ms["Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"]
    assert leaf.shape == (3, 1, 1)
    np.testing.assert_allclose(leaf.ravel(), [d ** 3, d ** 2, d])


def test_sgd_recipe_matches_a_manual_computation():
    """The fine-tune's optimiser (big_vision's momentum_hp chain, harness.train.optim) by hand: clip to global
    norm 1, trace in bfloat16, lr times the layer multiplier, cosine schedule with linear warm-up."""
    import jax
    import jax.numpy as jnp
    import ml_dtypes

    params = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    mults = {"a": np.float32(0.25), "b": np.float32(1.0)}
    tx = optim.make_optimizer("sgd_momentum", lr=0.1, grad_clip_norm=1.0, lr_mults=mults, momentum=0.9,
                              schedule=optim.cosine_schedule(10, 2))
    state = tx.init(params)
    update = jax.jit(tx.update)  # as train.fit runs it
    grads = [{"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.0])}, {"a": jnp.array([0.1, 0.0]), "b": jnp.array([0.2])},
             {"a": jnp.array([0.3, -0.2]), "b": jnp.array([0.1])}]
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    trace = {k: np.zeros_like(v) for k, v in p.items()}
    for step, g in enumerate(grads):
        updates, state = update(g, state, params)
        params = {k: params[k] + updates[k] for k in params}
        g = {k: np.asarray(v, np.float64) for k, v in g.items()}
        norm = math.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
        g = {k: v * min(1.0, 1.0 / norm) for k, v in g.items()}  # clip to global norm 1
        sched = min(1.0, step / 2) * 0.5 * (1 + math.cos(math.pi * max(step - 2, 0) / 8))
        bf16 = ml_dtypes.bfloat16
        for k in p:
            # optax.trace stores the trace in bfloat16 (big_vision's momentum_hp; tests/test_optim.py);
            # jitted on the CPU, XLA multiplies it by the decay rounded to bf16 (0.9 -> 0.8984375) in
            # float32, without rounding the product.
            new = float(bf16(0.9)) * trace[k] + g[k]
            p[k] = p[k] - 0.1 * float(mults[k]) * sched * new
            trace[k] = new.astype(np.float32).astype(bf16).astype(np.float64)
        for k in p:
            np.testing.assert_allclose(np.asarray(params[k]), p[k], rtol=1e-6, atol=1e-7)


def test_mixup_mixes_with_the_neighbour_with_a_beta_weight_at_least_half():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.eye(4, dtype=np.float32)
    lams = [finetune.mixup_weight(0, step, 0.2) for step in range(400)]
    assert min(lams) >= 0.5 and max(lams) <= 1.0
    assert lams == [finetune.mixup_weight(0, step, 0.2) for step in range(400)]  # a function of (seed, step)
    # Folded Beta(0.2, 0.2): E[max(l, 1-l)] = 1/2 + E|l - 1/2| ~ 0.89 (Beta(a,a) puts mass near 0 and 1).
    draws = np.random.default_rng(1).beta(0.2, 0.2, 200_000)
    assert np.mean(lams) == pytest.approx(np.maximum(draws, 1 - draws).mean(), abs=0.03)
    mx, my = finetune.mixup(x, y, 0.7)
    np.testing.assert_allclose(np.asarray(mx), 0.7 * x + 0.3 * np.roll(x, 1, axis=0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(my), 0.7 * y + 0.3 * np.roll(y, 1, axis=0), rtol=1e-6)


def test_paper_table1_rows_use_our_metric_names():
    from harness.report import load_paper_rows

    names = {m for row in load_paper_rows() for m in row["metrics"]}
    for res in (224, 384, 518):
        for leaf in ("val", "real", "v2"):
            assert f"{metric_base('imagenet2012', res)}/{leaf}" in names
    so400m = [r for r in load_paper_rows() if r["source"].endswith("Table 1") and "SoViT-400m" in r["checkpoint"]["name"]]
    assert so400m[0]["metrics"]["imagenet_finetune/384/v2"]["value"] == 83.2


# ------------------------------------------------------------------------------------------- end to end
def test_finetune_at_a_higher_resolution_learns_saves_and_reevaluates(finetuned, tmp_path, data_dir):
    metrics, ctx, root = finetuned
    assert set(metrics) == {f"{BASE}/{leaf}" for leaf in ("minival", "test", "real", "v2")}
    assert metrics[f"{BASE}/test"] >= 80 and metrics[f"{BASE}/minival"] >= 80  # chance is 33%
    info = ctx.info["finetune"]
    assert info["loss_last10"] < info["loss_first10"] and info["res"] == 32
    assert ctx.info["real_examples"][f"{NAME}/test"] == {"with_labels": 24, "total": 30}
    assert len(ctx.per_example[f"{BASE}/real"]) == 24 and len(ctx.per_example[f"{BASE}/test"]) == 30
    assert not (root / "run" / "train_state").exists()
    # The saved model is a headed 32 px checkpoint in both formats; train_steps=0 re-scores it identically.
    from_npz = load_encoder(ctx.artifacts["finetuned_npz"])
    from_harness = load_encoder(ctx.artifacts["finetuned_harness"])
    for tuned in (from_npz, from_harness):
        assert tuned.config["num_classes"] == 3 and tuned.res == 32
    a, b = from_npz.params_numpy(), from_harness.params_numpy()
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    again, _ = _run(from_npz, tmp_path, data_dir, train_steps=0)
    assert again == pytest.approx(metrics)


def test_a_finished_fine_tune_is_reused_when_only_the_evaluation_died(finetuned, data_dir, ckpt16):
    metrics, _, root = finetuned
    again, ctx = _run(load_encoder(ckpt16, res=32), root, data_dir, **FINETUNE)  # same artefact folder
    assert ctx.info["finetune"]["reused_finished_model"] is True and "steps" not in ctx.info["finetune"]
    assert again == metrics


def test_defaults_are_the_paper_recipe():
    from harness.tasks.imagenet_finetune import (
        FinetuneConfig,
        default_pp_eval,
        default_pp_train,
        paper_layer_decay,
        paper_mixup,
    )

    c = FinetuneConfig()
    assert (c.dataset, c.real_dataset, c.v2_dataset) == ("imagenet2012", "imagenet2012_real", "imagenet_v2")
    assert (c.lr, c.momentum, c.warmup_steps, c.train_steps, c.batch_size) == (0.03, 0.9, 500, 50_000, 512)
    assert (c.grad_clip_norm, c.weight_decay, c.head_bias_init) == (1.0, 0.0, -6.9)
    assert [paper_layer_decay(r) for r in (224, 384, 518)] == [0.85, 0.9, 0.9]
    assert [paper_mixup(r) for r in (224, 384, 518)] == [0.0, 0.2, 0.2]
    assert default_pp_train(224) == "decode|inception_crop(224)|flip_lr|value_range(-1,1)"
    assert default_pp_eval(224) == "decode|resize_small(256)|central_crop(224)|value_range(-1,1)"
    assert data.DATASETS["imagenet2012"].split("minival") == "train[99%:]"


def test_randaug_is_the_papers_per_resolution_choice_and_goes_before_value_range():
    from harness.tasks.imagenet_finetune import (
        FinetuneConfig,
        _check_config,
        _train_pp,
        default_pp_train,
        paper_randaug,
        pp_with_randaug,
        randaug_op,
    )

    assert [paper_randaug(r) for r in (224, 384, 518)] == [None, (2, 10), (2, 10)]
    assert _train_pp(FinetuneConfig(), 224) == (default_pp_train(224), "")
    # big_vision's order: crop, flip, RandAugment on uint8 pixels, then value_range.
    assert _train_pp(FinetuneConfig(), 384) == (
        "decode|inception_crop(384)|flip_lr|randaug(2,10)|value_range(-1,1)", "randaug(2,10)")
    assert _train_pp(FinetuneConfig(randaug="off"), 518) == (default_pp_train(518), "")
    assert _train_pp(FinetuneConfig(randaug="1,5"), 224)[1] == "randaug(1,5)"
    assert randaug_op("randaug(2, 15, prob=0.5)", 224) == "randaug(2, 15, prob=0.5)"
    assert pp_with_randaug("decode|resize(32)", "randaug(2,10)") == "decode|resize(32)|randaug(2,10)"
    own = "decode|randaug(3, 5)|value_range(-1,1)"
    assert _train_pp(FinetuneConfig(pp_train=own), 384) == (own, "randaug(3, 5)")  # the pp's own wins
    for bad in ("2", "2,50", "a,b"):
        with pytest.raises(HarnessError, match="randaug"):
            randaug_op(bad, 384)
    with pytest.raises(HarnessError, match="already has randaug"):
        _train_pp(FinetuneConfig(pp_train=own, randaug="2,10"), 384)
    with pytest.raises(HarnessError, match="magnitude must be in"):  # checked before any data is read
        _check_config(api.make_config(ImageNetFinetune(), None, {"randaug": "2,40"}))


def test_randaug_runs_in_the_train_stream_and_is_recorded(finetuned, tmp_path, data_dir, tiny32):
    _, plain, _ = finetuned
    assert plain.info["finetune"]["randaug"] is None  # 32 px: the paper used none
    metrics, ctx = _run(tiny32, tmp_path, data_dir, train_steps=4, randaug="2,10", real_dataset="",
                        v2_dataset="")
    assert ctx.info["finetune"]["randaug"] == "randaug(2,10)" and ctx.info["finetune"]["steps"] == 4
    (train_pp,) = [d["pp"] for d in ctx.datasets if d["role"] == "train"]
    assert "|flip_lr|randaug(2,10)|value_range(-1,1)|" in train_pp
    assert all(np.isfinite(v) for v in metrics.values())


def test_train_steps_zero_scores_like_an_independent_computation(tmp_path, data_dir, tiny32):
    flat = tiny32.params_numpy()
    flat["head/kernel"] = np.random.default_rng(0).normal(0, 1, (16, 3)).astype(np.float32)
    flat["head/bias"] = np.zeros(3, np.float32)
    path = tmp_path / "headed.npz"
    checkpoints.save_npz(path, flat)
    enc = load_encoder(str(path))
    metrics, _ = _run(enc, tmp_path, data_dir, train_steps=0)
    # Independently: logits through Encoder.features on the eval pp, scored in plain python.
    pp = "decode|resize_small(37)|central_crop(32)|value_range(-1,1)|keep('image', 'label', 'real_label')"
    batches = list(data.iterate(NAME, "test", batch_size=64, pp=pp, data_dir=data_dir))
    (b,) = batches
    m = b["_mask"]
    pred = enc.features(b["image"], ["logits"])["logits"][m].argmax(1)
    labels, sets = b["label"][m], [[x for x in row if x >= 0] for row in b["real_label"][m]]
    top1 = 100 * np.mean(pred == labels)
    kept = [(p, s) for p, s in zip(pred, sets) if s]
    real = 100 * sum(p in s for p, s in kept) / len(kept)
    assert metrics[f"{BASE}/test"] == pytest.approx(top1) and metrics[f"{BASE}/v2"] == pytest.approx(top1)
    assert metrics[f"{BASE}/real"] == pytest.approx(real)
    assert len(set(pred)) > 1  # a non-trivial head, so the check can fail


def test_train_steps_zero_needs_a_matching_head(tmp_path, data_dir, tiny32):
    with pytest.raises(HarnessError, match="no classifier head"):
        _run(tiny32, tmp_path, data_dir, train_steps=0)
    cfg = resolve_config({}, {}, dict(res=32, num_classes=5, **TINY))
    five = Encoder(model=build_model(cfg), params=None, config=cfg, spec="headless", sha256=None)  # fails first
    with pytest.raises(HarnessError, match="5 classes but the dataset has 3"):
        _run(five, tmp_path, data_dir, train_steps=0)


def test_posemb_resampled_at_load_through_the_runner(tmp_path, data_dir, ckpt16):
    from harness.run.runner import run_task

    # lr 0: the fine-tuned posemb is exactly the resampled checkpoint posemb.
    record, path, _ = run_task("imagenet_finetune", ckpt16, sets={"res": "32", "lr": "0", "train_steps": "2",
                               "dataset": NAME, "train_split": "train", "minival_split": "validation",
                               "test_split": "test", "real_dataset": "", "v2_dataset": "",
                               "batch_size": "8", "eval_batch_size": "32"},
                               data_dir=data_dir, out_dir=tmp_path / "runs", cache_dir=tmp_path / "cache",
                               progress=False)
    assert record["checkpoint"]["config"]["res"] == 32
    assert set(record["metrics"]) == {f"{BASE}/minival", f"{BASE}/test"}
    tuned = checkpoints.read_npz(record["artifacts"]["finetuned_npz"])
    original = checkpoints.read_npz(ckpt16)["pos_embedding"]
    assert original.shape == (1, 4, 16) and tuned["pos_embedding"].shape == (1, 16, 16)
    np.testing.assert_allclose(tuned["pos_embedding"], checkpoints.resample_posemb(original, 16), rtol=1e-6)
    assert json.loads(path.read_text())["artifacts"] == record["artifacts"]


def test_killed_run_resumes_to_the_same_result(finetuned, tmp_path, data_dir, ckpt16, monkeypatch):
    straight, _, root = finetuned
    real_fit = train.fit

    def killed_fit(**fit_kw):
        real_fit(**fit_kw, stop_after=15)  # steps 0-14 run; the state at step 10 is on disk
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "fit", killed_fit)
    with pytest.raises(KeyboardInterrupt):
        _run(load_encoder(ckpt16, res=32), tmp_path, data_dir, **FINETUNE)
    assert (tmp_path / "run" / "train_state" / "LATEST").read_text().strip().endswith("10")
    monkeypatch.setattr(train, "fit", real_fit)
    resumed, ctx = _run(load_encoder(ckpt16, res=32), tmp_path, data_dir, **FINETUNE)
    assert ctx.info["finetune"]["resumed_from"] == 10
    assert resumed == straight
    a = checkpoints.read_npz(root / "run" / "finetuned.npz")
    b = checkpoints.read_npz(tmp_path / "run" / "finetuned.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_absurd_lr_stops_with_the_step(tmp_path, data_dir, tiny32):
    with pytest.raises(HarnessError, match=r"(diverged|became nan|became inf).* at step \d+"):
        _run(tiny32, tmp_path, data_dir, lr=1e9, warmup_steps=0,
             grad_clip_norm=0.0, real_dataset="", v2_dataset="")


def test_scan_bfloat16_layer_decay_and_mixup(tmp_path, data_dir, ckpt16):
    enc = load_encoder(ckpt16, res=32, scan=True, dtype_mm="bfloat16", depth=1)
    metrics, ctx = _run(enc, tmp_path, data_dir, train_steps=30, layer_decay=0.8, mixup=0.2,
                        real_dataset="", v2_dataset="")
    assert metrics[f"{BASE}/test"] >= 70
    assert ctx.info["finetune"]["lr_multipliers"] == {"min": pytest.approx(0.64), "max": 1.0}
    tuned = load_encoder(ctx.artifacts["finetuned_npz"])  # scanned tree, read back into an unrolled model
    assert tuned.config["scan"] is True
    assert load_encoder(ctx.artifacts["finetuned_npz"], scan=False).config["num_classes"] == 3


def test_missing_eval_dataset_fails_before_training(tmp_path, data_dir, tiny32):
    with pytest.raises(HarnessError, match="not prepared"):
        _run(tiny32, tmp_path, data_dir, real_dataset="imagenet2012_real")


def test_bad_settings_are_one_line_errors(tmp_path, data_dir, tiny32):
    enc = tiny32
    with pytest.raises(HarnessError, match="layer_decay"):
        _run(enc, tmp_path, data_dir, layer_decay=1.5)
    with pytest.raises(HarnessError, match="res=64 was asked for"):
        _run(enc, tmp_path, data_dir, res=64)


# ------------------------------------------------------------------------------------------- proxy (slow)
@pytest.mark.slow
def test_proxy_preset_beats_chance_and_matches_a_frozen_probe(tmp_path):
    from harness.run.suites import PROXY_CKPT

    if not PROXY_CKPT.exists():
        pytest.skip("the proxy checkpoint is not built yet")
    task = ImageNetFinetune()
    enc = load_encoder(str(PROXY_CKPT))
    ctx = api.RunContext(data_dir=None, cache_dir=tmp_path / "cache", out_dir=tmp_path / "ft", progress=False)
    metrics = task.run(enc, ctx, api.make_config(task, "proxy"))
    base = metric_base("proxy_scenes", enc.res)
    probe = _frozen_probe_accuracy(enc, tmp_path, task.presets["proxy"]["pp_eval"])
    print(f"proxy fine-tune {metrics}; frozen probe test {probe:.1f}; {ctx.info['timings']}")
    assert metrics[f"{base}/test"] > 100 / 24 * 3
    # The proxy checkpoint was pretrained on these very labels (6000 images), so a frozen probe is close to
    # its ceiling; measured: fine-tune 89.6 vs this probe 90.2 on 500 test images (95% CI +-2.8), so the
    # check is "no worse than the probe beyond noise" rather than a strict win.
    assert metrics[f"{base}/test"] > probe - 2.0, (metrics, probe)


def _frozen_probe_accuracy(enc, tmp_path, pp: str) -> float:
    """A logistic-regression probe on frozen pre_logits (the best C on val), scored on test."""
    from sklearn.linear_model import LogisticRegression

    from harness.eval.features import extract

    feats = {s: extract(enc, "proxy_scenes", s, pp=pp, cache_dir=tmp_path / "cache", progress=False)
             for s in ("train", "val", "test")}
    mean, std = feats["train"]["pre_logits"].mean(0), feats["train"]["pre_logits"].std(0) + 1e-6
    x = {s: (np.asarray(f["pre_logits"]) - mean) / std for s, f in feats.items()}
    best = max((LogisticRegression(C=c, max_iter=2000).fit(x["train"], feats["train"]["label"]) for c in
                (0.01, 0.1, 1.0, 10.0)), key=lambda m: m.score(x["val"], feats["val"]["label"]))
    return 100 * best.score(x["test"], feats["test"]["label"])
