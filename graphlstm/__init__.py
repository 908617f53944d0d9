"""graphlstm: Graph LSTM, MD-LSTM and Grid LSTM for PyTorch Geometric.

- :mod:`graphlstm.schedule`: update order -> levels of independent nodes.
- :mod:`graphlstm.functional`: the level-by-level inner loops.
- :mod:`graphlstm.nn`: the layers (one per module).
- :mod:`graphlstm.reference`: plain sequential loops that define the semantics.
"""

from graphlstm.nn import GraphLSTM
from graphlstm.schedule import Schedule, build_schedule, order_from_score

__version__ = "0.1.0"

__all__ = ["GraphLSTM", "Schedule", "build_schedule", "order_from_score"]
