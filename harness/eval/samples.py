"""Per-example outputs ("samples"): what a task predicted for every example it scored, kept beside its record,
so that failures can be looked at, metrics re-scored with today's code (`rescore`) and two checkpoints
compared on the same examples (`harness.report.compare`).

The file, `<record stem>.samples.jsonl.gz` beside the record: gzip (no file name and mtime 0 in its header,
so the same samples are the same bytes), UTF-8 JSON, one object per line.

- Line 1, the header: `{"schema": "sovit-harness-samples/1", "task": NAME, "sets": {SET: {"dataset",
  "split", "num_examples"}}, "metrics": {METRIC: {"set": SET, "rule": RULE, ...the rule's arguments}}}`.
- Then one line per example: `{"set": SET, "id": ID, "index": POSITION, "target": ..., "prediction": ...,
  "scores": {METRIC: SCORE}}`. `id` is the example's id in its dataset (a TFDS id such as
  `proxy_scenes-test.tfrecord-00000-of-00001__12`, derived from the split position by
  `harness.data.example_ids`; or the dataset's own id: COCO image id, VQA question id), stable across runs,
  devices and process counts; `index` is its position in the split string read (for its image); `scores`
  holds the per-example score of each metric whose mean is the metric (none for corpus-level scores such as
  BLEU-4, or for a std over seeds).

A set (`SampleSet`) is one evaluated split in one role; each metric names its set and the rule that computes
it from the set's lines (`RULES`), with the same metric code and the same arithmetic as the task, so
`rescore` gives back the record's values exactly:

| rule | the metric | arguments |
|---|---|---|
| `top1` | % of lines whose `prediction[field].class` is the target (or in the target's label list) | `field` |
| `topk` | % of lines whose target is in `prediction[field].top5[:k]` | `k`, `field` |
| `recall` | % of lines with one of the target's `ids` in `prediction.retrieved[:k]` | `k` |
| `vqa` | `harness.eval.metrics.vqa_scores` (official VQAv2 accuracy), overall or of one answer type | `answer_type` |
| `exact_match` | `harness.eval.metrics.exact_match_per_example` under a match rule | `match` |
| `caption` | `harness.eval.metrics.caption_scores` (pycocoevalcap): `cider`, `bleu4` or `rouge_l` | `which` |
| `segmentation` | `harness.eval.dense.segmentation_scores` (mIoU as DINOv3 / mmseg) of the per-image areas summed over the set: `miou`, `aacc` or `macc`, in % | `which`, `num_classes` |
| `mean` | the mean of the stored per-example scores (model outputs such as a log-perplexity, a depth RMSE) | |
| `mean_of`, `std_of` | the mean / std of other metrics (few-shot: over seeds) | `metrics` |
| `recorded` | not computable from examples (a training loss): the record's value stands | |

Reading a file (`read_samples`) is reading a user's file: a total function over any bytes (bounded size,
bounded decompression, bounded line length, every field's type checked), every fault one HarnessError line.
numpy and the standard library only (the caption rule imports pycocoevalcap when it runs).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import stat
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import HarnessError, first_line
from harness.files import atomic_file

SCHEMA = "sovit-harness-samples/1"
SUFFIX = ".samples.jsonl.gz"
# Bounds of a samples file a reader accepts. ImageNet val's largest file (fewshot: 12 probes' top-5 per
# image) is about 20 MB compressed and 120 MB of JSON; these leave a wide margin and still keep a hostile
# file (a gzip bomb: 1 GiB of zeros compresses to 1 MB) from exhausting memory.
MAX_FILE_BYTES = 1 << 30
MAX_JSON_BYTES = 4 << 30
MAX_LINE_BYTES = 16 << 20
TOP = 5  # top-k classes (and their scores) kept per classifier prediction
RETRIEVED = 10  # retrieved ids kept per retrieval query (Recall@1/5/10)

RULES = ("top1", "topk", "recall", "vqa", "exact_match", "caption", "segmentation", "mean", "mean_of", "std_of",
         "recorded")
SEGMENTATION_AREAS = ("intersection", "union", "prediction", "label")  # `harness.eval.dense.intersect_and_union`
# The rules whose per-example scores are 0 or 100 (McNemar's test in `harness report --compare`).
BINARY_RULES = ("top1", "topk", "recall")


# --------------------------------------------------------------------------------------------- writing
def signif(x: float, digits: int = 6) -> float:
    """A model's score kept for looking at (a logit, a similarity): 6 significant digits."""
    return float(f"{float(x):.{digits}g}")


