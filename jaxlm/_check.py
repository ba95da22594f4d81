"""Checks of the caller's scalar options, shared by every entry point.

Each check names the argument, accepts what a user may reasonably pass (Python and numpy
scalars alike) and returns a plain Python value, so that options hash and compare the same
way however they were given (they are part of jit cache keys).  Anything else is a
``TypeError`` (wrong kind) or ``ValueError`` (right kind, out of range): a string is never
taken as a truth value, a float never silently truncated to an int.
"""

from __future__ import annotations

import math
import numbers
import os
import sys

import numpy as np

INT32_MAX = 2**31 - 1


def choice(name: str, value, choices):
    """``value`` if it is one of ``choices`` (compared with ``==``), else ``ValueError``."""
    try:
        ok = any(value is c or (type(value) is type(c) and value == c) for c in choices)
    except Exception:  # noqa: BLE001 - arrays, objects whose == raises: not a choice
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def boolean(name: str, value) -> bool:
    """True or False (``numpy.bool_`` too); anything else — ``"no"``, 0, None — is an error."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def optional_boolean(name: str, value) -> bool | None:
    return None if value is None else boolean(name, value)


def scipy_flag(name: str, value) -> bool:
    """A boolean option of scipy's interface, which scipy code often passes as the
    integers 0 and 1 (``full_output=1``, the MINPACK idiom): True, False, 0 or 1;
    anything else — ``"yes"``, 2, None — is an error."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_) and value in (0, 1):
        return bool(value)
    return boolean(name, value)


def integer(name: str, value, *, minimum: int = 0, clamp: int | None = None) -> int:
    """A Python or numpy integer ≥ ``minimum``; values above ``clamp`` become ``clamp``.

    A float with an integral value (``1e4``) is accepted; ``1.5``, NaN, bools and
    strings are not.
    """
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        out = int(value)
    else:
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if out < minimum:
        raise ValueError(f"{name} must be ≥ {minimum}, got {out}")
    return out if clamp is None else min(out, clamp)


def real(name: str, value, *, positive: bool = False, allow_none: bool = False) -> float | None:
    """A finite Python or numpy real ≥ 0 (> 0 when ``positive``); ``None`` if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        kind = "a positive number" if positive else "a non-negative number"
        raise TypeError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out < 0 or (positive and out == 0):
        kind = "positive and finite" if positive else "non-negative and finite"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return out


def caller_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the calling function that points at the
    first frame outside jaxlm: the user's line, however many of jaxlm's wrappers
    (precision, explicit mesh axes, curve_fit over fit) lie between."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
