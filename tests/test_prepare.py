"""`harness prepare NAME`, run as a user runs it, for every dataset `harness ls datasets` lists: TFDS's
imagenet2012 from a pair of tiny archives in the official layout, our builders from their manual files, every
downloading builder offline (one line, at once), a prepare killed by SIGKILL and run again, and the required
data of a run checked before any warning about optional data."""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tarfile
import time
import urllib.parse

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from click.testing import CliRunner  # noqa: E402

from harness import data  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.data import prepared  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from tests.tiny import TINY_DEC, TINY_DS, TINY_ENC  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
TFDS_DIR = pathlib.Path(tfds.__file__).parent
DOWNLOADING = [name for name, info in data.DATASETS.items() if info.sources.downloads]


def prepare(*args: str):
    return CliRunner().invoke(main, ["prepare", *args])


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _offline(url: str) -> bool:
    """This machine cannot reach `url`'s host (the tests of the offline failure need that; with a network the
    prepare would start a real download)."""
    parts = urllib.parse.urlsplit(url)
    return prepared.reach(parts.hostname, parts.port or 443, timeout=5) is not None


# ------------------------------------------------------------------------------------------- the registry
def test_every_dataset_is_prepared_by_harness_prepare_and_nothing_says_tfds_build():
    for name, info in data.DATASETS.items():
        assert info.prepare_command("/d") == f"harness prepare {name} --data-dir /d"
        assert info.needs("/d"), name  # what it needs, in words
    texts = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "harness").rglob("*.py"),
             *(REPO / "tasks").glob("*.py")]
    said = [str(p) for p in texts if re.search(r"tfds build \S+ --data_dir", p.read_text())]  # TFDS's CLI
    assert not said, said


class _RecordingDownloads:
    """A download manager that records what a builder asks for (TFDS's builders only call these)."""

    def __init__(self, manual_dir: pathlib.Path, payload: pathlib.Path):
        self.urls: list[str] = []
        self.manual_dir = manual_dir
        self._payload = payload

    def _record(self, urls):
        if isinstance(urls, dict):
            return {k: self._record(v) for k, v in urls.items()}
        if isinstance(urls, (list, tuple)):
            return [self._record(u) for u in urls]
        self.urls.append(getattr(urls, "url", urls))
        return str(self._payload)

    download = download_and_extract = _record

    def iter_archive(self, path):
        return iter(())


@pytest.mark.parametrize("name", DOWNLOADING)
def test_registry_downloads_are_what_the_tfds_builder_asks_for(name, tmp_path):
    """The registry's downloads are exactly the addresses the builder requests (its `_split_generators` run with
    a recording download manager), under the file names TFDS's checksums give them."""
    info = data.get_info(name)
    builder = tfds.builder(info.tfds_name, data_dir=str(tmp_path))
    manual = tmp_path / "manual"
    manual.mkdir()
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w"):  # imagenet2012_real opens it
        pass
    payload = tmp_path / "payload.json"
    payload.write_text("[]")
    recorder = _RecordingDownloads(manual, payload)
    try:
        builder._split_generators(recorder)
    except Exception:  # noqa: BLE001 - the recorded paths hold no dataset; the requests are recorded by then
        pass
    assert set(recorder.urls) == {d.url for d in info.sources.downloads}
    for d in info.sources.downloads:
        assert builder.url_infos[d.url].filename == d.file


def test_manual_files_are_the_ones_tfds_names():
    for name in ("imagenet2012", "imagenet2012_real"):
        instructions = tfds.builder_cls(name).MANUAL_DOWNLOAD_INSTRUCTIONS
        for f in data.get_info(name).sources.manual:
            assert f in instructions, (name, f)


# -------------------------------------------------------------------------------------------- imagenet2012
def _jpeg(value: int, shape=(10, 12, 3)) -> bytes:
    return tf.io.encode_jpeg(np.full(shape, value, np.uint8)).numpy()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


VAL_IDS = (3, 1, 2)  # archive order differs from name order
TRAIN = {"n01440764": (10026, 10027), "n01443537": (2,)}


