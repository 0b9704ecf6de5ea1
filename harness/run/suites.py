"""Suites: named lists of (task, preset, settings) entries run on one checkpoint.

Built in: `proxy` (every task on the offline proxies; the README's demo and the CI gate), `paper` (the
paper's full protocol on real datasets) and `flexi` (few-shot on the proxies at patch sizes 4, 8, 16, 32). A user's own suite is a TOML file:

    ckpt = "path/to/ckpt.npz"   # optional: the default --ckpt (relative to the file)
    [[task]]
    name = "fewshot"
    preset = "proxy"            # optional
    set = { shots = "1,5" }     # optional: --set overrides

Each entry becomes one result record; finished records are reused on rerun, so a killed suite resumes at
the first unfinished task. A `--set` on the command line goes to every entry whose task has that setting
(and an encoder key to all of them).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

from harness import ASSETS, api
from harness.api import Task
from harness.api.registry import get_task
from harness.checkpoints import open_checkpoint
from harness.errors import HarnessError, did_you_mean
from harness.models.encoder import CONFIG_KEYS
from harness.run.distributed import run_task_distributed
from harness.run.runner import Encoders, run_task, split_sets
from harness.schema import read_toml

PROXY_CKPT = ASSETS / "proxy_sovit.npz"


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
        Entry("knn", "proxy"),
        Entry("segmentation", "proxy"),
        Entry("depth", "proxy"),
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
        Entry("knn"),
        Entry("segmentation"),
        Entry("depth"),
    ),
}

# `flexi`: one checkpoint at several patch sizes (FlexiViT's resize of the patch embedding; the paper's
# FlexiSoViT, Section 5.5), few-shot on the proxies; the HTML report plots each metric against the patch size.
SUITES["flexi"] = tuple(Entry("fewshot", "proxy", (("patch_size", str(p)),)) for p in (4, 8, 16, 32))

DEFAULT_CKPT = {"proxy": str(PROXY_CKPT), "flexi": str(PROXY_CKPT)}


_ENTRY_KEYS = {"name", "preset", "set"}


def load_suite(name_or_path: str) -> tuple[Entry, ...]:
    if name_or_path in SUITES:
        return SUITES[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return _read_toml(path)[0]
    raise HarnessError(f"unknown suite {name_or_path!r}{did_you_mean(name_or_path, SUITES)}; built in: "
                       f"{', '.join(SUITES)}, or a path to a .toml suite file")


def _read_toml(path: Path) -> tuple[tuple[Entry, ...], str | None]:
    if not path.exists() and not path.is_symlink():
        raise HarnessError(f"suite file {path}: no such file")
    spec = read_toml(path, what="suite file", fix="see docs/ for the suite format ([[task]] tables with a name)")
    if not (spec.has("task") and spec.raw("task")):
        raise HarnessError(f"suite file {path}: expected one or more [[task]] tables with a name")
    spec.unknown(("ckpt", "task"))
    tasks = spec.list("task")
    out = []
    for t in tasks.entries():
        t.require_obj()
        name = t.str("name", nonempty=True)
        t.unknown(_ENTRY_KEYS)
        sets = t.obj("set", {})
        for key, value in sets.items():
            if not _is_setting(value.value):
                raise value.error("a string, number, true/false or a list of them (a --set value)")
        preset = t.str("preset", None)
        out.append(Entry(name, preset, tuple((k, _toml_value(v)) for k, v in sets.value.items())))
    ckpt = spec.str("ckpt", None)
    if ckpt is not None and not ckpt.startswith("random") and not Path(ckpt).is_absolute():
        ckpt = str(path.parent / ckpt)
    return tuple(out), ckpt


def _toml_value(v) -> str:
    """`--set` strings from TOML values: lists become "1,5", booleans "true"/"false"."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_toml_value(x) for x in v)
    return str(v)


def _is_setting(v) -> bool:
    scalar = (str, int, float, bool)
    return isinstance(v, scalar) or (isinstance(v, list) and all(isinstance(x, scalar) for x in v))


def default_ckpt(suite: str) -> str | None:
    """The checkpoint a suite runs on without --ckpt: the committed proxy SoViT for `proxy`, or a suite
    file's own `ckpt`."""
    if suite in SUITES:
        ck = DEFAULT_CKPT.get(suite)
        return ck if ck and os.path.exists(ck) else None
    return _read_toml(Path(suite))[1]


