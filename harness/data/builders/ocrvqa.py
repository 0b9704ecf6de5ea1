"""`ocrvqa`: a TFDS builder for OCR-VQA (questions about book covers), from files placed by hand.

TFDS has no OCR-VQA builder and big_vision's (`ocrvqa_id`, used by
`configs/proj/paligemma/transfers/ocrvqa.py`) is not public. This one reads the official release of
https://ocr-vqa.github.io/: `dataset.json`, a dict image id -> {"imageURL", "questions" [...],
"answers" [...], "title", "authorName", "genre", "split"} with split 1 / 2 / 3 = train / val / test, and
the book covers its downloader saved as `images/<image id><extension of imageURL>`. One example per
question ("unbatched", as big_vision's: ~1M questions on ~207k covers, about 5 per cover).

Question ids are `<image id>_<i>`, i the question's position in the entry's list: stable for a given
dataset.json. The TFDS split names are big_vision's (`train`, `val`, `test`), so its split strings
(`train+val[20000:]`) work unchanged.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import tensorflow_datasets as tfds

from harness.data.builders import manual
from harness.errors import HarnessError

DATASET_JSON = "dataset.json"
IMAGES_DIR = "images"
# dataset.json's "split" codes, as OCR-VQA's loaders read them (e.g. mmpretrain's `OCRVQA`: 1 / 2 / 3).
SPLIT_CODES = {1: "train", 2: "val", 3: "test"}
_IMAGES_FIX = ("download the covers with the release's downloader into images/ next to dataset.json "
               "(images/<image id><extension of imageURL>)")


def check_files(manual_dir: str) -> None:
    """What `harness prepare ocrvqa` needs, checked before anything is written (the covers one by one later)."""
    manual.require(manual.dataset_root(manual_dir, "ocrvqa"), [DATASET_JSON, IMAGES_DIR + "/"], "ocrvqa", manual_dir)


def image_path(root: str, image_id: str, entry: dict) -> str:
    # The official downloader names a cover by its key plus the extension of its URL.
    return os.path.join(root, IMAGES_DIR, image_id + os.path.splitext(entry["imageURL"])[1])


def read_entries(root: str) -> dict[str, list[tuple[str, dict]]]:
    """split -> [(image id, entry)], every entry checked and every cover found before any is read."""
    path = os.path.join(root, DATASET_JSON)
    if not os.path.isfile(path):
        raise HarnessError(f"no OCR-VQA {DATASET_JSON} in {root}; place the release's {DATASET_JSON} and its "
                           "images/ folder there, see `ocrvqa` MANUAL_DOWNLOAD_INSTRUCTIONS")
    if not os.path.isdir(os.path.join(root, IMAGES_DIR)):
        raise HarnessError(f"OCR-VQA: image folder {IMAGES_DIR}/ is missing from {root}; {_IMAGES_FIX}")
    data = manual.read_json(path, "OCR-VQA")
    if not isinstance(data, dict):
        raise HarnessError(f"{path} is not a dict of image id -> entry; is it OCR-VQA's {DATASET_JSON}?")
    splits: dict[str, list[tuple[str, dict]]] = {s: [] for s in SPLIT_CODES.values()}
    for image_id, entry in data.items():
        if not isinstance(entry, dict) or any(k not in entry for k in ("imageURL", "questions", "answers", "split")):
            raise HarnessError(f"entry {image_id!r} of {path} lacks imageURL, questions, answers or split; is it "
                               f"OCR-VQA's {DATASET_JSON}?")
        if len(entry["questions"]) != len(entry["answers"]):
            raise HarnessError(f"entry {image_id!r} of {path} has {len(entry['questions'])} questions but "
                               f"{len(entry['answers'])} answers; re-download {DATASET_JSON}")
        split = SPLIT_CODES.get(entry["split"])
        if split is None:
            raise HarnessError(f"entry {image_id!r} of {path} has split {entry['split']!r}, not one of 1, 2, 3 "
                               "(train, val, test)")
        splits[split].append((image_id, entry))
    manual.require_files([image_path(root, i, e) for entries in splits.values() for i, e in entries],
                         "OCR-VQA", _IMAGES_FIX)
    return {s: entries for s, entries in splits.items() if entries}


def iter_split(root: str, entries: list[tuple[str, dict]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(question id, example) for every question of the entries, covers as their file bytes."""
    for image_id, entry in entries:
        image = manual.read_image(image_path(root, image_id, entry), "OCR-VQA", _IMAGES_FIX)
        for i, (question, answer) in enumerate(zip(entry["questions"], entry["answers"])):
            question_id = f"{image_id}_{i}"
            yield question_id, {
                "image": image,
                "image_id": image_id,
                "question_id": question_id,
                "question": question,
                "answer": answer,
                "title": entry.get("title") or "",
                "author_name": entry.get("authorName") or "",
                "genre": entry.get("genre") or "",
            }


class Ocrvqa(tfds.core.GeneratorBasedBuilder):
    """OCR-VQA, one example per question, from the official dataset.json and the downloaded covers."""

    name = "ocrvqa"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: train, val, test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the OCR-VQA release from https://ocr-vqa.github.io/ (dataset.json and the downloader script),
    run its downloader to fetch the book covers, and place both in <manual_dir>/ocrvqa/ (by default
    <data_dir>/downloads/manual/ocrvqa/; or pass that folder as --manual-dir) so that it holds:
      dataset.json
      images/<image id>.jpg ...   (each named by its dataset.json key + the extension of its imageURL)
    Every cover dataset.json names must be there (a missing one is reported with the count).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=("OCR-VQA: questions about book covers (title, author, genre, year); one example per "
                         "question with its one answer."),
            features=tfds.features.FeaturesDict({
                # The downloaded bytes as they are; the pp's `decode` reads JPEG, PNG, GIF and BMP alike.
                "image": tfds.features.Image(shape=(None, None, 3)),
                "image_id": tfds.features.Text(),
                "question_id": tfds.features.Text(),
                "question": tfds.features.Text(),
                "answer": tfds.features.Text(),
                "title": tfds.features.Text(),
                "author_name": tfds.features.Text(),
                "genre": tfds.features.Text(),
            }),
            homepage="https://ocr-vqa.github.io/",
            citation=(
                "@inproceedings{mishraICDAR19,\n"
                "  title={{OCR-VQA}: Visual Question Answering by Reading Text in Images},\n"
                "  author={Mishra, Anand and Shekhar, Shashank and Singh, Ajeet Kumar and Chakraborty, "
                "Anirban},\n"
                "  booktitle={ICDAR},\n  year={2019}\n}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = manual.dataset_root(manual.manual_dir(dl_manager, "OCR-VQA", "ocrvqa"), "ocrvqa")
        return {split: self._generate_examples(root, entries) for split, entries in read_entries(root).items()}

    def _generate_examples(self, root: str, entries: list) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from iter_split(root, entries)
