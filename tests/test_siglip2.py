"""SigLIP 2 in its three layouts (big_vision two-tower .npz or tensorstore, Hugging Face fixed-resolution
`SiglipModel` with a Gemma tokenizer, Hugging Face NaFlex `Siglip2Model`): checkpoints, the NaFlex encoder and
pp, the text pp, and `lit_zeroshot` with no protocol settings.

The references are committed fixtures (tests/data/siglip2/, see tests/data/README.md): transformers' own
outputs (make_siglip2_fixtures.py) and big_vision's own pp ops and models (make_bv_siglip2_fixtures.py), so
these tests need neither; the last ones also check live against transformers when it is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.data.pp import Preprocess, naflex_pp
from harness.data.pp.naflex import sequence_size
from harness.data.text_pp import choose_text_pp, tokenize_pp
from harness.errors import HarnessError
from harness.models import text
from harness.models.encoder import load_encoder
from harness.run.runner import run_task
from tests.tiny import TINY_DS, TINY_RUNS

D = Path(__file__).parent / "data" / "siglip2"
HF = np.load(D / "hf_io.npz")
BV = np.load(D / "bv_io.npz")
META = json.loads((D / "hf_io.json").read_text(encoding="utf-8"))
TEXTS = META["texts"]
NAFLEX_KEYS = ("patches", "type", "yidx", "xidx")
# Each layout: (spec, image tower given big_vision's / transformers' inputs).
LAYOUTS = {"bv_fixed": f"{D}/bv_fixed/two_tower.npz:img", "bv_naflex": f"{D}/bv_naflex/two_tower.npz:img",
           "hf_fixed": str(D / "hf_fixed"), "hf_naflex": str(D / "hf_naflex")}
TOL = 1e-4  # the bound; measured: <= 2e-6 everywhere


def needs_tokenizers(layout: str = "hf_naflex") -> None:
    """A tokenizer.json (all the hf_naflex folder has; every `hf_siglip2` text pp) is read with the `tokenizers`
    library, which transformers installs (CI does): skipped without it."""
    if layout == "hf_naflex":
        pytest.importorskip("tokenizers")


def normalised(z):
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def hf_naflex_inputs():
    """transformers' processor output as big_vision's tuple: the patch grid from `spatial_shapes`, row-major."""
    mask, shapes = HF["naflex_pixel_attention_mask"], HF["naflex_spatial_shapes"]
    yidx, xidx = np.zeros_like(mask), np.zeros_like(mask)
    for i, (h, w) in enumerate(shapes):
        yidx[i, :h * w], xidx[i, :h * w] = np.divmod(np.arange(h * w), w)
    return HF["naflex_pixel_values"], mask, yidx, xidx


@pytest.fixture(scope="module")
def towers():
    """Each layout's encoder and text tower, loaded once."""
    out = {}
    for name, spec in LAYOUTS.items():
        enc = load_encoder(spec)
        out[name] = (enc, text.load_text_tower(enc.checkpoint))
    return out


