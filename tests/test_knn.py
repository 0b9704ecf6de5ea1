"""kNN on frozen features against DINOv2's and DINOv3's own `KnnModule` run on fixed features
(tests/data/make_knn_fixtures.py), the chunked running top-k against one full top-k, and the task end to end
on the tiny proxy (its features shared with linear_probe through the cache)."""

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.eval import knn
from harness.run.runner import run_task
from tests.tiny import TINY_DS, TINY_RUNS

REF = np.load("tests/data/knn_reference.npz")


def _case(name):
    return [REF[f"{name}_{n}"] for n in ("train_features", "train_labels", "test_features", "test_labels")]


@pytest.mark.parametrize("impl", ["dinov2", "dinov3"])
def test_neighbours_scores_and_verdicts_are_the_references(impl):
    tx, ty, qx, qy = _case("main")
    sims, idx = knn.neighbours(tx, qx, 200, chunk_size=64, query_batch=16)  # 7 chunks, 4 query batches
    np.testing.assert_allclose(sims, REF[f"{impl}_main_neighbor_sims"], atol=1e-6)
    np.testing.assert_array_equal(ty[idx], REF[f"{impl}_main_neighbor_labels"])
    scores = knn.class_scores(sims, ty[idx], (10, 20, 100, 200), num_classes=7)
    res = knn.evaluate(tx, ty, qx, qy, chunk_size=100)
    for k in (10, 20, 100, 200):
        np.testing.assert_allclose(scores[k], REF[f"{impl}_main_scores_k{k}"], atol=1e-6)
        np.testing.assert_array_equal(res["top1"][k], REF[f"{impl}_main_top1_k{k}"])
        # Classes tied on their score (no votes at small k) are ordered arbitrarily by torch.topk.
        sure = ~REF[f"{impl}_main_top5_tie_k{k}"]
        np.testing.assert_array_equal(res["top5"][k][sure], REF[f"{impl}_main_top5_k{k}"][sure])
    # The fixture's accuracies (fractions), from its json.
    assert [res["top1"][k].mean() for k in (10, 20, 100, 200)] == pytest.approx([0.32, 0.34, 0.36, 0.36])


def test_a_k_beyond_the_bank_is_the_bank_as_dinov3_and_no_top5_below_five_classes():
    tx, ty, qx, qy = _case("small")  # 150 train examples, 4 classes
    res = knn.evaluate(tx, ty, qx, qy, chunk_size=32)
    assert res["k"] == {10: 10, 20: 20, 100: 100, 200: 150} and res["top5"] == {}
    for k, used in res["k"].items():
        np.testing.assert_array_equal(res["top1"][k], REF[f"dinov3_small_top1_k{used}"])


def test_the_running_top_k_is_one_full_top_k():
    rng = np.random.default_rng(0)
    tx, qx = rng.normal(size=(500, 8)), rng.normal(size=(37, 8))
    full = knn.normalize(qx) @ knn.normalize(tx).T
    want = np.sort(full, axis=1)[:, ::-1][:, :20]
    for chunk in (1, 7, 64, 500, 4096):
        sims, idx = knn.neighbours(tx, qx, 20, chunk_size=chunk, query_batch=5)
        np.testing.assert_allclose(sims, want, atol=1e-6)
        np.testing.assert_allclose(np.take_along_axis(full, idx, axis=1), want, atol=1e-6)
    with pytest.raises(HarnessError, match="cannot be drawn from a memory bank of 500"):
        knn.neighbours(tx, qx, 501)


def test_task_end_to_end_shares_linear_probes_features(task_env):
    kw = dict(data_dir=task_env["data_dir"], out_dir=task_env["out"], cache_dir=task_env["cache_dir"], progress=False)
    run_task("linear_probe", task_env["ckpt"], sets=TINY_RUNS["linear_probe"][1], **kw)
    rec, _, _ = run_task("knn", task_env["ckpt"], sets={"datasets": TINY_DS, "ks": "1,3,200"}, **kw)
    extractions = {e["split"]: e["computed_images"] for e in rec["info"]["feature_extraction"]}
    assert extractions == {"train": 0, "test": 0}  # both splits came from linear_probe's cache entries
    m = {k: v["value"] for k, v in rec["metrics"].items()}
    assert set(m) == {f"knn/{TINY_DS}/k{k}/{t}" for k in (1, 3, 200) for t in ("top1", "top5")}
    assert all(0 <= v <= 100 for v in m.values()) and m[f"knn/{TINY_DS}/k1/top5"] >= m[f"knn/{TINY_DS}/k1/top1"]
    n_test = next(d["num_examples"] for d in rec["datasets"] if d["role"] == "knn_test")
    n_train = next(d["num_examples"] for d in rec["datasets"] if d["role"] == "knn_train")
    assert len(rec["per_example"][f"knn/{TINY_DS}/k3/top1"]) == n_test
    assert rec["info"]["k_used"][TINY_DS] == {"1": 1, "3": 3, "200": min(200, n_train)}
    # The paper has no kNN number: a report with its rows says so in words.
    from harness.report import load_records, to_html, to_markdown
    from harness.report.tables import UNPUBLISHED

    recs = [r for r in load_records(task_env["out"]) if r["task"]["name"] == "knn"]
    md = to_markdown(recs, with_paper=True)
    knn_part = md[md.index("### knn"):]
    assert knn_part.splitlines()[2] == UNPUBLISHED
    assert "### fewshot" in md and UNPUBLISHED not in md[:md.index("### knn")]
    assert UNPUBLISHED in to_html(recs, with_paper=True) and UNPUBLISHED not in to_markdown(recs)


@pytest.mark.parametrize("sets, says", [({"ks": "0"}, "ks=0 is out of range"), ({"ks": "10,10"}, "more than once"),
                                        ({"temperature": "0"}, "temperature=0.0 is out of range"),
                                        ({"datasets": "nosuch"}, "not in the harness's registry")])
def test_bad_settings_are_one_line_before_any_data(task_env, sets, says):
    with pytest.raises(HarnessError, match=says):
        run_task("knn", task_env["ckpt"], sets=sets, data_dir=task_env["data_dir"], out_dir=task_env["out"],
                 cache_dir=task_env["cache_dir"], progress=False)
