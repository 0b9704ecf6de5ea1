"""Tests for harness.eval.metrics: expected values are worked out by hand, or come from pycocoevalcap's
scorers called directly (an independent call path). Each PTB tokenisation starts a JVM, so the caption
tests share tokenised inputs through module-scoped fixtures."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.eval.metrics import (
    bootstrap_ci,
    caption_scores,
    cider,
    cider_per_example,
    exact_match_accuracy,
    normalize_vqa_answer,
    ptb_tokenize,
    vqa_accuracy,
    vqa_scores,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="PTB tokenizer needs Java")


# ----------------------------------------------------------------------------------------------------
# VQA normalisation
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("yes!", "yes"),                 # "!" not touching a space: replaced by a space, then stripped
    ("it's", "it's"),                # the apostrophe is not in the punctuation list
    ("1,000", "1000"),               # digit,digit: the comma is deleted
    ("hi, 1,000 (approx)", "hi 1000 approx"),  # a digit,digit anywhere deletes every listed symbol
    ("red,blue", "red blue"),        # comma touching no space: becomes a space
    ("red, blue", "red blue"),       # comma followed by a space: deleted
    ("t-shirt", "t shirt"),
    ("mr. smith", "mr smith"),       # a period not followed by a digit is removed
    ("5.5", "5.5"),                  # ... but kept before a digit
    ("3.", "3"),                     # official look-ahead bug: a correct look-behind would keep "3."
    ("a.m.", "am"),
    ("10:30", "10:30"),              # ':' is not in the list
    ("black & white", "black & white"),
    ("cat?", "cat"),
    # Space-adjacency is judged on the input text, not the partly processed one: "/" becomes a space
    # first, yet "-" (touching no space in the input) is still replaced by a space, not deleted.
    ("x/-y-z", "x y z"),
    # The official script passes re.UNICODE (32) as `count`: only the first 32 periods go.
    ("a." * 33, "a" * 33 + "."),
    ("  Yes\n", "yes"),
    ("YES", "yes"),
])
def test_normalize_punctuation_periods_case(raw, expected):
    assert normalize_vqa_answer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("two", "2"), ("none", "0"), ("zero", "0"), ("ten", "10"), ("Three", "3"),
    ("eleven", "eleven"),            # only none/zero..ten are mapped
    ("two dogs", "2 dogs"),
    ("a dog", "dog"), ("the dog", "dog"), ("an apple", "apple"), ("a", ""),
    ("dont", "don't"), ("Dont", "don't"), ("isnt", "isn't"), ("whats", "what's"),
    ("Im", "im"),                    # the official map's "Im" key can never match after lower-casing
])
def test_normalize_number_words_articles_contractions(raw, expected):
    assert normalize_vqa_answer(raw) == expected


# ----------------------------------------------------------------------------------------------------
# VQA accuracy
# ----------------------------------------------------------------------------------------------------

# k matching answers out of 10, worked out by hand: each annotator scores min(1, others matching / 3).
# k=1: 9 annotators see 1 match -> 9 * (1/3) / 10 = 0.3; k=2: (2 * 1/3 + 8 * 2/3) / 10 = 0.6;
# k=3: (3 * 2/3 + 7 * 1) / 10 = 0.9; k>=4: every annotator sees >= 3 matches -> 1.
EXPECTED_BY_MATCHES = [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("k", range(11))
def test_vqa_accuracy_leave_one_out(k):
    gt_answers = ["cat"] * k + [f"other{i}" for i in range(10 - k)]
    assert vqa_accuracy("cat", gt_answers) == pytest.approx(EXPECTED_BY_MATCHES[k])


def test_vqa_accuracy_spelling_variants_among_annotators():
    # Normalised, the answers are 4 x "2", 4 x "3", 2 x "4".
    gt_answers = ["2", "two", "Two", "2.", "3", "three", "3", "3", "4", "four"]
    assert vqa_accuracy("two", gt_answers) == pytest.approx(1.0)  # 0.3 without normalisation
    assert vqa_accuracy("2", gt_answers) == pytest.approx(1.0)
    assert vqa_accuracy("four", gt_answers) == pytest.approx(0.6)
    assert vqa_accuracy("5", gt_answers) == 0.0


def test_vqa_accuracy_official_identical_answers_quirk():
    # Ten identical answers: no normalisation, case-sensitive match.
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 10) == pytest.approx(1.0)
    assert vqa_accuracy(" yes\t", ["yes"] * 10) == pytest.approx(1.0)  # whitespace is always cleaned
    # One dissenting annotator switches normalisation on: "Yes" -> "yes" matches 9.
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["no"]) == pytest.approx(1.0)


def test_vqa_accuracy_fewer_answers_and_errors():
    # Three "cat": each annotator sees 2 matches -> 2/3.
    assert vqa_accuracy("cat", ["cat", "cat", "cat"]) == pytest.approx(2 / 3)
    # cat, cat, dog: the cat annotators see 1 match, the dog annotator 2 -> (1/3 + 1/3 + 2/3) / 3.
    assert vqa_accuracy("cat", ["cat", "cat", "dog"]) == pytest.approx(4 / 9)
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # no other annotator to agree with
    with pytest.raises(ValueError, match="empty"):
        vqa_accuracy("cat", [])
    with pytest.raises(ValueError, match="list"):
        vqa_accuracy("cat", "cat")


def test_vqa_scores_per_answer_type():
    questions = {
        1: {"answers": ["yes"] * 10, "answer_type": "yes/no"},                 # "yes" -> 1
        2: {"answers": ["no"] * 10, "answer_type": "yes/no"},                  # "yes" -> 0
        3: {"answers": ["2"] * 3 + ["3"] * 7, "answer_type": "number"},        # "two" -> 3 matches, 0.9
        4: {"answers": ["red"] + ["blue"] * 9, "answer_type": "other"},        # "Red" -> 1 match, 0.3
    }
    predictions = {1: "yes", 2: "yes", 3: "two", 4: "Red"}
    scores = vqa_scores(predictions, questions)
    assert scores["overall"] == pytest.approx(100 * (1 + 0 + 0.9 + 0.3) / 4)  # 55.0
    assert scores["per_answer_type"] == pytest.approx({"yes/no": 50.0, "number": 90.0, "other": 30.0})
    assert scores["per_question"] == pytest.approx({1: 100.0, 2: 0.0, 3: 90.0, 4: 30.0})
    assert scores["num_questions"] == 4


def test_vqa_scores_rejects_mismatched_ids():
    questions = {1: {"answers": ["yes"] * 10, "answer_type": "yes/no"}}
    with pytest.raises(ValueError, match="not in the questions: 7"):
        vqa_scores({1: "yes", 7: "no"}, questions)
    with pytest.raises(ValueError, match="no prediction: 1"):
        vqa_scores({}, questions)
    with pytest.raises(HarnessError):  # one line for the CLI, too
        vqa_scores({"1": "yes"}, questions)


def test_exact_match_accuracy():
    predictions = {"a": "Two", "b": "the cat", "c": "dog"}
    gt = {"a": "2", "b": "cat", "c": "cats"}
    assert exact_match_accuracy(predictions, gt) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="'d'"):
        exact_match_accuracy({**predictions, "d": "x"}, gt)


# ----------------------------------------------------------------------------------------------------
# Captioning (PTB tokenizer + pycocoevalcap)
# ----------------------------------------------------------------------------------------------------

REFERENCES = {
    "img1": ["A man riding a horse on a beach.", "A person rides a brown horse near the ocean.",
             "Man on horseback at the seaside!"],
    "img2": ["Two dogs play with a red ball.", "A couple of dogs playing in the grass.",
             "Dogs chasing a ball, outdoors."],
    "img3": ["A plate of food with broccoli and rice.", "Rice, chicken and broccoli on a white plate.",
             "A healthy meal on a dish."],
}
PREDICTIONS = {"img1": "A man rides a horse on the beach.", "img2": "Two dogs playing with a ball.",
               "img3": "A plate with rice and broccoli."}


@pytest.fixture(scope="module")
def direct_tokens():
    """References and predictions tokenised by pycocoevalcap's own PTBTokenizer (two calls)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": PREDICTIONS[k]}] for k in REFERENCES})
    return gts, res


