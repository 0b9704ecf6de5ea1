"""LiT zero-shot: losses, retrieval recall, zero-shot pieces, two-tower checkpoints (big_vision .npz and
Hugging Face SigLIP), and the task end to end on the tiny proxy."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness import checkpoints
from harness.data.text_pp import tokenize
from harness.data.texts import clip_imagenet_class_names, prompt_templates, read_field
from harness.data.tokenizer import PROXY_TOKENIZER, canonicalize_text
from harness.errors import HarnessError
from harness.eval.metrics import retrieval_recall, zeroshot_hits
from harness.models import text
from harness.models.encoder import load_encoder
from harness.run.runner import run_task
from harness.run.suites import PROXY_CKPT
from harness.tasks import lit_zeroshot as lz
from tests.tiny import TINY_ENC

HF = Path(__file__).parent / "data" / "hf_siglip"
TINY_TXT = dict(num_classes=32, width=32, depth=2, mlp_dim=64, num_heads=4, vocab_size=600)


# ------------------------------------------------------------------------------------------ losses
def test_sigmoid_loss_hand_computed():
    z = np.eye(2, dtype=np.float32)
    # logits = 10 * I - 10: diagonal 0 (label +1: -log sigmoid(0) = log 2), off-diagonal -10 (label -1:
    # -log sigmoid(10) = log(1 + e^-10)); per image one of each, summed; mean over the 2 images.
    want = math.log(2) + math.log1p(math.exp(-10))
    assert float(text.sigmoid_loss(z, z, 10.0, -10.0)) == pytest.approx(want, rel=1e-6)
    # Orthogonal pairs of 3-4-5 vectors: zimg.ztxt = [[0.6, 0.8], [0.8, 0.6]] -> logits 2*s - 1.
    zi = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    zt = np.array([[0.6, 0.8], [0.8, 0.6]], np.float32)
    sp = lambda x: math.log1p(math.exp(x))  # -log sigmoid(-x)
    want = (sp(-(0.2)) + sp(0.6) + sp(0.6) + sp(-(0.2))) / 2  # diag: -log sig(0.2); off: -log sig(-0.6)
    assert float(text.sigmoid_loss(zi, zt, 2.0, -1.0)) == pytest.approx(want, rel=1e-6)


def test_softmax_loss_hand_computed():
    z = np.eye(2, dtype=np.float32)
    # logits = I: each row/column softmax gives the match e / (e + 1); both directions agree.
    want = math.log1p(math.exp(-1))
    assert float(text.softmax_contrastive_loss(z, z, 1.0)) == pytest.approx(want, rel=1e-6)
    zi = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    zt = np.array([[0.6, 0.8], [0.8, 0.6]], np.float32)
    # logits = [[0.6, 0.8], [0.8, 0.6]]: every diagonal entry is 0.2 below its row's and column's other.
    want = math.log1p(math.exp(0.2))
    assert float(text.softmax_contrastive_loss(zi, zt, 1.0)) == pytest.approx(want, rel=1e-6)


def _loops_sigmoid(zi, zt, s, b):
    n = len(zi)
    total = 0.0
    for i in range(n):
        for j in range(n):
            y = 1.0 if i == j else -1.0
            total += math.log1p(math.exp(-y * (s * float(zi[i] @ zt[j]) + b)))
    return total / n


def _loops_softmax(zi, zt, s):
    n = len(zi)
    lg = [[s * float(zi[i] @ zt[j]) for j in range(n)] for i in range(n)]
    row = sum(-lg[i][i] + math.log(sum(math.exp(v) for v in lg[i])) for i in range(n)) / n
    col = sum(-lg[j][j] + math.log(sum(math.exp(lg[i][j]) for i in range(n))) for j in range(n)) / n
    return 0.5 * (row + col)


def test_losses_match_a_loop_implementation():
    rng = np.random.default_rng(0)
    zi = text.l2_normalize(rng.normal(size=(5, 7)).astype(np.float32))
    zt = text.l2_normalize(rng.normal(size=(5, 7)).astype(np.float32))
    assert float(text.sigmoid_loss(zi, zt, 10.0, -10.0)) == pytest.approx(_loops_sigmoid(zi, zt, 10.0, -10.0), rel=1e-5)
    assert float(text.softmax_contrastive_loss(zi, zt, 10.0)) == pytest.approx(_loops_softmax(zi, zt, 10.0), rel=1e-5)
    with pytest.raises(HarnessError):
        text.contrastive_loss("hinge", zi, zt, 1.0)


# --------------------------------------------------------------------------------------- retrieval
def test_retrieval_recall_with_several_captions_per_image():
    # 3 images; texts 0,1 describe image 0, texts 2,3,4 image 1, text 5 image 2.
    owner = np.array([0, 0, 1, 1, 1, 2])
    sims = np.array([
        # t0    t1    t2    t3    t4    t5
        [0.1, 0.5, 0.9, 0.0, 0.0, 0.2],   # image 0: best t2 (wrong), then t1 (its own)
        [0.0, 0.0, 0.1, 0.2, 0.8, 0.0],   # image 1: best t4 (its own)
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],   # image 2: its own t5 is last
    ])
    r = retrieval_recall(sims, owner, ks=(1, 2, 5, 6))
    # image->text: image 0 hits at k=2, image 1 at k=1, image 2 only at k=6.
    np.testing.assert_array_equal(r["i2t_recall@1"], [0, 1, 0])
    np.testing.assert_array_equal(r["i2t_recall@2"], [1, 1, 0])
    np.testing.assert_array_equal(r["i2t_recall@5"], [1, 1, 0])
    np.testing.assert_array_equal(r["i2t_recall@6"], [1, 1, 1])
    # text->image, per column: t0 ranks images (2,0,1) -> own image 0 at rank 2; t1 (2,0,1) rank 2;
    # t2 (0,2,1) rank 3; t3 (2,1,0) rank 2; t4 (1,2,0) rank 1; t5 (2,0,1) rank 1.
    np.testing.assert_array_equal(r["t2i_recall@1"], [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(r["t2i_recall@2"], [1, 1, 0, 1, 1, 1])
    assert r["t2i_recall@5"].mean() == 1.0
    with pytest.raises(HarnessError):
        retrieval_recall(sims, owner[:5])


def test_retrieval_ties_go_to_the_lower_index():
    sims = np.zeros((2, 2))
    r = retrieval_recall(sims, np.array([0, 1]), ks=(1,))
    np.testing.assert_array_equal(r["i2t_recall@1"], [1, 0])
    np.testing.assert_array_equal(r["t2i_recall@1"], [1, 0])


# --------------------------------------------------------------------------------- zero-shot pieces
def test_canonicalize_as_big_vision():
    assert canonicalize_text("Great_White  Shark!") == "great white shark"
    assert canonicalize_text("a bad photo of a {}.", keep="{}") == "a bad photo of a {}"
    assert canonicalize_text("kite (bird of prey)", keep=",") == "kite bird of prey"
    assert canonicalize_text("Tench, Tinca tinca", keep=",") == "tench, tinca tinca"
    assert canonicalize_text("{ odd } {}", keep="{}") == "odd {}"


def test_assets_clip_names_and_templates():
    names = clip_imagenet_class_names()
    assert len(names) == 1000
    assert names[:3] == ("tench", "goldfish", "great white shark")
    assert names[21] == "kite (bird of prey)" and names[999] == "toilet paper"
    paper = prompt_templates("clip_paper")
    assert len(paper) == 81 and paper[0] == "a bad photo of a {}" and paper[-1] == "{}"
    assert all(t.count("{}") == 1 for t in paper)
    assert len(prompt_templates("clip_best")) == 8
    assert prompt_templates("class_name_only") == ["{}"]
    with pytest.raises(HarnessError):
        prompt_templates("nope")


def test_class_embeddings_mean_of_normalised_then_normalised():
    vecs = {"a x": [3.0, 4.0], "b x": [1.0, 0.0], "a y": [0.0, 2.0], "b y": [0.0, -1.0]}

    def embed(texts):
        return text.l2_normalize(np.array([vecs[t] for t in texts], np.float32))

    z = lz.class_embeddings(embed, ["x", "y"], ["a {}", "b {}"])
    # x: mean([0.6, 0.8], [1, 0]) = [0.8, 0.4] -> / sqrt(0.8) ; y: mean([0, 1], [0, -1]) = 0 -> 0 (eps).
    np.testing.assert_allclose(z[0], np.array([0.8, 0.4]) / math.sqrt(0.8), rtol=1e-6)
    np.testing.assert_allclose(z[1], [0.0, 0.0], atol=1e-6)


def test_zeroshot_hits_single_and_multi_label():
    zclass = np.eye(3, dtype=np.float32)
    zimg = np.array([[1, 0, 0], [0, 0.2, 0.9], [0, 1, 0]], np.float32)  # predictions 0, 2, 1
    np.testing.assert_array_equal(zeroshot_hits(zimg, zclass, [0, 1, 1]), [1, 0, 1])
    np.testing.assert_array_equal(zeroshot_hits(zimg, zclass, [[1, 0], [1], [2, 0]]), [1, 0, 0])


def test_tokenize_sticky_eos_and_pad_value():
    from harness.data.tokenizer import Tokenizer

    tok = Tokenizer(PROXY_TOKENIZER)
    a = tokenize(tok, ["a red circle", "a large red circle on a plain background " * 3], 8)
    assert a[0, -1] == tok.pad_id and (a[0] == tok.eos_id).sum() == 1
    assert a[1, -1] == tok.eos_id  # truncated: EOS kept at the end
    b = tokenize(tok, ["a red circle"], 8, pad_value=7)
    end = int(np.where(b[0] == tok.eos_id)[0][0])
    assert (b[0, end + 1:] == 7).all() and (b[0, :end + 1] == a[0, :end + 1]).all()


# ---------------------------------------------------------------------------- two-tower checkpoints
def test_hf_two_tower_fixture_text_parity():
    io = np.load(HF / "io.npz")
    tower = text.load_text_tower(str(HF / "two_tower"))
    assert tower.config["max_len"] == 8 and tower.config["vocab_size"] == 64 and tower.config["depth"] == 2
    assert tower.log_t == pytest.approx(math.log(10), rel=1e-6) and tower.b == pytest.approx(-10.0)
    z, out = tower.model.apply({"params": tower.params}, io["input_ids"])
    np.testing.assert_allclose(np.asarray(out["encoded"]), io["text_last_hidden_state"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(z), io["text_pooler_output"], atol=1e-5)
    np.testing.assert_allclose(tower.embed(io["input_ids"]), io["text_embeds"], atol=1e-5)
    # With the vision tower of the same folder: SiglipModel's logits_per_image.
    enc = load_encoder(str(HF / "two_tower"))
    zimg = text.l2_normalize(enc.features(io["images"], ["pre_logits"])["pre_logits"])
    np.testing.assert_allclose(zimg, io["image_embeds"], atol=1e-5)
    logits = zimg @ tower.embed(io["input_ids"]).T * tower.scale + tower.b
    np.testing.assert_allclose(logits, io["logits_per_image"], atol=1e-4)
    # A vision-only folder has no text tower.
    assert text.load_text_tower(str(HF / "vision")) is None


def _tiny_two_tower(tmp_path, enc, scan=False, seed=2):
    import jax

    model = text.TextTransformer(**TINY_TXT, scan=scan)
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), np.zeros((1, 12), np.int32))["params"]
    path = text.save_two_tower(tmp_path / "two.npz", enc.params, params, math.log(7.0), -3.0)
    return model, params, path


@pytest.fixture(scope="module")
def two_tower(tmp_path_factory):
    enc = load_encoder("random:1", **TINY_ENC)
    root = tmp_path_factory.mktemp("two_tower")
    return (enc, *_tiny_two_tower(root, enc))


def test_two_tower_npz_round_trip(two_tower, tmp_path):
    enc, model, params, path = two_tower
    keys = set(np.load(path).files)
    assert {"params/t", "params/b", "params/txt/Embed_0/embedding", "params/txt/pos_embedding",
            "params/txt/Encoder_0/encoderblock_1/MlpBlock_0/Dense_0/kernel", "params/txt/Encoder_0/encoder_norm/scale",
            "params/txt/head/kernel", "params/img/embedding/kernel", "params/img/MAPHead_0/probe"} <= keys
    tokens = np.random.default_rng(0).integers(0, 600, (5, 12)).astype(np.int32)
    want = np.asarray(text.l2_normalize(model.apply({"params": params}, tokens)[0]))
    tower = text.load_text_tower(f"{path}:img")
    assert tower.log_t == pytest.approx(math.log(7.0)) and tower.b == pytest.approx(-3.0)
    assert {k: tower.config[k] for k in TINY_TXT} == TINY_TXT and tower.config["max_len"] == 12
    np.testing.assert_allclose(tower.embed(tokens, batch_size=2), want, atol=1e-6)
    # The image tower of the same file (the runner loads it as "two.npz:img").
    img = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(load_encoder(f"{path}:img").features(img, ["pre_logits"])["pre_logits"],
                               enc.features(img, ["pre_logits"])["pre_logits"], atol=1e-6)
    # Either layer layout loads into a tower of either layout.
    np.testing.assert_allclose(text.load_text_tower(str(path), scan=True).embed(tokens), want, atol=1e-5)
    smodel, sparams, spath = _tiny_two_tower(tmp_path, enc, scan=True, seed=3)
    assert any("Encoder_0/encoderblock/" in k for k in np.load(spath).files)
    swant = np.asarray(text.l2_normalize(smodel.apply({"params": sparams}, tokens)[0]))
    assert np.abs(swant - want).max() > 1e-2  # another init: a mix-up of the two files would show
    np.testing.assert_allclose(text.load_text_tower(str(spath), scan=False).embed(tokens), swant, atol=1e-5)


def test_two_tower_tensorstore_folder(two_tower, tmp_path):
    """big_vision's tensorstore layout (one zarr array per leaf, "/" as "~") with the same arrays."""
    import tensorstore as ts

    _, model, params, path = two_tower
    folder = tmp_path / "checkpoint.bv-000000007"
    folder.mkdir()
    with np.load(path) as z:
        for k in z.files:
            v = z[k]
            spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder / k.replace("/", "~"))}}
            ts.open(spec, create=True, dtype=v.dtype.name, shape=v.shape).result().write(v).result()
    tokens = np.random.default_rng(4).integers(0, 600, (3, 12)).astype(np.int32)
    want = np.asarray(text.l2_normalize(model.apply({"params": params}, tokens)[0]))
    tower = text.load_text_tower(f"{folder}:img")
    assert tower.log_t == pytest.approx(math.log(7.0)) and tower.config["checkpoint"]["format"] == "tensorstore"
    np.testing.assert_allclose(tower.embed(tokens), want, atol=1e-6)


