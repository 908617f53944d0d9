"""Plain per-node and per-cell loops written straight from docs/design.md.

They define what the fast layers must compute and are used by the tests and
the benchmarks; the layers never call them.
"""

from graphlstm.reference.graph_lstm import (
    graph_lstm_loop,
    graph_lstm_reference,
    graph_lstm_weighted_reference,
)
from graphlstm.reference.lattice import (
    graph_scan_reference,
    grid_lstm_step,
    lattice_scan_reference,
    md_lstm_step,
    md_rnn_step,
)
from graphlstm.reference.reach import reach_reference

__all__ = [
    "graph_lstm_loop",
    "graph_lstm_reference",
    "graph_lstm_weighted_reference",
    "graph_scan_reference",
    "grid_lstm_step",
    "lattice_scan_reference",
    "md_lstm_step",
    "md_rnn_step",
    "reach_reference",
]
