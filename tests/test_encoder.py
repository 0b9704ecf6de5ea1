"""The flax encoder against an independent numpy implementation of the same math (tests/numpy_vit.py)."""

import numpy as np
import pytest

from harness import checkpoints
from harness.errors import HarnessError
from harness.models.encoder import infer_config, load_encoder
from harness.models.variants import decode_variant, shape_of
from tests.numpy_vit import forward
from tests.tiny import TINY_VIT


def perturbed(enc, seed=0):
    """Random init has zero biases and unit LN scales; perturb so a wrong mapping cannot pass."""
    rng = np.random.default_rng(seed)
    flat = enc.params_numpy()
    return {k: (v.astype(np.float32) + 0.05 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in flat.items()}


def images(n=2, res=16, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, res, res, 3)).astype(np.float32)


CASES = [
    dict(pool_type="map"),
    dict(pool_type="gap"),
    dict(pool_type="tok", rep_size=8),
    dict(pool_type="0", num_classes=3),
    dict(pool_type="none"),
    dict(pool_type="map", posemb="sincos2d", num_classes=5, rep_size=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan"])
def test_matches_numpy_oracle(tmp_path, case, scan):
    enc = load_encoder("random:0", **TINY_VIT, **case)
    path = checkpoints.save_npz(tmp_path / "p.npz", perturbed(enc))
    loaded = load_encoder(str(path), scan=scan, pool_type=case["pool_type"], posemb=case.get("posemb", "learn"))
    assert loaded.config["scan"] is scan
    x = images()
    got = loaded.features(x)
    want = forward(checkpoints.read_npz(path), x.astype(np.float64), pool_type=case["pool_type"],
                   posemb=case.get("posemb", "learn"))
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, atol=2e-5, rtol=1e-4, err_msg=k)
    if case["pool_type"] == "none":
        assert got["pre_logits"].ndim == 3  # big_vision: the token sequence
    if case["pool_type"] == "tok":  # big_vision: `encoded` keeps the class token, the 2-D map drops it
        assert got["encoded"].shape[1] == 1 + got["pre_logits_2d"].shape[1] * got["pre_logits_2d"].shape[2]


def test_bfloat16_matmuls_close_to_float32(tmp_path):
    enc = load_encoder("random:0", **TINY_VIT, pool_type="map", num_classes=5)
    path = checkpoints.save_npz(tmp_path / "p.npz", perturbed(enc))
    f32 = load_encoder(str(path)).features(images())
    bf16 = load_encoder(str(path), dtype_mm="bfloat16")
    # The reference keeps params float32 except the posemb, stored in the compute dtype.
    assert str(bf16.params["pos_embedding"].dtype) == "bfloat16"
    assert str(bf16.params["embedding"]["kernel"].dtype) == "float32"
    got = bf16.features(images())
    for k in ("encoded", "pre_logits", "logits"):
        np.testing.assert_allclose(got[k], f32[k], atol=0.1, rtol=0.05, err_msg=k)
        assert not np.array_equal(got[k], f32[k])  # bf16 really was used


def test_config_read_off_the_tree(tmp_path):
    enc = load_encoder("random:0", width=48, depth=3, mlp_dim=80, num_heads=6, patch_size=8, res=32,
                       pool_type="map", rep_size=16, num_classes=7)
    path = enc.save(str(tmp_path / "e.npz"))
    cfg = infer_config(checkpoints.read_npz(path))
    assert cfg == dict(patch_size=(8, 8), width=48, depth=3, mlp_dim=80, num_heads=6, scan=False,
                       pool_type="map", posemb="learn", res=32, rep_size=16, num_classes=7)
    again = load_encoder(path)
    assert {k: again.config[k] for k in cfg} == cfg


def test_explicit_flags_checked_against_tree(tmp_path):
    enc = load_encoder("random:0", **TINY_VIT, pool_type="map")
    path = enc.save(str(tmp_path / "e.npz"))
    with pytest.raises(HarnessError, match="width=64 was asked for but the checkpoint has width=32"):
        load_encoder(path, width=64)
    with pytest.raises(HarnessError, match="checkpoint has width=32"):
        load_encoder(path, variant="B/16")
    with pytest.raises(HarnessError, match="did you mean 'mlp_dim'"):
        load_encoder(path, mlp_dims=64)


def test_variants_decode_and_paper_numbers():
    assert decode_variant("So400m/14") == dict(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=(14, 14))
    assert decode_variant("So150m/14")["width"] == 880
    s = shape_of("So400m/14", pool_type="map")
    assert round(s.num_params(224) / 1e6) == 428  # paper Table 1: 428M
    assert abs(s.gflops(224) - 221) < 1.5  # paper: 221 GFLOPs
    assert abs(s.gflops(518) - 1374) / 1374 < 0.01  # paper: 1374 GFLOPs
    assert abs(s.gflops(384) - 672) / 672 < 0.01
    assert round(shape_of("B/16", pool_type="gap").num_params() / 1e6) == 86
    assert round(shape_of("L/16", pool_type="gap").num_params(384) / 1e6) == 304  # paper 303M (posemb at 224)
    with pytest.raises(HarnessError, match="did you mean 'So400m'"):
        decode_variant("So40m/14")


@pytest.mark.parametrize("kw", [dict(pool_type="map", num_classes=4, rep_size=8), dict(pool_type="tok"),
                                dict(pool_type="map", num_classes=4, rep_size=True), dict(pool_type="gap", rep_size=True)])
def test_param_count_formula_matches_model(kw):
    import jax

    from harness.models.encoder import abstract_params, build_model, resolve_config

    cfg = resolve_config({}, {}, {**TINY_VIT, **kw})
    flat = abstract_params(build_model(cfg), cfg["res"])
    n = sum(int(np.prod(v.shape)) for v in flat.values())
    s = shape_of("B/16", **{k: cfg[k] for k in ("width", "depth", "mlp_dim", "num_heads")},
                 pool_type=kw["pool_type"], rep_size=kw.get("rep_size", 0), num_classes=kw.get("num_classes", 0))
    s = type(s)(**{**s.__dict__, "patch": 4})
    assert s.num_params(16) == n
    # The encoder's own shape (what records carry) counts a `rep_size=True` pre_logits as `width` wide.
    enc = load_encoder("random:0", **{**TINY_VIT, **kw})
    assert enc.shape.num_params(16) == n == sum(int(np.prod(v.shape)) for v in enc.params_numpy().values())
    assert enc.describe()["params_m"] == round(n / 1e6, 3)
    del jax


def test_rep_size_true_is_the_width(tmp_path):
    """big_vision's rep_size=True is a pre_logits Dense of size `width`: asking for it on a checkpoint whose
    pre_logits is `width` wide agrees with the tree (and its FLOPs count a width x width layer)."""
    enc = load_encoder("random:0", **TINY_VIT, pool_type="map", rep_size=True, num_classes=3)
    assert enc.config["rep_size"] == 32 and enc.shape.rep_size == 32
    path = enc.save(str(tmp_path / "e.npz"))
    again = load_encoder(path, rep_size=True)
    assert again.config["rep_size"] == 32
    assert load_encoder(path, rep_size=32).config == again.config
    with pytest.raises(HarnessError, match="rep_size=16 was asked for but the checkpoint has rep_size=32"):
        load_encoder(path, rep_size=16)
    with pytest.raises(HarnessError, match="rep_size=False was asked for but the checkpoint has rep_size=32"):
        load_encoder(path, rep_size=False)
    no_rep = load_encoder("random:0", **TINY_VIT, pool_type="map", num_classes=3)
    d, t = 32, 16
    assert enc.shape.gflops(16) - no_rep.shape.gflops(16) == pytest.approx(2 * d * d / 1e9)
    assert enc.shape.num_params(16) - no_rep.shape.num_params(16) == d * d + d
    del t


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cpu_attention_equals_flax(dtype):
    # harness.models.vit.attention reorders the operands for XLA:CPU's matmul kernels; the values are flax's.
    import flax.linen as nn
    import jax.numpy as jnp

    from harness.models.vit import attention

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 9, 3, 55)), dtype) for _ in range(3))
    ours, ref = attention(q, k, v, deterministic=True), nn.dot_product_attention(q, k, v, deterministic=True)
    assert ours.shape == ref.shape == (2, 9, 3, 55) and ours.dtype == ref.dtype == jnp.dtype(dtype)
    tol = 1e-6 if dtype == "float32" else 2e-2  # bf16: one rounding of the f32-accumulated scores moves
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(ref, np.float32), atol=tol, rtol=0)
    mask = jnp.asarray(rng.integers(0, 2, (2, 1, 9, 9)).astype(bool)).at[..., 0].set(True)
    np.testing.assert_array_equal(np.asarray(attention(q, k, v, mask=mask, deterministic=True), np.float32),
                                  np.asarray(nn.dot_product_attention(q, k, v, mask=mask, deterministic=True),
                                             np.float32))  # masks take flax's own path


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scan"])
def test_attention_implementations_agree(tmp_path, case, scan):
    """jax.nn.dot_product_attention (XLA) and the CPU's heads-first layout equal flax's einsum attention (the
    old path, big_vision's function) to float32 rounding, for every pool type and both layer layouts; "cudnn"
    falls back to XLA where cuDNN refuses (here: no GPU) and then equals it bit for bit."""
    import dataclasses

    from harness.models import vit

    enc = load_encoder("random:0", **TINY_VIT, **case)
    path = checkpoints.save_npz(tmp_path / "p.npz", perturbed(enc))
    loaded = load_encoder(str(path), scan=scan, pool_type=case["pool_type"], posemb=case.get("posemb", "learn"))
    x = images()
    got = {impl: dataclasses.replace(loaded, model=loaded.model.clone(attention=impl)).features(x)
           for impl in ("einsum", "heads_first", "xla", "cudnn")}
    refusals = len(vit.CUDNN_REFUSALS)
    assert refusals > 0  # the cudnn model was traced here, and cuDNN said no
    for impl in ("heads_first", "xla", "cudnn"):
        for k, v in got["einsum"].items():
            np.testing.assert_allclose(got[impl][k], v, atol=1e-5, rtol=1e-5, err_msg=f"{impl} {k}")
    for k in got["xla"]:
        np.testing.assert_array_equal(got["cudnn"][k], got["xla"][k])
    assert all(np.array_equal(got["heads_first"][k], loaded.features(x)[k]) for k in got["xla"])  # CPU's "auto"


