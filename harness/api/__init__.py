"""The task adapter contract. A task is one file in `tasks/` that subclasses `Task`.

    class FewShot(Task):
        name = "fewshot"
        Config = FewShotConfig            # a dataclass whose defaults are the paper's protocol
        presets = {"proxy": {...}}        # named overrides; "proxy" runs on the offline proxies
        def metrics(self, config) -> list[Metric]: ...
        def run(self, encoder, data, config) -> dict[str, float]: ...

`run` gets the shared encoder (`harness.models.encoder.Encoder`), a `RunContext` (data dir, cache, output folder,
and a place to note datasets, per-example scores and artefacts), and the config; it returns metric values.
Register the class under the entry-point group `harness.tasks` (see pyproject.toml).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import HarnessError, did_you_mean


@dataclasses.dataclass(frozen=True)
class Metric:
    """Metadata of one reported number."""

    name: str
    higher_is_better: bool = True
    unit: str = "%"  # "%", "raw" (e.g. CIDEr), "nats" (log-perplexity), "seconds", ...
    description: str = ""
    # run() may leave it out (a number of a step that not every run takes); every other declared metric
    # must be returned, and nothing undeclared (the runner checks both).
    optional: bool = False


@dataclasses.dataclass
class RunContext:
    """Everything a task needs besides the encoder and its config."""

    data_dir: str | None
    cache_dir: Path
    out_dir: Path  # artefacts of this run (predictions, fine-tuned checkpoints) go below it
    seed: int = 0
    progress: bool = True
    datasets: list[dict] = dataclasses.field(default_factory=list)
    per_example: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def note_dataset(self, name: str, split: str, num_examples: int, pp: str | None = None, role: str = "eval"):
        self.datasets.append(dict(name=name, split=split, num_examples=int(num_examples), pp=pp, role=role))

    def note_per_example(self, metric: str, values):
        """Per-example scores whose mean is `metric`: reports derive bootstrap intervals from them."""
        self.per_example[metric] = [float(v) for v in values]

    def note_artifact(self, name: str, path: str | Path):
        self.artifacts[name] = str(path)


class Task:
    """Base class of task adapters; see the module docstring."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    Config: ClassVar[type] = object
    presets: ClassVar[dict[str, dict]] = {}
    # Settings that choose what is computed or how fast (dataset lists, an extraction batch size), never a
    # metric's value: `harness report` / `check` ignore them when they compare protocols (harness.report.protocol).
    neutral_settings: ClassVar[tuple[str, ...]] = ()
    # How `harness report` shows the task (harness.report.facts): the caption of its table; its place in
    # the paper, (table number, position in that table), None placing it after the paper's tasks by name;
    # and its metric leaves in the order of the paper's columns (datasets follow harness.data's
    # PAPER_DATASET_ORDER; other parts sort by name).
    report_title: ClassVar[str] = ""
    report_order: ClassVar[tuple[int, int] | None] = None
    report_columns: ClassVar[tuple[str, ...]] = ()

    def metrics(self, config) -> list[Metric]:
        raise NotImplementedError

    def run(self, encoder, data: RunContext, config) -> dict[str, float]:
        raise NotImplementedError

    # Encoder settings a task needs (e.g. the resolution it fine-tunes at); merged into load_encoder's config.
    def encoder_overrides(self, config) -> dict:
        return {}

    # The config with settings that depend on the loaded encoder filled in (e.g. a resolution of 0, "the
    # encoder's"); `run()` and `metrics()` get this one, the record keeps the config as it was asked for.
    def resolve_config(self, config, encoder):
        return config


# ------------------------------------------------------------------------------------------ configs
def _type_words(typ) -> str:
    """How a setting's type reads in an error: "an integer", "a comma-separated list of numbers", ..."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (tuple, list):
        inner = _type_words(args[0] if args else str).split(" ", 1)[-1]
        return f"a comma-separated list of {inner}s"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        words = [_type_words(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or none" if type(None) in args else "")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        typ, getattr(typ, "__name__", str(typ)))


# The words a `--set` true/false value may be (task settings and encoder keys alike).
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _coerce(value: str, typ, key: str):
    """Parses a `--set key=value` string into the field's declared type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except HarnessError:
                pass
        raise HarnessError(f"--set {key}={value}: expected {_type_words(typ)}")
    try:
        if typ is bool:
            if value.lower() in TRUE_WORDS:
                return True
            if value.lower() in FALSE_WORDS:
                return False
            raise ValueError(value)
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return value
        if origin in (tuple, list):
            items = [v.strip() for v in value.strip("()[]").split(",") if v.strip()]
            inner = args[0] if args else str
            return (tuple if origin is tuple else list)(_coerce(v, inner, key) for v in items)
        if origin is dict or typ is dict:
            return json.loads(value)
    except (ValueError, json.JSONDecodeError, HarnessError):
        raise HarnessError(f"--set {key}={value}: expected {_type_words(typ)}") from None
    return value


