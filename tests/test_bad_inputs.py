"""The bad-input matrix (issue 15): every bad input a user can give `harness run / report / check` ends in
exactly one line of ours on stderr (`error: ...`, what is wrong and what to do) and exit code 2, or, for the
regression gate, a named failure and exit 1; never a traceback; and no file is left behind that is not a
complete result record or a resumable partial build (and, where the input can be judged without data,
nothing is extracted at all: the feature cache is unchanged).

Cases run in-process through click's CliRunner (the CLI's own error handling, fast), a few through a real
process where what a user sees on the terminal depends on it (TF's and absl's start-up lines). Everything
shares one tiny checkpoint, one prepared proxy dataset and one finished record (session fixture). Full and
read-only disks are small tmpfs mounts where this machine allows `mount` (root), else a fake that raises
the same errno.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import io
import json
import logging
import math
import os
import pickle
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.eval import cache as cache_mod
from harness.files import SIDE_FILES
from tests.formats import OPEN_CLIP_CONFIG, TIMM_CONFIG, write_open_clip, write_timm
from tests.test_report_inert import ATTACK, assert_inert_html, assert_inert_markdown, assert_latex_safe
from tests.tiny import TINIEST

TINY = dict(TINIEST, res=16, pool_type="map")
# Tiny few-shot settings: 200 pool images (about 20 per class) and 100 test images of proxy_digits.
FEWSHOT = ["--task", "fewshot", "--set", "datasets=proxy_digits", "--set", "shots=1", "--set", "seeds=0",
           "--set", "max_train_examples=200", "--set", "max_test_examples=100", "--set", "batch_size=50"]
RUN = ["run", *FEWSHOT, "--ckpt", "{tiny}", "--data-dir", "{data}", "--out", "{out}"]


# --------------------------------------------------------------------------------------------- fixtures
def _bad_checkpoints(ck: Path, tiny: str) -> None:
    good = dict(np.load(tiny))

    def variant(name, **leaves):
        np.savez(ck / name, **{k: v for k, v in {**good, **leaves}.items() if v is not None})

    (ck / "folder").mkdir()
    (ck / "empty.npz").write_bytes(b"")
    raw = Path(tiny).read_bytes()
    (ck / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (ck / "text.npz").write_text("not a checkpoint\n")
    np.save(ck / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    variant("objects.npz", **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
    variant("missing_key.npz", **{"embedding/kernel": None})
    variant("missing_leaf.npz", **{"Transformer/encoder_norm/scale": None})
    variant("wrong_shape.npz", **{"Transformer/encoder_norm/scale": np.ones(7, np.float32)})
    variant("nonsquare.npz", pos_embedding=np.zeros((1, 6, 16), np.float32))
    k = "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"
    nan = good[k].copy()
    nan[0, 0] = np.nan
    variant("nan.npz", **{k: nan})
    inf = good["embedding/bias"].copy()
    inf[1] = np.inf
    variant("inf.npz", **{"embedding/bias": inf})
    hf = ck / "hf_pickle"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    (hf / "pytorch_model.bin").write_bytes(pickle.dumps({"x": 1}))
    (ck / "harness_bad").mkdir()
    (ck / "harness_bad" / "harness.json").write_text("{not json")
    np.savez(ck / "two_tower.npz", **{f"img/{k}": v for k, v in good.items()}, **{"txt/x": np.zeros(3)})
    # Crafted archives: a header declaring far more than the member holds (4 TiB), an unused member that
    # inflates to 1 GiB, a zip nested where an array should be, a 60 kB .npy header.
    members = {f"{k}.npy": _npy(v.shape, v.dtype) + v.tobytes() for k, v in good.items()}
    _zip(ck / "declares_4tib.npz", {**members, "embedding/kernel.npy": _npy((1 << 20, 1 << 20), np.float32)
                                    + b"\0" * 64})
    _zip(ck / "nested_zip.npz", {**members, "inner.npy": (ck / "two_tower.npz").read_bytes()})
    long_header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }" + b" " * 60_000 + b"\n"
    _zip(ck / "long_header.npz", {**members, "embedding/bias.npy": b"\x93NUMPY\x02\x00"
                                  + len(long_header).to_bytes(4, "little") + long_header + b"\0" * 12})
    _zip(ck / "bomb.npz", members, inflating=("unused/zeros.npy", BOMB_BYTES))
    variant("embedding_1d.npz", **{"embedding/kernel": np.ones(16, np.float32)})
    _typed_fields(ck, tiny)


BOMB_BYTES = 1 << 30
HF_TWO_TOWER = Path(__file__).parent / "data" / "hf_siglip" / "two_tower"


def _edited(doc: dict, path: str, value) -> dict:
    """`doc` with the field at the dotted `path` set to `value`."""
    doc = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    at = doc
    for k in parents:
        at = at[k]
    at[last] = value
    return doc


def _typed_fields(ck: Path, tiny: str) -> None:
    """Issue 23 section 5: each format's config with one field of the wrong type or range, and tensorstore
    folders with a damaged pointer or array metadata."""
    import tensorstore as ts

    from harness.models.encoder import load_encoder

    hf = json.loads((HF_TWO_TOWER / "config.json").read_text())
    for name, path, value in (("hf_heads0", "vision_config.num_attention_heads", 0),
                              ("hf_heads_negative", "vision_config.num_attention_heads", -4),
                              ("hf_heads5", "vision_config.num_attention_heads", 5),
                              ("hf_patch_text", "vision_config.patch_size", "4"),
                              ("hf_vision_config_text", "vision_config", "vit"),
                              ("hf_eps", "vision_config.layer_norm_eps", 1e-5)):
        shutil.copytree(HF_TWO_TOWER, ck / name)
        (ck / name / "config.json").write_text(json.dumps(_edited(hf, path, value)))
    for name, path, value in (("timm_heads_text", "model_args.num_heads", "many"),
                              ("timm_model_args_list", "model_args", [1, 2]),
                              ("timm_mean_text", "pretrained_cfg.mean", ["a", "b", "c"]),
                              ("timm_architecture_number", "architecture", 3)):
        write_timm(ck / name, _edited(TIMM_CONFIG, path, value))
    for name, path, value in (("oc_vision_cfg_text", "model_cfg.vision_cfg", "x"),
                              ("oc_pool_number", "model_cfg.vision_cfg.timm_pool", 3),
                              ("oc_std_zero", "preprocess_cfg.std", [0.5, 0, 0.5])):
        write_open_clip(ck / name, _edited(OPEN_CLIP_CONFIG, path, value))
    enc = load_encoder(tiny)
    enc.save(str(ck / "harness_ok"), fmt="harness")
    meta = json.loads((ck / "harness_ok" / "harness.json").read_text())
    for name, path, value in (("harness_width_text", "config.width", "wide"),
                              ("harness_format", "format", "other/2"),
                              ("harness_config_list", "config", [])):
        shutil.copytree(ck / "harness_ok", ck / name)
        (ck / name / "harness.json").write_text(json.dumps(_edited(meta, path, value)))
    shutil.copytree(ck / "harness_ok", ck / "harness_unknown_key")
    meta["config"]["widht"] = meta["config"].pop("width")
    (ck / "harness_unknown_key" / "harness.json").write_text(json.dumps(meta))
    # tensorstore: big_vision's step folders of the tiny encoder, each broken one way
    good = ck / "ts" / "tiny.bv-000000001"
    for k, v in enc.params_numpy().items():
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(good / f"params~{k.replace('/', '~')}")}}
        ts.open(spec, create=True, dtype=v.dtype.name, shape=v.shape).result().write(v).result()
    (ck / "ts" / "tiny.bv-LAST").write_text("000000005")  # a step that was deleted
    kernel_1d = ck / "ts" / "kernel_1d.bv-000000001"
    shutil.copytree(good, kernel_1d)
    shutil.rmtree(kernel_1d / "params~embedding~kernel")
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(kernel_1d / "params~embedding~kernel")}},
            create=True, dtype="float32", shape=(16,)).result().write(np.ones(16, np.float32)).result()
    for name, leaf, edit in (("missing_chunks", "embedding~bias", dict(shape=[1 << 36], chunks=[16])),
                             ("chunk_bomb", "embedding~bias", dict(chunks=[1 << 36])),
                             ("zarray_text", "embedding~bias", None)):
        folder = ck / "ts" / f"{name}.bv-000000001"
        shutil.copytree(good, folder)
        zarray = folder / f"params~{leaf}" / ".zarray"
        zarray.write_text("not json" if edit is None else json.dumps({**json.loads(zarray.read_text()), **edit}))


def _npy(shape, dtype) -> bytes:
    """A .npy header (format 1.0) declaring `shape` and `dtype`."""
    import io

    from numpy.lib import format as npy_format

    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                            "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes], inflating: tuple[str, int] | None = None) -> None:
    """An .npz written member by member (deflated); `inflating`: (name, n) adds a float32 member of n bytes of
    zeros, streamed, so the archive stays small while the member would inflate to n bytes."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if inflating:
            name, n = inflating
            with z.open(name, "w", force_zip64=True) as f:
                f.write(_npy((n // 4,), np.float32))
                block = b"\0" * (1 << 20)
                for _ in range(n // len(block)):
                    f.write(block)


def _suites(folder: Path, tiny: str) -> None:
    head = f'ckpt = "{tiny}"\n'
    entry = '[[task]]\nname = "fewshot"\nset = {{ datasets = "proxy_digits", shots = "{shots}", seeds = "0" }}\n'
    (folder / "bad.toml").write_text(head + '[[task]\nname = "fewshot"\n')
    (folder / "unknown_task.toml").write_text(head + '[[task]]\nname = "fewshoot"\n')
    (folder / "bad_setting.toml").write_text(head + entry.format(shots="-1"))
    (folder / "bad_key.toml").write_text(head + '[[task]]\nname = "fewshot"\nsett = 3\n')
    (folder / "deep.toml").write_text(head + "x = " + "{ a = " * 600 + "1" + " }" * 600 + "\n")
    (folder / "set_table.toml").write_text(head + '[[task]]\nname = "fewshot"\nset = { shots = { a = 1 } }\n')
    (folder / "ok.toml").write_text(head + entry.format(shots="1") + '[[task]]\nname = "linear_probe"\n'
                                    'preset = "proxy"\n')


def _gate_inputs(root: Path, record: Path) -> None:
    """Run folders and baselines made from the finished record, each broken one way."""
    rec = json.loads(record.read_text())
    metric = "fewshot/proxy_digits/1shot"

    def runs(name, edit=None, text=None):
        folder = root / name
        folder.mkdir()
        if text is not None:
            (folder / record.name).write_text(text)
        elif edit is not None:
            r = json.loads(json.dumps(rec))
            edit(r)
            (folder / record.name).write_text(json.dumps(r))

    runs("runs_empty")
    runs("runs_corrupt", text=record.read_text()[:300])
    runs("runs_future", edit=lambda r: r.update(schema_version=99))
    runs("runs_nan", edit=lambda r: r["metrics"][metric].update(value=math.nan))
    runs("runs_inf", edit=lambda r: r["metrics"][metric].update(value=-math.inf))
    runs("runs_text_value", edit=lambda r: r["metrics"][metric].update(value="high"))
    runs("runs_no_metrics", edit=lambda r: r.update(metrics={}))
    runs("runs_checkpoint_text", edit=lambda r: r.update(checkpoint="tiny.npz"))
    runs("runs_task_list", edit=lambda r: r.update(task=[]))
    runs("runs_ci95_text", edit=lambda r: r["metrics"][metric].update(ci95=["low", "high"]))
    runs("runs_decimals_text", edit=lambda r: r["metrics"][metric].update(decimals="2"))
    runs("runs_per_example_text", edit=lambda r: r.update(per_example={metric: "1,0,1"}))
    runs("runs_deep", text="[" * 100_000 + "]" * 100_000)
    runs("runs_huge")
    with open(root / "runs_huge" / record.name, "wb") as f:  # sparse: the size of a record too large to read
        f.truncate((64 << 20) + 1)
    runs("runs_hostile", edit=_hostile)
    r = CliRunner().invoke(main, ["check", str(record.parent), "--write-baseline", str(root / "base.json")])
    assert r.exit_code == 0, r.output
    base = json.loads((root / "base.json").read_text())
    assert metric in base["metrics"]

    def baseline(name, edit=None, text=None):
        b = json.loads(json.dumps(base))
        if edit:
            edit(b)
        (root / name).write_text(text if text is not None else json.dumps(b))

    baseline("base_nan.json", lambda b: b["metrics"][metric].update(value=math.nan))
    baseline("base_inf.json", lambda b: b["metrics"][metric].update(value=math.inf))
    baseline("base_tolerance_nan.json", lambda b: b["metrics"][metric].update(tolerance=math.nan))
    baseline("base_ci_nan.json", lambda b: b["metrics"][metric].update(ci95=[math.nan, 1.0]))
    baseline("base_no_metrics.json", lambda b: b.update(metrics={}))
    baseline("base_other_schema.json", lambda b: b.update(schema="someone-else/3"))
    baseline("base_corrupt.json", text=json.dumps(base)[:100])
    baseline("base_checkpoint_text.json", lambda b: b.update(checkpoint="tiny.npz"))
    baseline("base_tasks_list.json", lambda b: b.update(tasks=["fewshot"]))
    baseline("base_protocol_number.json", lambda b: b["tasks"]["fewshot"].update(protocol={"--set shots": 1}))


def _hostile(rec: dict) -> None:
    """The finished record with hostile text (`tests.test_report_inert.ATTACK`) in its checkpoint's name, a
    metric's dataset, unit and note, a setting and a dataset's pp: reports must stay inert."""
    rec["checkpoint"]["name"] = f"={ATTACK}"
    entry = rec["metrics"].pop("fewshot/proxy_digits/1shot")
    rec["metrics"][f"fewshot/{ATTACK.replace('/', '|')}/1shot"] = {**entry, "unit": f"-{ATTACK}", "note": ATTACK}
    rec["task"]["config"][ATTACK] = ATTACK
    for d in rec["datasets"]:
        d["pp"] = ATTACK


def _try_mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.environ.get("HARNESS_TEST_FAKE_DISKS"):  # to exercise the fallback on a machine that can mount
        return False
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                           timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0


def _fill(folder: Path, leave_bytes: int = 0) -> None:
    """Fills the file system of `folder` up to `leave_bytes` of free space."""
    free = shutil.disk_usage(folder).free - leave_bytes
    with open(folder / "filler", "wb") as f:
        while free > 0:
            try:
                f.write(b"\0" * min(free, 1 << 16))
            except OSError:
                break
            free -= 1 << 16


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    from harness import data
    from harness.models.encoder import load_encoder

    root = tmp_path_factory.mktemp("bad_inputs")
    ck = root / "ck"
    ck.mkdir()
    tiny = load_encoder("random:0", **TINY).save(str(ck / "tiny.npz"))
    _bad_checkpoints(ck, tiny)
    data.prepare("proxy_digits", root / "tfds")
    cache = root / "cache"
    (root / "suites").mkdir()
    _suites(root / "suites", tiny)
    (root / "a_file").write_text("in the way\n")
    subs = {"tiny": tiny, "ck": str(ck), "data": str(root / "tfds"), "cache": str(cache), "root": str(root),
            "suites": str(root / "suites"), "file": str(root / "a_file"), "records": str(root / "records")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE_DIR", str(cache))
        r = CliRunner().invoke(main, [a.format(**subs, out=subs["records"]) for a in RUN])
    assert r.exit_code == 0, r.output
    record = next((root / "records").glob("*.json"))
    _gate_inputs(root, record)
    # Small disks: `full` has no room at all, `ro` is read-only; tmpfs where mount works (root), else None.
    disks = {}
    for name, options in (("full", "size=256k"), ("ro", "size=64k,ro"), ("tight", "size=512k")):
        if _try_mount(root / name, options):
            disks[name] = root / name
    if "full" in disks:
        _fill(disks["full"])
    yield {"subs": subs, "cache": cache, "root": root, "disks": disks, "record": record}
    for path in disks.values():
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ------------------------------------------------------------------------------------------------ cases
@dataclasses.dataclass
class Case:
    id: str
    args: list[str]
    code: int = 2
    says: str = ""  # a regex the error line (exit 2) or the gate's verdict line (exit 1) must match
    disk: str = ""  # needs this small disk (full, ro, tight): a tmpfs, or a fake ENOSPC / EROFS
    others: bool = False  # lines of others may precede ours (a dataset's first-use build log)
    extracts: bool = False  # fails only once the data is seen: may leave cache entries, shows progress
    process: bool = False  # run as a real process (what the terminal shows depends on it)
    setup: str = ""  # a SETUPS function preparing the case's own files under {tmp} (a damaged cache copy, links)
    environ: dict = dataclasses.field(default_factory=dict)  # variables set for the case ({tmp} filled in)
    cwd: str = ""  # run in this folder ({tmp} filled in)
    after: str = ""  # an AFTER check of what is left: devices and links intact, nothing outside touched


def run(*extra, ckpt="{tiny}"):
    args = list(RUN)
    args[args.index("{tiny}")] = ckpt
    return [*args, *extra]


def ck(name, *extra):
    return run(*extra, ckpt=f"{{ck}}/{name}")


def task(name, *sets, preset=None):
    args = ["run", "--task", name, "--ckpt", "{tiny}", "--data-dir", "{data}", "--out", "{out}"]
    args += ["--preset", preset] if preset else []
    return args + [a for s in sets for a in ("--set", s)]


def suite(name, *extra):
    return ["run", "--suite", f"{{suites}}/{name}", "--data-dir", "{data}", "--out", "{out}", *extra]


def gate(runs, baseline, *extra):
    return ["check", f"{{root}}/{runs}", "--baseline", f"{{root}}/{baseline}", *extra]


CASES = [
    # checkpoints
    Case("ckpt-missing", ck("missing.npz"), says="no such file or folder; check the --ckpt path"),
    Case("ckpt-folder", ck("folder"), says="folder is not a known checkpoint format"),
    Case("ckpt-empty", ck("empty.npz"), says="not a readable .npz"),
    Case("ckpt-truncated", ck("truncated.npz"), says="truncated or corrupt"),
    Case("ckpt-text", ck("text.npz"), says="not a readable .npz"),
    Case("ckpt-pickled-npy", ck("pickled.npy"), says="not a readable .npz"),
    Case("ckpt-object-array", ck("objects.npz"), says="refusing to unpickle"),
    Case("ckpt-missing-key", ck("missing_key.npz"), says="cannot tell patch_size from the checkpoint"),
    Case("ckpt-missing-leaf", ck("missing_leaf.npz"), says="Transformer/encoder_norm/scale"),
    Case("ckpt-wrong-shape", ck("wrong_shape.npz"), says=r"wrong shape at Transformer/encoder_norm/scale"),
    Case("ckpt-non-square-posemb", ck("nonsquare.npz"), says=r"6 tokens is not a square grid"),
    Case("ckpt-nan-leaf", ck("nan.npz"), says=r"MlpBlock_0/Dense_0/kernel holds 1 non-finite value"),
    Case("ckpt-inf-leaf", ck("inf.npz"), says=r"embedding/bias holds 1 non-finite value"),
    Case("ckpt-declares-4tib", ck("declares_4tib.npz"), says=r"member 'embedding/kernel' declares shape "
                                                                r"\(1048576, 1048576\).*but holds 64"),
    Case("ckpt-nested-zip", ck("nested_zip.npz"), says="member 'inner' is not a .npy array"),
    Case("ckpt-npy-header-too-long", ck("long_header.npz"),
         says="member 'embedding/bias' is a .npy header longer than numpy reads safely"),
    Case("ckpt-unused-member-bomb", ck("bomb.npz"), says=r"does not match the model: unexpected keys "
                                                          r"\['unused/zeros'\]"),
    Case("ckpt-hf-pickle-only", ck("hf_pickle"), says="without .safetensors weights"),
    Case("ckpt-harness-json-corrupt", ck("harness_bad"), says=r"harness_bad/harness.json: not a readable harness "
                                                              r"checkpoint file \(not JSON"),
    Case("ckpt-embedding-1d", ck("embedding_1d.npz"), says=r"embedding/kernel has shape \(16,\), not \(patch, patch, "
                                                           r"3, width\)"),
    # every field of every format is typed input (issue 23 section 5): one line naming the file and the field
    Case("ckpt-hf-heads-zero", ck("hf_heads0"), says=r"hf_heads0/config.json: field vision_config."
                                                     r"num_attention_heads is 0; expected a positive integer"),
    Case("ckpt-hf-heads-negative", ck("hf_heads_negative"), says=r"field vision_config.num_attention_heads is -4; "
                                                                 r"expected a positive integer"),
    Case("ckpt-hf-heads-not-dividing", ck("hf_heads5"), says=r"field vision_config.num_attention_heads is 5; "
                                                             r"expected a number of heads that divides hidden_size 32"),
    Case("ckpt-hf-patch-string", ck("hf_patch_text"), says=r"field vision_config.patch_size is '4'; expected a "
                                                           r"positive integer"),
    Case("ckpt-hf-vision-config-string", ck("hf_vision_config_text"), says=r"config.json: field vision_config is "
                                                                           r"'vit'; expected an object"),
    Case("ckpt-hf-layer-norm-eps", ck("hf_eps"), says=r"field vision_config.layer_norm_eps is 1e-05; the harness's "
                                                      r"towers normalise with eps 1e-06"),
    Case("ckpt-timm-heads-string", ck("timm_heads_text"), says=r"timm_heads_text/config.json: field model_args."
                                                               r"num_heads is 'many'; expected a positive integer"),
    Case("ckpt-timm-model-args-list", ck("timm_model_args_list"), says=r"field model_args is a list of 2; expected "
                                                                       r"an object"),
    Case("ckpt-timm-mean-strings", ck("timm_mean_text"), says=r"field pretrained_cfg.mean\[0\] is 'a'; expected a "
                                                              r"finite number"),
    Case("ckpt-timm-architecture-number", ck("timm_architecture_number"), says=r"field architecture is 3; expected "
                                                                               r"a non-empty string"),
    Case("ckpt-open-clip-vision-cfg-string", ck("oc_vision_cfg_text"), says=r"oc_vision_cfg_text/open_clip_config."
                                                                             r"json: field model_cfg.vision_cfg is "
                                                                             r"'x'; expected an object"),
    Case("ckpt-open-clip-pool-number", ck("oc_pool_number"), says=r"field model_cfg.vision_cfg.timm_pool is 3; "
                                                                   r"expected a string"),
    Case("ckpt-open-clip-std-zero", ck("oc_std_zero"), says=r"field preprocess_cfg.std\[1\] is 0; expected a "
                                                             r"positive number"),
    Case("ckpt-harness-json-width-string", ck("harness_width_text"), says=r"harness_width_text/harness.json: field "
                                                                           r"config.width is 'wide'; expected a "
                                                                           r"positive integer"),
    Case("ckpt-harness-json-format", ck("harness_format"), says=r"field format is 'other/2'; expected one of "
                                                                 r"'sovit-harness/1'"),
    Case("ckpt-harness-json-config-list", ck("harness_config_list"), says=r"field config is an empty list; "
                                                                           r"expected an object"),
    Case("ckpt-harness-json-unknown-key", ck("harness_unknown_key"), says=r"unknown encoder key 'widht' \(did you "
                                                                           r"mean 'width'\?\)"),
    Case("ckpt-ts-last-missing-step", ck("ts/tiny.bv"), says=r"tiny.bv-LAST: names step folder "
                                                             r"tiny.bv-000000005, which does not exist"),
    Case("ckpt-ts-kernel-1d", ck("ts/kernel_1d.bv-000000001"), says=r"embedding/kernel has shape \(16,\), not"),
    Case("ckpt-ts-missing-chunks", ck("ts/missing_chunks.bv-000000001"), says=r"array params~embedding~bias of shape "
                                                                             r"\(68719476736,\) is missing chunks"),
    Case("ckpt-ts-chunk-bomb", ck("ts/chunk_bomb.bv-000000001"), says=r"declares chunks of shape \(68719476736,\) "
                                                                     r"\(274877906944 bytes\), larger than the array"),
    Case("ckpt-ts-zarray-not-json", ck("ts/zarray_text.bv-000000001"), says=r"cannot read array "
                                                                           r"params~embedding~bias"),
    Case("ckpt-bad-subtree", ck("tiny.npz:nope"), says="has no sub-tree 'nope'"),
    Case("ckpt-bad-subtree-two-tower", ck("two_tower.npz:txt2"), says=r"no sub-tree 'txt2'.*\['img', 'txt'\]"),
    Case("ckpt-random-bad-seed", run(ckpt="random:abc"), says="random:SEED with an integer seed"),
    Case("ckpt-variant-contradicts", run("--variant", "B/16"), says="width=768 was asked for but the checkpoint "
                                                                    "has width=16"),
    Case("ckpt-key-contradicts", run("--set", "width=64"), says="width=64 was asked for"),
    Case("ckpt-heads-contradict", run("--set", "num_heads=3"), says="num_heads=3 was asked for"),
    Case("ckpt-pool-contradicts", run("--set", "pool_type=gap"), says="does not match the model"),
    Case("ckpt-res-not-a-patch-multiple", run("--res", "20"), says="not a multiple of the patch size 8"),
    # encoder flags and keys
    Case("res-zero", run("--res", "0"), says="--res 0: must be a positive resolution"),
    Case("res-negative", run("--res", "-64"), says="--res -64: must be a positive resolution"),
    Case("variant-unknown", run("--variant", "Q/16"), says="unknown variant 'Q/16'"),
    Case("variant-bad-patch", run("--variant", "B/x"), says="bad patch size in variant 'B/x'"),
    Case("enc-width-not-int", run("--set", "width=abc"), says="--set width=abc: expected a positive integer"),
    Case("enc-width-zero", run("--set", "width=0"), says="--set width=0: expected a positive integer"),
    Case("enc-scan-not-bool", run("--set", "scan=maybe"), says="--set scan=maybe: expected true or false"),
    Case("enc-dtype-choice", run("--set", "dtype_mm=float16"), says="expected one of float32, bfloat16"),
    Case("enc-pool-choice", run("--set", "pool_type=avg"), says="expected one of gap, map, tok, 0, none"),
    Case("enc-classes-negative", run("--set", "num_classes=-3"), says="--set num_classes=-3: expected a positive"),
    # task settings
    Case("set-unknown", run("--set", "shot=5"), says="did you mean 'shots'"),
    Case("set-no-equals", run("--set", "shots"), says="--set 'shots': expected key=value"),
    Case("set-wrong-type-int", run("--set", "shots=one"), says="--set shots=one: expected a comma-separated list "
                                                               "of integers"),
    Case("set-wrong-type-float", run("--set", "l2_reg=big"), says="--set l2_reg=big: expected a number"),
    Case("set-wrong-type-bool", task("lit_zeroshot", "save_checkpoint=maybe"), says="expected true or false"),
    Case("set-empty-seeds", run("--set", "seeds="), says="setting seeds= is empty; give at least one value"),
    Case("set-empty-datasets", run("--set", "datasets="), says="setting datasets= is empty"),
    Case("set-nan", run("--set", "l2_reg=nan"), says="setting l2_reg=nan is not a finite number"),
    Case("set-inf", run("--set", "l2_reg=inf"), says="setting l2_reg=inf is not a finite number"),
    Case("set-shots-zero", run("--set", "shots=0,5"), says=r"shots=0,5 is out of range \(got 0\).*>= 1"),
    Case("set-shots-duplicate", run("--set", "shots=1,1"), says="lists 1 more than once"),
    Case("set-seed-negative", run("--set", "seeds=-1"), says="seeds=-1 is out of range"),
    Case("set-batch-zero", run("--set", "batch_size=0"), says="batch_size=0 is out of range: must be >= 1"),
    Case("set-l2-zero", run("--set", "l2_reg=0"), says="l2_reg=0.0 is out of range: must be > 0"),
    Case("set-cap-negative", run("--set", "max_train_examples=-1"), says="max_train_examples=-1 is out of range"),
    Case("set-choice", run("--set", "solve_dtype=float16"), says="solve_dtype=float16 is not one of float64"),
    Case("set-representation", run("--set", "representation=encoded"), says="is not one of pre_logits, logits"),
    Case("set-bad-pp", run("--set", "pp=decode|nosuchop(3)"), says="setting pp: unknown pp op 'nosuchop'"),
    Case("set-unknown-dataset", run("--set", "datasets=nosuchdata"),
         says=r"dataset 'nosuchdata' is not in the harness's registry, so it has no 'fewshot_train' split; "
              r"`harness ls datasets` lists the known ones$"),
    Case("set-shots-exceed-pool", run("--set", "shots=100000"), says=r"100000 shot\(s\) cannot be drawn from "
                                                                     r"the few-shot pool.*200 examples in all"),
    Case("set-shots-exceed-largest-class", run("--set", "shots=1,60"), extracts=True,
         says=r"60 shot\(s\) cannot be drawn.*examples in its largest class"),
    Case("set-preset-unknown", run("--preset", "paper"), says="task 'fewshot' has no preset 'paper'"),
    Case("set-neither-task-nor-encoder", run("--set", "colour=red"), says="not a setting of task 'fewshot' nor "
                                                                         "an encoder key"),
    Case("lp-lr-zero", task("linear_probe", "lrs=0.1,0"), says="linear_probe: setting lrs=0.1,0"),
    Case("lp-momentum-one", task("linear_probe", "momentum=1"), says=r"momentum=1.0 is out of range.*< 1"),
    Case("ft-layer-decay", task("imagenet_finetune", "layer_decay=1.5"), says="layer_decay must be in"),
    Case("ft-warmup-negative", task("imagenet_finetune", "warmup_steps=-1"), says="warmup_steps=-1 is out of"),
    Case("cap-decode-choice", task("coco_captioning", "decode=sample", preset="proxy"),
         says="decode=sample is not one of greedy, beam"),
    Case("cap-width-heads", task("coco_captioning", "decoder_width=33", preset="proxy"),
         says="decoder_width=33 is not divisible by decoder_heads=4"),
    Case("cap-tokenizer-missing", task("coco_captioning", "tokenizer=/no/such.model", preset="proxy"),
         says="tokenizer=/no/such.model is not a file"),
    Case("vqa-dataset-unknown", task("vqa", "datasets=nosuch", preset="proxy"),
         says="no question/answer layout known for dataset 'nosuch'"),
    Case("lit-loss-choice", task("lit_zeroshot", "loss=hinge"), says="loss=hinge is not one of sigmoid, softmax"),
    Case("lit-nothing-to-evaluate", task("lit_zeroshot", "zeroshot_datasets=", "retrieval_datasets="),
         says="are both empty; nothing would be evaluated"),
    Case("lit-batch-one", task("lit_zeroshot", "batch_size=1"), says="batch_size=1 is out of range: must be >= 2"),
    Case("task-unknown", ["run", "--task", "fewshoot", "--ckpt", "{tiny}", "--out", "{out}"],
         says="unknown task 'fewshoot' \\(did you mean 'fewshot'\\?\\)"),
    Case("task-and-suite", ["run", "--task", "fewshot", "--suite", "proxy", "--out", "{out}"],
         says="give exactly one of --task NAME or --suite NAME"),
    # suites
    Case("suite-bad-toml", suite("bad.toml"), says=r"bad.toml: not valid TOML \(Expected ']]'"),
    Case("suite-unknown-task", suite("unknown_task.toml"), says="suite entry 1/1 fewshoot: unknown task"),
    Case("suite-bad-setting", suite("bad_setting.toml"), says="suite entry 1/1 fewshot: setting shots=-1 is out"),
    Case("suite-unknown-entry-key", suite("bad_key.toml"), says=r"field task\[0\] has unknown key 'sett' \(did "
                                                                 r"you mean 'set'\?\)"),
    Case("suite-600-deep", suite("deep.toml"), says=r"deep.toml: nested too deeply to be a suite file"),
    Case("suite-set-table", suite("set_table.toml"), says=r"field task\[0\].set.shots is a table; expected a "
                                                          r"string, number, true/false or a list of them"),
    Case("suite-set-no-entry-takes", suite("ok.toml", "--set", "colour=red"),
         says="--set colour: no task of the suite has that setting"),
    Case("suite-set-bad-value", suite("ok.toml", "--set", "shots=0"), says="suite entry 1/2 fewshot: setting "
                                                                          "shots=0 is out of range"),
    Case("suite-set-bad-encoder-value", suite("ok.toml", "--set", "width=x"),
         says="suite entry 1/2 fewshot: --set width=x: expected a positive integer"),
    Case("suite-missing-file", suite("missing.toml"), says="missing.toml: no such file"),
    Case("suite-unknown-name", ["run", "--suite", "nosuite", "--out", "{out}"], says="unknown suite 'nosuite'"),
    Case("suite-with-preset", ["run", "--suite", "proxy", "--preset", "proxy", "--out", "{out}"],
         says="--preset applies to --task"),
    # paths
    Case("out-is-a-file", run("--out", "{file}"), says="--out .*a_file: is a file, not a folder"),
    Case("out-under-a-file", run("--out", "{file}/runs"), says="--out .*a_file/runs: is under .*a_file, which is "
                                                              "a file"),
    Case("cache-is-a-file", run("--cache-dir", "{file}"), says="--cache-dir .*a_file: is a file, not a folder"),
    Case("cache-under-a-file", run("--cache-dir", "{file}/c"), says="--cache-dir .*a_file/c: is under"),
    Case("data-is-a-file", run("--data-dir", "{file}"), says="--data-dir .*a_file: is a file, not a folder"),
    Case("data-under-a-file", run("--data-dir", "{file}/tfds"), says="--data-dir .*a_file/tfds: is under"),
    Case("report-o-is-a-folder", ["report", "{records}", "-o", "{root}"], says="-o .*: is a folder; pass a file"),
    Case("report-o-under-a-file", ["report", "{records}", "-o", "{file}/r.md"], says="-o .*a_file/r.md: is under"),
    Case("baseline-under-a-file", ["check", "{records}", "--write-baseline", "{file}/b.json"],
         says="--write-baseline .*a_file/b.json: is under"),
    Case("out-read-only", run("--out", "{ro}/runs"), disk="ro", says="--out .*/runs is on a read-only file system"),
    Case("cache-read-only", run("--cache-dir", "{ro}/c"), disk="ro", says="--cache-dir .*/c is on a read-only"),
    Case("out-full-disk", run("--out", "{full}/runs"), disk="full",
         says="no space left on the device of --out .*/runs; free space there"),
    Case("cache-full-disk", run("--cache-dir", "{full}/c"), disk="full",
         says="no space left on the device of --cache-dir .*/c; free space"),
    Case("report-o-full-disk", ["report", "{records}", "-o", "{full}/r.md"], disk="full",
         says="no space left on the device of -o .*/r.md"),
    Case("cache-fills-during-extraction", ["run", "--task", "fewshot", "--set", "datasets=proxy_digits",
                                           "--set", "shots=1", "--set", "seeds=0", "--ckpt", "{tiny}",
                                           "--data-dir", "{data}", "--out", "{out}", "--cache-dir", "{tight}/c"],
         disk="tight", extracts=True, says="no space left on the device of the feature cache .*/c/features/"),
    Case("data-full-disk-while-preparing", run("--data-dir", "{full}/tfds"), disk="full", others=True,
         says="preparing proxy_digits: no space left on the device of --data-dir"),
    # reports
    Case("report-empty-folder", ["report", "{root}/runs_empty"], says="no result records under"),
    Case("report-corrupt-record", ["report", "{root}/runs_corrupt"], says="not a readable result record"),
    Case("report-future-schema", ["report", "{root}/runs_future"], says="schema version 99 is newer than this"),
    Case("report-text-value", ["report", "{root}/runs_text_value"], says="has the value 'high', not a number"),
    Case("report-nan-value", ["report", "{root}/runs_nan"], code=0),
    Case("report-no-metrics", ["report", "{root}/runs_no_metrics"], code=0),
    Case("report-missing-folder", ["report", "{root}/no_such_runs"], says="no such file or folder"),
    Case("report-checkpoint-string", ["report", "{root}/runs_checkpoint_text"],
         says=r"\.json: field checkpoint is 'tiny.npz'; expected an object; delete it or rerun the task"),
    Case("report-task-list", ["report", "{root}/runs_task_list"], says=r"field task is an empty list; expected an "
                                                                       r"object"),
    Case("report-ci95-strings", ["report", "{root}/runs_ci95_text"],
         says=r'field metrics\["fewshot/proxy_digits/1shot"\].ci95\[0\] is \'low\'; expected a finite number'),
    Case("report-decimals-string", ["report", "{root}/runs_decimals_text"],
         says=r'field metrics\["fewshot/proxy_digits/1shot"\].decimals is \'2\'; expected an integer >= 0 up to 12'),
    Case("report-per-example-string", ["report", "{root}/runs_per_example_text"],
         says=r'field per_example\["fewshot/proxy_digits/1shot"\] is \'1,0,1\'; expected a list of numbers'),
    Case("report-deep-json", ["report", "{root}/runs_deep"], says=r"nested too deeply to be a result record"),
    Case("report-huge-record", ["report", "{root}/runs_huge"], says=r"67108865 bytes is too large for a result "
                                                                     r"record \(at most 67108864\)"),
    Case("report-baseline-checkpoint-string", ["report", "{records}", "--baseline", "{root}/base_checkpoint_text.json"],
         says=r"base_checkpoint_text.json: field checkpoint is 'tiny.npz'; expected an object"),
    # hostile text in every name: reports stay inert (checked by test_reports_of_a_hostile_record_are_inert)
    Case("report-hostile-record-md", ["report", "{root}/runs_hostile"], code=0),
    Case("report-hostile-record-csv", ["report", "{root}/runs_hostile", "--format", "csv"], code=0),
    Case("report-hostile-record-latex", ["report", "{root}/runs_hostile", "--format", "latex"], code=0),
    Case("report-hostile-record-html", ["report", "{root}/runs_hostile", "--format", "html", "-o", "{out}/r.html"],
         code=0),
    Case("report-nan-baseline", ["report", "{records}", "--baseline", "{root}/base_nan.json"],
         says="has the value nan, not a finite number"),
    # the gate
    Case("gate-passes", gate("records", "base.json"), code=0),
    Case("gate-baseline-nan", gate("records", "base_nan.json"), says="has the value nan, not a finite number"),
    Case("gate-baseline-inf", gate("records", "base_inf.json"), says="has the value inf, not a finite number"),
    Case("gate-baseline-tolerance-nan", gate("records", "base_tolerance_nan.json"), says="bad tolerance nan"),
    Case("gate-baseline-ci-nan", gate("records", "base_ci_nan.json"), says="bad ci95"),
    Case("gate-baseline-no-metrics", gate("records", "base_no_metrics.json"), says="lists no metrics"),
    Case("gate-baseline-other-schema", gate("records", "base_other_schema.json"), says="not a baseline file"),
    Case("gate-baseline-corrupt", gate("records", "base_corrupt.json"), says="not a readable baseline"),
    Case("gate-baseline-checkpoint-string", gate("records", "base_checkpoint_text.json"),
         says=r"field checkpoint is 'tiny.npz'; expected an object"),
    Case("gate-baseline-tasks-list", gate("records", "base_tasks_list.json"), says=r"field tasks is a list of 1; "
                                                                                   r"expected an object"),
    Case("gate-baseline-protocol-number", gate("records", "base_protocol_number.json"),
         says=r'field tasks.fewshot.protocol\["--set shots"\] is 1; expected a string'),
    Case("gate-run-checkpoint-string", gate("runs_checkpoint_text", "base.json"), says=r"field checkpoint is "
                                                                                       r"'tiny.npz'; expected an object"),
    Case("gate-run-ci95-strings", gate("runs_ci95_text", "base.json"), says=r"ci95\[0\] is 'low'; expected a finite"),
    Case("gate-run-decimals-string", gate("runs_decimals_text", "base.json"), says=r"decimals is '2'; expected an "
                                                                                   r"integer"),
    Case("gate-baseline-missing", gate("records", "base_none.json"), says="no such baseline file or run folder"),
    Case("gate-baseline-empty-folder", gate("records", "runs_empty"), says="no result records to use as a base"),
    Case("gate-tolerance-nan", gate("records", "base.json", "--tolerance", "nan"), says="--tolerance nan: must "
                                                                                       "be a finite number"),
    Case("gate-run-nan", gate("runs_nan", "base.json"), code=1, says=r"1shot \(tiny.npz: the run's value is nan, "
                                                                     r"which cannot be compared\)"),
    Case("gate-run-inf", gate("runs_inf", "base.json"), code=1, says="the run's value is -inf"),
    Case("gate-run-metric-missing", gate("runs_no_metrics", "base.json"), code=1, says=r"1shot \(missing in "),
    Case("gate-run-hostile-record", gate("runs_hostile", "base.json"), code=1,
         says=r"1shot \(missing in =\"'><script>.*<!--\\n# heading\\r\\n- item"),
    Case("gate-run-text-value", gate("runs_text_value", "base.json"), says="has the value 'high', not a number"),
    Case("gate-run-corrupt", gate("runs_corrupt", "base.json"), says="not a readable result record"),
    Case("gate-run-future-schema", gate("runs_future", "base.json"), says="schema version 99 is newer"),
    Case("gate-run-empty", gate("runs_empty", "base.json"), says="no result records to check"),
    Case("gate-baseline-from-nan-run", ["check", "{root}/runs_nan", "--write-baseline", "{out}/b.json"],
         says="lists no metrics"),
    # nothing outside the user's paths: report outputs onto devices and links
    Case("report-o-dev-null", ["report", "{records}", "-o", "/dev/null"], code=0, says=r"^wrote /dev/null$",
         after="dev_null_intact"),
    Case("report-o-dev-stdout", ["report", "{records}", "-o", "/dev/stdout"], code=0, process=True,
         says=r"^wrote /dev/stdout$", after="report_on_stdout"),
    Case("report-o-symlink", ["report", "{records}", "-o", "{tmp}/link.md"], code=0, setup="report_link",
         says=r"^wrote .*/link.md$", after="link_intact"),
    Case("report-o-symlink-loop", ["report", "{records}", "-o", "{tmp}/loop.md"], setup="report_loop",
         says=r"^error: -o .*/loop.md: is a symlink loop; point it at a file or remove it$"),
    Case("report-o-block-device", ["report", "{records}", "-o", "{tmp}/blk"], setup="block_device",
         says=r"^error: -o .*/blk: is a block device, not a regular file; pass a file path$", after="blk_intact"),
    Case("baseline-o-dev-null", ["check", "{records}", "--write-baseline", "/dev/null"], code=0,
         says=r"^wrote /dev/null", after="dev_null_intact"),
    # nothing outside the user's paths: feature-cache metadata is untrusted (each rebuilt, one warning line)
    Case("cache-meta-names-a-path-outside", run("--cache-dir", "{tmp}/cache"), code=0, setup="meta_outside",
         says=r"feature cache entry .* is unusable \(array pre_logits: file '\.\./\.\./\.\./outside/secret.npy' "
              r"is not pre_logits.npy\); deleting it to recompute", after="outside_untouched"),
    Case("cache-meta-is-a-list", run("--cache-dir", "{tmp}/cache"), code=0, setup="meta_list",
         says=r"is unusable \(meta.json holds a list, not an object\)", after="outside_untouched"),
    Case("cache-meta-declares-4tib", run("--cache-dir", "{tmp}/cache"), code=0, setup="meta_huge",
         says=r"is unusable \(pre_logits.npy holds \(\d+, 16\) float32, expected \[\d+, 1099511627776\]",
         after="outside_untouched"),
    Case("cache-npy-symlinked-outside", run("--cache-dir", "{tmp}/cache"), code=0, setup="npy_link",
         says=r"is unusable \(pre_logits.npy is a symlink\)", after="outside_untouched"),
    Case("cache-entry-symlinked-outside", run("--cache-dir", "{tmp}/cache"), code=0, setup="entry_link",
         says=r"is unusable \(not a folder of the cache \(a symlink or a file\)\)", after="outside_untouched"),
    Case("cache-partial-chunk-names-a-path", run("--cache-dir", "{tmp}/cache"), code=0, setup="chunk_path",
         says=r"chunk 0 unreadable \(Unusable: array name '\.\./\.\./\.\./outside/x' is not one the cache "
              r"writes\); recomputing it", after="outside_untouched"),
    Case("cache-partial-plan-wrong-shape", run("--cache-dir", "{tmp}/cache"), code=0, setup="plan_list",
         says=r"discarding partial feature build .*: made with another chunking/dtype plan",
         after="outside_untouched"),
    # nothing outside the user's paths: empty settings and libraries' side files
    Case("env-cache-dir-empty", run(), code=0, process=True, setup="home", cwd="{tmp}/cwd",
         environ={"HARNESS_CACHE_DIR": "", "HOME": "{tmp}/home"}, after="cache_in_home_not_cwd"),
    Case("env-home-stays-empty", [a if a != "{data}" else "{tmp}/tfds" for a in run("--cache-dir", "{tmp}/cache")],
         code=0, process=True, setup="home", cwd="{tmp}/cwd", environ={"HOME": "{tmp}/home"}, after="home_empty"),
    # huge batches: refused up front, before anything is allocated (the memory bound: below)
    Case("batch-size-huge", run("--set", "batch_size=1000000000"),
         says=r"setting batch_size=1000000000 is out of range: must be >= 1 and <= 1048576"),
    Case("batch-size-huge-decoder", task("coco_captioning", "eval_batch_size=1000000000", preset="proxy"),
         says=r"coco_captioning: setting eval_batch_size=1000000000 is out of range"),
    Case("batch-size-huge-lit", task("lit_zeroshot", "image_batch_size=2000000"),
         says=r"image_batch_size=2000000 is out of range: must be >= 1 and <= 1048576"),
    Case("batch-train-larger-than-split", task("imagenet_finetune", "dataset=proxy_digits", "train_split=train[:16]",
                                               "minival_split=train[16:32]", "test_split=test[:16]",
                                               "real_dataset=", "v2_dataset=", "res=16", "train_steps=1",
                                               "warmup_steps=0", "batch_size=32", "ckpt_every=0"),
         extracts=True, says=r"batch_size 32 is larger than the 16 training examples of dataset 'proxy_digits'; "
                             r"lower batch_size to at most 16"),
    # what a terminal shows: TF's C++ start-up lines and TFDS's absl warnings must not frame our line
    Case("process-dataset-not-prepared", run("--set", "datasets=cifar100"), process=True,
         says=r"dataset 'cifar100' is not prepared under .*: run `harness prepare cifar100 --data-dir"),
    Case("process-bad-setting", run("--set", "shots=-1"), process=True, says="shots=-1 is out of range"),
    # the environment jax starts under
    Case("env-jax-platforms-cuda", run(), process=True, environ={"JAX_PLATFORMS": "cuda", "CUDA_VISIBLE_DEVICES": ""},
         says=r"JAX_PLATFORMS=cuda: jax cannot start that backend here .*unset JAX_PLATFORMS to run on the CPU"),
    Case("env-xla-flags-unknown", run(), process=True, environ={"XLA_FLAGS": "--xla_no_such_flag=1"},
         says=r"XLA_FLAGS='--xla_no_such_flag=1': XLA refuses it and would abort \(Unknown flag in XLA_FLAGS: "
              r"--xla_no_such_flag=1\); fix or remove that flag"),
    Case("env-xla-flags-bad-value", run(), process=True, environ={"XLA_FLAGS": "--xla_force_host_platform_device_count=two"},
         says=r"Couldn't interpret value two for flag xla_force_host_platform_device_count"),
]


# ------------------------------------------------------------------------- the cases' own files and checks
def _copy_cache(env, tmp: Path) -> list[Path]:
    """tmp/cache: a copy of the shared cache (its finished entries); tmp/outside: files no cache may read."""
    shutil.copytree(env["cache"], tmp / "cache", symlinks=True)
    (tmp / "outside").mkdir()
    np.save(tmp / "outside" / "secret.npy", np.full((200, 16), 7, np.float32))
    return [p for p in (tmp / "cache" / "features").iterdir() if not p.name.startswith(".")]


def _edit_metas(env, tmp, edit) -> None:
    for entry in _copy_cache(env, tmp):
        meta = json.loads((entry / "meta.json").read_text())
        (entry / "meta.json").write_text(json.dumps(edit(meta)))


def _outside_entries(env, tmp, how) -> None:
    for entry in _copy_cache(env, tmp):
        copy = tmp / "outside" / entry.name
        shutil.copytree(entry, copy)
        how(entry, copy)


def _replace_by_link(path: Path, target: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.symlink_to(target)


def _as_partials(env, tmp, chunk=None, plan=None) -> None:
    """Each entry turned back into the partial build of its key: the plan features.extract makes, and a
    chunk 0 (`chunk(arrays)` -> arrays, written with a valid checksum)."""
    for entry in _copy_cache(env, tmp):
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {n: np.load(entry / a["file"]) for n, a in meta["arrays"].items()}
        partial = entry.with_name(entry.name + ".partial")
        partial.mkdir()
        default = {"format_version": 1, "num_examples": meta["num_examples"], "chunk_size": 4096,
                   "dtypes": {"pre_logits": "float32"}}
        (partial / "plan.json").write_text(json.dumps(default if plan is None else plan))
        stored = {**arrays, **{f"{n}.dtype": np.array(str(a.dtype)) for n, a in arrays.items()}}
        stored = chunk(stored) if chunk else stored
        stored[cache_mod._CHUNK_DIGEST] = np.array(cache_mod._chunk_digest(stored))
        with open(partial / "chunk_000000.npz", "wb") as f:
            np.savez(f, **stored)
        shutil.rmtree(entry)


def _block_device(env, tmp):
    if os.geteuid() != 0:
        pytest.skip("making a block device node needs root")
    os.mknod(tmp / "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 251))


SETUPS = {
    "report_link": lambda env, tmp: ((tmp / "real").mkdir(), (tmp / "real" / "r.md").write_text("old\n"),
                                     (tmp / "link.md").symlink_to(tmp / "real" / "r.md")),
    "report_loop": lambda env, tmp: ((tmp / "loop.md").symlink_to(tmp / "loop2.md"),
                                     (tmp / "loop2.md").symlink_to(tmp / "loop.md")),
    "block_device": _block_device,
    "meta_outside": lambda env, tmp: _edit_metas(env, tmp, lambda m: {**m, "arrays": {
        n: {**a, "file": "../../../outside/secret.npy"} for n, a in m["arrays"].items()}}),
    "meta_list": lambda env, tmp: _edit_metas(env, tmp, lambda m: list(m)),
    "meta_huge": lambda env, tmp: _edit_metas(env, tmp, lambda m: {**m, "arrays": {
        **m["arrays"], "pre_logits": {**m["arrays"]["pre_logits"],
                                      "shape": [m["num_examples"], 1 << 40]}}}),
    "npy_link": lambda env, tmp: _outside_entries(env, tmp, lambda entry, copy: _replace_by_link(
        entry / "pre_logits.npy", copy / "pre_logits.npy")),
    "entry_link": lambda env, tmp: _outside_entries(env, tmp, lambda entry, copy: _replace_by_link(entry, copy)),
    "chunk_path": lambda env, tmp: _as_partials(env, tmp, chunk=lambda c: {
        **c, "../../../outside/x": c["label"], "../../../outside/x.dtype": c["label.dtype"]}),
    "plan_list": lambda env, tmp: _as_partials(env, tmp, plan=[1, 2]),
    "home": lambda env, tmp: ((tmp / "home").mkdir(), (tmp / "cwd").mkdir()),
}


def _snapshot(folder: Path) -> dict[str, tuple]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.lstat().st_mtime_ns,
                                         p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(folder.rglob("*"))}


def _after(case: Case, tmp: Path, stdout: str, before_outside: dict) -> None:
    if case.after == "dev_null_intact":
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    elif case.after == "report_on_stdout":  # the table came through the pipe, the "wrote" line did not
        assert stdout.startswith("### fewshot") and "wrote" not in stdout, stdout
    elif case.after == "link_intact":
        assert (tmp / "link.md").is_symlink() and (tmp / "real" / "r.md").read_text().startswith("### fewshot")
        assert sorted(os.listdir(tmp / "real")) == ["r.md"]
    elif case.after == "blk_intact":
        assert stat.S_ISBLK((tmp / "blk").lstat().st_mode)
    elif case.after == "outside_untouched":
        assert _snapshot(tmp / "outside") == before_outside
        assert not list((tmp / "cache" / "features").glob("*.partial"))
        assert len(list((tmp / "out").glob("*.json"))) == 1
    elif case.after == "cache_in_home_not_cwd":
        assert os.listdir(tmp / "cwd") == []
        assert list((tmp / "home" / ".cache" / "sovit-harness" / "features").glob("*/meta.json"))
        assert sorted(os.listdir(tmp / "home")) == [".cache"]
        assert sorted(os.listdir(tmp / "home" / ".cache")) == ["sovit-harness"]
    elif case.after == "home_empty":  # preparing the dataset imported matplotlib and keras: their files moved
        assert os.listdir(tmp / "home") == [] and os.listdir(tmp / "cwd") == []
        assert (tmp / "cache" / "keras" / "keras.json").exists()
        assert list((tmp / "cache" / "matplotlib").glob("fontlist-*.json"))
    else:
        assert not case.after, case.after


# ---------------------------------------------------------------------------------------------- checks
def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _assert_clean(out: Path, caches: list[Path]) -> None:
    """No temporary or half-deleted file; every JSON in the results folder is a complete, finite record;
    every cache entry verifies, every partial build is resumable (its plan and chunks read back)."""
    for root in [out, *caches]:
        for p in (root.rglob("*") if root.exists() else ()):
            assert not p.name.endswith(".tmp") and not p.name.startswith(".trash-"), p
    for p in (out.rglob("*.json") if out.exists() else ()):
        if {"artifacts", ".locks"} & set(p.relative_to(out).parts):
            continue
        rec = json.loads(p.read_text())
        assert rec["schema_version"] == 1 and rec["metrics"], p
        assert all(m["value"] is None or math.isfinite(m["value"]) for m in rec["metrics"].values()), p
    for cache in caches:
        features = cache / "features"
        for entry in (features.iterdir() if features.exists() else ()):
            if entry.name.startswith("."):
                continue
            if entry.name.endswith(".partial"):
                json.loads((entry / "plan.json").read_text())
                for chunk in entry.glob("chunk_*.npz"):
                    cache_mod._read_chunk(chunk)
            else:
                assert cache_mod.FeatureCache(features).get(entry.name) is not None, entry


def _assert_outcome(case: Case, code: int, stdout: str, stderr: str, logged: list[str] = ()) -> None:
    assert "Traceback" not in stdout + stderr, stdout + stderr
    assert code == case.code, (code, stdout, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("error:")]
    if case.code == 2:
        assert len(ours) == 1 and lines[-1] == ours[0], lines
        at = stderr.index("error:")
        assert at == 0 or stderr[at - 1] == "\n", "our line must not be glued onto a progress bar's"
        if not (case.others or case.extracts):  # an extraction shows its progress bar
            assert lines == ours, lines
        assert re.search(case.says, ours[0]), ours[0]
    elif case.code == 1:  # the gate: its table and verdict on stdout, the verdict naming what failed
        assert not lines, lines
        verdict = stdout.strip().splitlines()[-1]
        assert verdict.startswith("check FAILED") and re.search(case.says, verdict), verdict
    else:
        assert not ours, lines
        if case.says:  # the line (a warning, "wrote FILE") that says what happened
            said = lines + stdout.splitlines() + list(logged)
            assert [ln for ln in said if re.search(case.says, ln)], said


def _fake_disk(kind: str, monkeypatch, root: Path) -> Path:
    """Where this machine cannot mount a tmpfs: a folder whose writes fail with the errno a full or
    read-only disk gives."""
    folder = root / f"fake_{kind}"
    folder.mkdir(exist_ok=True)
    code = errno.ENOSPC if kind in ("full", "tight") else errno.EROFS
    real_mkstemp, real_temporary = tempfile.mkstemp, tempfile.TemporaryFile

    def failing(real):
        def call(*a, dir=None, **kw):
            if dir is not None and str(dir).startswith(str(folder)):
                raise OSError(code, os.strerror(code), str(dir))
            return real(*a, dir=dir, **kw)
        return call

    if kind == "tight":  # the up-front probe passes, the first chunk does not
        monkeypatch.setattr(tempfile, "mkstemp", failing(real_mkstemp))
    else:
        monkeypatch.setattr(tempfile, "TemporaryFile", failing(real_temporary))
        monkeypatch.setattr(tempfile, "mkstemp", failing(real_mkstemp))
    return folder


def _prepare_disk(case: Case, env, monkeypatch) -> Path | None:
    if not case.disk:
        return None
    disk = env["disks"].get(case.disk)
    if disk is None:
        if case.disk == "full" and "preparing" in case.says:
            pytest.skip("a fake full disk cannot stand in for TFDS's own writes; needs a tmpfs mount")
        return _fake_disk(case.disk, monkeypatch, env["root"])
    if case.disk == "tight":  # room for the up-front probe (64 KiB), not for the first feature chunk
        for p in disk.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        _fill(disk, leave_bytes=72 << 10)
    return disk


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, env, tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    disk = _prepare_disk(case, env, monkeypatch)
    subs = {**env["subs"], "out": str(out), "tmp": str(tmp_path), **({case.disk: str(disk)} if disk else {})}
    args = [a.format(**subs) for a in case.args]
    # The feature cache (not the libraries' side files beside it, in the same cache folder).
    before = _listing(env["cache"] / "features")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(env["cache"]))
    if case.setup:
        SETUPS[case.setup](env, tmp_path)
    before_outside = _snapshot(tmp_path / "outside")
    for name, value in case.environ.items():
        monkeypatch.setenv(name, value.format(**subs))
    if case.process:
        # Not the side-file variables an in-process CLI call of this session set: the child sets its own.
        child_env = {k: v for k, v in os.environ.items() if k not in SIDE_FILES}
        p = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                           timeout=300, env=child_env, cwd=case.cwd.format(**subs) or None)
        code, stdout, stderr = p.returncode, p.stdout, p.stderr
    else:
        r = CliRunner().invoke(main, args)
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        code, stdout, stderr = r.exit_code, r.stdout, r.stderr
    # In-process, pytest's log capture takes the warnings a terminal shows on stderr.
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    _assert_outcome(case, code, stdout, stderr, logged)
    caches = [env["cache"]] + ([disk / "c"] if disk is not None else []) + [tmp_path / "cache"]
    _assert_clean(out, caches)
    _after(case, tmp_path, stdout, before_outside)
    if not case.extracts and case.code == 2:
        assert _listing(env["cache"] / "features") == before, "a bad input must fail before any feature is extracted"


def test_the_matrix_is_big_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_a_library_error_is_quoted_by_its_first_line():
    from harness.errors import first_line

    long = ValueError("\n  NOT_FOUND: Error opening \"zarr\" driver\n  [source locations='tensorstore/x.cc:1']\n")
    assert first_line(long) == 'NOT_FOUND: Error opening "zarr" driver'
    assert first_line(long, 9) == "NOT_FOUND"
    assert first_line(RuntimeError("")) == first_line(RuntimeError("  \n ")) == "RuntimeError"


# -------------------------------------------------------------------------------- follow-ups of the matrix
PEAK_RSS = """
import resource, sys
from harness.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("peak_rss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code, file=sys.stderr)
"""


def _peak_rss_mb(args: list[str]) -> tuple[float, int]:
    p = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True, timeout=300)
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("peak_rss_kb")][-1].split()
    return int(line[1]) / 1024, int(line[2])


@pytest.mark.parametrize("name", ["bomb.npz", "declares_4tib.npz", "ts/missing_chunks.bv-000000001",
                                  "ts/chunk_bomb.bv-000000001"])
def test_crafted_archives_are_refused_within_a_memory_bound(env, tmp_path, name):
    """A member that would inflate to 1 GiB, or whose header declares 4 TiB; a tensorstore array declaring
    256 GiB in 16-element chunks (one present), or a 16-element array in one 256 GiB chunk: each is refused
    from its metadata: the process stays within what the same command takes on a small archive refused at
    the same point (a leaf of the wrong shape), plus 256 MiB: a bound that the 1 GiB member alone would
    break."""
    subs = {**env["subs"], "out": str(tmp_path / "out")}
    good, code = _peak_rss_mb([a.format(**subs) for a in ck("wrong_shape.npz")])
    assert code == 2
    peak, code = _peak_rss_mb([a.format(**subs) for a in ck(name)])
    assert code == 2 and peak < good + 256, (peak, good)
    assert BOMB_BYTES / 2**20 > 256 * 2


def test_a_record_too_large_is_refused_without_reading_it(env):
    """A 64 MiB + 1 byte file among the records is refused by its size: `harness report` stays within what
    it takes on a 300-byte corrupt record plus 32 MiB (reading the file alone would take 64)."""
    small, code = _peak_rss_mb(["report", str(env["root"] / "runs_corrupt")])
    assert code == 2
    peak, code = _peak_rss_mb(["report", str(env["root"] / "runs_huge")])
    assert code == 2 and peak < small + 32, (peak, small)


def test_a_full_disk_during_a_run_resumes_once_there_is_room(env, tmp_path, monkeypatch):
    """The cache fills up during the extraction: one line, nothing half-written; once space is freed, the
    same command finishes, and its record equals that of a run that never ran out of space."""
    case = next(c for c in CASES if c.id == "cache-fills-during-extraction")
    disk = _prepare_disk(case, env, monkeypatch)
    args = [a.format(**{**env["subs"], "out": str(tmp_path / "out"), "tight": str(disk)}) for a in case.args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "no space left" in r.stderr, r.output
    _assert_clean(tmp_path / "out", [disk / "c"])
    if (disk / "filler").exists():
        (disk / "filler").unlink()
    monkeypatch.undo()  # a fake full disk is full no more
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    _assert_clean(tmp_path / "out", [disk / "c"])
    assert not list((disk / "c" / "features").glob("*.partial"))
    fresh = [a if a != str(disk / "c") else str(tmp_path / "c2") for a in args]
    fresh[fresh.index(str(tmp_path / "out"))] = str(tmp_path / "out2")
    assert CliRunner().invoke(main, fresh).exit_code == 0
    (a,), (b,) = (list((tmp_path / o).glob("*.json")) for o in ("out", "out2"))
    assert json.loads(a.read_text())["metrics"] == json.loads(b.read_text())["metrics"]


def test_reports_of_a_hostile_record_are_inert(env, tmp_path):
    """The matrix's hostile record (`_hostile`) through `harness report` in every format and `harness check`:
    the outputs are inert (`tests/test_report_inert.py`'s checks)."""
    runs = str(env["root"] / "runs_hostile")
    out = {}
    for fmt in ("md", "csv", "latex", "html"):
        path = tmp_path / f"report.{fmt}"
        r = CliRunner().invoke(main, ["report", runs, "--format", fmt, "-o", str(path)])
        assert r.exit_code == 0, r.output
        with open(path, encoding="utf-8", newline="") as f:  # as written: a "\r" in a CSV cell stays
            out[fmt] = f.read()
    assert_inert_markdown(out["md"])
    assert_latex_safe(out["latex"])
    assert_inert_html(out["html"], [f"={ATTACK}", f"-{ATTACK}", ATTACK])
    rows = list(csv.reader(io.StringIO(out["csv"])))
    assert rows[1][0] == f"'={ATTACK}" and all(len(row) == len(rows[0]) for row in rows)
    r = CliRunner().invoke(main, ["check", runs, "--baseline", str(env["root"] / "base.json")])
    assert r.exit_code == 1
    assert_inert_markdown(r.stdout.rsplit("\n", 2)[0] + "\n")  # the table and notes, before the verdict line
    assert r.stdout.rstrip("\n").splitlines()[-1].startswith("check FAILED")


def test_written_files_respect_the_umask(env, tmp_path, monkeypatch):
    """mkstemp's 0600 survives the rename: records, baselines, reports, checkpoints and cache files must get
    the umask's permissions, so a shared runs folder stays readable."""
    from harness.models.encoder import load_encoder

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    old = os.umask(0o022)
    try:
        args = [a.format(**{**env["subs"], "out": str(tmp_path / "runs")}) for a in RUN]
        assert CliRunner().invoke(main, args).exit_code == 0
        assert CliRunner().invoke(main, ["report", str(tmp_path / "runs"), "-o", str(tmp_path / "r.md")]).exit_code == 0
        assert CliRunner().invoke(main, ["check", str(tmp_path / "runs"), "--write-baseline",
                                         str(tmp_path / "b.json")]).exit_code == 0
        load_encoder(env["subs"]["tiny"]).save(str(tmp_path / "copy.npz"))
        files = [*tmp_path.glob("runs/*.json"), tmp_path / "r.md", tmp_path / "b.json", tmp_path / "copy.npz",
                 *(tmp_path / "cache").rglob("*.npy"), *(tmp_path / "cache").rglob("meta.json")]
    finally:
        os.umask(old)
    assert len(files) >= 7
    assert {str(f.relative_to(tmp_path)): oct(f.stat().st_mode & 0o777) for f in files} == \
        {str(f.relative_to(tmp_path)): "0o644" for f in files}


@pytest.mark.heavy
def test_a_batch_larger_than_the_split_stays_within_memory_and_time(env, tmp_path):
    """`batch_size=1000000` (under the 2^20 bound) over 200 + 100 examples: an eval batch larger than its
    split is the split, so the run takes what `batch_size=50` takes, plus 256 MiB and twice the time plus
    30 s (padded to 10^6 images of 16 px, it would hold 3 GiB of zeros). `batch_size=1000000000` is refused
    up front: within the normal run's memory (+16 MiB) and 60 s. Both measured runs extract their features afresh."""
    def measure(batch_size: int, name: str) -> tuple[float, int, float]:
        subs = {**env["subs"], "out": str(tmp_path / name)}
        args = [a.format(**subs) for a in run("--set", f"batch_size={batch_size}", "--cache-dir", str(tmp_path / name))]
        start = time.monotonic()
        peak, code = _peak_rss_mb(args)
        return peak, code, time.monotonic() - start

    normal, code, normal_s = measure(50, "normal")
    assert code == 0
    huge, code, huge_s = measure(1_000_000, "huge")
    assert code == 0 and huge < normal + 256 and huge_s < 2 * normal_s + 30, (huge, normal, huge_s, normal_s)
    (a,), (b,) = (list((tmp_path / n).glob("*.json")) for n in ("normal", "huge"))
    assert json.loads(a.read_text())["metrics"] == json.loads(b.read_text())["metrics"]
    refused, code, refused_s = measure(1_000_000_000, "refused")
    assert code == 2 and refused <= normal + 16 and refused_s < 60, (refused, normal, refused_s)
    assert 1_000_000 * 16 * 16 * 3 * 4 / 2**20 > 256 * 10
