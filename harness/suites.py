"""Suites: named lists of (task, preset, settings) entries run on one checkpoint.

Built in: `proxy` (every task on the offline proxies; the README's demo and the CI gate) and `paper` (the
paper's full protocol on real datasets). A user's own suite is a TOML file:

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


_ENTRY_KEYS = {"name", "preset", "set"}


def load_suite(name_or_path: str) -> tuple[Entry, ...]:
    if name_or_path in SUITES:
        return SUITES[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return _read_toml(path)[0]
    import difflib
    close = difflib.get_close_matches(name_or_path, SUITES, n=1)
    raise HarnessError(f"unknown suite {name_or_path!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; built in: {', '.join(SUITES)}, or a path to a .toml suite file")


def _read_toml(path: Path) -> tuple[tuple[Entry, ...], str | None]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser as a package
        try:
            import tomli as tomllib
        except ImportError:
            raise HarnessError("suite files need Python 3.11+ (tomllib) or `pip install tomli`") from None

    try:
        spec = tomllib.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise HarnessError(f"suite file {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise HarnessError(f"suite file {path}: not valid TOML ({e})") from None
    tasks = spec.get("task")
    if not isinstance(tasks, list) or not tasks:
        raise HarnessError(f"suite file {path}: expected one or more [[task]] tables with a name")
    out = []
    for i, t in enumerate(tasks):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise HarnessError(f"suite file {path}: [[task]] number {i + 1} has no name")
        unknown = set(t) - _ENTRY_KEYS
        if unknown:
            raise HarnessError(f"suite file {path}: task {t['name']!r} has unknown key(s) {', '.join(sorted(unknown))}; "
                               f"a [[task]] takes {', '.join(sorted(_ENTRY_KEYS))}")
        sets = t.get("set", {})
        if not isinstance(sets, dict):
            raise HarnessError(f"suite file {path}: 'set' of task {t['name']!r} must be a table")
        preset = t.get("preset")
        if preset is not None and not isinstance(preset, str):
            raise HarnessError(f"suite file {path}: 'preset' of task {t['name']!r} must be a string")
        out.append(Entry(t["name"], preset, tuple((k, _toml_value(v)) for k, v in sets.items())))
    ckpt = spec.get("ckpt")
    if ckpt is not None:
        if not isinstance(ckpt, str):
            raise HarnessError(f"suite file {path}: 'ckpt' must be a string (a checkpoint spec)")
        if not ckpt.startswith("random") and not Path(ckpt).is_absolute():
            ckpt = str(path.parent / ckpt)
    return tuple(out), ckpt


def _toml_value(v) -> str:
    """`--set` strings from TOML values: lists become "1,5", booleans "true"/"false"."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_toml_value(x) for x in v)
    return str(v)


def default_ckpt(suite: str) -> str | None:
    """The checkpoint a suite runs on without --ckpt: the committed proxy SoViT for `proxy`, or a suite
    file's own `ckpt`."""
    if suite in SUITES:
        ck = DEFAULT_CKPT.get(suite)
        return ck if ck and os.path.exists(ck) else None
    return _read_toml(Path(suite))[1]


def entry_settings(entries: tuple[Entry, ...], cli_sets: dict[str, str]) -> list[tuple[str, str | None, dict]]:
    """(task, preset, settings) per entry: the entry's own settings, then each command-line `--set` that
    its task (or the encoder) takes. A key no task of the suite takes is an error before anything runs."""
    import dataclasses

    from harness.encoder import CONFIG_KEYS
    from harness.registry import get_task

    fields: dict[str, set[str]] = {}
    for e in entries:
        try:
            fields[e.task] = {f.name for f in dataclasses.fields(get_task(e.task).Config)}
        except Exception:  # a task that cannot load fails as its own entry when the suite runs
            fields[e.task] = set()
    known = set(CONFIG_KEYS).union(*fields.values())
    for key in cli_sets:
        if key not in known:
            import difflib
            close = difflib.get_close_matches(key, known, n=1)
            raise HarnessError(f"--set {key}: no task of the suite has that setting, and it is not an encoder key"
                               + (f" (did you mean {close[0]!r}?)" if close else ""))
    out = []
    for e in entries:
        sets = dict(e.sets)
        sets.update({k: v for k, v in cli_sets.items() if k in CONFIG_KEYS or k in fields[e.task]})
        out.append((e.task, e.preset, sets))
    return out
