"""Few-shot closed-form probes (the paper's Table 3): big_vision's `fewshot_lsr` protocol.

For every dataset, `pre_logits` features of the few-shot pool and of the test split are extracted once
(feature cache); then for each seed ONE sampling of per-class permutations serves every shot count, and a
ridge regression (l2 = 2^10) onto {-1, +1} one-hot targets is solved in closed form
(`harness.fewshot`). Metrics: `fewshot/<dataset>/<k>shot` (mean over seeds, %), `.../std` and
`.../seed-<s>`.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from harness import data, fewshot
from harness.api import Metric, RunContext, Task
from harness.features import extract


@dataclasses.dataclass
class FewShotConfig:
    datasets: tuple[str, ...] = data.FEWSHOT_DATASETS
    shots: tuple[int, ...] = (1, 5, 10, 25)
    seeds: tuple[int, ...] = (0, 1, 2)
    l2_reg: float = 2.0**10
    # Empty: big_vision's `resize(256)|central_crop(224)` scaled to the encoder's resolution.
    pp: str = ""
    representation: str = "pre_logits"
    batch_size: int = 64
    # Caps for quick runs (0 = the whole split); the record states the counts used.
    max_train_examples: int = 0
    max_test_examples: int = 0
    solve_dtype: str = "float64"


def default_pp(res: int) -> str:
    return f"decode|resize({round(res * 256 / 224)})|central_crop({res})|value_range(-1,1)"


class FewShot(Task):
    name = "fewshot"
    description = "closed-form ridge probes, 1/5/10/25 shots x 3 seeds (paper Table 3)"
    Config = FewShotConfig
    neutral_settings = ("datasets", "shots", "batch_size")  # k-shot sets are nested: shots move no number
    presets = {
        "proxy": dict(datasets=("proxy_scenes", "proxy_digits"), shots=(1, 5, 10, 25), batch_size=50),
        "imagenet": dict(datasets=("imagenet2012",)),
    }

    def metrics(self, config: FewShotConfig) -> list[Metric]:
        out = []
        for ds in config.datasets:
            for k in config.shots:
                base = f"fewshot/{ds}/{k}shot"
                out.append(Metric(base, True, "%", f"{k}-shot accuracy on {ds}, mean over seeds"))
                out.append(Metric(base + "/std", False, "%", "std over seeds"))
                out += [Metric(f"{base}/seed-{s}", True, "%") for s in config.seeds]
        return out

    def run(self, encoder, ctx: RunContext, config: FewShotConfig) -> dict[str, float]:
        pp = config.pp or default_pp(encoder.res)
        metrics: dict[str, float] = {}
        stats: dict = {}
        probe_seconds = 0.0
        for ds in config.datasets:
            info = data.get_info(ds)
            splits = {role: info.split(f"fewshot_{role}") for role in ("train", "test")}
            feats = {}
            for role, split in splits.items():
                cap = config.max_train_examples if role == "train" else config.max_test_examples
                feats[role] = extract(encoder, ds, split, pp=pp, cache_dir=ctx.cache_dir, data_dir=ctx.data_dir,
                                      representations=(config.representation,), keys=(info.label_key,),
                                      batch_size=config.batch_size, num_examples=cap or None,
                                      progress=ctx.progress, stats=stats)
                ctx.note_dataset(ds, split, len(feats[role]["index"]), pp, role=f"fewshot_{role}")
            num_classes = info.num_classes or data.num_classes(ds, ctx.data_dir)
            t0 = time.perf_counter()
            acc = fewshot.sweep(np.asarray(feats["train"][config.representation]),
                                np.asarray(feats["train"][info.label_key]),
                                feats["test"][config.representation], np.asarray(feats["test"][info.label_key]),
                                shots=config.shots, seeds=config.seeds, l2_reg=config.l2_reg,
                                num_classes=num_classes, dtype=config.solve_dtype)
            probe_seconds += time.perf_counter() - t0
            for k in config.shots:
                vals = np.array([acc[(k, s)] for s in config.seeds]) * 100
                base = f"fewshot/{ds}/{k}shot"
                metrics[base] = float(vals.mean())
                metrics[base + "/std"] = float(vals.std())
                for s, v in zip(config.seeds, vals):
                    metrics[f"{base}/seed-{s}"] = float(v)
        ctx.info["timings"] = {"probe_seconds": probe_seconds,
                               "extract_seconds": sum(e["seconds"] for e in stats.get("extract", []))}
        ctx.info["feature_extraction"] = stats.get("extract", [])
        return metrics
