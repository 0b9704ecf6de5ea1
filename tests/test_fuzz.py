"""Every reader of a file a user gives, fuzzed (issue 23, "Make it permanent"): Hypothesis generates
malformed inputs near a valid one (npz archives, safetensors headers, Hugging Face / timm / open_clip /
harness.json configs, tokenizer configs, tensorstore folders, result records, baselines, suite files) and
checks one property on each:

    the read returns, or raises a HarnessError whose message is one non-empty line; never any other
    exception; the process's address space grows by at most MEMORY_BOUND while it runs (RLIMIT_AS: an
    allocation beyond it raises MemoryError, which fails the property); and no file anywhere under the
    sandbox (the example's own folder, $HOME, $TMPDIR, the working directory) is created, changed or
    removed (matplotlib's font cache, which its first import in a process writes into $HOME, is made
    before the first example).

Each reader runs with a small budget by default (SMALL examples, `make test`) and a large one behind the
`slow` marker (LARGE). The valid inputs the mutations start from are built here without torch (numpy state
dicts in timm's and open_clip's layouts) and checked to load first. A failure found here is a bug of the
reader; its minimal example goes into tests/test_bad_inputs.py's matrix.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import resource
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.errors import HarnessError
from tests.formats import OPEN_CLIP_CONFIG, TIMM_CONFIG, write_open_clip, write_timm
from tests.tiny import TINIEST

SMALL, LARGE = 20, 300
MEMORY_BOUND = 1 << 30
HF_FOLDER = Path(__file__).parent / "data" / "hf_siglip" / "two_tower_spm"
SIGLIP2_NAFLEX = Path(__file__).parent / "data" / "siglip2" / "hf_naflex"  # SigLIP 2's Siglip2Model folder
GOLDEN = Path(__file__).parent / "data" / "report_golden"

budgets = pytest.mark.parametrize("budget", [SMALL, pytest.param(LARGE, marks=pytest.mark.slow)],
                                  ids=["small", "large"])


# ------------------------------------------------------------------------------------- the property
def _snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (st_.st_mode, st_.st_size if not p.is_dir() else 0, st_.st_mtime_ns)
    return out


def _vm_bytes() -> int:
    return int(re.search(r"VmSize:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


@contextlib.contextmanager
def _memory_bound(extra: int = MEMORY_BOUND):
    """The process's address space may grow by `extra` bytes: a larger allocation fails (MemoryError)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class Sandbox:
    """Everything a read could write to: examples, $HOME, $TMPDIR and the working directory, all under root."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        for name in ("work", "home", "tmp", "cwd"):
            (root / name).mkdir(parents=True)
        self.work = root / "work"
        monkeypatch.setenv("HOME", str(root / "home"))
        monkeypatch.setenv("TMPDIR", str(root / "tmp"))
        monkeypatch.setenv("HARNESS_CACHE_DIR", str(root / "home" / "cache"))
        monkeypatch.setattr(tempfile, "tempdir", str(root / "tmp"))
        monkeypatch.chdir(root / "cwd")
        # matplotlib (HTML reports draw with it) writes its font cache into $HOME when first imported in a
        # process: a library's cache, not a read of ours; it is made here, before the first snapshot.
        import matplotlib.font_manager  # noqa: F401

    def check(self, budget: int, strategy, make, read) -> None:
        """`make(folder, example)` writes an example into a fresh folder and returns what `read` takes."""

        outcomes = {"loads": 0, "one HarnessError line": 0}

        @settings(max_examples=budget, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def prop(example):
            folder = Path(tempfile.mkdtemp(dir=self.work))
            try:
                target = make(folder, example)
                before = _snapshot(self.root)
                with _memory_bound():
                    try:
                        read(target)
                        outcome = "loads"
                    except HarnessError as e:
                        assert str(e).strip() and "\n" not in str(e), repr(str(e))
                        outcome = "one HarnessError line"
                event(outcome)
                outcomes[outcome] += 1
                after = _snapshot(self.root)
                assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                                         if before.get(k) != after.get(k)}
            finally:
                shutil.rmtree(folder)

        prop()
        print(f"fuzz outcomes (with shrinking): {outcomes}")


@pytest.fixture()
def box(tmp_path, monkeypatch):
    return Sandbox(tmp_path / "sandbox", monkeypatch)


# ---------------------------------------------------------------------------------- value strategies
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([0, -1, 1, 3, 2**31, 2**63])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["", "many", "gelu", "token", "map", "avg", "linear", "none", "16", "1e-6"]))
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=8)
RAW = st.sampled_from([b"", b"{", b"[" * 5000, b"{\"a\":" * 3000, b"1" * 5000, b"\xff\xfe\x00", b"NaN", b"null",
                       b"[]", b"\"text\"", b"{\"x\": 1e999}"]) | st.binary(max_size=64)


def _paths(doc, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _at(doc, path):
    for k in path:
        doc = doc[k]
    return doc


@st.composite
def mutated(draw, base):
    """`base` (a JSON value) with 1-3 edits: a value replaced by a random JSON value, a key removed or
    added; or, sometimes, raw bytes that are not the document at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(RAW)
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if not path:
            if action == "replace":
                doc = draw(JSON)
            continue
        parent, key = _at(doc, path[:-1]), path[-1]
        if action == "replace":
            parent[key] = draw(JSON)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(JSON)
    return doc


