"""k-NN classification on frozen features: DINOv2 / DINOv3's protocol (`dinov2/eval/knn.py`,
`dinov3/eval/knn.py`), `harness.eval.knn`. The train split is the memory bank, the test split is
classified by its k nearest bank examples (cosine similarity of L2-normalised features, votes
`softmax(sim / 0.07)`), for k in 10, 20, 100, 200. Metrics `knn/<dataset>/k<k>/top1` and `.../top5` (with at
least 5 classes, as DINOv3), %. Features come from the cache shared with `linear_probe` (the same pp), so
its ImageNet validation pass is reused.
"""

from __future__ import annotations

import dataclasses
import time

from harness import api, data
from harness.api import Metric, RunContext, Task
from harness.data.pp import eval_pp, side_before_crop
from harness.eval import knn
from harness.eval.samples import ranked


@dataclasses.dataclass
class KnnConfig:
    datasets: tuple[str, ...] = ("imagenet2012",)
    ks: tuple[int, ...] = knn.DEFAULT_KS  # dinov2/eval/knn.py `nb_knn`
    temperature: float = knn.TEMPERATURE  # dinov2/eval/knn.py `temperature`
    # DINO's pooled image feature is the final-norm CLS token; a big_vision ViT's is `pre_logits`.
    representation: str = "pre_logits"
    # Empty: linear_probe's big_vision ImageNet eval pp, resize_small(256)|central_crop(224) at the encoder's
    # resolution (DINOv2 resizes bicubically; every task here uses big_vision's bilinear pp).
    pp: str = ""
    batch_size: int = 64
    max_train_examples: int = 0  # 0 = the whole split
    max_test_examples: int = 0

    def validate(self) -> None:
        for ds in self.datasets:
            for role in ("train", "test"):
                data.get_info(ds).split(role)
        api.check_unique(self, "datasets")
        api.check_range(self, "ks", low=1)
        api.check_unique(self, "ks")
        api.check_range(self, "temperature", low=0, low_open=True)
        api.check_choice(self, "representation", ("pre_logits", "logits"))
        api.check_pp(self, "pp")
        api.check_range(self, "batch_size", low=1)
        api.check_range(self, "max_train_examples", low=0)
        api.check_range(self, "max_test_examples", low=0)


class Knn(Task):
    name = "knn"
    description = "k-NN on frozen features, k = 10/20/100/200 (DINOv2 / DINOv3 protocol)"
    report_title = "k-NN on frozen features, accuracy % (DINOv2 / DINOv3 protocol; not in the paper)"
    Config = KnnConfig
    neutral_settings = ("datasets", "ks", "batch_size")  # each k is its own metric
    naflex_inputs = True  # images only through ctx.extract
    presets = {"proxy": dict(datasets=("proxy_scenes", "proxy_digits"), batch_size=50)}

    def metrics(self, config: KnnConfig) -> list[Metric]:
        out = []
        for ds in config.datasets:
            classes = data.get_info(ds).num_classes  # None: known from the data only, so top-5 may be absent
            for k in config.ks:
                out.append(Metric(self.metric_name(ds, f"k{k}", "top1"), True, "%", f"{k}-NN top-1 on {ds}"))
                if classes is None or classes >= 5:
                    out.append(Metric(self.metric_name(ds, f"k{k}", "top5"), True, "%", f"{k}-NN top-5 on {ds}",
                                      optional=classes is None))
        return out

    def run(self, encoder, ctx: RunContext, config: KnnConfig) -> dict[str, float]:
        pp = config.pp or eval_pp(encoder.res, side_before_crop(encoder.res), resize_op="resize_small")
        metrics = {}
        for ds in config.datasets:
            info = data.get_info(ds)
            feats = {role: ctx.extract(encoder, ds, info.split(role), pp=pp, keys=(info.label_key,),
                                       representations=(config.representation,), batch_size=config.batch_size,
                                       num_examples=cap, role=f"knn_{role}")
                     for role, cap in (("train", config.max_train_examples), ("test", config.max_test_examples))}
            t0 = time.perf_counter()
            res = knn.evaluate(feats["train"][config.representation], feats["train"][info.label_key],
                               feats["test"][config.representation], feats["test"][info.label_key], ks=config.ks,
                               temperature=config.temperature,
                               num_classes=info.num_classes or data.num_classes(ds, ctx.data_dir))
            ctx.add_time("knn_seconds", time.perf_counter() - t0)
            ctx.info.setdefault("k_used", {})[ds] = {str(k): used for k, used in res["k"].items()}
            heads = {f"k{k}": ranked(*res["ranked"][k]) for k in config.ks}  # per k: the top-5 of the votes
            samples = ctx.note_samples(ds, info.split("test"), index=feats["test"]["index"],
                                       targets=feats["test"][info.label_key],
                                       predictions=[dict(zip(heads, p)) for p in zip(*heads.values())])
            for top in ("top1", "top5"):
                for k, correct in res[top].items():
                    name = self.metric_name(ds, f"k{k}", top)
                    metrics[name] = float(correct.mean() * 100)
                    ctx.note_per_example(name, correct * 100.0)
                    samples.score(name, "top1" if top == "top1" else "topk", correct * 100.0, field=f"k{k}",
                                  **({} if top == "top1" else {"k": 5}))
        return metrics
