"""Visual question answering through a small autoregressive decoder on the patch tokens (paper Table 4).

Per dataset, a 2-layer decoder (`harness.models.decoder`) reads the frozen encoder's `encoded` tokens and is
trained to generate the answer after the question, which it gets as a prefix (loss only on the answer
tokens); then it answers the eval split's questions. Scoring, each as its official evaluation does:
- VQAv2 (and the proxy's VQA questions, same format): the official VQAv2 accuracy (10 annotators,
  `harness.eval.metrics.vqa_scores`), overall and per answer type;
- GQA (`testdev_balanced`): exact string match of prediction and answer, nothing normalised (GQA's
  eval.py `predicted == gold`; big_vision's `proj.paligemma.transfers.vqa` evaluator without `to_lower`,
  `configs/proj/paligemma/transfers/gqa.py`);
- OCR-VQA (`test`): exact match after lower-casing both (the same evaluator with `to_lower=True`,
  `configs/proj/paligemma/transfers/ocrvqa.py`).
A dataset that is not prepared is skipped with one warning line naming its preparation command (all of them
up front); with none of them prepared the run stops with one error line.
For VQAv2-style data the decoder trains on the 10 annotators' answers, each question going through all
of them, one per visit, in a fresh random order per cycle (big_vision's VQAv2 transfer,
`configs/proj/paligemma/transfers/vqav2.py`: `choice_no_replacement(inkey="answers")`); GQA / OCR-VQA
on their one answer (`copy(inkey="answer", outkey="suffix")` in their transfers). Log-perplexity (nats per
answer, the mean over a question's annotator answers) is reported beside the accuracy.

Metric names: `vqa/<dataset>/accuracy` (%), `.../accuracy/<answer type>`, `.../log_perplexity`.
Predictions are exported in each dataset's results format: VQAv2's `[{"question_id": int, "answer": str}]`,
GQA's `[{"questionId": str, "prediction": str}]` (what its eval.py reads), OCR-VQA as VQAv2's with its
string question ids.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from harness import api, data
from harness.api import Metric, RunContext, Task
from harness.data.tokenizer import as_text
from harness.errors import HarnessError
from harness.eval import metrics
from harness.files import write_json_atomic
from harness.train.decoder import DecoderSettings, TextTable, train_and_decode

log = logging.getLogger("harness")


ANSWER_TYPE_NAMES = {"yes/no": "yes_no", "number": "number", "other": "other"}
# How a single-answer dataset's official evaluation compares the prediction with the answer
# (`harness.eval.metrics.exact_match_per_example`): GQA's eval.py compares the strings as they are
# (big_vision's vqa evaluator, to_lower=False in transfers/gqa.py); big_vision lower-cases both for OCR-VQA
# (transfers/ocrvqa.py: to_lower=True).
EXACT_MATCH = {"gqa": "exact", "ocrvqa": "lower"}
# Image pp where big_vision's transfer differs from the decoder's `decode|resize(res)|value_range(-1,1)`:
# OCR-VQA's covers are resized with antialiasing (transfers/ocrvqa.py: `resize({res}, antialias=True)`).
DEFAULT_PP = {"ocrvqa": "decode|resize({res}, antialias=True)|value_range(-1, 1)"}
# The keys of a results file where the dataset's evaluator reads others than VQAv2's
# ("question_id", "answer"): GQA's eval.py reads `p["questionId"]`, `p["prediction"]`.
RESULTS_KEYS = {"gqa": ("questionId", "prediction")}


@dataclasses.dataclass
class VQAConfig(DecoderSettings):
    datasets: tuple[str, ...] = ("vqav2", "gqa", "ocrvqa")
    # Empty: each dataset's own (its registry roles "train" and `vqa.eval_role`); otherwise TFDS split
    # strings for every dataset.
    train_split: str = ""
    eval_split: str = ""
    prefix_len: int = 32
    target_len: int = 8

    def validate(self) -> None:
        """Rules checked before any data is read (empty lists and NaN: harness.api)."""
        super().validate()
        api.check_range(self, "prefix_len", low=1)  # the question is the prefix
        api.check_unique(self, "datasets")
        for ds in self.datasets:
            features_of(ds)  # the registry only: a dataset without a known question/answer layout fails now


def features_of(dataset: str) -> data.VqaFeatures:
    """The registry's question / answer layout of `dataset` (a config like "proxy_scenes/tiny" inherits it)."""
    features = data.get_info(dataset).vqa
    if features is None:
        raise HarnessError(f"vqa: no question/answer layout known for dataset {dataset!r}; known: "
                           f"{', '.join(name for name, info in data.DATASETS.items() if info.vqa)}")
    return features


def _generated(dataset: str) -> bool:
    """A proxy the pipeline generates on first use (never skipped as unprepared)."""
    return data.base_name(dataset) in data.GENERATED


