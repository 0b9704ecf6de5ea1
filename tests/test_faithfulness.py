"""Every protocol default that follows big_vision, checked against big_vision's own config functions.

`tests/data/bv_configs.json` holds what big_vision's `get_config` / config helpers return (made by
`tests/data/make_bv_config_fixtures.py`, big_vision commit in the file); the harness's defaults are
compared with those values here, never with a copy typed by hand. pp strings are compared op by op after
dropping the label ops (`onehot`, `keep`, `pad_to_shape`, `map`), which the harness does in its own code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import api, data
from harness.api.registry import get_task
from harness.data.pp import Preprocess

BV = json.loads((Path(__file__).parent / "data" / "bv_configs.json").read_text())
LABEL_OPS = ("onehot", "keep", "pad_to_shape", "map")


def image_ops(pp: str) -> list[str]:
    """A pp string as its image ops, spacing normalised (`value_range(-1, 1)` == `value_range(-1,1)`);
    big_vision's fused `decode_jpeg_and_inception_crop(s)` is `decode|inception_crop(s)`."""
    out = []
    for op in pp.split("|"):
        op = op.replace(" ", "")
        name = op.split("(")[0]
        if name in LABEL_OPS:
            continue
        if name == "decode_jpeg_and_inception_crop":
            out += ["decode", "inception_crop" + op[len(name):]]
            continue
        out.append(op)
    return out


def test_pp_strings_are_ours_to_parse():
    # The comparison only makes sense for ops the harness's pp parser knows.
    for pp in (BV["fewshot"]["pp_eval"], BV["vit_i1k"]["evals"]["val"]["pp_fn"],
               BV["transfer_imagenet_384"]["train_pp"]):
        Preprocess("|".join(image_ops(pp)))


# ---------------------------------------------------------------------------------------------- few-shot
def test_fewshot_defaults_are_big_visions_fewshot_lsr():
    """`configs/common_fewshot.py::get_fewshot_lsr()`."""
    from harness.tasks.fewshot import FewShotConfig, default_pp

    bv, c = BV["fewshot"], FewShotConfig()
    assert list(c.shots) == bv["shots"]
    assert len(c.seeds) == bv["num_seeds"] and list(c.seeds) == list(range(bv["num_seeds"]))
    assert c.l2_reg == bv["l2_reg"]
    assert c.representation == bv["representation_layer"]
    assert image_ops(default_pp(224)) == image_ops(bv["pp_eval"]) == image_ops(bv["pp_train"])


@pytest.mark.parametrize("name", ["caltech", "cars", "cifar100", "dtd", "pets", "uc_merced"])
def test_fewshot_splits_are_big_visions(name):
    tfds_name, train, test = BV["fewshot"]["datasets"][name]
    info = next(i for i in data.DATASETS.values() if i.tfds_name == tfds_name)
    assert (info.split("fewshot_train"), info.split("fewshot_test")) == (train, test)


# ------------------------------------------------------------------------------------------ fine-tuning
@pytest.mark.parametrize("res", [224, 384])
def test_finetune_pp_is_big_visions_transfer_config(res):
    """`configs/transfer.py` (`h_res`/`l_res` 448/384 by default; 256/224 for 224 px), ImageNet."""
    from harness.tasks.imagenet_finetune import (
        FinetuneConfig,
        _train_pp,
        default_pp_eval,
    )

    bv = BV[f"transfer_imagenet_{res}"]
    config = FinetuneConfig(randaug="off")  # big_vision's transfer config has no RandAugment
    assert image_ops(_train_pp(config, res)[0]) == image_ops(bv["train_pp"])
    for name in ("minival", "val", "real", "v2"):
        if res != 384 and name in ("real", "v2"):
            # big_vision's `_set_imagenet_variants(config)` is called without the run's h_res/l_res, so
            # its ReaL / v2 evals are 448/384 at every resolution; the harness evaluates them like val.
            assert image_ops(bv["evals"][name]["pp_fn"])[1:3] == ["resize_small(448)", "central_crop(384)"]
            continue
        assert image_ops(default_pp_eval(res)) == image_ops(bv["evals"][name]["pp_fn"]), name


def test_finetune_eval_pp_at_224_is_vit_i1k():
    from harness.tasks.imagenet_finetune import default_pp_eval

    for name, ev in BV["vit_i1k"]["evals"].items():
        assert image_ops(default_pp_eval(224)) == image_ops(ev["pp_fn"]), name


def test_finetune_splits_and_datasets_are_big_visions():
    from harness.tasks.imagenet_finetune import FinetuneConfig

    bv, c, imagenet = BV["transfer_imagenet_384"], FinetuneConfig(), data.DATASETS["imagenet2012"]
    assert imagenet.split("minitrain") == bv["train_split"] == BV["vit_i1k"]["train_split"]
    assert imagenet.split("minival") == bv["evals"]["minival"]["split"]
    assert imagenet.split("test") == bv["evals"]["val"]["split"]
    assert (c.real_dataset, data.DATASETS[c.real_dataset].split("test")) == (
        bv["evals"]["real"]["dataset"], bv["evals"]["real"]["split"])
    assert (c.v2_dataset, data.DATASETS[c.v2_dataset].split("test")) == (
        bv["evals"]["v2"]["dataset"], bv["evals"]["v2"]["split"])


def test_finetune_optimiser_follows_transfer_config_where_the_paper_is_silent():
    """The paper's Table 1 recipe overrides lr (0.03), steps (50k) and the loss (sigmoid); the rest is
    big_vision's transfer config: SGD momentum (`big_vision.momentum_hp`), clip 1.0, no wd, cosine with
    500 warm-up steps, batch 512."""
    from harness.tasks.imagenet_finetune import FinetuneConfig

    bv, c = BV["transfer_imagenet_384"], FinetuneConfig()
    assert bv["optax_name"] == "big_vision.momentum_hp" and c.momentum == 0.9
    assert c.grad_clip_norm == bv["grad_clip_norm"]
    assert bv["wd"] is None and not c.weight_decay
    assert bv["schedule"] == {"decay_type": "cosine", "warmup_steps": c.warmup_steps}
    assert c.batch_size == bv["batch_size"]


# ----------------------------------------------------------------------------------------- linear probe
def test_linear_probe_eval_pp_is_the_imagenet_eval_pp():
    from harness.tasks.linear_probe import default_pp

    assert image_ops(default_pp(224)) == image_ops(BV["vit_i1k"]["evals"]["val"]["pp_fn"])


def test_every_default_config_builds():
    # Guard for the comparisons above: they read the same defaults `harness run` uses.
    for name in ("fewshot", "imagenet_finetune", "linear_probe"):
        api.make_config(get_task(name))
