"""`objectnet`: a TFDS builder for ObjectNet 1.0 from its folder release, placed by hand (nothing is downloaded).

TFDS has no ObjectNet builder. This one reads `objectnet-1.0.zip` (https://objectnet.dev/download.html) as it
unzips:

    objectnet-1.0/images/<folder>/<image>.png            313 class folders
    objectnet-1.0/mappings/folder_to_objectnet_label.json       folder -> ObjectNet class name
    objectnet-1.0/mappings/objectnet_to_imagenet_1k.json        ObjectNet class -> "ImageNet name; name; ..."
    objectnet-1.0/mappings/imagenet_to_label_2012_v2            one ImageNet class name per line
    objectnet-1.0/mappings/pytorch_to_imagenet_2012_id.json     ImageNet-1k id -> line of the file above

and writes one `test` example per image of the 113 classes that the mapping file relates to ImageNet
(the 200 others are not ImageNet classes), with:

- `image`: the PNG with its red border cropped (`BORDER_PX` on every side), stored losslessly as PNG;
- `label`: the ImageNet-1k ids (TFDS's / PyTorch's order, sorted WordNet ids) the image's class maps to, a
  set: some ObjectNet classes map to several ImageNet classes (e.g. two kinds of clock);
- `objectnet_label` (the ObjectNet class name) and `file_name` (`<folder>/<image>.png`).

The union of the mapped ImageNet ids is stored in the dataset's metadata (`class_subset`): a classifier's
1000-way prediction is restricted to them before scoring (`harness.data.class_subset`). Names resolve to ids
as the robustness evaluations that report ObjectNet do (mlfoundations/wise-ft src/datasets/objectnet.py
`get_metadata`): line i of `imagenet_to_label_2012_v2` names the class whose ImageNet id maps to i in
`pytorch_to_imagenet_2012_id.json`, lines stripped, a name repeated on a later line meaning the later one.

Disk note: 113 of the 313 class folders are built, their images re-encoded as PNG after the crop.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

from harness.data.builders import manual
from harness.errors import HarnessError

log = logging.getLogger("harness")

RELEASE = "objectnet-1.0"
FOLDER_TO_LABEL = "folder_to_objectnet_label.json"
LABEL_TO_IMAGENET = "objectnet_to_imagenet_1k.json"
IMAGENET_NAMES = "imagenet_to_label_2012_v2"
IMAGENET_ID_TO_LINE = "pytorch_to_imagenet_2012_id.json"
MAPPING_FILES = (FOLDER_TO_LABEL, LABEL_TO_IMAGENET, IMAGENET_NAMES, IMAGENET_ID_TO_LINE)
# The release's README calls the border "1 pixel"; its authors' evaluation code removes 2 pixels on every side
# (abarbu/objectnet-template-pytorch objectnet_pytorch_dataloader.py: crop (2, 2, width-2, height-2)), as does
# wise-ft's (src/datasets/objectnet.py `crop`).
BORDER_PX = 2


def find_release(manual_dir: str) -> str:
    """The folder holding `images/` and `mappings/`: `<manual_dir>/objectnet-1.0`, or the manual dir itself."""
    for root in (os.path.join(manual_dir, RELEASE), manual_dir):
        if os.path.isdir(os.path.join(root, "images")) and os.path.isdir(os.path.join(root, "mappings")):
            return root
    raise HarnessError(f"ObjectNet: no {RELEASE}/images/ and {RELEASE}/mappings/ in {manual_dir}; unzip "
                       f"{RELEASE}.zip (https://objectnet.dev/download.html) there")


def check_files(manual_dir: str) -> None:
    """What `harness prepare objectnet` needs, checked before anything is written: the release's images/ and
    its four mapping files."""
    manual.require(find_release(manual_dir), ["images/", *(f"mappings/{m}" for m in MAPPING_FILES)], "objectnet",
                   manual_dir)


def _read_json(path: str) -> Any:
    if not os.path.exists(path):
        raise HarnessError(f"ObjectNet mapping file {path} is missing; unzip the whole {RELEASE}.zip")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise HarnessError(f"ObjectNet mapping file {path} is not valid JSON ({e}); re-extract it") from e


def read_mapping(release: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{folder: (ObjectNet class name, sorted ImageNet-1k ids)} for the classes that map to ImageNet."""
    mappings = os.path.join(release, "mappings")
    folder_to_label = _read_json(os.path.join(mappings, FOLDER_TO_LABEL))
    label_to_imagenet = _read_json(os.path.join(mappings, LABEL_TO_IMAGENET))
    id_to_line = _read_json(os.path.join(mappings, IMAGENET_ID_TO_LINE))
    names_path = os.path.join(mappings, IMAGENET_NAMES)
    if not os.path.exists(names_path):
        raise HarnessError(f"ObjectNet mapping file {names_path} is missing; unzip the whole {RELEASE}.zip")
    with open(names_path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    line_to_id = {int(line): int(i) for i, line in id_to_line.items()}
    name_to_id = {}
    for line, name in enumerate(lines):
        if line in line_to_id:
            name_to_id[name] = line_to_id[line]  # a repeated name: the later line wins, as the references do
    out = {}
    for folder, label in folder_to_label.items():
        if label not in label_to_imagenet:
            continue  # one of the ObjectNet classes without an ImageNet counterpart
        ids = []
        for name in (n.strip() for n in label_to_imagenet[label].split(";")):
            if name not in name_to_id:
                raise HarnessError(f"ObjectNet: {LABEL_TO_IMAGENET} maps '{label}' to '{name}', which no line of "
                                   f"{IMAGENET_NAMES} (with an id in {IMAGENET_ID_TO_LINE}) names; re-extract "
                                   "the mappings")
            ids.append(name_to_id[name])
        out[folder] = (label, tuple(sorted(set(ids))))
    if not out:
        raise HarnessError(f"ObjectNet: no class of {FOLDER_TO_LABEL} is in {LABEL_TO_IMAGENET}; re-extract the mappings")
    return out


def crop_border(image: np.ndarray) -> np.ndarray:
    """The image without its `BORDER_PX`-wide frame."""
    h, w = image.shape[:2]
    if min(h, w) <= 2 * BORDER_PX:
        raise HarnessError(f"ObjectNet image of {w}x{h} px is too small to crop its {BORDER_PX}-pixel border")
    return image[BORDER_PX:h - BORDER_PX, BORDER_PX:w - BORDER_PX]


def iter_images(release: str, mapping: dict[str, tuple[str, tuple[int, ...]]]) -> Iterator[tuple[str, dict]]:
    """(key, example) for every PNG of the mapped classes, in folder and file-name order."""
    for folder in sorted(mapping):
        label, ids = mapping[folder]
        folder_path = os.path.join(release, "images", folder)
        if not os.path.isdir(folder_path):
            raise HarnessError(f"ObjectNet: image folder images/{folder}/ (class '{label}') is missing from "
                               f"{release}; unzip the whole {RELEASE}.zip")
        for file_name in sorted(os.listdir(folder_path)):
            if not file_name.lower().endswith(".png"):
                continue
            with open(os.path.join(folder_path, file_name), "rb") as f:
                encoded = f.read()
            try:
                image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
            except tf.errors.InvalidArgumentError as e:
                raise HarnessError(f"ObjectNet image images/{folder}/{file_name} cannot be decoded ({e.message}); "
                                   "re-extract it") from None
            key = f"{folder}/{file_name}"
            yield key, {"image": crop_border(image), "label": list(ids), "objectnet_label": label,
                        "file_name": key}


class Objectnet(tfds.core.GeneratorBasedBuilder):
    """ObjectNet 1.0, the images of its classes that map to ImageNet-1k, from the manually unzipped release."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: the 113 ImageNet-mapped classes, border cropped."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download objectnet-1.0.zip from https://objectnet.dev/download.html (password-protected: the
    password is on that page, with the dataset's license) and unzip it into the manual directory (by
    default <data_dir>/downloads/manual/) so that it holds:
      objectnet-1.0/images/<folder>/<image>.png
      objectnet-1.0/mappings/folder_to_objectnet_label.json
      objectnet-1.0/mappings/objectnet_to_imagenet_1k.json
      objectnet-1.0/mappings/imagenet_to_label_2012_v2
      objectnet-1.0/mappings/pytorch_to_imagenet_2012_id.json
    """

    def _info(self) -> tfds.core.DatasetInfo:
        imagenet = tfds.features.ClassLabel(names_file=imagenet_common.label_names_file())
        return self.dataset_info_from_configs(
            description=("ObjectNet 1.0 test images of the classes that map to ImageNet-1k, red border "
                         "cropped; labels are the mapped ImageNet-1k ids (a set per image)."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "label": tfds.features.Sequence(imagenet),
                "objectnet_label": tfds.features.Text(),
                "file_name": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(),
            homepage="https://objectnet.dev/",
            citation=(
                "@inproceedings{barbu2019objectnet,\n"
                "  title={ObjectNet: A large-scale bias-controlled dataset for pushing the limits of object "
                "recognition models},\n"
                "  author={Barbu, Andrei and Mayo, David and Alverio, Julian and Luo, William and Wang, "
                "Christopher and Gutfreund, Dan and Tenenbaum, Josh and Katz, Boris},\n"
                "  booktitle={NeurIPS},\n  year={2019}\n}"
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        try:
            manual_dir = os.fspath(dl_manager.manual_dir)
        except AssertionError as e:  # TFDS's "does not exist or is empty"
            where = str(e.args[0]).split(" does not exist")[0]  # "Manual directory <path>"
            raise HarnessError(f"ObjectNet: {where} does not exist or is empty; unzip {RELEASE}.zip "
                               "(https://objectnet.dev/download.html) there") from e
        release = find_release(manual_dir)
        mapping = read_mapping(release)
        self.info.metadata["class_subset"] = sorted({i for _, ids in mapping.values() for i in ids})
        log.info("ObjectNet: %d classes map to %d ImageNet classes", len(mapping),
                     len(self.info.metadata["class_subset"]))
        return {"test": self._generate_examples(release, mapping)}

    def _generate_examples(self, release: str, mapping) -> Iterator[tuple[str, dict[str, Any]]]:
        yield from iter_images(release, mapping)
