"""Captioning and VQA metrics, number for number with the official implementations.

- VQA: the official VQAv2 evaluation (the VQA API's `vqaEval.py`, GT-Vision-Lab/VQA), including its
  quirks, which are kept on purpose so our numbers match the official ones. Single-answer datasets: exact
  match under the dataset's rule (`EXACT_MATCH_RULES`: GQA as it is, OCR-VQA lower-cased).
- Captioning: CIDEr (the CIDEr-D variant), BLEU-4 and ROUGE-L from pycocoevalcap, on inputs tokenised by
  its Java PTB tokenizer (references and predictions in two separate calls, as COCOEvalCap does).
- Classification on part of a label space: `restricted_argmax`, the top-1 prediction among a test set's
  classes only (ImageNet-R / -A / ObjectNet scored on the ImageNet classes they cover).
- Two-tower evaluation (big_vision's `discriminative_classifier` and `image_text_retrieval`):
  `zeroshot_hits`, the top-1 of image embeddings against class embeddings; `retrieval_recall`, Recall@k
  in both directions.
- `bootstrap_ci`: a percentile bootstrap of a mean, for confidence intervals on per-example scores.
- Paired comparisons of two models on the same examples (`harness report --compare`): `paired_bootstrap_ci`
  (the bootstrap of the mean difference, both models resampled with the same indices), `mcnemar_exact` (0/1
  scores: the exact binomial test on the discordant pairs), `paired_permutation_p` (other scores: the
  sign-flip permutation test), and the sample sizes a difference of the observed size needs
  (`mcnemar_sample_size`, `paired_sample_size`).

Only numpy and the standard library are imported at module level (pycocoevalcap lazily, inside the
caption functions), so this module loads without jax or tensorflow.
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from harness.errors import HarnessError

__all__ = [
    "MetricInputError",
    "VQA_ANSWER_TYPES",
    "normalize_vqa_answer",
    "vqa_accuracy",
    "vqa_scores",
    "EXACT_MATCH_RULES",
    "exact_match_accuracy",
    "exact_match_per_example",
    "ptb_tokenize",
    "cider",
    "cider_per_example",
    "caption_scores",
    "restricted_argmax",
    "RECALL_AT",
    "zeroshot_hits",
    "retrieval_recall",
    "bootstrap_ci",
    "paired_bootstrap_ci",
    "mcnemar_exact",
    "paired_permutation_p",
    "mcnemar_sample_size",
    "paired_sample_size",
]

# The answer types VQAv2 annotations use (`vqa_scores` reports whichever are present).
VQA_ANSWER_TYPES = ("yes/no", "number", "other")


class MetricInputError(HarnessError, ValueError):
    """Inputs a metric cannot score (mismatched ids, empty answer lists, wrong types).

    A `HarnessError` so the CLI prints it as one line, and a `ValueError` for library callers.
    """


# ---------------------------------------------------------------------------------------------------
# VQA answer normalisation (official vqaEval.py semantics)
# ---------------------------------------------------------------------------------------------------

# The official contractions table, verbatim in content. Two of its oddities are kept because they are
# the official behaviour: keys with capitals ("Im", "Ive", "Id've", "I'dve") can never match (words are
# lower-cased first), and "somebody'd" maps to "somebodyd" (reversed direction, a typo upstream).
_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}

# Only none/zero..ten are mapped: "eleven" stays a word, as in the official script.
_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

_ARTICLES = frozenset({"a", "an", "the"})

# The official punctuation list. Not in it: ' . : $ % & # * (the period has its own rule below).
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                ">", "<", "@", "`", ",", "?", "!")

# A thousands separator such as "1,000": when present anywhere, every listed symbol is deleted.
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")

# Official regex, bug included: "(?!<=\d)" was meant as a look-behind "(?<!\d)" but is a negative
# look-ahead for the text "<=digit", which can never follow at a period. So the rule is really
# "delete a period unless a digit follows": "5.5" keeps it, but "3." and "mr. smith" lose it.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")

# The official script passes `re.UNICODE` (= 32) positionally where `Pattern.sub` expects `count`,
# so at most 32 periods are removed. Harmless for real answers; kept to be exact.
_PERIOD_STRIP_MAX_COUNT = int(re.UNICODE)


def _clean_whitespace(answer: str) -> str:
    """The step the official script always applies: newlines and tabs to spaces, then strip."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    """The official `processPunctuation`: delete or blank out listed symbols, strip periods."""
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCTUATION:
        # The adjacency checks look at the *input* text, not the partly processed one (official).
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_MAX_COUNT)


def _process_digit_article(text: str) -> str:
    """The official `processDigitArticle`: lower-case, number words to digits, drop articles,
    restore contractions; words re-joined by single spaces."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(answer: str) -> str:
    """The official VQA answer normalisation (whitespace, punctuation, periods, case, number words,
    articles, contractions), e.g. "Two dogs!" -> "2 dogs", "1,000" -> "1000", "dont" -> "don't".

    Note that `vqa_accuracy` applies it only when the ground-truth answers disagree, as the official
    evaluator does.
    """
    return _process_digit_article(_process_punctuation(_clean_whitespace(answer)))