def write_val_tar(manual: pathlib.Path) -> None:
    """ILSVRC2012_img_val.tar as released: the JPEGs at the top, named ILSVRC2012_val_<8-digit id>.JPEG.
    TFDS pairs the sorted names with the lines of its own validation_labels.txt, so ids 1..N take lines 1..N."""
    with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in VAL_IDS:
            _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(20 * i))


def write_train_tar(manual: pathlib.Path) -> None:
    """ILSVRC2012_img_train.tar as released: one tar per synset, <wnid>.tar, of <wnid>_<n>.JPEG."""
    with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as outer:
        for synset, ids in TRAIN.items():
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in ids:
                    _add(tar, f"{synset}_{i}.JPEG", _jpeg(100))
            _add(outer, f"{synset}.tar", inner.getvalue())


def test_imagenet2012_from_tiny_official_tars(tmp_path):
    data_dir, manual = tmp_path / "tfds", tmp_path / "manual"
    manual.mkdir()
    write_val_tar(manual)
    # One archive only: one line naming the other, and nothing written (TFDS would build validation alone).
    r = prepare("imagenet2012", "--data-dir", str(data_dir), "--manual-dir", str(manual))
    assert r.exit_code == 2 and _lines(r.output) == [
        f"error: imagenet2012: ILSVRC2012_img_train.tar is missing from {manual}/; it needs ILSVRC2012_img_train.tar "
        f"and ILSVRC2012_img_val.tar in {manual}/ (from https://image-net.org/download-images, after registering) "
        "(or pass the folder that holds them as --manual-dir)"]
    assert not data_dir.exists()

    write_train_tar(manual)
    r = prepare("imagenet2012", "--data-dir", str(data_dir), "--manual-dir", str(manual))
    assert r.exit_code == 0, r.output
    assert _lines(r.output)[-1] == f"prepared imagenet2012 under {data_dir}/imagenet2012/5.1.0"
    r = prepare("imagenet2012", "--data-dir", str(data_dir))
    assert r.exit_code == 0 and _lines(r.output) == [
        f"imagenet2012 is already prepared under {data_dir}/imagenet2012/5.1.0"]

    # The labels, independently: TFDS's label list is the sorted WordNet ids; validation labels by line.
    wnids = (TFDS_DIR / "datasets/imagenet2012/labels.txt").read_text().split()
    val_lines = (TFDS_DIR / "datasets/imagenet2012/validation_labels.txt").read_text().split()
    pp = 'decode|keep("image", "label", "file_name")'
    val = {}
    for batch in data.iterate("imagenet2012", data.get_info("imagenet2012").split("test"), pp=pp, batch_size=4,
                              data_dir=data_dir):
        for name, label, image, real in zip(batch["file_name"], batch["label"], batch["image"], batch["_mask"]):
            if real:
                val[name.decode()] = (wnids[label], round(float(image.mean())))
    assert {k: v[0] for k, v in val.items()} == {f"ILSVRC2012_val_{i:08d}.JPEG": val_lines[i - 1] for i in VAL_IDS}
    assert all(abs(mean - 20 * int(k[-10:-5])) <= 2 for k, (_, mean) in val.items())
    train = {}
    for batch in data.iterate("imagenet2012", "train", pp=pp, batch_size=4, data_dir=data_dir):
        for name, label, real in zip(batch["file_name"], batch["label"], batch["_mask"]):
            if real:
                train[name.decode()] = wnids[label]
    assert train == {f"{s}_{i}.JPEG": s for s, ids in TRAIN.items() for i in ids}
    listing = CliRunner().invoke(main, ["ls", "datasets", "--data-dir", str(data_dir)]).output
    assert re.search(r"^imagenet2012 +prepared", listing, re.M)


def test_what_tfds_imagenet2012_builder_requires(tmp_path):
    """TFDS's own call, as docs/data.md states it: the val archive is read even to build train; train is left
    out (no error) without its archive."""
    manual = tmp_path / "manual"
    manual.mkdir()
    write_train_tar(manual)
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    with pytest.raises(tf.errors.NotFoundError, match="ILSVRC2012_img_val.tar"):
        tfds.builder("imagenet2012", data_dir=str(tmp_path / "a")).download_and_prepare(download_config=config)
    (manual / "ILSVRC2012_img_train.tar").unlink()
    write_val_tar(manual)
    builder = tfds.builder("imagenet2012", data_dir=str(tmp_path / "b"))
    builder.download_and_prepare(download_config=config)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"validation": 3}


