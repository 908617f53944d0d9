"""Recurrent layers on graphs and lattices, one per module."""

from graphlstm.nn.evolving_graph_lstm import EvolvingGraphLSTM, Hierarchy
from graphlstm.nn.graph_lstm import GraphLSTM
from graphlstm.nn.graph_lstm_stack import GraphLSTMStack
from graphlstm.nn.grid_lstm import GridLSTM, GridLSTMCell
from graphlstm.nn.md_lstm import MDLSTM, MDRNN, MDLSTMCell, MDRNNCell

__all__ = [
    "EvolvingGraphLSTM",
    "GraphLSTM",
    "GraphLSTMStack",
    "GridLSTM",
    "GridLSTMCell",
    "Hierarchy",
    "MDLSTM",
    "MDLSTMCell",
    "MDRNN",
    "MDRNNCell",
]
