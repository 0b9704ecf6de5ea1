"""Faults (issue 15): a run killed with SIGKILL during the feature extraction, during a fine-tune and during
the decoder's training, or stopped with Ctrl-C, loses only the work in flight: the same command run again
resumes (committed feature chunks, the last training checkpoint) and writes the record an uninterrupted run
writes. A feature chunk damaged on disk, in a partial build or in a finished entry, is rebuilt.

The killed runs are real `harness run` processes; a small wrapper around the CLI (CHILD below) holds them
still at a chosen point (a batch of the extraction, a training step) and says so in a marker file, so the
kill lands exactly there. The reruns and the uninterrupted references run in-process. The cache's
building blocks are tested on their own in tests/test_cache.py, the simulated kill of a fine-tune in
tests/test_imagenet_finetune.py and the SIGKILL of a suite between records in tests/test_suites.py. A
training state damaged on disk after a kill (its pointer, its meta.json) is one line naming the file.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from tests.tiny import TINIEST, TINY_DS

# Real processes killed and resumed: `make test-heavy` (CI runs it), not `make test`.
pytestmark = pytest.mark.heavy

CHUNK = 200  # feature chunk size of these runs: 1000 pool images make 5 chunks
CHILD = '''
import os, sys, time
from pathlib import Path

mode, marker, at = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])


def hold():
    marker.write_text(str(os.getpid()))
    time.sleep(600)  # until the test kills or interrupts us


from harness.eval import cache
from harness.train import loop as train
from harness.models.encoder import Encoder

real_build = cache.FeatureCache.get_or_build
cache.FeatureCache.get_or_build = lambda self, key, n, produce, **kw: real_build(
    self, key, n, produce, **{**kw, "chunk_size": CHUNK})
if mode == "extract":  # hold before the at-th encoder batch (1-based) is dispatched
    real_dispatch, calls = Encoder.dispatch, [0]

    def dispatch(self, batch, outputs=None):
        calls[0] += 1
        if calls[0] == at:
            hold()
        return real_dispatch(self, batch, outputs)

    Encoder.dispatch = dispatch
elif mode == "commit":  # hold the cache's writer thread before it writes chunk `at` (0-based)
    real_write = cache._write_chunk

    def write_chunk(partial, index, stored):
        if index == at:
            hold()
        return real_write(partial, index, stored)

    cache._write_chunk = write_chunk
else:  # "fit": hold when the training loop asks for the batch of step `at`
    real_fit = train.fit

    def fit(**kw):
        inner = kw["batches"]

        def batches(start):
            for step, batch in enumerate(inner(start), start):
                if step == at:
                    hold()
                yield batch

        return real_fit(**{**kw, "batches": batches})

    train.fit = fit
from harness.cli import main

main(sys.argv[4:], prog_name="harness")
'''.replace("CHUNK", str(CHUNK))

ENC = dict(TINIEST, pool_type="map")
FEWSHOT = ["--task", "fewshot", "--set", "datasets=proxy_digits", "--set", "shots=1,5", "--set", "seeds=0",
           "--set", "batch_size=50"]
FINETUNE = ["--task", "imagenet_finetune", *(a for s in (
    f"dataset={TINY_DS}", "train_split=train", "minival_split=val", "test_split=test", "real_dataset=",
    "v2_dataset=", "batch_size=8", "eval_batch_size=32", "lr=0.01", "warmup_steps=2", "train_steps=8",
    "ckpt_every=3", "layer_decay=1.0", "mixup=0.0") for a in ("--set", s))]
# The decoder's training (harness.train.decoder, shared by vqa and coco_captioning) as VQA runs it.
VQA = ["--task", "vqa", "--preset", "proxy", *(a for s in (
    f"datasets={TINY_DS}", "decoder_width=32", "decoder_mlp_dim=64", "decoder_heads=2", "total_steps=8",
    "ckpt_every=3", "batch_size=8", "eval_batch_size=32", "prefix_len=12", "target_len=4", "tokenizer=proxy",
    "optimizer=adam", "lr=3e-3") for a in ("--set", s))]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from harness import data
    from harness.models.encoder import load_encoder

    root = tmp_path_factory.mktemp("faults")
    ckpt16 = load_encoder("random:0", res=16, **ENC).save(str(root / "tiny16.npz"))
    ckpt32 = load_encoder("random:1", res=32, **ENC).save(str(root / "tiny32.npz"))
    for name in ("proxy_digits", TINY_DS):
        data.prepare(name, root / "tfds")
    (root / "child.py").write_text(CHILD)
    return {"root": root, "ckpt16": ckpt16, "ckpt32": ckpt32, "data": str(root / "tfds"), "refs": {}}


def _args(env, task_args, ckpt, out, cache):
    return ["run", *task_args, "--ckpt", ckpt, "--data-dir", env["data"], "--out", str(out), "--cache-dir",
            str(cache)]


def _small_chunks(monkeypatch):
    """In-process runs commit features in the children's chunk size, so a rerun resumes their partials."""
    from harness.eval import cache

    real = cache.FeatureCache.get_or_build
    monkeypatch.setattr(cache.FeatureCache, "get_or_build",
                        lambda self, key, n, produce, **kw: real(self, key, n, produce, **{**kw, "chunk_size": CHUNK}))


