"""The text pp lit_zeroshot feeds a checkpoint's own text tower, against the references themselves:

- a Hugging Face SigLIP folder: `SiglipProcessor(text, padding="max_length", truncation=True)`'s ids and
  `SiglipModel`'s text_embeds (tests/data/hf_siglip/two_tower_spm, text_pp_io.npz; made by
  tests/data/make_hf_siglip_fixtures.py --text_pp);
- big_vision two-tower checkpoints: big_vision's own `tokenize(max_len=16, eos="sticky", pad_value=1)` pp
  op (tests/data/bv_text, made by tests/data/make_bv_text_fixtures.py at big_vision 0127fb6);
and the image pp of each pass (big_vision configs/proj/image_text/common.py).
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness import data
from harness.data.text_pp import text_pp_for, tokenize, tokenize_pp
from harness.data.tokenizer import PROXY_TOKENIZER, SiglipTokenizer
from harness.errors import HarnessError
from harness.models import text
from harness.tasks import lit_zeroshot as lz

DATA = Path(__file__).parent / "data"
HF_FOLDER = DATA / "hf_siglip" / "two_tower_spm"
HF_META = json.loads((DATA / "hf_siglip" / "text_pp.json").read_text(encoding="utf-8"))
BV_META = json.loads((DATA / "bv_text" / "tokenize.json").read_text(encoding="utf-8"))
PROMPTS = HF_META["prompts"]
EDGE = HF_META["edge_texts"]


@pytest.fixture(scope="module")
def hf_io():
    return np.load(DATA / "hf_siglip" / "text_pp_io.npz")


@pytest.fixture(scope="module")
def bv_ids():
    return np.load(DATA / "bv_text" / "tokenize.npz")


@pytest.fixture(scope="module")
def hf_tower():
    return text.load_text_tower(str(HF_FOLDER))


def _embed_default(tower, texts, **sets):
    """The task's own route: lit_zeroshot.text_pipeline (its defaults) and text.embed_texts."""
    tok, pp = lz.text_pipeline(lz.LitZeroShotConfig(**sets), tower)
    return tok, pp, text.embed_texts(tower, tok, pp, texts)


# ---------------------------------------------------------------------------------- Hugging Face SigLIP
def test_hf_folder_default_is_its_processor_and_model(hf_tower, hf_io):
    assert hf_tower.max_len == 16 and hf_tower.config["text_pp"] == "hf_siglip"
    tok, pp, z = _embed_default(hf_tower, PROMPTS)
    assert isinstance(tok, SiglipTokenizer) and tok.model_path == str(HF_FOLDER / "spiece.model")
    assert pp.info() == {"family": "hf_siglip", "max_len": 16, "pad_id": 1, "eos": "sticky", "lower": "unicode",
                         "canonicalize": True}
    np.testing.assert_array_equal(tokenize_pp(tok, PROMPTS, pp), hf_io["input_ids"])
    np.testing.assert_allclose(z, hf_io["text_embeds"], atol=1e-5)
    # Two prompts are longer than the tower: HF truncation keeps EOS as the last token, as sticky EOS does.
    long_rows = [i for i, n in enumerate(HF_META["lengths_without_truncation"]) if n > 16]
    assert long_rows and (hf_io["input_ids"][long_rows, -1] == tok.hf_eos_id).all()


def test_hf_tokenizer_corner_cases(hf_io):
    """Empty and blank texts, a literal "</s>" / "<unk>", "\u2581", newlines, over-long words: the same ids
    as SiglipProcessor."""
    tok = SiglipTokenizer(HF_FOLDER)
    np.testing.assert_array_equal(tok.encode_hf(EDGE, 16), hf_io["edge_input_ids"])


