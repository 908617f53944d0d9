r"""Lattice graphs: chains, grids and N-D grids scanned in one of their directions.

A lattice of shape :math:`(n_1, \dots, n_D)` has one node per cell, numbered in
C (row-major) order. Scanning it in **direction** :math:`k \in 0..2^D-1` walks
dimension :math:`d` backwards when bit :math:`d` of :math:`k` is set, forwards
otherwise (docs/design.md, "Lattices and directions"). The MD-LSTM / MD-RNN /
Grid LSTM of Graves et al. (2007) and Kalchbrenner et al. (2015) are then the
ordered recurrences of :mod:`graphlstm.nn` on the graph this module builds:
every cell reads the new state of its predecessor along each dimension, which
the raster order visits first.

The validators for shapes and directions live here too, so that the graph
builder and the dense layers reject the same inputs with the same messages.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["lattice_graph", "lattice_order", "resolve_directions"]


def check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    """``shape`` must be a non-empty sequence of positive ints (a ``torch.Size`` is fine)."""
    if isinstance(shape, Tensor):
        if shape.dim() != 1 or shape.is_floating_point() or shape.dtype == torch.bool:
            raise TypeError(f"'{name}' must be a sequence of ints, got a tensor of {shape.dtype}")
        shape = shape.tolist()
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"'{name}' must be a sequence of ints, got {type(shape).__name__}")
    if len(shape) == 0:
        raise ValueError(f"'{name}' must have at least one dimension, got ()")
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise TypeError(f"'{name}' must hold ints, got {type(n).__name__} in {tuple(shape)}")
        if n < 1:
            raise ValueError(f"'{name}' must hold positive sizes, got {tuple(shape)}")
    return tuple(int(n) for n in shape)


def check_direction(direction, ndim: int, name: str = "direction") -> int:
    """``direction`` must be an int in ``0..2**ndim - 1``."""
    if isinstance(direction, bool) or not isinstance(direction, numbers.Integral):
        raise TypeError(f"'{name}' must be an int, got {type(direction).__name__}")
    if not 0 <= direction < 2**ndim:
        raise ValueError(
            f"'{name}' must be in 0..{2**ndim - 1} for {ndim} dimension(s) "
            f"(bit d set = dimension d scanned backwards), got {direction}"
        )
    return int(direction)


def resolve_directions(directions, ndim: int, name: str = "directions") -> tuple[int, ...]:
    """The scan directions a multi-directional layer runs, in output order.

    ``directions`` is an int ``n`` (the first ``n`` directions ``0..n-1``: for
    ``ndim=1``, ``2`` means forward then backward as in a bidirectional
    ``torch.nn.LSTM``), the string ``"all"`` (all ``2**ndim``), or a sequence
    of distinct direction ints.
    """
    total = 2**ndim
    if isinstance(directions, str):
        if directions != "all":
            raise ValueError(
                f"'{name}' must be an int, 'all' or a list of ints, got {directions!r}"
            )
        return tuple(range(total))
    if isinstance(directions, numbers.Integral) and not isinstance(directions, bool):
        if not 1 <= directions <= total:
            raise ValueError(
                f"'{name}' as a count must be in 1..{total} for {ndim} dimension(s), "
                f"got {directions}"
            )
        return tuple(range(int(directions)))
    if isinstance(directions, Sequence):
        if len(directions) == 0:
            raise ValueError(f"'{name}' must not be empty")
        out = tuple(check_direction(k, ndim, name) for k in directions)
        if len(set(out)) != len(out):
            raise ValueError(f"'{name}' must not repeat a direction, got {list(out)}")
        return out
    raise TypeError(
        f"'{name}' must be an int, 'all' or a list of ints, got {type(directions).__name__}"
    )


def c_strides(shape: Sequence[int]) -> list[int]:
    """Row-major strides of ``shape``, in elements."""
    strides = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    return strides


def lattice_order(shape, direction: int = 0, device=None) -> Tensor:
    """The raster scan order of a lattice in one direction.

    ``order[k]`` is the ``k``-th node visited: nodes sorted lexicographically by
    their coordinates, each dimension read backwards where ``direction`` says so.
    """
    shape = check_shape(shape)
    direction = check_direction(direction, len(shape))
    flips = [d for d in range(len(shape)) if direction >> d & 1]
    idx = torch.arange(math.prod(shape), device=device).view(shape)
    return idx.flip(flips).reshape(-1) if flips else idx.reshape(-1)


def lattice_graph(shape, direction: int = 0, device=None) -> tuple[Tensor, Tensor, Tensor]:
    r"""The directed lattice graph of ``shape`` scanned in ``direction``.

    Nodes are the cells of ``shape`` in C (row-major) order. For every
    dimension :math:`d` with :math:`n_d > 1` there is an edge :math:`j \to i`
    of type :math:`d` from each cell to its successor along :math:`d` in the
    scan direction: :math:`i = j + s_d` if dimension :math:`d` runs forwards,
    :math:`i = j - s_d` if bit :math:`d` of ``direction`` is set
    (:math:`s_d` is the row-major stride). So every cell has at most one
    predecessor per dimension, and none at the border it starts from.

    Parameters
    ----------
    shape : sequence of int
        Lattice size :math:`(n_1, \dots, n_D)`, every :math:`n_d \ge 1`.
    direction : int, default 0
        In ``0..2**D - 1``; bit :math:`d` set scans dimension :math:`d` backwards.
    device : torch.device, optional

    Returns
    -------
    edge_index : LongTensor ``[2, E]``
        ``E = sum_d (n_d - 1) * prod_{e != d} n_e``; grouped by dimension
        (type 0 first), within a dimension sorted by the row-major index of
        the lower-coordinate endpoint.
    edge_type : LongTensor ``[E]``
        The dimension of each edge.
    order : LongTensor ``[N]``
        The raster order of the scan (:func:`lattice_order`): lexicographic
        over the coordinates, reversed where ``direction`` says. Every edge
        goes from an earlier to a later node of it.

    Raises
    ------
    TypeError, ValueError
        For a ``shape`` that is not a non-empty sequence of positive ints, or
        a ``direction`` outside ``0..2**D - 1``.

    Example
    -------
    >>> edge_index, edge_type, order = lattice_graph((2, 3), direction=0)
    >>> # feed it to a cell: MDLSTMCell(F, H, num_edge_types=2)(x, edge_index, edge_type, order)
    """
    shape = check_shape(shape)
    direction = check_direction(direction, len(shape))
    idx = torch.arange(math.prod(shape), device=device).view(shape)
    src, dst, typ = [], [], []
    for d, n in enumerate(shape):
        if n < 2:
            continue
        lo = idx.narrow(d, 0, n - 1).reshape(-1)
        hi = idx.narrow(d, 1, n - 1).reshape(-1)
        backwards = bool(direction >> d & 1)
        src.append(hi if backwards else lo)
        dst.append(lo if backwards else hi)
        typ.append(torch.full_like(lo, d))
    if src:
        edge_index = torch.stack([torch.cat(src), torch.cat(dst)])
        edge_type = torch.cat(typ)
    else:
        edge_index = torch.empty(2, 0, dtype=torch.long, device=device)
        edge_type = torch.empty(0, dtype=torch.long, device=device)
    return edge_index, edge_type, lattice_order(shape, direction, device)
