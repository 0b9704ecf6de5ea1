"""Every JSON and TOML file a user gives is read here: as a regular file of bounded size and nesting depth,
then field by field through typed getters, so that any wrong value is one `HarnessError` line naming the
file and the field ("config.json: field vision_config.num_attention_heads is 0; expected a positive
integer; ...").

`read_json` / `read_toml` return a `Doc`: the parsed value with its file, a field path and what to do about
a bad value (`fix`). A reader asks a `Doc` for what it uses, in the type it needs:

    cfg = read_json(folder / "config.json", what="Hugging Face config", fix="re-export it with save_pretrained")
    v = cfg.obj("vision_config", default={})
    heads = v.int("num_attention_heads", 12, min=1)
    act = v.str("hidden_act", "gelu_pytorch_tanh")

Each getter takes the default a missing key (or, where `null_is_default`, a JSON null) stands for; without
one a missing key is an error too. `obj` and `list` give `Doc`s of the nested values (their field paths
extended), `items` / `entries` iterate over them. Nothing here knows any format: each reader owns its
schema (which keys, which types, which ranges).
"""

from __future__ import annotations

import json
import math
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, did_you_mean, first_line

MAX_BYTES = 16 << 20  # a config file: far above any real one (a HF tokenizer_config.json: ~20 kB)
MAX_DEPTH = 64  # nesting of objects and lists: far above any real file (a record: 5)
_MISSING = object()
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def describe(value: Any, *, toml: bool = False) -> str:
    """A value as an error line shows it: short, one line, its JSON (or TOML) type when long."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        kind = "table" if toml else "object"
        return f"a {kind}" if value else f"an empty {kind}"
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "an empty list"
    if isinstance(value, int) and abs(value) >= 10**12:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "...'"


def _depth(value: Any) -> int:
    """The nesting depth of a parsed value (iterative: a deep value must not recurse here either)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_DEPTH:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def read_bytes(file: str | Path, *, what: str, fix: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of `file`, read only if it is a regular file of at most `max_bytes` (a FIFO or device would
    block or never end, a huge file would fill memory); anything else is one error line."""
    file = Path(file)
    try:
        st = file.stat()
        if not stat.S_ISREG(st.st_mode):
            raise HarnessError(f"{file}: not a regular file, so not a {what}; {fix}")
        if st.st_size > max_bytes:
            raise HarnessError(f"{file}: {st.st_size} bytes is too large for a {what} (at most {max_bytes}); {fix}")
        with open(file, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise HarnessError(f"{file}: no such file; {fix}") from None
    except OSError as e:
        raise HarnessError(f"{file}: cannot be read as a {what} ({e.strerror or first_line(e)}); {fix}") from None
    if len(data) > max_bytes:  # grown since the stat
        raise HarnessError(f"{file}: more than {max_bytes} bytes is too large for a {what}; {fix}")
    return data


def _parsed(file: Path, value: Any, *, what: str, fix: str, toml: bool = False) -> Doc:
    if _depth(value) > MAX_DEPTH:
        raise HarnessError(f"{file}: nested more than {MAX_DEPTH} levels deep, which no {what} is; {fix}")
    return Doc(value, file, fix=fix, toml=toml)


def read_json(file: str | Path, *, what: str, fix: str, max_bytes: int = MAX_BYTES) -> Doc:
    """The JSON document in `file` (see `read_bytes`); not UTF-8, not JSON, too deep, a number of more
    digits than Python converts: one error line each. NaN and Infinity are read (records hold them)."""
    file = Path(file)
    data = read_bytes(file, what=what, fix=fix, max_bytes=max_bytes)
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise HarnessError(f"{file}: nested too deeply to be a {what}; {fix}") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, and ints beyond Python's digit limit
        raise HarnessError(f"{file}: not a readable {what} (not JSON: {first_line(e, 120)}); {fix}") from None
    return _parsed(file, value, what=what, fix=fix)


def read_toml(file: str | Path, *, what: str, fix: str, max_bytes: int = MAX_BYTES) -> Doc:
    """The TOML document in `file` (see `read_bytes`): one error line for what tomllib refuses."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser as a package
        try:
            import tomli as tomllib
        except ImportError:
            raise HarnessError(f"{file}: reading a {what} needs Python 3.11+ (tomllib) or `pip install tomli`") from None
    file = Path(file)
    data = read_bytes(file, what=what, fix=fix, max_bytes=max_bytes)
    try:
        value = tomllib.loads(data.decode("utf-8"))
    except RecursionError:
        raise HarnessError(f"{file}: nested too deeply to be a {what}; {fix}") from None
    except (UnicodeDecodeError, ValueError) as e:  # TOMLDecodeError is a ValueError
        raise HarnessError(f"{file}: not valid TOML ({first_line(e, 120)}); {fix}") from None
    return _parsed(file, value, what=what, fix=fix, toml=True)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number_ok(v: Any, finite: bool, positive: bool) -> bool:
    return _is_number(v) and (not finite or math.isfinite(v)) and (not positive or v > 0)


class Doc:
    """A value parsed from `file` at field path `path` ("" for the whole document), read through typed
    getters whose errors name the file and the field, and end in `fix` (what to do)."""

    def __init__(self, value: Any, file: str | Path, path: str = "", fix: str = "fix the file", *,
                 toml: bool = False):
        self.value, self.file, self.path, self.fix, self.toml = value, file, path, fix, toml
        self.an_object = "a table" if toml else "an object"  # what TOML calls an object

    def _child(self, key: str | int, value: Any) -> Doc:
        return Doc(value, self.file, self.field(key), self.fix, toml=self.toml)

    def __repr__(self) -> str:
        return f"Doc({self.file}, {self.path or '(root)'}: {describe(self.value)})"

    # --- where and what
    def field(self, key: str | int) -> str:
        """The field path of `key` under this value: `a.b`, `a["x/y"]`, `a[3]`."""
        if isinstance(key, int):
            part = f"[{key}]"
        elif _IDENT.match(key):
            part = f".{key}" if self.path else key
        else:
            part = f"[{json.dumps(key)}]"
        return f"{self.path}{part}"

    def error(self, expected: str, key: str | int | None = None, value: Any = _MISSING) -> HarnessError:
        """"<file>: field <path> is <value>; expected <expected>; <fix>" (the value missing: "has no ...")."""
        where = self.field(key) if key is not None else self.path
        if value is _MISSING:
            if key is None:
                value = self.value
            else:
                return HarnessError(f"{self.file}: " + (f"field {self.path} has no " if self.path else "no ")
                                    + f"field {key if isinstance(key, str) else f'[{key}]'}; expected "
                                    f"{expected}; {self.fix}")
        name = f"field {where}" if where else "the document"
        return HarnessError(f"{self.file}: {name} is {describe(value, toml=self.toml)}; expected {expected}; "
                            f"{self.fix}")

    def is_obj(self) -> bool:
        return isinstance(self.value, dict)

    def require_obj(self, expected: str | None = None) -> Doc:
        if not isinstance(self.value, dict):
            raise self.error(expected or self.an_object)
        return self

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def keys(self) -> list[str]:
        return list(self.require_obj().value)

    def raw(self, key: str, default: Any = None) -> Any:
        """The value of `key` untyped (`default` when missing): for values only passed on or compared."""
        return self.require_obj().value.get(key, default)

    def _get(self, key: str, default: Any, expected: str, null_is_default: bool) -> tuple[bool, Any]:
        """(whether `key` holds a value to check, the value or `default`)."""
        obj = self.require_obj().value
        if key not in obj or (null_is_default and obj[key] is None and default is not _MISSING):
            if default is _MISSING:
                raise self.error(expected, key)
            return False, default
        return True, obj[key]

    # --- typed getters
    def int(self, key: str, default: Any = _MISSING, *, min: int | None = None, max: int | None = None,
            null_is_default: bool = False) -> Any:
        """An integer (not a bool, not 3.0) in [min, max]; `default` when missing."""
        expected = "a positive integer" if min == 1 else "an integer >= 0" if min == 0 else "an integer"
        if max is not None:
            expected += f" up to {max}"
        given, v = self._get(key, default, expected, null_is_default)
        if given and (not _is_int(v) or (min is not None and v < min) or (max is not None and v > max)):
            raise self.error(expected, key, v)
        return v

    def number(self, key: str, default: Any = _MISSING, *, finite: bool = True, positive: bool = False,
               null_is_default: bool = False) -> Any:
        """A number (int or float, not a bool): finite unless `finite=False`, > 0 if `positive`."""
        expected = "a positive number" if positive else "a finite number" if finite else "a number"
        given, v = self._get(key, default, expected, null_is_default)
        if given and not _number_ok(v, finite, positive):
            raise self.error(expected, key, v)
        return v

    def str(self, key: str, default: Any = _MISSING, *, choices: tuple | None = None, nonempty: bool = False,
            null_is_default: bool = False) -> Any:
        """A string (one of `choices` when given, not empty if `nonempty`)."""
        expected = ("one of " + ", ".join(repr(c) for c in choices) if choices else
                    "a non-empty string" if nonempty else "a string")
        given, v = self._get(key, default, expected, null_is_default)
        if given and (not isinstance(v, str) or (choices and v not in choices) or (nonempty and not v)):
            raise self.error(expected, key, v)
        return v

    def bool(self, key: str, default: Any = _MISSING, *, null_is_default: bool = False) -> Any:
        """true or false."""
        given, v = self._get(key, default, "true or false", null_is_default)
        if given and not isinstance(v, bool):
            raise self.error("true or false", key, v)
        return v

    def obj(self, key: str, default: Any = _MISSING, *, null_is_default: bool = False) -> Doc:
        """The object at `key` as a Doc (`default`, e.g. {}, when missing)."""
        _, v = self._get(key, default, self.an_object, null_is_default)
        if not isinstance(v, dict):
            raise self.error(self.an_object, key, v)
        return self._child(key, v)

    def list(self, key: str, default: Any = _MISSING, *, length: int | None = None,
             null_is_default: bool = False) -> Doc:
        """The list at `key` as a Doc (of `length` items when given)."""
        expected = f"a list of {length}" if length is not None else "a list"
        _, v = self._get(key, default, expected, null_is_default)
        if not isinstance(v, list) or (length is not None and len(v) != length):
            raise self.error(expected, key, v)
        return self._child(key, v)

    def numbers(self, key: str, default: Any = _MISSING, *, length: int | None = None, finite: bool = True,
                positive: bool = False, null_is_default: bool = False) -> Any:
        """A list of numbers (`length` of them, finite, > 0 as asked), as a Python list."""
        one = "a positive number" if positive else "a finite number" if finite else "a number"
        expected = f"a list of {length if length is not None else ''} {one[2:]}s".replace("  ", " ")
        given, v = self._get(key, default, expected, null_is_default)
        if not given:
            return v
        if not isinstance(v, list) or (length is not None and len(v) != length):
            raise self.error(expected, key, v)
        for i, x in enumerate(v):
            if not _number_ok(x, finite, positive):
                raise self._child(key, v).error(one, i, x)
        return v

    def check(self, key: str, ok: Callable[[Any], bool], expected: str, default: Any = _MISSING) -> Any:
        """The value of `key` if `ok(value)`, else the error naming `expected` (a type no getter covers)."""
        given, v = self._get(key, default, expected, False)
        if given and not ok(v):
            raise self.error(expected, key, v)
        return v

    # --- nested values
    def items(self) -> Iterator[tuple[str, Doc]]:
        """(key, Doc) of an object's entries."""
        for k, v in self.require_obj().value.items():
            yield k, self._child(k, v)

    def entries(self) -> Iterator[Doc]:
        """The Docs of a list's items."""
        if not isinstance(self.value, list):
            raise self.error("a list")
        for i, v in enumerate(self.value):
            yield self._child(i, v)

    def unknown(self, known, *, what: str = "key") -> None:
        """Refuses keys of this object outside `known`, naming the first and the nearest known one."""
        extra = sorted(set(self.require_obj().value) - set(known))
        if extra:
            where = f"field {self.path} has" if self.path else "has"
            raise HarnessError(f"{self.file}: {where} unknown {what} {extra[0]!r}{did_you_mean(extra[0], known)}; "
                               f"known: {', '.join(sorted(known))}; {self.fix}")
