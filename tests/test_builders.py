"""Our TFDS builders (proxy_scenes, proxy_digits, vqav2, ade20k), TFDS's imagenet2012 on real-format tars,
and the proxy sentencepiece model. Everything is built offline from small data written by the tests."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import json
import pathlib
import re
import tarfile
import zipfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

import harness.data.builders  # noqa: E402,F401  (registers the builders)
from harness.data.builders import ade20k, proxy_digits, proxy_scenes, vqav2  # noqa: E402
from harness.errors import HarnessError  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = proxy_scenes.ProxyScenesConfig(name="test_small", num_pretrain=8, num_train=48, num_val=6,
                                       num_test=6)
# sha256 of the pixels and text of examples 0..2 of every split (seed 0): pins the generator, so a
# numpy or code change that alters the data on some machine is caught. The first is version 1.0.0's
# features (unchanged by 1.1.0), the second 1.1.0's dense targets (class mask and depth map bytes).
GOLDEN_SHA256 = "fd79097b831a2e5ddf8f90008597a5f3ba36cc1635b0df7527157bb486051700"
GOLDEN_DENSE_SHA256 = "2d0d83f54ec7e8f02a82e9797ae4a7a56fae3af7282342438a0a7ededf5a0ed7"


def _build_scenes(data_dir: pathlib.Path) -> "tfds.core.DatasetBuilder":
    builder = proxy_scenes.ProxyScenes(config=SMALL, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


def _raw_examples(builder, split: str) -> list[dict]:
    """Examples with the image and mask left as their stored PNG bytes, sorted by id."""
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding(),
                                                   "segmentation": tfds.decode.SkipDecoding()})
    return sorted(tfds.as_numpy(ds), key=lambda e: int(e["id"]))


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("scenes_a")


@pytest.fixture(scope="module")
def scenes(scenes_root):
    return _build_scenes(scenes_root)


@pytest.fixture(scope="module")
def train_examples(scenes):
    return list(tfds.as_numpy(scenes.as_dataset(split="train")))


# ---------------------------------------------------------------------------------------- proxy_scenes


def test_proxy_scenes_loads_through_tfds_load(scenes, scenes_root):
    ds, info = tfds.load("proxy_scenes", split="val", data_dir=str(scenes_root),
                         builder_kwargs={"config": SMALL}, download=False, with_info=True)
    assert {name: s.num_examples for name, s in info.splits.items()} == {
        "pretrain": 8, "train": 48, "val": 6, "test": 6}
    examples = list(tfds.as_numpy(ds))
    assert len(examples) == 6
    ex = examples[0]
    assert ex["image"].shape == (64, 64, 3) and ex["image"].dtype == np.uint8
    assert ex["captions"].shape == (5,)
    assert ex["questions"]["answers"].shape == (3, 10)
    # We pass homepage "", which TFDS replaces with its catalog address.
    assert info.citation == "" and "24 classes" in info.description


def test_proxy_scenes_class_names(scenes):
    names = scenes.info.features["label"].names
    assert len(names) == 24 == len(set(names))
    assert names[:4] == ["red circle", "red square", "red triangle", "red cross"]
    assert set(names) == {f"{c} {s}" for c in proxy_scenes.COLOURS for s in proxy_scenes.SHAPES}


def test_proxy_scenes_balanced_labels(train_examples):
    counts = collections.Counter(int(e["label"]) for e in train_examples)
    assert sorted(counts) == list(range(24)) and set(counts.values()) == {2}


def test_proxy_scenes_two_builds_identical(scenes, tmp_path):
    again = _build_scenes(tmp_path)
    for split in proxy_scenes.SPLITS:
        a, b = _raw_examples(scenes, split), _raw_examples(again, split)
        assert len(a) == len(b) == SMALL.split_sizes()[split]
        for x, y in zip(a, b):
            assert x["image"] == y["image"] and x["segmentation"] == y["segmentation"]  # the PNG bytes themselves
            for key in ("id", "image_id", "label", "captions", "background", "depth"):
                np.testing.assert_array_equal(x[key], y[key])
            for key in x["questions"]:
                np.testing.assert_array_equal(x["questions"][key], y["questions"][key])


def test_proxy_scenes_generator_golden_hash():
    digest, dense = hashlib.sha256(), hashlib.sha256()
    for split in proxy_scenes.SPLITS:
        for index in range(3):
            example = proxy_scenes.make_example(0, split, index)
            dense.update(example.pop("segmentation").tobytes())
            dense.update(example.pop("depth").tobytes())
            digest.update(example.pop("image").tobytes())
            digest.update(json.dumps(example, sort_keys=True).encode())
    assert digest.hexdigest() == GOLDEN_SHA256  # 1.0.0's features: the dense targets changed none of them
    assert dense.hexdigest() == GOLDEN_DENSE_SHA256


def test_proxy_scenes_stored_image_is_the_rendered_one(train_examples):
    ex = train_examples[0]
    expected = proxy_scenes.make_example(0, "train", int(ex["id"]))
    np.testing.assert_array_equal(ex["image"], expected["image"])
    np.testing.assert_array_equal(ex["segmentation"], expected["segmentation"])
    assert ex["depth"].dtype == np.float16 and ex["depth"].shape == (64, 64)
    np.testing.assert_array_equal(ex["depth"], expected["depth"])


def test_proxy_scenes_dense_targets_follow_the_painters_order(train_examples):
    """The mask names each visible object's class where its colour is drawn, the depth map puts every object
    in front of the background and each object in front of the ones drawn before it."""
    for ex in train_examples:
        mask, depth = ex["segmentation"][..., 0], ex["depth"].astype(np.float32)
        objects = [proxy_scenes.class_index(proxy_scenes.COLOURS[c], proxy_scenes.SHAPES[s])
                   for c, s in zip(ex["objects"]["colour"], ex["objects"]["shape"])]
        assert set(np.unique(mask)) <= {0, *(1 + c for c in objects)} and (mask == 1 + int(ex["label"])).sum() >= 100
        background = depth[mask == 0]
        assert background.min() > 5.0 and background.max() < 9.6  # the tilted plane, 5.1 .. 9.5 m
        depths = [np.unique(depth[mask == 1 + c]) for c in objects if (mask == 1 + c).any()]
        assert all(len(d) <= 2 and d.max() < 4.3 for d in depths)  # one depth per object (two of one class)
        for cls in set(objects):  # pixels of an object show its colour, up to anti-aliased edges
            colour = np.asarray(proxy_scenes.COLOUR_RGB[proxy_scenes.COLOURS[cls // 4]])
            close = np.abs(ex["image"][mask == 1 + cls].astype(int) - colour).max(-1) <= 30
            assert close.mean() > 0.6, (cls, close.mean())  # a wrong mask would give ~0
    # Painter's order: where two objects overlap, the later one is nearer and owns the pixel.
    scene = proxy_scenes.sample_scene(0, "train", 2)
    mask, depth = proxy_scenes.render_targets(scene, 0, "train", 2)
    owners = [1 + proxy_scenes.class_index(o.colour, o.shape) for o in scene.objects]
    means = [depth[mask == v].astype(np.float32).mean() for v in owners if (mask == v).any()]
    assert means == sorted(means, reverse=True) and len(scene.objects) >= 2


def test_proxy_scenes_questions(scenes):
    question_ids = []
    for split in proxy_scenes.SPLITS:
        for ex in tfds.as_numpy(scenes.as_dataset(split=split)):
            q = ex["questions"]
            assert q["answers"].shape == (3, 10)
            types = [t.decode() for t in q["answer_type"]]
            assert sorted(types) == ["number", "other", "yes/no"]
            for answers, mc, kind in zip(q["answers"], q["multiple_choice_answer"], types):
                answers = [a.decode() for a in answers]
                assert all(answers)
                assert mc.decode() == proxy_scenes.majority_answer(answers)
                if kind == "yes/no":
                    assert mc.decode() in ("yes", "no")
                elif kind == "number":
                    assert mc.decode().isdigit()
            question_ids += [int(i) for i in q["question_id"]]
            assert all(i // 10 == int(ex["image_id"]) for i in q["question_id"])
    assert len(question_ids) == len(set(question_ids)) == 3 * sum(SMALL.split_sizes().values())


def test_proxy_scenes_answers_are_true(train_examples):
    """An oracle reads the object list and checks the majority answer of the checkable questions."""
    colours, shapes = proxy_scenes.COLOURS, proxy_scenes.SHAPES
    plural_to_shape = {p: s for s, p in proxy_scenes.SHAPE_PLURALS.items()}
    checked = 0
    for ex in train_examples:
        objects = [(colours[c], shapes[s]) for c, s in zip(ex["objects"]["colour"], ex["objects"]["shape"])]
        main_colour, main_shape = objects[0]
        for question, mc in zip(ex["questions"]["question"], ex["questions"]["multiple_choice_answer"]):
            question, mc = question.decode(), mc.decode()
            if m := re.fullmatch(r"(?:is there|do you see) a (\w+) (\w+)(?: in the image)?\?", question):
                want = "yes" if (m[1], m[2]) in objects else "no"
            elif re.fullmatch(r"how many (shapes|objects|things) (are there|are in the image)\?", question):
                want = str(len(objects))
            elif m := re.fullmatch(r"how many (\w+) (?:are there|are in the picture|can you see)\?", question):
                want = str(sum(s == plural_to_shape[m[1]] for _, s in objects))
            elif re.fullmatch(r"what colou?r is the (large|big) shape\?", question):
                want = main_colour
            elif re.fullmatch(r"what shape is the (largest|biggest) object\?", question):
                want = main_shape
            else:
                continue
            # Ten noisy annotators could in principle outvote the truth; with 10% noise they do not here.
            assert mc == want, (question, mc, want, objects)
            checked += 1
    assert checked >= 30


def test_proxy_scenes_captions_name_the_main_object(train_examples):
    for ex in train_examples:
        colour, shape = proxy_scenes.CLASS_NAMES[int(ex["label"])].split()
        captions = [c.decode() for c in ex["captions"]]
        assert len(captions) == 5 == len(set(captions))
        for caption in captions:
            words = re.findall(r"[a-z]+", caption)
            assert colour in words and shape in words, caption


def test_proxy_scenes_image_shows_the_main_object(train_examples):
    for ex in train_examples:
        colour = proxy_scenes.CLASS_NAMES[int(ex["label"])].split()[0]
        target = np.asarray(proxy_scenes.COLOUR_RGB[colour])
        close = np.abs(ex["image"].astype(int) - target).max(axis=-1) <= 30
        # A large object covers >= ~150 pixels even for the thinnest shape (the cross).
        assert close.sum() >= 120, (colour, close.sum())


def test_proxy_scenes_text_for_the_tokenizer():
    lines = list(proxy_scenes.iter_text(sizes={"pretrain": 2, "train": 1}))
    assert lines[:24] == list(proxy_scenes.CLASS_NAMES)
    assert len(lines) == 24 + 3 * (5 + 3 * 12)


# ---------------------------------------------------------------------------------------- proxy_digits


def test_proxy_digits(tmp_path):
    builder = tfds.builder("proxy_digits", data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert {k: s.num_examples for k, s in builder.info.splits.items()} == {"train": 1000, "test": 797}
    assert builder.info.features["label"].names == [str(d) for d in range(10)]
    assert builder.info.metadata["label_text_names"][3] == "three"
    images, labels = proxy_digits.load_digit_images()
    train_ids = set()
    for ex in tfds.as_numpy(builder.as_dataset(split="train")):
        i = int(ex["id"])
        train_ids.add(i)
        assert ex["image"].shape == (32, 32, 3) and int(ex["label"]) == labels[i]
        np.testing.assert_array_equal(ex["image"], images[i])
    assert len(train_ids) == 1000
    test_ids = {int(e["id"]) for e in tfds.as_numpy(builder.as_dataset(split="test"))}
    assert not train_ids & test_ids and len(train_ids | test_ids) == 1797
    # Nearest-neighbour upsampling: each 4x4 block is one source pixel scaled to 0..255.
    from sklearn.datasets import load_digits
    raw = load_digits().images[0]
    assert images[0][4 * 3 + 2, 4 * 5 + 1, 1] == round(raw[3, 5] * 255 / 16)


# ---------------------------------------------------------------------------------------- vqav2


def _write_jpeg(path: pathlib.Path, shape: tuple[int, ...], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full(shape, value, np.uint8)
    path.write_bytes(tf.io.encode_jpeg(image).numpy())


def _annotation(question_id: int, image_id: int, answers: list[str], answer_type: str) -> dict:
    return {
        "question_id": question_id, "image_id": image_id, "question_type": "what color is the",
        "answer_type": answer_type, "multiple_choice_answer": answers[0],
        # Official files list answers by answer_id; write them shuffled to check the ordering.
        "answers": [{"answer": a, "answer_confidence": "yes" if k % 3 else "maybe", "answer_id": k + 1}
                    for k, a in reversed(list(enumerate(answers)))],
    }


def _write_vqav2(manual: pathlib.Path) -> dict:
    """Two val2014 images (one greyscale, as a few COCO images are), three questions, one test image."""
    _write_jpeg(manual / "val2014" / "COCO_val2014_000000000042.jpg", (24, 32, 3), 200)
    _write_jpeg(manual / "val2014" / "COCO_val2014_000000000073.jpg", (16, 20, 1), 90)
    _write_jpeg(manual / "test2015" / "COCO_test2015_000000000001.jpg", (8, 8, 3), 10)
    questions = [
        {"image_id": 42, "question": "What color is the bus?", "question_id": 420},
        {"image_id": 42, "question": "Is it raining?", "question_id": 421},
        {"image_id": 73, "question": "How many dogs?", "question_id": 730},
    ]
    answers = {
        420: (["red"] * 8 + ["Red", "maroon"], "other"),
        421: (["no"] * 7 + ["yes"] * 3, "yes/no"),
        730: (["2", "two", "2", "2", "3", "2", "2", "2", "2", "2"], "number"),
    }
    header = {"info": {"description": "test"}, "license": {"name": "test"}, "data_subtype": "val2014"}
    (manual / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps(
        {**header, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions}))
    (manual / "v2_mscoco_val2014_annotations.json").write_text(json.dumps(
        {**header, "data_type": "mscoco",
         "annotations": [_annotation(q, q // 10, a, t) for q, (a, t) in answers.items()]}))
    (manual / "v2_OpenEnded_mscoco_test2015_questions.json").write_text(json.dumps(
        {"questions": [{"image_id": 1, "question": "Why?", "question_id": 10}]}))
    return answers


def _build_vqav2(tmp_path: pathlib.Path, manual: pathlib.Path):
    builder = tfds.builder("vqav2", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder


def test_vqav2_official_files(tmp_path):
    manual = tmp_path / "manual"
    answers = _write_vqav2(manual)
    builder = _build_vqav2(tmp_path, manual)
    assert {k: s.num_examples for k, s in builder.info.splits.items()} == {"validation": 3, "test": 1}
    examples = {int(e["question_id"]): e for e in tfds.as_numpy(builder.as_dataset(split="validation"))}
    assert sorted(examples) == [420, 421, 730]
    bus = examples[420]
    assert int(bus["image_id"]) == 42 and bus["image"].shape == (24, 32, 3)
    assert abs(int(bus["image"].mean()) - 200) <= 2
    assert bus["question"].decode() == "What color is the bus?"
    assert bus["question_type"].decode() == "what color is the"
    assert bus["answer_type"].decode() == "other" and bus["multiple_choice_answer"].decode() == "red"
    assert [a.decode() for a in bus["answers"]] == answers[420][0]  # in answer_id order
    assert [c.decode() for c in bus["answer_confidence"]][:4] == ["maybe", "yes", "yes", "maybe"]
    dogs = examples[730]
    assert dogs["image"].shape == (16, 20, 3)  # the greyscale JPEG decodes to 3 channels
    assert [a.decode() for a in dogs["answers"]] == answers[730][0]
    assert dogs["answer_type"].decode() == "number"
    for ex in examples.values():
        assert len(ex["answers"]) == vqav2.ANSWERS_PER_QUESTION
    (test,) = tfds.as_numpy(builder.as_dataset(split="test"))
    assert int(test["question_id"]) == 10 and len(test["answers"]) == 0
    assert test["image"].shape == (8, 8, 3) and test["answer_type"].decode() == ""


@pytest.mark.parametrize("missing", ["v2_mscoco_val2014_annotations.json",
                                     "v2_OpenEnded_mscoco_val2014_questions.json"])
def test_vqav2_missing_file_is_named(tmp_path, missing):
    manual = tmp_path / "manual"
    _write_vqav2(manual)
    (manual / missing).unlink()
    with pytest.raises(HarnessError, match=re.escape(missing) + " is missing"):
        _build_vqav2(tmp_path, manual)


def test_vqav2_missing_image(tmp_path):
    manual = tmp_path / "manual"
    _write_vqav2(manual)
    (manual / "val2014" / "COCO_val2014_000000000073.jpg").unlink()
    with pytest.raises(HarnessError, match=r"COCO_val2014_000000000073\.jpg is missing"):
        _build_vqav2(tmp_path, manual)


def test_vqav2_empty_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "README").write_text("nothing here")
    with pytest.raises(HarnessError, match="no VQAv2 questions file"):
        _build_vqav2(tmp_path, manual)


# ---------------------------------------------------------------------------------------- ade20k


def _write_ade_zip(manual: pathlib.Path, *, drop: str = "", bad_value: bool = False) -> dict:
    """ADEChallengeData2016.zip in the official layout: 3 training and 2 validation images with their
    single-channel annotations (0 = other, 1..150), stored out of name order."""
    manual.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {}
    with zipfile.ZipFile(manual / ade20k.ZIP_NAME, "w") as zf:
        for folder, stem, n, size in (("training", "ADE_train", 3, (12, 16)), ("validation", "ADE_val", 2, (10, 8))):
            for i in reversed(range(1, n + 1)):
                name = f"{stem}_{i:08d}"
                image = np.full((*size, 3), 30 * i, np.uint8)
                label = rng.integers(0, 151, size).astype(np.uint8)
                if bad_value and folder == "validation":
                    label[0, 0] = 200
                files[(folder, name)] = label
                zf.writestr(f"ADEChallengeData2016/images/{folder}/{name}.jpg", tf.io.encode_jpeg(image).numpy())
                if f"{folder}/{name}" != drop:
                    zf.writestr(f"ADEChallengeData2016/annotations/{folder}/{name}.png",
                                tf.io.encode_png(label[..., None]).numpy())
        zf.writestr("ADEChallengeData2016/sceneCategories.txt", "ADE_train_00000001 bathroom\n")
    return files


def _build_ade(tmp_path: pathlib.Path, manual: pathlib.Path):
    builder = tfds.builder("ade20k", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder


def test_ade20k_reads_the_official_zip(tmp_path):
    labels = _write_ade_zip(tmp_path / "manual")
    builder = _build_ade(tmp_path, tmp_path / "manual")
    assert {k: s.num_examples for k, s in builder.info.splits.items()} == {"train": 3, "validation": 2}
    for split, folder in (("train", "training"), ("validation", "validation")):
        raw = builder.as_dataset(split=split, decoders={"segmentation": tfds.decode.SkipDecoding()})
        for ex in tfds.as_numpy(raw):
            name = ex["file_name"].decode()
            # The annotation is stored as its PNG bytes: the raw values 0..150, nothing remapped.
            stored = tf.io.decode_png(ex["segmentation"]).numpy()[..., 0]
            np.testing.assert_array_equal(stored, labels[(folder, name[:-4])])
            assert ex["image"].shape == (*stored.shape, 3) and abs(int(ex["image"].mean()) - 30 * int(name[-5])) <= 2


def test_ade20k_reads_the_unzipped_folder(tmp_path):
    labels = _write_ade_zip(tmp_path / "zip")
    with zipfile.ZipFile(tmp_path / "zip" / ade20k.ZIP_NAME) as zf:
        zf.extractall(tmp_path / "manual")
    builder = _build_ade(tmp_path, tmp_path / "manual")
    examples = tfds.as_numpy(builder.as_dataset(split="validation"))
    (ex,) = [e for e in examples if e["file_name"] == b"ADE_val_00000002.jpg"]
    np.testing.assert_array_equal(ex["segmentation"][..., 0], labels[("validation", "ADE_val_00000002")])


@pytest.mark.parametrize("case, says", [
    ("missing_annotation", r"1 of 3 annotations are missing .*annotations/training/ADE_train_00000002\.png"),
    ("bad_value", r"ADE_val_0000000\d\.png holds value 200, above the 150 classes"),
    ("no_zip", r"neither .*ADEChallengeData2016\.zip nor an unzipped ADEChallengeData2016/ folder"),
])
def test_ade20k_bad_release_is_one_line(tmp_path, case, says):
    manual = tmp_path / "manual"
    if case == "no_zip":
        manual.mkdir()
        (manual / "README").write_text("nothing here")
    else:
        _write_ade_zip(manual, drop="training/ADE_train_00000002" if case == "missing_annotation" else "",
                       bad_value=case == "bad_value")
    with pytest.raises(HarnessError, match=says):
        _build_ade(tmp_path, manual)
    assert not (tmp_path / "data" / "ade20k" / "1.0.0").exists()  # nothing half-written


# ---------------------------------------------------------------------------------------- imagenet2012


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_imagenet2012_builder_reads_real_format_tars(tmp_path):
    """TFDS's own imagenet2012 builder on tiny archives laid out like the official ones."""
    manual = tmp_path / "manual"
    manual.mkdir()
    jpeg = lambda v: tf.io.encode_jpeg(np.full((10, 12, 3), v, np.uint8)).numpy()  # noqa: E731
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in (3, 1, 2):  # the archive order is not the name order
            _add_file(tar, f"ILSVRC2012_val_{i:08d}.JPEG", jpeg(20 * i))
    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        for synset, ids in (("n01440764", (10026, 10027)), ("n01443537", (2,))):
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for i in ids:
                    _add_file(inner, f"{synset}_{i}.JPEG", jpeg(100))
            _add_file(outer, f"{synset}.tar", inner_bytes.getvalue())
    builder = tfds.builder("imagenet2012", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    label = builder.info.features["label"]
    assert label.num_classes == 1000
    val = {e["file_name"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split="validation"))}
    # TFDS ships the 50000 validation labels in file-name order: images 1, 2, 3 are these synsets.
    assert {k: label.int2str(int(e["label"])) for k, e in val.items()} == {
        "ILSVRC2012_val_00000001.JPEG": "n01751748",
        "ILSVRC2012_val_00000002.JPEG": "n09193705",
        "ILSVRC2012_val_00000003.JPEG": "n02105855",
    }
    assert abs(int(val["ILSVRC2012_val_00000002.JPEG"]["image"].mean()) - 40) <= 2
    train = {e["file_name"].decode(): label.int2str(int(e["label"]))
             for e in tfds.as_numpy(builder.as_dataset(split="train"))}
    assert train == {"n01440764_10026.JPEG": "n01440764", "n01440764_10027.JPEG": "n01440764",
                     "n01443537_2.JPEG": "n01443537"}
    assert label.str2int("n01440764") == 0


# ---------------------------------------------------------------------------------------- tokenizer


def test_proxy_spm_model():
    import sentencepiece as spm

    path = REPO / "harness" / "assets" / "proxy_spm.model"
    assert path.stat().st_size < 300_000
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert 500 <= sp.get_piece_size() <= 1000
    # Case folding is in the model; proxy words are single pieces.
    assert sp.encode("What COLOUR is the Triangle?") == sp.encode("what colour is the triangle?")
    assert sp.encode("how many crosses", out_type=str) == ["▁how", "▁many", "▁crosses"]
    assert sp.decode(sp.encode("a large red circle")) == "a large red circle"


def test_proxy_spm_model_is_reproducible():
    spec = importlib.util.spec_from_file_location("make_proxy_spm", REPO / "scripts" / "make_proxy_spm.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.train_proxy_spm() == (REPO / "harness" / "assets" / "proxy_spm.model").read_bytes()
