"""Which engine computes schedules and runs the Graph LSTM level loop.

Two implementations give the same results:

- ``"compiled"``: kernels compiled by numba (:mod:`graphlstm._kernels`): the
  schedule in three linear passes, and the level loop, forward and backward,
  without a Python or dispatcher round trip per level. CPU tensors of float32
  or float64 only; levels with many nodes use the threads torch is given
  (:func:`torch.get_num_threads`).
- ``"triton"``: the Graph LSTM level loop, forward and backward, in Triton
  kernels (:mod:`graphlstm._triton`), one program per graph looping over its
  levels: CUDA tensors, float32 arithmetic (float16/bfloat16 inputs are
  computed in float32; float64 keeps the PyTorch path). With the environment
  variable ``TRITON_INTERPRET=1`` set before triton is imported, an explicit
  ``"triton"`` also runs the kernels on CPU tensors through Triton's
  interpreter (slow: for tests). Schedules are built as under ``"auto"``.
- ``"torch"``: the readable PyTorch reference (a few tensor ops per level),
  which runs on every device and dtype.

The default, ``"auto"``, takes the compiled kernels where they apply (CPU), the
Triton kernels for the Graph LSTM on CUDA when ``triton`` imports, and the
PyTorch path elsewhere (other cells on CUDA, float64 on CUDA, CPU half
precision). If the kernels cannot be loaded or compiled (numba or triton
missing or broken), ``"auto"`` warns once and uses the PyTorch path; an
explicit ``"compiled"`` or ``"triton"`` raises instead. The environment variable
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

__all__ = ["BACKENDS", "compiled_available", "get_backend", "set_backend", "triton_available",
           "use_backend"]

BACKENDS = ("auto", "compiled", "torch", "triton")

_COMPILED_DTYPES = (torch.float32, torch.float64)
# The Triton kernels compute in float32; float64 keeps the exact PyTorch path.
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(name) -> str:
    if name not in BACKENDS:
        choices = ", ".join(map(repr, BACKENDS))
        raise ValueError(f"'backend' must be one of {choices}, got {name!r}")
    return name


_backend = _check(os.environ.get("GRAPHLSTM_BACKEND", "auto"))
_lock = threading.Lock()


def _import_numba_kernels() -> ModuleType:
    from graphlstm import _kernels

    return _kernels


def _import_triton_kernels() -> ModuleType:
    from graphlstm._triton import recurrence

    return recurrence


class _LazyEngine:
    """Kernels imported on first use, once (thread-safe), with the import error
    kept, a one-time warning when ``"auto"`` falls back, and a way to give up
    on kernels that failed to compile or launch. Tests swap ``load`` or the
    recorded state to simulate a broken installation."""

    def __init__(self, load, cannot_load: str, fallback: str) -> None:
        self.load = load
        self.cannot_load = cannot_load  # the error of an explicit choice; "{error}" filled in
        self.fallback = fallback  # the warning when "auto" falls back; "{error}" filled in
        self.module: ModuleType | None = None
        self.error: BaseException | None = None
        self.warned = False

    def try_load(self) -> ModuleType | None:
        if self.module is None and self.error is None:
            with _lock:
                if self.module is None and self.error is None:
                    try:
                        self.module = self.load()
                    except Exception as error:  # ImportError, or a library failing to start
                        self.error = error
        return self.module

    def require(self) -> ModuleType:
        module = self.try_load()
        if module is None:
            raise RuntimeError(self.cannot_load.format(error=repr(self.error)))
        return module

    def disable(self, error: BaseException) -> None:
        with _lock:
            self.module, self.error = None, error
        self.warn_once(stacklevel=4)

    def warn_once(self, stacklevel: int = 3) -> None:
        # stacklevel 3: the user's call into kernels_for / triton_for.
        if not self.warned:
            self.warned = True
            warnings.warn(self.fallback.format(error=repr(self.error)), RuntimeWarning,
                          stacklevel=stacklevel)


_numba = _LazyEngine(
    _import_numba_kernels,
    cannot_load="the compiled graphlstm kernels cannot be loaded ({error}); install numba "
                "(`pip install numba`) or use the 'torch' backend",
    fallback="graphlstm: the compiled kernels are not available ({error}); using the "
             "PyTorch path, which gives the same results more slowly. Install numba "
             "(`pip install numba`) to enable them, or select the 'torch' backend to silence "
             "this warning (graphlstm.backend.set_backend('torch')).",
)
_triton = _LazyEngine(
    _import_triton_kernels,
    cannot_load="the graphlstm Triton kernels cannot be loaded ({error}); install triton "
                "(PyTorch's CUDA builds bring it) or use the 'torch' backend",
    fallback="graphlstm: the Triton kernels are not available ({error}); the Graph LSTM on "
             "CUDA uses the PyTorch path, which gives the same results more slowly. Select "
             "the 'torch' backend to silence this warning "
             "(graphlstm.backend.set_backend('torch')).",
)


def get_backend() -> str:
    """The current choice: ``"auto"``, ``"compiled"``, ``"torch"`` or ``"triton"``."""
    return _backend


def set_backend(name: str) -> None:
    """Choose the engine for every later call (see the module docstring).

    Raises
    ------
    ValueError
        For a name other than ``"auto"``, ``"compiled"``, ``"torch"``, ``"triton"``.
    RuntimeError
        For ``"compiled"`` or ``"triton"`` when those kernels cannot be loaded.
    """
    global _backend
    _check(name)
    if name == "compiled":
        _numba.require()
    if name == "triton":
        _triton.require()
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


def _require_kernels() -> ModuleType:
    return _numba.require()


def compiled_available() -> bool:
    """Whether the compiled kernels load (importing numba on the first call)."""
    return _numba.try_load() is not None


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
        return _numba.require()
    kernels = _numba.try_load()
    if kernels is None:
        _numba.warn_once()
    return kernels


def disable_after_failure(error: BaseException) -> None:
    """Record that the kernels failed to compile: ``"auto"`` warns once and uses the
    PyTorch path from now on; ``"compiled"`` raises."""
    if _backend == "compiled":
        raise RuntimeError(
            f"the compiled graphlstm kernels failed to compile: {error!r}"
        ) from error
    _numba.disable(error)


# ----------------------------------------------------------------------------
# The Triton engine (CUDA; CPU tensors through Triton's interpreter)
# ----------------------------------------------------------------------------


def triton_available() -> bool:
    """Whether the Triton kernels load (importing triton on the first call)."""
    return _triton.try_load() is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_for(*tensors) -> ModuleType | None:
    """The Triton kernels (:mod:`graphlstm._triton.recurrence`) if the current choice
    lets them run on ``tensors`` (``None`` entries skipped), else ``None``: CUDA
    tensors under ``"auto"`` or ``"triton"``, or CPU tensors under an explicit
    ``"triton"`` with ``TRITON_INTERPRET=1``; floating tensors float32, float16 or
    bfloat16."""
    if _backend not in ("auto", "triton"):
        return None
    devices = {t.device.type for t in tensors if t is not None}
    if devices == {"cpu"}:
        if _backend != "triton" or not _interpreting():
            return None
    elif devices != {"cuda"}:
        return None
    if any(t is not None and t.is_floating_point() and t.dtype not in _TRITON_DTYPES
           for t in tensors):
        return None
    if _backend == "triton":
        return _triton.require()
    module = _triton.try_load()
    if module is None:
        _triton.warn_once()
    return module


def disable_triton_after_failure(error: BaseException) -> None:
    """Record that the Triton kernels failed (to compile, or to launch): ``"auto"``
    warns once and uses the PyTorch path from now on; ``"triton"`` raises."""
    if _backend == "triton":
        raise RuntimeError(f"the graphlstm Triton kernels failed: {error!r}") from error
    _triton.disable(error)
