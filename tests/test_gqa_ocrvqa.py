"""GQA and OCR-VQA from the builder to the report cell: our TFDS builders on tiny inputs in the official
on-disk formats (written here: GQA's balanced questions JSON + images/<imageId>.jpg, OCR-VQA's dataset.json +
images/<id><ext>), their one-line errors, the scoring rules against hand computations, and
`harness prepare` -> `harness run --task vqa` -> `harness report --with paper` end to end."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

import harness.data.builders  # noqa: E402,F401  (registers the builders)
from click.testing import CliRunner  # noqa: E402

from harness import data  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.eval import metrics  # noqa: E402
from tests.tiny import TINY_DEC  # noqa: E402

# ---------------------------------------------------------------------------------------- fixtures


def _jpeg(shape: tuple[int, ...], value: int) -> bytes:
    return tf.io.encode_jpeg(np.full(shape, value, np.uint8)).numpy()


def _gqa_question(image_id: str, question: str, answer: str | None, full: str | None,
                  structural: str, semantic: str, detailed: str) -> dict:
    """One entry as the official *_balanced_questions.json hold it (a subset of the fields is enough)."""
    q = {"semantic": [{"operation": "select", "dependencies": [], "argument": "table (1)"}],
         "entailed": [], "equivalent": [], "question": question, "imageId": image_id, "isBalanced": True,
         "groups": {"global": None, "local": "10c-table_color"}, "semanticStr": "select: table",
         "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
         "types": {"structural": structural, "semantic": semantic, "detailed": detailed}}
    if answer is not None:
        q.update(answer=answer, fullAnswer=full)
    return q


# GQA's real ids: numeric strings (some with leading zeros) and Visual Genome image ids like "n161313".
GQA_TRAIN = {
    "02930152": ("2354786", "Is the sky dark?", "yes", "Yes, the sky is dark.", "verify", "attr", "verifyAttr"),
    "02930160": ("2354786", "What is on the white wall?", "pipe", "The pipe is on the wall.", "query", "rel",
                 "relS"),
    "07333408": ("n161313", "Which color is the table?", "brown", "The table is brown.", "query", "attr",
                 "chooseAttr"),
    "07333409": ("n161313", "Is the table wooden or metal?", "wooden", "The table is wooden.", "choose", "attr",
                 "chooseAttr"),
    "15736264": ("2400861", "Are there both cars and trucks?", "no", "No, there are cars but no trucks.",
                 "logical", "obj", "twoSameMaterial"),
    "15736265": ("2400861", "What vehicle is it?", "car", "It is a car.", "query", "cat", "categoryThat"),
}
GQA_TESTDEV = {
    "201307251": ("n388000", "Is it indoors or outdoors?", "outdoors", "It is outdoors.", "choose", "global",
                  "locationChoose"),
    "201640614": ("n388000", "Which side is the man on?", "right", "The man is on the right of the image.",
                  "query", "rel", "positionQuery"),
    "20968046": ("2400861", "What color is the car?", "red", "The car is red.", "query", "attr", "colorQuery"),
}
GQA_IMAGES = {"2354786": ((24, 32, 3), 200), "n161313": ((16, 20, 3), 90), "2400861": ((20, 20, 3), 40),
              "n388000": ((12, 18, 3), 150)}


def _write_gqa(root: pathlib.Path) -> None:
    """questions1.2/ as the zip unpacks, images/<imageId>.jpg, and a test split without answers."""
    (root / "questions1.2").mkdir(parents=True)
    for split, questions in (("train_balanced", GQA_TRAIN), ("testdev_balanced", GQA_TESTDEV)):
        (root / "questions1.2" / f"{split}_questions.json").write_text(
            json.dumps({qid: _gqa_question(*q) for qid, q in questions.items()}))
    (root / "questions1.2" / "test_balanced_questions.json").write_text(json.dumps(
        {"201971873": {"question": "Is the grass green?", "imageId": "n161313", "isBalanced": True}}))
    (root / "images").mkdir()
    for image_id, (shape, value) in GQA_IMAGES.items():
        (root / "images" / f"{image_id}.jpg").write_bytes(_jpeg(shape, value))


def _ocrvqa_entry(split: int, title: str, author: str, genre: str, ext: str = ".jpg") -> dict:
    return {"imageURL": f"http://ecx.images-amazon.com/images/I/51Gpbk{split}{ext}",
            "questions": ["Who wrote this book?", "What is the title of this book?", "What is the genre of this book?",
                          f"Is this a {genre.lower()} book?", "Is this a cooking book?"],
            "answers": [author, title, genre, "Yes", "No"],
            "title": title, "authorName": author, "genre": genre, "split": split}


# ISBN-10 keys as in the release (leading zeros, a final "X"); one cover is a PNG.
OCRVQA = {
    "0001055178": _ocrvqa_entry(1, "Mom's Family Wall Calendar 2016", "Sandra Boynton", "Calendars"),
    "000215386X": _ocrvqa_entry(1, "The Mountain Cook Book", "Anna Smith", "Cookbooks, Food & Wine"),
    "0007140681": _ocrvqa_entry(2, "Sky Maps", "Tom Lee", "Science & Math", ext=".png"),
    "0028604199": _ocrvqa_entry(3, "Salt Sugar Fat", "Michael Moss", "Health, Fitness & Dieting"),
    "0060959479": _ocrvqa_entry(3, "Glass Houses", "Ann Ray", "Literature & Fiction"),
}


def _write_ocrvqa(root: pathlib.Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(OCRVQA))
    for k, (image_id, entry) in enumerate(OCRVQA.items()):
        image = np.full((30, 20, 3), 30 * k, np.uint8)
        ext = entry["imageURL"].rsplit(".", 1)[1]
        encoded = tf.io.encode_png(image) if ext == "png" else tf.io.encode_jpeg(image)
        (root / "images" / f"{image_id}.{ext}").write_bytes(encoded.numpy())


def _pad_val(root: pathlib.Path, questions: int) -> None:
    """Adds filler val entries (one shared cover, hard-linked) until val holds `questions` more questions: big_vision
    trains OCR-VQA on train + val[20000:], a slice TFDS refuses on a val split shorter than 20000."""
    entries = json.loads((root / "dataset.json").read_text())
    cover = root / "images" / "filler.jpg"
    cover.write_bytes(_jpeg((8, 8, 3), 7))
    for i in range(-(-questions // 5)):
        key = f"F{i:09d}"
        entries[key] = {"imageURL": f"http://ecx.images-amazon.com/images/I/{key}.jpg", "questions": ["Who?"] * 5,
                        "answers": ["Nobody"] * 5, "title": "", "authorName": "Nobody", "genre": "", "split": 2}
        (root / "images" / f"{key}.jpg").hardlink_to(cover)
    (root / "dataset.json").write_text(json.dumps(entries))


def _build(name: str, data_dir: pathlib.Path, manual: pathlib.Path):
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    return builder


def _examples(builder, split: str) -> dict[str, dict]:
    return {e["question_id"].decode(): e for e in tfds.as_numpy(builder.as_dataset(split=split))}


@pytest.fixture(scope="module")
def manual(tmp_path_factory) -> pathlib.Path:
    """The default manual folder layout: downloads/manual/{gqa,ocrvqa}/ (both have an images/ folder)."""
    root = tmp_path_factory.mktemp("manual")
    _write_gqa(root / "gqa")
    _write_ocrvqa(root / "ocrvqa")
    return root


# ---------------------------------------------------------------------------------------- builders


def test_gqa_builder_reads_the_official_layout(manual, tmp_path):
    builder = _build("gqa", tmp_path / "data", manual)
    assert {k: s.num_examples for k, s in builder.info.splits.items()} == {
        "train_balanced": 6, "testdev_balanced": 3, "test_balanced": 1}
    train = _examples(builder, "train_balanced")
    assert sorted(train) == sorted(GQA_TRAIN)  # string ids, leading zeros kept
    for qid, (image_id, question, answer, full, structural, semantic, detailed) in GQA_TRAIN.items():
        ex = train[qid]
        assert ex["image_id"].decode() == image_id and ex["question"].decode() == question
        assert ex["answer"].decode() == answer and ex["full_answer"].decode() == full
        assert {k: v.decode() for k, v in ex["types"].items()} == {
            "structural": structural, "semantic": semantic, "detailed": detailed}
        assert bool(ex["is_balanced"])
        shape, value = GQA_IMAGES[image_id]
        assert ex["image"].shape == shape and abs(int(ex["image"].mean()) - value) <= 2
    (test,) = _examples(builder, "test_balanced").values()
    assert test["answer"].decode() == "" and test["image_id"].decode() == "n161313"
    # The registry's roles are these splits.
    info = data.DATASETS["gqa"]
    assert info.split("train") == "train_balanced" and info.split(info.vqa.eval_role) == "testdev_balanced"


def test_ocrvqa_builder_reads_dataset_json_and_covers(manual, tmp_path):
    builder = _build("ocrvqa", tmp_path / "data", manual)
    assert {k: s.num_examples for k, s in builder.info.splits.items()} == {"train": 10, "val": 5, "test": 10}
    test = _examples(builder, "test")
    assert sorted(test) == [f"{i}_{k}" for i in ("0028604199", "0060959479") for k in range(5)]
    salt = OCRVQA["0028604199"]
    for k in range(5):
        ex = test[f"0028604199_{k}"]
        assert ex["question"].decode() == salt["questions"][k] and ex["answer"].decode() == salt["answers"][k]
        assert ex["image_id"].decode() == "0028604199" and ex["genre"].decode() == salt["genre"]
        assert ex["title"].decode() == salt["title"] and ex["author_name"].decode() == salt["authorName"]
        assert ex["image"].shape == (30, 20, 3) and int(ex["image"].mean()) in range(88, 93)
    (png,) = {e["image_id"].decode(): e for e in _examples(builder, "val").values()}.items()
    assert png[0] == "0007140681" and (png[1]["image"] == 60).all()  # the PNG cover, losslessly stored
    assert {e["image_id"].decode() for e in _examples(builder, "train").values()} == {"0001055178", "000215386X"}
    # Roles: big_vision trains on train + val[20000:] and reports test.
    info = data.DATASETS["ocrvqa"]
    assert info.split("train") == "train+val[20000:]" and info.split(info.vqa.eval_role) == "test"


def _copy_tree(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name,damage,says", [
    ("gqa", lambda r: [p.unlink() for p in (r / "questions1.2").iterdir()], r"no GQA questions file in .*gqa"),
    ("gqa", lambda r: (r / "images" / "n388000.jpg").unlink(),
     r"GQA: 1 of 2 image files are missing: .*n388000\.jpg; unzip GQA's images\.zip"),
    ("gqa", lambda r: (r / "questions1.2" / "testdev_balanced_questions.json").write_text('{"1": {"x"'),
     r"testdev_balanced_questions\.json is not valid JSON"),
    ("ocrvqa", lambda r: (r / "dataset.json").unlink(), r"no OCR-VQA dataset\.json in .*ocrvqa"),
    ("ocrvqa", lambda r: (r / "images" / "0007140681.png").unlink(),
     r"OCR-VQA: 1 of 5 image files are missing: .*0007140681\.png; download the covers"),
    ("ocrvqa", lambda r: (r / "dataset.json").write_text(json.dumps({"1": {**OCRVQA["0001055178"], "split": 4}})),
     r"entry '1' of .*dataset\.json has split 4, not one of 1, 2, 3"),
])
def test_missing_or_broken_files_are_one_line(manual, tmp_path, name, damage, says):
    root = _copy_tree(manual / name, tmp_path / "manual" / name)
    damage(root)
    with pytest.raises(HarnessError, match=says) as e:
        _build(name, tmp_path / "data", tmp_path / "manual")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "data" / name / "1.0.0").exists()  # nothing half-built is left


def test_missing_manual_dir_names_it(tmp_path):
    with pytest.raises(HarnessError, match=r"GQA: Manual directory .*nowhere does not exist or is empty; .*`gqa` "
                                           r"MANUAL_DOWNLOAD_INSTRUCTIONS"):
        _build("gqa", tmp_path / "data", tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------- scoring


def test_scoring_rules_against_hand_computation():
    # GQA (eval.py: predicted == gold): only identical strings score.
    preds = {"1": "yes", "2": "Yes", "3": "the table", "4": "table ", "5": "red"}
    gold = {"1": "yes", "2": "yes", "3": "table", "4": "table", "5": "red"}
    assert metrics.exact_match_per_example(preds, gold, match="exact") == {
        "1": 1.0, "2": 0.0, "3": 0.0, "4": 0.0, "5": 1.0}
    assert metrics.exact_match_accuracy(preds, gold, match="exact") == pytest.approx(40.0)
    # OCR-VQA (big_vision's to_lower=True): case does not matter, anything else does.
    preds = {"a": "Sandra Boynton", "b": "mom's family wall calendar 2016", "c": "Calendars.", "d": "NO"}
    gold = {"a": "sandra boynton", "b": "Mom's Family Wall Calendar 2016", "c": "Calendars", "d": "No"}
    assert metrics.exact_match_per_example(preds, gold, match="lower") == {"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}
    # The VQA-normalised rule (no dataset uses it by default now) forgives the article and the period.
    assert metrics.exact_match_per_example({"x": "The table."}, {"x": "table"}, match="vqa") == {"x": 1.0}
    with pytest.raises(metrics.MetricInputError, match="match='fuzzy' is not one of exact, lower, vqa"):
        metrics.exact_match_per_example(preds, gold, match="fuzzy")


# ---------------------------------------------------------------------------------------- end to end


@pytest.mark.heavy
def test_prepare_run_and_report_end_to_end(manual, tmp_path):
    """What a user does: `harness ls datasets`, `harness prepare`, `harness run --task vqa`, `harness report
    --with paper`; the accuracies are recomputed here from the predictions files and the source JSON."""
    from harness.models.encoder import load_encoder
    from tests.tiny import TINY_ENC

    manual = _copy_tree(manual, tmp_path / "manual")
    _pad_val(manual / "ocrvqa", 20000)  # val: 5 + 20000 questions, so val[20000:] holds 5
    runner = CliRunner()
    data_dir, runs = tmp_path / "tfds", tmp_path / "runs"
    listing = runner.invoke(main, ["ls", "datasets", "--data-dir", str(data_dir)])
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    for name in ("gqa", "ocrvqa"):
        i = next(i for i, x in enumerate(lines) if x.startswith(name + " "))
        # The missing dataset's line, then the line with its preparation command.
        assert "missing" in lines[i] and f"harness prepare {name} --data-dir {data_dir}" in lines[i + 1]

    ckpt = load_encoder("random:0", **{**TINY_ENC, "depth": 1}).save(str(tmp_path / "tiny.npz"))
    sets = {**TINY_DEC, "datasets": "gqa,ocrvqa", "prefix_len": "16", "target_len": "12"}
    args = ["run", "--task", "vqa", "--ckpt", ckpt, "--data-dir", str(data_dir), "--out", str(runs),
            "--cache-dir", str(tmp_path / "cache"), *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]
    # Not prepared yet: both are skipped and the run stops with the first one's preparation command.
    r = runner.invoke(main, args)
    assert r.exit_code == 2 and re.search(r"dataset 'gqa' is not prepared under .*harness prepare gqa", r.output)

    for name in ("gqa", "ocrvqa"):
        r = runner.invoke(main, ["prepare", name, "--data-dir", str(data_dir), "--manual-dir", str(manual)])
        assert r.exit_code == 0, r.output
    listing = runner.invoke(main, ["ls", "datasets", "--data-dir", str(data_dir)]).output
    assert re.search(r"^gqa +prepared", listing, re.M) and re.search(r"^ocrvqa +prepared", listing, re.M)

    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    (path,) = runs.glob("vqa__*.json")
    rec = json.loads(path.read_text())
    m = rec["metrics"]
    assert rec["info"]["skipped_datasets"] == []
    roles = {(d["name"], d["role"]): d for d in rec["datasets"]}
    assert roles[("gqa", "eval")]["split"] == "testdev_balanced" and roles[("gqa", "eval")]["num_examples"] == 3
    assert roles[("gqa", "train")]["split"] == "train_balanced"
    assert roles[("ocrvqa", "eval")]["split"] == "test" and roles[("ocrvqa", "eval")]["num_examples"] == 10
    assert roles[("ocrvqa", "train")]["split"] == "train+val[20000:]"
    assert roles[("ocrvqa", "train")]["num_examples"] == 10 + 5
    assert "antialias=True" in roles[("ocrvqa", "eval")]["pp"] and "antialias" not in roles[("gqa", "eval")]["pp"]

    # GQA: its results format, scored as eval.py does (predicted == gold) on testdev_balanced.
    gqa_preds = json.loads(pathlib.Path(rec["artifacts"]["predictions/gqa"]).read_text())
    assert sorted(p["questionId"] for p in gqa_preds) == sorted(GQA_TESTDEV)
    hand = [float(p["prediction"] == GQA_TESTDEV[p["questionId"]][2]) for p in gqa_preds]
    assert m["vqa/gqa/accuracy"]["value"] == pytest.approx(100 * np.mean(hand), abs=1e-9)
    # OCR-VQA: lower-cased exact match on test.
    ocr_preds = json.loads(pathlib.Path(rec["artifacts"]["predictions/ocrvqa"]).read_text())
    answers = {f"{i}_{k}": a for i, e in OCRVQA.items() if e["split"] == 3 for k, a in enumerate(e["answers"])}
    assert sorted(p["question_id"] for p in ocr_preds) == sorted(answers)
    hand = [float(p["answer"].lower() == answers[p["question_id"]].lower()) for p in ocr_preds]
    assert m["vqa/ocrvqa/accuracy"]["value"] == pytest.approx(100 * np.mean(hand), abs=1e-9)
    for name in ("gqa", "ocrvqa"):
        assert m[f"vqa/{name}/log_perplexity"]["value"] > 0

    # The report puts the cells under the paper's Table 4 columns, beside the paper's rows.
    out = runner.invoke(main, ["report", str(runs), "--with", "paper", "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = [line.split(",") for line in out.output.splitlines()]
    header = rows[0]
    col = {name: header.index(f"vqa/{name}/accuracy") for name in ("ocrvqa", "gqa")}
    ours = next(row for row in rows if row[0] == "tiny.npz")
    for name in ("ocrvqa", "gqa"):
        assert float(ours[col[name]]) == pytest.approx(m[f"vqa/{name}/accuracy"]["value"], abs=0.01)
    soviet = next(row for row in rows if row[0] == "SoViT-400m/14 (paper)")
    assert (soviet[col["ocrvqa"]], soviet[col["gqa"]]) == ("52.9", "56.0")
