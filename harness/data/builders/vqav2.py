"""`vqav2`: a TFDS builder for the official VQAv2 files, placed by hand (nothing is downloaded).

TFDS has no VQAv2 builder. This one reads the files of https://visualqa.org/download.html exactly as
they unzip, plus the COCO images they refer to, and writes one example per question. The COCO image
folders are the same ones `coco_captions` (Karpathy splits) is built from: keep one copy of
`train2014/`, `val2014/` (and `test2015/`) and point both datasets at it (e.g. with symlinks).

Disk note: as one example holds one question and its image, every image is stored once per question
(about 5.4 questions per COCO image), so the prepared train split is several times the size of
train2014/ itself (~13 GB of JPEGs there).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Iterator

import tensorflow as tf
import tensorflow_datasets as tfds

from harness.data.builders import manual
from harness.errors import HarnessError


@dataclasses.dataclass(frozen=True)
class SplitFiles:
    """Where one split's questions, annotations (None for the test splits) and images live."""

    questions: str
    annotations: str | None
    image_dir: str
    image_prefix: str

    def image_path(self, manual_dir: str, image_id: int) -> str:
        # COCO names images by a 12-digit zero-padded id, e.g. COCO_val2014_000000000042.jpg.
        return os.path.join(manual_dir, self.image_dir, f"{self.image_prefix}{image_id:012d}.jpg")


SPLIT_FILES = {
    "train": SplitFiles("v2_OpenEnded_mscoco_train2014_questions.json",
                        "v2_mscoco_train2014_annotations.json", "train2014", "COCO_train2014_"),
    "validation": SplitFiles("v2_OpenEnded_mscoco_val2014_questions.json",
                             "v2_mscoco_val2014_annotations.json", "val2014", "COCO_val2014_"),
    "test": SplitFiles("v2_OpenEnded_mscoco_test2015_questions.json", None,
                       "test2015", "COCO_test2015_"),
    # TFDS split names cannot hold "-": the official "test-dev" is `test_dev` here.
    "test_dev": SplitFiles("v2_OpenEnded_mscoco_test-dev2015_questions.json", None,
                           "test2015", "COCO_test2015_"),
}
ANSWERS_PER_QUESTION = 10
# The splits the harness reads (the VQA task trains on train and scores validation); test / test_dev are optional.
NEEDED_SPLITS = ("train", "validation")

log = logging.getLogger("harness")


def check_files(manual_dir: str) -> None:
    """What `harness prepare vqav2` needs, checked before anything is written (see `NEEDED_SPLITS`)."""
    files = [SPLIT_FILES[s] for s in NEEDED_SPLITS]
    manual.require(manual_dir, [p for f in files for p in (f.questions, f.annotations, f.image_dir + "/")],
                   "vqav2", manual_dir)


def _find_split_files(manual_dir: str) -> dict[str, SplitFiles]:
    """Splits whose questions file is present; a present split with a missing file is an error."""
    found = {}
    for split, files in SPLIT_FILES.items():
        if not os.path.exists(os.path.join(manual_dir, files.questions)):
            if files.annotations and os.path.exists(os.path.join(manual_dir, files.annotations)):
                raise HarnessError(
                    f"VQAv2 {split}: {files.questions} is missing from {manual_dir} (its "
                    f"annotations file {files.annotations} is there); place the questions file too")
            log.warning("VQAv2 %s: %s not in %s; the split is left out", split,
                            files.questions, manual_dir)
            continue
        if files.annotations and not os.path.exists(os.path.join(manual_dir, files.annotations)):
            raise HarnessError(
                f"VQAv2 {split}: {files.annotations} is missing from {manual_dir} (its questions "
                f"file {files.questions} is there); place the annotations file next to it")
        if not os.path.isdir(os.path.join(manual_dir, files.image_dir)):
            raise HarnessError(
                f"VQAv2 {split}: image folder {files.image_dir}/ is missing from {manual_dir}; "
                f"unzip COCO's {files.image_dir}.zip there")
        found[split] = files
    if not found:
        expected = ", ".join(f.questions for f in SPLIT_FILES.values())
        raise HarnessError(f"no VQAv2 questions file in {manual_dir} (expected any of {expected}); "
                           f"see `vqav2` MANUAL_DOWNLOAD_INSTRUCTIONS")
    return found


