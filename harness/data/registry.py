"""The dataset registry: every fact the harness knows about a dataset before reading it.

`DATASETS` maps a name to its `DatasetInfo`: the TFDS name, the split string of each role the paper /
big_vision uses ("train", "minival", "fewshot_train", ...), how to prepare it, its feature keys (labels,
captions, VQA questions and answers, image ids), what the paper's tables call it, and whether its labels
are ImageNet-1k ids. Tasks read these facts here instead of keeping their own tables. `FEWSHOT_DATASETS`
and `PAPER_DATASET_ORDER` give the paper's dataset order. This module reads no data and imports no
TensorFlow; `harness.data.pipeline` reads the splits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from harness.errors import HarnessError, did_you_mean

DATA_DIR_ENV = "TFDS_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class VqaFeatures:
    """Where a VQA dataset keeps its questions and answers (flattened feature keys; "" = none), and the
    split role the VQA task evaluates on (it trains on "train"). Questions are one example each (VQAv2),
    or a sequence inside one image example (proxy_scenes' "questions/..." keys)."""

    question: str
    question_id: str
    answer: str  # one string per question: the training target where there is no `answers`
    answers: str = ""  # the 10 annotator answers (VQAv2 scoring and training); "": exact match on `answer`
    answer_type: str = ""
    eval_role: str = "test"

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.question, self.question_id, self.answer, self.answers, self.answer_type) if k)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the harness knows about one dataset before reading it.

    `splits` maps a role ("train", "test", "minival", "fewshot_train", ...) to the TFDS split
    string the paper / big_vision uses for it; `prepare` is the command that prepares the data,
    with `{data_dir}` (and `{name}`) placeholders.
    """

    name: str
    tfds_name: str
    splits: Mapping[str, str]
    prepare: str
    image_key: str = "image"
    label_key: str | None = "label"
    num_classes: int | None = None
    # big_vision's few-shot key, used in metric names like "z/pets_10shot-seed-0".
    short_name: str = ""
    text_key: str | None = None
    description: str = ""
    # Captioning: the feature that identifies an image (the predictions' "image_id").
    image_id_key: str = "image_id"
    # VQA: where the questions and answers are; None for a dataset without questions.
    vqa: VqaFeatures | None = None
    # What the paper's tables, and so the metric names, call this dataset's test set where that is not
    # its name (Table 2's "val", "real", "v2"); "": each task's own default.
    report_tag: str = ""
    # The labels are ImageNet-1k class ids, so CLIP's curated ImageNet class names apply to them.
    imagenet_labels: bool = False

    def split(self, role: str) -> str:
        """The TFDS split string for a role, e.g. `DATASETS["imagenet2012"].split("minival")`."""
        if not self.splits:  # a name the registry does not know: no roles at all
            raise HarnessError(f"dataset '{self.name}' is not in the harness's registry"
                               + did_you_mean(base_name(self.name), DATASETS)
                               + f", so it has no '{role}' split; `harness ls datasets` lists the known ones")
        if role not in self.splits:
            raise HarnessError(f"dataset '{self.name}' has no '{role}' split; it has "
                               f"{', '.join(sorted(self.splits))}")
        return self.splits[role]

    def prepare_command(self, data_dir: str | None = None) -> str:
        return self.prepare.format(data_dir=default_data_dir(data_dir), name=self.name)


def _tfds_build(name: str, note: str = "") -> str:
    return f"run `tfds build {name} --data_dir {{data_dir}}`{note}"


def _fewshot(train: str, test: str, **more: str) -> dict[str, str]:
    return {"train": train, "test": test, "fewshot_train": train, "fewshot_test": test, **more}


_HARNESS_PREPARE = "run `harness prepare {name} --data-dir {data_dir}`"

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "imagenet2012", "imagenet2012",
            {"train": "train", "test": "validation", "validation": "validation",
             # big_vision's minival: the last 1% of train (the paper's Table 1 used train[98%:]).
             "minitrain": "train[:99%]", "minival": "train[99%:]",
             # The first 65000 train images hold at least 30 shots of every class.
             "fewshot_train": "train[:65000]", "fewshot_test": "validation"},
            "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into "
            "{data_dir}/downloads/manual/ and run `tfds build imagenet2012 --data_dir {data_dir}`",
            num_classes=1000, short_name="imagenet", report_tag="val", imagenet_labels=True,
            description="ImageNet-1k (ILSVRC 2012)"),
        DatasetInfo(
            "imagenet2012_real", "imagenet2012_real", {"test": "validation"},
            "download ILSVRC2012_img_val.tar into {data_dir}/downloads/manual/ and run "
            "`tfds build imagenet2012_real --data_dir {data_dir}`",
            label_key="real_label", num_classes=1000, short_name="real", report_tag="real", imagenet_labels=True,
            description="ImageNet validation with ReaL multi-labels (some images have none)"),
        DatasetInfo(
            "imagenet_v2", "imagenet_v2", {"test": "test"}, _tfds_build("imagenet_v2"),
            num_classes=1000, short_name="v2", report_tag="v2", imagenet_labels=True,
            description="ImageNetV2 matched-frequency test set"),
        DatasetInfo(
            "coco_captions", "coco_captions",
            # TFDS's coco_captions holds the Karpathy splits; Karpathy's train is train+restval.
            {"train": "train+restval", "validation": "val", "test": "test"},
            _tfds_build("coco_captions", " (downloads ~20 GB: COCO 2014 and the Karpathy splits)"),
            label_key=None, short_name="coco", text_key="captions/text", image_id_key="image/id",
            description="COCO 2014 captions, Karpathy splits (5 captions per image)"),
        DatasetInfo(
            "cifar100", "cifar100", _fewshot("train", "test"), _tfds_build("cifar100"),
            num_classes=100, short_name="cifar100"),
        DatasetInfo(
            "oxford_iiit_pet", "oxford_iiit_pet", _fewshot("train", "test"),
            _tfds_build("oxford_iiit_pet"), num_classes=37, short_name="pets"),
        DatasetInfo(
            "caltech_birds2011", "caltech_birds2011", _fewshot("train", "test"),
            _tfds_build("caltech_birds2011"), num_classes=200, short_name="birds"),
        DatasetInfo(
            "caltech101", "caltech101", _fewshot("train", "test"), _tfds_build("caltech101"),
            num_classes=102, short_name="caltech"),
        DatasetInfo(
            # big_vision pins version 2.1.0 (the one with corrected labels).
            "cars196", "cars196:2.1.0", _fewshot("train", "test"),
            _tfds_build("cars196:2.1.0"), num_classes=196, short_name="cars"),
        DatasetInfo(
            # Only a train split exists; big_vision's few-shot config splits it 2000 / 3000.
            "colorectal_histology", "colorectal_histology",
            _fewshot("train[:2000]", "train[2000:]"), _tfds_build("colorectal_histology"),
            num_classes=8, short_name="col_hist"),
        DatasetInfo(
            "dtd", "dtd", _fewshot("train", "test", validation="validation"), _tfds_build("dtd"),
            num_classes=47, short_name="dtd"),
        DatasetInfo(
            # Only a train split (2100 images); big_vision's few-shot config splits it 1000 / 1100.
            "uc_merced", "uc_merced", _fewshot("train[:1000]", "train[1000:]"),
            _tfds_build("uc_merced"), num_classes=21, short_name="uc_merced"),
        DatasetInfo(
            "proxy_scenes", "proxy_scenes",
            _fewshot("train", "test", pretrain="pretrain", validation="val"), _HARNESS_PREPARE,
            num_classes=24, short_name="proxy_scenes", text_key="captions",
            vqa=VqaFeatures("questions/question", "questions/question_id", "questions/multiple_choice_answer",
                            "questions/answers", "questions/answer_type"),
            description="generated shapes scenes: labels, captions and VQA questions (offline)"),
        DatasetInfo(
            "proxy_digits", "proxy_digits", _fewshot("train", "test"), _HARNESS_PREPARE,
            num_classes=10, short_name="proxy_digits",
            description="scikit-learn's handwritten digits, 32x32 (offline)"),
        DatasetInfo(
            "vqav2", "vqav2",
            {"train": "train", "validation": "validation", "test": "test",
             "test_dev": "test_dev"},
            "place the VQAv2 question/annotation JSON files and the COCO train2014/ val2014/ image "
            "folders in {data_dir}/downloads/manual/ (see `vqav2` MANUAL_DOWNLOAD_INSTRUCTIONS) "
            "and run `harness prepare vqav2 --data-dir {data_dir}`",
            label_key=None, short_name="vqav2", text_key="question",
            # The test splits' answers are not public (the official server scores them).
            vqa=VqaFeatures("question", "question_id", "multiple_choice_answer", "answers", "answer_type",
                            eval_role="validation"),
            description="VQAv2 open-ended questions on COCO images, one example per question"),
        DatasetInfo(
            # big_vision's GQA transfer (configs/proj/paligemma/transfers/gqa.py) trains on train_balanced and
            # reports testdev_balanced (val_balanced tunes hyper-parameters).
            "gqa", "gqa",
            {"train": "train_balanced", "validation": "val_balanced", "test": "testdev_balanced",
             "test_balanced": "test_balanced", "challenge_balanced": "challenge_balanced"},
            "unzip GQA's questions1.2.zip and images.zip into {data_dir}/downloads/manual/gqa/ (see `gqa` "
            "MANUAL_DOWNLOAD_INSTRUCTIONS) and run `harness prepare gqa --data-dir {data_dir}`",
            label_key=None, short_name="gqa", text_key="question",
            vqa=VqaFeatures("question", "question_id", "answer", eval_role="test"),
            description="GQA balanced questions on Visual Genome images, one example per question"),
        DatasetInfo(
            # big_vision's OCR-VQA transfer (configs/proj/paligemma/transfers/ocrvqa.py, final_split=False):
            # train on train + val[20000:], val[:20000] as minival, report test.
            "ocrvqa", "ocrvqa",
            {"train": "train+val[20000:]", "minival": "val[:20000]", "validation": "val", "test": "test"},
            "place OCR-VQA's dataset.json and the covers its downloader fetched (images/) in "
            "{data_dir}/downloads/manual/ocrvqa/ (see `ocrvqa` MANUAL_DOWNLOAD_INSTRUCTIONS) and run "
            "`harness prepare ocrvqa --data-dir {data_dir}`",
            label_key=None, short_name="ocrvqa", text_key="question",
            vqa=VqaFeatures("question", "question_id", "answer", eval_role="test"),
            description="OCR-VQA questions on book covers, one example per question"),
    ]
}

# Table 3 of the paper, in its column order.
FEWSHOT_DATASETS = ("imagenet2012", "cifar100", "oxford_iiit_pet", "caltech_birds2011",
                    "caltech101", "cars196", "colorectal_histology", "dtd", "uc_merced")
# The paper's datasets in its tables' order, spelt as in metric names (reports order columns by it):
# Table 3's few-shot columns, Table 4's OCR-VQA, GQA, VQAv2 and COCO (the panoptic rows), then Table 2's
# ImageNet test sets under their `report_tag`s; "r", "a" and "objectnet" (ImageNet-R / -A, ObjectNet) appear
# only in the paper's rows and have no entry.
PAPER_DATASET_ORDER = (*FEWSHOT_DATASETS, "ocrvqa", "gqa", "vqav2", "coco",
                       "val", "real", "v2", "r", "a", "objectnet")


def base_name(name: str) -> str:
    """"proxy_scenes/tiny" -> "proxy_scenes", "cars196:2.1.0" -> "cars196"."""
    return name.split("/")[0].split(":")[0]


def get_info(name: str) -> DatasetInfo:
    """The registry entry; a config of a known dataset ("proxy_scenes/tiny") inherits it, and any
    other name is taken as a plain TFDS dataset name."""
    if name in DATASETS:
        return DATASETS[name]
    base = base_name(name)
    if base in DATASETS:
        return dataclasses.replace(DATASETS[base], name=name, tfds_name=name)
    return DatasetInfo(name, name, {}, _tfds_build(name), label_key="label")


def default_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """`--data-dir` wins, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(os.fspath(chosen)))


# Datasets the harness generates itself, offline, in seconds: prepared on first use.
GENERATED = ("proxy_scenes", "proxy_digits")
# Datasets with a builder of ours that `harness prepare` runs (the others: `tfds build`).
OWN_BUILDERS = GENERATED + ("vqav2", "gqa", "ocrvqa")