# ------------------------------------------------------------------------------------------ NaFlex pp
@pytest.mark.parametrize("case", META["grid_cases"], ids=lambda c: f"p{c[0]}_n{c[1]}")
def test_patch_grid_is_both_references(case):
    """The aspect-preserving resize to a patch budget: the same grid as big_vision's `resize_to_sequence` and
    transformers' `Siglip2ImageProcessor` for every size (odd ratios, 1 x 1000, 1080p)."""
    from harness.tf_import import tf

    p, n = case
    ours = np.stack([sequence_size(tf.constant(hw), p, n).numpy() // p for hw in HF["grid_sizes"]])
    np.testing.assert_array_equal(ours, BV[f"bv_grid_{p}_{n}"])
    np.testing.assert_array_equal(ours, HF[f"grid_{p}_{n}"])
    assert (ours.prod(1) <= n).all()


def test_naflex_pp_is_big_vision_and_patches_as_transformers():
    """Odd-aspect images through the harness's NaFlex pp: big_vision's patches, types and coordinates exactly;
    transformers' mask and grid exactly, its pixels within its resizer's difference (torchvision's antialiased
    resize of uint8, rounded, where big_vision resizes float)."""
    from harness.tf_import import tf

    pp = Preprocess(naflex_pp(4, 24))  # starts with decode: the images go in PNG-encoded
    for i, size in enumerate(META["naflex_sizes"]):
        out = {k[6:]: v.numpy() for k, v in pp({"image": tf.io.encode_png(HF[f"naflex_image_{i}"])}).items()}
        for k in NAFLEX_KEYS:
            np.testing.assert_array_equal(out[k], BV[f"bv_naflex_{k}"][i], err_msg=f"image {i} {size}: {k}")
        np.testing.assert_array_equal(out["type"], HF["naflex_pixel_attention_mask"][i])
        n = int(out["type"].sum())
        assert (out["yidx"][:n].max() + 1, out["xidx"][:n].max() + 1) == tuple(HF["naflex_spatial_shapes"][i])
        assert np.abs(out["patches"] - HF["naflex_pixel_values"][i]).max() < 0.01
        assert not out["patches"][n:].any()  # padding patches are zeros
    assert (HF["naflex_spatial_shapes"][:, 0] != HF["naflex_spatial_shapes"][:, 1]).sum() >= 3  # odd ratios


def test_encoder_reads_a_task_pp_as_its_naflex_pp(towers):
    enc = towers["hf_naflex"][0]
    assert enc.naflex and enc.config["max_num_patches"] == 24 and enc.config["nposemb"] == 4
    want = naflex_pp(4, 24)
    assert enc.image_pp("decode|resize(256)|central_crop(224)|value_range(-1,1)") == want
    assert enc.image_pp("decode(precise=True)|resize_small(64)|value_range(-1,1)").startswith("decode(precise=True)|")
    assert enc.image_pp(want) == want
    with pytest.raises(HarnessError, match="flip_lr"):
        enc.image_pp("decode|flip_lr|resize(32)|value_range(-1,1)")
    assert towers["hf_fixed"][0].image_pp("decode|resize(16)") == "decode|resize(16)"
    # NaFlex inputs from NHWC images read at their own grid; a size off the patch grid is one line.
    out = enc.features(np.zeros((2, 8, 12, 3), np.float32), ["pre_logits"])
    assert out["pre_logits"].shape == (2, 32)
    with pytest.raises(HarnessError, match="multiples of 4"):
        enc.features(np.zeros((1, 9, 12, 3), np.float32))


# ------------------------------------------------------------------------------------------- text pp
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_default_text_ids_are_big_vision_siglip2_tokenize(towers, layout):
    """Every layout's default text pp is big_vision's SigLIP 2 one (lower, Gemma vocabulary, 64 tokens, sticky
    EOS, padded with <pad>): the ids of big_vision's own `lower|tok(gemma)` op, from the folder's
    tokenizer.model, or from its tokenizer.json when that is all it has (hf_naflex)."""
    needs_tokenizers(layout)
    _, tower = towers[layout]
    tok, pp = choose_text_pp(tower.config, tower.max_len)
    assert pp.info() == {"family": "siglip2", "max_len": 64, "pad_id": 0, "eos": "sticky", "lower": "ascii",
                         "canonicalize": False}
    assert Path(tok.model_path).name == {"hf_naflex": "tokenizer.json", "hf_fixed": "tokenizer.model"}.get(
        layout, "gemma_tokenizer.model")
    np.testing.assert_array_equal(tokenize_pp(tok, TEXTS, pp), BV["bv_ids"])


@pytest.mark.parametrize("layout", ["hf_fixed", "hf_naflex"])
def test_hf_processor_text_pp_is_transformers(towers, layout):
    """`text_pp=hf_siglip2`: the ids of the folder's own processor (transformers 5.24: GemmaTokenizer for the
    fixed folder, Siglip2Tokenizer, which lower-cases, for the NaFlex one), which differ from big_vision's
    on capitals, special-token strings and non-ASCII text."""
    needs_tokenizers()
    _, tower = towers[layout]
    tok, pp = choose_text_pp(tower.config, tower.max_len, text_pp="hf_siglip2")
    ref = HF[f"{layout[3:]}_proc_ids"]
    np.testing.assert_array_equal(tokenize_pp(tok, TEXTS, pp), ref)
    assert pp.lower == ("unicode" if layout == "hf_naflex" else "none")
    differ = [t for t, a, b in zip(TEXTS, ref, BV["bv_ids"]) if (a != b).any()]
    assert "A Photo Of A King Penguin!" in differ or layout == "hf_naflex"
    assert "a photo of a <eos> token and <pad>" in differ and "a photo of a tench." not in differ
    with pytest.raises(HarnessError, match="hf_siglip2"):
        choose_text_pp(tower.config, tower.max_len, text_pp="hf_siglip")


def test_open_clip_siglip2_text_pp_is_open_clips_tokenizer(tmp_path):
    """open_clip's SigLIP 2 towers tokenize with `HFTokenizer(<Gemma tokenizer>, clean="canonicalize")`; the
    harness replicates it on the tokenizer saved into the folder."""
    import shutil

    from harness.data.text_pp import text_pp_for
    from harness.data.tokenizer import HFGemmaTokenizer

    needs_tokenizers()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(D / "hf_fixed" / name, tmp_path / name)
    tok = HFGemmaTokenizer(tmp_path)
    pp = text_pp_for("open_clip", tok, 64)
    assert pp.lower == "unicode" and pp.canonicalize and pp.pad_id == 0
    ids = tokenize_pp(tok, TEXTS, pp)
    np.testing.assert_array_equal(ids[0], tokenize_pp(tok, ["a photo of a tench"], pp)[0])  # "." removed
    open_clip = pytest.importorskip("open_clip")
    pytest.importorskip("transformers")
    ref = open_clip.tokenizer.HFTokenizer(str(tmp_path), context_length=64, clean="canonicalize")(TEXTS)
    np.testing.assert_array_equal(ids, ref.numpy())


# ----------------------------------------------------------------------------------- the two towers
def test_hf_fixed_matches_transformers(towers):
    enc, tower = towers["hf_fixed"]
    assert not enc.naflex and enc.res == 16
    z = enc.features(HF["fixed_images"], ["pre_logits"])["pre_logits"]
    np.testing.assert_allclose(z, HF["fixed_image_pooler"], atol=TOL)
    np.testing.assert_allclose(z, HF["fixed_image_embeds"], atol=TOL)  # get_image_features: unnormalised
    _check_text_and_logits(tower, "fixed", normalised(z))


def test_hf_naflex_matches_transformers(towers):
    enc, tower = towers["hf_naflex"]
    inputs = hf_naflex_inputs()
    out = enc.features(inputs, ["pre_logits", "encoded"])
    np.testing.assert_allclose(out["pre_logits"], HF["naflex_image_pooler"], atol=TOL)
    np.testing.assert_allclose(out["pre_logits"], HF["naflex_image_embeds"], atol=TOL)
    keep = inputs[1].astype(bool)
    np.testing.assert_allclose(out["encoded"][keep], HF["naflex_last_hidden_state"][keep], atol=TOL)
    _check_text_and_logits(tower, "naflex", normalised(out["pre_logits"]))


def _check_text_and_logits(tower, name, zimg):
    for ids in ("random", "fixed_proc", "naflex_proc"):
        np.testing.assert_allclose(tower.embed(HF[f"{ids}_ids"]), normalised(HF[f"{name}_{ids}_text_embeds"]),
                                   atol=TOL)
    logits = zimg @ tower.embed(HF["random_ids"]).T * tower.scale + tower.b  # sigmoid logits, t and b
    np.testing.assert_allclose(logits, HF[f"{name}_logits_per_image"], atol=TOL)


@pytest.mark.parametrize("layout", ["bv_fixed", "bv_naflex"])
def test_big_vision_two_tower_matches_big_vision(towers, layout):
    enc, tower = towers[layout]
    assert enc.naflex == (layout == "bv_naflex") and tower.max_len == 64
    images = tuple(BV[f"bv_naflex_{k}"] for k in NAFLEX_KEYS) if enc.naflex else HF["fixed_images"]
    zimg = normalised(enc.features(images, ["pre_logits"])["pre_logits"])
    ztxt = tower.embed(BV["bv_ids"])
    np.testing.assert_allclose(zimg, BV[f"{layout}_zimg"], atol=TOL)
    np.testing.assert_allclose(ztxt, BV[f"{layout}_ztxt"], atol=TOL)
    np.testing.assert_allclose(zimg @ ztxt.T * tower.scale + tower.b, BV[f"{layout}_logits"], atol=TOL)


def test_big_vision_tensorstore_two_tower_matches_big_vision(tmp_path):
    """The same two-tower checkpoint written as big_vision's tensorstore step folder (one zarr array per
    `params/...` leaf, `~` for `/`, beside the Gemma vocabulary as big_vision's SigLIP 2 configs keep it): the
    image tower, the default text pp (big_vision's `lower|tok(gemma)`, from gemma_tokenizer.model beside the
    folder) and the logits are big_vision's, as from the .npz."""
    import shutil

    ts = pytest.importorskip("tensorstore")
    folder = tmp_path / "siglip2.bv-000000007"
    folder.mkdir()
    with np.load(D / "bv_fixed" / "two_tower.npz", allow_pickle=False) as z:
        for k in z.files:
            spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder / k.replace("/", "~"))}}
            ts.open(spec, create=True, dtype=z[k].dtype.name, shape=z[k].shape).result().write(z[k]).result()
    shutil.copy(D / "bv_fixed" / "gemma_tokenizer.model", tmp_path / "gemma_tokenizer.model")
    enc = load_encoder(f"{folder}:img")
    tower = text.load_text_tower(enc.checkpoint)
    tok, pp = choose_text_pp(tower.config, tower.max_len)
    assert Path(tok.model_path) == tmp_path / "gemma_tokenizer.model" and pp.info()["family"] == "siglip2"
    np.testing.assert_array_equal(tokenize_pp(tok, TEXTS, pp), BV["bv_ids"])
    zimg = normalised(enc.features(HF["fixed_images"], ["pre_logits"])["pre_logits"])
    ztxt = tower.embed(BV["bv_ids"])
    np.testing.assert_allclose(zimg, BV["bv_fixed_zimg"], atol=TOL)
    np.testing.assert_allclose(zimg @ ztxt.T * tower.scale + tower.b, BV["bv_fixed_logits"], atol=TOL)


