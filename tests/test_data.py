"""tf.data pipelines over a tiny TFDS dataset built here, and the dataset registry."""

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from harness import data  # noqa: E402
from harness.errors import HarnessError  # noqa: E402

NAME = "harness_test_tiny"
NUM_TRAIN = 53  # 3 shards of ~18: more than TFDS's interleave block of 16
NUM_TEST = 10
PP = "decode|resize(4)|keep('image', 'id', 'label', 'text', 'words')"


class HarnessTestTiny(tfds.core.GeneratorBasedBuilder):
    """53 train / 10 test examples; pixel value and `id` identify an example."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "thumb": tfds.features.Image(shape=(3, 3, 3), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=["cat", "dog", "fox", "owl", "yak"]),
                "id": np.int64,
                "text": tfds.features.Text(),
                "words": tfds.features.Sequence(tfds.features.Text()),
                "meta": {"size": np.int64},
            }),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, NUM_TRAIN),
                "test": self._generate_examples(100, NUM_TEST)}

    def _generate_examples(self, first, count):
        for i in range(first, first + count):
            height = 5 + i % 3  # images differ in size: the pp must resize
            yield i, {
                "image": np.full((height, 6, 3), i, np.uint8),
                "thumb": np.full((3, 3, 3), i, np.uint8),
                "label": i % 5,
                "id": i,
                "text": f"example {i}",
                "words": ["w"] * (i % 4),
                "meta": {"size": height},
            }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    tfds.disable_progress_bar()
    root = tmp_path_factory.mktemp("tfds")
    # Three shards, so reading in split order crosses files.
    HarnessTestTiny(data_dir=str(root)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=3))
    return str(root)


def _tfds_ids(data_dir, split):
    """The ids of a split in on-disk order, read by TFDS directly (the oracle)."""
    builder = tfds.builder(NAME, data_dir=data_dir)
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=tfds.ReadConfig(interleave_cycle_length=1))
    return [int(ex["id"]) for ex in tfds.as_numpy(ds)]


def _eval(data_dir, split="train", **kw):
    kw.setdefault("batch_size", 5)
    kw.setdefault("pp", PP)
    return list(data.iterate(NAME, split, data_dir=data_dir, **kw))


def _real_ids(batches):
    return [int(i) for b in batches for i in b["id"][b["_mask"]]]


def _train_ids(data_dir, num_batches, **kw):
    kw.setdefault("batch_size", 4)
    it = data.iterate(NAME, "train", data_dir=data_dir, pp=PP, train=True, **kw)
    return [next(it)["id"].tolist() for _ in range(num_batches)]


# --------------------------------------------------------------------------------------------------
# eval


def test_eval_covers_each_example_once_with_padding(data_dir):
    batches = _eval(data_dir)
    assert len(batches) == 11  # ceil(53 / 5)
    assert all(b["image"].shape == (5, 4, 4, 3) for b in batches)
    assert _real_ids(batches) == _tfds_ids(data_dir, "train")  # split order, each once
    assert sorted(_real_ids(batches)) == list(range(NUM_TRAIN))
    last = batches[-1]
    np.testing.assert_array_equal(last["_mask"], [True, True, True, False, False])
    np.testing.assert_array_equal(last["_index"], [50, 51, 52, -1, -1])
    assert (last["image"][3:] == 0).all() and (last["id"][3:] == 0).all()
    index = np.concatenate([b["_index"][b["_mask"]] for b in batches])
    np.testing.assert_array_equal(index, np.arange(NUM_TRAIN))


def test_eval_batch_contents(data_dir):
    batch = _eval(data_dir)[0]
    ids = batch["id"]
    # Each image is filled with its id, so the pixels prove the example and its pp.
    assert (batch["image"] == ids[:, None, None, None]).all()
    np.testing.assert_array_equal(batch["label"], ids % 5)
    assert batch["text"].dtype == object
    assert [t.decode() for t in batch["text"]] == [f"example {i}" for i in ids]
    # A variable-length sequence is padded with b"" to the longest in the batch.
    assert batch["words"].shape == (5, max(i % 4 for i in ids))
    assert [int((row == b"w").sum()) for row in batch["words"]] == [i % 4 for i in ids]


def test_eval_exact_multiple_has_no_padding(data_dir):
    batches = _eval(data_dir, split="test", batch_size=5)
    assert len(batches) == 2 and all(b["_mask"].all() for b in batches)


def test_eval_start_example_resumes(data_dir):
    full = _real_ids(_eval(data_dir))
    resumed = _eval(data_dir, start_example=7, batch_size=4)
    assert _real_ids(resumed) == full[7:]
    assert resumed[0]["_index"][0] == 7 and len(resumed) == 12  # ceil(46 / 4)
    assert _eval(data_dir, start_example=NUM_TRAIN) == []


def test_eval_num_examples_caps(data_dir):
    batches = _eval(data_dir, num_examples=6, batch_size=4)
    assert len(batches) == 2 and _real_ids(batches) == _tfds_ids(data_dir, "train")[:6]
    assert data.eval_num_batches(NAME, "train", batch_size=4, data_dir=data_dir,
                                 num_examples=6) == 2


def test_eval_batch_larger_than_the_split_is_the_split(data_dir):
    """A batch size beyond the examples read adds no padding beyond them (10**6 asked would be 10**6 zero
    images): the batch is the split, or the largest process's share, also when resuming."""
    batches = _eval(data_dir, split="test", batch_size=10**6)
    assert len(batches) == 1 and batches[0]["image"].shape == (NUM_TEST, 4, 4, 3) and batches[0]["_mask"].all()
    resumed = _eval(data_dir, num_examples=6, batch_size=10**6, start_example=2)
    assert [len(b["_mask"]) for b in resumed] == [6] and resumed[0]["_mask"].sum() == 4
    assert _real_ids(resumed) == _tfds_ids(data_dir, "train")[2:6]
    shares = [_eval(data_dir, batch_size=10**6, process_index=i, process_count=2) for i in range(2)]
    assert [[len(b["_mask"]) for b in s] for s in shares] == [[27], [27]]
    assert sorted(_real_ids(shares[0]) + _real_ids(shares[1])) == list(range(NUM_TRAIN))
    assert data.eval_num_batches(NAME, "train", batch_size=10**6, data_dir=data_dir) == 1
    assert data.eval_num_batches(NAME, "train", batch_size=10**6, data_dir=data_dir, process_count=2,
                                 start_example=20) == 1


