"""Suites: built-in and TOML suites, `--set` routing, resume after an exception and after a SIGKILL, and two
concurrent runs writing to one results folder. Test-only tasks come from a separate 'package' registered
through the harness.tasks entry-point group (as tests/test_cli.py does)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import HarnessError
from harness.run import suites
from tests.tiny import TINIEST

PLUGIN_SRC = '''
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
from harness.api import Metric, Task


@dataclasses.dataclass
class ProbeConfig:
    num_images: int = 2
    seed: int = 0
    log: str = ""        # every computation appends a line here, so tests can count them
    started: str = ""    # written when the computation starts
    gate: str = ""       # the computation waits until this file exists
    fail_if: str = ""    # the computation raises while this file exists


def _norms(encoder, config):
    x = np.random.default_rng(config.seed).uniform(-1, 1, (config.num_images, encoder.res, encoder.res, 3))
    return np.linalg.norm(encoder.features(x, ["pre_logits"])["pre_logits"], axis=-1)


class _Probe(Task):
    Config = ProbeConfig
    presets = {"proxy": {"num_images": 2}}

    def metrics(self, config):
        return [Metric(f"{self.name}/norm", higher_is_better=False, unit="raw")]

    def run(self, encoder, data, config):
        if config.log:
            with open(config.log, "a") as f:
                f.write(f"{self.name} {os.getpid()}\\n")
        if config.started:
            Path(config.started).write_text(str(os.getpid()))
        if config.fail_if and os.path.exists(config.fail_if):
            raise RuntimeError("injected failure")
        deadline = time.time() + 120
        while config.gate and not os.path.exists(config.gate):
            if time.time() > deadline:
                raise TimeoutError(config.gate)
            time.sleep(0.05)
        norms = _norms(encoder, config)
        data.note_per_example(f"{self.name}/norm", norms)
        return {f"{self.name}/norm": float(norms.mean())}


class ProbeA(_Probe):
    name = "probe_a"


class ProbeB(_Probe):
    name = "probe_b"


class ProbeC(_Probe):
    name = "probe_c"
'''

TINY: list[str] = []  # extra command-line flags of every suite run


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny saved checkpoint: reading it back is ~10x faster than a random init in each run."""
    from harness.models.encoder import load_encoder

    enc = load_encoder("random:0", **TINIEST, res=16)
    return enc.save(str(tmp_path_factory.mktemp("ck") / "tiny.npz"))


@pytest.fixture()
def site(tmp_path, monkeypatch, ckpt):
    site = tmp_path / "site"
    (site / "suite_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "suite_plugin.py").write_text(PLUGIN_SRC)
    (site / "suite_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: suite-plugin\n"
                                                                  "Version: 0.1\n")
    (site / "suite_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[harness.tasks]\nprobe_a = suite_plugin:ProbeA\nprobe_b = suite_plugin:ProbeB\n"
        "probe_c = suite_plugin:ProbeC\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SUITE_TEST_CKPT", str(ckpt))
    return site


def _suite(path: Path, entries: list[tuple[str, dict]]) -> Path:
    lines = [f'ckpt = "{os.environ["SUITE_TEST_CKPT"]}"']
    for name, sets in entries:
        lines += ["[[task]]", f'name = "{name}"', 'preset = "proxy"']
        if sets:
            lines.append("set = { " + ", ".join(f'{k} = {json.dumps(v)}' for k, v in sets.items()) + " }")
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(out: Path) -> dict[str, dict]:
    return {json.loads(f.read_text())["task"]["name"]: json.loads(f.read_text()) for f in out.glob("*.json")}


def _cli(site: Path, args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 120):
    deadline = time.time() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}): {proc.stdout.read()}")
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------- loading
def test_builtin_suites():
    proxy = suites.load_suite("proxy")
    assert [e.task for e in proxy] == ["fewshot", "linear_probe", "imagenet_finetune", "coco_captioning", "vqa",
                                       "lit_zeroshot", "knn", "segmentation", "depth"]
    assert all(e.preset == "proxy" for e in proxy)
    paper = suites.load_suite("paper")
    assert {e.task for e in paper} == {e.task for e in proxy} and all(e.preset is None for e in paper)
    assert [dict(e.sets).get("res") for e in paper if e.task == "imagenet_finetune"] == ["224", "384", "518"]
    if suites.PROXY_CKPT.exists():
        assert suites.default_ckpt("proxy") == str(suites.PROXY_CKPT)
    assert suites.default_ckpt("paper") is None
    with pytest.raises(HarnessError, match="did you mean 'proxy'"):
        suites.load_suite("proxi")


