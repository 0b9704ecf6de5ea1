"""Samples files (`harness.eval.samples`): what a task predicted per example, beside its record; their ids
(TFDS ids, checked against TFDS's own on a 3-shard build); the reader over hostile input (a table of cases
and Hypothesis properties); `harness rescore`; the paired statistics of `harness report --compare` against
scipy and a hand computation; the compare tables; the HTML pages of examples in headless Chromium.
(Every task's tiny run writes its samples file and rescores to its record exactly: tests/test_contract.py;
a 2-process run writes the same file as a 1-process one: tests/test_sharding.py.)"""

from __future__ import annotations

import csv
import gzip
import html.parser
import io
import json
import logging
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError
from harness.eval import metrics as M
from harness.eval import samples as S
from harness.run.runner import run_task
from tests.tiny import TINY_DS, TINY_ENC, TINY_RUNS

ROOT = Path(__file__).resolve().parents[1]
TFDS_ID = re.compile(r"^proxy_scenes-(test|val|train)\.tfrecord-\d{5}-of-\d{5}__\d+$")


# ------------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def runs(task_env):
    """fewshot and knn, tiny, on two checkpoints (A: task_env's, B: another random one) into one folder."""
    from harness.models.encoder import load_encoder

    ckpt_b = load_encoder("random:1", **TINY_ENC).save(str(Path(task_env["ckpt"]).parent / "tiny_b.npz"))
    kw = dict(data_dir=task_env["data_dir"], out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)
    out = {}
    for side, ckpt in (("A", task_env["ckpt"]), ("B", ckpt_b)):
        for task in ("fewshot", "knn"):
            preset, sets = TINY_RUNS[task]
            rec, path, _ = run_task(task, ckpt, preset=preset, sets=sets, **kw)
            out[(side, task)] = (rec, path)
    return {**out, "kw": kw, "ckpt_b": ckpt_b}


def test_the_samples_file_is_gzip_json_lines_of_tfds_ids_named_by_the_record(runs, task_env):
    rec, path = runs[("A", "fewshot")]
    entry = rec["samples"]
    file = path.parent / entry["path"]
    assert file.name == path.stem + ".samples.jsonl.gz"
    raw = file.read_bytes()
    assert S.file_sha256(file) == entry["sha256"] and entry["bytes"] == len(raw)
    assert raw[:2] == b"\x1f\x8b" and raw[3] & 0x08 == 0 and raw[4:8] == b"\0\0\0\0"  # no name, mtime 0
    lines = [json.loads(x) for x in gzip.decompress(raw).decode().splitlines()]
    header, examples = lines[0], lines[1:]
    assert header["schema"] == S.SCHEMA and header["task"] == "fewshot" and len(examples) == entry["num_lines"]
    assert header["sets"] == {f"{TINY_DS}/test": {"dataset": TINY_DS, "split": "test", "num_examples": 24}}
    base = f"fewshot/{TINY_DS}/1shot"
    assert header["metrics"][base] == {"set": f"{TINY_DS}/test", "rule": "mean_of",
                                       "metrics": [f"{base}/seed-0", f"{base}/seed-1"]}
    assert header["metrics"][f"{base}/seed-1"] == {"set": f"{TINY_DS}/test", "rule": "top1", "field": "1shot/seed-1"}
    for i, ex in enumerate(examples):
        assert TFDS_ID.match(ex["id"]) and ex["id"].endswith(f"__{i}") and ex["index"] == i
        head = ex["prediction"]["2shot/seed-0"]
        assert head["class"] == head["top5"][0] and len(head["top5_scores"]) == 5
        assert head["top5_scores"] == sorted(head["top5_scores"], reverse=True)
        assert ex["scores"][f"{base}/seed-0"] == 100.0 * (ex["prediction"]["1shot/seed-0"]["class"] == ex["target"])
    # The same run again is the same bytes (forced, so recomputed and rewritten).
    again, _, reused = run_task("fewshot", task_env["ckpt"], sets=TINY_RUNS["fewshot"][1], force=True, **runs["kw"])
    assert not reused and again["samples"] == entry and file.read_bytes() == raw


