"""Writes tests/data/bv_configs.json: protocol settings read off big_vision's own config functions.

Not part of the harness and not run by the tests: it needs big_vision (not on PyPI) on PYTHONPATH and a
scratch virtualenv with ml_collections (see tests/data/README.md). It holds no big_vision code: it calls
the `get_config` / helper functions of big_vision's configs and records the values they return, so that
`tests/test_faithfulness.py` can check every harness default that follows big_vision against big_vision
itself rather than against a copy typed by hand.

    PYTHONPATH=/tmp/bv/big_vision /tmp/bv/venv/bin/python tests/data/make_bv_config_fixtures.py \
        --big_vision /tmp/bv/big_vision
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess


def _plain(value):
    """ConfigDict / tuples -> JSON-able plain values (callables are left out)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def fewshot() -> dict:
    from big_vision.configs import common_fewshot

    c = common_fewshot.get_fewshot_lsr()
    return {k: _plain(c[k]) for k in ("representation_layer", "shots", "l2_reg", "num_seeds", "pp_train",
                                      "pp_eval", "datasets")}


def vit_i1k() -> dict:
    """ImageNet training / evaluation of a 224 px ViT (`configs/vit_i1k.py`)."""
    from big_vision.configs import vit_i1k

    c = vit_i1k.get_config()
    return {"train_split": c.input.data.split, "train_pp": c.input.pp,
            "evals": {name: {"dataset": e.data.name, "split": e.data.split, "pp_fn": e.pp_fn}
                      for name, e in c.evals.items() if name in ("minival", "val", "v2", "real")}}


def transfer(arg: str) -> dict:
    """The fine-tuning ("adaptation") config (`configs/transfer.py`) for ImageNet."""
    from big_vision.configs import transfer as tr

    c = tr.get_config(arg)
    return {"arg": arg, "train_split": c.input.data.split, "train_pp": c.input.pp,
            "optax_name": c.optax_name, "grad_clip_norm": c.grad_clip_norm, "wd": c.get("wd"), "lr": c.lr,
            "loss": c.loss, "mixup": _plain(c.mixup), "total_steps": c.total_steps,
            "schedule": _plain(c.schedule), "batch_size": c.input.batch_size,
            "evals": {name: {"dataset": e.data.name, "split": e.data.split, "pp_fn": e.pp_fn}
                      for name, e in c.evals.items()}}


def image_text() -> dict:
    """Zero-shot classification / retrieval evaluator settings (`configs/proj/image_text/common.py`)."""
    from big_vision.configs.proj.image_text import common

    out = {}
    for sz in (224, 384):
        c = common.get_disclf(sz, dataset_names=("imagenet2012", "imagenet2012_real", "imagenet_v2",
                                                 "imagenet_a", "imagenet_r", "cifar100", "oxford_iiit_pet"))
        out[f"disclf_{sz}"] = {"pp_img": c.pp_img, "dataset_overrides": _plain(c.dataset_overrides)}
    coco = common.get_coco()
    out["coco_retrieval"] = {"pp_img": coco.pp_img, "pp_txt": coco.pp_txt, "dataset": coco.dataset,
                             "txt_name": list(coco.txt_name)}
    return out


def imagenet_label_sets() -> dict:
    """The ImageNet-1k ids of ImageNet-A's and ImageNet-R's 200 classes (`datasets/imagenet/class_names.py`)."""
    from big_vision.datasets.imagenet import class_names

    return {"imagenet_a": list(class_names.IMAGENET_A_LABELSET), "imagenet_r": list(class_names.IMAGENET_R_LABELSET)}


def siglip_lit_coco() -> dict:
    """The public SigLIP-style LiT config on COCO (`configs/proj/image_text/siglip_lit_coco.py`)."""
    from big_vision.configs.proj.image_text import siglip_lit_coco as lit

    c = lit.get_config()
    return {"optax_name": c.optax_name, "lr": c.lr, "wd": c.wd, "grad_clip_norm": c.grad_clip_norm,
            "schedule": _plain(c.schedule), "total_steps": c.total_steps, "batch_size": c.input.batch_size,
            "temperature_init": c.model.temperature_init, "bias_init": c.model.bias_init,
            "train_pp": c.input.pp, "init_shapes": _plain(c.init_shapes)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big_vision", required=True, help="big_vision checkout (also on PYTHONPATH)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "bv_configs.json"))
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", args.big_vision, "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    doc = {
        "big_vision_commit": commit,
        "made_by": "tests/data/make_bv_config_fixtures.py",
        "fewshot": fewshot(),
        "vit_i1k": vit_i1k(),
        "transfer_imagenet_384": transfer("model=vit-i21k-augreg-l/16,dataset=imagenet2012,crop=inception_crop"),
        "transfer_imagenet_224": transfer("model=vit-i21k-augreg-l/16,dataset=imagenet2012,crop=inception_crop,h_res=256,l_res=224"),
        "image_text": image_text(),
        "imagenet_label_sets": imagenet_label_sets(),
        "siglip_lit_coco": siglip_lit_coco(),
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
