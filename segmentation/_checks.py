"""The checks of scalar arguments that every module shares: a bad type raises
``TypeError``, a bad value ``ValueError``, and the message names the argument."""

from __future__ import annotations

import math
import numbers


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` (a Python or NumPy integer, not a bool) that is at least
    ``minimum``; ``name`` is the argument's name in the messages."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {_int_kind(minimum)}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {_int_kind(minimum)}, got {value!r}")
    return int(value)


def check_number(value, name: str, *, minimum: float, strict: bool) -> float:
    """``value`` as a finite ``float`` above ``minimum`` (``strict``) or at least it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {relation} {minimum:g}, got {value!r}")
    return value


def _int_kind(minimum: int) -> str:
    if minimum == 1:
        return "a positive int"
    if minimum == 0:
        return "a non-negative int"
    return f"an int >= {minimum}"
