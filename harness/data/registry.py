"""The dataset registry: every fact the harness knows about a dataset before reading it.

`DATASETS` maps a name to its `DatasetInfo`: the TFDS name, the split string of each role the paper /
big_vision uses ("train", "minival", "fewshot_train", ...), what preparing it reads (`Sources`: files placed
by hand, TFDS's downloads; `harness.data.prepared` prepares it), its feature keys (labels,
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
class Download:
    """A file a TFDS builder downloads: its address, and the name TFDS's checksums file gives it. A copy under
    that name in the manual folder is used instead of the download, once TFDS has checked its checksum."""

    file: str
    url: str


@dataclasses.dataclass(frozen=True)
class Sources:
    """What preparing a dataset reads: `manual`, the files and folders ("name/") a person places in the manual
    folder (`--manual-dir`, default `<data_dir>/downloads/manual/`), obtained as `get` says; `downloads`, what
    TFDS fetches from the internet (`size`: their total, in words); `generated`: made by the harness, offline."""

    manual: tuple[str, ...] = ()
    get: str = ""
    downloads: tuple[Download, ...] = ()
    size: str = ""
    generated: bool = False

    def needs(self, manual_dir: str) -> str:
        """In words, what `harness prepare` needs, e.g. "ILSVRC2012_img_val.tar in /d/downloads/manual/ (...)"."""
        if self.generated:
            return "nothing: the harness generates it offline (also on first use)"
        parts = []
        if self.manual:
            parts.append(f"{_words(self.manual)} in {manual_dir}/" + (f" ({self.get})" if self.get else ""))
        if self.downloads:
            files = _words([d.file for d in self.downloads])
            size = f", {self.size}" if self.size else ""
            one = len(self.downloads) == 1
            parts.append(f"internet (TFDS downloads {files}{size}) or {'that file' if one else 'those files'} "
                         f"in {manual_dir}/")
        return ", and ".join(parts)


def _words(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


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
    string the paper / big_vision uses for it; `sources` is what `harness prepare` reads to prepare it.
    """

    name: str
    tfds_name: str
    splits: Mapping[str, str]
    sources: Sources
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

    def prepare_command(self, data_dir: str | os.PathLike | None = None) -> str:
        """The command that prepares it, e.g. `harness prepare cifar100 --data-dir /d`."""
        return f"harness prepare {self.name} --data-dir {default_data_dir(data_dir)}"

    def needs(self, data_dir: str | os.PathLike | None = None, manual_dir: str | os.PathLike | None = None) -> str:
        """In words, what preparing it needs and where each file goes ("" for a name not in the registry)."""
        return self.sources.needs(default_manual_dir(data_dir, manual_dir))

    def how_to_prepare(self, data_dir: str | os.PathLike | None = None) -> str:
        """The command and, in brackets, what it needs: the end of a "not prepared" line."""
        needs = self.needs(data_dir)
        return f"run `{self.prepare_command(data_dir)}`" + (f"; it needs {needs}" if needs else "")


def _fewshot(train: str, test: str, **more: str) -> dict[str, str]:
    return {"train": train, "test": test, "fewshot_train": train, "fewshot_test": test, **more}


def _download(url: str) -> Download:
    """A TFDS download, named by the last part of its path as TFDS's checksums files name it
    (tests/test_prepare.py checks each against the builder's)."""
    return Download(url.split("?")[0].rsplit("/", 1)[1], url)


def _downloads(*urls: str, size: str = "") -> Sources:
    """A TFDS builder that only downloads."""
    return Sources(downloads=tuple(_download(u) for u in urls), size=size)