def test_image_only_checkpoint_has_no_text_tower(task_env):
    path = task_env["ckpt"]
    assert checkpoints.read_text_tower(path) is None
    assert text.load_text_tower(path) is None


def test_wrong_tokens_are_a_user_error(two_tower):
    tower = text.load_text_tower(str(two_tower[-1]))
    with pytest.raises(HarnessError, match="tokens"):
        tower.embed(np.zeros((2, 5), np.int32))
    with pytest.raises(HarnessError, match="tokenizer"):
        tower.embed(np.full((2, 12), 600, np.int32))


def test_read_field_variable_length_labels_in_split_order(task_env):
    """The multi-label (ReaL-style) path: a variable-length int field, batch-padded with -1, read in split
    order. proxy_scenes' per-object colours are such a field; the generator says what they must be."""
    from harness import data
    from harness.data.builders import proxy_scenes

    data.require_prepared("proxy_scenes/tiny", task_env["data_dir"])
    ids = read_field("proxy_scenes/tiny", "test", "id", 24, task_env["data_dir"], False)
    rows = read_field("proxy_scenes/tiny", "test", "objects/colour", 24, task_env["data_dir"], False)
    assert len(rows) == 24 and min(len(np.atleast_1d(r)) for r in rows) == 3  # padded to the batch's longest
    for i, row in zip(ids, rows):
        want = [proxy_scenes.COLOURS.index(o["colour"])
                for o in proxy_scenes.make_example(0, "test", int(i), with_image=False)["objects"]]
        assert [int(v) for v in np.atleast_1d(row) if v >= 0] == want