def test_hf_folder_needs_its_own_pp(hf_tower, hf_io):
    """big_vision's rule on the same tower keeps punctuation (and the old default padded with 0): other
    tokens, other embeddings, for exactly the rows where that matters."""
    tok, pp_bv, z_bv = _embed_default(hf_tower, PROMPTS, text_pp="big_vision")
    assert pp_bv.family == "big_vision" and pp_bv.pad_id == 1
    # Punctuation (".", ",", "!", "(", "-") inside the first 15 tokens, or "É" (not ASCII-lower-cased).
    other = (tokenize_pp(tok, PROMPTS, pp_bv) != hf_io["input_ids"]).any(axis=1)
    assert other.sum() >= 4
    err = np.abs(z_bv - hf_io["text_embeds"]).max(axis=1)
    assert (err[other] > 1e-3).all() and (err[~other] < 1e-5).all()
    # The old default (pad with the tokenizer's "<pad>", 0) moves every prompt that has padding.
    _, pp0, z0 = _embed_default(hf_tower, PROMPTS, pad_value=0)
    padded = (hf_io["input_ids"] == 1).sum(axis=1) > 1  # more than its one EOS
    assert pp0.pad_id == 0 and padded.any()
    assert (np.abs(z0 - hf_io["text_embeds"]).max(axis=1)[padded] > 1e-3).all()


def test_hf_tokenizer_config_is_read(tmp_path):
    folder = tmp_path / "siglip"
    shutil.copytree(HF_FOLDER, folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "do_lower_case": False}))
    tok = SiglipTokenizer(folder)
    assert not tok.do_lower_case and tok.canonicalize("A Dog, Running!") == "A Dog Running"
    assert text_pp_for("hf_siglip", tok, 16).lower == "none"
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "GemmaTokenizer"}))
    with pytest.raises(HarnessError, match="GemmaTokenizer"):
        SiglipTokenizer(folder)


# ------------------------------------------------------------------------------------------ big_vision
@pytest.fixture(scope="module")
def bv_tower(tmp_path_factory):
    """A big_vision two-tower .npz whose text tower is 16 tokens long (vocabulary 600 covers both models)."""
    import jax

    from harness.models.encoder import load_encoder

    enc = load_encoder("random:0", width=32, depth=1, mlp_dim=64, num_heads=4, patch_size=8, res=32,
                       pool_type="map")
    model = text.TextTransformer(num_classes=32, width=32, depth=1, mlp_dim=64, num_heads=4, vocab_size=600)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), np.zeros((1, 16), np.int32))["params"]
    path = text.save_two_tower(tmp_path_factory.mktemp("bv") / "two.npz", enc.params, params, math.log(10), -10)
    return text.load_text_tower(f"{path}:img")


@pytest.mark.parametrize("model", sorted(BV_META["models"]))
@pytest.mark.parametrize("group", ["prompts", "edge"])
def test_big_vision_default_is_big_vision_tokenize(bv_tower, bv_ids, model, group):
    path = Path(__file__).parents[1] / BV_META["models"][model]
    texts = BV_META["texts"][group]
    assert texts == {"prompts": PROMPTS, "edge": EDGE}[group]
    tok, pp = lz.text_pipeline(lz.LitZeroShotConfig(tokenizer=str(path)), bv_tower)
    assert pp.info() == {"family": "big_vision", "max_len": 16, "pad_id": 1, "eos": "sticky", "lower": "ascii",
                         "canonicalize": False}
    want = bv_ids[f"{model}/siglip/{group}"]
    np.testing.assert_array_equal(tokenize_pp(tok, texts, pp), want)
    # The old default (pad_value=-1: the tokenizer's "<pad>", 0) is big_vision's op WITHOUT pad_value=1,
    # and not its SigLIP text pp wherever a row has padding.
    old = tokenize(tok, texts, 16)
    np.testing.assert_array_equal(old, bv_ids[f"{model}/default_pad/{group}"])
    padded = (want[:, -1] == 1) & (want[:, -2] == 1)
    assert padded.any() and (old != want).any(axis=1)[padded].all()


def test_lit_family_and_overrides(bv_tower):
    cfg = lz.LitZeroShotConfig(train_dataset="proxy_scenes", zeroshot_datasets=("proxy_scenes",),
                               retrieval_datasets=("proxy_scenes",), max_len=24)
    tok, pp = lz.text_pipeline(cfg, None)  # a tower LiT is about to train
    assert tok.model_path == str(PROXY_TOKENIZER)
    assert pp.info() == {"family": "lit", "max_len": 24, "pad_id": tok.eos_id, "eos": "sticky", "lower": "ascii",
                         "canonicalize": False}
    ids = tokenize_pp(tok, ["a red circle"], pp)[0]
    assert ids[-1] == tok.eos_id == 1 and (ids == tok.pad_id).sum() == 0  # EOS all the way: the pooled token
    _, pp7 = lz.text_pipeline(lz.LitZeroShotConfig(tokenizer=str(PROXY_TOKENIZER), pad_value=7), bv_tower)
    assert pp7.pad_id == 7
    with pytest.raises(HarnessError, match="text_pp"):
        lz.text_pipeline(lz.LitZeroShotConfig(text_pp="clip"), bv_tower)
    with pytest.raises(HarnessError, match="Hugging Face"):
        lz.text_pipeline(lz.LitZeroShotConfig(text_pp="hf_siglip", tokenizer=str(PROXY_TOKENIZER)), bv_tower)