def test_attention_and_matmul_dtype_per_backend():
    import jax.numpy as jnp

    from harness.models.encoder import default_dtype_mm, resolve_config
    from harness.models.vit import resolve_attention

    assert resolve_attention("auto", "cpu", jnp.float32, 72) == "heads_first"
    assert resolve_attention("auto", "cpu", jnp.bfloat16, 72) == "heads_first"
    assert resolve_attention("auto", "gpu", jnp.bfloat16, 72) == "cudnn"  # So400m/14: 1152 / 16 heads
    assert resolve_attention("auto", "gpu", jnp.float16, 64) == "cudnn"
    assert resolve_attention("auto", "gpu", jnp.bfloat16, 55) == "xla"  # So150m/14: 880 / 16, not a multiple of 8
    assert resolve_attention("auto", "gpu", jnp.bfloat16, 160) == "xla"
    assert resolve_attention("auto", "gpu", jnp.float32, 72) == "xla"  # cuDNN's fused kernel: 16-bit only
    assert resolve_attention("auto", "tpu", jnp.bfloat16, 72) == "xla"
    assert resolve_attention("einsum", "gpu", jnp.bfloat16, 72) == "einsum"
    with pytest.raises(ValueError, match="unknown attention"):
        resolve_attention("flash", "gpu", jnp.bfloat16, 72)
    assert (default_dtype_mm("cpu"), default_dtype_mm("gpu"), default_dtype_mm("tpu")) == (
        "float32", "bfloat16", "bfloat16")
    cfg = resolve_config({}, {}, {"variant": "Ti/16"})  # this machine: CPU
    assert cfg["dtype_mm"] == "float32"
    assert resolve_config({}, {}, {"variant": "Ti/16", "dtype_mm": "bfloat16"})["dtype_mm"] == "bfloat16"


def test_put_dispatch_fetch_is_features_and_one_compilation_per_shape():
    enc = load_encoder("random:0", **TINY_VIT, pool_type="map")
    x = images(4)
    pending = [enc.dispatch(enc.put(x[i:i + 2]), ("pre_logits",)) for i in (0, 2)]  # two in flight
    got = np.concatenate([enc.fetch(p)["pre_logits"] for p in pending])
    want = np.concatenate([enc.features(x[i:i + 2], ("pre_logits",))["pre_logits"] for i in (0, 2)])
    np.testing.assert_array_equal(got, want)
    assert enc._apply._cache_size() == 1  # the same batch shape and outputs: compiled once
    enc.features(x, ("pre_logits",))
    assert enc._apply._cache_size() == 2  # another batch shape
