"""What our builders from manually placed files share (`vqav2`, `gqa`, `ocrvqa`, `objectnet`): the manual folder,
its JSON files and image files, each failure one line that says what is missing and where it must go.

Nothing here downloads; every path is inside the manual directory TFDS hands the builder
(`--manual-dir`, by default `<data_dir>/downloads/manual/`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from typing import Any

from harness.data.registry import get_info
from harness.errors import HarnessError


def manual_dir(dl_manager, dataset: str, name: str) -> str:
    """The manual directory, or one line naming it when TFDS finds it missing or empty (`dataset` as people
    write it, `name` the builder's)."""
    try:
        return os.fspath(dl_manager.manual_dir)
    except AssertionError as e:  # TFDS's "Manual directory <path> does not exist or is empty"
        where = str(e.args[0]).split(" does not exist")[0]
        raise HarnessError(f"{dataset}: {where} does not exist or is empty; place the official files there "
                           f"as `{name}` MANUAL_DOWNLOAD_INSTRUCTIONS say") from e


def require(root: str, paths: Iterable[str], dataset: str, manual: str) -> None:
    """`harness prepare`'s check before anything is written: one line naming each of `paths` (relative to
    `root`, "name/" a folder) that is missing, and what the dataset needs (the registry's words; `manual` is
    the manual directory)."""
    missing = [p for p in paths if not (os.path.isdir if p.endswith("/") else os.path.isfile)(os.path.join(root, p))]
    if missing:
        raise HarnessError(f"{dataset}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing from "
                           f"{root}/; it needs {get_info(dataset).needs(manual_dir=manual)}")


def dataset_root(manual: str, name: str) -> str:
    """`<manual>/<name>/` when it exists (so that datasets sharing the default manual directory, e.g. GQA's
    and OCR-VQA's `images/`, do not collide), else the manual directory itself (`--manual-dir` pointed at
    the dataset's own folder)."""
    sub = os.path.join(manual, name)
    return sub if os.path.isdir(sub) else manual


def read_json(path: str, dataset: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise HarnessError(f"{dataset} file {path} is not valid JSON ({e}); "
                           "re-extract it from the official download") from e


def require_files(paths: Iterable[str], dataset: str, fix: str) -> None:
    """One line when any of `paths` is missing: how many, the first few, and `fix` (what to do)."""
    paths = list(paths)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:3]) + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
        raise HarnessError(f"{dataset}: {len(missing)} of {len(paths)} image files are missing: {shown}; {fix}")


@functools.lru_cache(maxsize=32)
def read_image(path: str, dataset: str, fix: str) -> bytes:
    """The file's bytes, stored as they are (TFDS keeps given bytes unchanged; the pp's `decode` reads
    JPEG, PNG, GIF and BMP). Builders read questions grouped by image, so a small cache reads each once."""
    if not os.path.isfile(path):
        raise HarnessError(f"{dataset} image {path} is missing; {fix}")
    with open(path, "rb") as f:
        return f.read()