def test_imagenet2012_real_needs_the_val_tar_then_real_json(tmp_path):
    data_dir, manual = tmp_path / "tfds", tmp_path / "manual"
    manual.mkdir()
    args = ("imagenet2012_real", "--data-dir", str(data_dir), "--manual-dir", str(manual))
    r = prepare(*args)
    assert r.exit_code == 2 and len(_lines(r.output)) == 1
    assert _lines(r.output)[0].startswith("error: imagenet2012_real: ILSVRC2012_img_val.tar is missing from ")
    write_val_tar(manual)
    (url,) = [d.url for d in data.get_info("imagenet2012_real").sources.downloads]
    if _offline(url):
        r = prepare(*args)
        assert r.exit_code == 2 and len(_lines(r.output)) == 1
        assert _lines(r.output)[0].startswith("error: imagenet2012_real: cannot download real.json: "
                                              "raw.githubusercontent.com cannot be looked up")
    # A real.json that is not the official one: its size says so, before anything is written.
    (manual / "real.json").write_text("[[1], [2], [3]]")
    r = prepare(*args)
    assert r.exit_code == 2 and _lines(r.output) == [
        f"error: imagenet2012_real: {manual}/real.json has 15 bytes, but the official real.json has 388478; download "
        f"it again from {url} (or remove it, and TFDS downloads it)"]
    assert not data_dir.exists()


# --------------------------------------------------------------------------------- TFDS's downloading builders
@pytest.mark.parametrize("name", DOWNLOADING)
def test_a_download_offline_fails_at_once_in_one_line(name, tmp_path):
    info = data.get_info(name)
    if not all(_offline(d.url) for d in info.sources.downloads):
        pytest.skip("this machine reaches the download host: the prepare would download for real")
    data_dir, manual = tmp_path / "tfds", tmp_path / "manual"
    if info.sources.manual:  # imagenet2012_real: its val tar is there, real.json must be downloaded
        manual.mkdir()
        write_val_tar(manual)
    t0 = time.perf_counter()
    r = prepare(name, "--data-dir", str(data_dir), "--manual-dir", str(manual))
    seconds = time.perf_counter() - t0
    lines = _lines(r.output)
    assert r.exit_code == 2 and len(lines) == 1, r.output
    first = info.sources.downloads[0]
    host = urllib.parse.urlsplit(first.url).hostname
    assert lines[0].startswith(f"error: {name}: cannot download {first.file}")
    assert f"{host} cannot be looked up" in lines[0] and "(no network?)" in lines[0]
    folder = tfds.builder(info.tfds_name, data_dir=str(tmp_path / "x")).name
    assert lines[0].endswith(f"(`harness prepare {name}`) and copy its folder {folder}/ into {data_dir}/, or put "
                             f"{'that file' if len(info.sources.downloads) == 1 else 'those files'} in {manual}/")
    assert seconds < 30  # TFDS's own downloader retries for minutes
    assert not data_dir.exists()


def test_a_file_an_earlier_prepare_downloaded_needs_no_network(tmp_path):
    """TFDS keeps a finished download under its cache name (address + checksum, with a .INFO file beside it) and
    reuses it: the host check then leaves that file out."""
    from tensorflow_datasets.core.download import resource

    (download,) = data.get_info("cifar100").sources.downloads
    if not _offline(download.url):
        pytest.skip("this machine reaches the download host")
    data_dir = tmp_path / "tfds"
    builder = tfds.builder("cifar100", data_dir=str(data_dir))
    with pytest.raises(HarnessError, match="cannot download cifar-100-binary.tar.gz"):
        prepared.check_sources("cifar100", builder, str(data_dir), str(tmp_path / "manual"))
    cached = data_dir / "downloads" / "cifar100" / resource.get_dl_fname(download.url,
                                                                          builder.url_infos[download.url].checksum)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    resource.get_info_path(cached).write_text("{}")
    prepared.check_sources("cifar100", builder, str(data_dir), str(tmp_path / "manual"))  # no error


