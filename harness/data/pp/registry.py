"""The pp op registry and the argument checks op factories run when a pp string is parsed.

An op is a factory registered under its big_vision name: `@register("resize")` on
`def _resize(size, method="bilinear", antialias=False)`. Parsing a pp string calls the factory with
the op's arguments, which checks them (raising `ArgError`, which the parser turns into a one-line
HarnessError with the op's signature) and returns the function applied to each example.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

# Keyword arguments that every image ("keyed") op accepts on top of its own.
KEY_KWARGS = {"key": None, "inkey": "image", "outkey": "image"}


class ArgError(Exception):
    """An op factory rejected its arguments; the parser adds the op's signature."""


@dataclasses.dataclass(frozen=True)
class OpDef:
    name: str
    factory: Callable[..., Callable]
    keyed: bool  # reads data[key or inkey], writes data[key or outkey]; else it maps the whole example dict
    random: bool  # the op's function takes (value or example, seed)

    def signature(self) -> str:
        params = list(inspect.signature(self.factory).parameters.values())
        if self.keyed:
            params += [
                inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
                for k, v in KEY_KWARGS.items()
            ]
        return f"{self.name}{inspect.Signature(params)}"


OPS: dict[str, OpDef] = {}


def register(name: str, *, keyed: bool = True, random: bool = False):
    def wrap(factory):
        OPS[name] = OpDef(name, factory, keyed, random)
        return factory

    return wrap


def known_ops() -> dict[str, str]:
    """Op name -> signature, e.g. for help texts."""
    return {name: op.signature() for name, op in sorted(OPS.items())}


# --------------------------------------------------------------------------------------------------
# Argument checks (run at parse time, inside the factories)


def is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def size_pair(name: str, value: Any) -> tuple[int, int]:
    """An int H (square) or a pair (H, W) of positive ints, as big_vision's `maybe_repeat`."""
    if is_int(value):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(is_int(v) and v > 0 for v in value)
    ):
        raise ArgError(f"{name} must be a positive int or a pair (height, width); got {value!r}")
    return int(value[0]), int(value[1])


def positive_int(name: str, value: Any) -> int:
    if not is_int(value) or value <= 0:
        raise ArgError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def number(name: str, value: Any) -> float:
    if not is_number(value):
        raise ArgError(f"{name} must be a number; got {value!r}")
    return float(value)


def numbers(name: str, value: Any) -> float | tuple[float, ...]:
    """A number or a per-channel list of numbers."""
    if isinstance(value, (tuple, list)) and value and all(is_number(v) for v in value):
        return tuple(float(v) for v in value)
    return number(name, value)


def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ArgError(f"{name} must be a string; got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgError(f"{name} must be True or False; got {value!r}")
    return value
