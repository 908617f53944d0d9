r"""The execution engine of the lattice cells (MD-LSTM, MD-RNN, Grid LSTM).

A lattice cell updates node :math:`i` from its input :math:`x_i` and the
states of its predecessors, one sum per edge type (dimension) :math:`d`:

.. math::
    a_i = W [x_i ; 1 ; \hat h_{i,1} ; \dots ; \hat h_{i,D}], \qquad
    \hat h_{i,d} = \sum_{j \to i \text{ visited, of type } d} h'_j

(the bias is the weight of the constant channel), followed by elementwise
gate work: the *kernel* of each cell. The recurrence runs in **steps**: the
nodes of a step are independent and read only nodes of earlier steps. Two
plans supply the steps:

* :class:`GraphPlan`: the levels of a :class:`~graphlstm.schedule.Schedule`
  on any typed graph (predecessors summed per type by ``index_add_``, so
  several predecessors of one type add up, and a missing one reads zeros);
* :class:`DensePlan`: the anti-diagonals (equal coordinate sum) of a batch
  of D-dimensional grids, for several scan directions at once. Each
  direction scans forwards in its own frame (only the index tables differ),
  and directions and samples are stacked so that a step is **one** ``bmm``
  for all of them, with per-direction weights (two for a Grid LSTM with a
  priority dimension, whose transform reads the step's other outputs).

Both run through one :class:`torch.autograd.Function` with a hand-written,
exact backward (checked by ``gradcheck``). State buffers are step-sorted, so
a step writes a contiguous slice and only the predecessor reads are gathers;
one gather at the end puts the states in output order. When a backward will
run, the forward keeps each step's activated gates (as ``torch.nn.LSTM``
does); the backward sweeps the steps in reverse, pulls the state gradients
that the successors owe, and accumulates the weight gradient step by step.
(Autograd over the step loop would record every step and, writing into a
shared state buffer, copy the whole state gradient once per step.)

On the CPU, the graph scan of the MD-LSTM and MD-RNN cells runs in a compiled
loop instead (:func:`_compiled_graph_scan`, kernels in
:mod:`graphlstm._kernels.typed`; :mod:`graphlstm.backend` chooses): a level of
a few dozen nodes costs its arithmetic (one GEMM and the rows' gates), not a
dozen tensor ops. The scan here
stays the reference the tests compare it with, and runs for the Grid LSTM,
on CUDA and without numba.

A state buffer row holds ``R*H`` numbers per (node, sample): ``R = 1`` for
MD-LSTM / MD-RNN, ``R = D`` for Grid LSTM (one ``(h_d, m_d)`` pair per
dimension). The dense plan adds one boundary row per (direction, sample)
that border cells read: zeros, or the initial state of a 1-D sequence.
"""

from __future__ import annotations

from graphlstm.nn.wavefront.gates import GridLSTMKernel, MDLSTMKernel, MDRNNKernel
from graphlstm.nn.wavefront.layers import LatticeCell, LatticeLayers
from graphlstm.nn.wavefront.plans import DensePlan, GraphPlan
from graphlstm.nn.wavefront.scan import augment, scan

__all__ = [
    "DensePlan",
    "GraphPlan",
    "GridLSTMKernel",
    "LatticeCell",
    "LatticeLayers",
    "MDLSTMKernel",
    "MDRNNKernel",
    "augment",
    "scan",
]
