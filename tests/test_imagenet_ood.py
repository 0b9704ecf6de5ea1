"""ImageNet-R, ImageNet-A and ObjectNet, the last three columns of the paper's Table 2.

TFDS's own imagenet_r / imagenet_a builders read tiny archives laid out like the official ones from the manual
folder, our ObjectNet builder reads a tiny folder release (red-bordered PNGs and the four mapping files), the
restricted scoring is checked against hand computations, and one path goes from those builders through
`linear_probe` and `lit_zeroshot` records to the cells of `harness report --with paper`. Everything is
built offline from data the tests write."""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import tarfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

import harness.data.builders  # noqa: E402,F401  (registers the builders)
from harness import data  # noqa: E402
from harness.data.builders import objectnet  # noqa: E402
from harness.data.tokenizer import PROXY_TOKENIZER  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.eval.metrics import MetricInputError, restricted_argmax, zeroshot_hits  # noqa: E402
from harness.tasks import lit_zeroshot as lz  # noqa: E402
from harness.tasks.linear_probe import (  # noqa: E402
    LinearProbe,
    LinearProbeConfig,
    real_correct,
    top1,
)
from tests.tiny import TINY_DS  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# ImageNet-1k ids (TFDS order) and WordNet ids of the classes the fixtures use.
WNID = {1: "n01443537", 2: "n01484850", 6: "n01498041", 11: "n01531178", 409: "n02708093", 530: "n03196217",
        954: "n07753592"}
RED = (255, 0, 0)
# Constant colour per ImageNet class: the probe's training images, and the OOD images of the same class.
COLOUR = {1: 40, 6: 120, 409: 200}


def _jpeg(value: int, shape=(20, 24)) -> bytes:
    return tf.io.encode_jpeg(np.full((*shape, 3), value, np.uint8), quality=100).numpy()


def _add_file(tar: tarfile.TarFile, name: str, payload: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


# -------------------------------------------------------------------------------------------- fixtures
def write_hendrycks_tar(manual: pathlib.Path, name: str, images: dict[int, list[int]]) -> pathlib.Path:
    """`imagenet-r.tar` / `imagenet-a.tar` as released: `<name>/<wnid>/<file>.jpg`."""
    path = manual / f"{name}.tar"
    with tarfile.open(path, "w") as tar:
        for label, values in images.items():
            for i, value in enumerate(values):
                _add_file(tar, f"{name}/{WNID[label]}/{name[-1]}_{label}_{i}.jpg", _jpeg(value))
    return path


def build_hendrycks(tfds_name: str, archive: pathlib.Path, data_dir: pathlib.Path):
    """TFDS's own builder, reading the archive from the manual folder instead of downloading it. TFDS checks a
    manually placed archive against the checksum it registers for the real one, so that one entry is
    replaced by the tiny archive's for the build."""
    from tensorflow_datasets.core.download import checksums

    cls = tfds.builder_cls(tfds_name)
    (url,) = cls.url_infos  # the official address
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "url_infos", {url: checksums.compute_url_info(archive)})
        builder = tfds.builder(tfds_name, data_dir=str(data_dir))
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(archive.parent)))
    return builder


