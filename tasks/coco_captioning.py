"""COCO captioning through a small autoregressive decoder on the encoder's patch tokens (paper Table 4).

A 2-layer decoder (`harness.models.decoder`) is trained on the Karpathy train split (train + restval; one of
the image's 5 captions per visit) over the frozen encoder's `encoded` tokens (feature cache), then
captions the eval split (greedy or beam search). Scores are pycocoevalcap's on PTB-tokenised text:
CIDEr (CIDEr-D, raw scale: the paper prints x100), BLEU-4 and ROUGE-L, plus the decoder's
log-perplexity on the eval captions (big_vision's cappa perplexity: nats per caption, summed over its
tokens, the mean over an image's captions, then over images). CIDEr's IDF comes from the references of
the evaluated set, so the record names that set (`info.cider_computed_on`); a capped run is not comparable
with a full one.

Metric names: `coco_captioning/<metric>` on COCO, `coco_captioning/<dataset>/<metric>` on another
dataset (e.g. the proxy), so a proxy number never lands in the paper's COCO column.
Predictions: `[{"image_id": int, "caption": str}]` (COCO results format) beside the record.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness import data
from harness.api import Metric, RunContext, Task
from harness.data.tokenizer import as_text
from harness.errors import HarnessError
from harness.eval import metrics
from harness.files import write_json_atomic
from harness.train.decoder import DecoderSettings, TextTable, train_and_decode


@dataclasses.dataclass
class CocoCaptioningConfig(DecoderSettings):
    dataset: str = "coco_captions"
    # Roles of the dataset's registry entry (or TFDS split strings): Karpathy train -> test.
    train_split: str = "train"
    eval_split: str = "test"
    text_key: str = ""  # empty: the registry's (`captions/text` for COCO)
    id_key: str = ""  # empty: the registry's `image_id_key` (`image/id` for COCO, else `image_id`)
    tokenizer: str = ""
    target_len: int = 32



def _split(info: data.DatasetInfo, role_or_split: str) -> str:
    return info.splits.get(role_or_split, role_or_split)


def metric_base(dataset: str) -> str:
    return "coco_captioning" if data.get_info(dataset).name == "coco_captions" else f"coco_captioning/{dataset}"


class CocoCaptioning(Task):
    name = "coco_captioning"
    # 2: big_vision's AdaFactor, per-sequence loss, log_perplexity per sequence (issue 14).
    version = "2"
    description = "captioning with a 2-layer decoder on frozen patch tokens: CIDEr, BLEU-4, ROUGE-L (Table 4)"
    report_title = "COCO captioning (paper Table 4)"
    report_order = (4, 2)
    report_columns = ("cider", "bleu4", "rouge_l", "log_perplexity")
    Config = CocoCaptioningConfig
    presets = {
        "proxy": dict(dataset="proxy_scenes", train_split="train", eval_split="test", tokenizer="proxy",
                      decoder_width=96, decoder_mlp_dim=384, decoder_heads=4, optimizer="adam", lr=1e-3,
                      total_steps=1500, batch_size=32, target_len=24, eval_batch_size=250,
                      feature_dtype="float32"),
    }

    def metrics(self, config: CocoCaptioningConfig) -> list[Metric]:
        base = metric_base(config.dataset)
        return [
            Metric(f"{base}/cider", True, "raw", "CIDEr-D (pycocoevalcap, PTB-tokenised); papers print x100"),
            Metric(f"{base}/bleu4", True, "raw", "corpus BLEU-4 (pycocoevalcap)"),
            Metric(f"{base}/rouge_l", True, "raw", "ROUGE-L (pycocoevalcap)"),
            Metric(f"{base}/log_perplexity", False, "nats",
                   "decoder NLL per caption (summed over its tokens) on the eval split, mean over images"),
        ]

    def run(self, encoder, ctx: RunContext, config: CocoCaptioningConfig) -> dict[str, float]:
        info = data.get_info(config.dataset)
        text_key = config.text_key or info.text_key
        if not text_key:
            raise HarnessError(f"dataset {config.dataset!r} has no caption feature in the registry; "
                               "pass --set text_key=<feature>")
        id_key = config.id_key or info.image_id_key
        train_split, eval_split = _split(info, config.train_split), _split(info, config.eval_split)

        def read_text(batch: dict) -> TextTable:
            for key in (text_key, id_key):
                if key not in batch:
                    raise HarnessError(f"dataset {config.dataset!r} has no feature {key!r}; it has "
                                       f"{', '.join(k for k in batch if not k.startswith('_'))}")
            captions = np.asarray(batch[text_key])
            captions = captions[:, None] if captions.ndim == 1 else captions
            refs = [[as_text(c) for c in row if as_text(c).strip()] for row in captions]
            keep = [i for i, r in enumerate(refs) if r]  # an image without captions cannot be scored
            return TextTable(rows=np.array(keep, np.int64), ids=[int(batch[id_key][i]) for i in keep],
                             prefixes=[""] * len(keep), targets=[refs[i] for i in keep])

        out = train_and_decode(encoder, ctx, config, dataset=config.dataset, train_split=train_split,
                               eval_split=eval_split, text_keys=(text_key, id_key), read_text=read_text,
                               desc=self.name)
        table: TextTable = out["eval_table"]
        references = {i: refs for i, refs in zip(table.ids, table.targets)}
        if len(references) != len(table.ids):
            raise HarnessError(f"dataset {config.dataset!r}: image ids in {id_key!r} are not unique in "
                               f"{eval_split}; pass --set id_key=<a unique id feature>")
        predictions = out["predictions"]
        scores = metrics.caption_scores(references, predictions)

        base = metric_base(config.dataset)
        pred_path = ctx.out_dir / f"captions_{info.name}_{eval_split.replace('/', '_')}.json"
        write_json_atomic(pred_path, [{"image_id": int(i), "caption": predictions[i]} for i in table.ids])
        ctx.note_artifact("predictions", pred_path)
        ctx.note_per_example(f"{base}/cider", scores["cider_per_example"])
        ctx.note_per_example(f"{base}/rouge_l", scores["rouge_l_per_example"])
        nll = out["log_perplexity_per_example"]
        samples = ctx.note_samples(config.dataset, eval_split, ids=table.ids, index=table.rows, targets=table.targets,
                                   predictions=[{"text": predictions[i]} for i in table.ids])
        samples.score(f"{base}/cider", "caption", scores["cider_per_example"], which="cider")
        samples.score(f"{base}/bleu4", "caption", which="bleu4")  # corpus-level: no per-example score
        samples.score(f"{base}/rouge_l", "caption", scores["rouge_l_per_example"], which="rouge_l")
        samples.score(f"{base}/log_perplexity", "mean", [None if np.isnan(v) else v for v in nll])
        ctx.info["cider_computed_on"] = {
            "dataset": config.dataset, "split": eval_split, "num_images": scores["num_examples"],
            "note": "CIDEr-D IDF from this set's references; not comparable across sets or caps"}
        ctx.info["decoder"] = {k: out[k] for k in ("steps", "train_loss_first", "train_loss_last",
                                                   "num_train_text_examples", "num_eval_text_examples")}
        ctx.info["examples"] = [{"image_id": int(i), "caption": predictions[i], "references": references[i][:2]}
                                for i in table.ids[:3]]
        ctx.timings.update(out["timings"])
        return {f"{base}/cider": scores["cider"], f"{base}/bleu4": scores["bleu4"],
                f"{base}/rouge_l": scores["rouge_l"], f"{base}/log_perplexity": out["log_perplexity"]}