def test_live_transformers_on_the_harness_inputs(towers):
    """With transformers installed: the harness's default ids and its NaFlex pp output, fed to transformers'
    models, give the harness's embeddings; its processor tokenizers give hf_siglip2's ids on more texts."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from harness.tf_import import tf

    extra = TEXTS + ["Ünïcödé CAPITALS and <bos> <mask>", "trailing space ", "  ", "ＦＵＬＬＷＩＤＴＨ"]
    for layout, cls in (("hf_fixed", transformers.SiglipModel), ("hf_naflex", transformers.Siglip2Model)):
        enc, tower = towers[layout]
        model = cls.from_pretrained(LAYOUTS[layout], attn_implementation="eager").eval()
        tok, pp = choose_text_pp(tower.config, tower.max_len)
        ids = tokenize_pp(tok, extra, pp)
        with torch.no_grad():
            ref = model.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64))).pooler_output.numpy()
        np.testing.assert_allclose(tower.embed(ids), normalised(ref), atol=TOL)
        proc = transformers.AutoProcessor.from_pretrained(LAYOUTS[layout])
        want = proc(text=extra, padding="max_length", max_length=64, truncation=True)["input_ids"]
        hf_tok, hf_pp = choose_text_pp(tower.config, tower.max_len, text_pp="hf_siglip2")
        np.testing.assert_array_equal(tokenize_pp(hf_tok, extra, hf_pp), np.asarray(want))
    enc, _ = towers["hf_naflex"]
    pp = Preprocess(naflex_pp(4, 24))
    rows = [pp({"image": tf.io.encode_png(HF[f"naflex_image_{i}"])}) for i in range(len(META["naflex_sizes"]))]
    patches, ptype, yidx, xidx = (np.stack([r[f"image/{k}"].numpy() for r in rows]) for k in NAFLEX_KEYS)
    shapes = np.stack([yidx.max(1) + 1, xidx.max(1) + 1], axis=1)
    with torch.no_grad():
        ref = model.vision_model(pixel_values=torch.from_numpy(patches),
                                 pixel_attention_mask=torch.from_numpy(ptype.astype(np.int64)),
                                 spatial_shapes=torch.from_numpy(shapes.astype(np.int64))).pooler_output.numpy()
    np.testing.assert_allclose(enc.features((patches, ptype, yidx, xidx), ["pre_logits"])["pre_logits"], ref,
                               atol=TOL)


_MESH_CHILD = """
import sys
import numpy as np
import jax
sys.path.insert(0, ".")
from tests.test_siglip2 import HF, LAYOUTS, hf_naflex_inputs
from harness.models.encoder import load_encoder
assert jax.device_count() == 2
enc = load_encoder(LAYOUTS["hf_naflex"])
batch = enc.put(hf_naflex_inputs())  # 5 rows over 2 devices: one zero (all-padding) row added, then dropped
out = enc.fetch(enc.dispatch(batch, ["pre_logits"]))["pre_logits"]
np.testing.assert_allclose(out, HF["naflex_image_pooler"], atol=1e-4)
print("ok", out.shape)
"""


def test_naflex_inputs_on_a_device_mesh():
    """The NaFlex tuple through `put` / `dispatch` / `fetch` split over a 2-device mesh (CPU devices) gives
    transformers' embeddings, the padding row of an odd batch dropped."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _MESH_CHILD], cwd=root, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "ok (5, 32)" in out.stdout, out.stderr[-2000:]