# ---------------------------------------------------------------------------------------------------
# VQA accuracy
# ---------------------------------------------------------------------------------------------------

def vqa_accuracy(answer: str, gt_answers: Sequence[str]) -> float:
    """The official VQAv2 per-question accuracy in [0, 1].

    For each annotator, min(1, matches among the *other* annotators / 3); the mean of those. With 10
    answers, k matches give 0, 0.3, 0.6, 0.9, 1 for k = 0, 1, 2, 3, >=4. Fewer answers use the same
    leave-one-out formula (so a single ground-truth answer always scores 0: use exact match there).

    Official quirk, kept: answers are normalised only if the (whitespace-cleaned) ground-truth answers
    are not all identical, and matching is case-sensitive; so against ten "yes", "Yes" scores 0.
    """
    if isinstance(gt_answers, str):
        raise MetricInputError(
            f"gt_answers must be a list of answers, got the string {gt_answers!r}; wrap it in a list")
    if len(gt_answers) == 0:
        raise MetricInputError("gt_answers is empty; VQA accuracy needs the annotators' answers")
    if not isinstance(answer, str):
        raise MetricInputError(f"the predicted answer must be a string, got {type(answer).__name__}; "
                               "decode the model output to text first")
    gts = [_clean_whitespace(a) for a in gt_answers]
    pred = _clean_whitespace(answer)
    if len(set(gts)) > 1:
        gts = [_process_digit_article(_process_punctuation(a)) for a in gts]
        pred = _process_digit_article(_process_punctuation(pred))
    is_match = [gt == pred for gt in gts]
    num_matches = sum(is_match)
    # Leave annotator i out (officially by answer_id, so duplicates still count): the others'
    # matches are all matches minus i's own.
    per_annotator = [min(1.0, (num_matches - int(m)) / 3) for m in is_match]
    return float(sum(per_annotator)) / len(per_annotator)


