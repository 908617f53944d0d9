"""The one way the kernels are compiled: ``numba.njit`` with an on-disk cache when it can.

Numba keeps compiled machine code next to the sources (``__pycache__``), in
``NUMBA_CACHE_DIR`` when that is set, or in the user's cache directory when the
package directory is read-only. Where none of these is writable, numba refuses
``cache=True`` when the function is defined; the kernels are then compiled in
every process instead (the first-call cost, a few seconds, per process).
"""

from __future__ import annotations

import numba

__all__ = ["jit"]


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
            return numba.njit(cache=False, **options)(fn)

    return decorate
