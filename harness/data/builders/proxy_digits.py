"""`proxy_digits`: real (scanned) images that ship inside an installed package, for offline checks.

scikit-learn's `load_digits()` holds 1797 handwritten digits (8x8, 17 grey levels 0..16, UCI
"Optical Recognition of Handwritten Digits", test part), so no download is needed. Each image is
scaled to 0..255 (`round(v * 255 / 16)`), upsampled 4x to 32x32 by nearest-neighbour pixel
replication (exact, no interpolation library involved), copied to 3 channels and stored as PNG.
Splits come from one fixed permutation (`numpy.random.default_rng(0)`): train = its first 1000
indices, test = the other 797.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
NUM_TRAIN = 1000
LABEL_NAMES = tuple(str(d) for d in range(10))
LABEL_TEXT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_PERMUTATION_SEED = 0


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as uint8 (N, 32, 32, 3) images and int64 labels, in scikit-learn's order."""
    # Here, not at the top: this module is imported whenever data is read, and scikit-learn's import costs
    # about a second that only the one-time build needs.
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), values 0..16
    scale = IMAGE_SIZE // grey.shape[1]
    big = grey.repeat(scale, axis=1).repeat(scale, axis=2)
    return np.repeat(big[..., None], 3, axis=-1), digits.target.astype(np.int64)


def split_indices(num_examples: int) -> dict[str, np.ndarray]:
    """The fixed train/test partition of scikit-learn's ordering."""
    order = np.random.default_rng(_PERMUTATION_SEED).permutation(num_examples)
    return {"train": order[:NUM_TRAIN], "test": order[NUM_TRAIN:]}


class ProxyDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits as a 32x32 RGB image classification dataset."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "scikit-learn load_digits (1797 handwritten digits, 8x8, 10 classes) upsampled by "
                "nearest-neighbour replication to 32x32 RGB. train: 1000, test: 797 (fixed "
                "permutation, seed 0)."
            ),
            features=tfds.features.FeaturesDict({
                "id": tf.int64,  # index in scikit-learn's order
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                             encoding_format="png"),
                "label": tfds.features.ClassLabel(names=list(LABEL_NAMES)),
            }),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
            citation="",
            metadata=tfds.core.MetadataDict(label_text_names=list(LABEL_TEXT_NAMES)),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        images, labels = load_digit_images()
        return {split: self._generate_examples(images, labels, indices)
                for split, indices in split_indices(len(labels)).items()}

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray,
                           indices: np.ndarray) -> Iterator[tuple[int, dict[str, Any]]]:
        for i in indices:
            yield int(i), {"id": int(i), "image": images[i], "label": int(labels[i])}
