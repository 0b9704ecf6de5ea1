"""Identity of what was evaluated is the content actually loaded: one checkpoint handle per suite (hashed once,
each array read once), a tensorstore pointer resolved to its step, a checkpoint replaced or rewritten during a
run, a foreign file at a run's record path, and a feature cache keyed on content rather than paths."""

import builtins
import hashlib
import math
import os
import shutil

import jax
import numpy as np
import pytest

from harness.checkpoints import handle as handle_module
from harness.checkpoints import npz as npz_module
from harness.errors import HarnessError
from harness.models import text
from harness.models.encoder import load_encoder
from harness.run import runner, suites
from harness.run.runner import run_task
from tests.tiny import TINY_DS, TINY_ENC, TINY_RUNS, make_task_env

FEWSHOT = TINY_RUNS["fewshot"][1]
LIT_OWN_TOWER = {"zeroshot_datasets": TINY_DS, "retrieval_datasets": TINY_DS, "train_steps": "0",
                 "text_tower": "checkpoint", "prompt_templates": "class_name_only", "image_batch_size": "24"}


def _metrics(rec):
    return {k: v["value"] for k, v in rec["metrics"].items()}


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return make_task_env(tmp_path_factory.mktemp("identity"))


@pytest.fixture(scope="module")
def two_tower(env):
    """A big_vision two-tower .npz: the TINY_ENC image tower and a tiny text tower embedding into its width."""
    enc = load_encoder(env["ckpt"])
    model = text.TextTransformer(num_classes=32, width=32, depth=1, mlp_dim=64, num_heads=4, vocab_size=1000)
    params = jax.jit(model.init)(jax.random.PRNGKey(3), np.zeros((1, 16), np.int32))["params"]
    return text.save_two_tower(env["out"].parent / "two.npz", enc.params, params, math.log(10.0), -10.0)


def test_a_suite_hashes_a_two_tower_checkpoint_once_and_reads_each_array_once(env, two_tower, monkeypatch, tmp_path):
    digests, members, opens = [], [], []
    real_digest, real_member, real_open = handle_module._digest, npz_module._member, builtins.open
    monkeypatch.setattr(handle_module, "_digest", lambda *a, **k: digests.append(a[0]) or real_digest(*a, **k))
    monkeypatch.setattr(npz_module, "_member", lambda z, name, path: members.append(name) or real_member(z, name, path))
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opens.append(str(f)) if str(f) == str(two_tower) else 0)
                        or real_open(f, *a, **k))
    handle_module._DIGESTS.clear()
    entries = suites.plan((suites.Entry("fewshot", None, tuple(FEWSHOT.items())),
                           suites.Entry("lit_zeroshot", None, tuple(LIT_OWN_TOWER.items()))), {})
    outcomes = list(suites.run_entries(entries, str(two_tower), data_dir=env["data_dir"], out_dir=tmp_path / "runs",
                                       cache_dir=tmp_path / "cache", progress=False))
    assert [o.error for o in outcomes] == [None, None] and not any(o.reused for o in outcomes)
    assert len(digests) == 1 and opens == [str(two_tower)]  # hashed once, opened once, for both entries
    with np.load(two_tower) as z:
        assert sorted(members) == sorted(z.files)  # every array (both towers, t, b) read exactly once
    fewshot, lit = (o.record for o in outcomes)
    assert fewshot["checkpoint"]["sha256"] == lit["checkpoint"]["sha256"] == _sha(two_tower)
    assert lit["checkpoint"]["subtree"] == "img" and lit["checkpoint"]["format"] == "npz"
    assert lit["info"]["text_tower"]["source"] == "checkpoint"


def _write_tensorstore(folder, params: dict):
    import tensorstore as ts

    folder.mkdir()
    for k, v in params.items():
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(folder / f"params~{k.replace('/', '~')}")}}
        ts.open(spec, create=True, dtype=v.dtype.name, shape=v.shape).result().write(v).result()


def test_tensorstore_steps_behind_one_pointer_are_two_checkpoints(env, tmp_path):
    """big_vision's `checkpoint.bv-LAST` names the newest step: step 1 and step 2 of one run must not share a
    record or a cache entry (both were once hashed as the empty input)."""
    base = tmp_path / "checkpoint.bv"
    for step, seed in ((1, 1), (2, 2)):
        _write_tensorstore(tmp_path / f"checkpoint.bv-{step:09d}", load_encoder(f"random:{seed}", **TINY_ENC).params_numpy())
    kw = dict(sets=FEWSHOT, data_dir=env["data_dir"], out_dir=tmp_path / "runs", cache_dir=tmp_path / "cache",
              progress=False)
    recs = {}
    for step in (1, 2):
        (tmp_path / "checkpoint.bv-LAST").write_text(f"{step:09d}")
        rec, path, reused = run_task("fewshot", str(base), **kw)
        assert not reused and rec["checkpoint"]["step"] == step
        recs[step] = (rec, path)
    assert recs[1][1] != recs[2][1]
    assert recs[1][0]["checkpoint"]["sha256"] != recs[2][0]["checkpoint"]["sha256"] != hashlib.sha256().hexdigest()
    assert _metrics(recs[1][0]) != _metrics(recs[2][0])
    # Step 2 through the pointer is step 2 given directly (same digest, so its record is reused).
    direct, _, reused = run_task("fewshot", str(tmp_path / "checkpoint.bv-000000002"), **kw)
    assert reused and direct["checkpoint"]["sha256"] == recs[2][0]["checkpoint"]["sha256"]