# ------------------------------------------------------------------------------------- settings
def test_naflex_settings_are_checked(tmp_path):
    with pytest.raises(HarnessError, match="no fixed resolution"):
        load_encoder(LAYOUTS["hf_naflex"], res=32)
    with pytest.raises(HarnessError, match="fixed-resolution ViT"):
        load_encoder(LAYOUTS["hf_fixed"], max_num_patches=64)
    with pytest.raises(HarnessError, match="patch size"):
        load_encoder(LAYOUTS["hf_naflex"], patch_size=8)
    enc = load_encoder(LAYOUTS["hf_naflex"], max_num_patches=64)
    assert enc.config["max_num_patches"] == 64 and enc.res == 32 and "resize_to_sequence(4, 64)" in enc.image_pp("")
    assert enc.describe()["config"]["max_num_patches"] == 64
    # A NaFlex model at random init, and its big_vision names.
    rnd = load_encoder("random:0", width=32, depth=1, mlp_dim=64, num_heads=4, patch_size=4, pool_type="map",
                       max_num_patches=16)
    names = set(rnd.params_numpy())
    assert {"embedding/kernel", "pos_embedding", "MAPHead_0/probe", "Transformer/encoder_norm/scale"} <= names
    assert rnd.params_numpy()["embedding/kernel"].shape == (48, 32)
    assert rnd.params_numpy()["pos_embedding"].shape == (16, 16, 32)
    path = rnd.save(str(tmp_path / "naflex.npz"))
    back = load_encoder(path, max_num_patches=16)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(back.features(x)["pre_logits"], rnd.features(x)["pre_logits"], atol=1e-6)


