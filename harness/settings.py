"""Settings: a task's `--set key=value` strings parsed into its Config's declared types, and the rules a
Config's `validate()` states about its values (ranges, choices, no duplicates, pp strings that parse).

Every broken rule is one `HarnessError` line naming the setting, its value and what is allowed; a rule about a
setting the Config does not have is a bug in the rule (a typo would otherwise skip the check silently) and
raises `AttributeError`. The config hash that names result records is here too. Used by the task contract
(`harness.api`, which re-exports these) and by shared settings below it (`harness.train.decoder`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing

from harness.errors import HarnessError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
_UNIONS = (typing.Union, types.UnionType)


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


def _setting(config, name: str):
    if not hasattr(config, name):
        raise AttributeError(f"{type(config).__name__} has no setting {name!r}: the rule names a setting "
                             "that does not exist (a typo, or a field renamed since)")
    return getattr(config, name)


def _values(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def check_range(config, name: str, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
                allow: tuple = ()) -> None:
    """Every value of setting `name` (a number or a list of numbers) lies in [low, high] (an open end with
    `*_open`); values in `allow` (e.g. 0 for "off", None for "the paper's choice") pass as they are."""
    value = _setting(config, name)
    for v in _values(value):
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


# The largest batch any batch-size setting (`batch_size`, `*_batch_size`) may ask for: a bound for memory,
# not a recipe (the paper's fine-tunes and probes use 512, big_vision's largest configs 32768; SigLIP's study
# of batch sizes went up to 2^20). One batch of 2^20 images at 224 px is 630 GB of float32 pixels.
MAX_BATCH_SIZE = 1 << 20


def check_batch_sizes(config) -> None:
    """Every batch-size setting (`batch_size` or a name ending in `_batch_size`) lies in [1, MAX_BATCH_SIZE]:
    a huge batch is refused here, before anything is allocated; under the bound, an eval batch larger than
    its split is the split (`harness.data.pipeline`) and a training batch larger than its split is refused
    there."""
    for f in dataclasses.fields(config):
        if (f.name == "batch_size" or f.name.endswith("_batch_size")) and isinstance(getattr(config, f.name), int):
            check_range(config, f.name, low=1, high=MAX_BATCH_SIZE)


def check_choice(config, name: str, choices) -> None:
    """Setting `name` (or each of its values) is one of `choices`."""
    value = _setting(config, name)
    for v in _values(value):
        if v not in choices:
            raise bad_setting(name, value, f"is not one of {', '.join(shown(c) for c in choices)}")


def check_unique(config, name: str) -> None:
    """No value twice in list setting `name` (metric names are made from them and would collide)."""
    value = _setting(config, name)
    twice = sorted({shown(v) for v in value if list(value).count(v) > 1})
    if twice:
        raise bad_setting(name, value, f"lists {', '.join(twice)} more than once; give each value once")


def check_pp(config, name: str) -> None:
    """Setting `name` is empty (the task's default) or a pp string that parses (no data is touched)."""
    value = _setting(config, name)
    if value:
        from harness.data.pp import Preprocess

        try:
            Preprocess(value)
        except HarnessError as e:
            raise HarnessError(f"setting {name}: {e}") from None


# ------------------------------------------------------------------------------------ --set strings
def type_words(typ) -> str:
    """How a setting's type reads in an error: "an integer", "a comma-separated list of numbers", ..."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (tuple, list):
        inner = type_words(args[0] if args else str).split(" ", 1)[-1]
        return f"a comma-separated list of {inner}s"
    if origin in _UNIONS:
        words = [type_words(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" or none" if type(None) in args else "")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        typ, getattr(typ, "__name__", str(typ)))


def parse_bool(value: str) -> bool | None:
    """"true"/"yes"/"on"/"1" -> True, "false"/"no"/"off"/"0" -> False (any case), anything else None."""
    v = value.strip().lower()
    return True if v in TRUE_WORDS else False if v in FALSE_WORDS else None


def coerce(value: str, typ, key: str):
    """Parses a `--set key=value` string into the field's declared type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in _UNIONS:
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except HarnessError:
                pass
        raise HarnessError(f"--set {key}={value}: expected {type_words(typ)}")
    try:
        if typ is bool:
            if (b := parse_bool(value)) is None:
                raise ValueError(value)
            return b
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
        if typ is str:
            return value
        if origin in (tuple, list):
            items = [v.strip() for v in value.strip("()[]").split(",") if v.strip()]
            inner = args[0] if args else str
            return (tuple if origin is tuple else list)(coerce(v, inner, key) for v in items)
        if origin is dict or typ is dict:
            out = json.loads(value)
            if not isinstance(out, dict):
                raise ValueError(value)
            return out
    except (ValueError, RecursionError, HarnessError):  # json.JSONDecodeError is a ValueError
        raise HarnessError(f"--set {key}={value}: expected {type_words(typ)}") from None
    return value


# ------------------------------------------------------------------------------------------- hashing
def config_dict(config) -> dict:
    """A Config dataclass as plain JSON values (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list, sort_keys=True))


def settings_hash(obj) -> str:
    """The 16-hex-digit hash of JSON-able settings (a record's key is made of such hashes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:16]


def config_hash(config, encoder: dict | None = None) -> str:
    """The hash in a record's key: of the task config (`config_dict`) alone, or with the encoder settings
    when there are any (the same weights at another resolution make another record)."""
    return settings_hash({"task": config_dict(config), "encoder": encoder} if encoder else config_dict(config))