def test_toml_suite(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('ckpt = "ck/model.npz"\n[[task]]\nname = "fewshot"\npreset = "proxy"\n'
                 'set = { shots = [1, 5], datasets = ["proxy_digits"], solve_dtype = "float32" }\n'
                 '[[task]]\nname = "vqa"\n')
    entries = suites.load_suite(str(f))
    assert entries[0] == suites.Entry("fewshot", "proxy", (("shots", "1,5"), ("datasets", "proxy_digits"),
                                                           ("solve_dtype", "float32")))
    assert entries[1] == suites.Entry("vqa")
    assert suites.default_ckpt(str(f)) == str(tmp_path / "ck" / "model.npz")  # relative to the file
    for text, msg in (("[[task]]\npreset = 'proxy'\n", "field task[0] has no field name"),
                      ("[[task]]\nname = 'vqa'\npresets = 'proxy'\n",
                       "field task[0] has unknown key 'presets' (did you mean 'preset'?)"),
                      ("[[task]]\nname = 'vqa'\nset = 3\n", "field task[0].set is 3; expected a table"),
                      ("[[task]]\nname = 'vqa'\nset = { shots = { a = 1 } }\n", "field task[0].set.shots is a "
                       "table; expected a string, number, true/false or a list of them"),
                      ("ckpt = 3\n[[task]]\nname = 'vqa'\n", "field ckpt is 3; expected a string"),
                      ("chkpt = 'x'\n[[task]]\nname = 'vqa'\n", "has unknown key 'chkpt' (did you mean 'ckpt'?)"),
                      ("name = [\n", "not valid TOML"),
                      ("x = 1\n", "expected one or more [[task]]"),
                      ("x = " + "{ a = " * 600 + "1" + " }" * 600 + "\n", "nested too deeply to be a suite file")):
        f.write_text(text)
        with pytest.raises(HarnessError, match=re.escape(msg)):
            suites.load_suite(str(f))
    with pytest.raises(HarnessError, match="no such file"):
        suites.load_suite(str(tmp_path / "missing.toml"))


def test_command_line_sets_go_where_they_fit(site):
    entries = (suites.Entry("probe_a", "proxy", (("num_images", "3"),)), suites.Entry("fewshot", "proxy"))
    got = [(p.task_name, p.preset, p.sets) for p in suites.plan(entries, {"shots": "1", "width": "16"})]
    assert got == [("probe_a", "proxy", {"num_images": "3", "width": "16"}),
                   ("fewshot", "proxy", {"shots": "1", "width": "16"})]
    with pytest.raises(HarnessError, match="did you mean 'shots'"):
        suites.plan(entries, {"shotz": "1"})


# ------------------------------------------------------------------------------------------- resume
def test_resume_after_an_exception(site, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("")
    log = tmp_path / "log"
    suite = _suite(tmp_path / "s.toml", [("probe_a", {"log": str(log)}),
                                         ("probe_b", {"log": str(log), "fail_if": str(flag)}),
                                         ("probe_c", {"log": str(log)})])
    out = tmp_path / "runs"
    r = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(out), *TINY])
    assert r.exit_code == 2
    assert "[2/3] probe_b[proxy]: failed: RuntimeError: injected failure" in r.output
    assert "1 of 3 suite entries failed: probe_b[proxy]" in r.output
    first = _records(out)
    assert set(first) == {"probe_a", "probe_c"}  # the entry after the failure still ran
    flag.unlink()
    r = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(out), *TINY])
    assert r.exit_code == 0, r.output
    assert "[1/3] probe_a[proxy]: reused" in r.output and "[3/3] probe_c[proxy]: reused" in r.output
    assert "[2/3] probe_b[proxy]: done" in r.output
    second = _records(out)
    assert set(second) == {"probe_a", "probe_b", "probe_c"}
    assert second["probe_a"] == first["probe_a"] and second["probe_c"] == first["probe_c"]
    assert [ln.split()[0] for ln in log.read_text().splitlines()] == ["probe_a", "probe_b", "probe_c", "probe_b"]
    # --force recomputes everything
    r = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(out), "--force", *TINY])
    assert r.exit_code == 0 and "reused" not in r.output and len(log.read_text().splitlines()) == 7