@pytest.mark.parametrize("pointer, message", [("000000009", "does not exist"), ("../../etc", "not a big_vision step"),
                                               ("", "not a big_vision step")])
def test_a_damaged_tensorstore_pointer_is_one_line(tmp_path, pointer, message):
    (tmp_path / "checkpoint.bv-LAST").write_text(pointer)
    with pytest.raises(HarnessError, match=message):
        load_encoder(str(tmp_path / "checkpoint.bv"))


def _replace_during_load(monkeypatch, action):
    real = runner.Encoders.get

    def get(self, ckpt, config):
        action()
        return real(self, ckpt, config)

    monkeypatch.setattr(runner.Encoders, "get", get)


def test_a_checkpoint_replaced_after_hashing_is_evaluated_as_the_hashed_content(env, tmp_path, monkeypatch):
    """The .npz is hashed and read through one open file: replacing the path in between changes nothing that
    was evaluated, and the record names the content that was."""
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    shutil.copy(env["ckpt"], a)
    load_encoder("random:7", **TINY_ENC).save(str(b))
    kw = dict(sets=FEWSHOT, data_dir=env["data_dir"], cache_dir=tmp_path / "cache", progress=False)
    want, _, _ = run_task("fewshot", str(a), out_dir=tmp_path / "want", **kw)
    target = tmp_path / "ckpt.npz"
    shutil.copy(a, target)
    _replace_during_load(monkeypatch, lambda: os.replace(b, target))
    rec, _, _ = run_task("fewshot", str(target), out_dir=tmp_path / "runs", **kw)
    assert rec["checkpoint"]["sha256"] == _sha(a) and _metrics(rec) == _metrics(want)


def test_a_checkpoint_rewritten_during_a_run_files_no_record(env, tmp_path, monkeypatch):
    target = tmp_path / "ckpt.npz"
    shutil.copy(env["ckpt"], target)
    other = tmp_path / "other.npz"
    load_encoder("random:7", **TINY_ENC).save(str(other))

    def rewrite_in_place():
        data = other.read_bytes()
        with open(target, "r+b") as f:  # the same inode, new bytes
            f.write(data)
            f.truncate()
        os.utime(target, ns=(1, 1))

    _replace_during_load(monkeypatch, rewrite_in_place)
    out = tmp_path / "runs"
    with pytest.raises(HarnessError, match="changed while it was evaluated"):
        run_task("fewshot", str(target), sets=FEWSHOT, data_dir=env["data_dir"], out_dir=out,
                 cache_dir=tmp_path / "cache", progress=False)
    assert not list(out.glob("*.json"))


def test_a_folder_checkpoint_changed_during_a_run_files_no_record(env, tmp_path, monkeypatch):
    folder = tmp_path / "checkpoint.bv-000000001"
    _write_tensorstore(folder, load_encoder(env["ckpt"]).params_numpy())
    victim = next(p for p in sorted(folder.rglob("*")) if p.is_file())
    _replace_during_load(monkeypatch, lambda: victim.write_bytes(victim.read_bytes() + b" "))
    out = tmp_path / "runs"
    with pytest.raises(HarnessError, match="changed while it was evaluated"):
        run_task("fewshot", str(folder), sets=FEWSHOT, data_dir=env["data_dir"], out_dir=out,
                 cache_dir=tmp_path / "cache", progress=False)
    assert not list(out.glob("*.json"))


@pytest.mark.parametrize("content", ['{"hello": 1}', "[]", '{"schema_version": 1, "metrics": {}}', "{trunc",
                                     "WRONG_TASK"])
def test_anything_but_this_runs_record_at_its_path_is_recomputed(env, tmp_path, content):
    kw = dict(sets=FEWSHOT, data_dir=env["data_dir"], out_dir=tmp_path / "runs", cache_dir=tmp_path / "cache",
              progress=False)
    first, path, _ = run_task("fewshot", env["ckpt"], **kw)
    if content == "WRONG_TASK":  # a complete record, of another run
        import json

        other = json.loads(path.read_text())
        other["task"]["config_hash"] = "0" * 16
        content = json.dumps(other)
    path.write_text(content)
    rec, path2, reused = run_task("fewshot", env["ckpt"], **kw)
    assert path2 == path and not reused and _metrics(rec) == _metrics(first)
    again, _, reused = run_task("fewshot", env["ckpt"], **kw)
    assert reused and _metrics(again) == _metrics(first)


def test_the_feature_cache_is_keyed_on_content_not_on_the_path(env, tmp_path):
    kw = dict(sets=FEWSHOT, data_dir=env["data_dir"], cache_dir=tmp_path / "cache", progress=False)
    first, _, _ = run_task("fewshot", env["ckpt"], out_dir=tmp_path / "a", **kw)
    assert sum(e["computed_images"] for e in first["info"]["feature_extraction"]) > 0
    moved = tmp_path / "elsewhere" / "renamed.npz"
    moved.parent.mkdir()
    shutil.copy(env["ckpt"], moved)
    second, _, reused = run_task("fewshot", str(moved), out_dir=tmp_path / "b", **kw)
    assert not reused and sum(e["computed_images"] for e in second["info"]["feature_extraction"]) == 0
    assert _metrics(second) == _metrics(first)