def test_train_batch_larger_than_the_split_is_refused(data_dir):
    with pytest.raises(HarnessError, match=r"^batch_size 54 is larger than the 53 training examples of dataset "
                                           r"'harness_test_tiny'; lower batch_size to at most 53"):
        _train_ids(data_dir, 1, batch_size=54)
    with pytest.raises(HarnessError, match=r"larger than the 26 training examples .* \(process 0 of 2\)"):
        _train_ids(data_dir, 1, batch_size=27, process_index=0, process_count=2)
    assert len(_train_ids(data_dir, 1, batch_size=NUM_TRAIN)[0]) == NUM_TRAIN


@pytest.mark.parametrize("split", ["train[:3]", "train[50%:]", "train[-4:]", "train[:3]+test[-2:]",
                                   "test"])
def test_split_slicing(data_dir, split):
    ids = _real_ids(_eval(data_dir, split=split, batch_size=4))
    assert ids == _tfds_ids(data_dir, split)
    assert len(ids) == data.num_examples(NAME, split, data_dir)


def test_process_sharding_covers_split_once(data_dir):
    full = _real_ids(_eval(data_dir))
    for count in (2, 3):
        parts = [_eval(data_dir, batch_size=4, process_index=i, process_count=count)
                 for i in range(count)]
        # Every process yields the same number of batches (multi-host steps stay in lockstep).
        assert len({len(p) for p in parts}) == 1
        assert sum((_real_ids(p) for p in parts), []) == full
        sizes = [len(_real_ids(p)) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_unprepared_dataset_error(tmp_path):
    empty = str(tmp_path)
    assert not data.is_prepared("cifar100", empty)
    with pytest.raises(HarnessError) as e:
        data.require_prepared("cifar100", empty)
    assert str(e.value) == (f"dataset 'cifar100' is not prepared under {empty}: "
                            f"run `harness prepare cifar100 --data-dir {empty}`; it needs internet (TFDS downloads "
                            f"cifar-100-binary.tar.gz, 161 MiB) or that file in {empty}/downloads/manual/")
    with pytest.raises(HarnessError, match="ILSVRC2012_img_train.tar"):
        data.iterate("imagenet2012", "validation", data_dir=empty, batch_size=2)
    # Our own builders too; the generated proxies are built on first use instead.
    with pytest.raises(HarnessError, match=f"harness prepare vqav2 --data-dir {empty}"):
        data.num_examples("vqav2", "train", empty)
    with pytest.raises(HarnessError, match="did you mean 'cifar100'"):
        data.require_prepared("cifar1000", empty)


def test_metadata(data_dir):
    assert data.is_prepared(NAME, data_dir)
    assert data.num_examples(NAME, "train", data_dir) == NUM_TRAIN
    assert data.num_classes(NAME, data_dir) == 5
    assert data.class_names(NAME, data_dir) == ["cat", "dog", "fox", "owl", "yak"]


def test_bad_split_and_arguments(data_dir):
    with pytest.raises(HarnessError, match="split 'trian'.*test, train"):
        data.iterate(NAME, "trian", data_dir=data_dir, batch_size=2)
    with pytest.raises(HarnessError, match="batch_size"):
        data.iterate(NAME, "train", data_dir=data_dir, batch_size=0)
    with pytest.raises(HarnessError, match="process_index"):
        data.iterate(NAME, "train", data_dir=data_dir, batch_size=2, process_index=2,
                     process_count=2)



def test_images_of_different_sizes_are_an_error_not_padding(data_dir):
    with pytest.raises(HarnessError, match="different sizes.*resize"):
        _eval(data_dir, pp="decode|keep('image')", batch_size=4)
    # Same-size images whose size only shows at run time batch fine.
    batches = _eval(data_dir, pp="decode(inkey='thumb')|keep('image', 'id')", batch_size=4)
    assert all(b["image"].shape == (4, 3, 3, 3) for b in batches)
    assert _real_ids(batches) == _tfds_ids(data_dir, "train")


def test_images_arrive_encoded_without_a_decode_op(data_dir):
    batch = _eval(data_dir, pp="keep('image', 'id')", batch_size=3)[0]
    assert batch["image"].dtype == object and batch["image"][0][:4] == b"\x89PNG"
    assert set(batch) == {"image", "id", "_index", "_mask"}


def test_nested_features_are_flattened(data_dir):
    batch = _eval(data_dir, pp="decode|resize(2)", batch_size=3)[0]
    np.testing.assert_array_equal(batch["meta/size"], 5 + batch["id"] % 3)


# --------------------------------------------------------------------------------------------------
# train


def test_train_stream_reproducible_and_seeded(data_dir):
    a = _train_ids(data_dir, 12, seed=0)
    assert a == _train_ids(data_dir, 12, seed=0)
    assert a != _train_ids(data_dir, 12, seed=1)
    assert all(len(batch) == 4 for batch in a)


def test_train_epochs_are_permutations(data_dir):
    stream = sum(_train_ids(data_dir, 27, seed=0), [])  # 108 >= 2 epochs of 53
    first, second = stream[:NUM_TRAIN], stream[NUM_TRAIN:2 * NUM_TRAIN]
    assert sorted(first) == sorted(second) == list(range(NUM_TRAIN))
    assert first != second  # reshuffled every epoch
    assert first != _tfds_ids(data_dir, "train")


def test_train_resume_equals_tail_of_uninterrupted_stream(data_dir):
    full = _train_ids(data_dir, 16, seed=3)
    assert _train_ids(data_dir, 3, seed=3, start_step=13) == full[13:16]  # step 13 is in epoch 1
    flat = sum(full, [])
    resumed = _train_ids(data_dir, 3, seed=3, start_example=7)  # mid-batch
    assert sum(resumed, []) == flat[7:19]


def test_train_resume_reproduces_random_augmentation(data_dir):
    pp = "decode|inception_crop(4)|flip_lr|keep('image', 'id')"

    def stream(**kw):
        it = data.iterate(NAME, "train", data_dir=data_dir, pp=pp, train=True, seed=1,
                          batch_size=4, **kw)
        return [next(it) for _ in range(3)]

    full = stream()
    resumed = stream(start_step=1)
    for a, b in zip(full[1:], resumed[:2], strict=True):
        np.testing.assert_array_equal(a["id"], b["id"])
        np.testing.assert_array_equal(a["image"], b["image"])


def test_train_process_shards_are_disjoint(data_dir):
    firsts = []
    for i in range(2):
        stream = sum(_train_ids(data_dir, 7, seed=0, process_index=i, process_count=2), [])
        size = 26 if i == 0 else 27
        firsts.append(set(stream[:size]))
        assert len(firsts[-1]) == size
    assert firsts[0].isdisjoint(firsts[1]) and firsts[0] | firsts[1] == set(range(NUM_TRAIN))


def test_train_num_examples_caps_the_pool(data_dir):
    stream = sum(_train_ids(data_dir, 3, seed=0, num_examples=4), [])
    assert set(stream) == set(_tfds_ids(data_dir, "train")[:4])


# --------------------------------------------------------------------------------------------------
# registry


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    assert data.default_data_dir(str(tmp_path / "flag")) == str(tmp_path / "flag")
    assert data.default_data_dir() == str(tmp_path / "env")
    monkeypatch.delenv("TFDS_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.default_data_dir() == str(tmp_path / "tensorflow_datasets")


# big_vision's few-shot configs: (key, TFDS name, train split, test split).
BIG_VISION_FEWSHOT = [
    ("birds", "caltech_birds2011", "train", "test"),
    ("caltech", "caltech101", "train", "test"),
    ("cars", "cars196:2.1.0", "train", "test"),
    ("cifar100", "cifar100", "train", "test"),
    ("col_hist", "colorectal_histology", "train[:2000]", "train[2000:]"),
    ("dtd", "dtd", "train", "test"),
    ("imagenet", "imagenet2012", "train[:65000]", "validation"),
    ("pets", "oxford_iiit_pet", "train", "test"),
    ("uc_merced", "uc_merced", "train[:1000]", "train[1000:]"),
]


@pytest.mark.parametrize("short_name, tfds_name, train, test", BIG_VISION_FEWSHOT)
def test_fewshot_splits_match_big_vision(short_name, tfds_name, train, test):
    (info,) = [i for i in data.DATASETS.values() if i.short_name == short_name]
    assert info.tfds_name == tfds_name and info.name in data.FEWSHOT_DATASETS
    assert (info.split("fewshot_train"), info.split("fewshot_test")) == (train, test)


@pytest.mark.parametrize("name", sorted(data.DATASETS))
def test_registry_entries_are_complete(name):
    info = data.DATASETS[name]
    assert info.name == name
    assert "test" in info.splits or "validation" in info.splits
    command = info.prepare_command("/d")
    assert "/d" in command and "{" not in command
    if info.label_key:
        assert info.num_classes


def test_registry_special_splits():
    assert data.DATASETS["imagenet2012"].split("minival") == "train[99%:]"
    assert data.DATASETS["coco_captions"].split("train") == "train+restval"
    assert data.DATASETS["imagenet2012_real"].label_key == "real_label"
    with pytest.raises(HarnessError, match="no 'minival' split"):
        data.DATASETS["cifar100"].split("minival")
    # A config of a known dataset keeps its entry.
    assert data.get_info("proxy_scenes/tiny").tfds_name == "proxy_scenes/tiny"
    assert data.get_info("proxy_scenes/tiny").num_classes == 24


def test_vqa_layouts_name_registry_roles():
    vqa = {name: info for name, info in data.DATASETS.items() if info.vqa}
    assert list(vqa) == ["proxy_scenes", "vqav2", "gqa", "ocrvqa"]
    for info in vqa.values():
        info.split("train"), info.split(info.vqa.eval_role)  # the roles the VQA task reads exist
        assert info.vqa.question in info.vqa.keys and info.vqa.question_id in info.vqa.keys
    # VQAv2's test splits have no public answers: it is scored on validation.
    assert data.DATASETS["vqav2"].split(data.DATASETS["vqav2"].vqa.eval_role) == "validation"
    assert data.DATASETS["gqa"].split("train") == "train_balanced"
    # A config inherits its entry's facts.
    assert data.get_info("proxy_scenes/tiny").vqa == data.DATASETS["proxy_scenes"].vqa
    assert data.get_info("nosuch").vqa is None


def test_paper_order_and_tags():
    order = data.PAPER_DATASET_ORDER
    assert order[:len(data.FEWSHOT_DATASETS)] == data.FEWSHOT_DATASETS and len(set(order)) == len(order)
    tags = {name: info.report_tag for name, info in data.DATASETS.items() if info.report_tag}
    assert tags == {"imagenet2012": "val", "imagenet2012_real": "real", "imagenet_v2": "v2", "imagenet_r": "r",
                    "imagenet_a": "a", "objectnet": "objectnet"}
    assert set(tags.values()) <= set(order)
    assert {"ocrvqa", "gqa", "vqav2"} <= set(order)
    labels = [name for name, info in data.DATASETS.items() if info.imagenet_labels]
    assert labels == ["imagenet2012", "imagenet2012_real", "imagenet_v2", "imagenet_r", "imagenet_a", "objectnet"]
    assert all(data.DATASETS[n].num_classes == 1000 for n in labels)
    assert data.DATASETS["coco_captions"].image_id_key == "image/id"
    assert data.DATASETS["proxy_scenes"].image_id_key == "image_id"
