"""Checks of single arguments, shared by every public entry point.

A leaf module (NumPy only): the front-end core, the mask builders and the
PaddleNLP helpers all import it, and it imports none of them. Each check
returns the argument as a plain Python value and otherwise raises TypeError
(wrong kind of value) or ValueError (right kind, wrong value) with a message
"<where>: `<name>` must be <expected>, got <what was given>".
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np

_MAX_SHOWN = 60  # characters of a bad value's repr kept in a message


def describe(value) -> str:
    """A short description of a bad value: its type and, for small values, the value."""
    if isinstance(value, np.ndarray):
        return f"numpy.ndarray of shape {list(value.shape)} and dtype {value.dtype}"
    kind = type(value)
    module = kind.__module__
    type_name = kind.__qualname__ if module == "builtins" else f"{module.split('.')[0]}.{kind.__qualname__}"
    shown = repr(value)
    if len(shown) > _MAX_SHOWN or hasattr(value, "shape"):
        return type_name
    return f"{shown} ({type_name})"


def is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def boolean(value, name: str, where: str) -> bool:
    """bool or numpy.bool_; a string such as "False" is refused, not taken as true."""
    if not is_bool(value):
        raise TypeError(f"{where}: `{name}` must be a bool, got {describe(value)}")
    return bool(value)


def integer(
    value, name: str, where: str, minimum: Optional[int] = None, maximum: Optional[int] = None
) -> int:
    """An int (numpy integers too; bools and integral floats are refused) in [minimum, maximum]."""
    if is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: `{name}` must be an int, got {describe(value)}")
    value = int(value)
    _check_range(value, name, where, minimum, maximum)
    return value


def real(
    value,
    name: str,
    where: str,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    maximum_inclusive: bool = True,
) -> float:
    """A finite int or float (numpy scalars too; bools and strings refused) in range."""
    if is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: `{name}` must be a real number, got {describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: `{name}` must be finite, got {value}")
    _check_range(value, name, where, minimum, maximum, maximum_inclusive)
    return value


def _check_range(value, name, where, minimum, maximum, maximum_inclusive=True) -> None:
    too_big = maximum is not None and (value > maximum if maximum_inclusive else value >= maximum)
    if (minimum is not None and value < minimum) or too_big:
        if maximum is None:
            expected = f">= {minimum}"
        else:
            expected = f"in [{minimum}, {maximum}{']' if maximum_inclusive else ')'}"
        raise ValueError(f"{where}: `{name}` must be {expected}, got {value}")


def string(value, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where}: `{name}` must be a str, got {describe(value)}")
    return value


def integer_sequence(value, name: str, where: str, minimum: Optional[int] = None) -> list:
    """A list/tuple/1-D array of ints, each >= minimum."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{where}: `{name}` must be a list of ints, got {describe(value)}")
    for i, item in enumerate(value):
        integer(item, f"{name}[{i}]", where, minimum)
    return [int(v) for v in value]
