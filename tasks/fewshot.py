"""Few-shot closed-form probes (the paper's Table 3): big_vision's `fewshot_lsr` protocol.

For every dataset, `pre_logits` features of the few-shot pool and of the test split are extracted once
(feature cache); then for each seed ONE sampling of per-class permutations serves every shot count, and a
ridge regression (l2 = 2^10) onto {-1, +1} one-hot targets is solved in closed form
(`harness.eval.fewshot`). Metrics: `fewshot/<dataset>/<k>shot` (mean over seeds, %), `.../std` and
`.../seed-<s>`.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from harness import api, data
from harness.api import Metric, RunContext, Task
from harness.data.pp import eval_pp, side_before_crop
from harness.errors import HarnessError
from harness.eval import fewshot
from harness.eval.samples import ranked


@dataclasses.dataclass
class FewShotConfig:
    datasets: tuple[str, ...] = data.FEWSHOT_DATASETS
    shots: tuple[int, ...] = (1, 5, 10, 25)
    seeds: tuple[int, ...] = (0, 1, 2)
    l2_reg: float = 2.0**10
    # Empty: `default_pp`, big_vision's few-shot `resize(256)|central_crop(224)` at the encoder's resolution.
    pp: str = ""
    representation: str = "pre_logits"
    batch_size: int = 64
    # Caps for quick runs (0 = the whole split); the record states the counts used.
    max_train_examples: int = 0
    max_test_examples: int = 0
    solve_dtype: str = "float64"

    def validate(self) -> None:
        """Rules checked before any data is read (the generic ones, empty lists and NaN, are in harness.api)."""
        for ds in self.datasets:  # only the registry: an unknown name fails here, not after an extraction
            for role in ("fewshot_train", "fewshot_test"):
                data.get_info(ds).split(role)
        api.check_unique(self, "datasets")
        api.check_range(self, "shots", low=1)
        api.check_unique(self, "shots")
        api.check_range(self, "seeds", low=0)  # numpy's generators take no negative seed
        api.check_unique(self, "seeds")
        api.check_range(self, "l2_reg", low=0, low_open=True)  # 0 leaves a singular Gram matrix
        api.check_range(self, "batch_size", low=1)
        api.check_range(self, "max_train_examples", low=0)
        api.check_range(self, "max_test_examples", low=0)
        api.check_choice(self, "solve_dtype", ("float64", "float32"))
        api.check_choice(self, "representation", POOLED)
        api.check_pp(self, "pp")

    def check_pool(self, dataset: str, pool_size: int | None = None, labels=None) -> None:
        """A shot count no class can fill is an error, not a metric named `<k>shot` computed on the whole
        pool: with the pool's size alone (metadata, before any extraction) and again with its labels (read
        with the pool's features, before the test split is extracted). A class with fewer than k examples
        but another with k is the reference's k-shot (big_vision takes what a class has)."""
        largest = None
        if labels is not None:
            counts = np.bincount(np.asarray(labels, np.int64))
            largest = int(counts.max()) if counts.size else 0
        elif pool_size is not None:
            largest = int(pool_size)
        too_many = [k for k in self.shots if largest is not None and k > largest]
        if too_many:
            what = "examples in all" if labels is None else "examples in its largest class"
            raise HarnessError(f"fewshot: setting shots={api.shown(self.shots)}: {api.shown(too_many)} shot(s) "
                               f"cannot be drawn from the few-shot pool of {dataset!r}, which has {largest} {what}; "
                               f"pass shots of at most {largest}")


# Pooled (one vector per image) encoder outputs a ridge probe can read.
POOLED = ("pre_logits", "logits")


def default_pp(res: int) -> str:
    # big_vision configs/common_fewshot.py::get_fewshot_lsr: resize(256)|central_crop(224) (train and eval).
    return eval_pp(res, side_before_crop(res))


