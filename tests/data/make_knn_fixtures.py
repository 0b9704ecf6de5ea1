"""Writes tests/data/knn_reference.npz / .json: DINOv2's and DINOv3's k-NN classifier on fixed features.

Not part of the harness and not run by the tests. It needs the DINOv2 and DINOv3 sources (not on PyPI) as
git work trees and a scratch virtualenv with torch, torchvision, torchmetrics, omegaconf and (for DINOv3's
imports) pandas / scikit-learn / submitit / ftfy / regex / iopath / termcolor. It holds no DINO code: it
imports `dinov2.eval.knn` / `dinov3.eval.knn` and calls, on fixed features, the same pieces their
`eval_knn` wires together (their `ModelWithNormalize`, `KnnModule`, `DictKeysModule`, metric builders and
`evaluate`), with device "cpu" instead of `torch.cuda.current_device()` and the features passed in directly
instead of being extracted from a dataset by a backbone (the backbone is `torch.nn.Identity`).

`KnnModule` always calls `torch.distributed.broadcast` / `gather`, so the script runs them in a real
single-process gloo group (world size 1; nothing is stubbed). It then reruns DINOv2's module in a 2-process
gloo group (train features chunked over the ranks by `KnnModule` itself, test features split like a
`DistributedSampler` with shuffle off would split them) and checks that the sharded computation gives the
same neighbours and scores: the "chunked matmul + second top-k" is exact.

Cases (all float32, features raw, NOT L2-normalised: normalising is part of the protocol):
- `main`: 420 train features of dim 16 over 7 classes (counts 110, 90, 70, 55, 40, 35, 20), 50 test
  features (420 so that each of 2 ranks holds >= 200: DINOv2's per-rank `topk(max_k)` needs that),
  ks (10, 20, 100, 200), T 0.07. Run through DINOv2's module and metrics (`dinov2_*` keys) and DINOv3's
  (`dinov3_*`); both must agree.
- `small`: 150 train features over 4 classes, 30 test features, same ks: DINOv3 only (DINOv2's
  `topk(200)` fails on 150 candidates); DINOv3 clips k = 200 to the train size (150) and reports top-1 only
  (fewer than 5 classes).

Keys of knn_reference.npz, for case C in (main, small):
- `C_train_features` (N, 16), `C_train_labels` (N,) int64, `C_test_features` (M, 16), `C_test_labels` (M,).
- `<impl>_C_scores_k<k>` (M, classes) float32: `KnnModule.forward`'s `probas_for_k[k]` (softmax of
  sim / T over the max_k nearest, summed per class over the first k).
- `<impl>_C_top1_k<k>`, `<impl>_C_top5_k<k>` (M,) bool: per test example, the reference's own torchmetrics
  `MulticlassAccuracy(top_k=1|5, average="micro")` on that one example.
- `<impl>_C_top5_tie_k<k>` (M,) bool: the example's top-5 verdict depends on how ties are broken (its true
  class scores exactly the 5th-highest score, shared with a class outside the top 5 or that the
  reference left out): torch.topk's choice among equal scores; an implementation may differ there.
- `<impl>_C_neighbor_labels` (M, max_k) and `<impl>_C_neighbor_sims` (M, max_k): the neighbours
  `compute_neighbors` returned (sorted, most similar first).
knn_reference.json: the settings, per-k accuracies as `evaluate` returned them (fractions; DINO logs them
x100 as "<k> Top 1" / "<k> Top 5"), commits and versions.

Run:
    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy torchmetrics omegaconf termcolor \
        pandas scikit-learn submitit ftfy regex iopath
    git clone /work/.mirror/facebookresearch+dinov2/repo /tmp/refsrc/dinov2
    git clone --no-checkout /work/.mirror/facebookresearch+dinov3/repo /tmp/refsrc/dinov3
    git -C /tmp/refsrc/dinov3 checkout HEAD -- dinov3
    /tmp/refvenv/bin/python tests/data/make_knn_fixtures.py --dinov2 /tmp/refsrc/dinov2 --dinov3 /tmp/refsrc/dinov3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from functools import partial
from typing import Any

import numpy as np

KS = (10, 20, 100, 200)
T = 0.07
DIM = 16
BATCH = 16  # test batches fed to `evaluate` (several forward calls)
CASES = {
    "main": dict(counts=(110, 90, 70, 55, 40, 35, 20), n_test=50, seed=0),
    "small": dict(counts=(60, 45, 30, 15), n_test=30, seed=1),
}


def make_case(counts: tuple[int, ...], n_test: int, seed: int) -> dict[str, np.ndarray]:
    """Class-clustered features with per-example scale (so L2 normalisation matters), shuffled."""
    rng = np.random.default_rng(seed)
    n_classes = len(counts)
    means = rng.normal(0.0, 1.0, (n_classes, DIM))

    def draw(labels: np.ndarray) -> np.ndarray:
        x = means[labels] + 3.0 * rng.normal(0.0, 1.0, (len(labels), DIM))
        return (x * rng.uniform(0.5, 3.0, (len(labels), 1))).astype(np.float32)

    train_labels = rng.permutation(np.repeat(np.arange(n_classes), counts))
    test_labels = rng.integers(0, n_classes, n_test)
    return {"train_features": draw(train_labels), "train_labels": train_labels.astype(np.int64),
            "test_features": draw(test_labels), "test_labels": test_labels.astype(np.int64)}


def init_group(rank: int, world_size: int, init_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)


def tie_mask(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """True where the k-th highest score equals the true class's score and is shared beyond the top k."""
    out = np.zeros(len(labels), bool)
    if scores.shape[1] <= k:
        return out
    for i, (row, y) in enumerate(zip(scores, labels)):
        kth = np.sort(row)[::-1][k - 1]
        out[i] = row[y] == kth and np.sum(row >= kth) > k
    return out