def _write_json(file: Path, doc) -> None:
    file.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc, allow_nan=True).encode())


# ---------------------------------------------------------------------------------- the valid inputs
def _npy(shape, descr, *, version=(1, 0), fortran="False") -> bytes:
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, }}".encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    size = len(header).to_bytes(2 if version == (1, 0) else 4, "little")
    return b"\x93NUMPY" + bytes(version) + size + header


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """The valid inputs every mutation starts from, each checked to load."""
    import tensorstore as ts

    from harness.models import text
    from harness.models.encoder import load_encoder

    root = tmp_path_factory.mktemp("fuzz_bases")
    enc = load_encoder("random:0", **TINIEST, res=16, pool_type="map")
    npz = Path(enc.save(str(root / "tiny.npz")))
    harness_dir = Path(enc.save(str(root / "harness_ckpt"), fmt="harness"))
    step = root / "ts" / "checkpoint.bv-000000001"
    step.mkdir(parents=True)
    for k, v in enc.params_numpy().items():
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(step / f"params~{k.replace('/', '~')}")}}
        ts.open(spec, create=True, dtype=v.dtype.name, shape=v.shape).result().write(v).result()
    (root / "ts" / "checkpoint.bv-LAST").write_text("000000001")
    timm_dir = write_timm(root / "timm")
    oc = write_open_clip(root / "open_clip")
    hf = root / "hf"
    shutil.copytree(HF_FOLDER, hf)
    out = {"npz": npz, "harness": harness_dir, "ts": root / "ts", "timm": timm_dir, "open_clip": oc, "hf": hf}
    for name in ("npz", "harness", "timm", "open_clip", "hf"):
        load_encoder(str(out[name]))
    load_encoder(str(root / "ts" / "checkpoint.bv"))
    assert text.load_text_tower(str(oc)) is not None and text.load_text_tower(str(hf)) is not None
    return out


def _copy(src: Path, folder: Path) -> Path:
    dst = folder / src.name
    (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    return dst


def _load(spec) -> None:
    from harness.models.encoder import load_encoder

    load_encoder(str(spec))


def _load_both(spec) -> None:
    from harness.models import text

    _load(spec)
    text.load_text_tower(str(spec))


# ------------------------------------------------------------------------------------------------ npz
NPY_DESCR = st.sampled_from(["<f4", "<f2", "|V2", "|V4", "<f8", ">f4", "<i4", "|b1", "<c8", "|u1", "O", "<U3",
                             "|S4", "<M8[s]", "[('a', '<f4')]", "garbage", "<f16"])
SHAPES = st.lists(st.integers(0, 2**20) | st.sampled_from([1, 2, 16, 2**40, 2**62]), max_size=4)


@st.composite
def near(draw, shape):
    """A shape near `shape`: a dimension dropped, added or changed."""
    shape = list(shape)
    kind = draw(st.sampled_from(["drop", "add", "change"]))
    if kind == "drop" and shape:
        del shape[draw(st.integers(0, len(shape) - 1))]
    elif kind == "add":
        shape.insert(draw(st.integers(0, len(shape))), draw(st.sampled_from([0, 1, 2, 16])))
    elif shape:
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.sampled_from([0, 1, 3, 7, 16, 32, 2**31]))
    return shape


