"""Suites: named lists of (task, preset, settings) entries run on one checkpoint.

Built in: `proxy` (every task on the offline proxies; the README's demo and the CI gate) and `paper` (the
paper's full protocol on real datasets). A user's own suite is a TOML file:

    [[task]]
    name = "fewshot"
    preset = "proxy"            # optional
    set = { shots = "1,5" }     # optional: --set overrides

Each entry becomes one result record; finished records are reused on rerun, so a killed suite resumes at
the first unfinished task.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from harness.errors import HarnessError

PROXY_CKPT = Path(__file__).parent / "assets" / "proxy_sovit.npz"


@dataclasses.dataclass(frozen=True)
class Entry:
    task: str
    preset: str | None = None
    sets: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.sets)
        return f"{self.task}" + (f"[{self.preset}]" if self.preset else "") + (f"({extra})" if extra else "")


SUITES: dict[str, tuple[Entry, ...]] = {
    "proxy": (
        Entry("fewshot", "proxy"),
        Entry("linear_probe", "proxy"),
        Entry("imagenet_finetune", "proxy"),
        Entry("coco_captioning", "proxy"),
        Entry("vqa", "proxy"),
        Entry("lit_zeroshot", "proxy"),
    ),
    "paper": (
        Entry("fewshot"),
        Entry("linear_probe"),
        Entry("imagenet_finetune", None, (("res", "224"),)),
        Entry("imagenet_finetune", None, (("res", "384"),)),
        Entry("imagenet_finetune", None, (("res", "518"),)),
        Entry("coco_captioning"),
        Entry("vqa"),
        Entry("lit_zeroshot"),
    ),
}

DEFAULT_CKPT = {"proxy": str(PROXY_CKPT)}


def load_suite(name_or_path: str) -> tuple[Entry, ...]:
    if name_or_path in SUITES:
        return SUITES[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        import tomllib

        try:
            spec = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise HarnessError(f"suite file {path}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise HarnessError(f"suite file {path}: not valid TOML ({e})") from None
        tasks = spec.get("task")
        if not isinstance(tasks, list) or not tasks:
            raise HarnessError(f"suite file {path}: expected one or more [[task]] tables with a name")
        out = []
        for i, t in enumerate(tasks):
            if not isinstance(t, dict) or "name" not in t:
                raise HarnessError(f"suite file {path}: [[task]] number {i + 1} has no name")
            sets = t.get("set", {})
            if not isinstance(sets, dict):
                raise HarnessError(f"suite file {path}: 'set' of task {t['name']!r} must be a table")
            out.append(Entry(t["name"], t.get("preset"), tuple((k, str(v)) for k, v in sets.items())))
        return tuple(out)
    import difflib
    close = difflib.get_close_matches(name_or_path, SUITES, n=1)
    raise HarnessError(f"unknown suite {name_or_path!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; built in: {', '.join(SUITES)}, or a path to a .toml suite file")


def default_ckpt(suite: str) -> str | None:
    ck = DEFAULT_CKPT.get(suite)
    return ck if ck and os.path.exists(ck) else None