@pytest.fixture(scope="module")
def ours():
    return caption_scores(REFERENCES, PREDICTIONS)


@needs_java
def test_ptb_tokenize_hides_coco_format_and_keeps_lines_aligned():
    tokens = ptb_tokenize({1: ["A man, riding a horse.", "It's 1,000 dogs!"], 2: ["line\rbreak"],
                           3: ["x"]})
    # A raw "\r" would make Java split id 2 into two lines and shift id 3 onto the wrong text.
    assert tokens == {1: ["a man riding a horse", "it 's 1,000 dogs"], 2: ["line break"], 3: ["x"]}


@needs_java
def test_cider_matches_pycocoevalcap(direct_tokens, ours):
    from pycocoevalcap.cider.cider import Cider

    gts, res = direct_tokens
    expected, expected_per_example = Cider().compute_score(gts, res)
    assert expected > 0.5  # a non-trivial score, so the comparison means something
    assert cider(REFERENCES, PREDICTIONS) == pytest.approx(expected, rel=1e-12)
    per_example = cider_per_example(REFERENCES, PREDICTIONS)
    assert list(per_example) == list(REFERENCES)
    np.testing.assert_allclose(list(per_example.values()), expected_per_example, rtol=1e-12)
    assert ours["cider"] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(ours["cider_per_example"], expected_per_example, rtol=1e-12)