def _run_here(args) -> dict:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    (record,) = [p for p in Path(args[args.index("--out") + 1]).glob("*.json")]
    return json.loads(record.read_text())


def _reference(env, name, task_args, ckpt, monkeypatch) -> dict:
    """The record of an uninterrupted run (fresh cache and results folder), computed once per task."""
    if name not in env["refs"]:
        _small_chunks(monkeypatch)
        root = env["root"] / f"ref_{name}"
        env["refs"][name] = _run_here(_args(env, task_args, ckpt, root / "runs", root / "cache"))
    return env["refs"][name]


def _child(env, mode: str, at: int, args, tmp_path) -> tuple[subprocess.Popen, Path]:
    marker = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, str(env["root"] / "child.py"), mode, str(marker), str(at), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the fault ({proc.returncode}): {proc.stderr.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the run never reached the fault")
        time.sleep(0.05)
    return proc, marker


def _kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def _same_result(a: dict, b: dict) -> None:
    assert a["metrics"] == b["metrics"]
    assert a["per_example"] == b["per_example"]
    assert a["task"]["config_hash"] == b["task"]["config_hash"]


def _no_temporaries(*roots: Path) -> None:
    for root in roots:
        left = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".trash-")]
        assert not left, left


def _computed(record: dict) -> dict[str, int]:
    return {e["split"]: e["computed_images"] for e in record["info"]["feature_extraction"]}


