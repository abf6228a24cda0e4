"""Checks of user-given parameters, with one message template for all of obce.

Modelled on scikit-learn's ``_param_validation``: every failure reads
"The 'NAME' parameter of OWNER must be EXPECTED; got VALUE. FIX" and raises ``ValueError``.
Use these in ``__post_init__`` and at the top of public functions; never ``assert`` on input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["check_choice", "check_int", "check_number", "invalid", "is_int", "is_number"]


def invalid(name: str, owner: str, expected: str, value: Any, fix: str = "") -> ValueError:
    """The one message template: what was given, what was expected, how to fix it."""
    text = f"The {name!r} parameter of {owner} must be {expected}; got {value!r}."
    return ValueError(f"{text} {fix}".rstrip())


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number (bools, NaN and infinities are not)."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def check_int(value, name: str, owner: str, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False, fix: str = "") -> int | None:
    """``value`` as an int in [low, high] (either bound optional), or None when allowed."""
    if value is None and allow_none:
        return None
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise invalid(name, owner, _range("an integer", low, high, allow_none, "]"), value, fix)
    return int(value)


def check_number(value, name: str, owner: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False,
                 fix: str = "") -> float | None:
    """``value`` as a finite float in the interval given (open or closed ends), or None when allowed."""
    if value is None and allow_none:
        return None
    ok = is_number(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        expected = _range("a finite number", low, high, allow_none, right, left)
        raise invalid(name, owner, expected, value, fix)
    return float(value)


def check_choice(value, name: str, owner: str, choices: Iterable, *, fix: str = ""):
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise invalid(name, owner, f"one of {', '.join(map(repr, choices))}", value, fix)
    return value


def _range(kind: str, low, high, allow_none: bool, right: str, left: str = "[") -> str:
    if low is not None and high is not None:
        text = f"{kind} in {left}{low}, {high}{right}"
    elif low is not None:
        text = f"{kind} {'>' if left == '(' else '>='} {low}"
    elif high is not None:
        text = f"{kind} {'<' if right == ')' else '<='} {high}"
    else:
        text = kind
    return f"None or {text}" if allow_none else text
