"""The `fewshot` task end to end: real TFDS pipeline, encoder, feature cache, probe, result record."""

import json

import numpy as np
import pytest

from harness.eval import fewshot
from harness.models.encoder import load_encoder
from harness.run.runner import run_task


def run(task_env, **sets):
    base = {"datasets": "proxy_scenes/tiny", "shots": "1,2", "seeds": "0,1", "batch_size": "16"}
    return run_task("fewshot", task_env["ckpt"], sets={**base, **sets}, data_dir=task_env["data_dir"],
                    out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)


def test_record_metrics_and_cache_reuse(task_env, monkeypatch):
    rec, path, reused = run(task_env)
    assert not reused
    m = rec["metrics"]
    for k in (1, 2):
        seeds = [m[f"fewshot/proxy_scenes/tiny/{k}shot/seed-{s}"]["value"] for s in (0, 1)]
        assert m[f"fewshot/proxy_scenes/tiny/{k}shot"]["value"] == pytest.approx(np.mean(seeds))
        assert m[f"fewshot/proxy_scenes/tiny/{k}shot/std"]["value"] == pytest.approx(np.std(seeds))
    roles = {d["role"]: d for d in rec["datasets"]}
    assert roles["fewshot_train"]["num_examples"] == 48 and roles["fewshot_test"]["num_examples"] == 24
    assert roles["fewshot_test"]["pp"] == "decode|resize(37)|central_crop(32)|value_range(-1,1)"
    extracted = rec["info"]["feature_extraction"]
    assert sum(e["computed_images"] for e in extracted) == 72

    # Another probe setting on the same data: features come from the cache, no encoder pass at all.
    from harness.models.encoder import Encoder

    def no_encoder(*a, **k):
        raise AssertionError("the encoder ran although the features are cached")

    monkeypatch.setattr(Encoder, "features", no_encoder)
    rec2, _, reused2 = run(task_env, shots="1", l2_reg="10.0")
    assert not reused2
    assert sum(e["computed_images"] for e in rec2["info"]["feature_extraction"]) == 0


def test_matches_probe_on_independently_extracted_features(task_env):
    """The task's numbers equal harness.eval.fewshot on features we extract here by a separate route."""
    from harness import data

    rec, _, _ = run(task_env)
    enc = load_encoder(task_env["ckpt"])
    feats = {}
    for split in ("train", "test"):
        xs, ys = [], []
        for b in data.iterate("proxy_scenes/tiny", split, batch_size=7, data_dir=task_env["data_dir"],
                              pp="decode|resize(37)|central_crop(32)|value_range(-1,1)"):
            m = b["_mask"]
            xs.append(enc.features(b["image"], ["pre_logits"])["pre_logits"][m])
            ys.append(b["label"][m])
        feats[split] = (np.concatenate(xs), np.concatenate(ys))
    for k in (1, 2):
        for s in (0, 1):
            acc = fewshot.evaluate(*feats["train"], *feats["test"], shots=k, seed=s, num_classes=24)
            got = rec["metrics"][f"fewshot/proxy_scenes/tiny/{k}shot/seed-{s}"]["value"]
            assert got == pytest.approx(100 * acc, abs=1e-6)


def test_rerun_reuses_record(task_env):
    _, path, _ = run(task_env)
    rec, path2, reused = run(task_env)
    assert reused and path2 == path
    assert json.loads(path.read_text())["task"]["name"] == "fewshot"