@st.composite
def npz_members(draw, shapes):
    name = draw(st.sampled_from(sorted(shapes)) | st.text(max_size=12))
    kind = draw(st.sampled_from(["npy", "npy", "bytes", "zip"]))
    if kind == "bytes":
        return name, draw(st.binary(max_size=80))
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x.npy", _npy((2,), "<f4") + b"\0" * 8)
        return name, buf.getvalue()
    version = draw(st.sampled_from([(1, 0), (1, 0), (2, 0), (3, 0), (9, 9)]))
    shape = draw(near(shapes[name]) if name in shapes else SHAPES)
    descr = draw(st.sampled_from(["<f4", "<f4", "|V2"]) | NPY_DESCR)
    head = _npy(shape, descr, version=version, fortran=draw(st.sampled_from(["False", "False", "True", "3"])))
    if draw(st.booleans()) and descr in ("<f4", "|V2") and all(0 <= d < 4096 for d in shape):
        # the data the header declares: a well-formed array of the wrong shape or values
        n = int(np.prod(shape)) * (4 if descr == "<f4" else 2)
        return name, head + draw(st.sampled_from([b"\0", b"\x7f", b"\xff"])) * n
    return name, head + draw(st.binary(max_size=64))


@budgets
def test_npz(box, bases, budget):
    good = bases["npz"].read_bytes()
    shapes = {k: v.shape for k, v in np.load(bases["npz"]).items()}
    strategy = (st.tuples(st.just("bytes"), st.binary(max_size=200))
                | st.tuples(st.just("truncated"), st.integers(0, len(good) - 1))
                | st.tuples(st.just("members"), st.lists(npz_members(shapes), min_size=1, max_size=3), st.booleans()))

    def make(folder, ex):
        path = folder / "ck.npz"
        if ex[0] == "bytes":
            path.write_bytes(ex[1])
        elif ex[0] == "truncated":
            path.write_bytes(good[: ex[1]])
        else:
            _, members, keep = ex
            with zipfile.ZipFile(bases["npz"]) as src, zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a duplicate member name is one of the inputs
                replaced = {f"{n}.npy" if not n.endswith(".npy") else n for n, _ in members}
                for info in src.infolist() if keep else []:
                    if info.filename not in replaced:
                        z.writestr(info.filename, src.read(info.filename))
                for n, data in members:
                    z.writestr(n if n.endswith(".npy") else f"{n}.npy", data)
        return path

    box.check(budget, strategy, make, _load)


