"""The task adapter contract. A task is one file in `tasks/` that subclasses `Task`.

    class FewShot(Task):
        name = "fewshot"
        Config = FewShotConfig            # a dataclass whose defaults are the paper's protocol
        presets = {"proxy": {...}}        # named overrides; "proxy" runs on the offline proxies
        def metrics(self, config) -> list[Metric]: ...
        def run(self, encoder, data, config) -> dict[str, float]: ...

`run` gets the shared encoder (`harness.encoder.Encoder`), a `RunContext` (data dir, cache, output folder,
and a place to note datasets, per-example scores and artefacts), and the config; it returns metric values.
Register the class under the entry-point group `harness.tasks` (see pyproject.toml).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import HarnessError


@dataclasses.dataclass(frozen=True)
class Metric:
    """Metadata of one reported number."""

    name: str
    higher_is_better: bool = True
    unit: str = "%"  # "%", "raw" (e.g. CIDEr), "nats" (log-perplexity), "seconds", ...
    description: str = ""


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
    # metric's value: `harness report` / `check` ignore them when they compare protocols (harness.protocol).
    neutral_settings: ClassVar[tuple[str, ...]] = ()

    def metrics(self, config) -> list[Metric]:
        raise NotImplementedError

    def run(self, encoder, data: RunContext, config) -> dict[str, float]:
        raise NotImplementedError

    # Encoder settings a task needs (e.g. the resolution it fine-tunes at); merged into load_encoder's config.
    def encoder_overrides(self, config) -> dict:
        return {}


# ------------------------------------------------------------------------------------------ configs
def _coerce(value: str, typ, key: str):
    """Parses a `--set key=value` string into the field's declared type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except HarnessError as e:
                errors.append(str(e))
        raise HarnessError(errors[0] if errors else f"bad value for {key}: {value!r}")
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
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
    except (ValueError, json.JSONDecodeError):
        raise HarnessError(f"--set {key}={value}: expected {getattr(typ, '__name__', typ)}") from None
    return value


def make_config(task: Task, preset: str | None = None, overrides: dict[str, str] | None = None):
    """The task's config: paper defaults, then the preset, then `--set` overrides (strings, parsed)."""
    if preset and preset not in task.presets:
        raise HarnessError(f"task {task.name!r} has no preset {preset!r}; presets: {', '.join(task.presets) or 'none'}")
    fields = {f.name: f for f in dataclasses.fields(task.Config)}
    hints = typing.get_type_hints(task.Config)
    values = dict(task.presets.get(preset, {})) if preset else {}
    for key, raw in (overrides or {}).items():
        if key not in fields:
            import difflib
            close = difflib.get_close_matches(key, fields, n=1)
            raise HarnessError(f"task {task.name!r} has no setting {key!r}"
                               + (f" (did you mean {close[0]!r}?)" if close else "")
                               + f"; settings: {', '.join(fields)}")
        values[key] = _coerce(raw, hints[key], key) if isinstance(raw, str) else raw
    return task.Config(**values)


def config_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=list, sort_keys=True))


def config_hash(config) -> str:
    return hashlib.sha256(json.dumps(config_dict(config), sort_keys=True).encode()).hexdigest()[:16]