def top_classes(scores, k: int = TOP, classes=None) -> list[dict]:
    """Per row of class scores [N, C]: `{"class", "top5", "top5_scores"}`, the classes in decreasing score
    (ties: the lower class id first, as an argmax), among `classes` only when given (a test set drawn from
    part of the label space: the ids of those classes)."""
    scores = np.asarray(scores, np.float32)
    ids = None if classes is None else np.unique(np.asarray(classes, np.int64))
    if ids is not None:
        scores = scores[:, ids]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ranked(order if ids is None else ids[order], np.take_along_axis(scores, order, axis=1))


def ranked(classes, scores) -> list[dict]:
    """Per row of ranked classes [N, k] and their scores [N, k]: `{"class", "top5", "top5_scores"}`."""
    return [{"class": int(row[0]), "top5": [int(c) for c in row], "top5_scores": [signif(s) for s in vals]}
            for row, vals in zip(np.asarray(classes), np.asarray(scores))]


def segmentation_areas(areas) -> dict:
    """One image's areas (4, C) from `harness.eval.dense.intersect_and_union` as a prediction: the classes
    present in the prediction or the label (ascending) and, per class, its intersection, union, prediction
    and label areas in pixels (`{"class": [...], "intersection": [...], ...}`); mIoU, aAcc and mAcc are
    ratios of these areas summed over the set (the `segmentation` rule)."""
    areas = np.asarray(areas, np.int64)
    present = np.flatnonzero(areas[1] > 0)
    return {"class": present.tolist(), **{k: areas[i, present].tolist() for i, k in enumerate(SEGMENTATION_AREAS)}}


def _plain(value):
    """numpy values as JSON's: ints, floats (non-finite: null), lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


@dataclass
class SampleSet:
    """The examples of one evaluated split in one role (`RunContext.note_samples` makes one): their ids,
    targets, predictions, and the metrics computed from them with their rules and per-example scores."""

    name: str
    dataset: str
    split: str
    targets: list
    predictions: list
    index: list[int] | None = None
    ids: list | None = None  # None: TFDS ids of `index`, resolved when the file is written
    rules: dict[str, dict] = field(default_factory=dict)
    scores: dict[str, list] = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.targets)
        for what, values in (("predictions", self.predictions), ("index", self.index), ("ids", self.ids)):
            if values is not None and len(values) != n:
                raise ValueError(f"samples {self.name}: {len(values)} {what} for {n} targets")
        if self.ids is None and self.index is None:
            raise ValueError(f"samples {self.name}: give the examples' ids or their positions (index)")
        self.index = None if self.index is None else [int(i) for i in self.index]

    def __len__(self) -> int:
        return len(self.targets)

    def score(self, metric: str, rule: str, values: Sequence | None = None, **args) -> SampleSet:
        """Declares that `metric` is computed from these examples by `rule` (with its arguments), and keeps
        its per-example scores (`values`, one per example, None where the example does not count for this
        metric; none for a corpus-level score). Returns the set, to chain."""
        if rule not in RULES:
            raise ValueError(f"samples rule {rule!r} is not one of {', '.join(RULES)}")
        if values is not None and len(values) != len(self):
            raise ValueError(f"samples {self.name}: {len(values)} scores of {metric} for {len(self)} examples")
        self.rules[metric] = {"set": self.name, "rule": rule, **_plain(args)}
        if values is not None:
            self.scores[metric] = [None if v is None else _plain(float(v)) for v in values]
        return self

    def lines(self) -> Iterable[dict]:
        for i in range(len(self)):
            yield {"set": self.name, "id": _plain(self.ids[i]),
                   "index": None if self.index is None else self.index[i],
                   "target": _plain(self.targets[i]), "prediction": _plain(self.predictions[i]),
                   "scores": {m: v[i] for m, v in self.scores.items() if v[i] is not None}}


class _Hashing(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it to `out`."""

    def __init__(self, out):
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.sha.update(b)
        self.size += len(b)
        return self.out.write(b)


def samples_path(record_path: str | Path) -> Path:
    record_path = Path(record_path)
    return record_path.with_name(record_path.stem + SUFFIX)


