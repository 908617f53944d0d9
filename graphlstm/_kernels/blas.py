"""The GEMM of PyTorch's BLAS (MKL), called from compiled loops one level at a time.

The loops multiply the rows of each level by a small weight matrix: ``z = W_n
h_bar`` forward, ``dL/dh_bar = W_n^T dL/dz`` backward. Row by row these are
dot products; for the few dozen rows of a level at once, MKL's GEMM does the
same arithmetic in half the time. The kernels receive the address of the Fortran
``sgemm_`` / ``dgemm_`` that ``libtorch_cpu`` exports as a plain integer (numba
caches machine code on disk, so an address compiled into it would not hold in
the next process) and call it through :func:`call_gemm`. MKL runs on the threads
that ``torch.set_num_threads`` gives it.

Where PyTorch's BLAS is not MKL or the symbol cannot be found, the address is 0
and the loops keep their own dot products (the same results up to rounding).
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from graphlstm._kernels._jit import jit

__all__ = ["call_gemm", "gemm_address", "rows_times"]

_addresses: dict[torch.dtype, int] = {}


def gemm_address(dtype: torch.dtype) -> int:
    """Address of MKL's ``sgemm_`` (float32) or ``dgemm_`` (float64) in the loaded
    ``libtorch_cpu``, or 0 where there is none."""
    if dtype not in _addresses:
        _addresses[dtype] = _find(
            {torch.float32: "sgemm_", torch.float64: "dgemm_"}.get(dtype))
    return _addresses[dtype]


def _find(symbol: str | None) -> int:
    if symbol is None or not torch.backends.mkl.is_available():
        return 0
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    for path in sorted(glob.glob(os.path.join(lib_dir, "*torch_cpu.*"))):
        try:
            function = getattr(ctypes.CDLL(path), symbol)
        except (OSError, AttributeError):
            continue
        return ctypes.cast(function, ctypes.c_void_p).value or 0
    return 0


@intrinsic
def call_gemm(typingctx, address, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call the Fortran GEMM at ``address``; every argument is an address (an integer)."""
    args = (transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    if not all(isinstance(t, types.Integer) for t in (address, *args)):
        return None

    def codegen(context, builder, signature, values):
        byte_ptr = ir.IntType(8).as_pointer()
        fn_type = ir.FunctionType(ir.VoidType(), [byte_ptr] * len(args))

        def pointer(value, ty, to):
            return builder.inttoptr(context.cast(builder, value, ty, types.int64), to)

        fn = pointer(values[0], signature.args[0], fn_type.as_pointer())
        builder.call(fn, [pointer(v, t, byte_ptr)
                          for v, t in zip(values[1:], signature.args[1:], strict=True)])
        return context.get_dummy_value()

    return types.void(address, *args), codegen


@jit()
def rows_times(address, transpose, weight, x, out, a, b):
    """``out[a:b] = x[a:b] @ weight.T`` (``transpose``) or ``x[a:b] @ weight``, all
    C-contiguous 2-D arrays of one float type, through the GEMM at ``address``.

    Row-major ``out[a:b]`` is column-major ``out^T``, so the call computes
    ``out^T = op(W) x^T`` with ``W`` read as its column-major transpose.
    """
    rows, cols = b - a, out.shape[1]
    depth = x.shape[1]
    ints = np.empty(6, np.int32)
    ints[0], ints[1], ints[2] = cols, rows, depth
    ints[3] = depth if transpose else cols  # lda: the leading dimension of W as stored
    ints[4], ints[5] = depth, cols
    flags = np.empty(2, np.uint8)
    flags[0], flags[1] = ord("T") if transpose else ord("N"), ord("N")
    coef = np.empty(2, out.dtype)
    coef[0], coef[1] = 1, 0
    base = ints.ctypes.data
    call_gemm(address, flags.ctypes.data, flags.ctypes.data + 1, base, base + 4, base + 8,
              coef.ctypes.data, weight.ctypes.data, base + 12,
              x.ctypes.data + a * x.strides[0], base + 16, coef.ctypes.data + coef.itemsize,
              out.ctypes.data + a * out.strides[0], base + 20)