@needs_java
def test_bleu4_and_rouge_l_match_pycocoevalcap(direct_tokens, ours):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = direct_tokens
    bleu, bleu_per_example = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_per_example = Rouge().compute_score(gts, res)
    assert ours["bleu4"] == pytest.approx(bleu[3], rel=1e-12)
    np.testing.assert_allclose(ours["bleu4_per_example"], bleu_per_example[3], rtol=1e-12)
    assert ours["rouge_l"] == pytest.approx(rouge, rel=1e-12)
    np.testing.assert_allclose(ours["rouge_l_per_example"], rouge_per_example, rtol=1e-12)
    assert ours["ids"] == list(REFERENCES) and ours["num_examples"] == 3


@needs_java
def test_cider_sanity_values():
    # One reference per image, identical to the candidate, with n-grams unique to each image:
    # every n-gram order has cosine 1 and no length penalty, so CIDEr-D = 10 * mean_n(1) = 10.
    # A candidate sharing no word with its reference scores 0.
    references = {1: ["a man rides a brown horse"], 2: ["two dogs chase a red ball"],
                  3: ["a plate of rice and broccoli"], 4: ["green trees by the lake"]}
    predictions = {1: "a man rides a brown horse", 2: "two dogs chase a red ball",
                   3: "a plate of rice and broccoli", 4: "yellow bus parked outside"}
    per_example = cider_per_example(references, predictions)
    assert per_example == pytest.approx({1: 10.0, 2: 10.0, 3: 10.0, 4: 0.0})
    # IDF comes from the evaluated set: with one image every n-gram has idf log(1/1) = 0.
    assert cider({1: ["a man rides a brown horse"]}, {1: "a man rides a brown horse"}) == 0.0


def test_caption_inputs_are_validated_before_tokenising():
    with pytest.raises(ValueError, match="'img9'"):
        cider(REFERENCES, {**PREDICTIONS, "img9": "extra"})
    with pytest.raises(ValueError, match="no prediction: 'img3'"):
        cider(REFERENCES, {k: v for k, v in PREDICTIONS.items() if k != "img3"})
    with pytest.raises(ValueError, match="non-empty list"):
        cider({**REFERENCES, "img1": []}, PREDICTIONS)
    with pytest.raises(ValueError, match="non-empty list"):
        caption_scores({**REFERENCES, "img1": "a single string"}, PREDICTIONS)
    with pytest.raises(ValueError, match="one caption string"):
        cider(REFERENCES, {**PREDICTIONS, "img1": ["a list"]})


# ----------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------

def test_bootstrap_ci_contains_mean_and_narrows():
    rng = np.random.default_rng(123)
    small = rng.uniform(0, 1, size=30)
    large = rng.uniform(0, 1, size=3000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    # The width shrinks like 1/sqrt(n): 10x narrower for 100x more examples, give or take.
    assert (hi_l - lo_l) < 0.2 * (hi_s - lo_s)
    assert bootstrap_ci(small, seed=0) == bootstrap_ci(small, seed=0)
    assert bootstrap_ci([0.7] * 5) == pytest.approx((0.7, 0.7))
    # A wider confidence level gives a wider interval.
    lo_99, hi_99 = bootstrap_ci(small, alpha=0.01)
    assert lo_99 <= lo_s and hi_99 >= hi_s
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([0.5, float("nan")])


# ----------------------------------------------------------------------------------------------------
# Import hygiene
# ----------------------------------------------------------------------------------------------------

def test_import_does_not_load_jax_or_tensorflow():
    code = ("import sys, harness.eval.metrics; "
            "heavy = [m for m in ('jax', 'tensorflow', 'flax') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
