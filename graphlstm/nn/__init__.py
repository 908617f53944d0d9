"""Recurrent layers on graphs and lattices, one per module."""

from graphlstm.nn.graph_lstm import GraphLSTM

__all__ = ["GraphLSTM"]
