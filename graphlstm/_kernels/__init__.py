"""Compiled kernels (numba): the schedule, the Graph LSTM level loop and the level
loop of the typed-graph cells.

Importing this package imports numba and defines the kernels (and
:mod:`graphlstm._kernels.threads`, which runs a level loop on one thread or on
torch's); each compiles on
its first call for a given dtype (seconds) and is then loaded from numba's
on-disk cache (see :mod:`graphlstm._kernels._jit`). Nothing here is public: the
Python faces :func:`graphlstm.build_schedule` and
:func:`graphlstm.functional.graph_lstm_recurrence` choose between these
kernels and the PyTorch reference (:mod:`graphlstm.backend`).
"""

from numba.core.errors import NumbaError as CompileError

from graphlstm._kernels.blas import gemm_address
from graphlstm._kernels.recurrence import (
    backward,
    backward_parallel,
    check_permutation,
    forward,
    forward_parallel,
    gated_backward,
    gated_backward_parallel,
    gated_forward,
    gated_forward_parallel,
    group_by_target,
    node_edges,
)
from graphlstm._kernels.schedule import schedule_layout
from graphlstm._kernels.threads import run_level_kernel, set_threads
from graphlstm._kernels.typed import (
    LSTM,
    RNN_RELU,
    RNN_TANH,
    STABLE_LSTM,
    typed_backward,
    typed_backward_parallel,
    typed_forward,
    typed_forward_parallel,
)

__all__ = [
    "LSTM",
    "RNN_RELU",
    "RNN_TANH",
    "STABLE_LSTM",
    "CompileError",
    "backward",
    "backward_parallel",
    "check_permutation",
    "forward",
    "forward_parallel",
    "gated_backward",
    "gated_backward_parallel",
    "gated_forward",
    "gated_forward_parallel",
    "gemm_address",
    "group_by_target",
    "node_edges",
    "run_level_kernel",
    "schedule_layout",
    "set_threads",
    "typed_backward",
    "typed_backward_parallel",
    "typed_forward",
    "typed_forward_parallel",
]


