"""The runner: one registry lookup, one checkpoint hash, the encoder loaded once per encoder config, and
a task whose run() returns other metrics than it declares stopped with one line naming them."""

import dataclasses
import re

import numpy as np
import pytest

from harness import checkpoints
from harness.checkpoints import handle as handle_mod
from harness.api import Metric, Task
from harness.errors import HarnessError
from harness.models import encoder as encoder_mod
from harness.run import runner
from tests.tiny import TINIEST


@dataclasses.dataclass
class NormConfig:
    returns: str = "norm"  # which metric names run() returns: norm, extra, none


class Norm(Task):
    name = "norm_probe"
    description = "test-only task"
    Config = NormConfig

    def metrics(self, config):
        return [Metric("norm_probe/norm", False, "raw"), Metric("norm_probe/loss", False, "raw", optional=True)]

    def run(self, encoder, ctx, config):
        x = np.zeros((2, encoder.res, encoder.res, 3), np.float32)
        norm = float(np.linalg.norm(encoder.features(x, ["pre_logits"])["pre_logits"]))
        return {"norm": {"norm_probe/norm": norm}, "extra": {"norm_probe/norm": norm, "norm_probe/other": 1.0},
                "none": {}}[config.returns]


@pytest.fixture()
def ckpt(tmp_path):
    return encoder_mod.load_encoder("random:0", **TINIEST, res=16).save(str(tmp_path / "tiny.npz"))


def test_one_hash_one_load_per_encoder_config(ckpt, tmp_path, monkeypatch):
    hashed, loaded = [], []
    real_digest, real_load = handle_mod._digest, runner.load_encoder
    monkeypatch.setattr(handle_mod, "_digest", lambda *a, **kw: hashed.append(a) or real_digest(*a, **kw))
    monkeypatch.setattr(runner, "load_encoder", lambda *a, **kw: loaded.append(kw) or real_load(*a, **kw))
    encoders = runner.Encoders()
    record, path, reused = runner.run_task(Norm(), ckpt, out_dir=tmp_path / "runs", encoders=encoders,
                                           progress=False)
    assert not reused and path.exists() and len(hashed) == 1 and len(loaded) == 1
    assert record["checkpoint"]["sha256"] == checkpoints.file_sha256(checkpoints.parse_spec(ckpt)[0])
    # Another task setting, the same encoder: the loaded one serves; another encoder config loads anew.
    runner.run_task(Norm(), ckpt, sets={"returns": "norm"}, out_dir=tmp_path / "runs2", encoders=encoders,
                    progress=False)
    assert len(loaded) == 1
    runner.run_task(Norm(), ckpt, sets={"dtype_mm": "bfloat16"}, out_dir=tmp_path / "runs", encoders=encoders,
                    progress=False)
    assert len(loaded) == 2 and loaded[1]["dtype_mm"] == "bfloat16"


def test_run_must_return_what_metrics_declares(ckpt, tmp_path):
    for returns, says in (("extra", "returned norm_probe/other, which metrics() does not declare"),
                          ("none", "did not return norm_probe/norm, which metrics() declares")):
        with pytest.raises(HarnessError, match=re.escape(says)) as e:
            runner.run_task(Norm(), ckpt, sets={"returns": returns}, out_dir=tmp_path / "runs", progress=False)
        assert "task 'norm_probe'" in str(e.value) and "\n" not in str(e.value)
    assert not list((tmp_path / "runs").glob("*.json"))  # no record of a broken run


def test_sets_split_into_task_settings_and_encoder_keys():
    task_sets, enc = runner.split_sets(Norm(), {"returns": "extra", "res": "32", "scan": "yes"})
    assert task_sets == {"returns": "extra"} and enc == {"res": 32, "scan": True}
    with pytest.raises(HarnessError, match="not a setting of task 'norm_probe' nor an encoder key "
                                           r"\(did you mean 'returns'\?\)"):
        runner.split_sets(Norm(), {"retuns": "x"})