def iter_split(manual_dir: str, files: SplitFiles) -> Iterator[tuple[int, dict[str, Any]]]:
    """(question_id, example) for every question of one split, images as JPEG bytes."""
    questions_path = os.path.join(manual_dir, files.questions)
    questions = manual.read_json(questions_path, "VQAv2").get("questions")
    if questions is None:
        raise HarnessError(f"{questions_path} has no 'questions' list; is it a VQAv2 questions file?")
    annotations: dict[int, dict[str, Any]] = {}
    if files.annotations:
        annotations_path = os.path.join(manual_dir, files.annotations)
        records = manual.read_json(annotations_path, "VQAv2").get("annotations")
        if records is None:
            raise HarnessError(f"{annotations_path} has no 'annotations' list; "
                               "is it a VQAv2 annotations file?")
        annotations = {int(a["question_id"]): a for a in records}
    for q in questions:
        question_id, image_id = int(q["question_id"]), int(q["image_id"])
        example = {
            "image": manual.read_image(files.image_path(manual_dir, image_id), "VQAv2",
                                       "unzip the COCO image folder it names"),
            "image_id": image_id,
            "question_id": question_id,
            "question": q["question"],
            "question_type": "",
            "answer_type": "",
            "multiple_choice_answer": "",
            "answers": [],
            "answer_confidence": [],
        }
        if files.annotations:
            a = annotations.get(question_id)
            if a is None:
                raise HarnessError(f"question {question_id} of {files.questions} has no entry in "
                                   f"{files.annotations}; use the matching pair of files")
            if int(a["image_id"]) != image_id:
                raise HarnessError(f"question {question_id}: image_id {image_id} in "
                                   f"{files.questions} but {a['image_id']} in {files.annotations}")
            answers = sorted(a["answers"], key=lambda x: int(x.get("answer_id", 0)))
            example.update(
                question_type=a.get("question_type", ""),
                answer_type=a["answer_type"],
                multiple_choice_answer=a["multiple_choice_answer"],
                answers=[x["answer"] for x in answers],
                answer_confidence=[x.get("answer_confidence", "") for x in answers],
            )
        yield question_id, example


class Vqav2(tfds.core.GeneratorBasedBuilder):
    """VQAv2 (balanced real images), one example per question, from manually placed files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: train, validation, test, test_dev."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download from https://visualqa.org/download.html and https://cocodataset.org/#download and
    extract into the manual directory (by default <data_dir>/downloads/manual/) so that it holds:
      v2_OpenEnded_mscoco_train2014_questions.json     (v2_Questions_Train_mscoco.zip)
      v2_mscoco_train2014_annotations.json             (v2_Annotations_Train_mscoco.zip)
      v2_OpenEnded_mscoco_val2014_questions.json       (v2_Questions_Val_mscoco.zip)
      v2_mscoco_val2014_annotations.json               (v2_Annotations_Val_mscoco.zip)
      v2_OpenEnded_mscoco_test2015_questions.json      (v2_Questions_Test_mscoco.zip; optional)
      v2_OpenEnded_mscoco_test-dev2015_questions.json  (same zip; optional -> split test_dev)
      train2014/COCO_train2014_000000000009.jpg ...    (COCO train2014.zip)
      val2014/COCO_val2014_000000000042.jpg ...        (COCO val2014.zip)
      test2015/COCO_test2015_000000000001.jpg ...      (COCO test2015.zip; for test / test_dev)
    A split is built when its questions file is present. The COCO image folders are the ones
    coco_captions uses too; symlinks are fine.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "VQAv2 open-ended questions on COCO images; one example per question with its 10 "
                "annotator answers (none for test / test_dev)."
            ),
            features=tfds.features.FeaturesDict({
                # Stored as the original COCO JPEG bytes; the few greyscale ones decode to 3 channels.
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "image_id": tf.int64,
                "question_id": tf.int64,
                "question": tfds.features.Text(),
                "question_type": tfds.features.Text(),
                "answer_type": tfds.features.Text(),
                "multiple_choice_answer": tfds.features.Text(),
                "answers": tfds.features.Sequence(tfds.features.Text()),
                "answer_confidence": tfds.features.Sequence(tfds.features.Text()),
            }),
            homepage="https://visualqa.org/",
            citation=(
                "@inproceedings{goyal2017making,\n"
                "  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding "
                "in Visual Question Answering},\n"
                "  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and "
                "Parikh, Devi},\n"
                "  booktitle={CVPR},\n  year={2017}\n}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        manual_dir = manual.manual_dir(dl_manager, "VQAv2", "vqav2")
        return {split: self._generate_examples(manual_dir, files)
                for split, files in _find_split_files(manual_dir).items()}

    def _generate_examples(self, manual_dir: str,
                           files: SplitFiles) -> Iterator[tuple[int, dict[str, Any]]]:
        yield from iter_split(manual_dir, files)
