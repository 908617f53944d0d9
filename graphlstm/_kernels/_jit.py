"""The one way the kernels are compiled: ``numba.njit`` with an on-disk cache when it can.

Numba keeps compiled machine code next to the sources (``__pycache__``), in
``NUMBA_CACHE_DIR`` when that is set, or in the user's cache directory when the
package directory is read-only. Where none of these is writable, numba refuses
``cache=True`` when the function is defined; the kernels are then compiled in
every process instead (the first-call cost, about ten seconds, per process),
and the first kernel so defined warns once, naming the variable that fixes it.
"""

from __future__ import annotations

import os
import warnings

import numba

__all__ = ["jit"]

_warned_uncached = False


def _warn_uncached(fn) -> None:
    global _warned_uncached
    if _warned_uncached:
        return
    _warned_uncached = True
    where = f"the kernels' folder {os.path.dirname(fn.__code__.co_filename)!r}"
    if numba.config.CACHE_DIR:
        where = f"NUMBA_CACHE_DIR={numba.config.CACHE_DIR!r}, {where}"
    warnings.warn(
        f"graphlstm: numba can cache its compiled kernels nowhere ({where} and the user's "
        "cache folder are not writable), so every process compiles them again (about "
        "10 s); set NUMBA_CACHE_DIR to a writable folder to keep them",
        stacklevel=3,
    )


def jit(**options):
    """``numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"},
    **options)``, without the cache where numba has nowhere to write it.

    ``error_model="numpy"`` lets a float division be a plain instruction (no
    Python ``ZeroDivisionError`` branch), which the loop vectoriser needs.
    ``fastmath={"contract"}`` lets a product and a sum be one fused multiply-add
    (one rounding instead of two; no reordering of sums, so the rounding trick of
    :func:`graphlstm._kernels.recurrence.fast_exp` holds).
    """
    options = {"nogil": True, "error_model": "numpy", "fastmath": {"contract"}, **options}

    def decorate(fn):
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            _warn_uncached(fn)
            return numba.njit(cache=False, **options)(fn)

    return decorate
