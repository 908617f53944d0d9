"""graphlstm: Graph LSTM, MD-LSTM and Grid LSTM for PyTorch Geometric.

- :mod:`graphlstm.schedule`: update order -> levels of independent nodes.
- :mod:`graphlstm.functional`: the Graph LSTM level loop.
- :mod:`graphlstm.lattice`: lattice graphs and scan directions.
- :mod:`graphlstm.coarsening`: clusters of nodes (``coarsen``), the evolution step, pooling.
- :mod:`graphlstm.reach`: which inputs an update order lets into each node's output.
- :mod:`graphlstm.nn`: the layers and cells (one per module) and the wavefront engine.
- :mod:`graphlstm.reference`: plain sequential loops that define the semantics.
- :mod:`graphlstm.backend`: compiled kernels or the PyTorch path (``use_backend``).
"""

from graphlstm import backend  # noqa: F401  (graphlstm.backend.set_backend, ...)
from graphlstm.backend import use_backend
from graphlstm.coarsening import coarsen
from graphlstm.lattice import lattice_graph, lattice_order
from graphlstm.nn import (
    MDLSTM,
    MDRNN,
    EvolvingGraphLSTM,
    GraphLSTM,
    GraphLSTMStack,
    GridLSTM,
    GridLSTMCell,
    MDLSTMCell,
    MDRNNCell,
)
from graphlstm.reach import reachable
from graphlstm.schedule import Schedule, build_schedule, order_from_score

# Registers the operators torch.ops.graphlstm.* that the layers call.
from graphlstm import _ops  # noqa: E402, F401  isort: skip

__version__ = "0.1.0"

__all__ = [
    "EvolvingGraphLSTM",
    "GraphLSTM",
    "GraphLSTMStack",
    "GridLSTM",
    "GridLSTMCell",
    "MDLSTM",
    "MDLSTMCell",
    "MDRNN",
    "MDRNNCell",
    "Schedule",
    "build_schedule",
    "coarsen",
    "lattice_graph",
    "lattice_order",
    "order_from_score",
    "reachable",
    "use_backend",
]
