"""Checkpoint formats, layout conversions, posemb resampling and every kind of bad input."""

import json
import re
import zipfile

import ml_dtypes
import numpy as np
import pytest

from harness import checkpoints
from harness.errors import HarnessError
from harness.models.encoder import load_encoder
from tests.tiny import TINY_VIT


@pytest.fixture(scope="module")
def enc():
    return load_encoder("random:3", **TINY_VIT, pool_type="map", num_classes=3)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)


def same(a, b, atol=1e-6):
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=atol, err_msg=k)


def test_npz_is_flat_big_vision_layout(tmp_path, enc):
    path = enc.save(str(tmp_path / "e.npz"))
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
    assert "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel" in keys
    assert "MAPHead_0/probe" in keys and "pos_embedding" in keys and "head/kernel" in keys
    assert z is not None


@pytest.mark.parametrize("wrap", ["params", "opt/target"])
def test_training_wrappers_unwrapped(tmp_path, enc, x, wrap):
    path = checkpoints.save_npz(tmp_path / "w.npz", enc.params_numpy(), wrap=wrap)
    same(load_encoder(str(path)).features(x), enc.features(x))


def test_two_tower_subtree(tmp_path, enc, x):
    flat = {f"img/{k}": v for k, v in enc.params_numpy().items()}
    flat["txt/Embed_0/embedding"] = np.zeros((10, 8), np.float32)
    flat["t"] = np.array([2.3], np.float32)
    path = checkpoints.save_npz(tmp_path / "siglip.npz", flat, wrap="params")
    same(load_encoder(f"{path}:img").features(x), enc.features(x))
    with pytest.raises(HarnessError, match="no sub-tree 'image'"):
        load_encoder(f"{path}:image")


def test_bfloat16_npz_is_void_and_recovered(tmp_path, enc, x):
    flat = {k: v.astype(ml_dtypes.bfloat16) for k, v in enc.params_numpy().items()}
    path = checkpoints.save_npz(tmp_path / "bf16.npz", flat)
    with np.load(path, allow_pickle=False) as z:
        assert z["embedding/kernel"].dtype.kind == "V" and z["embedding/kernel"].dtype.itemsize == 2
    loaded = checkpoints.read_npz(path)
    assert loaded["embedding/kernel"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(loaded["embedding/kernel"].astype(np.float32),
                                  flat["embedding/kernel"].astype(np.float32))
    same(load_encoder(str(path)).features(x), enc.features(x), atol=0.1)


def test_tensorstore_folder(tmp_path, enc, x):
    import tensorstore as ts

    folder = tmp_path / "checkpoint.bv-000000100"
    folder.mkdir()
    for k, v in {**{f"params/{k}": v for k, v in enc.params_numpy().items()},
                 "opt/0/mu/head/bias": np.zeros(3, np.float32)}.items():
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder / k.replace("/", "~"))}}
        arr = ts.open(spec, create=True, dtype=v.dtype.name, shape=v.shape).result()
        arr.write(v).result()
    (tmp_path / "checkpoint.bv-LAST").write_text("000000100")
    same(load_encoder(str(folder)).features(x), enc.features(x))
    # big_vision's `-LAST` pointer resolves to the newest step.
    same(load_encoder(str(tmp_path / "checkpoint.bv")).features(x), enc.features(x))


def test_harness_orbax_checkpoint(tmp_path, enc, x):
    path = enc.save(str(tmp_path / "mine"), fmt="harness")
    meta = json.loads((tmp_path / "mine" / "harness.json").read_text())
    assert meta["config"]["width"] == 32
    loaded = load_encoder(path)
    assert loaded.config["pool_type"] == "map"
    same(loaded.features(x), enc.features(x))


def test_scan_and_unrolled_convert_both_ways(enc):
    flat = enc.params_numpy()
    scanned = checkpoints.unrolled_to_scan(dict(flat))
    assert scanned["Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"].shape == (2, 32, 64)
    back = checkpoints.scan_to_unrolled(scanned)
    assert set(back) == set(flat)
    for k in flat:
        np.testing.assert_array_equal(back[k], flat[k])


