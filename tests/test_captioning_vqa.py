"""`coco_captioning` and `vqa` end to end on proxy_scenes/tiny with a tiny random encoder and a few
decoder steps: real TFDS pipeline, feature cache, decoder, official metrics, result record and the
predictions files in the official formats. Scores are recomputed here from the predictions files and
references read straight from TFDS."""

import json
import math

import numpy as np
import pytest

from harness import data
from harness.errors import HarnessError
from harness.eval import metrics
from harness.run.runner import run_task
from tests.tiny import make_task_env

TINY_DEC = {"decoder_width": "32", "decoder_mlp_dim": "64", "decoder_heads": "2", "total_steps": "12",
            "batch_size": "8", "eval_batch_size": "32", "tokenizer": "proxy", "optimizer": "adam", "lr": "3e-3"}
DS = "proxy_scenes/tiny"


@pytest.fixture(scope="module")
def task_env(tmp_path_factory):
    # conftest's task_env with a one-block encoder: the decoder tests train on top of it, fast.
    return make_task_env(tmp_path_factory.mktemp("decoding"), depth=1)


def run(task_env, task, **sets):
    extra = {"target_len": "24"} if task == "coco_captioning" else {"prefix_len": "12", "target_len": "4"}
    base = {**TINY_DEC, **extra, ("dataset" if task == "coco_captioning" else "datasets"): DS}
    return run_task(task, task_env["ckpt"], preset="proxy", sets={**base, **sets}, data_dir=task_env["data_dir"],
                    out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)


def _split_text(task_env, split):
    out = {}
    for b in data.iterate(DS, split, batch_size=16, pp="keep('image_id', 'captions', 'questions/question_id', "
                          "'questions/answers', 'questions/answer_type')", data_dir=task_env["data_dir"]):
        for i in np.flatnonzero(b["_mask"]):
            out[int(b["image_id"][i])] = {k: b[k][i] for k in b}
    return out


def test_captioning_record_predictions_and_scores(task_env):
    rec, _, reused = run(task_env, "coco_captioning")
    assert not reused
    m = rec["metrics"]
    base = "coco_captioning/proxy_scenes/tiny"
    for name, unit in (("cider", "raw"), ("bleu4", "raw"), ("rouge_l", "raw"), ("log_perplexity", "nats")):
        assert m[f"{base}/{name}"]["unit"] == unit and math.isfinite(m[f"{base}/{name}"]["value"])
    assert m[f"{base}/log_perplexity"]["higher_is_better"] is False
    assert m[f"{base}/log_perplexity"]["value"] > 0
    assert rec["info"]["cider_computed_on"]["split"] == "test"
    assert rec["info"]["cider_computed_on"]["num_images"] == 24
    roles = {d["role"]: d for d in rec["datasets"]}
    assert roles["train"]["num_examples"] == 48 and roles["eval"]["split"] == "test"
    assert rec["info"]["decoder"]["steps"] == 12

    preds = json.loads(open(rec["artifacts"]["predictions"]).read())
    assert isinstance(preds, list) and len(preds) == 24
    assert all(set(p) == {"image_id", "caption"} and isinstance(p["image_id"], int)
               and isinstance(p["caption"], str) for p in preds)
    refs_by_id = {i: [c.decode() for c in v["captions"] if c] for i, v in _split_text(task_env, "test").items()}
    assert sorted(p["image_id"] for p in preds) == sorted(refs_by_id)
    # CIDEr recomputed from the exported file and TFDS references equals the recorded one.
    cider = metrics.cider(refs_by_id, {p["image_id"]: p["caption"] for p in preds})
    assert m[f"{base}/cider"]["value"] == pytest.approx(cider, abs=1e-9)
    assert len(rec["per_example"][f"{base}/cider"]) == 24
    assert np.mean(rec["per_example"][f"{base}/cider"]) == pytest.approx(cider, abs=1e-9)