class FewShot(Task):
    name = "fewshot"
    description = "closed-form ridge probes, 1/5/10/25 shots x 3 seeds (paper Table 3)"
    report_title = "Few-shot closed-form probes, accuracy % (paper Table 3)"
    report_order = (3, 0)  # columns: shot by shot, each in Table 3's dataset order (harness.data)
    naflex_inputs = True  # images only through ctx.extract
    Config = FewShotConfig
    neutral_settings = ("datasets", "shots", "batch_size")  # k-shot sets are nested: shots move no number
    presets = {
        "proxy": dict(datasets=("proxy_scenes", "proxy_digits"), shots=(1, 5, 10, 25), batch_size=50),
        "imagenet": dict(datasets=("imagenet2012",)),
        # proxy_scenes' test config: its pool has 2 images per class, so only 1 and 2 shots can be drawn.
        "tiny": dict(datasets=("proxy_scenes/tiny",), shots=(1, 2), batch_size=16),
    }

    def metrics(self, config: FewShotConfig) -> list[Metric]:
        out = []
        for ds in config.datasets:
            for k in config.shots:
                base = self.metric_name(ds, f"{k}shot")
                out.append(Metric(base, True, "%", f"{k}-shot accuracy on {ds}, mean over seeds"))
                out.append(Metric(f"{base}/std", False, "%", "std over seeds"))
                out += [Metric(f"{base}/seed-{s}", True, "%") for s in config.seeds]
        return out

    def run(self, encoder, ctx: RunContext, config: FewShotConfig) -> dict[str, float]:
        pp = config.pp or default_pp(encoder.res)
        metrics: dict[str, float] = {}
        for ds in config.datasets:
            info = data.get_info(ds)
            splits = {role: info.split(f"fewshot_{role}") for role in ("train", "test")}
            pool = data.num_examples(ds, splits["train"], ctx.data_dir)  # metadata: no example is read
            config.check_pool(ds, pool_size=min(pool, config.max_train_examples or pool))
            feats = {}
            for role, split in splits.items():
                if role == "test":  # the pool's labels are known now: check before the test extraction
                    config.check_pool(ds, labels=feats["train"][info.label_key])
                cap = config.max_train_examples if role == "train" else config.max_test_examples
                feats[role] = ctx.extract(encoder, ds, split, pp=pp, representations=(config.representation,),
                                          keys=(info.label_key,), batch_size=config.batch_size, num_examples=cap,
                                          role=f"fewshot_{role}")
            num_classes = info.num_classes or data.num_classes(ds, ctx.data_dir)
            t0 = time.perf_counter()
            top: dict = {}
            labels = np.asarray(feats["test"][info.label_key])
            acc = fewshot.sweep(np.asarray(feats["train"][config.representation]),
                                np.asarray(feats["train"][info.label_key]),
                                feats["test"][config.representation], labels,
                                shots=config.shots, seeds=config.seeds, l2_reg=config.l2_reg,
                                num_classes=num_classes, dtype=config.solve_dtype, top=top)
            ctx.add_time("probe_seconds", time.perf_counter() - t0)
            # Samples: per test image, every (shots, seed) probe's top-5.
            heads = {f"{k}shot/seed-{s}": ranked(*top[(k, s)]) for k in config.shots for s in config.seeds}
            samples = ctx.note_samples(ds, splits["test"], index=feats["test"]["index"], targets=labels,
                                       predictions=[dict(zip(heads, p)) for p in zip(*heads.values())])
            for k in config.shots:
                vals = np.array([acc[(k, s)] for s in config.seeds]) * 100
                base = self.metric_name(ds, f"{k}shot")
                metrics[base] = float(vals.mean())
                metrics[base + "/std"] = float(vals.std())
                for s, v in zip(config.seeds, vals):
                    metrics[f"{base}/seed-{s}"] = float(v)
                hits = {s: (top[(k, s)][0][:, 0] == labels) * 100.0 for s in config.seeds}
                for s in config.seeds:
                    samples.score(f"{base}/seed-{s}", "top1", hits[s], field=f"{k}shot/seed-{s}")
                seeds = [f"{base}/seed-{s}" for s in config.seeds]
                samples.score(base, "mean_of", np.mean([hits[s] for s in config.seeds], axis=0), metrics=seeds)
                samples.score(base + "/std", "std_of", metrics=seeds)
        return metrics