def vqa_scores(predictions: Mapping[Hashable, str],
               questions: Mapping[Hashable, Mapping[str, Any]]) -> dict[str, Any]:
    """Official VQAv2 accuracy over a set of questions, in percent.

    `questions[qid]` holds `answers` (list of str) and, optionally, `answer_type` ("yes/no", "number",
    "other"). Every question needs a prediction and vice versa.

    Returns `overall` and `per_answer_type` (only the types present), each the mean per-question
    accuracy x 100 (the official script then rounds these to 2 decimals for display; we do not), plus
    `per_question` ({qid: accuracy x 100}, for bootstrap CIs) and `num_questions`.
    """
    _check_same_ids(predictions, questions, what="questions")
    per_question: dict[Hashable, float] = {}
    accuracies: list[float] = []
    by_type: dict[str, list[float]] = {}
    for qid, question in questions.items():
        if "answers" not in question:
            raise MetricInputError(f"question {qid!r} has no 'answers'; give each question its "
                                   "list of ground-truth answers")
        accuracy = vqa_accuracy(predictions[qid], question["answers"])
        accuracies.append(accuracy)
        per_question[qid] = 100.0 * accuracy
        answer_type = question.get("answer_type")
        if answer_type is not None:
            by_type.setdefault(answer_type, []).append(accuracy)
    return {
        # 100 * sum / count, the official script's arithmetic (before its rounding).
        "overall": 100.0 * float(sum(accuracies)) / len(accuracies),
        "per_answer_type": {t: 100.0 * float(sum(v)) / len(v) for t, v in by_type.items()},
        "per_question": per_question,
        "num_questions": len(per_question),
    }


# How `exact_match_per_example` compares the two strings: "exact" as they are (GQA's official eval.py:
# `predicted == gold`), "lower" after lower-casing both (big_vision's evaluators/proj/paligemma/transfers/vqa.py
# with `to_lower=True`, its OCR-VQA setting), "vqa" after `normalize_vqa_answer` on both.
EXACT_MATCH_RULES = {
    "exact": lambda s: s,
    "lower": lambda s: s.lower(),
    "vqa": normalize_vqa_answer,
}


def exact_match_per_example(predictions: Mapping[Hashable, str], gt: Mapping[Hashable, str], *,
                            match: str = "vqa") -> dict[Hashable, float]:
    """1.0 where the prediction equals the answer after the `match` rule (`EXACT_MATCH_RULES`) on both,
    else 0.0."""
    if match not in EXACT_MATCH_RULES:
        raise MetricInputError(f"match={match!r} is not one of {', '.join(EXACT_MATCH_RULES)}")
    _check_same_ids(predictions, gt, what="ground-truth answers")
    rule = EXACT_MATCH_RULES[match]
    scores = {}
    for key, answer in gt.items():
        if not isinstance(answer, str) or not isinstance(predictions[key], str):
            raise MetricInputError(f"id {key!r}: exact match needs one string answer on each side; "
                                   "pass str values")
        scores[key] = float(rule(predictions[key]) == rule(answer))
    return scores


def exact_match_accuracy(predictions: Mapping[Hashable, str], gt: Mapping[Hashable, str], *,
                         match: str = "vqa") -> float:
    """Exact-match accuracy in percent under the `match` rule (GQA: "exact", OCR-VQA: "lower")."""
    scores = exact_match_per_example(predictions, gt, match=match)
    return 100.0 * float(np.mean(list(scores.values())))


# ---------------------------------------------------------------------------------------------------
# Captioning: PTB tokenisation and pycocoevalcap scorers
# ---------------------------------------------------------------------------------------------------