# --------------------------------------------------------------------------------- lit_zeroshot
DATA_ONLY = {"zeroshot_datasets": TINY_DS, "retrieval_datasets": TINY_DS, "image_batch_size": "24"}


@pytest.mark.heavy
@pytest.mark.parametrize("layout", ["bv_naflex", "hf_fixed", "hf_naflex"])
def test_lit_zeroshot_runs_each_layout_with_no_protocol_setting(task_env, layout):
    """Only the (offline) datasets are set: the text pp, its length, the prompts, the image pp and the NaFlex
    budget are the layout's own defaults, and the record says which."""
    needs_tokenizers(layout)
    rec, _, _ = run_task("lit_zeroshot", LAYOUTS[layout], sets=DATA_ONLY, data_dir=task_env["data_dir"],
                         out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)
    info = rec["info"]
    assert info["text_tower"]["source"] == "checkpoint" and "lit_training" not in info
    assert info["text_pp"] == {"family": "siglip2", "max_len": 64, "pad_id": 0, "eos": "sticky", "lower": "ascii",
                               "canonicalize": False}
    assert info["prompt_templates"] == {"name": "clip_paper", "count": 81}
    assert 0 <= rec["metrics"][f"lit_zeroshot/{TINY_DS}/top1"]["value"] <= 100
    pps = {e["pp"] for e in info["feature_extraction"]}
    if layout.endswith("naflex"):
        budget = {"bv_naflex": 256, "hf_naflex": 24}[layout]  # big_vision's default; the folder's processor's
        assert rec["checkpoint"]["config"]["max_num_patches"] == budget
        assert pps == {naflex_pp(4, budget)}  # zero-shot and retrieval alike: one cache entry per split
    else:
        assert pps == {"decode|resize(18)|central_crop(16)|value_range(-1,1)", "decode|resize(16)|value_range(-1,1)"}