@pytest.mark.parametrize("name", ["imagenet_r", "imagenet_a"])
def test_a_placed_archive_that_is_not_the_official_one_is_one_line(name, tmp_path):
    (download,) = data.get_info(name).sources.downloads
    manual = tmp_path / "manual"
    manual.mkdir()
    with tarfile.open(manual / download.file, "w") as tar:
        _add(tar, f"{name.replace('_', '-')}/n01443537/0.jpg", _jpeg(10))
    size = os.path.getsize(manual / download.file)
    r = prepare(name, "--data-dir", str(tmp_path / "tfds"), "--manual-dir", str(manual))
    official = int(tfds.builder_cls(name).url_infos[download.url].size)
    assert r.exit_code == 2 and _lines(r.output) == [
        f"error: {name}: {manual}/{download.file} has {size} bytes, but the official {download.file} has {official}; "
        f"download it again from {download.url} (or remove it, and TFDS downloads it)"]


# ------------------------------------------------------------------------------------------- our builders
def _write_vqav2_with_train(manual: pathlib.Path) -> None:
    from tests.test_builders import _write_jpeg, _write_vqav2

    _write_vqav2(manual)
    for kind in ("OpenEnded_mscoco_{}_questions", "mscoco_{}_annotations"):
        text = (manual / f"v2_{kind.format('val2014')}.json").read_text()
        (manual / f"v2_{kind.format('train2014')}.json").write_text(text.replace("val2014", "train2014"))
    for i, value in ((42, 200), (73, 90)):
        _write_jpeg(manual / "train2014" / f"COCO_train2014_{i:012d}.jpg", (8, 8, 3), value)


def test_vqav2_prepare_names_every_missing_file_then_builds(tmp_path):
    data_dir, manual = tmp_path / "tfds", tmp_path / "manual"
    _write_vqav2_with_train(manual)
    (manual / "v2_mscoco_train2014_annotations.json").unlink()
    for image in (manual / "train2014").iterdir():
        image.unlink()
    (manual / "train2014").rmdir()
    r = prepare("vqav2", "--data-dir", str(data_dir), "--manual-dir", str(manual))
    assert r.exit_code == 2 and len(_lines(r.output)) == 1
    assert _lines(r.output)[0].startswith(
        f"error: vqav2: v2_mscoco_train2014_annotations.json, train2014/ are missing from {manual}/; it needs "
        "v2_OpenEnded_mscoco_train2014_questions.json, ")
    assert not data_dir.exists()
    _write_vqav2_with_train(manual)
    r = prepare("vqav2", "--data-dir", str(data_dir), "--manual-dir", str(manual))
    assert r.exit_code == 0, r.output
    assert data.num_examples("vqav2", "train", data_dir) == data.num_examples("vqav2", "validation", data_dir) == 3


def test_a_manual_dataset_without_its_folder_is_one_line(tmp_path):
    for name, says in (("gqa", "gqa: train_balanced_questions.json, testdev_balanced_questions.json, images/ are "
                               "missing from"),
                       ("ocrvqa", "ocrvqa: dataset.json, images/ are missing from"),
                       ("objectnet", "ObjectNet: no objectnet-1.0/images/ and objectnet-1.0/mappings/ in")):
        r = prepare(name, "--data-dir", str(tmp_path / "tfds"))
        assert r.exit_code == 2 and len(_lines(r.output)) == 1 and says in r.output, r.output
    assert not (tmp_path / "tfds").exists()