def write_samples(path: str | Path, task: str, sets: Sequence[SampleSet], *, data_dir=None) -> dict:
    """Writes the samples file (atomically, as the record) and returns the record's `samples` entry:
    `{"path": file name beside the record, "sha256", "num_lines", "bytes"}`. Sets without ids get the TFDS
    ids of their positions (`harness.data.example_ids`)."""
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ValueError(f"samples: a set name is used twice in {names}")
    for s in sets:
        if s.ids is None:
            from harness import data  # TFDS metadata: only for a run that writes samples

            s.ids = data.example_ids(s.dataset, s.split, s.index, data_dir)
    header = {"schema": SCHEMA, "task": task,
              "sets": {s.name: {"dataset": s.dataset, "split": s.split, "num_examples": len(s)} for s in sets},
              "metrics": {m: rule for s in sets for m, rule in s.rules.items()}}
    path = Path(path)
    lines = 0
    with atomic_file(path, "wb", what="the samples file", devices=False) as f:
        sink = _Hashing(f)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=0) as gz:
            gz.write(_json_line(header))
            for s in sets:
                for line in s.lines():
                    gz.write(_json_line(line))
                    lines += 1
    return {"path": path.name, "sha256": sink.sha.hexdigest(), "num_lines": lines, "bytes": sink.size}


def _json_line(obj) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def file_sha256(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def check_samples_file(record_path: str | Path, entry) -> str | None:
    """Why the samples file a record names is not the one it wrote (missing, changed), or None if it is."""
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("sha256"), str):
        return "its 'samples' entry is not {path, sha256, num_lines}"
    path = Path(record_path).parent / entry["path"]
    if Path(entry["path"]).name != entry["path"]:
        return f"its samples file {entry['path']!r} is not a file name beside the record"
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return f"{path} is not a regular file"
        if file_sha256(path) != entry["sha256"]:
            return f"its samples file {path.name} changed since the record was written (sha256 differs)"
    except OSError as e:
        return f"its samples file {path.name} cannot be read ({first_line(e)})"
    return None


# --------------------------------------------------------------------------------------------- reading
@dataclass
class Samples:
    """A samples file read back: its header (task, sets, metric rules) and its example lines."""

    path: Path
    task: str
    sets: dict[str, dict]
    metrics: dict[str, dict]
    lines: list[dict]

    def of_set(self, name: str) -> list[dict]:
        return [ln for ln in self.lines if ln["set"] == name]


def _bad(path, what: str, line: int | None = None) -> HarnessError:
    where = f"{path}" + (f" line {line}" if line is not None else "")
    return HarnessError(f"{where}: {what}; not a samples file of this harness: rerun the task with --log-samples")


def _reject_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _is_num(v) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) < 1e308  # an int a float can hold


def _check_header(path, header) -> None:
    if not isinstance(header, dict) or header.get("schema") != SCHEMA:
        got = header.get("schema") if isinstance(header, dict) else None
        raise _bad(path, f"its first line is not a {SCHEMA} header (schema {got!r:.60})", 1)
    if not isinstance(header.get("task"), str):
        raise _bad(path, "the header names no task", 1)
    sets, metrics = header.get("sets"), header.get("metrics")
    if not isinstance(sets, dict) or not all(isinstance(v, dict) and isinstance(v.get("dataset"), str)
                                             and isinstance(v.get("split"), str) for v in sets.values()):
        raise _bad(path, "the header's sets are not {name: {dataset, split, num_examples}}", 1)
    if not isinstance(metrics, dict):
        raise _bad(path, "the header's metrics are not {metric: {set, rule, ...}}", 1)
    for name, rule in metrics.items():
        if not (isinstance(rule, dict) and rule.get("set") in sets and rule.get("rule") in RULES):
            raise _bad(path, f"metric {name!r:.80} has no known rule on a known set", 1)
        for arg, ok in _RULE_ARGS.items():
            if arg in rule and not ok(rule[arg]):
                raise _bad(path, f"metric {name!r:.80}: its rule's {arg} is {rule[arg]!r:.60}", 1)


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


# The types of the rules' arguments (what `SampleSet.score` writes), checked before any rule runs.
_RULE_ARGS = {"field": lambda v: v is None or isinstance(v, str), "k": _is_count,
              "answer_type": lambda v: v is None or isinstance(v, str), "match": lambda v: isinstance(v, str),
              "which": lambda v: isinstance(v, str), "num_classes": _is_count,
              "metrics": lambda v: isinstance(v, list) and bool(v) and all(isinstance(m, str) for m in v)}