# ---------------------------------------------------------------------------------------- safetensors
@budgets
def test_safetensors(box, bases, budget):
    raw = (bases["timm"] / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    for v in header.values():  # declared shapes and offsets drawn near and far from the real ones
        if isinstance(v, dict):
            v["shape"] = list(v["shape"])
    strategy = st.tuples(mutated(header), st.sampled_from(["exact", "short", "long", "huge"]),
                         st.integers(0, len(data)))

    def make(folder, ex):
        doc, prefix, keep = ex
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        size = {"exact": len(body), "short": max(len(body) - 3, 0), "long": len(body) + 5, "huge": 2**62}[prefix]
        dst = _copy(bases["timm"], folder)
        (dst / "model.safetensors").write_bytes(size.to_bytes(8, "little") + body + data[:keep])
        return dst

    box.check(budget, strategy, make, _load)


# ----------------------------------------------------------------------------------- model configs
def _config_case(base_folder: Path, file: str, base_doc, read):
    def make(folder, doc):
        dst = _copy(base_folder, folder)
        _write_json(dst / file, doc)
        return dst

    return mutated(base_doc), make, read


@budgets
def test_hf_config(box, bases, budget):
    box.check(budget, *_config_case(bases["hf"], "config.json",
                                    json.loads((bases["hf"] / "config.json").read_text()), _load_both))


@budgets
def test_timm_config(box, bases, budget):
    box.check(budget, *_config_case(bases["timm"], "config.json", TIMM_CONFIG, _load))


@budgets
def test_open_clip_config(box, bases, budget):
    box.check(budget, *_config_case(bases["open_clip"], "open_clip_config.json", OPEN_CLIP_CONFIG, _load_both))


@budgets
def test_harness_json(box, bases, budget):
    box.check(budget, *_config_case(bases["harness"], "harness.json",
                                    json.loads((bases["harness"] / "harness.json").read_text()), _load))


@budgets
def test_tokenizer_config(box, bases, budget):
    from harness.data.tokenizer import SiglipTokenizer

    base = json.loads((bases["hf"] / "tokenizer_config.json").read_text())
    special = {"eos_token": "</s>", "unk_token": {"content": "<unk>", "lstrip": False}, "pad_token": "</s>",
               "additional_special_tokens": ["<unk>"]}

    def make(folder, ex):
        cfg, special_map = ex
        dst = _copy(bases["hf"], folder)
        _write_json(dst / "tokenizer_config.json", cfg)
        _write_json(dst / "special_tokens_map.json", special_map)
        return dst

    def read(folder):
        SiglipTokenizer(folder).encode_hf(["A photo of a </s> dog, running!"], 16)

    box.check(budget, st.tuples(mutated(base), mutated(special)), make, read)


# ------------------------------------------------------------------------------ SigLIP 2 (Hugging Face)
@budgets
@pytest.mark.parametrize("file", ["config.json", "processor_config.json"])
def test_hf_siglip2_configs(box, budget, file):
    """A NaFlex `Siglip2Model` folder's config.json and its processor's patch budget (processor_config.json)."""
    box.check(budget, *_config_case(SIGLIP2_NAFLEX, file, json.loads((SIGLIP2_NAFLEX / file).read_text()),
                                    _load_both))


@budgets
def test_hf_gemma_tokenizer_config(box, budget):
    """A SigLIP 2 folder's tokenizer_config.json under `text_pp=hf_siglip2` (the processor's tokenizer)."""
    pytest.importorskip("tokenizers")
    from harness.data.tokenizer import HFGemmaTokenizer

    def read(folder):
        HFGemmaTokenizer(folder).encode_hf(["A photo of a <eos> dog, running!"], 16)

    box.check(budget, *_config_case(SIGLIP2_NAFLEX, "tokenizer_config.json",
                                    json.loads((SIGLIP2_NAFLEX / "tokenizer_config.json").read_text()), read))


# ---------------------------------------------------------------------------------------- tensorstore
@st.composite
def tensorstore_edits(draw, leaves, zarray):
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["last", "zarray", "zarray", "file", "chunk", "rm"]))
        leaf = draw(st.sampled_from(leaves))
        if kind == "last":
            edits.append(("last", draw(st.sampled_from(["000000001", "000000002", "000000001-tmp", "", "../x"])
                                       | st.text(max_size=12))))
        elif kind == "zarray":
            edits.append(("zarray", leaf, draw(mutated(zarray))))
        elif kind == "file":
            edits.append(("file", draw(st.text(alphabet="abcxyz~/_", max_size=10)), draw(st.binary(max_size=40))))
        elif kind == "chunk":
            edits.append(("chunk", leaf, draw(st.binary(max_size=80))))
        else:
            edits.append(("rm", leaf))
    return draw(st.booleans()), edits


