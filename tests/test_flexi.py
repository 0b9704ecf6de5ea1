"""Evaluating a checkpoint at another patch size (FlexiViT): the patch-embedding resize against big_vision's
own `resample_patchemb` and its flexi model's stem on fixed inputs (tests/data/make_flexi_fixtures.py), its
defining property, and an encoder key that loads any checkpoint at another patch size."""

import numpy as np
import pytest

from harness.checkpoints import resample_patchemb, resample_posemb, save_npz
from harness.errors import HarnessError
from harness.models.encoder import load_encoder
from harness.run.runner import run_task
from tests.tiny import TINY_RUNS

REF = np.load("tests/data/flexi_reference.npz")
CASES = [("16to14", "kernel16", (14, 14)), ("16to8", "kernel16", (8, 8)), ("16to32", "kernel16", (32, 32)),
         ("16to30", "kernel16", (30, 30)), ("14to15x18", "kernel14", (15, 18)), ("14to16", "kernel14", (16, 16))]


@pytest.mark.parametrize("name, source, hw", CASES, ids=[c[0] for c in CASES])
def test_resample_patchemb_is_big_visions(name, source, hw):
    got = resample_patchemb(REF[source], hw)
    # big_vision builds its resize matrix from TF's float32 resize and takes a float32 pinv: 1e-5 of 3.
    np.testing.assert_allclose(got, REF[f"resample_patchemb_{name}"], atol=2e-5, rtol=0)


def test_an_upsampled_kernel_sees_the_resized_patch_as_the_old_kernel_saw_the_patch():
    """The pseudo-inverse's point: <resize(x), w'> = <x, w> for every patch x when the patch grows."""
    from harness.checkpoints.layout import _bilinear_matrix

    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 8, 3, 5)).astype(np.float32)
    w2 = resample_patchemb(w, (13, 13))
    x = rng.normal(size=(8, 8, 3))
    resize = np.kron(_bilinear_matrix(8, 13), _bilinear_matrix(8, 13))
    x2 = (resize @ x.reshape(64, 3)).reshape(13, 13, 3)
    np.testing.assert_allclose(np.einsum("hwc,hwcd->d", x2, w2), np.einsum("hwc,hwcd->d", x, w), atol=1e-4)


def test_posemb_to_a_new_grid_is_big_visions_load_time_resample():
    for g in (16, 12):
        np.testing.assert_allclose(resample_posemb(REF["posemb"], g * g), REF[f"resample_posemb_{g}"], atol=1e-6)


@pytest.fixture(scope="module")
def flexi_ckpt(tmp_path_factory):
    """big_vision's flexi test model's tree (width 8, depth 1, gap, patch 16, a 14x14 learned posemb) with the
    fixture's kernel, bias and posemb."""
    enc = load_encoder("random:0", width=8, depth=1, mlp_dim=16, num_heads=2, patch_size=16, res=224,
                       pool_type="gap")
    flat = enc.params_numpy()
    flat.update({"embedding/kernel": REF["kernel16"], "embedding/bias": REF["bias"], "pos_embedding": REF["posemb"]})
    return str(save_npz(tmp_path_factory.mktemp("flexi") / "flexi.npz", flat))


@pytest.mark.parametrize("case, patch, res", [("p14", 14, 56), ("p32", 32, 64)])
def test_a_checkpoint_loads_at_another_patch_size_with_big_visions_stem(flexi_ckpt, case, patch, res):
    enc = load_encoder(flexi_ckpt, patch_size=patch, res=res)
    assert enc.config["patch_size"] == (patch, patch) and enc.resampled_from == {"patch_size": [16, 16]}
    assert enc.describe()["resampled_from"] == {"patch_size": [16, 16]}
    stem = enc.features(REF[f"image_{case}"], ["stem"])["stem"]
    np.testing.assert_allclose(stem, REF[f"model_{case}_stem"], atol=1e-4)


def test_a_variant_whose_patch_contradicts_the_checkpoint_is_still_an_error(flexi_ckpt):
    from harness.models.encoder import resolve_config
    from harness.models.variants import decode_variant

    tree = {**decode_variant("Ti/16"), "patch_size": (16, 16)}
    with pytest.raises(HarnessError, match=r"patch_size=\(8, 8\) was asked for.*--set patch_size=N"):
        resolve_config(tree, {}, {"variant": "Ti/8"})
    assert resolve_config(tree, {}, {"variant": "Ti/16", "patch_size": 8})["patch_size"] == (8, 8)
    with pytest.raises(HarnessError, match="not a multiple of the patch size 30"):
        load_encoder(flexi_ckpt, patch_size=30)


def test_a_task_runs_at_another_patch_size_and_records_it(task_env):
    kw = dict(data_dir=task_env["data_dir"], out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)
    base, _, _ = run_task("fewshot", task_env["ckpt"], sets=TINY_RUNS["fewshot"][1], **kw)
    rec, path, _ = run_task("fewshot", task_env["ckpt"], sets={**TINY_RUNS["fewshot"][1], "patch_size": "4"}, **kw)
    assert rec["checkpoint"]["config"]["patch_size"] == [4, 4] and rec["checkpoint"]["resampled_from"] == {
        "patch_size": [8, 8]}
    assert rec["checkpoint"]["gflops"] > base["checkpoint"]["gflops"]
    assert rec["info"]["feature_extraction"][0]["computed_images"] > 0  # another encoder: its own features
    assert rec["task"]["config_hash"] != base["task"]["config_hash"]


def test_a_patch_size_sweep_is_one_row_per_patch_size_and_a_curve_in_the_html(task_env, tmp_path):
    from harness.report import load_records, to_html, to_markdown
    from harness.report.html import _patch_curves
    from harness.report.build import as_table
    from harness.run import suites

    suite = tmp_path / "flexi.toml"
    sets = ", ".join(f'{k} = "{v}"' for k, v in TINY_RUNS["fewshot"][1].items())
    suite.write_text("".join(f'[[task]]\nname = "fewshot"\nset = {{ {sets}, patch_size = "{p}" }}\n'
                             for p in (4, 8, 16)))
    entries = suites.plan(suites.load_suite(str(suite)), {})
    outs = list(suites.run_entries(entries, task_env["ckpt"], data_dir=task_env["data_dir"],
                                   out_dir=tmp_path / "runs", cache_dir=task_env["cache_dir"], progress=False))
    assert [o.error for o in outs] == [None] * 3
    recs = load_records(tmp_path / "runs")
    md = to_markdown(recs)
    for p in (4, 8, 16):
        assert f"tiny.npz [patch_size={p}]" in md
    curves = _patch_curves(as_table(recs, {}))
    assert [caption for caption, _ in curves] == ["fewshot: each metric against the patch size"]
    assert 'id="patch-size"' in to_html(recs)
    assert suites.SUITES["flexi"] and suites.default_ckpt("flexi")