def _check_line(path, n: int, line, sets) -> None:
    if not isinstance(line, dict):
        raise _bad(path, "an example line is not a JSON object", n)
    if line.get("set") not in sets:
        raise _bad(path, f"set {line.get('set')!r:.60} is not in the header", n)
    ident = line.get("id")
    if not (isinstance(ident, str) or (isinstance(ident, int) and not isinstance(ident, bool))):
        raise _bad(path, "the example's id is not a string or an integer", n)
    index = line.get("index")
    if index is not None and not (isinstance(index, int) and not isinstance(index, bool) and index >= 0):
        raise _bad(path, "the example's index is not a position (an integer >= 0) or null", n)
    if "target" not in line or "prediction" not in line:
        raise _bad(path, "the example has no target or no prediction", n)
    scores = line.get("scores")
    if not isinstance(scores, dict) or not all(_is_num(v) for v in scores.values()):
        raise _bad(path, "the example's scores are not {metric: finite number}", n)


def read_samples(path: str | Path, *, sha256: str | None = None) -> Samples:
    """The samples file at `path`, checked line by line (and against the record's `sha256` when given);
    anything else (not gzip, truncated, too large, inflating past MAX_JSON_BYTES, a line past MAX_LINE_BYTES,
    not UTF-8, not JSON, a field of the wrong type, an id twice in a set) is one HarnessError line."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise _bad(path, "not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise _bad(path, f"{st.st_size} bytes is more than a samples file can be ({MAX_FILE_BYTES})")
        raw = path.read_bytes()
    except OSError as e:
        raise HarnessError(f"{path}: cannot be read ({first_line(e)}); check the path") from None
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise HarnessError(f"{path}: changed since its record was written (sha256 differs from the record's); "
                           "rerun the task to write both again")
    header, lines, total = None, [], 0
    seen: dict[str, set] = {}
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw), mode="rb") as gz:
            n = 0
            while True:
                text = gz.readline(MAX_LINE_BYTES + 1)
                if not text:
                    break
                n += 1
                total += len(text)
                if len(text) > MAX_LINE_BYTES:
                    raise _bad(path, f"a line longer than {MAX_LINE_BYTES} bytes", n)
                if total > MAX_JSON_BYTES:
                    raise _bad(path, f"it inflates to more than {MAX_JSON_BYTES} bytes", n)
                obj = json.loads(text.decode("utf-8"), parse_constant=_reject_constant)
                if header is None:
                    _check_header(path, obj)
                    header = obj
                    continue
                _check_line(path, n, obj, header["sets"])
                ids = seen.setdefault(obj["set"], set())
                key = (type(obj["id"]).__name__, obj["id"])
                if key in ids:
                    raise _bad(path, f"id {obj['id']!r:.60} appears twice in set {obj['set']!r:.60}", n)
                ids.add(key)
                lines.append(obj)
    except HarnessError:
        raise
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(path, f"unreadable ({first_line(e, 120)})") from None
    if header is None:
        raise _bad(path, "it is empty")
    return Samples(path, header["task"], header["sets"], header["metrics"], lines)


def read_record_samples(record: dict) -> Samples:
    """The samples file a record names (beside the record's file), checked against the record's sha256."""
    entry = record.get("samples")
    where = record.get("_path") or "the record"
    if entry is None:
        raise HarnessError(f"{where} has no samples file (run with --no-log-samples, or by an older harness); "
                           "rerun its task with --log-samples --force")
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or Path(entry["path"]).name != entry["path"]:
        raise HarnessError(f"{where}: its 'samples' entry is not {{path, sha256, num_lines}} naming a file beside it; "
                           "rerun its task")
    folder = Path(record["_path"]).parent if record.get("_path") else Path(".")
    sha = entry.get("sha256") if isinstance(entry.get("sha256"), str) else None
    return read_samples(folder / entry["path"], sha256=sha)


# -------------------------------------------------------------------------------------------- rescoring
def _target_set(target) -> set:
    if isinstance(target, dict):  # a retrieval query's {"ids": [...], ...}
        target = target.get("ids")
    if isinstance(target, list):
        return {t for t in target if isinstance(t, (int, str)) and not isinstance(t, bool)}
    return {target} if isinstance(target, (int, str)) and not isinstance(target, bool) else set()


def _head(line: dict, rule: dict) -> dict:
    pred = line["prediction"]
    if rule.get("field") is not None:
        pred = pred.get(rule["field"]) if isinstance(pred, dict) else None
    if not isinstance(pred, dict):
        raise HarnessError(f"example {line['id']!r:.60}: its prediction has no {rule.get('field') or 'class'} "
                           "entry")
    return pred


def _hit_rate(hits: list[float]) -> float | None:
    # The tasks' arithmetic: the mean of the 0/1 hits, times 100.
    return float(np.mean(np.asarray(hits, np.float64)) * 100) if hits else None


def _top1(lines, rule, metric, values, memo):
    out = []
    for ln in lines:
        c = _head(ln, rule).get("class")
        out.append(float(isinstance(c, int) and not isinstance(c, bool) and c in _target_set(ln["target"])))
    return _hit_rate(out)


def _topk(lines, rule, metric, values, memo):
    k = rule.get("k")
    if not _is_count(k):
        raise HarnessError(f"metric {metric!r}: its topk rule has no k")
    out = []
    for ln in lines:
        top = _head(ln, rule).get("top5")
        if not isinstance(top, list):
            raise HarnessError(f"example {ln['id']!r:.60}: its prediction has no top5 list")
        want = _target_set(ln["target"])
        out.append(float(any(isinstance(c, int) and c in want for c in top[:k])))
    return _hit_rate(out)


def _recall(lines, rule, metric, values, memo):
    k = rule.get("k")
    if not _is_count(k):
        raise HarnessError(f"metric {metric!r}: its recall rule has no k")
    out = []
    for ln in lines:
        got = ln["prediction"].get("retrieved") if isinstance(ln["prediction"], dict) else None
        if not isinstance(got, list):
            raise HarnessError(f"example {ln['id']!r:.60}: its prediction has no retrieved list")
        want = _target_set(ln["target"])
        out.append(float(any(isinstance(r, (int, str)) and r in want for r in got[:k])))
    return _hit_rate(out)


def _text(ln) -> str:
    pred = ln["prediction"]
    text = pred.get("text") if isinstance(pred, dict) else None
    if not isinstance(text, str):
        raise HarnessError(f"example {ln['id']!r:.60}: its prediction has no text")
    return text


def _vqa(lines, rule, metric, values, memo):
    from harness.eval.metrics import vqa_scores

    if not lines:
        return None
    questions, predictions = {}, {}
    for ln in lines:
        t = ln["target"]
        if not isinstance(t, dict) or not isinstance(t.get("answers"), list) \
                or not all(isinstance(a, str) for a in t["answers"]) \
                or not isinstance(t.get("answer_type", ""), str):
            raise HarnessError(f"example {ln['id']!r:.60}: its target is not {{answers: [text], answer_type}}")
        questions[ln["id"]] = {"answers": t["answers"], **({"answer_type": t["answer_type"]}
                                                           if "answer_type" in t else {})}
        predictions[ln["id"]] = _text(ln)
    if ("vqa", rule["set"]) not in memo:  # every answer type from one pass, as the task computes them
        memo[("vqa", rule["set"])] = vqa_scores(predictions, questions)
    scores = memo[("vqa", rule["set"])]
    if rule.get("answer_type") is None:
        return scores["overall"]
    return scores["per_answer_type"].get(rule["answer_type"])


def _exact_match(lines, rule, metric, values, memo):
    from harness.eval.metrics import exact_match_per_example

    if not lines:
        return None
    gt = {ln["id"]: ln["target"] for ln in lines}
    per = exact_match_per_example({ln["id"]: _text(ln) for ln in lines}, gt, match=str(rule.get("match")))
    return 100.0 * float(np.mean([per[ln["id"]] for ln in lines]))


def _caption(lines, rule, metric, values, memo):
    from harness.eval.metrics import caption_scores

    which = rule.get("which")
    if which not in ("cider", "bleu4", "rouge_l"):
        raise HarnessError(f"metric {metric!r}: its caption rule names no score (cider, bleu4, rouge_l)")
    if not lines:
        return None
    refs = {}
    for ln in lines:
        t = ln["target"]
        if not isinstance(t, list) or not t or not all(isinstance(r, str) for r in t):
            raise HarnessError(f"example {ln['id']!r:.60}: its target is not a list of reference captions")
        refs[ln["id"]] = t
    preds = {ln["id"]: _text(ln) for ln in lines}
    if ("caption", rule["set"]) not in memo:  # one PTB tokenisation and scoring per set (Java, seconds)
        memo[("caption", rule["set"])] = caption_scores(refs, preds)
    return float(memo[("caption", rule["set"])][which])


MAX_CLASSES = 1 << 16  # a segmentation rule's num_classes (ADE20k: 150); bounds the sums' memory
MAX_AREA = 1 << 32  # pixels of one class in one image: fewer than 2^31 lines never overflow the int64 sums


def _is_area(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_AREA


def _segmentation(lines, rule, metric, values, memo):
    from harness.eval.dense import segmentation_scores

    which, num_classes = rule.get("which"), rule.get("num_classes")
    if which not in ("miou", "aacc", "macc") or not _is_count(num_classes) or num_classes > MAX_CLASSES:
        raise HarnessError(f"metric {metric!r}: its segmentation rule names no score (miou, aacc, macc) or no "
                           f"num_classes (1..{MAX_CLASSES})")
    if not lines:
        return None
    key = ("segmentation", rule["set"], num_classes)
    if key not in memo:  # the areas summed over the set once, as the task sums them (int64, exact)
        total = np.zeros((len(SEGMENTATION_AREAS), num_classes), np.int64)
        for ln in lines:
            pred = ln["prediction"]
            cols = [pred.get(k) for k in ("class", *SEGMENTATION_AREAS)] if isinstance(pred, dict) else [None]
            if not all(isinstance(c, list) and len(c) == len(cols[0]) and all(_is_area(v) for v in c)
                       for c in cols) or len(set(cols[0])) != len(cols[0]) \
                    or any(c >= num_classes for c in cols[0]):
                raise HarnessError(f"example {ln['id']!r:.60}: its prediction is not {{class, intersection, union, "
                                   f"prediction, label}}: equally long lists of areas of distinct classes below "
                                   f"{num_classes}")
            total[:, cols[0]] += np.asarray(cols[1:], np.int64)
        memo[key] = segmentation_scores(total)
    value = memo[key][which]
    return None if math.isnan(value) else value * 100  # NaN: no pixel of any class (the task writes no record)


def _mean(lines, rule, metric, values, memo):
    got = [v for v in values if v is not None]
    return float(np.asarray(got, np.float64).mean()) if got else None


def _of(reduce):
    def rule_fn(rule, metric, computed):
        names = rule.get("metrics")
        if not isinstance(names, list) or not names:
            raise HarnessError(f"metric {metric!r}: its rule names no metrics to combine")
        got = [computed.get(m) for m in names]
        if any(v is None for v in got):
            return None
        return float(reduce(np.array(got)))
    return rule_fn


_SCORERS = {"top1": _top1, "topk": _topk, "recall": _recall, "vqa": _vqa, "exact_match": _exact_match,
            "caption": _caption, "segmentation": _segmentation, "mean": _mean}
_COMBINERS = {"mean_of": _of(np.mean), "std_of": _of(np.std)}


def rescore(samples: Samples) -> dict[str, float | None]:
    """Every metric of a samples file recomputed from its examples with the current metric code (rule
    `recorded`: left out). A value is None where the metric has no example to be computed from."""
    out: dict[str, float | None] = {}
    by_set: dict[str, list[dict]] = {}
    memo: dict = {}
    for ln in samples.lines:
        by_set.setdefault(ln["set"], []).append(ln)
    for metric, rule in samples.metrics.items():
        if rule["rule"] not in _SCORERS:
            continue
        lines = by_set.get(rule["set"], [])
        values = [ln["scores"].get(metric) for ln in lines]
        try:
            out[metric] = _SCORERS[rule["rule"]](lines, rule, metric, values, memo)
        except HarnessError as e:
            raise HarnessError(f"{samples.path}: {metric}: {e}") from None
    for metric, rule in samples.metrics.items():
        if rule["rule"] in _COMBINERS:
            out[metric] = _COMBINERS[rule["rule"]](rule, metric, out)
    return out


def per_example(samples: Samples, metric: str) -> dict:
    """{example id: its score of `metric`} (the examples that have one), in file order."""
    rule = samples.metrics.get(metric)
    if rule is None:
        return {}
    return {ln["id"]: ln["scores"][metric] for ln in samples.lines
            if ln["set"] == rule["set"] and metric in ln["scores"]}


__all__ = ["BINARY_RULES", "MAX_FILE_BYTES", "MAX_JSON_BYTES", "MAX_LINE_BYTES", "RULES", "SCHEMA", "SUFFIX",
           "SampleSet", "Samples", "check_samples_file", "file_sha256", "per_example", "read_record_samples",
           "ranked", "read_samples", "rescore", "samples_path", "segmentation_areas", "signif", "top_classes",
           "write_samples"]