def test_a_reused_record_needs_its_samples_file_as_written(runs, task_env, tmp_path, caplog):
    kw = {**runs["kw"], "out_dir": tmp_path / "runs"}
    sets = TINY_RUNS["knn"][1]
    rec, path, _ = run_task("knn", task_env["ckpt"], sets=sets, **kw)
    file = path.parent / rec["samples"]["path"]
    assert run_task("knn", task_env["ckpt"], sets=sets, **kw)[2]  # reused
    file.write_bytes(file.read_bytes() + b"\0")
    with caplog.at_level(logging.WARNING, logger="harness"):
        rec2, _, reused = run_task("knn", task_env["ckpt"], sets=sets, **kw)
    assert not reused and "changed since the record was written" in caplog.text
    assert S.file_sha256(file) == rec2["samples"]["sha256"] == rec["samples"]["sha256"]
    file.unlink()
    assert not run_task("knn", task_env["ckpt"], sets=sets, **kw)[2] and file.exists()
    # --no-log-samples: no file (an earlier run's is removed), and a later run that wants samples recomputes.
    off, _, _ = run_task("knn", task_env["ckpt"], sets=sets, force=True, log_samples=False, **kw)
    assert off["samples"] is None and off["info"]["log_samples"] is False and not file.exists()
    assert run_task("knn", task_env["ckpt"], sets=sets, log_samples=False, **kw)[2]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="harness"):
        on, _, reused = run_task("knn", task_env["ckpt"], sets=sets, **kw)
    assert not reused and "--no-log-samples" in caplog.text and on["samples"] and file.exists()
    assert run_task("knn", task_env["ckpt"], sets=sets, log_samples=False, **kw)[2]  # has samples: reused


def test_example_ids_are_the_ids_tfds_gives_on_a_three_shard_build(tmp_path):
    from harness import data
    from harness.data import pipeline

    tfds = pipeline._tfds()
    builder = tfds.builder("proxy_scenes/tiny", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
    assert all(len(s.shard_lengths) == 3 for s in builder.info.splits.values())
    for split, shards in (("test", 3), ("train[5:40]+test[:7]", 4), ("val[50%:]", 2), ("train[-3:]", 1)):
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()},
                                read_config=tfds.ReadConfig(add_tfds_id=True, interleave_cycle_length=1))
        want = [x["tfds_id"].numpy().decode() for x in ds]
        assert data.example_ids(TINY_DS, split, range(len(want)), str(tmp_path)) == want, split
        assert len({w.split("__")[0] for w in want}) == shards  # the shards the slice spans
    # A position's id is the same in any slice that holds it (a capped run pairs with a full one).
    assert data.example_ids(TINY_DS, "test[10:]", [0], str(tmp_path)) == data.example_ids(TINY_DS, "test", [10],
                                                                                          str(tmp_path))
    with pytest.raises(HarnessError, match="outside split"):
        data.example_ids(TINY_DS, "test", [24], str(tmp_path))