def make_config(task: Task, preset: str | None = None, overrides: dict[str, str] | None = None):
    """The task's config: paper defaults, then the preset, then `--set` overrides (strings, parsed), then
    `validate_config`: a setting that would make garbage is an error here, before any data is read."""
    if preset and preset not in task.presets:
        raise HarnessError(f"task {task.name!r} has no preset {preset!r}; presets: {', '.join(task.presets) or 'none'}")
    fields = {f.name: f for f in dataclasses.fields(task.Config)}
    hints = typing.get_type_hints(task.Config)
    values = dict(task.presets.get(preset, {})) if preset else {}
    for key, raw in (overrides or {}).items():
        if key not in fields:
            raise HarnessError(f"task {task.name!r} has no setting {key!r}{did_you_mean(key, fields)}; "
                               f"settings: {', '.join(fields)}")
        values[key] = _coerce(raw, hints[key], key) if isinstance(raw, str) else raw
    config = task.Config(**values)
    validate_config(config, task.name)
    return config


# --------------------------------------------------------------------------------------- validation
def shown(value) -> str:
    """A setting's value as one would write it after `--set key=`."""
    if isinstance(value, (tuple, list)):
        return ",".join(shown(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def bad_setting(name: str, value, allowed: str) -> HarnessError:
    """The one-line error for a setting: which, its value, what is allowed."""
    return HarnessError(f"setting {name}={shown(value)} {allowed}")


def check_range(config, name: str, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
                allow: tuple = ()) -> None:
    """Every value of setting `name` (a number or a list of numbers) lies in [low, high] (an open end with
    `*_open`); values in `allow` (e.g. 0 for "off", None for "the paper's choice") pass as they are."""
    if not hasattr(config, name):  # a field renamed or removed since the rule was written: moot
        return
    value = getattr(config, name)
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
        if v in allow:
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (low is None or (v > low if low_open else v >= low))
        ok = ok and (high is None or (v < high if high_open else v <= high))
        if not ok:
            parts = []
            if low is not None:
                parts.append(f"{'>' if low_open else '>='} {low}")
            if high is not None:
                parts.append(f"{'<' if high_open else '<='} {high}")
            extra = "".join(f" or {shown(a) if a is not None else 'none'}" for a in allow)
            each = "each value " if isinstance(value, (tuple, list)) else ""
            got = f" (got {shown(v)})" if isinstance(value, (tuple, list)) else ""
            raise bad_setting(name, value, f"is out of range{got}: {each}must be {' and '.join(parts)}{extra}")


def check_choice(config, name: str, choices) -> None:
    """Setting `name` (or each of its values) is one of `choices`."""
    if not hasattr(config, name):  # a field renamed or removed since the rule was written: moot
        return
    value = getattr(config, name)
    for v in (value if isinstance(value, (tuple, list)) else (value,)):
        if v not in choices:
            raise bad_setting(name, value, f"is not one of {', '.join(shown(c) for c in choices)}")


def check_unique(config, name: str) -> None:
    """No value twice in list setting `name` (metric names are made from them and would collide)."""
    if not hasattr(config, name):  # a field renamed or removed since the rule was written: moot
        return
    value = getattr(config, name)
    twice = sorted({shown(v) for v in value if list(value).count(v) > 1})
    if twice:
        raise bad_setting(name, value, f"lists {', '.join(twice)} more than once; give each value once")


def check_pp(config, name: str) -> None:
    """Setting `name` is empty (the task's default) or a pp string that parses (no data is touched)."""
    if not hasattr(config, name):  # a field renamed or removed since the rule was written: moot
        return
    value = getattr(config, name)
    if value:
        from harness.data.pp import Preprocess

        try:
            Preprocess(value)
        except HarnessError as e:
            raise HarnessError(f"setting {name}: {e}") from None


def _float_values(value, typ) -> list:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is float:
        return [value]
    if origin in (tuple, list) and args and args[0] is float:
        return list(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and float in args:
        return [value] if isinstance(value, float) else []
    return []


def validate_config(config, task_name: str = "") -> None:
    """Generic checks from the type hints, then the Config's own `validate()` rules.

    Generic: a list setting may not be empty (a Config names the lists where empty means "none" in its
    `may_be_empty` attribute), and no float may be NaN or infinite. Each error is one line naming the task,
    the setting and what is allowed."""
    hints = typing.get_type_hints(type(config))
    may_be_empty = set(getattr(config, "may_be_empty", ()))
    prefix = f"{task_name}: " if task_name else ""
    try:
        for f in dataclasses.fields(config):
            value, typ = getattr(config, f.name), hints.get(f.name)
            if typing.get_origin(typ) in (tuple, list) and isinstance(value, (tuple, list)) and not value \
                    and f.name not in may_be_empty:
                example = f" (e.g. {f.name}={shown(f.default[:3])})" if isinstance(f.default, (tuple, list)) \
                    and f.default else ""
                raise bad_setting(f.name, value, f"is empty; give at least one value{example}")
            for v in _float_values(value, typ):
                if isinstance(v, (int, float)) and not math.isfinite(v):
                    default = "" if f.default is dataclasses.MISSING else f" (default {shown(f.default)})"
                    raise bad_setting(f.name, value, f"is not a finite number; give a finite value{default}")
        own = getattr(config, "validate", None)
        if callable(own):
            own()
    except HarnessError as e:
        raise HarnessError(prefix + str(e)) from None


def config_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=list, sort_keys=True))


def config_hash(config, encoder: dict | None = None) -> str:
    """The hash in a record's key: of the task config (`config_dict`) alone, or with the encoder settings
    when there are any (the same weights at another resolution make another record)."""
    obj = {"task": config_dict(config), "encoder": encoder} if encoder else config_dict(config)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:16]
