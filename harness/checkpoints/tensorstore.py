"""big_vision tensorstore checkpoints: a folder `checkpoint.bv-<step>` of one zarr array per leaf ("/" in
a leaf's name written as "~"), and `<path>-LAST` naming the newest step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorstore as ts

from harness.checkpoints.layout import text_tower, unwrap
from harness.errors import HarnessError, first_line


def detect(path: Path) -> bool:
    if path.is_dir():
        return any("~" in p.name for p in path.iterdir())
    # big_vision writes `<path>-LAST` naming the newest `<path>-<step>` folder.
    return not path.exists() and Path(f"{path}-LAST").exists()


def read_tensorstore(path: Path, prefix: str = "params/") -> dict[str, np.ndarray]:
    last = Path(f"{path}-LAST")
    if not path.is_dir() and last.exists():
        path = Path(f"{path}-{last.read_text().strip()}")
    out = {}
    for entry in sorted(path.iterdir()):
        name = entry.name.replace("~", "/")
        if prefix and not name.startswith(prefix):
            continue
        try:
            arr = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(entry)}},
                          open=True).result().read().result()
        except Exception as e:  # tensorstore raises ValueError with a long status message
            raise HarnessError(f"checkpoint {path}: cannot read array {entry.name} "
                               f"({first_line(e, 200)}); the folder may be incomplete") from None
        out[name] = np.asarray(arr)
    if not out:
        raise HarnessError(f"checkpoint {path}: no '{prefix}*' arrays in this tensorstore folder")
    return out


def read_image(path: Path, subtree: str | None) -> tuple[dict, dict]:
    return unwrap(read_tensorstore(path), subtree, path=path), {}


def read_text(path: Path) -> dict | None:
    flat = unwrap(read_tensorstore(path), None, path=path)
    return text_tower({k: v for k, v in flat.items() if k.startswith("txt/") or k in ("t", "b")},
                      path=path, fmt="tensorstore")
