"""The texts of two-tower evaluation: CLIP's class names and prompt templates (package data in
`harness/assets`), a dataset's class names as the prompts get them, one field of a split read without its
images, and a split's captions.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from harness import ASSETS
from harness.data.pipeline import class_names, iterate
from harness.data.registry import get_info
from harness.data.tokenizer import canonicalize_text
from harness.errors import HarnessError
from harness.progress import Progress

TEMPLATE_SETS = {"clip_paper": "clip_paper_templates.txt", "clip_best": "clip_best_templates.txt"}


def _read_lines(path: Path) -> list[str]:
    return [ln.rstrip("\n") for ln in path.read_text(encoding="utf-8").splitlines()
            if ln.strip() and not ln.startswith("#")]


@functools.cache
def clip_imagenet_class_names() -> tuple[str, ...]:
    names = tuple(_read_lines(ASSETS / "clip_imagenet_class_names.txt"))
    if len(names) != 1000:
        raise HarnessError(f"{ASSETS / 'clip_imagenet_class_names.txt'}: expected 1000 names, found {len(names)}")
    return names


def prompt_templates(name: str) -> list[str]:
    """Canonicalised templates, each with exactly one "{}"."""
    if name == "class_name_only":
        raw = ["{}"]
    elif name in TEMPLATE_SETS:
        raw = _read_lines(ASSETS / TEMPLATE_SETS[name])
    else:
        raise HarnessError(f"prompt_templates {name!r} is not one of class_name_only, {', '.join(TEMPLATE_SETS)}")
    return [canonicalize_text(t, keep="{}") for t in raw]


def class_texts(dataset: str, source: str, data_dir) -> list[str]:
    """Canonicalised class names, first alias only (big_vision's `first_class_name_only`)."""
    if source == "clip" and get_info(dataset).imagenet_labels:
        names = list(clip_imagenet_class_names())
    elif source in ("clip", "dataset"):
        names = class_names(dataset, data_dir)
    else:
        raise HarnessError(f"class_names {source!r} is not one of clip, dataset")
    return [canonicalize_text(n, keep=",").split(",")[0] for n in names]


def read_field(name: str, split: str, key: str, n: int, data_dir, progress: bool) -> list:
    """One (possibly variable-length) field of the first n examples, in split order, without the images."""
    rows = []
    it = iterate(name, split, batch_size=256, pp=f"keep({key!r})", data_dir=data_dir, num_examples=n)
    with Progress(n, f"{key} {name}/{split}", "ex", enabled=progress) as bar:
        for batch in it:
            mask = np.asarray(batch["_mask"], bool)
            values = np.asarray(batch[key])[mask]
            rows.extend(list(values))
            bar.update(int(mask.sum()))
    return rows[:n]


def read_captions(name: str, split: str, n: int, data_dir, per_image: int, progress: bool):
    """(texts, text_image): the captions of the first n images, flattened, and each caption's image."""
    info = get_info(name)
    if not info.text_key:
        raise HarnessError(f"dataset '{name}' has no captions; pick one with captions (coco_captions, proxy_scenes)")
    texts, owner = [], []
    for i, row in enumerate(read_field(name, split, info.text_key, n, data_dir, progress)):
        caps = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in np.atleast_1d(row)]
        caps = [c for c in caps if c]  # b"" is the batch padding of shorter caption lists
        if per_image:
            caps = caps[:per_image]
        texts.extend(caps)
        owner.extend([i] * len(caps))
    return texts, np.asarray(owner, np.int64)


__all__ = ["TEMPLATE_SETS", "class_texts", "clip_imagenet_class_names", "prompt_templates", "read_captions",
           "read_field"]