def per_example(metric_collection: Any, scores: Any, labels: Any) -> dict[str, np.ndarray]:
    """The reference metric applied to one example at a time: 1.0 / 0.0 per example and metric."""
    out: dict[str, list[bool]] = {}
    for i in range(len(labels)):
        m = metric_collection.clone()
        m.update(preds=scores[i:i + 1], target=labels[i:i + 1])
        for name, value in m.compute().items():
            out.setdefault(name, []).append(bool(value.item() == 1.0))
    return {name: np.array(v) for name, v in out.items()}


def run_dinov2(case: dict[str, np.ndarray], n_classes: int) -> dict[str, Any]:
    """DINOv2's `eval_knn` pieces on the case, in the current (already initialised) process group."""
    import torch
    from dinov2.eval import knn
    from dinov2.eval.metrics import AccuracyAveraging, build_topk_accuracy_metric
    from dinov2.eval.utils import ModelWithNormalize, evaluate

    model = ModelWithNormalize(torch.nn.Identity())
    with torch.inference_mode():
        train_features = model(torch.from_numpy(case["train_features"]))
    train_labels = torch.from_numpy(case["train_labels"])
    metric_collection = build_topk_accuracy_metric(AccuracyAveraging.MEAN_ACCURACY, num_classes=n_classes)
    module = partial(knn.KnnModule, T=T, device="cpu", num_classes=n_classes)
    module_dict = knn.create_module_dict(module=module, n_per_class_list=[-1], n_tries=1, nb_knn=list(KS),
                                         train_features=train_features, train_labels=train_labels)
    postprocessors, metrics = {}, {}
    for n_per_class, knn_module in module_dict.items():
        for t, knn_try in knn_module.items():
            postprocessors.update({(n_per_class, t, k): knn.DictKeysModule([n_per_class, t, k])
                                   for k in knn_try.nb_knn})
            metrics.update({(n_per_class, t, k): metric_collection.clone() for k in knn_try.nb_knn})
    test_x = torch.from_numpy(case["test_features"])
    test_y = torch.from_numpy(case["test_labels"])
    loader = [(test_x[i:i + BATCH], test_y[i:i + BATCH]) for i in range(0, len(test_x), BATCH)]
    _, results = evaluate(torch.nn.Sequential(model, module_dict), loader, postprocessors, metrics, "cpu")

    knn_module = module_dict["full"]["1"]
    with torch.inference_mode():
        feats = model(test_x)
        scores = knn_module(feats)
        sims, neighbor_labels = knn_module.compute_neighbors(feats)
    out: dict[str, Any] = {"accuracy": {k: {name: float(v) for name, v in results[("full", "1", k)].items()}
                                        for k in KS},
                           "neighbor_sims": sims.numpy(), "neighbor_labels": neighbor_labels.numpy()}
    for k in KS:
        out[f"scores_k{k}"] = scores[k].numpy()
        for name, v in per_example(metric_collection, scores[k], test_y).items():
            out[f"{name.replace('-', '')}_k{k}"] = v
    return out