def test_vqa_record_predictions_and_official_accuracy(task_env):
    rec, _, _ = run(task_env, "vqa")
    m = rec["metrics"]
    base = "vqa/proxy_scenes/tiny"
    for name in ("accuracy", "accuracy/yes_no", "accuracy/number", "accuracy/other"):
        assert m[f"{base}/{name}"]["unit"] == "%" and 0.0 <= m[f"{base}/{name}"]["value"] <= 100.0
    assert math.isfinite(m[f"{base}/log_perplexity"]["value"]) and m[f"{base}/log_perplexity"]["unit"] == "nats"

    path = rec["artifacts"][f"predictions/{DS}"]
    preds = json.loads(open(path).read())
    assert len(preds) == 24 * 3  # three questions per image
    assert all(set(p) == {"question_id", "answer"} and isinstance(p["question_id"], int)
               and isinstance(p["answer"], str) for p in preds)
    questions = {}
    for v in _split_text(task_env, "test").values():
        for qid, answers, kind in zip(v["questions/question_id"], v["questions/answers"],
                                      v["questions/answer_type"]):
            questions[int(qid)] = {"answers": [a.decode() for a in answers], "answer_type": kind.decode()}
    answers = {p["question_id"]: p["answer"] for p in preds}
    assert sorted(answers) == sorted(questions)
    # An independent scoring: hand-rolled official formula, not harness.eval.metrics.
    per_type = {}
    for qid, q in questions.items():
        gts = [a.strip() for a in q["answers"]]
        pred = answers[qid].strip()
        if len(set(gts)) > 1:
            gts = [metrics.normalize_vqa_answer(a) for a in gts]
            pred = metrics.normalize_vqa_answer(pred)
        acc = np.mean([min(1.0, sum(g == pred for k, g in enumerate(gts) if k != i) / 3) for i in range(len(gts))])
        per_type.setdefault(q["answer_type"], []).append(acc)
    overall = 100 * np.mean([a for v in per_type.values() for a in v])
    assert m[f"{base}/accuracy"]["value"] == pytest.approx(overall, abs=1e-9)
    assert m[f"{base}/accuracy/yes_no"]["value"] == pytest.approx(100 * np.mean(per_type["yes/no"]), abs=1e-9)


def test_vqa_skips_unprepared_datasets_in_one_line(task_env, caplog):
    rec, _, _ = run(task_env, "vqa", datasets=f"{DS},gqa")
    assert rec["info"]["skipped_datasets"] == ["gqa"]
    assert "vqa/proxy_scenes/tiny/accuracy" in rec["metrics"]
    with pytest.raises(HarnessError, match="not prepared"):
        run(task_env, "vqa", datasets="ocrvqa")


@pytest.mark.heavy
def test_beam_decoding_and_finetuned_encoder_run(task_env):
    rec, _, _ = run(task_env, "coco_captioning", decode="beam", beam_size="2", total_steps="4",
                    feature_dtype="bfloat16")
    assert math.isfinite(rec["metrics"]["coco_captioning/proxy_scenes/tiny/cider"]["value"])
    assert rec["info"]["feature_extraction"][0]["computed_images"] > 0  # a new (16-bit) cache entry
    rec, _, _ = run(task_env, "vqa", finetune_encoder="true", total_steps="4")
    assert rec["task"]["config"]["finetune_encoder"] is True
    assert math.isfinite(rec["metrics"]["vqa/proxy_scenes/tiny/log_perplexity"]["value"])
    # The fine-tuned run reads images, not the feature cache.
    assert rec["info"]["feature_extraction"] == []


@pytest.mark.heavy
def test_a_tok_encoder_is_decoded_over_every_token_its_class_token_included(tmp_path_factory):
    """big_vision's decoders read the ViT's `encoded`, which keeps a `tok` model's class token
    (models/proj/cappa/cappa.py `encode`)."""
    from harness.eval.features import extract
    from harness.models.encoder import load_encoder
    from harness.train.decoder import _encoded_dim

    env = make_task_env(tmp_path_factory.mktemp("tok"), depth=1, pool_type="tok")
    enc = load_encoder(env["ckpt"])
    assert _encoded_dim(enc) == (1 + 16, 32)
    feats = extract(enc, DS, "test", pp="decode|resize(32)|value_range(-1,1)", cache_dir=env["cache_dir"],
                    data_dir=env["data_dir"], representations=("encoded",), keys=(), num_examples=4,
                    progress=False)
    assert feats["encoded"].shape == (4, 17, 32)
    rec, _, _ = run(env, "coco_captioning", total_steps="2")
    assert math.isfinite(rec["metrics"]["coco_captioning/proxy_scenes/tiny/cider"]["value"])


def test_user_errors_are_one_line(task_env):
    with pytest.raises(HarnessError, match="decode="):
        run(task_env, "coco_captioning", decode="sample")
    with pytest.raises(HarnessError, match="no feature 'nope'"):
        run(task_env, "coco_captioning", text_key="nope")