# ------------------------------------------------------------------------------ the task end to end
TINY_SETS = {"train_dataset": "proxy_scenes/tiny", "zeroshot_datasets": "proxy_scenes/tiny",
             "retrieval_datasets": "proxy_scenes/tiny", "train_steps": "12", "batch_size": "16",
             "text_width": "32", "text_depth": "1", "text_mlp_dim": "64", "text_num_heads": "4", "max_len": "24",
             "prompt_templates": "clip_best", "image_batch_size": "24", "ckpt_every": "0"}


def run(task_env, ckpt=None, **sets):
    return run_task("lit_zeroshot", ckpt or task_env["ckpt"], sets={**TINY_SETS, **sets}, data_dir=task_env["data_dir"],
                    out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)


@pytest.mark.heavy
def test_task_trains_then_reloads_its_two_tower_checkpoint(task_env):
    rec, _, reused = run(task_env)
    assert not reused
    m = {k: v["value"] for k, v in rec["metrics"].items()}
    ds = "proxy_scenes/tiny"
    expected = {f"lit_zeroshot/{ds}/top1", "lit_zeroshot/train/final_loss"} | {
        f"lit_zeroshot/{ds}/{d}_recall@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
    assert set(m) == expected
    assert all(0 <= m[k] <= 100 for k in expected if "loss" not in k)
    lit = rec["info"]["lit_training"]
    assert lit["steps"] == 12 and lit["num_images"] == 48 and lit["num_captions"] == 240
    roles = {d["role"]: d["num_examples"] for d in rec["datasets"]}
    assert roles["lit_train"] == 48 and roles["zeroshot_test"] == 24 and roles["retrieval_captions"] == 120
    assert len(rec["per_example"][f"lit_zeroshot/{ds}/top1"]) == 24
    assert len(rec["per_example"][f"lit_zeroshot/{ds}/t2i_recall@1"]) == 120
    # Each pass has big_vision's image pp (32 px: _square875 is resize(36)|central_crop(32)); the pp is in
    # the cache key, so zero-shot and retrieval on the test split are two entries.
    pps = {d["role"]: d["pp"] for d in rec["datasets"]}
    assert pps["zeroshot_test"] == "decode|resize(36)|central_crop(32)|value_range(-1,1)"
    assert pps["retrieval_test"] == pps["lit_train"] == "decode|resize(32)|value_range(-1,1)"
    assert sum(e["computed_images"] for e in rec["info"]["feature_extraction"]) == 48 + 24 + 24
    # The text pp it trained and evaluated with: big_vision's rule, padded with EOS (the proxy model's 1).
    assert rec["info"]["text_pp"] == {"family": "lit", "max_len": 24, "pad_id": 1, "eos": "sticky",
                                      "lower": "ascii", "canonicalize": False}
    assert rec["task"]["version"] == "2"

    # The written two-tower checkpoint evaluates directly: no training, the same numbers.
    saved = rec["artifacts"]["lit_checkpoint"]
    rec2, _, _ = run(task_env, ckpt=f"{saved}:img")
    m2 = {k: v["value"] for k, v in rec2["metrics"].items()}
    assert "lit_training" not in rec2["info"] and rec2["info"]["text_tower"]["source"] == "checkpoint"
    assert "lit_zeroshot/train/final_loss" not in m2
    assert rec2["info"]["text_pp"] == {**rec["info"]["text_pp"], "family": "big_vision"}  # the same rule
    for k in expected - {"lit_zeroshot/train/final_loss"}:
        assert m2[k] == pytest.approx(m[k], abs=1e-6), k


def test_task_matches_an_independent_zero_shot_computation(task_env):
    """Top-1 recomputed here from the saved checkpoint with plain numpy, by a separate route."""
    from harness import data
    from harness.data.tokenizer import Tokenizer

    rec, _, _ = run(task_env, loss="softmax", train_steps="6")
    assert rec["info"]["lit_training"]["final_b"] is None
    path = rec["artifacts"]["lit_checkpoint"]
    enc = load_encoder(f"{path}:img")
    tower = text.load_text_tower(path)
    tok = Tokenizer(PROXY_TOKENIZER)
    names = [n.lower() for n in data.class_names("proxy_scenes/tiny", task_env["data_dir"])]
    templates = ["itap of a {}", "a bad photo of the {}", "a origami {}", "a photo of the large {}",
                 "a {} in a video game", "art of the {}", "a photo of the small {}", "{}"]
    zc = []
    for n in names:
        # big_vision's SigLIP text pp: sticky EOS, padded with EOS.
        z = tower.embed(tok.encode([t.format(n) for t in templates], 24, eos="sticky", pad_id=tok.eos_id))
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        m = z.mean(0)
        zc.append(m / np.linalg.norm(m))
    images, labels = [], []
    pp = "decode|resize(36)|central_crop(32)|value_range(-1,1)"  # _square875 at 32 px
    for b in data.iterate("proxy_scenes/tiny", "test", batch_size=24, pp=pp, data_dir=task_env["data_dir"]):
        images.append(b["image"][b["_mask"]])
        labels.append(b["label"][b["_mask"]])
    zi = enc.features(np.concatenate(images), ["pre_logits"])["pre_logits"]
    acc = 100 * np.mean(np.argmax(zi @ np.array(zc).T, axis=1) == np.concatenate(labels))
    assert rec["metrics"]["lit_zeroshot/proxy_scenes/tiny/top1"]["value"] == pytest.approx(acc, abs=1e-6)


def test_task_user_errors(task_env):
    with pytest.raises(HarnessError, match="no text tower"):
        run(task_env, train_steps="0")
    with pytest.raises(HarnessError, match="no text tower"):
        run(task_env, text_tower="checkpoint")
    with pytest.raises(HarnessError, match="tokenizer"):
        run(task_env, zeroshot_datasets="cifar100")
    with pytest.raises(HarnessError, match="batch_size"):
        run(task_env, batch_size="64")
    with pytest.raises(HarnessError, match="loss"):
        run(task_env, loss="hinge")


def test_hf_two_tower_runs_the_task_without_training(task_env):
    """A HF SigLIP folder evaluates directly with its own tokenizer files under its processor's text pp; a
    tokenizer larger than its vocabulary is refused."""
    folder = HF / "two_tower_spm"
    with pytest.raises(HarnessError, match="pieces"):
        run(task_env, ckpt=str(folder), tokenizer=str(PROXY_TOKENIZER))
    rec, _, _ = run(task_env, ckpt=str(folder), prompt_templates="class_name_only")
    assert rec["info"]["text_tower"]["source"] == "checkpoint" and "lit_training" not in rec["info"]
    assert rec["info"]["tokenizer"] == str(folder / "spiece.model")
    assert rec["info"]["text_pp"] == {"family": "hf_siglip", "max_len": 16, "pad_id": 1, "eos": "sticky",
                                      "lower": "unicode", "canonicalize": True}
    assert rec["info"]["representation"] == "pre_logits"  # HF's vision pooler output, the MAP head's
    ds = "proxy_scenes/tiny"
    top1 = rec["metrics"][f"lit_zeroshot/{ds}/top1"]["value"]
    assert 0 <= top1 <= 100 and len(rec["per_example"][f"lit_zeroshot/{ds}/top1"]) == 24
    assert len(rec["per_example"][f"lit_zeroshot/{ds}/t2i_recall@1"]) == 120  # every caption (5 per image)
    # --set overrides: big_vision's rule on the same folder, or another pad id; both recorded.
    rec2, _, _ = run(task_env, ckpt=str(folder), prompt_templates="class_name_only", retrieval_datasets="",
                     text_pp="big_vision", pad_value="0")
    assert rec2["info"]["text_pp"]["family"] == "big_vision" and rec2["info"]["text_pp"]["pad_id"] == 0


@pytest.mark.skipif(not PROXY_CKPT.exists(), reason="proxy checkpoint not built yet")
@pytest.mark.slow
def test_proxy_preset_learns(tmp_path):
    """The CI proxy: LiT on proxy_scenes' train captions, zero-shot on its 24 classes, far above chance
    (1/24 = 4.2%; retrieval chance: i2t R@10 ~2%, t2i R@10 = 2%)."""
    rec, _, _ = run_task("lit_zeroshot", str(PROXY_CKPT), preset="proxy", out_dir=tmp_path / "runs",
                         cache_dir=tmp_path / "cache", progress=False)
    m = {k: v["value"] for k, v in rec["metrics"].items()}
    print(json.dumps(m, indent=1))
    assert m["lit_zeroshot/proxy_scenes/top1"] > 3 * 100 / 24
    assert m["lit_zeroshot/proxy_scenes/i2t_recall@10"] > 20.0 and m["lit_zeroshot/proxy_scenes/t2i_recall@10"] > 20.0
    assert rec["info"]["lit_training"]["final_loss"] < 0.5 * rec["info"]["lit_training"]["first_loss"]


def test_bare_two_tower_npz_loads_its_image_tower(two_tower):
    enc, _, _, path = two_tower
    img = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(load_encoder(str(path)).features(img, ["pre_logits"])["pre_logits"],
                               enc.features(img, ["pre_logits"])["pre_logits"], atol=1e-6)