@dataclasses.dataclass
class Planned:
    """One entry to run: its task (looked up once, here), preset and `--set` values (the task's settings
    and encoder keys); `load_error` when the task's module does not load (the entry fails when its turn
    comes, the others still run)."""

    task_name: str
    preset: str | None
    sets: dict[str, str]
    task: Task | None = None
    load_error: Exception | None = None

    @property
    def label(self) -> str:
        return self.task_name + (f"[{self.preset}]" if self.preset else "")


def plan(entries: tuple[Entry, ...], cli_sets: dict[str, str]) -> list[Planned]:
    """Each entry with its own settings, then each command-line `--set` that its task (or the encoder)
    takes. Every entry's settings are checked before the first one runs (a bad one would otherwise fail
    only when its turn comes, and once per entry that takes it); a key no task of the suite takes is an
    error too."""
    planned = []
    for e in entries:
        p = Planned(e.task, e.preset, dict(e.sets))
        try:
            p.task = get_task(e.task)
        except Exception as err:  # noqa: BLE001 - a task module that does not import fails as its own entry
            p.load_error = err
        planned.append(p)
    fields = {id(p): {f.name for f in dataclasses.fields(p.task.Config)} if p.task else set() for p in planned}
    known = set(CONFIG_KEYS).union(*fields.values())
    for key in cli_sets:
        if key not in known:
            raise HarnessError(f"--set {key}: no task of the suite has that setting, and it is not an encoder key"
                               + did_you_mean(key, known))
    for i, p in enumerate(planned):
        p.sets.update({k: v for k, v in cli_sets.items() if k in CONFIG_KEYS or k in fields[id(p)]})
        where = f"suite entry {i + 1}/{len(planned)} {p.label}"
        if isinstance(p.load_error, HarnessError):
            raise HarnessError(f"{where}: {p.load_error}") from None
        if p.task is None:
            continue
        try:
            task_sets, _ = split_sets(p.task, p.sets)
            api.make_config(p.task, p.preset, task_sets)
        except HarnessError as e:
            message = str(e).removeprefix(f"{p.task_name}: ")  # the entry already names the task
            raise HarnessError(f"{where}: {message}") from None
    return planned


@dataclasses.dataclass
class Outcome:
    """What became of one entry: its record (and where it is, whether it was reused), or the error."""

    index: int
    label: str
    record: dict | None = None
    path: Path | None = None
    reused: bool = False
    seconds: float = 0.0
    error: Exception | None = None


def run_entries(entries: list[Planned], ckpt: str | None, *, encoder_config: dict | None = None,
                keep_going: bool = False, distributed: bool = False, **run_kw) -> Iterator[Outcome]:
    """Runs the entries in order on one checkpoint, one loaded encoder shared by consecutive entries
    that take the same encoder config; yields each one's outcome. With `keep_going` (a suite) a failed
    entry (a missing dataset, a task module that does not import) is an outcome and the next one runs, so
    one problem does not cost the other tasks; without it the error is raised. `distributed`: every
    process of a `jax.distributed` run computes each entry, process 0 writes its record."""
    encoders = Encoders()
    if not keep_going:  # one entry (`harness run --task`): its task and settings are checked before the checkpoint
        for p in entries:
            if p.task is None and p.load_error is None:
                p.task = get_task(p.task_name)
            if p.task is not None:
                api.make_config(p.task, p.preset, split_sets(p.task, p.sets)[0])
    # One handle for every entry: the checkpoint is detected and hashed once, each array read once.
    handle = open_checkpoint(ckpt) if ckpt and not str(ckpt).startswith("random") else ckpt
    try:
        yield from _run_each(entries, handle, encoders, encoder_config, keep_going, distributed, run_kw)
    finally:
        if handle is not ckpt:
            handle.close()


def _run_each(entries, ckpt, encoders, encoder_config, keep_going, distributed, run_kw) -> Iterator[Outcome]:
    for i, p in enumerate(entries):
        t0 = time.perf_counter()
        try:
            if p.load_error is not None:
                raise p.load_error
            task = p.task or p.task_name
            kw = dict(preset=p.preset, sets=p.sets, encoder_config=encoder_config, encoders=encoders, **run_kw)
            if distributed:  # every process computes, process 0 writes; a failure stops every process
                kw.pop("cache_dir", None), kw.pop("force", None)  # fresh caches, never a reused record
                record, path = run_task_distributed(task, ckpt, **kw)
                reused = False
            else:
                record, path, reused = run_task(task, ckpt, **kw)
        except Exception as e:
            if not keep_going:
                raise
            yield Outcome(i, p.label, error=e)
            continue
        yield Outcome(i, p.label, record, path, reused, time.perf_counter() - t0)