# --------------------------------------------------------------------------------------------- rescore
def test_rescore_command_prints_recorded_and_rescored_and_exits_1_naming_what_moved(runs, tmp_path):
    from click.testing import CliRunner

    from harness.cli import main

    rec, path = runs[("A", "knn")]
    r = CliRunner().invoke(main, ["rescore", str(path)])
    assert r.exit_code == 0, r.output
    name = f"knn/{TINY_DS}/k3/top5"
    value = rec["metrics"][name]["value"]
    assert f"| {name} | {value:.10g} | {value:.10g} | same |" in r.output
    assert r.output.rstrip().endswith("rescore: all 4 metric(s) computed from the examples equal their records")
    # A record whose value is not what its examples give (an older metric code, an edit) moved.
    moved = tmp_path / path.name
    doc = json.loads(path.read_text())
    doc["metrics"][name]["value"] = value + 1
    moved.write_text(json.dumps(doc))
    (tmp_path / rec["samples"]["path"]).write_bytes((path.parent / rec["samples"]["path"]).read_bytes())
    r = CliRunner().invoke(main, ["rescore", str(moved)])
    assert r.exit_code == 1 and "| **moved** |" in r.output
    assert r.output.rstrip().splitlines()[-1] == f"rescore: 1 of 4 metric(s) moved: {name} ({value + 1!r} -> {value!r})"
    # Without its samples file: one line, exit 2.
    (tmp_path / rec["samples"]["path"]).unlink()
    r = CliRunner().invoke(main, ["rescore", str(moved)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "cannot be read" in r.output, r.output


# ------------------------------------------------------------------------------------- hostile readers
HEADER = {"schema": S.SCHEMA, "task": "t", "sets": {"s": {"dataset": "d", "split": "test", "num_examples": 1}},
          "metrics": {"t/acc": {"set": "s", "rule": "top1"}}}
LINE = {"set": "s", "id": "a", "index": 0, "target": 1, "prediction": {"class": 1}, "scores": {"t/acc": 100.0}}


def _gz(*lines, raw: bytes | None = None) -> bytes:
    body = raw if raw is not None else b"".join((json.dumps(x) if not isinstance(x, str) else x).encode() + b"\n"
                                                 for x in lines)
    return gzip.compress(body, mtime=0)


def _valid() -> bytes:
    return _gz(HEADER, LINE)


BAD_FILES = {
    "not-gzip": (b"plain text\n", "unreadable"),
    "truncated-gzip": (_valid()[:-12], "unreadable"),
    "empty": (_gz(raw=b""), "it is empty"),
    "not-utf8": (_gz(raw=b"\xff\xfe\xfd\n"), "unreadable"),
    "not-json": (_gz(raw=b"{schema\n"), "unreadable"),
    "nan-score": (_gz(HEADER, '{"set":"s","id":"a","index":0,"target":1,"prediction":{},"scores":{"t/acc":NaN}}'),
                  "unreadable"),
    "huge-int-score": (_gz(HEADER, {**LINE, "scores": {"t/acc": 10 ** 400}}), "finite number"),
    "deep-json": (_gz(raw=b"[" * 100_000 + b"\n"), "unreadable"),
    "other-schema": (_gz({**HEADER, "schema": "x/9"}, LINE), "header"),
    "unknown-rule": (_gz({**HEADER, "metrics": {"t/acc": {"set": "s", "rule": "eval"}}}, LINE), "no known rule"),
    "rule-on-unknown-set": (_gz({**HEADER, "metrics": {"t/acc": {"set": "z", "rule": "top1"}}}, LINE), "no known rule"),
    "bad-rule-arg": (_gz({**HEADER, "metrics": {"t/acc": {"set": "s", "rule": "topk", "k": True}}}, LINE), "rule's k"),
    "line-not-object": (_gz(HEADER, [1, 2]), "not a JSON object"),
    "unknown-set": (_gz(HEADER, {**LINE, "set": "z"}), "not in the header"),
    "bool-id": (_gz(HEADER, {**LINE, "id": True}), "id is not"),
    "negative-index": (_gz(HEADER, {**LINE, "index": -1}), "index is not"),
    "no-prediction": (_gz(HEADER, {k: v for k, v in LINE.items() if k != "prediction"}), "no target or no prediction"),
    "text-score": (_gz(HEADER, {**LINE, "scores": {"t/acc": "100"}}), "finite number"),
    "duplicate-id": (_gz(HEADER, LINE, LINE), "appears twice"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_samples_file_is_one_line(case, tmp_path):
    raw, says = BAD_FILES[case]
    f = tmp_path / "x.samples.jsonl.gz"
    f.write_bytes(raw)
    with pytest.raises(HarnessError) as e:
        S.read_samples(f)
    assert says in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_bounds_sha_and_non_files_are_one_line(tmp_path, monkeypatch):
    f = tmp_path / "x.gz"
    f.write_bytes(_valid())
    assert S.read_samples(f).lines == [LINE]
    with pytest.raises(HarnessError, match="changed since its record was written"):
        S.read_samples(f, sha256="0" * 64)
    monkeypatch.setattr(S, "MAX_LINE_BYTES", 1000)
    f.write_bytes(_gz(HEADER, {**LINE, "target": "x" * 2000}))
    with pytest.raises(HarnessError, match="a line longer than 1000 bytes"):
        S.read_samples(f)
    # A gzip bomb: 8 MiB of JSON whitespace in 8 kB, refused once past the bound, a line at a time.
    monkeypatch.setattr(S, "MAX_LINE_BYTES", 1 << 20)
    monkeypatch.setattr(S, "MAX_JSON_BYTES", 2 << 20)
    f.write_bytes(_gz(raw=json.dumps(HEADER).encode() + b"\n" + b"".join(
        b" " * ((1 << 20) - 200) + json.dumps({**LINE, "id": f"a{i}"}).encode() + b"\n" for i in range(8))))
    assert f.stat().st_size < 20_000
    with pytest.raises(HarnessError, match="inflates to more than 2097152 bytes"):
        S.read_samples(f)
    monkeypatch.setattr(S, "MAX_FILE_BYTES", 100)
    with pytest.raises(HarnessError, match="more than a samples file can be"):
        S.read_samples(f)
    fifo = tmp_path / "fifo.gz"
    os.mkfifo(fifo)
    for bad, says in ((tmp_path, "not a regular file"), (fifo, "not a regular file"),
                      (tmp_path / "none.gz", "cannot be read")):
        with pytest.raises(HarnessError, match=says):
            S.read_samples(bad)


def test_rescore_of_malformed_examples_is_one_line(tmp_path):
    cases = [({"t/acc": {"set": "s", "rule": "top1", "field": "k1"}}, LINE, "no k1 entry"),
             ({"t/acc": {"set": "s", "rule": "topk", "k": 5}}, LINE, "no top5 list"),
             ({"t/acc": {"set": "s", "rule": "recall", "k": 5}}, LINE, "no retrieved list"),
             ({"t/acc": {"set": "s", "rule": "vqa"}}, {**LINE, "prediction": {"text": "a"}}, "answers"),
             ({"t/acc": {"set": "s", "rule": "vqa"}}, {**LINE, "target": {"answers": [1]}, "prediction": {"text": "a"}},
              "answers"),
             ({"t/acc": {"set": "s", "rule": "exact_match", "match": "exact"}}, LINE, "no text"),
             ({"t/acc": {"set": "s", "rule": "exact_match", "match": "nope"}}, {**LINE, "prediction": {"text": "a"}},
              "not one of"),
             ({"t/acc": {"set": "s", "rule": "caption", "which": "cider"}}, LINE, "reference captions"),
             ({"t/acc": {"set": "s", "rule": "segmentation", "which": "miou", "num_classes": 3}}, LINE,
              "not {class, intersection"),
             ({"t/acc": {"set": "s", "rule": "segmentation", "which": "miou", "num_classes": 3}},
              {**LINE, "prediction": {"class": [3], "intersection": [1], "union": [1], "prediction": [1], "label": [1]}},
              "distinct classes below 3"),
             ({"t/acc": {"set": "s", "rule": "segmentation", "which": "miou", "num_classes": 3}},
              {**LINE, "prediction": {"class": [1, 1], "intersection": [1, 1], "union": [1, 1], "prediction": [1, 1],
                                      "label": [1, 1]}}, "distinct classes"),
             ({"t/acc": {"set": "s", "rule": "segmentation", "which": "miou", "num_classes": 3}},
              {**LINE, "prediction": {"class": [1], "intersection": [-1], "union": [1], "prediction": [1],
                                      "label": [1]}}, "lists of areas"),
             ({"t/acc": {"set": "s", "rule": "segmentation", "which": "miou", "num_classes": 2 ** 40}},
              {**LINE, "prediction": {"class": [], "intersection": [], "union": [], "prediction": [], "label": []}},
              "num_classes"),
             ({"t/acc": {"set": "s", "rule": "segmentation", "which": "iou"}}, LINE, "names no score")]
    for rules, line, says in cases:
        f = tmp_path / "x.gz"
        f.write_bytes(_gz({**HEADER, "metrics": rules}, line))
        with pytest.raises(HarnessError, match=says):
            S.rescore(S.read_samples(f))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=12)
# Every rule but `caption` (which runs Java's PTB tokenizer), on one set.
_RULES = {"m/top1": {"rule": "top1"}, "m/head": {"rule": "top1", "field": "h"}, "m/topk": {"rule": "topk", "k": 2},
          "m/recall": {"rule": "recall", "k": 3}, "m/vqa": {"rule": "vqa"}, "m/vqa_t": {"rule": "vqa", "answer_type": "x"},
          "m/em": {"rule": "exact_match", "match": "lower"}, "m/mean": {"rule": "mean"},
          "m/both": {"rule": "mean_of", "metrics": ["m/top1", "m/mean"]}, "m/sd": {"rule": "std_of", "metrics": ["m/topk"]},
          "m/seg": {"rule": "segmentation", "which": "miou", "num_classes": 3}}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300), compress=st.booleans())
def test_any_bytes_read_as_samples_or_one_line(tmp_path, raw, compress):
    f = tmp_path / "x.gz"
    f.write_bytes(gzip.compress(raw) if compress else raw)
    try:
        got = S.read_samples(f)
    except HarnessError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(got, S.Samples)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.fixed_dictionaries({"set": st.sampled_from(["s", "s", "z"]), "id": st.integers(0, 5) | st.text(max_size=3),
                                              "index": st.none() | st.integers(-1, 3), "target": _JSON,
                                              "prediction": _JSON,
                                              "scores": st.dictionaries(st.sampled_from(sorted(_RULES)),
                                                                        st.floats(-1e3, 1e3) | st.integers(0, 100))}),
                      max_size=6))
