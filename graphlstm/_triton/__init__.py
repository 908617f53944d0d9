"""Triton kernels of the Graph LSTM level loop (forward and backward).

Importing this package imports ``triton``; nothing here imports numba, so the
GPU engine does not depend on the CPU one. The kernels run on CUDA tensors,
and, with the environment variable ``TRITON_INTERPRET=1`` set before triton is
first imported, on CPU tensors through Triton's interpreter (which is how the
tests check them on a machine without a GPU). Nothing here is public; see
:mod:`graphlstm._triton.recurrence` for the design.
"""