def test_old_public_layout(tmp_path, enc, x):
    """Pre-Linen numbering, the posemb under Transformer/posembed_input, inline MAP head -> same outputs.
    (A MAP model never had a cls row in its posemb: see test_cls_row_without_cls_token_is_refused.)"""
    flat = enc.params_numpy()
    old = {}
    rename = {"LayerNorm_0": "LayerNorm_0", "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
              "LayerNorm_1": "LayerNorm_2", "MlpBlock_0": "MlpBlock_3"}
    for k, v in flat.items():
        parts = k.split("/")
        if k.startswith("Transformer/encoderblock_"):
            parts[2] = rename[parts[2]]
        if parts[0] == "MAPHead_0":
            parts = parts[1:]  # inline MAP head
        old["/".join(parts)] = v
    old["Transformer/posembed_input/pos_embedding"] = old.pop("pos_embedding")
    path = checkpoints.save_npz(tmp_path / "old.npz", old)
    same(load_encoder(str(path)).features(x), enc.features(x))


@pytest.mark.parametrize("where", ["pos_embedding", "Transformer/posembed_input/pos_embedding"])
def test_cls_row_without_cls_token_is_refused(tmp_path, enc, where):
    """g*g+1 posemb tokens in a tree with no cls token (MAP here) is not big_vision's old cls+posemb layout
    (only cls models had it): refused with the leaf and both shapes, never loaded at a smaller grid."""
    flat = enc.params_numpy()
    pe = flat.pop("pos_embedding")  # (1, 16, 32): a 4x4 grid
    flat[where] = np.concatenate([np.ones((1, 1, 32), np.float32), pe], 1)
    path = checkpoints.save_npz(tmp_path / "bad.npz", flat)
    with pytest.raises(HarnessError, match=r"pos_embedding has shape \(1, 17, 32\).*not a square grid.*"
                                           r"no cls token.*wants \(1, 16, 32\)"):
        load_encoder(str(path))
    with pytest.raises(HarnessError, match=r"wants \(1, 64, 32\)"):  # at an explicit res: that model's shape
        load_encoder(str(path), res=32)


@pytest.mark.parametrize("tokens", [15, 18, 20])
def test_non_square_posemb_is_refused(tmp_path, enc, tokens):
    flat = enc.params_numpy()
    flat["pos_embedding"] = np.resize(flat["pos_embedding"], (1, tokens, 32))
    path = checkpoints.save_npz(tmp_path / "bad.npz", flat)
    with pytest.raises(HarnessError, match=rf"pos_embedding has shape \(1, {tokens}, 32\).*not a square grid"):
        load_encoder(str(path))


@pytest.mark.parametrize("scan_model", [False, True])
@pytest.mark.parametrize("leaf", ["Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel",
                                  "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel",
                                  "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
                                  "embedding/kernel", "MAPHead_0/MlpBlock_0/Dense_1/kernel"])
def test_wrong_kernel_shape_is_reported_at_that_kernel(tmp_path, enc, leaf, scan_model):
    """One corrupt leaf is named itself (the config is read off the majority of leaves, so the bad leaf
    does not move every other leaf's expected shape), in either model layout."""
    flat = enc.params_numpy()
    k = flat[leaf]
    flat[leaf] = np.zeros(k.shape[:-1] + (k.shape[-1] - 1,), k.dtype)
    path = checkpoints.save_npz(tmp_path / "bad.npz", flat)
    with pytest.raises(HarnessError, match=rf"wrong shape at {re.escape(leaf)}: checkpoint"):
        load_encoder(str(path), scan=scan_model)


def test_wrong_kernel_shape_in_a_scanned_checkpoint(tmp_path, enc):
    flat = checkpoints.unrolled_to_scan(enc.params_numpy())
    leaf = "Transformer/encoderblock/MlpBlock_0/Dense_1/kernel"
    flat[leaf] = flat[leaf][:, :-1]
    path = checkpoints.save_npz(tmp_path / "bad.npz", flat)
    for scan in (False, True):
        with pytest.raises(HarnessError, match=rf"wrong shape at {re.escape(leaf)}: checkpoint \(2, 63, 32\)"):
            load_encoder(str(path), scan=scan)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_naming_the_leaf(tmp_path, enc, value):
    flat = enc.params_numpy()
    leaf = "Transformer/encoderblock_1/MlpBlock_0/Dense_0/kernel"
    flat[leaf] = flat[leaf].copy()
    flat[leaf][3, 5] = value
    path = checkpoints.save_npz(tmp_path / "bad.npz", flat)
    with pytest.raises(HarnessError, match=rf"{re.escape(leaf)} holds 1 non-finite value \(NaN or Inf\)"):
        load_encoder(str(path))
    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in flat.items()}  # bfloat16 leaves are checked too
    path = checkpoints.save_npz(tmp_path / "bad_bf16.npz", bf16)
    with pytest.raises(HarnessError, match=re.escape(leaf)):
        load_encoder(str(path))