def test_any_example_lines_read_and_rescore_or_are_one_line(tmp_path, lines):
    f = tmp_path / "x.gz"
    f.write_bytes(_gz({**HEADER, "metrics": {m: {"set": "s", **r} for m, r in _RULES.items()}}, *lines))
    try:
        got = S.rescore(S.read_samples(f))
    except HarnessError as e:
        assert "\n" not in str(e)
    else:
        assert set(got) == set(_RULES) and all(v is None or math.isfinite(v) for v in got.values())


def test_the_segmentation_rule_is_the_tasks_miou_of_the_summed_areas(tmp_path):
    """mIoU / aAcc / mAcc from the per-image areas a samples file keeps are `segmentation_scores` of the areas
    summed over the set (counted here from the maps themselves), not a mean over images."""
    from harness.eval import dense

    rng = np.random.default_rng(0)
    c = 6
    labels = rng.integers(0, c, (5, 9, 11))
    labels[0, :4] = dense.IGNORE_INDEX  # ignored pixels count nowhere
    labels[1] = rng.integers(0, 2, (9, 11))  # an image with two classes only
    preds = np.where(rng.random(labels.shape) < 0.6, labels, rng.integers(0, c, labels.shape)) % c
    areas = [dense.intersect_and_union(p, lab, c) for p, lab in zip(preds, labels)]
    kept = [S.segmentation_areas(a) for a in areas]
    assert kept[1]["class"] == sorted({*labels[1].ravel().tolist(), *preds[1].ravel().tolist()})
    header = {**HEADER, "metrics": {f"seg/{w}": {"set": "s", "rule": "segmentation", "which": w, "num_classes": c}
                                    for w in ("miou", "aacc", "macc")}}
    f = tmp_path / "x.gz"
    f.write_bytes(_gz(header, *({"set": "s", "id": i, "index": i, "target": {}, "prediction": p, "scores": {}}
                                for i, p in enumerate(kept))))
    got = S.rescore(S.read_samples(f))
    keep = labels != dense.IGNORE_INDEX
    inter = np.bincount(labels[keep & (preds == labels)], minlength=c)
    lab, pred = np.bincount(labels[keep], minlength=c), np.bincount(preds[keep], minlength=c)
    iou = inter / (lab + pred - inter)
    assert got["seg/miou"] == pytest.approx(iou.mean() * 100, abs=1e-12)
    assert got["seg/macc"] == pytest.approx((inter / lab).mean() * 100, abs=1e-12)
    assert got["seg/aacc"] == pytest.approx(inter.sum() / lab.sum() * 100, abs=1e-12)
    assert got == {f"seg/{w}": v * 100 for w, v in dense.segmentation_scores(np.stack(areas)).items()
                   if w in ("miou", "aacc", "macc")}
    per_image = np.nanmean([dense.segmentation_scores(a)["miou"] for a in areas]) * 100
    assert abs(per_image - got["seg/miou"]) > 0.1  # a mean over images would be another number


