"""Which thread count a compiled level loop runs on, and the call that dispatches
to the single-threaded loop or its threaded twin."""

from __future__ import annotations

import os

import numba
import numpy as np
import torch

from graphlstm import _kernels as kernels

__all__ = ["run_level_kernel", "set_threads"]


def set_threads(num_threads: int) -> None:
    """Threads for the next parallel kernel (at most the number numba started with)."""
    numba.set_num_threads(max(1, min(int(num_threads), numba.config.NUMBA_NUM_THREADS)))


# Levels with fewer rows run on one thread. A row costs a few microseconds, a
# parallel region some ten, and numba's OpenMP threads (a pool of their own, next
# to torch's) spin for a while after each region, competing with torch's threads:
# only levels of this many rows are worth it. (SLIC graphs of a few thousand
# superpixels have a few dozen per level; a batch of them, hundreds.)
_PARALLEL_FROM = 128
_parallel_pid: int | None = None


def _threads_for(ptr: np.ndarray) -> int:
    """Threads for the compiled loop: torch's, if some level is large enough.

    GNU OpenMP (numba's thread pool) cannot run in a process forked after the
    pool started: a forked child keeps to one thread.
    """
    global _parallel_pid
    threads = torch.get_num_threads()
    if threads <= 1 or ptr.size < 2 or int(np.diff(ptr).max()) < _PARALLEL_FROM:
        return 1
    if _parallel_pid is None:
        _parallel_pid = os.getpid()
    return threads if _parallel_pid == os.getpid() else 1


def run_level_kernel(name: str, ptr: np.ndarray, args: tuple, outputs: tuple) -> None:
    """Run the compiled level loop ``<name>(*args, *outputs)`` of this package, or its
    threaded twin ``<name>_parallel`` (which also takes :data:`_PARALLEL_FROM`) on torch's
    threads where :func:`_threads_for` says they pay."""
    if _threads_for(ptr) > 1:
        set_threads(torch.get_num_threads())
        getattr(kernels, f"{name}_parallel")(*args, _PARALLEL_FROM, *outputs)
    else:
        getattr(kernels, name)(*args, *outputs)
