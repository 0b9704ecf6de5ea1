"""`gqa`: a TFDS builder for the official GQA release, placed by hand (nothing is downloaded).

TFDS has no GQA builder; big_vision's (`big_vision/datasets/gqa/gqa.py`) reads fixed paths under /tmp with
Beam. This one reads the files of https://cs.stanford.edu/people/dorarad/gqa/download.html as they unzip,
from the manual directory, and writes one example per question, as big_vision's does:
- `questions1.2.zip` -> `<split>_questions.json` for the balanced splits (in the folder itself or in a
  `questions1.2/` folder): a dict question id -> {"imageId", "question", "answer", "fullAnswer",
  "isBalanced", "types": {"structural", "semantic", "detailed"}, ...}; test and challenge have no answers;
- `images.zip` -> `images/<imageId>.jpg`.
Only the balanced splits are built (big_vision's GQA transfer trains on `train_balanced` and reports
`testdev_balanced`, `configs/proj/paligemma/transfers/gqa.py`); the `*_all` files are 15x larger.

Question ids and image ids stay the official strings ("20968046", "n161313"): GQA's own evaluation and
its results format (`[{"questionId": str, "prediction": str}]`) key on them.

Disk and memory note: every image is stored once per question (train_balanced: 943k questions on ~72k
images, ~13 per image), so the prepared train split is about 13x the size of its images; reading
train_balanced_questions.json (1.3 GB) takes several GB of memory.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from harness.data.builders import manual
from harness.errors import HarnessError

SPLITS = ("train_balanced", "val_balanced", "testdev_balanced", "test_balanced", "challenge_balanced")
QUESTIONS_DIR = "questions1.2"  # the folder questions1.2.zip unpacks to
IMAGES_DIR = "images"
_IMAGES_FIX = "unzip GQA's images.zip into the manual directory (images/<imageId>.jpg)"
# The splits the harness reads (the VQA task trains on train_balanced and scores testdev_balanced, the registry's
# "train" and "test" roles); the others are built when their questions file is there.
NEEDED_SPLITS = ("train_balanced", "testdev_balanced")

log = logging.getLogger("harness")


def check_files(manual_dir: str) -> None:
    """What `harness prepare gqa` needs, checked before anything is written: the questions of `NEEDED_SPLITS`
    (in `<manual>/gqa/` or its `questions1.2/`) and the images/ folder."""
    root = manual.dataset_root(manual_dir, "gqa")
    questions = [questions_file(s) for s in NEEDED_SPLITS if not find_questions(root, s)]
    manual.require(root, [*questions, IMAGES_DIR + "/"], "gqa", manual_dir)


def questions_file(split: str) -> str:
    return f"{split}_questions.json"


def find_questions(root: str, split: str) -> str | None:
    """The split's questions file in `root` or `root/questions1.2/`, or None."""
    for folder in (root, os.path.join(root, QUESTIONS_DIR)):
        path = os.path.join(folder, questions_file(split))
        if os.path.isfile(path):
            return path
    return None


def find_splits(root: str) -> dict[str, str]:
    """split -> questions file, for the splits present; none present, or no images/ folder: one line."""
    found = {s: p for s in SPLITS if (p := find_questions(root, s))}
    if not found:
        expected = ", ".join(questions_file(s) for s in SPLITS)
        raise HarnessError(f"no GQA questions file in {root} or {os.path.join(root, QUESTIONS_DIR)} (expected "
                           f"any of {expected}); unzip questions1.2.zip there, see `gqa` "
                           "MANUAL_DOWNLOAD_INSTRUCTIONS")
    for split in SPLITS:
        if split not in found:
            log.warning("GQA %s: %s not in %s; the split is left out", split, questions_file(split), root)
    if not os.path.isdir(os.path.join(root, IMAGES_DIR)):
        raise HarnessError(f"GQA: image folder {IMAGES_DIR}/ is missing from {root}; {_IMAGES_FIX}")
    return found