# Characters that Java (or Python's splitlines) treats as line breaks. The tokenizer runs with
# -preserveLines and maps output lines back to captions by position, so a stray "\r" in one caption
# would shift every later caption onto the wrong id. pycocoevalcap only replaces "\n"; we blank all.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def ptb_tokenize(texts: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """pycocoevalcap's PTB tokenizer (Java, one JVM per call): lower-cased, punctuation dropped.

    `{id: [caption, ...]}` -> `{id: [tokenised caption, ...]}`, same ids and order.
    """
    for key, captions in texts.items():
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
            raise MetricInputError(f"id {key!r}: expected a list of caption strings, got "
                                   f"{captions!r:.80}; wrap single captions in a list")
    if not texts:
        return {}
    if shutil.which("java") is None:
        raise HarnessError("java is not on PATH; the PTB tokenizer of pycocoevalcap needs a Java "
                           "runtime (e.g. apt-get install default-jre-headless)")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    coco_format = {key: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in captions]
                   for key, captions in texts.items()}
    try:
        tokenized = PTBTokenizer().tokenize(coco_format)
    except OSError as e:
        # It writes its input file next to its jar, inside the installed package.
        raise HarnessError(f"the PTB tokenizer failed to run ({e}); check that Java works and that "
                           "the pycocoevalcap/tokenizer folder is writable") from e
    # Its output is matched to ids by line position; a count mismatch would mean silently
    # misaligned captions, so refuse instead.
    bad = [key for key, captions in texts.items() if len(tokenized.get(key, [])) != len(captions)]
    if bad:
        raise HarnessError(f"the PTB tokenizer returned the wrong number of lines for ids "
                           f"{_some(bad)}; check the Java output (run java -version)")
    return {key: tokenized[key] for key in texts}


def _tokenize_for_scoring(references: Mapping[Hashable, Sequence[str]],
                          predictions: Mapping[Hashable, str]
                          ) -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """Check inputs, then tokenise references and predictions in two separate calls (as COCOEvalCap
    does), keyed in the references' order."""
    _check_same_ids(predictions, references, what="references")
    for key, refs in references.items():
        if isinstance(refs, str) or len(refs) == 0:
            raise MetricInputError(f"id {key!r}: references must be a non-empty list of captions; "
                                   "give every image at least one reference")
        if not isinstance(predictions[key], str):
            raise MetricInputError(f"id {key!r}: the prediction must be one caption string, got "
                                   f"{type(predictions[key]).__name__}; pass str values")
    gts = ptb_tokenize(references)
    res = ptb_tokenize({key: [predictions[key]] for key in references})
    return gts, res


def _cider_on_tokens(gts: Mapping[Hashable, list[str]],
                     res: Mapping[Hashable, list[str]]) -> tuple[float, np.ndarray]:
    from pycocoevalcap.cider.cider import Cider

    score, scores = Cider().compute_score(gts, res)
    return float(score), np.asarray(scores, dtype=np.float64)


def cider(references: Mapping[Hashable, Sequence[str]], predictions: Mapping[Hashable, str]) -> float:
    """CIDEr-D as pycocoevalcap computes it, raw scale (papers print x100).

    IDF comes from the references given here, so a subset's CIDEr is not comparable with the full set's.
    """
    gts, res = _tokenize_for_scoring(references, predictions)
    return _cider_on_tokens(gts, res)[0]


def cider_per_example(references: Mapping[Hashable, Sequence[str]],
                      predictions: Mapping[Hashable, str]) -> dict[Hashable, float]:
    """Per-id CIDEr-D (their mean is `cider`), for bootstrap CIs; IDF from the whole set given."""
    gts, res = _tokenize_for_scoring(references, predictions)
    _, scores = _cider_on_tokens(gts, res)
    return {key: float(s) for key, s in zip(gts, scores)}