# -------------------------------------------------------------------------------- an interrupted prepare
def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_prepare_killed_midway_is_cleaned_up_by_the_next(tmp_path):
    """SIGKILL a real `harness prepare` process while TFDS writes its incomplete.* folder; the next prepare
    removes that folder (saying so in one line) and builds exactly what a clean prepare builds."""
    data_dir = tmp_path / "tfds"
    folder = data_dir / "proxy_scenes" / "tiny"
    child = subprocess.Popen([sys.executable, "-m", "harness.cli", "prepare", TINY_DS, "--data-dir", str(data_dir)],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and child.poll() is None:
            stale = [p for p in folder.glob("incomplete.*") if any(p.rglob("*tfrecord*"))]
            if stale:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the prepare ended before a shard was written, or never began writing")
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    (left,) = folder.glob("incomplete.*")
    assert prepared.INCOMPLETE_DATASET.fullmatch(left.name) and not data.is_prepared(TINY_DS, data_dir)

    r = prepare(TINY_DS, "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    assert f"warning: {TINY_DS}: removed {left}, left by an interrupted prepare" in _lines(r.output)
    assert not list(folder.glob("incomplete.*")) and data.is_prepared(TINY_DS, data_dir)
    clean = tmp_path / "clean"
    assert prepare(TINY_DS, "--data-dir", str(clean)).exit_code == 0
    assert _files(folder / "1.0.0") == _files(clean / "proxy_scenes" / "tiny" / "1.0.0")


def test_only_the_datasets_own_unfinished_folders_are_removed(tmp_path):
    data_dir = tmp_path / "tfds"
    builder = tfds.builder("proxy_digits", data_dir=str(data_dir))
    root = pathlib.Path(builder.data_path).parent
    download = data_dir / "downloads" / "proxy_digits"
    stale = [root / "incomplete.AB12CD_1.0.0", download / f"x.zip.tmp.{'0' * 32}"]
    kept = [root / "incomplete.notours", root / "1.0.0-notes", data_dir / "downloads" / "other" / f"y.tmp.{'0' * 32}",
            data_dir / "proxy_scenes" / "incomplete.AB12CD_1.0.0"]
    for p in stale + kept:
        p.mkdir(parents=True)
        (p / "f").write_text("x")
    assert prepared.remove_incomplete(builder, str(data_dir)) == stale
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


# ----------------------------------------------------------------------- a run: required data first
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> str:
    from harness.models.encoder import load_encoder

    root = tmp_path_factory.mktemp("ckpt")
    return load_encoder("random:0", **{**TINY_ENC, "depth": 1}).save(str(root / "tiny.npz"))


def _run_args(ckpt: str, tmp_path: pathlib.Path, data_dir: pathlib.Path, **sets: str) -> list[str]:
    return ["run", "--task", "vqa", "--ckpt", ckpt, "--data-dir", str(data_dir), "--out", str(tmp_path / "runs"),
            "--cache-dir", str(tmp_path / "cache"), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]


def test_a_run_without_its_data_says_one_line_and_no_warning(tiny_ckpt, tmp_path):
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    r = CliRunner().invoke(main, _run_args(tiny_ckpt, tmp_path, data_dir, **TINY_DEC))  # vqav2, gqa, ocrvqa
    assert r.exit_code == 2 and _lines(r.output) == [
        f"error: dataset 'vqav2' is not prepared under {data_dir}: "
        f"{data.get_info('vqav2').how_to_prepare(data_dir)}"]


def test_a_skipped_optional_dataset_is_a_warning_line(tiny_ckpt, tmp_path):
    data_dir = tmp_path / "tfds"
    sets = {**TINY_DEC, "datasets": f"{TINY_DS},gqa", "prefix_len": "12", "target_len": "4"}
    r = CliRunner().invoke(main, _run_args(tiny_ckpt, tmp_path, data_dir, **sets))
    assert r.exit_code == 0, r.output
    warnings = [line for line in _lines(r.stderr) if line.startswith("warning: ")]
    assert warnings == [  # the skip up front, then the proxy generated when first read
        f"warning: vqa: gqa is not prepared under {data_dir}, so it is skipped; to include it, "
        f"{data.get_info('gqa').how_to_prepare(data_dir)}",
        f"warning: preparing {TINY_DS} under {data_dir} (first use; generated offline)"]
    assert "WARNING:" not in r.output
    (record,) = (tmp_path / "runs").glob("vqa__*.json")
    assert json.loads(record.read_text())["info"]["skipped_datasets"] == ["gqa"]


def test_linear_probe_checks_its_required_test_sets_before_any_work(task_env, tmp_path):
    from harness.run.runner import run_task
    from tests.tiny import TINY_RUNS

    _, sets = TINY_RUNS["linear_probe"]
    cache = tmp_path / "cache"
    with pytest.raises(HarnessError, match=r"^dataset 'imagenet_v2' is not prepared under .*harness prepare imagen"):
        run_task("linear_probe", task_env["ckpt"], sets={**sets, "eval_datasets": "imagenet_v2"},
                 data_dir=task_env["data_dir"], out_dir=tmp_path / "runs", cache_dir=cache, progress=False)
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))  # no feature was computed
