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
class SegmentationFeatures:
    """A dataset's per-pixel class labels: the feature (a single-channel PNG), how many classes are scored, and
    whether raw 0 means "other" (ignored) and k class k - 1 (ADE20k's `reduce_zero_label`)."""

    key: str
    num_classes: int
    reduce_zero_label: bool = False
    eval_role: str = "test"


@dataclasses.dataclass(frozen=True)
class DepthFeatures:
    """A dataset's depth maps (metres, 0 = missing) and the pp ops that crop image and depth together for
    training / evaluation ("" = the whole image)."""

    key: str
    train_crop: str = ""
    eval_crop: str = ""
    eval_role: str = "test"


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
    # A test set drawn from part of ImageNet-1k's classes (ImageNet-R / -A: 200; ObjectNet: the ImageNet
    # classes its 113 overlapping classes map to): the ImageNet ids a prediction is restricted to before
    # its argmax (`harness.eval.metrics.restricted_argmax`; `harness.data.class_subset` reads it). A tuple of
    # ids, or SUBSET_IN_BUILD where our builder derives them from the release and stores them in the
    # prepared dataset's metadata. (): all of the label space.
    class_subset: tuple[int, ...] | str = ()
    # Dense targets (the `segmentation` / `depth` tasks); None for a dataset without them.
    segmentation: SegmentationFeatures | None = None
    depth: DepthFeatures | None = None

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