def caption_scores(references: Mapping[Hashable, Sequence[str]],
                   predictions: Mapping[Hashable, str]) -> dict[str, Any]:
    """CIDEr-D, BLEU-4 and ROUGE-L (pycocoevalcap scorers, raw scale) on one PTB tokenisation.

    `bleu4` is corpus-level BLEU-4 (what COCO reports); `bleu4_per_example` holds pycocoevalcap's
    sentence-level BLEU-4, whose mean is *not* `bleu4` (use it for rough CIs only). CIDEr and
    ROUGE-L are means of their per-example values. Per-example arrays follow the order of `ids`.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _tokenize_for_scoring(references, predictions)
    cider_score, cider_scores = _cider_on_tokens(gts, res)
    bleu_scores, bleu_per_example = Bleu(4).compute_score(gts, res, verbose=0)
    rouge_score, rouge_scores = Rouge().compute_score(gts, res)
    return {
        "cider": cider_score,
        "bleu4": float(bleu_scores[3]),
        "rouge_l": float(rouge_score),
        "ids": list(gts),
        "cider_per_example": cider_scores,
        "bleu4_per_example": np.asarray(bleu_per_example[3], dtype=np.float64),
        "rouge_l_per_example": np.asarray(rouge_scores, dtype=np.float64),
        "num_examples": len(gts),
    }


# ---------------------------------------------------------------------------------------------------
# Classification on a subset of the classes
# ---------------------------------------------------------------------------------------------------

def restricted_argmax(logits, classes=None) -> np.ndarray:
    """Per row of `logits` [N, C], the class id (0..C-1) with the largest logit among `classes` only (ids,
    any order; ties go to the smaller id); None: among all C. The datasets' authors score ImageNet-R / -A
    this way (`net(x)[:, indices_in_1k]`, hendrycks/imagenet-r and natural-adv-examples eval.py), and a
    prediction is then right when it is the label (ObjectNet: one of the image's mapped ImageNet classes,
    which is wise-ft's max over each class's logits but for exact ties)."""
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise MetricInputError(f"restricted_argmax needs logits [N, C]; got shape {logits.shape}")
    if classes is None:
        return np.argmax(logits, axis=-1)
    classes = np.unique(np.asarray(classes, np.int64))
    if classes.size == 0 or classes[0] < 0 or classes[-1] >= logits.shape[1]:
        raise MetricInputError(f"restricted_argmax: class ids must be a non-empty subset of 0..{logits.shape[1] - 1}; "
                               f"got {classes.size} ids in [{classes.min(initial=0)}, {classes.max(initial=0)}]")
    return classes[np.argmax(logits[:, classes], axis=-1)]


# ---------------------------------------------------------------------------------------------------
# Zero-shot classification and image-text retrieval
# ---------------------------------------------------------------------------------------------------

RECALL_AT = (1, 5, 10)


def zeroshot_hits(zimg: np.ndarray, zclass: np.ndarray, labels: list, classes=None) -> np.ndarray:
    """1.0 where argmax(zimg . zclass) is the label, or one of the labels for a label set. `classes`: the label
    ids of zclass's rows when they are a subset (ImageNet-R's 200 of ImageNet's 1000); None: row i is label i."""
    pred = np.argmax(zimg @ zclass.T, axis=1)
    if classes is not None:
        pred = np.asarray(classes)[pred]
    return np.array([float(p in set(np.atleast_1d(y).tolist())) for p, y in zip(pred, labels)])


def retrieval_recall(sims: np.ndarray, text_image: np.ndarray, ks=RECALL_AT) -> dict[str, np.ndarray]:
    """Per-query hits for Recall@k from an [images, texts] similarity matrix.

    `text_image[j]` is the image text j describes. image->text: a hit if any of the image's own texts is
    among its k most similar texts; text->image: a hit if the text's image is among its k most similar
    images. Ties go to the lower index (a stable sort), as big_vision's argsort of distances does.
    """
    sims = np.asarray(sims)
    text_image = np.asarray(text_image)
    n_img, n_txt = sims.shape
    if text_image.shape != (n_txt,):
        raise MetricInputError(f"retrieval: {n_txt} texts but {text_image.shape} image ids")
    by_image = np.argsort(-sims, axis=1, kind="stable")  # [images, texts]
    by_text = np.argsort(-sims, axis=0, kind="stable")  # [images, texts]
    out = {}
    for k in ks:
        out[f"i2t_recall@{k}"] = (text_image[by_image[:, :k]] == np.arange(n_img)[:, None]).any(axis=1) * 1.0
        out[f"t2i_recall@{k}"] = (by_text[:k] == text_image[None]).any(axis=0) * 1.0
    return out


# ---------------------------------------------------------------------------------------------------
# Confidence intervals
# ---------------------------------------------------------------------------------------------------

# Bound the (resamples x examples) index matrix drawn at once, so 1000 resamples of a 200k-question
# set do not need gigabytes.
_BOOTSTRAP_MAX_DRAWS_PER_CHUNK = 2**22