def run_dinov3(case: dict[str, np.ndarray], n_classes: int) -> dict[str, Any]:
    """DINOv3's `eval_knn` pieces on the case, in the current (already initialised) process group."""
    import torch
    from dinov3.eval import knn
    from dinov3.eval.metrics import ClassificationMetricType, build_classification_metric
    from dinov3.eval.utils import ModelWithNormalize, evaluate

    model = ModelWithNormalize(torch.nn.Identity())
    with torch.inference_mode():
        train_features = model(torch.from_numpy(case["train_features"]))
    train_labels = torch.from_numpy(case["train_labels"])
    metric_collection = build_classification_metric(ClassificationMetricType.MEAN_ACCURACY,
                                                    num_classes=n_classes)
    config = knn.TrainConfig(dataset="unused", ks=KS, temperature=T)
    # As eval_knn: k larger than the train set is replaced by the train set's size.
    ks = sorted(set([el if el < len(train_features) else len(train_features) for el in config.ks]))
    knn_module = knn.KnnModule(train_features=train_features, train_labels=train_labels, device="cpu", ks=ks,
                               T=config.temperature, num_classes=n_classes, skip_first_nn=config.skip_first_nn)
    postprocessors = {k: knn.DictKeysModule([k]) for k in ks}
    metrics = {k: metric_collection.clone() for k in ks}
    test_x = torch.from_numpy(case["test_features"])
    test_y = torch.from_numpy(case["test_labels"])
    loader = [(test_x[i:i + BATCH], (torch.arange(i, min(i + BATCH, len(test_x))), test_y[i:i + BATCH]))
              for i in range(0, len(test_x), BATCH)]
    _, results, _ = evaluate(torch.nn.Sequential(model, knn_module), loader, postprocessors, metrics, "cpu")

    with torch.inference_mode():
        feats = model(test_x)
        scores = knn_module(feats)
        sims, neighbor_labels = knn_module.compute_neighbors(feats)
    out: dict[str, Any] = {"ks": ks,
                           "accuracy": {k: {name: float(v) for name, v in results[k].items()} for k in ks},
                           "neighbor_sims": sims.numpy(), "neighbor_labels": neighbor_labels.numpy()}
    for k in ks:
        out[f"scores_k{k}"] = scores[k].numpy()
        for name, v in per_example(metric_collection, scores[k], test_y).items():
            out[f"{name.replace('-', '')}_k{k}"] = v
    return out


def sharded_worker(rank: int, world_size: int, init_file: str, dinov2: str, case: dict[str, np.ndarray],
                   n_classes: int, result_dir: str) -> None:
    """One rank of DINOv2's KnnModule; rank r holds train chunk r and test features r::world_size."""
    sys.path.insert(0, dinov2)
    import torch
    from dinov2.eval import knn
    from dinov2.eval.utils import ModelWithNormalize

    init_group(rank, world_size, init_file)
    model = ModelWithNormalize(torch.nn.Identity())
    with torch.inference_mode():
        train = model(torch.from_numpy(case["train_features"]))
        module = knn.KnnModule(train, torch.from_numpy(case["train_labels"]), list(KS), T, "cpu", n_classes)
        mine = np.arange(rank, len(case["test_features"]), world_size)
        feats = model(torch.from_numpy(case["test_features"][mine]))
        scores = module(feats)
    np.savez(os.path.join(result_dir, f"rank{rank}.npz"), index=mine,
             **{f"scores_k{k}": v.numpy() for k, v in scores.items()})
    torch.distributed.destroy_process_group()