def image_path(root: str, image_id: str) -> str:
    return os.path.join(root, IMAGES_DIR, f"{image_id}.jpg")


def iter_split(root: str, questions_path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(question id, example) for every question of one split, images as their JPEG bytes. Every image
    the split names is checked before the first example is made."""
    questions = manual.read_json(questions_path, "GQA")
    if not isinstance(questions, dict):
        raise HarnessError(f"{questions_path} is not a dict of question id -> question; is it a GQA "
                           "questions file?")
    for qid, q in questions.items():
        if not isinstance(q, dict) or "imageId" not in q or "question" not in q:
            raise HarnessError(f"question {qid!r} of {questions_path} has no 'imageId' or 'question'; is it a "
                               "GQA questions file?")
    manual.require_files(sorted({image_path(root, str(q["imageId"])) for q in questions.values()}), "GQA",
                         _IMAGES_FIX)
    # Grouped by image, so that each JPEG is read once (TFDS shuffles the examples by key anyway).
    for qid, q in sorted(questions.items(), key=lambda kv: (str(kv[1]["imageId"]), kv[0])):
        types = q.get("types") or {}
        yield qid, {
            "image": manual.read_image(image_path(root, str(q["imageId"])), "GQA", _IMAGES_FIX),
            "image_id": str(q["imageId"]),
            "question_id": qid,
            "question": q["question"],
            "answer": q.get("answer", ""),  # test / challenge: none
            "full_answer": q.get("fullAnswer", ""),
            "is_balanced": bool(q.get("isBalanced", True)),
            "types": {k: types.get(k) or "" for k in ("structural", "semantic", "detailed")},
        }


class Gqa(tfds.core.GeneratorBasedBuilder):
    """GQA balanced questions, one example per question, from manually placed files."""

    name = "gqa"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: the balanced splits of questions 1.2."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download questions1.2.zip and images.zip from https://cs.stanford.edu/people/dorarad/gqa/download.html
    and unzip both into <manual_dir>/gqa/ (by default <data_dir>/downloads/manual/gqa/; or pass that folder
    as --manual-dir) so that it holds:
      train_balanced_questions.json      (questions1.2.zip; also found in a questions1.2/ subfolder)
      val_balanced_questions.json
      testdev_balanced_questions.json    (the split the accuracy is reported on)
      test_balanced_questions.json       (optional: no answers)
      challenge_balanced_questions.json  (optional: no answers)
      images/2354786.jpg ...             (images.zip: images/<imageId>.jpg)
    A split is built when its questions file is present.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=("GQA balanced questions on Visual Genome images; one example per question with its "
                         "answer, full answer and question types (no answers for test / challenge)."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "image_id": tfds.features.Text(),
                "question_id": tfds.features.Text(),
                "question": tfds.features.Text(),
                "answer": tfds.features.Text(),
                "full_answer": tfds.features.Text(),
                "is_balanced": tfds.features.Scalar(dtype=np.bool_),
                "types": tfds.features.FeaturesDict({
                    "structural": tfds.features.Text(),
                    "semantic": tfds.features.Text(),
                    "detailed": tfds.features.Text(),
                }),
            }),
            homepage="https://cs.stanford.edu/people/dorarad/gqa/",
            citation=(
                "@inproceedings{hudson2019gqa,\n"
                "  title={{GQA}: A New Dataset for Real-World Visual Reasoning and Compositional Question "
                "Answering},\n"
                "  author={Hudson, Drew A and Manning, Christopher D},\n"
                "  booktitle={CVPR},\n  year={2019}\n}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = manual.dataset_root(manual.manual_dir(dl_manager, "GQA", "gqa"), "gqa")
        return {split: self._generate_examples(root, path) for split, path in find_splits(root).items()}

    def _generate_examples(self, root: str, questions_path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from iter_split(root, questions_path)