def _metric_base(dataset: str) -> str:
    features_of(dataset)
    suffix = dataset[len(dataset.split("/")[0]):] if "/" in dataset else ""  # "proxy_scenes/tiny"
    return f"vqa/{data.base_name(dataset)}{suffix}"


def _exact_match(dataset: str) -> str:
    """The `match` rule of a single-answer dataset; "vqa" (VQA-normalised) for one with no official rule."""
    return EXACT_MATCH.get(data.base_name(dataset), "vqa")


def _read_text(spec: data.VqaFeatures, dataset: str):
    def read(batch: dict) -> TextTable:
        missing = [k for k in spec.keys if k not in batch]
        if missing:
            raise HarnessError(f"dataset {dataset!r} has no feature {missing[0]!r}; it has "
                               f"{', '.join(k for k in batch if not k.startswith('_'))}")
        q = np.asarray(batch[spec.question])
        per_image = q.ndim == 2
        rows, ids, prefixes, targets, extra = [], [], [], [], []
        for r in range(len(q)):
            for j in (range(q.shape[1]) if per_image else [None]):
                def get(key):
                    v = np.asarray(batch[key])[r]
                    return v if j is None else v[j]
                question = as_text(get(spec.question))
                if not question:
                    continue  # padding of a shorter question list
                # b"" entries are batch padding of shorter answer lists (test splits have none).
                item = {"answers": [as_text(a) for a in get(spec.answers) if a] if spec.answers else None,
                        "answer": as_text(get(spec.answer))}
                if spec.answer_type:
                    item["answer_type"] = as_text(get(spec.answer_type))
                rows.append(r)
                qid = get(spec.question_id)  # VQAv2's are ints; GQA's and OCR-VQA's are strings
                ids.append(as_text(qid) if isinstance(qid, (bytes, str)) else int(qid))
                prefixes.append(question)
                # big_vision's VQAv2 transfer trains on the annotators' answers as written, not the
                # most common one (`multiple_choice_answer`).
                if spec.answers:
                    targets.append(list(item["answers"]))
                else:
                    targets.append([item["answer"]] if item["answer"] else [])
                extra.append(item)
        return TextTable(rows=np.array(rows, np.int64), ids=ids, prefixes=prefixes, targets=targets, extra=extra)

    return read