# ------------------------------------------------------------------------------------ paired statistics
@pytest.mark.parametrize("n10, n01, same", [(0, 0, 10), (3, 3, 5), (1, 9, 20), (13, 4, 50), (60, 36, 104),
                                            (300, 250, 1000), (10_000, 10_350, 100)])
def test_mcnemar_is_scipys_exact_binomial_test(n10, n01, same):
    from scipy.stats import binomtest

    a = np.array([100.0] * n10 + [0.0] * n01 + [100.0] * (same // 2) + [0.0] * (same - same // 2))
    b = np.array([0.0] * n10 + [100.0] * n01 + [100.0] * (same // 2) + [0.0] * (same - same // 2))
    p, got10, got01 = M.mcnemar_exact(a, b)
    assert (got10, got01) == (n10, n01)
    want = binomtest(n01, n10 + n01, 0.5).pvalue if n10 + n01 else 1.0
    assert p == pytest.approx(want, rel=1e-10, abs=1e-300)
    assert M.mcnemar_exact(a / 100, b / 100)[0] == p  # 0/1 or 0/100 alike


def test_sign_flip_permutation_is_scipys_exact_test_and_samples_when_large():
    from scipy.stats import permutation_test

    rng = np.random.default_rng(3)
    for a, b in ((rng.normal(size=12), None), (np.array([0, 30, 60, 90, 100, 100, 0, 30.0]), None),
                 (np.array([1.0, 2, 3, 4, 5, 6]), np.array([1.0, 2, 3.5, 5, 6, 7]))):
        b = a + rng.normal(0.4, 1.0, a.size) if b is None else b
        b = np.where(rng.random(a.size) < 0.2, a, b)  # ties: zero differences
        p, exact = M.paired_permutation_p(a, b)
        want = permutation_test((a, b), lambda x, y: np.mean(y - x), permutation_type="samples",
                                n_resamples=np.inf, alternative="two-sided").pvalue
        assert exact and p == pytest.approx(want, rel=1e-12)
    a = rng.normal(size=400)
    b = a + rng.normal(0.05, 1.0, a.size)
    p, exact = M.paired_permutation_p(a, b)
    want = permutation_test((a, b), lambda x, y: np.mean(y - x), permutation_type="samples", n_resamples=9999,
                            alternative="two-sided", random_state=1).pvalue
    assert not exact and abs(p - want) < 0.03 and p == M.paired_permutation_p(a, b)[0]  # seeded
    assert M.paired_permutation_p(a, a + 1.0)[0] == 1 / 10_000  # none of 9999 flips reaches it
    assert M.paired_permutation_p(a, a) == (1.0, True)


def test_paired_bootstrap_ci_is_the_hand_computed_bootstrap_distribution():
    # 20 pairs, B right on 10 that A gets wrong: a resample's mean difference is K/20, K ~ Binomial(20, 1/2).
    # By hand: P(K <= 5) = 0.0207 < 0.025 <= P(K <= 6) = 0.0577, P(K <= 13) = 0.9423 < 0.975 <= P(K <= 14) =
    # 0.9793: the 2.5% and 97.5% quantiles are 6/20 and 14/20, with room on both sides for sampling noise.
    cdf = np.cumsum([math.comb(20, k) for k in range(21)]) / 2 ** 20
    lo_k, hi_k = int(np.searchsorted(cdf, 0.025)), int(np.searchsorted(cdf, 0.975))
    assert (lo_k, hi_k) == (6, 14) and cdf[5] < 0.022 and cdf[13] < 0.95
    a, b = np.zeros(20), np.array([100.0] * 10 + [0.0] * 10)
    assert M.paired_bootstrap_ci(a, b, n_resamples=20_000) == (lo_k * 5.0, hi_k * 5.0)
    # Paired: the same examples are drawn for both; a constant shift has no spread at all.
    x = np.random.default_rng(0).normal(size=50)
    assert M.paired_bootstrap_ci(x, x + 2.5) == pytest.approx((2.5, 2.5))
    assert M.paired_bootstrap_ci(x, x + 2.5) == M.bootstrap_ci((x + 2.5) - x)


def test_sample_sizes_are_connors_and_the_paired_normal_approximation():
    z_a, z_b = 1.959963984540054, 0.8416212335729143  # z_0.975, z_0.8
    # Connor (1987): psi = 0.3, delta = 0.1.
    want = (z_a * math.sqrt(0.3) + z_b * math.sqrt(0.3 - 0.01)) ** 2 / 0.01
    assert M.mcnemar_sample_size(10, 20, 100) == pytest.approx(want, rel=1e-12) and 233 < want < 234
    assert M.mcnemar_sample_size(7, 7, 100) == math.inf
    a, b = np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0])  # d = 1..4: mean 2.5, sd sqrt(5/3)
    assert M.paired_sample_size(a, b) == pytest.approx(((z_a + z_b) * math.sqrt(5 / 3) / 2.5) ** 2, rel=1e-12)


# ------------------------------------------------------------------------------------------- compare
def _synthetic(folder: Path, name: str, top1: np.ndarray, nll: np.ndarray, ids: list) -> Path:
    """A record of checkpoint `name` with a samples file: a 0/1 metric and a continuous one."""
    folder.mkdir(parents=True, exist_ok=True)
    rec_path = folder / f"linear_probe__{name}.json"
    s = S.SampleSet("proxy_scenes/test", "proxy_scenes", "test", targets=[1] * len(ids),
                    predictions=[{"class": int(t)} for t in top1 > 0], ids=ids)
    s.score("linear_probe/proxy_scenes/test", "top1", top1)
    s.score("linear_probe/proxy_scenes/nll", "mean", nll)
    entry = S.write_samples(S.samples_path(rec_path), "linear_probe", [s])
    rec = {"schema_version": 1, "created": "2026-01-01T00:00:00+00:00",
           "task": {"name": "linear_probe", "version": "2", "config": {}, "config_hash": "x"},
           "checkpoint": {"name": name, "sha256": name * 8},
           "metrics": {"linear_probe/proxy_scenes/test": {"value": float(top1.mean()), "higher_is_better": True,
                                                          "unit": "%"},
                       "linear_probe/proxy_scenes/nll": {"value": float(nll.mean()), "higher_is_better": False,
                                                         "unit": "nats"}},
           "samples": entry}
    rec_path.write_text(json.dumps(rec))
    return rec_path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A and B on 300 shared examples (B right on 50 A gets wrong, wrong on 10 A gets right), A on 5 more."""
    root = tmp_path_factory.mktemp("compare")
    a = np.array([100.0] * 150 + [0.0] * 150)
    b = a.copy()
    b[:10], b[150:200] = 0.0, 100.0
    rng = np.random.default_rng(0)
    nll_a = rng.gamma(2.0, 1.0, 300)
    nll_b = nll_a - 0.05 + rng.normal(0, 0.5, 300)
    ids = [f"proxy_scenes-test.tfrecord-00000-of-00001__{i}" for i in range(305)]
    _synthetic(root / "A", "ckpt_a", np.concatenate([a, [100.0] * 5]), np.concatenate([nll_a, np.ones(5)]), ids)
    _synthetic(root / "B", "ckpt_b", b[::-1], nll_b[::-1], ids[:300][::-1])  # another order: paired by id
    return {"root": root, "a": a, "b": b, "nll_a": nll_a, "nll_b": nll_b}


def test_compare_gives_the_paired_statistics_of_each_metric(pair):
    from scipy.stats import binomtest

    from harness.report.compare import compare_command

    root, a, b = pair["root"], pair["a"], pair["b"]
    text = compare_command([], str(root / "A"), str(root / "B"))
    p = binomtest(50, 60, 0.5).pvalue
    lo, hi = M.paired_bootstrap_ci(a, b)
    n80 = math.ceil(M.mcnemar_sample_size(10, 50, 300))
    row = (f"| proxy_scenes/test | 300 | 50.00 | 63.33 | +13.33* | [{lo:.2f}, {hi:.2f}] | {p:.1e} | McNemar exact "
           f"(only A right 10, only B right 50) | {n80:,} |")
    assert row in text, text
    p_nll, _ = M.paired_permutation_p(pair["nll_a"], pair["nll_b"])
    assert f"| {p_nll:.3g} | sign-flip permutation (9999 resamples) |" in text
    assert "linear_probe/proxy_scenes/test: 5 only in A, 0 only in B" in " ".join(text.split())
    # CSV at full precision; LaTeX and HTML mark the significant difference.
    rows = {r["metric"]: r for r in csv.DictReader(io.StringIO(compare_command([], str(root / "A"), str(root / "B"),
                                                                                fmt="csv")))}
    r = rows["linear_probe/proxy_scenes/test"]
    assert float(r["p"]) == pytest.approx(p, rel=1e-10) and r["significant"] == "true" and r["examples"] == "300"
    assert (float(r["ci95_lo"]), float(r["ci95_hi"])) == (lo, hi) and float(r["b_minus_a"]) == pytest.approx(40 / 3)
    assert "\\textbf{+13.33}$^{*}$" in compare_command([], str(root / "A"), str(root / "B"), fmt="latex")
    out = root / "compare.html"
    compare_command([], str(root / "A"), str(root / "B"), fmt="html", output=str(out))
    assert '<td class="sig">+13.33*</td>' in out.read_text()
    # Row names of the records given work as well as folders.
    assert compare_command([str(root / "A"), str(root / "B")], "ckpt_a", "ckpt_b") == text


@pytest.mark.parametrize("args, says", [
    (["--compare", "ckpt_a", "nope"], "neither a folder of records nor a checkpoint"),
    (["--compare", "ckpt_a", "ckpt_a"], "A and B are the same records"),
    (["--compare", "ckpt_a", "ckpt_b", "--baseline", "ckpt_a"], "drop --baseline"),
    (["--compare", "ckpt_a", "ckpt_b", "--format", "html"], "give -o FILE.html"),
])
def test_compare_errors_are_one_line(pair, args, says):
    from click.testing import CliRunner

    from harness.cli import main

    r = CliRunner().invoke(main, ["report", str(pair["root"] / "A"), str(pair["root"] / "B"), *args])
    assert r.exit_code == 2 and says in r.output and r.output.count("\n") == 1, r.output


def test_compare_of_real_runs(runs):
    from harness.report.compare import compare

    folder = Path(runs[("A", "knn")][1]).parent
    from harness.report import load_records

    name_a, name_b, out, notes = compare(load_records(folder), "tiny.npz", "tiny_b.npz")
    got = {c.metric: c for c in out}
    assert set(got) == {*runs[("A", "knn")][0]["metrics"], f"fewshot/{TINY_DS}/1shot", f"fewshot/{TINY_DS}/2shot"}
    for c in got.values():
        assert c.n == 24 and c.only_a == c.only_b == 0
        ra, rb = runs[("A", c.task)][0], runs[("B", c.task)][0]
        assert c.diff == pytest.approx(rb["metrics"][c.metric]["value"] - ra["metrics"][c.metric]["value"])
    assert got[f"knn/{TINY_DS}/k1/top1"].test.startswith("McNemar exact")
    assert got[f"fewshot/{TINY_DS}/1shot"].test.startswith("sign-flip permutation")  # means over 2 seeds


# ------------------------------------------------------------------------------------- pages of examples
class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs = set(), []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])


def test_the_html_report_links_pages_of_examples_with_thumbnails(runs, task_env, tmp_path):
    from PIL import Image

    from harness.report import report_command

    out = tmp_path / "rep" / "report.html"
    said = report_command([str(task_env["out"])], fmt="html", output=str(out), data_dir=task_env["data_dir"])
    assert said == f"wrote {out} and 2 page(s) of examples\n"
    main = out.read_text()
    for task in ("fewshot", "knn"):
        assert f'<a href="report_examples/{task}.html">' in main
        page = out.parent / "report_examples" / f"{task}.html"
        tags = _Tags()
        tags.feed(page.read_text())
        assert "script" not in tags.tags and len(tags.imgs) == 2 * 2 * 8  # 2 checkpoints x 2 lists x 8
        for src in tags.imgs:
            with Image.open(page.parent / src) as im:
                assert im.size == (64, 64) and im.format == "PNG"
        assert "tiny.npz" in page.read_text() and "tiny_b.npz" in page.read_text()
        assert re.search(r"proxy_scenes-test\.tfrecord-00000-of-00001__\d+", page.read_text())


def test_pages_of_examples_are_inert(tmp_path):
    from harness.report.examples import write_example_pages
    from harness.report.records import load_records

    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    folder = tmp_path / "runs"
    folder.mkdir()
    rec_path = folder / "linear_probe__x.json"
    s = S.SampleSet("s", "nosuch", "test", targets=[evil], ids=[evil], index=[0],
                    predictions=[{"class": 1, "top5": [1, evil], "top5_scores": [1.0, 0.5]}])
    s.score("linear_probe/" + evil, "top1", [0.0])
    entry = S.write_samples(S.samples_path(rec_path), "linear_probe", [s])
    rec_path.write_text(json.dumps({"schema_version": 1, "task": {"name": "linear_probe" + evil},
                                    "checkpoint": {"name": evil}, "samples": entry,
                                    "metrics": {"linear_probe/" + evil: {"value": 0.0}}}))
    links = write_example_pages(load_records(folder), tmp_path / "report.html")
    page = tmp_path / links["linear_probe" + evil]
    assert page.parent == tmp_path / "report_examples" and re.fullmatch(r"linear_probe_[\w.-]+\.html", page.name)
    tags = _Tags()
    tags.feed(page.read_text())
    assert tags.tags <= {"html", "head", "meta", "title", "style", "body", "header", "h1", "p", "main", "nav", "a",
                         "section", "h2", "small", "h3", "div", "table", "thead", "tr", "th", "tbody", "td", "br",
                         "ul", "li"}, tags.tags
    assert "&lt;script&gt;" in page.read_text() and tags.imgs == []


def _render_check():
    script = ROOT / "scripts" / "render_html_check.py"
    sys.path.insert(0, str(script.parent))
    try:
        import render_html_check as rhc
    finally:
        sys.path.pop(0)
    if rhc.find_chromium() is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    return rhc


def test_pages_of_examples_render_in_headless_chromium(runs, task_env, tmp_path):
    rhc = _render_check()
    from harness.report import report_command

    out = tmp_path / "rep" / "report.html"
    report_command([str(task_env["out"])], fmt="html", output=str(out), data_dir=task_env["data_dir"])
    root = out.parent
    assert rhc.check(out, tmp_path / "main.png", min_rows=4, min_images=1, local_root=root,
                     expect=["fewshot: the worst and the most uncertain examples"]) == []
    # Without --local-root, the links to the pages are references outside the page.
    assert any("external references" in f for f in rhc.check(out, tmp_path / "main2.png"))
    for task in ("fewshot", "knn"):
        page = root / "report_examples" / f"{task}.html"
        assert rhc.check(page, tmp_path / f"{task}.png", min_rows=32, min_images=32, local_root=root,
                         expect=["back to the report", "most uncertain", "tiny_b.npz"]) == []
    assert not list(root.rglob(".render-check-*"))  # the hooked copies are gone