def test_lit_zeroshot_hf_processor_choice_and_budget(task_env):
    needs_tokenizers()
    rec, _, _ = run_task("lit_zeroshot", LAYOUTS["hf_naflex"],
                         sets={**DATA_ONLY, "retrieval_datasets": "", "text_pp": "hf_siglip2",
                               "prompt_templates": "class_name_only", "max_num_patches": "16"},
                         data_dir=task_env["data_dir"], out_dir=task_env["out"],
                         cache_dir=task_env["cache_dir"], progress=False)
    assert rec["info"]["text_pp"]["family"] == "hf_siglip2" and rec["info"]["text_pp"]["lower"] == "unicode"
    assert rec["checkpoint"]["config"]["max_num_patches"] == 16
    assert {e["pp"] for e in rec["info"]["feature_extraction"]} == {naflex_pp(4, 16)}


def test_naflex_encoder_runs_the_feature_tasks_and_refuses_the_others(task_env):
    preset, sets = TINY_RUNS["fewshot"]
    rec, _, _ = run_task("fewshot", LAYOUTS["hf_naflex"], preset=preset, sets=sets, data_dir=task_env["data_dir"],
                         out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)
    assert {e["pp"] for e in rec["info"]["feature_extraction"]} == {naflex_pp(4, 24)}
    preset, sets = TINY_RUNS["imagenet_finetune"]
    with pytest.raises(HarnessError, match="NaFlex"):
        run_task("imagenet_finetune", LAYOUTS["hf_naflex"], preset=preset, sets={**sets, "res": "0"},
                 data_dir=task_env["data_dir"], out_dir=task_env["out"], cache_dir=task_env["cache_dir"],
                 progress=False)
