"""Which protocol a result record was made under, and where two records of one column differ.

Two numbers in one report column are comparable only if they were made the same way. Every record holds
its whole task config, the encoder settings, and each dataset's split, example count and pp string, so
`settings(record, metric)` lists the settings that move that metric's value: the task version, every
task setting except those the task declares neutral (what is computed or how fast: dataset lists, shot
lists, inference batch sizes, checkpoint frequency; `Task.neutral_settings`), the encoder's resolution and
matmul dtype, the pp / split / example count of the datasets the metric is about, and protocol facts the
task put in the record's `info` (`PROTOCOL_INFO`, e.g. the text pp a two-tower checkpoint was fed).
`differences` compares one record of a column with the column's others; `harness report` marks such cells
and names the setting with both values, `harness check` names them against the baseline.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping, Sequence
from typing import Any

from harness.report.facts import installed_task

# Settings no task lets change a number (besides each task's own `neutral_settings`).
NEUTRAL_SETTINGS = frozenset({"image_batch_size", "text_batch_size", "eval_batch_size", "ckpt_every",
                              "save_checkpoint"})
# Encoder settings that change a number (the model's shape is the row, not the protocol).
ENCODER_SETTINGS = ("res", "dtype_mm")
# Entries of a record's `info` that are protocol facts (set by the tasks).
PROTOCOL_INFO = ("text_pp", "tokenizer", "prompt_templates", "representation")
ABSENT = "(absent)"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def neutral_settings(task_name: str) -> frozenset[str]:
    """NEUTRAL_SETTINGS plus what the registered task declares (nothing more if it is not installed)."""
    task = installed_task(task_name)
    return NEUTRAL_SETTINGS | frozenset(tuple(getattr(task, "neutral_settings", ()) or ()))


def current_version(task_name: str) -> str | None:
    task = installed_task(task_name)
    return None if task is None else str(task.version)


def _datasets_for(record: Mapping, metric: str | None) -> list[Mapping]:
    entries = [d for d in record.get("datasets") or [] if isinstance(d, Mapping)]
    if metric is None:
        return entries
    parts = set(metric.split("/"))
    named = [d for d in entries if str(d.get("name")) in parts]
    return named or entries


def settings(record: Mapping, metric: str | None = None) -> dict[str, str]:
    """The protocol settings of `record` that can move `metric` (all of the record's, for None), as
    `{setting: value text}`; setting names read as a user would write them."""
    task = record.get("task") or {}
    out = {"task version": _text(task.get("version", ABSENT))}
    neutral = neutral_settings(str(task.get("name", "")))
    for key, value in sorted((task.get("config") or {}).items()):
        if key not in neutral:
            out[f"--set {key}"] = _text(value)
    enc = (record.get("checkpoint") or {}).get("config") or {}
    for key in ENCODER_SETTINGS:
        if key in enc:
            out[f"encoder {key}"] = _text(enc[key])
    for d in _datasets_for(record, metric):
        where = f"{d.get('name')}/{d.get('split')} ({d.get('role', 'eval')})"
        out[f"{where} pp"] = _text(d.get("pp"))
        out[f"{where} examples"] = _text(d.get("num_examples"))
    info = record.get("info") or {}
    for key in PROTOCOL_INFO:
        if key in info:
            value = info[key]
            if key == "tokenizer" and isinstance(value, str):
                value = value.replace("\\", "/").rsplit("/", 1)[-1]  # the model file, wherever it lies
            out[f"info {key}"] = _text(value)
    return out


def differences(mine: Mapping[str, str], others: Sequence[Mapping[str, str]]) -> list[tuple[str, str, str]]:
    """(setting, my value, the others' value) where my settings differ from the column's usual ones.

    For each setting, the usual value is the most common among all cells (mine included); a cell differs
    if its value is not the single most common one, so of two cells that disagree both are marked."""
    out = []
    everyone = [mine, *others]
    for key in sorted(set().union(*everyone)):
        values = [s.get(key, ABSENT) for s in everyone]
        counts = collections.Counter(values)
        top = max(counts.values())
        leaders = [v for v, c in counts.items() if c == top]
        my_value = mine.get(key, ABSENT)
        if len(leaders) == 1 and my_value == leaders[0]:
            continue
        other = [v for v in values[1:] if v != my_value]
        if other:
            usual = collections.Counter(other).most_common(1)[0][0]
            out.append((key, my_value, usual))
    # The task version first: it explains the rest.
    return sorted(out, key=lambda d: d[0] != "task version")


def changed(mine: Mapping[str, str], reference: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(setting, my value, the reference's value) for every setting in which two records differ."""
    keys = sorted(set(mine) | set(reference), key=lambda k: (k != "task version", k))
    return [(k, mine.get(k, ABSENT), reference.get(k, ABSENT)) for k in keys
            if mine.get(k, ABSENT) != reference.get(k, ABSENT)]


def outdated(record: Mapping) -> str | None:
    """A note when the record was made by an older version of its task than the installed one."""
    task = record.get("task") or {}
    now = current_version(str(task.get("name", "")))
    made = task.get("version")
    if now is None or made is None or str(made) == now:
        return None
    return f"made by {task.get('name')} version {made}; the installed task is version {now}"


def describe(diffs: Sequence[tuple[str, str, str]], limit: int = 3) -> str:
    """"setting `a` vs `b`; ..." for notes (values cut to 80 characters)."""
    def cut(v: str) -> str:
        return v if len(v) <= 80 else v[:77] + "..."

    parts = [f"{k} `{cut(a)}` vs `{cut(b)}`" for k, a, b in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"+{len(diffs) - limit} more")
    return "; ".join(parts)
