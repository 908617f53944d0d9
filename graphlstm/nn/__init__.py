"""Recurrent layers on graphs and lattices, one per module."""

from graphlstm.nn.graph_lstm import GraphLSTM
from graphlstm.nn.graph_lstm_stack import GraphLSTMStack
from graphlstm.nn.grid_lstm import GridLSTM, GridLSTMCell
from graphlstm.nn.md_lstm import MDLSTM, MDRNN, MDLSTMCell, MDRNNCell

__all__ = [
    "GraphLSTM",
    "GraphLSTMStack",
    "GridLSTM",
    "GridLSTMCell",
    "MDLSTM",
    "MDLSTMCell",
    "MDRNN",
    "MDRNNCell",
]
