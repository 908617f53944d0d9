"""Which engine computes schedules and runs the Graph LSTM level loop.

Two implementations give the same results:

- ``"compiled"``: kernels compiled by numba (:mod:`graphlstm._kernels`): the
  schedule in three linear passes, and the level loop, forward and backward,
  without a Python or dispatcher round trip per level. CPU tensors of float32
  or float64 only; levels with many nodes use the threads torch is given
  (:func:`torch.get_num_threads`).
- ``"torch"``: the readable PyTorch reference (a few tensor ops per level),
  which runs on every device and dtype.

The default, ``"auto"``, takes the compiled kernels where they apply and the
PyTorch path elsewhere (CUDA tensors, half precision). If the kernels cannot be
loaded (numba missing or broken), ``"auto"`` warns once and uses the PyTorch
path; an explicit ``"compiled"`` raises instead. The environment variable
``GRAPHLSTM_BACKEND`` sets the initial choice.

Examples
--------
>>> import graphlstm
>>> graphlstm.backend.get_backend()
'auto'
>>> with graphlstm.use_backend("torch"):      # e.g. to compare the two paths
...     schedule = graphlstm.build_schedule(edge_index, num_nodes)  # doctest: +SKIP
>>> graphlstm.backend.set_backend("compiled")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch

__all__ = ["BACKENDS", "compiled_available", "get_backend", "set_backend", "use_backend"]

BACKENDS = ("auto", "compiled", "torch")

_COMPILED_DTYPES = (torch.float32, torch.float64)


def _check(name) -> str:
    if name not in BACKENDS:
        choices = ", ".join(map(repr, BACKENDS))
        raise ValueError(f"'backend' must be one of {choices}, got {name!r}")
    return name


_backend = _check(os.environ.get("GRAPHLSTM_BACKEND", "auto"))
_lock = threading.Lock()
_kernels: ModuleType | None = None
_load_error: BaseException | None = None
_warned = False


def get_backend() -> str:
    """The current choice: ``"auto"``, ``"compiled"`` or ``"torch"``."""
    return _backend


def set_backend(name: str) -> None:
    """Choose the engine for every later call (see the module docstring).

    Raises
    ------
    ValueError
        For a name other than ``"auto"``, ``"compiled"``, ``"torch"``.
    RuntimeError
        For ``"compiled"`` when the kernels cannot be loaded.
    """
    global _backend
    _check(name)
    if name == "compiled":
        _require_kernels()
    _backend = name


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: :func:`set_backend` inside the block, the previous choice after."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _load() -> ModuleType:
    # Separate so that tests can make loading fail.
    from graphlstm import _kernels

    return _kernels


def _try_load() -> ModuleType | None:
    global _kernels, _load_error
    if _kernels is None and _load_error is None:
        with _lock:
            if _kernels is None and _load_error is None:
                try:
                    _kernels = _load()
                except Exception as error:  # ImportError, or numba failing to initialise
                    _load_error = error
    return _kernels


def _require_kernels() -> ModuleType:
    kernels = _try_load()
    if kernels is None:
        raise RuntimeError(
            f"the compiled graphlstm kernels cannot be loaded ({_load_error!r}); install numba "
            f"(`pip install numba`) or use the 'torch' backend"
        )
    return kernels


def compiled_available() -> bool:
    """Whether the compiled kernels load (importing numba on the first call)."""
    return _try_load() is not None


def kernels_for(*tensors) -> ModuleType | None:
    """The compiled kernels if the current choice lets them run on ``tensors``
    (CPU, float32/float64 for floating tensors; ``None`` entries are skipped),
    else ``None``: the caller then takes the PyTorch path."""
    if _backend == "torch":
        return None
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or (t.is_floating_point() and t.dtype not in _COMPILED_DTYPES):
            return None
    if _backend == "compiled":
        return _require_kernels()
    kernels = _try_load()
    if kernels is None:
        _warn_once()
    return kernels


def disable_after_failure(error: BaseException) -> None:
    """Record that the kernels failed to compile: ``"auto"`` warns once and uses the
    PyTorch path from now on; ``"compiled"`` raises."""
    global _kernels, _load_error
    if _backend == "compiled":
        raise RuntimeError(
            f"the compiled graphlstm kernels failed to compile: {error!r}"
        ) from error
    with _lock:
        _kernels, _load_error = None, error
    _warn_once()


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"graphlstm: the compiled kernels are not available ({_load_error!r}); using the "
            f"PyTorch path, which gives the same results more slowly. Install numba "
            f"(`pip install numba`) to enable them, or select the 'torch' backend to silence "
            f"this warning (graphlstm.backend.set_backend('torch')).",
            RuntimeWarning,
            stacklevel=3,
        )