# ---------------------------------------------------------------------------------------------- extraction
def test_sigkill_during_extraction_then_a_damaged_chunk_then_a_damaged_entry(env, tmp_path, monkeypatch):
    out, cache = tmp_path / "runs", tmp_path / "cache"
    args = _args(env, FEWSHOT, env["ckpt16"], out, cache)
    proc, _ = _child(env, "commit", 3, args, tmp_path)  # chunks 0-2 committed, the writer held before chunk 3
    code, _ = _kill(proc)
    assert code == -signal.SIGKILL
    (partial,) = (cache / "features").glob("*.partial")
    chunks = sorted(partial.glob("chunk_*.npz"))
    assert [c.name for c in chunks] == [f"chunk_{i:06d}.npz" for i in range(3)]
    assert not list(out.glob("*.json"))  # no record of a run that did not finish
    _no_temporaries(out, cache)
    # A committed chunk is damaged on disk before the rerun: it is recomputed with the two never written.
    raw = bytearray(chunks[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunks[1].write_bytes(bytes(raw))
    _small_chunks(monkeypatch)
    resumed = _run_here(args)
    assert _computed(resumed)["train"] == 1000 - 2 * CHUNK and _computed(resumed)["test"] == 797
    reference = _reference(env, "fewshot", FEWSHOT, env["ckpt16"], monkeypatch)
    assert _computed(reference) == {"train": 1000, "test": 797}
    _same_result(resumed, reference)
    assert not list((cache / "features").glob("*.partial"))
    # A finished entry damaged on disk: found by its sha256 and rebuilt by the next run that reads it.
    entry = next(e for e in (cache / "features").iterdir() if not e.name.startswith(".")
                 and json.loads((e / "meta.json").read_text())["meta"]["split"] == "train")
    raw = bytearray((entry / "pre_logits.npy").read_bytes())
    raw[-5] ^= 0xFF
    (entry / "pre_logits.npy").write_bytes(bytes(raw))
    rebuilt = _run_here([*args, "--force"])
    assert _computed(rebuilt) == {"train": 1000, "test": 0}
    _same_result(rebuilt, reference)
    _no_temporaries(out, cache)


def test_sigkill_then_crafted_chunks_resume_without_reading_outside(env, tmp_path, monkeypatch):
    """The partial build a killed run left is untrusted input: a chunk replaced by a symlink to an identical
    chunk outside the cache, and a chunk rewritten with a member named `../../../outside/x` under a valid
    checksum, are both recomputed (with the two never written); nothing outside is read or changed, and
    the record equals an uninterrupted run's."""
    from harness.eval import cache as cache_mod

    out, cache = tmp_path / "runs", tmp_path / "cache"
    args = _args(env, FEWSHOT, env["ckpt16"], out, cache)
    proc, _ = _child(env, "commit", 3, args, tmp_path)  # chunks 0-2 committed, the writer held before chunk 3
    assert _kill(proc)[0] == -signal.SIGKILL
    (partial,) = (cache / "features").glob("*.partial")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(partial / "chunk_000000.npz", outside / "chunk_000000.npz")
    (partial / "chunk_000000.npz").unlink()
    (partial / "chunk_000000.npz").symlink_to(outside / "chunk_000000.npz")
    with np.load(partial / "chunk_000001.npz") as npz:
        arrays = {n: npz[n] for n in npz.files if n != cache_mod._CHUNK_DIGEST}
    arrays["../../../outside/x"], arrays["../../../outside/x.dtype"] = arrays["label"], arrays["label.dtype"]
    arrays[cache_mod._CHUNK_DIGEST] = np.array(cache_mod._chunk_digest(arrays))
    with open(partial / "chunk_000001.npz", "wb") as f:
        np.savez(f, **arrays)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    _small_chunks(monkeypatch)
    resumed = _run_here(args)
    assert _computed(resumed)["train"] == 1000 - CHUNK  # chunk 2 reused, 0, 1, 3, 4 computed
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    _same_result(resumed, _reference(env, "fewshot", FEWSHOT, env["ckpt16"], monkeypatch))
    assert not list((cache / "features").glob("*.partial"))
    _no_temporaries(out, cache)


def test_ctrl_c_during_extraction_is_one_line_on_a_fresh_line_and_resumes(env, tmp_path, monkeypatch):
    out, cache = tmp_path / "runs", tmp_path / "cache"
    args = _args(env, FEWSHOT, env["ckpt16"], out, cache)
    # Batch 10 is dispatched once batches 1-8 have gone to the cache (two passes in flight): 400 images, chunks
    # 0-1; Ctrl-C waits for the writer thread to commit what it was handed.
    proc, _ = _child(env, "extract", 10, args, tmp_path)
    code, err = _kill(proc, signal.SIGINT)
    assert code == 130, err
    assert "Traceback" not in err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines[-1] == "interrupted; finished work is kept and a rerun resumes it", lines[-3:]
    at = err.index("interrupted;")
    assert at == 0 or err[at - 1] == "\n", repr(err[at - 80:at])  # not glued onto the progress bar's line
    (partial,) = (cache / "features").glob("*.partial")
    assert len(list(partial.glob("chunk_*.npz"))) == 2
    _no_temporaries(out, cache)
    _small_chunks(monkeypatch)
    resumed = _run_here(args)
    assert _computed(resumed)["train"] == 1000 - 2 * CHUNK
    _same_result(resumed, _reference(env, "fewshot", FEWSHOT, env["ckpt16"], monkeypatch))


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("name,task_args", [("imagenet_finetune", FINETUNE), ("vqa", VQA)],
                         ids=["fine-tune", "decoder"])
def test_sigkill_during_training_resumes_from_the_last_checkpoint(env, tmp_path, monkeypatch, name, task_args):
    """Killed while asking for step 5's batch: the state after step 3 is on disk (ckpt_every=3); the rerun
    starts there and ends with the record of a run that was never killed."""
    out, cache = tmp_path / "runs", tmp_path / "cache"
    args = _args(env, task_args, env["ckpt32"], out, cache)
    proc, _ = _child(env, "fit", 5, args, tmp_path)
    code, _ = _kill(proc)
    assert code == -signal.SIGKILL
    assert not list(out.glob("*.json"))
    (latest,) = out.glob("artifacts/*/train_state/LATEST")
    assert latest.read_text().strip().endswith("3")
    _no_temporaries(out, cache)
    resumed = _run_here(args)
    if name == "imagenet_finetune":
        assert resumed["info"]["finetune"]["resumed_from"] == 3
    reference = _reference(env, name, task_args, env["ckpt32"], monkeypatch)
    _same_result(resumed, reference)
    assert all(np.isfinite(m["value"]) for m in resumed["metrics"].values())


@pytest.mark.parametrize("damage,says", [
    ("meta", r"train_state/state-000000003/meta.json: field step is 'three'; expected an integer >= 0; delete "),
    ("pointer", r"train_state/LATEST: names '../../elsewhere', not a saved training state"),
], ids=["meta-step-string", "pointer-outside"])
def test_a_damaged_training_state_is_one_line(env, tmp_path, damage, says):
    """Killed during the fine-tune, its training state then damaged on disk (issue 23 section 5: typed
    input): the rerun is one line naming the file and the field (exit 2, nothing written), and deleting the
    state folder, as that line says, lets the run train from the start."""
    out, cache = tmp_path / "runs", tmp_path / "cache"
    args = _args(env, FINETUNE, env["ckpt32"], out, cache)
    proc, _ = _child(env, "fit", 5, args, tmp_path)
    assert _kill(proc)[0] == -signal.SIGKILL
    (latest,) = out.glob("artifacts/*/train_state/LATEST")
    if damage == "meta":
        meta = latest.parent / latest.read_text().strip() / "meta.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "step": "three"}))
    else:
        latest.write_text("../../elsewhere")
    r = CliRunner().invoke(main, args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and re.search(says, lines[0]), r.output
    assert not list(out.glob("*.json"))
    _no_temporaries(out, cache)
    shutil.rmtree(latest.parent)
    resumed = _run_here(args)
    assert all(np.isfinite(m["value"]) for m in resumed["metrics"].values())