def test_old_cls_row_folds_into_cls(tmp_path, x):
    enc = load_encoder("random:1", **TINY_VIT, pool_type="tok")
    flat = enc.params_numpy()
    flat["cls"] = flat["cls"] + 0.3
    new = checkpoints.save_npz(tmp_path / "new.npz", flat)
    row = np.full((1, 1, 32), 0.2, np.float32)
    old = dict(flat, cls=flat["cls"] - row)
    old["Transformer/posembed_input/pos_embedding"] = np.concatenate([row, old.pop("pos_embedding")], 1)
    oldp = checkpoints.save_npz(tmp_path / "old.npz", old)
    same(load_encoder(str(oldp)).features(x), load_encoder(str(new)).features(x), atol=1e-5)


def test_posemb_resampling_is_bilinear_on_the_grid():
    rng = np.random.default_rng(0)
    pe = rng.standard_normal((1, 16, 5)).astype(np.float32)  # 4x4 grid
    got = checkpoints.resample_posemb(pe, 36)  # 6x6
    # Independent: separable linear interpolation with corners aligned (order-1 spline zoom).
    grid = pe.reshape(4, 4, 5)
    src = np.linspace(0, 3, 6)
    rows = np.stack([np.stack([np.interp(src, np.arange(4), grid[:, j, c]) for c in range(5)], -1)
                     for j in range(4)], 1)  # (6, 4, 5)
    want = np.stack([np.stack([np.interp(src, np.arange(4), rows[i, :, c]) for c in range(5)], -1)
                     for i in range(6)], 0)
    np.testing.assert_allclose(got.reshape(6, 6, 5), want, atol=1e-5)
    assert checkpoints.resample_posemb(pe, 16) is pe


def test_load_at_higher_resolution(tmp_path, enc):
    path = enc.save(str(tmp_path / "e.npz"))
    hi = load_encoder(path, res=24)
    assert hi.params["pos_embedding"].shape == (1, 36, 32)
    assert hi.features(np.zeros((1, 24, 24, 3), np.float32))["encoded"].shape == (1, 36, 32)


# ------------------------------------------------------------------------------------- bad inputs
def test_missing_file():
    with pytest.raises(HarnessError, match="no such file"):
        load_encoder("/nonexistent/ckpt.npz")


def test_truncated_npz(tmp_path, enc):
    path = enc.save(str(tmp_path / "e.npz"))
    data = open(path, "rb").read()
    bad = tmp_path / "trunc.npz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(HarnessError, match=r"trunc.npz: not a readable .npz.*truncated or corrupt"):
        load_encoder(str(bad))


def test_corrupt_bytes(tmp_path):
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(HarnessError, match="junk.npz: not a readable .npz"):
        load_encoder(str(bad))


def test_never_unpickles(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, **{"embedding/kernel": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(HarnessError, match="refusing to unpickle"):
        load_encoder(str(path))


def test_missing_and_extra_keys(tmp_path, enc):
    flat = enc.params_numpy()
    del flat["Transformer/encoderblock_1/LayerNorm_0/scale"]
    flat["bogus/kernel"] = np.zeros(3, np.float32)
    path = checkpoints.save_npz(tmp_path / "k.npz", flat)
    with pytest.raises(HarnessError) as e:
        load_encoder(str(path))
    msg = str(e.value)
    assert "k.npz" in msg and "missing keys ['Transformer/encoderblock_1/LayerNorm_0/scale']" in msg
    assert "unexpected keys ['bogus/kernel']" in msg


def test_wrong_shape(tmp_path, enc):
    flat = enc.params_numpy()
    flat["MAPHead_0/MlpBlock_0/Dense_0/bias"] = np.zeros(65, np.float32)
    path = checkpoints.save_npz(tmp_path / "s.npz", flat)
    with pytest.raises(HarnessError, match=r"wrong shape at MAPHead_0/MlpBlock_0/Dense_0/bias: checkpoint \(65,\)"):
        load_encoder(str(path))


def test_hf_folder_without_safetensors_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(HarnessError, match="never loaded"):
        load_encoder(str(tmp_path))


def test_save_is_atomic(tmp_path, enc, monkeypatch):
    path = tmp_path / "e.npz"

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_npz(path, enc.params_numpy())
    assert not path.exists() and not list(tmp_path.iterdir())
    assert zipfile  # keep the import honest