# The ImageNet-1k ids (TFDS / PyTorch order: sorted WordNet ids) of the 200 classes of ImageNet-A and of
# ImageNet-R, as the datasets' authors score them (hendrycks/natural-adv-examples eval.py `indices_in_1k`,
# hendrycks/imagenet-r eval.py `imagenet_r_mask`) and big_vision lists them
# (big_vision/datasets/imagenet/class_names.py IMAGENET_A_LABELSET, IMAGENET_R_LABELSET).
IMAGENET_A_CLASSES = (
    6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94, 96, 97, 99, 105,
    107, 108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234, 235, 254, 277, 283, 287, 291, 295,
    298, 301, 306, 307, 308, 309, 310, 311, 313, 314, 315, 317, 319, 323, 324, 326, 327, 330, 334, 335, 336,
    347, 361, 363, 372, 378, 386, 397, 400, 401, 402, 404, 407, 411, 416, 417, 420, 425, 428, 430, 437, 438,
    445, 456, 457, 461, 462, 470, 472, 483, 486, 488, 492, 496, 514, 516, 528, 530, 539, 542, 543, 549, 552,
    557, 561, 562, 569, 572, 573, 575, 579, 589, 606, 607, 609, 614, 626, 627, 640, 641, 642, 643, 658, 668,
    677, 682, 684, 687, 701, 704, 719, 736, 746, 749, 752, 758, 763, 765, 768, 773, 774, 776, 779, 780, 786,
    792, 797, 802, 803, 804, 813, 815, 820, 823, 831, 833, 835, 839, 845, 847, 850, 859, 862, 870, 879, 880,
    888, 890, 897, 900, 907, 913, 924, 932, 933, 934, 937, 943, 945, 947, 951, 954, 956, 957, 959, 971, 972,
    980, 981, 984, 986, 987, 988,
)
IMAGENET_R_CLASSES = (
    1, 2, 4, 6, 8, 9, 11, 13, 22, 23, 26, 29, 31, 39, 47, 63, 71, 76, 79, 84, 90, 94, 96, 97, 99, 100, 105,
    107, 113, 122, 125, 130, 132, 144, 145, 147, 148, 150, 151, 155, 160, 161, 162, 163, 171, 172, 178, 187,
    195, 199, 203, 207, 208, 219, 231, 232, 234, 235, 242, 245, 247, 250, 251, 254, 259, 260, 263, 265, 267,
    269, 276, 277, 281, 288, 289, 291, 292, 293, 296, 299, 301, 308, 309, 310, 311, 314, 315, 319, 323, 327,
    330, 334, 335, 337, 338, 340, 341, 344, 347, 353, 355, 361, 362, 365, 366, 367, 368, 372, 388, 390, 393,
    397, 401, 407, 413, 414, 425, 428, 430, 435, 437, 441, 447, 448, 457, 462, 463, 469, 470, 471, 472, 476,
    483, 487, 515, 546, 555, 558, 570, 579, 583, 587, 593, 594, 596, 609, 613, 617, 621, 629, 637, 657, 658,
    701, 717, 724, 763, 768, 774, 776, 779, 780, 787, 805, 812, 815, 820, 824, 833, 847, 852, 866, 875, 883,
    889, 895, 907, 928, 931, 932, 933, 934, 936, 937, 943, 945, 947, 948, 949, 951, 953, 954, 957, 963, 965,
    967, 980, 981, 983, 988,
)
# `class_subset` of a dataset whose builder (ours) stores the subset in the prepared dataset's metadata.
SUBSET_IN_BUILD = "metadata"

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
        # ImageNet-R / -A: TFDS's builders (labels = ImageNet-1k ids); their archives, placed by hand,
        # are used instead of a download when the file name matches (TFDS checks them against its checksums).
        DatasetInfo(
            "imagenet_r", "imagenet_r", {"test": "test"},
            "download imagenet-r.tar (https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar) into "
            "{data_dir}/downloads/manual/ and run `tfds build imagenet_r --data_dir {data_dir}`",
            num_classes=1000, report_tag="r", imagenet_labels=True, class_subset=IMAGENET_R_CLASSES,
            description="ImageNet-R: 30000 renditions of 200 ImageNet classes"),
        DatasetInfo(
            "imagenet_a", "imagenet_a", {"test": "test"},
            "download imagenet-a.tar (https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar) into "
            "{data_dir}/downloads/manual/ and run `tfds build imagenet_a --data_dir {data_dir}`",
            num_classes=1000, report_tag="a", imagenet_labels=True, class_subset=IMAGENET_A_CLASSES,
            description="ImageNet-A: 7500 natural adversarial examples of 200 ImageNet classes"),
        DatasetInfo(
            "objectnet", "objectnet", {"test": "test"},
            "download objectnet-1.0.zip (https://objectnet.dev/download.html), unzip it into "
            "{data_dir}/downloads/manual/ (so that objectnet-1.0/images/ and objectnet-1.0/mappings/ are "
            "there) and run `harness prepare objectnet --data-dir {data_dir}`",
            num_classes=1000, report_tag="objectnet", imagenet_labels=True, class_subset=SUBSET_IN_BUILD,
            description="ObjectNet 1.0: the images of its 113 classes that map to ImageNet, border cropped"),
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
            # Mask 0 = background (a class, not ignored), 1 + class id for the objects' pixels.
            segmentation=SegmentationFeatures("segmentation", 25), depth=DepthFeatures("depth"),
            description="generated shapes scenes: labels, captions, VQA questions, class masks, depth (offline)"),
        DatasetInfo(
            "proxy_digits", "proxy_digits", _fewshot("train", "test"), _HARNESS_PREPARE,
            num_classes=10, short_name="proxy_digits",
            description="scikit-learn's handwritten digits, 32x32 (offline)"),
        DatasetInfo(
            # ADEChallengeData2016 (TFDS's scene_parse150 is the 2017 instance data): our builder.
            "ade20k", "ade20k", {"train": "train", "validation": "validation", "test": "validation"},
            "download ADEChallengeData2016.zip (http://data.csail.mit.edu/places/ADEchallenge/"
            "ADEChallengeData2016.zip) into {data_dir}/downloads/manual/ and run "
            "`harness prepare ade20k --data-dir {data_dir}`",
            label_key=None, short_name="ade20k",
            segmentation=SegmentationFeatures("segmentation", 150, reduce_zero_label=True),
            description="ADE20k scene parsing (ADEChallengeData2016): 150 classes, 20210 train / 2000 val"),
        DatasetInfo(
            # TFDS's builder of FastDepth's h5 release; `validation` is the 654-image Eigen test split
            # (big_vision's givt_nyu_depth.py evaluates it). TFDS takes the archive from the manual folder.
            "nyu_depth_v2", "nyu_depth_v2", {"train": "train", "validation": "validation", "test": "validation"},
            "download nyudepthv2.tar.gz (http://datasets.lids.mit.edu/fastdepth/data/nyudepthv2.tar.gz, 34 GB) "
            "into {data_dir}/downloads/manual/ and run `harness prepare nyu_depth_v2 --data-dir {data_dir}`",
            label_key=None, short_name="nyu_depth_v2",
            depth=DepthFeatures("depth", train_crop="nyu_train_crop", eval_crop="nyu_eval_crop"),
            description="NYU Depth v2 (FastDepth's release): 47584 train / 654 val (Eigen), depth in metres"),
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
# ImageNet test sets under their `report_tag`s (val, ReaL, v2, ImageNet-R, -A, ObjectNet).
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
OWN_BUILDERS = GENERATED + ("vqav2", "gqa", "ocrvqa", "objectnet", "ade20k")