def _bordered_png(value: int, shape=(14, 12)) -> tuple[bytes, np.ndarray]:
    """A PNG with ObjectNet's 1-pixel red frame around a patterned inside; returns (bytes, pixels)."""
    h, w = shape
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = value
    img[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 5
    img[..., 2] = np.arange(h, dtype=np.uint8)[:, None] * 7
    img[0, :], img[-1, :], img[:, 0], img[:, -1] = RED, RED, RED, RED
    return tf.io.encode_png(img).numpy(), img


def write_objectnet_release(manual: pathlib.Path) -> dict[str, np.ndarray]:
    """A tiny `objectnet-1.0/` as unzipped: three class folders (two map to ImageNet, one does not) and
    the four mapping files in their formats. Returns {file name: the pixels written}."""
    release = manual / "objectnet-1.0"
    (release / "mappings").mkdir(parents=True)
    written = {}
    # The third clock is coloured as ImageNet class 1 (outside ObjectNet's classes).
    for folder, values in (("alarm_clock", (COLOUR[409], COLOUR[409] + 1, COLOUR[1])), ("banana", (30,)),
                           ("tv_stand", (90,))):
        (release / "images" / folder).mkdir(parents=True)
        for i, value in enumerate(values):
            payload, pixels = _bordered_png(value)
            name = f"{folder}/{i:015x}.png"
            (release / "images" / name).write_bytes(payload)
            written[name] = pixels
        (release / "images" / folder / "notes.txt").write_text("not an image")
    maps = release / "mappings"
    maps.joinpath(objectnet.FOLDER_TO_LABEL).write_text(json.dumps(
        {"alarm_clock": "Alarm clock", "banana": "Banana", "tv_stand": "TV stand"}))
    maps.joinpath(objectnet.LABEL_TO_IMAGENET).write_text(json.dumps(
        {"Alarm clock": "analog clock; digital clock", "Banana": "banana"}))
    # Line order is the devkit's, not TFDS's: the id file maps each ImageNet-1k id to its line.
    maps.joinpath(objectnet.IMAGENET_NAMES).write_text("banana\nanalog clock\ndigital clock\ngoldfish\n")
    maps.joinpath(objectnet.IMAGENET_ID_TO_LINE).write_text(json.dumps({"954": 0, "409": 1, "530": 2, "1": 3}))
    return written


def build_objectnet(manual: pathlib.Path, data_dir: pathlib.Path):
    """What `harness prepare objectnet --data-dir D --manual-dir M` runs."""
    return data.prepare("objectnet", data_dir, manual_dir=str(manual))


def write_imagenet_tars(manual: pathlib.Path):
    """TFDS's imagenet2012 archives (as tests/test_builders.py): a train tar of per-class tars, a val tar."""
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in (1, 2, 3):
            _add_file(tar, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(10 * i))
    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        for label, value in COLOUR.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(4):
                    _add_file(tar, f"{WNID[label]}_{i}.JPEG", _jpeg(value))
            _add_file(outer, f"{WNID[label]}.tar", inner.getvalue())


@pytest.fixture(scope="module")
def ood_env(task_env, tmp_path_factory):
    """A data dir with tiny imagenet2012, imagenet_r, imagenet_a and objectnet builds (each OOD image coloured
    as the ImageNet training images of its class), and the pixels ObjectNet's images were written with."""
    root = tmp_path_factory.mktemp("ood")
    data_dir = pathlib.Path(task_env["data_dir"])
    manual = root / "manual"
    manual.mkdir()
    write_imagenet_tars(manual)
    tfds.builder("imagenet2012", data_dir=str(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    # ImageNet-R: class 1 (in the subset, as its training images), class 2 (in the subset, never trained).
    build_hendrycks("imagenet_r", write_hendrycks_tar(manual, "imagenet-r", {1: [COLOUR[1]] * 2, 2: [70]}), data_dir)
    # ImageNet-A: class 6 as its training images, and class 11 coloured as class 1, which is not in -A's subset.
    build_hendrycks("imagenet_a", write_hendrycks_tar(manual, "imagenet-a", {6: [COLOUR[6]] * 2, 11: [COLOUR[1]]}),
                    data_dir)
    pixels = write_objectnet_release(root / "objectnet_manual")
    build_objectnet(root / "objectnet_manual", data_dir)
    return {**task_env, "root": root, "objectnet_pixels": pixels}


# --------------------------------------------------------------------------------------------- builders
@pytest.mark.parametrize("tfds_name,archive,labels", [
    ("imagenet_r", "imagenet-r", {1: [11, 12], 2: [13]}),
    ("imagenet_a", "imagenet-a", {6: [21], 11: [22, 23]}),
])
def test_tfds_builder_reads_official_archive_from_manual_dir(tmp_path, tfds_name, archive, labels):
    manual = tmp_path / "downloads" / "manual"  # TFDS's default manual dir of data_dir=tmp_path
    manual.mkdir(parents=True)
    path = write_hendrycks_tar(manual, archive, labels)
    from tensorflow_datasets.core.download import checksums

    cls = tfds.builder_cls(tfds_name)
    (url,) = cls.url_infos
    assert cls.url_infos[url].filename == f"{archive}.tar"  # the name the prepare command tells users to use
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "url_infos", {url: checksums.compute_url_info(path)})
        tfds.builder(tfds_name, data_dir=str(tmp_path)).download_and_prepare()  # no manual_dir: the default
    assert data.is_prepared(tfds_name, tmp_path)
    examples = list(tfds.as_numpy(tfds.builder(tfds_name, data_dir=str(tmp_path)).as_dataset(split="test")))
    got = sorted((int(e["label"]), round(float(e["image"].mean()))) for e in examples)
    assert got == sorted((label, v) for label, vs in labels.items() for v in vs)
    assert data.num_classes(tfds_name, tmp_path) == 1000
    subset = data.class_subset(tfds_name, tmp_path)
    assert len(subset) == 200 and set(labels) <= set(subset.tolist())


def test_registry_subsets_are_the_big_vision_label_sets():
    """Against big_vision's own lists (`class_names.py`, recorded in tests/data/bv_configs.json by
    make_bv_config_fixtures.py), which are the datasets' authors' (spot checks from hendrycks' eval.py)."""
    bv = json.loads((REPO / "tests" / "data" / "bv_configs.json").read_text())["imagenet_label_sets"]
    a = data.get_info("imagenet_a").class_subset
    r = data.get_info("imagenet_r").class_subset
    assert list(a) == bv["imagenet_a"] and list(r) == bv["imagenet_r"]
    assert len(set(a)) == len(set(r)) == 200 and list(a) == sorted(a) and list(r) == sorted(r)
    assert a[:6] == (6, 11, 13, 15, 17, 22) and r[:6] == (1, 2, 4, 6, 8, 9)
    for name, tag in (("imagenet_r", "r"), ("imagenet_a", "a"), ("objectnet", "objectnet")):
        info = data.get_info(name)
        assert info.report_tag == tag and info.imagenet_labels and info.split("test") == "test"


def test_objectnet_builder_crops_border_and_maps_to_imagenet(ood_env):
    builder = tfds.builder("objectnet", data_dir=ood_env["data_dir"])
    examples = {e["file_name"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split="test"))}
    # tv_stand's class has no ImageNet counterpart; notes.txt is not an image.
    assert sorted(examples) == sorted(n for n in ood_env["objectnet_pixels"] if not n.startswith("tv_stand"))
    for name, e in examples.items():
        original = ood_env["objectnet_pixels"][name]
        b = objectnet.BORDER_PX
        np.testing.assert_array_equal(e["image"], original[b:-b, b:-b])  # lossless, frame gone
        assert e["image"].shape == (14 - 2 * b, 12 - 2 * b, 3)
        assert not (e["image"] == RED).all(axis=-1).any()
    assert sorted(examples["alarm_clock/000000000000000.png"]["label"].tolist()) == [409, 530]
    assert examples["alarm_clock/000000000000000.png"]["objectnet_label"] == b"Alarm clock"
    assert examples["banana/000000000000000.png"]["label"].tolist() == [954]
    assert data.class_subset("objectnet", ood_env["data_dir"]).tolist() == [409, 530, 954]
    assert data.label_is_set("objectnet", ood_env["data_dir"])


def test_objectnet_bad_release_is_one_line(tmp_path):
    with pytest.raises(HarnessError, match=r"no objectnet-1.0/images/ and objectnet-1.0/mappings/ in .*unzip"):
        objectnet.find_release(str(tmp_path))
    write_objectnet_release(tmp_path)
    maps = tmp_path / "objectnet-1.0" / "mappings"
    maps.joinpath(objectnet.LABEL_TO_IMAGENET).write_text(json.dumps({"Banana": "plantain"}))
    with pytest.raises(HarnessError, match="maps 'Banana' to 'plantain', which no line"):
        objectnet.read_mapping(str(tmp_path / "objectnet-1.0"))
    maps.joinpath(objectnet.IMAGENET_NAMES).unlink()
    with pytest.raises(HarnessError, match="imagenet_to_label_2012_v2 is missing"):
        objectnet.read_mapping(str(tmp_path / "objectnet-1.0"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HarnessError) as e:
        build_objectnet(empty, tmp_path / "data")
    assert "\n" not in str(e.value) and "objectnet-1.0.zip" in str(e.value)


@pytest.mark.parametrize("name,what", [("imagenet_r", "imagenet-r.tar"), ("imagenet_a", "imagenet-a.tar"),
                                       ("objectnet", "objectnet-1.0.zip")])
def test_missing_dataset_names_what_to_download_and_where(tmp_path, name, what):
    with pytest.raises(HarnessError) as e:
        data.require_prepared(name, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and what in msg and f"{tmp_path}/downloads/manual/" in msg
    assert f"harness prepare {name} --data-dir {tmp_path}" in msg


def test_ls_datasets_lists_them_with_the_prepare_command(tmp_path):
    from click.testing import CliRunner

    from harness.cli import main

    r = CliRunner().invoke(main, ["ls", "datasets", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for name, command in (("imagenet_r", "harness prepare imagenet_r"), ("imagenet_a", "harness prepare imagenet_a"),
                          ("objectnet", "harness prepare objectnet")):
        i = next(i for i, line in enumerate(lines) if line.split()[0] == name)
        assert "missing" in lines[i] and "to prepare:" in lines[i + 1] and command in lines[i + 1]


# ---------------------------------------------------------------------------------------------- scoring
def test_restricted_argmax_by_hand():
    logits = np.array([[0.1, 5.0, 0.3, 0.2, 0.4],   # best overall 1; among {0, 2, 4}: 4 (0.4)
                       [2.0, 1.0, 0.0, 9.0, 2.0],   # among {0, 2, 4}: tie 0 / 4 -> the smaller id, 0
                       [0.0, 0.0, 3.0, 0.0, 0.0]])  # 2 either way
    assert restricted_argmax(logits).tolist() == [1, 3, 2]
    assert restricted_argmax(logits, [4, 0, 2]).tolist() == [4, 0, 2]  # any order of the ids
    with pytest.raises(MetricInputError, match="non-empty subset of 0..4"):
        restricted_argmax(logits, [2, 5])
    with pytest.raises(MetricInputError, match="non-empty"):
        restricted_argmax(logits, [])


def test_subset_scoring_differs_from_unrestricted_on_a_crafted_example():
    """ImageNet-R-style (one label) and ObjectNet-style (a label set) scoring, by hand."""
    subset = np.array([1, 3])
    logits = np.array([[0.0, 2.0, 9.0, 1.0],    # unrestricted 2 (wrong); restricted 1 = label: right
                       [0.0, 1.0, 0.0, 3.0],    # 3 both ways; label 1: wrong both ways
                       [8.0, 0.0, 0.0, 0.5]])   # unrestricted 0 (wrong); restricted 3 = label: right
    labels = np.array([1, 1, 3])
    assert top1(logits, labels).tolist() == [0.0, 0.0, 0.0]
    assert top1(logits, labels, subset).tolist() == [1.0, 0.0, 1.0]
    # ObjectNet: row 0's class maps to ImageNet {1, 2}, row 1's to {3}, row 2's to {3}.
    hot = np.array([[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]], np.float32)
    unrestricted, _ = real_correct(logits, hot)
    assert unrestricted.tolist() == [1.0, 1.0, 0.0]  # row 2 predicts 0, outside every mapped class
    restricted, keep = real_correct(logits, hot, np.array([1, 2, 3]))
    assert restricted.tolist() == [1.0, 1.0, 1.0] and keep.all()  # row 2 -> 3; row 0 -> 2, in its set
    restricted, _ = real_correct(logits, hot, subset)  # 2 not allowed: row 0 -> 1, still in its set
    assert restricted.tolist() == [1.0, 1.0, 1.0]


def test_zeroshot_hits_over_a_subset_of_class_names():
    """Zero-shot on a subset classifies among the subset's names; rows of zclass are those classes."""
    zimg = np.array([[1.0, 0.0], [0.0, 1.0]])
    zclass = np.array([[0.0, 1.0], [1.0, 0.0]])  # row 0 = class 530, row 1 = class 409
    assert zeroshot_hits(zimg, zclass, [409, 530], classes=[530, 409]).tolist() == [1.0, 1.0]
    assert zeroshot_hits(zimg, zclass, [[409, 530], [954]], classes=[530, 409]).tolist() == [1.0, 0.0]


def test_zeroshot_pp_is_big_visions_per_dataset():
    """configs/proj/image_text/common.py: `_aspect75` for imagenet_a, `_square875` for imagenet_r."""
    bv = json.loads((REPO / "tests" / "data" / "bv_configs.json").read_text())["image_text"]
    cfg = lz.LitZeroShotConfig()

    def image_ops(pp):
        return [op.replace(" ", "") for op in pp.split("|") if op.split("(")[0] not in ("decode", "map")]

    for res in (224, 384):
        overrides = bv[f"disclf_{res}"]["dataset_overrides"]
        for ds in ("imagenet_a", "imagenet_r"):
            assert image_ops(lz.zeroshot_pp(cfg, res, ds)) == image_ops(overrides[ds]["pp_img"]), (ds, res)
            assert overrides[ds]["class_names"] == "clip" and data.get_info(ds).imagenet_labels
            # map("i1k_i1ka") relabels into the subset's 200 classes: the subset classification done here.
            assert overrides[ds]["pp_img"].endswith(f'map("i1k_i1k{ds[-1]}")')
    one = "decode|resize(64)|value_range(-1,1)"
    assert lz.zeroshot_pp(lz.LitZeroShotConfig(zeroshot_pp=one), 224, "imagenet_a") == one


def test_paper_suite_asks_for_every_table2_column():
    from harness.report.paper import load_paper_rows
    from harness.run.suites import SUITES

    (entry,) = [e for e in SUITES["paper"] if e.task == "linear_probe"]
    assert entry.preset is None and not entry.sets  # the defaults
    declared = {m.name: m for m in LinearProbe().metrics(LinearProbeConfig())}
    table2 = {k for row in load_paper_rows() for k in row["metrics"] if k.startswith("linear_probe/")}
    assert table2 == {f"linear_probe/imagenet2012/{t}" for t in ("val", "real", "v2", "r", "a", "objectnet")}
    assert table2 <= set(declared)
    assert all(declared[f"linear_probe/imagenet2012/{t}"].optional for t in ("r", "a", "objectnet"))
    assert not declared["linear_probe/imagenet2012/val"].optional


# ------------------------------------------------------------------------------------------ end to end
PROBE = {"dataset": "imagenet2012", "train_split": "train", "minival_split": "validation",
         "eval_datasets": "imagenet_r,imagenet_a,objectnet", "lrs": "0.3", "epochs": "10", "weight_decays": "0",
         "batch_size": "4", "extract_batch_size": "16", "mixup": "0"}


def test_linear_probe_to_report_cells(ood_env):
    """Builders -> feature cache -> probe -> restricted scoring -> record -> `harness report --with paper`."""
    from harness.report import report_command
    from harness.run.runner import run_task

    rec, _, _ = run_task("linear_probe", ood_env["ckpt"], sets=PROBE, data_dir=ood_env["data_dir"],
                         out_dir=ood_env["out"], cache_dir=ood_env["cache_dir"], progress=False)
    m = {k: v["value"] for k, v in rec["metrics"].items()}
    # The probe separates its three training colours; every OOD image of a trained class has that colour.
    # ImageNet-R: class 1 (2 images) right; class 2 was never trained, its prediction is some other class.
    assert m["linear_probe/imagenet2012/r"] == pytest.approx(200 / 3)
    # ImageNet-A: class 6 right twice; the class-11 image looks like class 1, which -A's subset excludes, so
    # the restricted prediction is another of the 200 (class 6 or an untrained one): wrong either way.
    assert m["linear_probe/imagenet2012/a"] == pytest.approx(200 / 3)
    # ObjectNet: two clocks look like analog clocks (409, in their label set {409, 530}): right. The third looks
    # like class 1: unrestricted that is its prediction (wrong); restricted to {409, 530, 954} it is 409 or
    # 530 (the untrained classes' logits tie, the smaller id wins): right. The banana (954) has no training
    # colour; restricted, it too gets 409 or 530: wrong. 3 of 4, where the 1000-way argmax gets 2.
    assert m["linear_probe/imagenet2012/objectnet"] == pytest.approx(75.0)
    for tag, n in (("r", 3), ("a", 3), ("objectnet", 4)):
        per = rec["per_example"][f"linear_probe/imagenet2012/{tag}"]
        assert len(per) == n and np.mean(per) == pytest.approx(m[f"linear_probe/imagenet2012/{tag}"])
    pps = {d["name"]: d["pp"] for d in rec["datasets"]}
    assert pps["objectnet"].endswith("|onehot(1000,key='label',key_result='label_multihot')")
    assert pps["imagenet_r"] == pps["imagenet2012"] == "decode|resize_small(37)|central_crop(32)|value_range(-1,1)"

    # The default (long) report: rows are metrics, columns checkpoints; our cells sit beside the paper's.
    table = report_command([str(ood_env["out"])], with_paper=True)
    section = table.split("### linear_probe")[1].split("###")[0]
    rows = {}
    for block in section.strip().split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if len(lines) < 3:
            continue
        cols = [c.strip() for c in lines[0].strip("|").split("|")]
        for line in lines[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.setdefault(cells[0], {}).update(zip(cols[1:], cells[1:]))
    paper = {"r": "89.0", "a": "76.4", "objectnet": "68.7"}
    for tag, ours in (("r", "66.67"), ("a", "66.67"), ("objectnet", "75.00")):
        row = rows[f"imagenet2012/{tag}"]
        assert row["tiny.npz"].startswith(ours + " ± "), (tag, row)  # the value, its CI half-width
        assert row["SoViT-400m/14 (paper)"] == paper[tag]


def test_linear_probe_skips_an_unprepared_ood_set(ood_env, caplog, tmp_path):
    """Without ObjectNet the run still finishes: one warning line, its (optional) cell absent."""
    from harness.run.runner import run_task

    partial = tmp_path / "tfds"
    partial.mkdir()
    for name in ("imagenet2012", "imagenet_r"):
        os.symlink(pathlib.Path(ood_env["data_dir"]) / name, partial / name)
    with caplog.at_level(logging.WARNING, logger="harness"):
        rec, _, _ = run_task("linear_probe", ood_env["ckpt"], sets={**PROBE, "eval_datasets": "imagenet_r,objectnet"},
                             data_dir=str(partial), out_dir=tmp_path / "runs", cache_dir=ood_env["cache_dir"],
                             progress=False)
    warnings = [r.getMessage() for r in caplog.records if "objectnet" in r.getMessage()]
    assert len(warnings) == 1 and "not prepared" in warnings[0] and "objectnet-1.0.zip" in warnings[0]
    assert "linear_probe/imagenet2012/objectnet" not in rec["metrics"]
    assert rec["metrics"]["linear_probe/imagenet2012/r"]["value"] == pytest.approx(200 / 3)
    assert rec["info"]["skipped_datasets"] == ["objectnet"]


def test_lit_zeroshot_on_the_subsets(ood_env):
    """Zero-shot over each subset's CLIP class names, with big_vision's per-dataset pp."""
    from harness.run.runner import run_task

    sets = {"train_dataset": TINY_DS, "zeroshot_datasets": "imagenet_r,imagenet_a,objectnet", "retrieval_datasets": "",
            "train_steps": "8", "batch_size": "16", "text_width": "32", "text_depth": "1", "text_mlp_dim": "64",
            "text_num_heads": "4", "max_len": "16", "prompt_templates": "class_name_only", "image_batch_size": "24",
            "ckpt_every": "0", "tokenizer": str(PROXY_TOKENIZER)}
    rec, _, _ = run_task("lit_zeroshot", ood_env["ckpt"], sets=sets, data_dir=ood_env["data_dir"],
                         out_dir=ood_env["out"], cache_dir=ood_env["cache_dir"], progress=False)
    for ds, n in (("imagenet_r", 3), ("imagenet_a", 3), ("objectnet", 4)):
        hits = rec["per_example"][f"lit_zeroshot/{ds}/top1"]
        assert len(hits) == n and set(hits) <= {0.0, 100.0}
        assert rec["metrics"][f"lit_zeroshot/{ds}/top1"]["value"] == pytest.approx(np.mean(hits))
    pps = {d["name"]: d["pp"] for d in rec["datasets"] if d["role"] == "zeroshot_test"}
    assert pps["imagenet_a"] == "decode|resize_small(42)|central_crop(32)|value_range(-1,1)"  # _aspect75
    assert pps["imagenet_r"] == pps["objectnet"] == "decode|resize(36)|central_crop(32)|value_range(-1,1)"


def test_imagenet_finetune_scores_ood_sets_when_asked(ood_env):
    """`ood_datasets` (empty by default, as Table 1) adds restricted-argmax cells; a non-ImageNet
    fine-tune refuses them before any data is read."""
    from harness.run.runner import run_task

    sets = {"res": "32", "lr": "0.01", "warmup_steps": "2", "train_steps": "4", "dataset": "imagenet2012",
            "train_split": "train", "minival_split": "validation", "test_split": "validation", "real_dataset": "",
            "v2_dataset": "", "ood_datasets": "imagenet_r,objectnet", "batch_size": "4", "eval_batch_size": "8",
            "ckpt_every": "0"}
    rec, _, _ = run_task("imagenet_finetune", ood_env["ckpt"], sets=sets, data_dir=ood_env["data_dir"],
                         out_dir=ood_env["out"], cache_dir=ood_env["cache_dir"], progress=False)
    for tag, n in (("r", 3), ("objectnet", 4)):
        per = rec["per_example"][f"imagenet_finetune/32/{tag}"]
        assert len(per) == n and rec["metrics"][f"imagenet_finetune/32/{tag}"]["value"] == pytest.approx(np.mean(per))
    assert rec["info"]["skipped_datasets"] == []
    with pytest.raises(HarnessError, match="scored on ImageNet-1k classes, but the model is fine-tuned on proxy"):
        run_task("imagenet_finetune", ood_env["ckpt"], sets={**sets, "dataset": TINY_DS}, data_dir=ood_env["data_dir"],
                 out_dir=ood_env["out"], cache_dir=ood_env["cache_dir"], progress=False)
    with pytest.raises(HarnessError, match="is not a class subset of ImageNet"):
        run_task("imagenet_finetune", ood_env["ckpt"], sets={**sets, "ood_datasets": "imagenet_v2"},
                 data_dir=ood_env["data_dir"], out_dir=ood_env["out"], cache_dir=ood_env["cache_dir"], progress=False)
