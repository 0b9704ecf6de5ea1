"""The task adapter contract. A task is one file in `tasks/` that subclasses `Task`.

    class FewShot(Task):
        name = "fewshot"
        Config = FewShotConfig            # a dataclass whose defaults are the paper's protocol
        presets = {"proxy": {...}}        # named overrides; "proxy" runs on the offline proxies
        def metrics(self, config) -> list[Metric]: ...
        def run(self, encoder, ctx, config) -> dict[str, float]: ...

`run` gets the shared encoder (`harness.models.encoder.Encoder`), a `RunContext` (data dir, feature cache,
output folder; `ctx.extract(...)` for encoder features; places to note datasets, per-example scores and
outputs (`ctx.note_samples`), artefacts and timings), and the config; it returns metric values named by `metric_name` (the same helper
builds the names `metrics()` declares). Settings are parsed and checked with `harness.settings`' helpers,
re-exported here. Register the class under the entry-point group `harness.tasks` (see pyproject.toml).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import HarnessError, did_you_mean
from harness.settings import (
    FALSE_WORDS,
    TRUE_WORDS,
    bad_setting,
    check_batch_sizes,
    check_choice,
    check_pp,
    check_range,
    check_unique,
    coerce,
    config_dict,
    config_hash,
    shown,
)


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
    """Everything a task needs besides the encoder and its config: where data, the feature cache and the
    run's artefacts are, and the notes that go into the record (datasets read, per-example scores,
    artefacts, timings, free-form info) and beside it (`note_samples`: what was predicted per example).
    `extract` is the one way a task reads encoder features."""

    data_dir: str | None
    cache_dir: Path
    out_dir: Path  # artefacts of this run (predictions, fine-tuned checkpoints) go below it
    seed: int = 0
    progress: bool = True
    datasets: list[dict] = dataclasses.field(default_factory=list)
    per_example: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds, by what they measure
    extractions: list[dict] = dataclasses.field(default_factory=list)  # one entry per `extract` call
    samples: list = dataclasses.field(default_factory=list)  # `harness.eval.samples.SampleSet`s, in order

    def extract(self, encoder, dataset: str, split: str, *, pp: str, representations: tuple[str, ...] = ("pre_logits",),
                keys: tuple[str, ...] = ("label",), batch_size: int = 64, num_examples: int | None = None,
                dtype: str = "float32", role: str | None = "eval") -> dict:
        """The encoder's `representations` (and the per-example `keys`) of a split's first `num_examples`
        examples (None or 0: all) under `pp`, through the feature cache (`harness.eval.features.extract`):
        computed once, shown as progress, timed, and noted as a dataset of this run under `role` (None: the
        caller notes the split itself)."""
        from harness.eval import features  # numpy and the data pipeline: not for `harness ls` / `report`

        arrays = features.extract(encoder, dataset, split, pp=pp, cache_dir=self.cache_dir, data_dir=self.data_dir,
                                  representations=tuple(representations), keys=tuple(keys), batch_size=batch_size,
                                  num_examples=num_examples or None, dtype=dtype, progress=self.progress,
                                  log=self.extractions)
        if role is not None:
            self.note_dataset(dataset, split, len(arrays["index"]), pp, role=role)
        return arrays

    def note_dataset(self, name: str, split: str, num_examples: int, pp: str | None = None, role: str = "eval"):
        self.datasets.append(dict(name=name, split=split, num_examples=int(num_examples), pp=pp, role=role))

    def note_per_example(self, metric: str, values):
        """Per-example scores whose mean is `metric`: reports derive bootstrap intervals from them."""
        self.per_example[metric] = [float(v) for v in values]

    def note_samples(self, dataset: str, split: str, *, targets, predictions, index=None, ids=None,
                     name: str | None = None):
        """What was predicted for each example of `dataset`/`split` (one evaluated split in one role; `name`,
        default "<dataset>/<split>", tells apart two uses of one split): the examples' `targets` and
        `predictions` (JSON-able: a class with its top-5, `harness.eval.samples.top_classes`; a text; retrieved
        ids), their positions in the split (`index`, the feature cache's) and, where the dataset has its own,
        their `ids` (COCO image id, VQA question id; default: the TFDS ids of `index`). Returns the set;
        declare each metric computed from it with `.score(metric, rule, per_example_scores, **args)`
        (`harness.eval.samples.RULES`), e.g.

            ctx.note_samples(ds, split, index=feats["index"], targets=labels,
                             predictions=top_classes(logits)).score(name, "top1", correct * 100)

        The runner writes every set into `<record>.samples.jsonl.gz` beside the record."""
        from harness.eval.samples import SampleSet  # numpy: not for `harness ls` / `report`

        taken = {s.name for s in self.samples}
        name = name or f"{dataset}/{split}"
        name = next(f"{name}#{i}" for i in range(2, len(taken) + 3) if f"{name}#{i}" not in taken) \
            if name in taken else name  # one split read twice (a minival that is the test split)
        samples = SampleSet(name, dataset, split, targets=list(targets),
                            predictions=list(predictions), index=None if index is None else list(index),
                            ids=None if ids is None else list(ids))
        self.samples.append(samples)
        return samples

    def note_artifact(self, name: str, path: str | Path):
        self.artifacts[name] = str(path)

    def add_time(self, name: str, seconds: float):
        """Adds `seconds` to the timing `name` (e.g. "probe_seconds"), recorded with the run's own."""
        self.timings[name] = self.timings.get(name, 0.0) + float(seconds)

    def record_timings(self) -> dict[str, float]:
        """The task's timings, with the feature extractions' total."""
        return {**self.timings, "extract_seconds": sum(e["seconds"] for e in self.extractions)}


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
    # Whether the task reads images only through `RunContext.extract` (the pp of a NaFlex encoder, whose images
    # are patch sequences, is then the encoder's own: `Encoder.image_pp`); the runner refuses a NaFlex encoder
    # for any other task.
    naflex_inputs: ClassVar[bool] = False

    def metrics(self, config) -> list[Metric]:
        raise NotImplementedError

    def run(self, encoder, ctx: RunContext, config) -> dict[str, float]:
        raise NotImplementedError

    def metric_name(self, *parts) -> str:
        """`<task>/<part>/...`: the one place a task's metric names are made, for `metrics()` and `run()`."""
        return "/".join([self.name, *(str(p) for p in parts)])

    # Encoder settings a task needs (e.g. the resolution it fine-tunes at); merged into load_encoder's config.
    def encoder_overrides(self, config) -> dict:
        return {}

    # The config with settings that depend on the loaded encoder filled in (e.g. a resolution of 0, "the
    # encoder's"); `run()` and `metrics()` get this one, the record keeps the config as it was asked for.
    def resolve_config(self, config, encoder):
        return config


# ------------------------------------------------------------------------------------------ configs
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
        values[key] = coerce(raw, hints[key], key) if isinstance(raw, str) else raw
    config = task.Config(**values)
    validate_config(config, task.name)
    return config


# --------------------------------------------------------------------------------------- validation
def _float_values(value, typ) -> list:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if typ is float:
        return [value]
    if origin in (tuple, list) and args and args[0] is float:
        return list(value)
    if origin in (typing.Union, types.UnionType) and float in args:
        return [value] if isinstance(value, float) else []
    return []


def validate_config(config, task_name: str = "") -> None:
    """Generic checks from the type hints, then the Config's own `validate()` rules.

    Generic: a list setting may not be empty (a Config names the lists where empty means "none" in its
    `may_be_empty` attribute), no float may be NaN or infinite, and no batch size may exceed
    `settings.MAX_BATCH_SIZE` (`check_batch_sizes`). Each error is one line naming the task,
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
        check_batch_sizes(config)
        own = getattr(config, "validate", None)
        if callable(own):
            own()
    except HarnessError as e:
        raise HarnessError(prefix + str(e)) from None


__all__ = ["FALSE_WORDS", "TRUE_WORDS", "Metric", "RunContext", "Task", "bad_setting", "check_choice", "check_pp",
           "check_range", "check_unique", "config_dict", "config_hash", "make_config", "shown", "validate_config"]