@pytest.mark.heavy
def test_resume_after_sigkill(site, tmp_path):
    started, gate, log = tmp_path / "started", tmp_path / "gate", tmp_path / "log"
    suite = _suite(tmp_path / "s.toml", [("probe_a", {"log": str(log)}),
                                         ("probe_b", {"log": str(log), "started": str(started), "gate": str(gate)}),
                                         ("probe_c", {"log": str(log), "num_images": 3})])
    out = tmp_path / "runs"
    args = ["run", "--suite", str(suite), "--out", str(out), *TINY]
    proc = _cli(site, args)
    try:
        _wait_for(started, proc)  # probe_a finished, probe_b is mid-computation
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -9
    before = _records(out)
    assert set(before) == {"probe_a"}
    assert not [p for p in out.iterdir() if p.suffix == ".json" and p.name.startswith(".")]
    a_bytes = next(f for f in out.glob("probe_a__*.json")).read_bytes()
    gate.write_text("")
    proc = _cli(site, args)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output
    assert "[1/3] probe_a[proxy]: reused" in output
    assert "[2/3] probe_b[proxy]: done" in output and "[3/3] probe_c[proxy]: done" in output
    after = _records(out)
    assert set(after) == {"probe_a", "probe_b", "probe_c"}
    assert next(f for f in out.glob("probe_a__*.json")).read_bytes() == a_bytes  # the finished record is kept
    assert [ln.split()[0] for ln in log.read_text().splitlines()] == ["probe_a", "probe_b", "probe_b", "probe_c"]
    # The resumed suite gives the same numbers as an uninterrupted one.
    fresh = tmp_path / "fresh"
    r = CliRunner().invoke(main, ["run", "--suite", str(suite), "--out", str(fresh), *TINY])
    assert r.exit_code == 0, r.output
    for task, rec in _records(fresh).items():
        assert rec["metrics"] == after[task]["metrics"] and rec["per_example"] == after[task]["per_example"]
        assert rec["task"]["config_hash"] == after[task]["task"]["config_hash"]


# ------------------------------------------------------------------------------------------- concurrency
def test_two_concurrent_runs_share_one_results_folder(site, tmp_path):
    started, gate, log = tmp_path / "started", tmp_path / "gate", tmp_path / "log"
    suite = _suite(tmp_path / "s.toml", [("probe_a", {"log": str(log)}),
                                         ("probe_b", {"log": str(log), "started": str(started), "gate": str(gate)}),
                                         ("probe_c", {"log": str(log)})])
    out = tmp_path / "runs"
    args = ["run", "--suite", str(suite), "--out", str(out), *TINY]
    procs = [_cli(site, args), _cli(site, args)]
    try:
        _wait_for(started, procs[0] if procs[0].poll() is None else procs[1])
        time.sleep(1.0)  # give the other run time to reach probe_b's lock
        gate.write_text("")
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    # Every record computed exactly once; the other run waited for it (or found it) and reused it.
    assert sorted(ln.split()[0] for ln in log.read_text().splitlines()) == ["probe_a", "probe_b", "probe_c"]
    for task in ("probe_a", "probe_b", "probe_c"):
        states = [("reused" if f"{task}[proxy]: reused" in o else "done") for o in outputs]
        assert sorted(states) == ["done", "reused"], (task, outputs)
    recs = _records(out)
    assert set(recs) == {"probe_a", "probe_b", "probe_c"}
    assert not [p.name for p in out.iterdir() if p.is_file() and p.name.startswith(".")]