@budgets
def test_tensorstore(box, bases, budget):
    step = bases["ts"] / "checkpoint.bv-000000001"
    leaves = sorted(p.name for p in step.iterdir())
    zarray = json.loads((step / leaves[0] / ".zarray").read_text())

    def make(folder, ex):
        via_last, edits = ex
        dst = _copy(bases["ts"], folder)
        s = dst / step.name
        for e in edits:
            if e[0] == "last":
                (dst / "checkpoint.bv-LAST").write_text(e[1])
            elif e[0] == "zarray":
                _write_json(s / e[1] / ".zarray", e[2])
            elif e[0] == "file":
                name = "params~" + e[1].replace("/", "~")
                if not (s / name).exists():
                    (s / name).write_bytes(e[2])
            elif e[0] == "chunk":
                for chunk in [p for p in (s / e[1]).iterdir() if not p.name.startswith(".")][:1]:
                    chunk.write_bytes(e[2])
            else:
                for chunk in [p for p in (s / e[1]).iterdir() if not p.name.startswith(".")]:
                    chunk.unlink()
        return dst / "checkpoint.bv" if via_last else s

    box.check(budget, tensorstore_edits(leaves, zarray), make, _load)


# ------------------------------------------------------------------------------ records and baselines
def _report_all(records) -> None:
    """Everything `harness report` and `harness check` do with records."""
    from harness.report import to_csv, to_html, to_latex, to_markdown
    from harness.report.baseline import load_baseline, make_baseline
    from harness.report.check import check

    for render in (to_markdown, to_csv, to_latex, to_html):
        render(records)
    check(records, load_baseline(GOLDEN / "baseline.json"))
    make_baseline(records)  # one line where the records hold several checkpoints


@budgets
def test_records(box, budget):
    from harness.report.records import load_records

    base = json.loads((GOLDEN / "records" / "vqa_sovit.json").read_text())
    other = json.loads((GOLDEN / "records" / "fewshot_sovit.json").read_text())

    def make(folder, doc):
        _write_json(folder / "vqa.json", doc)
        _write_json(folder / "fewshot.json", other)
        return folder

    def read(folder):
        _report_all(load_records(folder))

    box.check(budget, mutated(base), make, read)


@budgets
def test_baselines(box, budget):
    from harness.report.baseline import load_baseline
    from harness.report.check import check
    from harness.report.records import load_records

    base = json.loads((GOLDEN / "baseline.json").read_text())
    records = load_records(GOLDEN / "records")

    def make(folder, doc):
        _write_json(folder / "baseline.json", doc)
        return folder / "baseline.json"

    def read(path):
        check(records, load_baseline(path))

    box.check(budget, mutated(base), make, read)


# ------------------------------------------------------------------------------------------------ suites
TOML_SCALAR = (st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters='"\\\n'), max_size=12)
               .map(lambda s: f'"{s}"') | st.integers(-(2**70), 2**70).map(str)
               | st.sampled_from(["true", "false", "1.5", "inf", "nan", "1979-05-27", "07:32:00", "-0", "'x'",
                                  '"fewshot"', '"proxy"', '"1,5"']))
TOML_VALUE = st.recursive(TOML_SCALAR, lambda c: st.lists(c, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
                          | st.lists(st.tuples(st.sampled_from(["a", "shots", "seeds", "name"]), c), max_size=3)
                          .map(lambda kv: "{ " + ", ".join(f"{k} = {v}" for k, v in dict(kv).items()) + " }"),
                          max_leaves=6)


@st.composite
def suite_texts(draw):
    lines = []
    if draw(st.booleans()):
        lines.append(f"ckpt = {draw(TOML_VALUE)}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append("[[task]]")
        for key in draw(st.lists(st.sampled_from(["name", "preset", "set", "sett", "x"]), max_size=4, unique=True)):
            lines.append(f"{key} = {draw(TOML_VALUE)}")
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 5)) == 0:  # a cut or spliced file
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=10))
    return text


@budgets
def test_suites(box, budget):
    from harness.run import suites

    def make(folder, text):
        (folder / "suite.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
        return folder / "suite.toml"

    def read(path):
        entries = suites.load_suite(str(path))
        suites.default_ckpt(str(path))
        suites.plan(entries, {})

    box.check(budget, suite_texts() | st.just("x = " + "[" * 600 + "]" * 600 + "\n"), make, read)