_GENERATED = Sources(generated=True)
_IMAGENET_SITE = "from https://image-net.org/download-images, after registering"

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
            # TFDS 4.9.10's builder reads the val archive's names for the validation labels whatever it builds
            # (without it, even train fails) and leaves train out when its archive is missing; the harness reads
            # both splits, so `harness prepare` asks for both archives.
            Sources(manual=("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"), get=_IMAGENET_SITE),
            num_classes=1000, short_name="imagenet", report_tag="val", imagenet_labels=True,
            description="ImageNet-1k (ILSVRC 2012)"),
        DatasetInfo(
            "imagenet2012_real", "imagenet2012_real", {"test": "validation"},
            Sources(manual=("ILSVRC2012_img_val.tar",), get=_IMAGENET_SITE, downloads=(_download(
                "https://raw.githubusercontent.com/google-research/reassessed-imagenet/master/real.json"),)),
            label_key="real_label", num_classes=1000, short_name="real", report_tag="real", imagenet_labels=True,
            description="ImageNet validation with ReaL multi-labels (some images have none)"),
        DatasetInfo(
            "imagenet_v2", "imagenet_v2", {"test": "test"},
            _downloads("https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
                       "imagenetv2-matched-frequency.tar.gz", size="1.2 GiB"),
            num_classes=1000, short_name="v2", report_tag="v2", imagenet_labels=True,
            description="ImageNetV2 matched-frequency test set"),
        # ImageNet-R / -A: TFDS's builders (labels = ImageNet-1k ids).
        DatasetInfo(
            "imagenet_r", "imagenet_r", {"test": "test"},
            _downloads("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar", size="2.0 GiB"),
            num_classes=1000, report_tag="r", imagenet_labels=True, class_subset=IMAGENET_R_CLASSES,
            description="ImageNet-R: 30000 renditions of 200 ImageNet classes"),
        DatasetInfo(
            "imagenet_a", "imagenet_a", {"test": "test"},
            _downloads("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar", size="656 MiB"),
            num_classes=1000, report_tag="a", imagenet_labels=True, class_subset=IMAGENET_A_CLASSES,
            description="ImageNet-A: 7500 natural adversarial examples of 200 ImageNet classes"),
        DatasetInfo(
            "objectnet", "objectnet", {"test": "test"},
            Sources(manual=("objectnet-1.0/images/", "objectnet-1.0/mappings/"),
                    get="objectnet-1.0.zip from https://objectnet.dev/download.html, unzipped; its password is on "
                        "that page"),
            num_classes=1000, report_tag="objectnet", imagenet_labels=True, class_subset=SUBSET_IN_BUILD,
            description="ObjectNet 1.0: the images of its 113 classes that map to ImageNet, border cropped"),
        DatasetInfo(
            "coco_captions", "coco_captions",
            # TFDS's coco_captions holds the Karpathy splits; Karpathy's train is train+restval.
            {"train": "train+restval", "validation": "val", "test": "test"},
            # TFDS's COCO 2014 config: the 2014 images, test2015 (a split TFDS builds too) and the Karpathy splits.
            _downloads(*(f"http://images.cocodataset.org/zips/{z}.zip" for z in ("train2014", "val2014", "test2014",
                                                                                  "test2015")),
                       *(f"http://images.cocodataset.org/annotations/{z}.zip"
                         for z in ("annotations_trainval2014", "image_info_test2014", "image_info_test2015")),
                       "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip", size="38 GiB"),
            label_key=None, short_name="coco", text_key="captions/text", image_id_key="image/id",
            description="COCO 2014 captions, Karpathy splits (5 captions per image)"),
        DatasetInfo(
            "cifar100", "cifar100", _fewshot("train", "test"),
            _downloads("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", size="161 MiB"),
            num_classes=100, short_name="cifar100"),
        DatasetInfo(
            "oxford_iiit_pet", "oxford_iiit_pet", _fewshot("train", "test"),
            _downloads("https://thor.robots.ox.ac.uk/~vgg/data/pets/images.tar.gz",
                       "https://thor.robots.ox.ac.uk/~vgg/data/pets/annotations.tar.gz", size="774 MiB"),
            num_classes=37, short_name="pets"),
        DatasetInfo(
            "caltech_birds2011", "caltech_birds2011", _fewshot("train", "test"),
            _downloads("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
                       "https://data.caltech.edu/records/w9d68-gec53/files/segmentations.tgz?download=1",
                       size="1.1 GiB"),
            num_classes=200, short_name="birds"),
        DatasetInfo(
            "caltech101", "caltech101", _fewshot("train", "test"),
            _downloads("https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip?download=1",
                       size="131 MiB"),
            num_classes=102, short_name="caltech"),
        DatasetInfo(
            # big_vision pins version 2.1.0 (the one with corrected labels).
            "cars196", "cars196:2.1.0", _fewshot("train", "test"),
            _downloads(*(f"http://ai.stanford.edu/~jkrause/car196/{f}" for f in (
                "cars_train.tgz", "cars_test.tgz", "cars_test_annos_withlabels.mat")),
                "https://ai.stanford.edu/~jkrause/cars/car_devkit.tgz", size="1.8 GiB"),
            num_classes=196, short_name="cars"),
        DatasetInfo(
            # Only a train split exists; big_vision's few-shot config splits it 2000 / 3000.
            "colorectal_histology", "colorectal_histology",
            _fewshot("train[:2000]", "train[2000:]"),
            _downloads("https://zenodo.org/record/53169/files/Kather_texture_2016_image_tiles_5000.zip",
                       size="246 MiB"),
            num_classes=8, short_name="col_hist"),
        DatasetInfo(
            "dtd", "dtd", _fewshot("train", "test", validation="validation"),
            _downloads("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz", size="596 MiB"),
            num_classes=47, short_name="dtd"),
        DatasetInfo(
            # Only a train split (2100 images); big_vision's few-shot config splits it 1000 / 1100.
            "uc_merced", "uc_merced", _fewshot("train[:1000]", "train[1000:]"),
            _downloads("http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip", size="317 MiB"),
            num_classes=21, short_name="uc_merced"),
        DatasetInfo(
            "proxy_scenes", "proxy_scenes",
            _fewshot("train", "test", pretrain="pretrain", validation="val"), _GENERATED,
            num_classes=24, short_name="proxy_scenes", text_key="captions",
            vqa=VqaFeatures("questions/question", "questions/question_id", "questions/multiple_choice_answer",
                            "questions/answers", "questions/answer_type"),
            # Mask 0 = background (a class, not ignored), 1 + class id for the objects' pixels.
            segmentation=SegmentationFeatures("segmentation", 25), depth=DepthFeatures("depth"),
            description="generated shapes scenes: labels, captions, VQA questions, class masks, depth (offline)"),
        DatasetInfo(
            "proxy_digits", "proxy_digits", _fewshot("train", "test"), _GENERATED,
            num_classes=10, short_name="proxy_digits",
            description="scikit-learn's handwritten digits, 32x32 (offline)"),
        DatasetInfo(
            # ADEChallengeData2016 (TFDS's scene_parse150 is the 2017 instance data): our builder.
            "ade20k", "ade20k", {"train": "train", "validation": "validation", "test": "validation"},
            Sources(manual=("ADEChallengeData2016.zip",),
                    get="from http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip, as it is or "
                        "unzipped"),
            label_key=None, short_name="ade20k",
            segmentation=SegmentationFeatures("segmentation", 150, reduce_zero_label=True),
            description="ADE20k scene parsing (ADEChallengeData2016): 150 classes, 20210 train / 2000 val"),
        DatasetInfo(
            # TFDS's builder of FastDepth's h5 release; `validation` is the 654-image Eigen test split
            # (big_vision's givt_nyu_depth.py evaluates it).
            "nyu_depth_v2", "nyu_depth_v2", {"train": "train", "validation": "validation", "test": "validation"},
            _downloads("http://datasets.lids.mit.edu/fastdepth/data/nyudepthv2.tar.gz", size="32 GiB"),
            label_key=None, short_name="nyu_depth_v2",
            depth=DepthFeatures("depth", train_crop="nyu_train_crop", eval_crop="nyu_eval_crop"),
            description="NYU Depth v2 (FastDepth's release): 47584 train / 654 val (Eigen), depth in metres"),
        DatasetInfo(
            "vqav2", "vqav2",
            {"train": "train", "validation": "validation", "test": "test",
             "test_dev": "test_dev"},
            # Our builder (harness/data/builders/vqav2.py); the test splits' files are optional.
            Sources(manual=("v2_OpenEnded_mscoco_train2014_questions.json", "v2_mscoco_train2014_annotations.json",
                            "v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json",
                            "train2014/", "val2014/"),
                    get="VQAv2's question and annotation zips from https://visualqa.org/download.html and COCO's "
                        "train2014.zip and val2014.zip from https://cocodataset.org/#download, unzipped"),
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
            # Our builder (harness/data/builders/gqa.py); val_balanced and the test splits are optional.
            Sources(manual=("gqa/train_balanced_questions.json", "gqa/testdev_balanced_questions.json",
                            "gqa/images/"),
                    get="questions1.2.zip and images.zip from "
                        "https://cs.stanford.edu/people/dorarad/gqa/download.html, unzipped"),
            label_key=None, short_name="gqa", text_key="question",
            vqa=VqaFeatures("question", "question_id", "answer", eval_role="test"),
            description="GQA balanced questions on Visual Genome images, one example per question"),
        DatasetInfo(
            # big_vision's OCR-VQA transfer (configs/proj/paligemma/transfers/ocrvqa.py, final_split=False):
            # train on train + val[20000:], val[:20000] as minival, report test.
            "ocrvqa", "ocrvqa",
            {"train": "train+val[20000:]", "minival": "val[:20000]", "validation": "val", "test": "test"},
            # Our builder (harness/data/builders/ocrvqa.py).
            Sources(manual=("ocrvqa/dataset.json", "ocrvqa/images/"),
                    get="dataset.json from https://ocr-vqa.github.io/ and the covers its downloader script fetches"),
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
    return DatasetInfo(name, name, {}, Sources(), label_key="label")


def default_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """`--data-dir` wins, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
    return os.path.abspath(os.path.expanduser(os.fspath(chosen)))


def default_manual_dir(data_dir: str | os.PathLike | None = None, manual_dir: str | os.PathLike | None = None) -> str:
    """`--manual-dir` wins, else TFDS's default, `<data_dir>/downloads/manual`."""
    if manual_dir:
        return os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
    return os.path.join(default_data_dir(data_dir), "downloads", "manual")


# Datasets the harness generates itself, offline, in seconds: prepared on first use.
GENERATED = tuple(name for name, info in DATASETS.items() if info.sources.generated)