def check_sharded(dinov2: str, case: dict[str, np.ndarray], n_classes: int,
                  single: dict[str, Any]) -> float:
    """Max abs difference of 2-rank DINOv2 scores from the 1-rank ones (asserted tiny, same argmax)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(sharded_worker, args=(2, os.path.join(tmp, "init"), dinov2, case, n_classes, tmp), nprocs=2)
        worst = 0.0
        for rank in range(2):
            got = np.load(os.path.join(tmp, f"rank{rank}.npz"))
            for k in KS:
                ref = single[f"scores_k{k}"][got["index"]]
                assert np.array_equal(got[f"scores_k{k}"].argmax(1), ref.argmax(1)), (rank, k)
                worst = max(worst, float(np.abs(got[f"scores_k{k}"] - ref).max()))
    assert worst < 1e-6, worst
    return worst


def git_head(path: str) -> str:
    return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--dinov2", required=True, help="git work tree of facebookresearch/dinov2")
    parser.add_argument("--dinov3", required=True, help="git work tree of facebookresearch/dinov3")
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.dinov2))
    sys.path.insert(0, os.path.abspath(args.dinov3))

    import torch
    import torchmetrics

    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"ks": list(KS), "T": T, "dim": DIM, "test_batch": BATCH, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        init_group(0, 1, os.path.join(tmp, "init"))
        for name, spec in CASES.items():
            case = make_case(**spec)
            n_classes = len(spec["counts"])
            arrays.update({f"{name}_{key}": value for key, value in case.items()})
            impls = {"dinov3": run_dinov3(case, n_classes)}
            if name == "main":
                impls["dinov2"] = run_dinov2(case, n_classes)
            entry: dict[str, Any] = dict(spec, n_classes=n_classes, n_train=int(sum(spec["counts"])),
                                         train_features_seed=f"np.random.default_rng({spec['seed']})")
            for impl, res in impls.items():
                ks = res.get("ks", list(KS))
                entry[f"{impl}_ks"] = ks
                entry[f"{impl}_accuracy"] = {str(k): v for k, v in res["accuracy"].items()}
                arrays[f"{impl}_{name}_neighbor_sims"] = res["neighbor_sims"]
                arrays[f"{impl}_{name}_neighbor_labels"] = res["neighbor_labels"]
                for k in ks:
                    arrays[f"{impl}_{name}_scores_k{k}"] = res[f"scores_k{k}"]
                    arrays[f"{impl}_{name}_top1_k{k}"] = res[f"top1_k{k}"]
                    # The per-example verdicts reproduce the reference's accuracy.
                    assert np.isclose(res[f"top1_k{k}"].mean(), res["accuracy"][k]["top-1"]), (impl, k)
                    if f"top5_k{k}" in res:
                        arrays[f"{impl}_{name}_top5_k{k}"] = res[f"top5_k{k}"]
                        arrays[f"{impl}_{name}_top5_tie_k{k}"] = tie_mask(res[f"scores_k{k}"],
                                                                          case["test_labels"], 5)
                        assert np.isclose(res[f"top5_k{k}"].mean(), res["accuracy"][k]["top-5"]), (impl, k)
                entry[f"{impl}_top5_tie_counts"] = {
                    str(k): int(arrays[f"{impl}_{name}_top5_tie_k{k}"].sum())
                    for k in ks if f"{impl}_{name}_top5_tie_k{k}" in arrays}
            if name == "main":
                # DINOv2 and DINOv3 compute the same thing when N >= max(ks).
                for k in KS:
                    a, b = impls["dinov2"][f"scores_k{k}"], impls["dinov3"][f"scores_k{k}"]
                    assert np.array_equal(a, b), k
                    assert impls["dinov2"]["accuracy"][k] == impls["dinov3"]["accuracy"][k], k
                entry["dinov2_sharded_2_ranks_max_abs_diff"] = check_sharded(
                    os.path.abspath(args.dinov2), case, n_classes, impls["dinov2"])
            meta["cases"][name] = entry
            print(name, {impl: res["accuracy"] for impl, res in impls.items()})
        torch.distributed.destroy_process_group()

    meta.update(dinov2_commit=git_head(args.dinov2), dinov3_commit=git_head(args.dinov3),
                torch=torch.__version__, torchmetrics=torchmetrics.__version__, numpy=np.__version__,
                arrays={k: [list(v.shape), str(v.dtype)] for k, v in sorted(arrays.items())})
    np.savez_compressed(os.path.join(args.out, "knn_reference.npz"), **arrays)
    with open(os.path.join(args.out, "knn_reference.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
