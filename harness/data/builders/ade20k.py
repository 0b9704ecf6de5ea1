"""`ade20k`: a TFDS builder for the ADE20k scene-parsing benchmark (150 classes), from the official
ADEChallengeData2016.zip placed by hand (nothing is downloaded).

TFDS's `scene_parse150` is not this data: it reads the Places challenge 2017 `images.tar` and
`annotations_instance.tar` (instance masks of 100 classes). The 150-class semantic benchmark that DINOv2 /
DINOv3 / mmsegmentation report is http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip:

    ADEChallengeData2016/images/training/ADE_train_00000001.jpg ...      20,210 images
    ADEChallengeData2016/images/validation/ADE_val_00000001.jpg ...      2,000 images
    ADEChallengeData2016/annotations/training/ADE_train_00000001.png     one single-channel PNG per image:
    ADEChallengeData2016/annotations/validation/ADE_val_00000001.png     0 = "other", 1..150 the classes

The builder reads the zip itself (or the folder it unzips to) and writes one example per image, in file-name
order (DINOv3's reader sorts the names too): `image` (the JPEG bytes as they are), `segmentation` (the
annotation PNG's bytes as they are: raw values 0..150; the segmentation task maps 0 to the ignore label and
k to k - 1, `reduce_zero_label`) and `file_name`. Splits `train` (images/training) and `validation`
(images/validation), every image paired with its annotation (a missing one is one line, before anything is
written).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from harness.data.builders import manual
from harness.errors import HarnessError

ZIP_NAME = "ADEChallengeData2016.zip"
RELEASE = "ADEChallengeData2016"
SPLITS = {"train": "training", "validation": "validation"}
NUM_CLASSES = 150
_FIX = (f"download {ZIP_NAME} (http://data.csail.mit.edu/places/ADEchallenge/{ZIP_NAME}) into the manual "
        "directory, unchanged (or unzipped there)")


class _Source:
    """The release, as a zip or as the folder it unzips to: member names relative to the release root."""

    def __init__(self, manual_dir: str):
        self.zip: zipfile.ZipFile | None = None
        path = os.path.join(manual_dir, ZIP_NAME)
        folder = next((p for p in (os.path.join(manual_dir, RELEASE), manual_dir)
                       if os.path.isdir(os.path.join(p, "images"))), None)
        if os.path.isfile(path):
            try:
                self.zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile:
                raise HarnessError(f"ADE20k: {path} is not a readable zip; {_FIX}") from None
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
            self.prefix = f"{RELEASE}/" if any(n.startswith(f"{RELEASE}/") for n in names) else ""
            self.names = {n[len(self.prefix):] for n in names if n.startswith(self.prefix)}
            self.where = path
        elif folder is not None:
            self.root = folder
            self.names = {os.path.relpath(os.path.join(d, f), folder).replace(os.sep, "/")
                          for sub in ("images", "annotations") for d, _, files in os.walk(os.path.join(folder, sub))
                          for f in files}
            self.where = folder
        else:
            raise HarnessError(f"ADE20k: neither {path} nor an unzipped {RELEASE}/ folder is in {manual_dir}; "
                               f"{_FIX}")

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(self.prefix + name)
        with open(os.path.join(self.root, name), "rb") as f:
            return f.read()

    def pairs(self, folder: str) -> list[tuple[str, str]]:
        """(image, annotation) member names of one split, sorted; every image must have its annotation."""
        images = sorted(n for n in self.names if n.startswith(f"images/{folder}/") and n.lower().endswith(".jpg"))
        if not images:
            raise HarnessError(f"ADE20k: {self.where} has no images/{folder}/*.jpg; {_FIX}")
        pairs = [(n, f"annotations/{folder}/{os.path.splitext(os.path.basename(n))[0]}.png") for n in images]
        missing = [a for _, a in pairs if a not in self.names]
        if missing:
            shown = ", ".join(missing[:3]) + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
            raise HarnessError(f"ADE20k: {len(missing)} of {len(pairs)} annotations are missing from {self.where}: "
                               f"{shown}; {_FIX}")
        return pairs


def check_files(manual_dir: str) -> None:
    """What `harness prepare ade20k` needs, checked before anything is written: the zip (or its unzipped folder)
    with images and annotations for both splits."""
    source = _Source(manual_dir)
    for folder in SPLITS.values():
        source.pairs(folder)
    if source.zip is not None:
        source.zip.close()


def check_annotation(png: bytes, name: str) -> None:
    """A single-channel PNG with values 0..150 (ADE20k's raw labels), else one line naming the file."""
    try:
        label = tf.io.decode_png(png, channels=0).numpy()
    except tf.errors.InvalidArgumentError as e:
        raise HarnessError(f"ADE20k annotation {name} cannot be decoded ({e.message}); re-extract {ZIP_NAME}") from None
    if label.ndim != 3 or label.shape[-1] != 1 or label.dtype != np.uint8:
        raise HarnessError(f"ADE20k annotation {name} is {label.dtype} with shape {label.shape}, not a single-channel "
                           f"8-bit PNG; is it {RELEASE}'s annotation?")
    if label.max() > NUM_CLASSES:
        raise HarnessError(f"ADE20k annotation {name} holds value {int(label.max())}, above the {NUM_CLASSES} classes; "
                           f"is it {RELEASE}'s annotation?")


def iter_split(source: _Source, folder: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for image_name, label_name in source.pairs(folder):
        label = source.read(label_name)
        check_annotation(label, label_name)
        file_name = os.path.basename(image_name)
        yield file_name, {"image": source.read(image_name), "segmentation": label, "file_name": file_name}


class Ade20k(tfds.core.GeneratorBasedBuilder):
    """ADE20k scene parsing (ADEChallengeData2016, 150 classes) from the official zip in the manual directory."""

    name = "ade20k"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: ADEChallengeData2016 train and validation."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
    Download {ZIP_NAME} from http://data.csail.mit.edu/places/ADEchallenge/{ZIP_NAME} (the MIT Scene Parsing
    benchmark's release) and place it, as it is, in the manual directory (by default
    <data_dir>/downloads/manual/; or pass its folder as --manual-dir). The unzipped {RELEASE}/ folder
    (images/, annotations/) works as well.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=("ADE20k scene parsing (ADEChallengeData2016): images with per-pixel labels, 0 = other, "
                         "1..150 the classes of the SceneParsing benchmark."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "segmentation": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                "file_name": tfds.features.Text(),
            }),
            homepage="http://sceneparsing.csail.mit.edu/",
            citation=(
                "@inproceedings{zhou2017scene,\n"
                "  title={Scene Parsing through ADE20K Dataset},\n"
                "  author={Zhou, Bolei and Zhao, Hang and Puig, Xavier and Fidler, Sanja and Barriuso, Adela and "
                "Torralba, Antonio},\n"
                "  booktitle={CVPR},\n  year={2017}\n}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        source = _Source(manual.manual_dir(dl_manager, "ADE20k", "ade20k"))
        for folder in SPLITS.values():
            source.pairs(folder)  # every split checked before anything is written
        return {split: self._generate_examples(source, folder) for split, folder in SPLITS.items()}

    def _generate_examples(self, source, folder: str) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from iter_split(source, folder)