# --------------------------------------------------------------------------------------------- image pp
def test_image_pp_defaults_are_big_vision_image_text_evaluators():
    cfg = lz.LitZeroShotConfig()
    # common.py::_square875: resize(int(sz/0.875))|central_crop(sz); get_coco: resize(sz).
    assert lz.image_pps(cfg, 224) == {"zeroshot": "decode|resize(256)|central_crop(224)|value_range(-1,1)",
                                      "retrieval": "decode|resize(224)|value_range(-1,1)",
                                      "train": "decode|resize(224)|value_range(-1,1)"}
    assert lz.image_pps(cfg, 384)["zeroshot"] == "decode|resize(438)|central_crop(384)|value_range(-1,1)"
    assert lz.image_pps(cfg, 64)["zeroshot"] == "decode|resize(73)|central_crop(64)|value_range(-1,1)"
    one = "decode|resize(64)|value_range(-1,1)"
    assert set(lz.image_pps(lz.LitZeroShotConfig(pp=one), 224).values()) == {one}
    assert lz.image_pps(lz.LitZeroShotConfig(zeroshot_pp=one), 224)["retrieval"].endswith("resize(224)|value_range(-1,1)")


def test_defaults_are_big_visions_image_text_configs():
    """Against the values big_vision's own config functions return (tests/data/bv_configs.json):
    `common.py::get_disclf(224|384)`, `get_coco()`, `siglip_lit_coco.py::get_config()`."""
    bv = json.loads((DATA / "bv_configs.json").read_text())
    label_ops = ("pad_to_shape", "keep", "map")

    def image_ops(pp):
        ops = [op.replace(" ", "") for op in pp.split("|")]
        return [op for op in ops if op.split("(")[0] not in label_ops + ("decode",)]

    cfg = lz.LitZeroShotConfig()
    for res in (224, 384):
        disclf = bv["image_text"][f"disclf_{res}"]
        for ds in cfg.zeroshot_datasets:
            want = disclf["dataset_overrides"].get(ds, {}).get("pp_img", disclf["pp_img"])
            assert image_ops(lz.image_pps(cfg, res)["zeroshot"]) == image_ops(want), (ds, res)
            if disclf["dataset_overrides"].get(ds, {}).get("class_names") == "clip":
                assert cfg.class_names == "clip" and data.get_info(ds).imagenet_labels
    coco = bv["image_text"]["coco_retrieval"]
    assert cfg.retrieval_datasets == (coco["dataset"],)
    assert image_ops(lz.image_pps(cfg, 224)["retrieval"]) == image_ops(coco["pp_img"])
    # pp_txt: max_len 16 (the So400m/14-224 tower's length; our default takes the tower's own), sticky
    # EOS, pad_value 1 = c4_en's EOS, i.e. our "pad with the EOS id".
    assert 'eos="sticky"' in coco["pp_txt"] and "pad_value=1" in coco["pp_txt"]
    assert cfg.text_pp == "auto" and cfg.pad_value == -1
    # A new LiT tower's text length: siglip_lit_coco.py's init_shapes (1, token_len=16).
    assert cfg.max_len == bv["siglip_lit_coco"]["init_shapes"][1][1] == 16
    assert cfg.captions_per_image == 0  # every caption, as retrieval.py's get_captions unrolls them


def test_text_pp_settings_are_checked_up_front():
    from harness.api import make_config

    task = lz.LitZeroShot()
    with pytest.raises(HarnessError, match="text_pp"):
        make_config(task, overrides={"text_pp": "clip"})
    with pytest.raises(HarnessError, match="pad_value"):
        make_config(task, overrides={"pad_value": "-2"})
    assert make_config(task, overrides={"text_pp": "hf_siglip", "pad_value": "0"}).pad_value == 0