def bootstrap_ci(per_example: Sequence[float], *, n_resamples: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean of `per_example`; deterministic in seed."""
    values = np.asarray(per_example, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise MetricInputError("bootstrap_ci got no values; pass the per-example scores")
    if not np.all(np.isfinite(values)):
        raise MetricInputError("bootstrap_ci got NaN or infinite values; check the per-example scores")
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}; use e.g. 0.05 for a 95% CI")
    if n_resamples < 1:
        raise MetricInputError(f"n_resamples must be >= 1, got {n_resamples}")
    n = values.size
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_MAX_DRAWS_PER_CHUNK // n)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    lo, hi = np.percentile(means, [100.0 * alpha / 2, 100.0 * (1.0 - alpha / 2)])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------
# Paired comparisons: two models scored on the same examples
# ---------------------------------------------------------------------------------------------------

def _paired(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise MetricInputError(f"a paired comparison needs two equally long, non-empty score lists; got "
                               f"{a.size} and {b.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise MetricInputError("a paired comparison got NaN or infinite scores; check the per-example scores")
    return b - a


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], *, n_resamples: int = 1000, seed: int = 0,
                        alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of mean(b - a) over paired examples: each resample draws
    examples with replacement and takes both models' scores of the same examples (`bootstrap_ci` of the
    differences, so the same seed draws the same indices as the report's intervals)."""
    return bootstrap_ci(_paired(a, b), n_resamples=n_resamples, seed=seed, alpha=alpha)


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2): exact (integer sums) up to n = 20000, in log space above."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= 20000:
        term, total = 1, 1
        for i in range(k):
            term = term * (n - i) // (i + 1)
            total += term
        return total / (1 << n)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> tuple[float, int, int]:
    """McNemar's exact test of two models' 0/1 results on the same examples: (two-sided p-value, n10, n01) with
    n10 the examples only `a` gets right and n01 those only `b` gets right. Under the null (equal accuracy)
    n01 ~ Binomial(n10 + n01, 1/2); p = min(1, 2 P(X <= min(n10, n01))), as
    `scipy.stats.binomtest(n01, n10 + n01, 0.5).pvalue`. Scores are 0/1 or 0/100 (any two values: the
    larger is right)."""
    d = _paired(a, b)
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    values = np.unique(np.concatenate([a, b]))
    if values.size > 2:
        raise MetricInputError(f"McNemar's test needs 0/1 scores; these take {values.size} values")
    right = values.max() if values.size else 0.0
    n10 = int(np.count_nonzero((a == right) & (b != right) & (d != 0)))
    n01 = int(np.count_nonzero((b == right) & (a != right) & (d != 0)))
    n = n10 + n01
    if n == 0:
        return 1.0, n10, n01
    return min(1.0, 2.0 * _binom_cdf_half(min(n10, n01), n)), n10, n01


PERMUTATION_RESAMPLES = 9999  # random sign flips when exact enumeration would take more (p resolution 1e-4)