class VQA(Task):
    name = "vqa"
    # 2: big_vision's AdaFactor, per-sequence loss, log_perplexity per sequence, VQAv2 trained on every
    # annotator answer (issue 14).
    version = "2"
    description = "VQA with a 2-layer decoder on frozen patch tokens: VQAv2 accuracy, GQA, OCR-VQA (Table 4)"
    report_title = "VQA accuracy % (paper Table 4)"
    report_order = (4, 1)
    report_columns = ("accuracy", "yes_no", "number", "other", "log_perplexity")
    Config = VQAConfig
    neutral_settings = ("datasets",)  # one decoder per dataset
    presets = {
        "proxy": dict(datasets=("proxy_scenes",), tokenizer="proxy", decoder_width=96, decoder_mlp_dim=384,
                      decoder_heads=4, optimizer="adam", lr=1e-3, total_steps=1500, batch_size=32,
                      prefix_len=12, target_len=4, eval_batch_size=500, feature_dtype="float32"),
    }

    def metrics(self, config: VQAConfig) -> list[Metric]:
        out = []
        for ds in config.datasets:
            base = _metric_base(ds)
            # A dataset that is not prepared is skipped (run() says so), so its metrics may be missing.
            opt = not _generated(ds)
            if features_of(ds).answers:
                out.append(Metric(f"{base}/accuracy", True, "%", f"official VQAv2 accuracy on {ds}", opt))
                out += [Metric(f"{base}/accuracy/{n}", True, "%", f"VQAv2 accuracy, answer type {t}", opt)
                        for t, n in ANSWER_TYPE_NAMES.items()]
            else:
                how = {"exact": "exact match", "lower": "exact match, lower-cased",
                       "vqa": "exact match, VQA-normalised"}[_exact_match(ds)]
                out.append(Metric(f"{base}/accuracy", True, "%", f"{how} on {ds}", opt))
            out.append(Metric(f"{base}/log_perplexity", False, "nats",
                              "decoder NLL per answer (summed over its tokens), mean over questions", opt))
        return out

    def run(self, encoder, ctx: RunContext, config: VQAConfig) -> dict[str, float]:
        # At least one dataset must be there: with none, one error line (the first's preparation), and no
        # warnings about the others first.
        if not any(_generated(ds) or data.is_prepared(ds, ctx.data_dir) for ds in config.datasets):
            data.require_prepared(config.datasets[0], ctx.data_dir)  # raises with the preparation command
        skipped = [ds for ds in config.datasets if data.skip_unprepared(ds, ctx.data_dir, self.name)]
        ctx.info["skipped_datasets"] = skipped
        results: dict[str, float] = {}
        for ds in config.datasets:
            if ds not in skipped:
                results.update(self._run_one(encoder, ctx, config, ds, features_of(ds)))
        return results

    def _run_one(self, encoder, ctx: RunContext, config: VQAConfig, ds: str,
                 spec: data.VqaFeatures) -> dict[str, float]:
        info = data.get_info(ds)
        if not config.pp and data.base_name(ds) in DEFAULT_PP:
            config = dataclasses.replace(config, pp=DEFAULT_PP[data.base_name(ds)].format(res=encoder.res))
        train_split = config.train_split or info.split("train")
        eval_split = config.eval_split or info.split(spec.eval_role)
        out = train_and_decode(encoder, ctx, config, dataset=ds, train_split=train_split, eval_split=eval_split,
                               text_keys=spec.keys, read_text=_read_text(spec, ds), desc=f"vqa {ds}",
                               target_choice="choice_no_replacement")  # paligemma/transfers/vqav2.py
        table: TextTable = out["eval_table"]
        predictions = out["predictions"]
        if len(set(table.ids)) != len(table.ids):
            raise HarnessError(f"dataset {ds!r}: question ids in {spec.question_id!r} are not unique in {eval_split}")
        base = _metric_base(ds)
        values: dict[str, float] = {}
        scored = any(item["answers"] if spec.answers else item["answer"] for item in table.extra)
        samples = ctx.note_samples(
            ds, eval_split, ids=table.ids, index=table.rows, predictions=[{"text": predictions[q]} for q in table.ids],
            targets=[{k: item[k] for k in ("answers", "answer_type") if k in item} if spec.answers else item["answer"]
                     for item in table.extra])
        if not scored:
            # A split without ground truth (VQAv2 test-dev): only the export for the official server.
            log.warning("vqa: %s %s has no answers; predictions exported, not scored", ds, eval_split)
        elif spec.answers:
            questions = {}
            for qid, item in zip(table.ids, table.extra):
                questions[qid] = {"answers": item["answers"], **({"answer_type": item["answer_type"]}
                                                                 if "answer_type" in item else {})}
            scores = metrics.vqa_scores(predictions, questions)
            values[f"{base}/accuracy"] = scores["overall"]
            for t, v in scores["per_answer_type"].items():
                name = f"{base}/accuracy/{ANSWER_TYPE_NAMES.get(t, t.replace('/', '_'))}"
                values[name] = v
                ctx.note_per_example(name, [scores["per_question"][q] for q in table.ids
                                            if questions[q].get("answer_type") == t])
                samples.score(name, "vqa", [scores["per_question"][q] if questions[q].get("answer_type") == t
                                            else None for q in table.ids], answer_type=t)
            ctx.note_per_example(f"{base}/accuracy", [scores["per_question"][q] for q in table.ids])
            samples.score(f"{base}/accuracy", "vqa", [scores["per_question"][q] for q in table.ids])
        else:
            gt = {qid: item["answer"] for qid, item in zip(table.ids, table.extra)}
            per = metrics.exact_match_per_example(predictions, gt, match=_exact_match(ds))
            values[f"{base}/accuracy"] = 100.0 * float(np.mean([per[q] for q in table.ids]))
            ctx.note_per_example(f"{base}/accuracy", [100.0 * per[q] for q in table.ids])
            samples.score(f"{base}/accuracy", "exact_match", [100.0 * per[q] for q in table.ids],
                          match=_exact_match(ds))
        if scored:
            values[f"{base}/log_perplexity"] = out["log_perplexity"]
            samples.score(f"{base}/log_perplexity", "mean",
                          [None if np.isnan(v) else v for v in out["log_perplexity_per_example"]])

        pred_path = ctx.out_dir / f"vqa_{ds.replace('/', '_')}_{eval_split.replace('/', '_')}_predictions.json"
        id_key, answer_key = RESULTS_KEYS.get(data.base_name(ds), ("question_id", "answer"))
        write_json_atomic(pred_path, [{id_key: q, answer_key: predictions[q]} for q in table.ids])
        ctx.note_artifact(f"predictions/{ds}", pred_path)
        ctx.info.setdefault("decoder", {})[ds] = {
            k: out[k] for k in ("steps", "train_loss_first", "train_loss_last", "num_train_text_examples",
                                "num_eval_text_examples")}
        ctx.info.setdefault("examples", {})[ds] = [
            {"question_id": q, "question": p, "answer": predictions[q], "gt": e.get("answers") or e["answer"]}
            for q, p, e in list(zip(table.ids, table.prefixes, table.extra))[:3]]
        for k, v in out["timings"].items():
            ctx.add_time(k, v)
        return values
