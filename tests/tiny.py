"""The tiny encoders and task settings the tests share (the fixtures built from them are in conftest.py).

A plain module, not conftest.py, because test_sharding's child processes import these settings without
pytest (and without conftest's torch import).
"""

from __future__ import annotations

from pathlib import Path

# The encoder of the end-to-end task tests: 32 px, 8x8 patches (16 tokens), MAP head.
TINY_ENC = dict(width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=8, res=32, pool_type="map")
# The encoder and checkpoint-format unit tests' ViT: 16 px, 4x4 patches (16 tokens); pool set per test.
TINY_VIT = dict(width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=4, res=16)
# The smallest encoder, where only the plumbing matters (CLI, suites, faults, bad inputs); res and pool
# per test.
TINIEST = dict(width=16, depth=1, mlp_dim=32, num_heads=2, patch_size=8)

TINY_DS = "proxy_scenes/tiny"
TINY_DEC = {"decoder_width": "32", "decoder_mlp_dim": "64", "decoder_heads": "2", "total_steps": "8",
            "batch_size": "8", "eval_batch_size": "32", "tokenizer": "proxy", "optimizer": "adam", "lr": "3e-3"}
# Each built-in task's fastest run on proxy_scenes/tiny with TINY_ENC: (preset, --set settings).
# tests/test_contract.py runs every registered task with these, so a new task adds its line here.
TINY_RUNS: dict[str, tuple[str | None, dict[str, str]]] = {
    "fewshot": (None, {"datasets": TINY_DS, "shots": "1,2", "seeds": "0,1", "batch_size": "16"}),
    "linear_probe": (None, {"dataset": TINY_DS, "train_split": "train", "minival_split": "validation",
                            "eval_datasets": "", "lrs": "0.3,0.01", "epochs": "2", "weight_decays": "0",
                            "batch_size": "16", "extract_batch_size": "16"}),
    "imagenet_finetune": (None, {"res": "32", "lr": "0.01", "warmup_steps": "2", "train_steps": "6",
                                 "dataset": TINY_DS, "train_split": "train", "minival_split": "val",
                                 "test_split": "test", "real_dataset": "", "v2_dataset": "", "batch_size": "8",
                                 "eval_batch_size": "32", "ckpt_every": "0"}),
    "coco_captioning": ("proxy", {**TINY_DEC, "dataset": TINY_DS, "target_len": "24"}),
    "vqa": ("proxy", {**TINY_DEC, "datasets": TINY_DS, "prefix_len": "12", "target_len": "4"}),
    "knn": (None, {"datasets": TINY_DS, "ks": "1,3", "batch_size": "16"}),
    "segmentation": ("proxy", {"dataset": TINY_DS, "steps": "6", "warmup_steps": "2", "batch_size": "8",
                               "extract_batch_size": "24"}),
    "depth": ("proxy", {"dataset": TINY_DS, "steps": "6", "warmup_steps": "2", "sigloss_warmup": "2",
                        "batch_size": "8", "extract_batch_size": "24"}),
    "lit_zeroshot": (None, {"train_dataset": TINY_DS, "zeroshot_datasets": TINY_DS, "retrieval_datasets": TINY_DS,
                            "train_steps": "8", "batch_size": "16", "text_width": "32", "text_depth": "1",
                            "text_mlp_dim": "64", "text_num_heads": "4", "max_len": "24",
                            "prompt_templates": "clip_best", "image_batch_size": "24", "ckpt_every": "0"}),
}


def make_task_env(root: Path, seed: int = 0, **encoder) -> dict:
    """A random TINY_ENC checkpoint (`encoder` overrides its settings) saved under `root`, with empty
    data / feature-cache / records folders beside it: the keyword arguments `run_task` needs."""
    # Imported here: test_sharding's children import this module before they configure jax's devices.
    from harness.models.encoder import load_encoder

    ckpt = load_encoder(f"random:{seed}", **{**TINY_ENC, **encoder}).save(str(root / "tiny.npz"))
    return dict(ckpt=ckpt, data_dir=str(root / "tfds"), cache_dir=str(root / "cache"), out=root / "runs")