def paired_permutation_p(a: Sequence[float], b: Sequence[float], *, n_resamples: int = PERMUTATION_RESAMPLES,
                         seed: int = 0) -> tuple[float, bool]:
    """The paired (sign-flip) permutation test of mean(b - a) = 0: under the null, which model scored which
    of a pair's two values is a coin flip, so each difference keeps or flips its sign. Returns (two-sided
    p-value, exact): with m non-zero differences and 2^m <= n_resamples + 1 every sign pattern is counted
    (exact: the p-value `scipy.stats.permutation_test(..., permutation_type="samples")` gives with all
    permutations); otherwise `n_resamples` seeded random patterns, p = (1 + hits) / (1 + n_resamples)
    (Phipson & Smyth 2010). A pattern counts when |its mean difference| >= the observed one's (up to 100
    machine epsilons relative, scipy's tolerance for ties)."""
    d = _paired(a, b)
    d = d[d != 0]
    m = d.size
    if m == 0:
        return 1.0, True
    observed = abs(float(d.sum()))
    gamma = observed * 100 * np.finfo(np.float64).eps
    total = float(d.sum())
    if 2 ** m <= n_resamples + 1:
        patterns = (np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1  # [2^m, m] 0/1: which flip
        sums = total - 2.0 * (patterns.astype(np.float64) @ d)
        return float(np.count_nonzero(np.abs(sums) >= observed - gamma)) / 2 ** m, True
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, _BOOTSTRAP_MAX_DRAWS_PER_CHUNK // m)
    for start in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        flips = np.unpackbits(rng.integers(0, 256, size=(rows, (m + 7) // 8), dtype=np.uint8), axis=1)[:, :m]
        sums = total - 2.0 * (flips.astype(np.float64) @ d)
        hits += int(np.count_nonzero(np.abs(sums) >= observed - gamma))
    return (1 + hits) / (1 + n_resamples), False


def _z(alpha: float, power: float) -> tuple[float, float]:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise MetricInputError(f"alpha and power must be in (0, 1); got {alpha} and {power}")
    normal = statistics.NormalDist()
    return normal.inv_cdf(1 - alpha / 2), normal.inv_cdf(power)


def mcnemar_sample_size(n10: int, n01: int, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Examples a two-sided McNemar test at `alpha` needs to detect, with `power`, discordant proportions like
    the observed ones (p10 = n10/n, p01 = n01/n): Connor (1987), Biometrics 43(1) 207-211, with psi = p10 + p01
    and delta = p01 - p10, n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2.
    Infinite when the difference is 0."""
    if n <= 0 or n10 == n01:
        return math.inf
    za, zb = _z(alpha, power)
    psi, delta = (n10 + n01) / n, (n01 - n10) / n
    return (za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0))) ** 2 / (delta * delta)


def paired_sample_size(a: Sequence[float], b: Sequence[float], *, alpha: float = 0.05,
                       power: float = 0.8) -> float:
    """Examples a two-sided paired test at `alpha` needs to detect, with `power`, a mean difference of the
    observed size: the normal (large-sample paired t) approximation n = ((z_{1-alpha/2} + z_{power}) sd / d)^2,
    with d and sd the mean and standard deviation (ddof 1) of the observed differences. Infinite when d is 0."""
    d = _paired(a, b)
    mean = float(d.mean())
    if mean == 0 or d.size < 2:
        return math.inf
    za, zb = _z(alpha, power)
    return ((za + zb) * float(d.std(ddof=1)) / mean) ** 2


# ---------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------

def _some(ids: Sequence[Hashable], limit: int = 5) -> str:
    """A few ids for an error message, e.g. "1, 2, 3 (and 7 more)"."""
    shown = ", ".join(repr(i) for i in sorted(ids, key=str)[:limit])
    return shown + (f" (and {len(ids) - limit} more)" if len(ids) > limit else "")


def _check_same_ids(predictions: Mapping[Hashable, Any], targets: Mapping[Hashable, Any],
                    *, what: str) -> None:
    """Predictions and targets must cover exactly the same ids, and at least one."""
    if not isinstance(predictions, Mapping) or not isinstance(targets, Mapping):
        raise MetricInputError(f"predictions and {what} must be dicts keyed by example id; "
                               "build {id: value} dicts")
    extra = [k for k in predictions if k not in targets]
    missing = [k for k in targets if k not in predictions]
    if extra:
        raise MetricInputError(f"{len(extra)} prediction id(s) are not in the {what}: {_some(extra)}; "
                               "predict exactly the evaluated ids (check the id type, int vs str)")
    if missing:
        raise MetricInputError(f"{len(missing)} id(s) of the {what} have no prediction: "
                               f"{_some(missing)}; predict every evaluated id")
    if not targets:
        raise MetricInputError(f"no {what} to score; pass at least one example")
