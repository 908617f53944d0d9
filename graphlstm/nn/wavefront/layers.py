"""Module machinery shared by the lattice cells and layers: the graph path of a cell
and the stacked, multi-directional dense layers (see :mod:`graphlstm.nn.wavefront`)."""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphlstm import backend
from graphlstm._validation import check_edge_index, check_node_features, check_tensor
from graphlstm.lattice import resolve_directions
from graphlstm.nn.wavefront.plans import DensePlan, GraphPlan, _cached_plan
from graphlstm.nn.wavefront.scan import (
    _compiled_graph_scan,
    _compiled_kind,
    _RowGather,
    augment,
    scan,
)
from graphlstm.schedule import build_schedule

# --------------------------------------------------------------------------
# Shared module machinery: the graph path of a cell, and the dense layers.
# --------------------------------------------------------------------------


def _check_edge_type(edge_type, num_edges: int, ndim: int) -> Tensor:
    check_tensor(edge_type, "edge_type")
    if edge_type.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"'edge_type' must have dtype torch.long, got {edge_type.dtype}")
    if edge_type.dim() != 1 or edge_type.numel() != num_edges:
        raise ValueError(
            f"'edge_type' must have shape [num_edges] = [{num_edges}], got {list(edge_type.shape)}"
        )
    if num_edges > 0:
        lo, hi = int(edge_type.min()), int(edge_type.max())
        if lo < 0 or hi >= ndim:
            raise ValueError(
                f"'edge_type' must hold dimensions in 0..{ndim - 1} (num_edge_types={ndim}), "
                f"got values in [{lo}, {hi}]"
            )
    return edge_type.long()


class LatticeCell(nn.Module):
    """Base of the lattice cells: the graph forward through a schedule.

    Subclasses set ``kernel``, ``slots`` (``R``: state rows per node),
    ``in_channels``, ``hidden_channels``, ``num_dims`` and implement
    :meth:`weights`.
    """

    kernel: object
    slots: int
    in_channels: int
    hidden_channels: int
    num_dims: int

    def weights(self) -> tuple[Tensor, Tensor | None]:
        """``W [F + D*H, gates]``, applied to ``[x ; h_1 ; ... ; h_D]``, and the bias (or None)."""
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        return self.slots * self.hidden_channels

    def _graph_forward(self, x, edge_index, edge_type, order, score, schedule):
        x, edge_type, schedule = self._prepare_graph(x, edge_index, edge_type, order, score,
                                                     schedule)
        x1, W = augment(x, [self])
        xs = x1.index_select(0, schedule.perm)
        h = None
        kernels = backend.kernels_for(xs, W, schedule.perm) if xs.dtype == W.dtype else None
        kind = None if kernels is None else _compiled_kind(kernels, self.kernel)
        if kind is not None:
            try:
                h, c = _compiled_graph_scan(kind, self.num_dims, xs, W[0], schedule, edge_type)
            except kernels.CompileError as error:
                backend.disable_after_failure(error)
        if h is None:
            h, c = self._graph_scan(xs, W, schedule, edge_type)
        h = h.index_select(0, schedule.pos)
        c = c.index_select(0, schedule.pos) if self.kernel.has_memory else None
        return h, c

    # Validation and the schedule read values, and the PyTorch scan loops over the
    # schedule's levels in Python: both run outside a torch.compile'd graph (the
    # compiled loop is an operator, which dynamo traces as one call).
    @torch.compiler.disable
    def _prepare_graph(self, x, edge_index, edge_type, order, score, schedule):
        x = check_node_features(x, None, self.in_channels, "x")
        n = x.size(0)
        edge_index = check_edge_index(edge_index, n)
        edge_type = _check_edge_type(edge_type, edge_index.size(1), self.num_dims)
        if schedule is None:
            schedule = build_schedule(edge_index, n, order=order, score=score)
        else:
            if order is not None or score is not None:
                raise ValueError("give 'schedule' or 'order'/'score', not both")
            schedule.check_graph(n, edge_index)
        return x, edge_type.to(schedule.device), schedule

    @torch.compiler.disable
    def _graph_scan(self, xs, W, schedule, edge_type):
        plan = GraphPlan(schedule, edge_type, self.num_dims, self.slots)
        h, c = scan(self.kernel, plan, xs.unsqueeze(0), W)
        return h[0], (c[0] if self.kernel.has_memory else c)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.hidden_channels}, num_dims={self.num_dims}"

    def __repr__(self) -> str:
        # One line, as PyG convolutions: the parameter layout is in the docstring.
        return f"{self.__class__.__name__}({self.extra_repr()})"


def _check_sizes(sizes, batch: int, spatial: tuple[int, ...], device) -> Tensor:
    if not isinstance(sizes, Tensor):
        try:
            sizes = torch.as_tensor(sizes)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"'sizes' must be an integer tensor [batch, ndim], got {sizes!r}"
            ) from err
    if sizes.is_floating_point() or sizes.is_complex() or sizes.dtype == torch.bool:
        raise TypeError(f"'sizes' must be an integer tensor, got dtype {sizes.dtype}")
    if len(spatial) == 1 and sizes.dim() == 1:
        sizes = sizes[:, None]
    if sizes.dim() != 2 or sizes.shape != (batch, len(spatial)):
        raise ValueError(
            f"'sizes' must have shape [batch, ndim] = [{batch}, {len(spatial)}], "
            f"got {list(sizes.shape)}"
        )
    sizes = sizes.to(device=device, dtype=torch.long)
    hi = torch.tensor(spatial, device=device)
    if bool((sizes < 1).any()) or bool((sizes > hi).any()):
        raise ValueError(
            f"'sizes' must lie in 1..{list(spatial)} (at most the padded input size), "
            f"got {sizes.tolist()}"
        )
    return sizes


class LatticeLayers(nn.Module):
    """Stacked, multi-directional dense lattice layers over ``[B, C, *spatial]``.

    ``cells[l][k]`` is the cell of layer ``l`` and the ``k``-th entry of
    :attr:`directions`. Subclasses build the cells and shape the returned states.
    """

    def __init__(self, input_size, hidden_size, ndim, num_layers, directions, dropout, make_cell):
        super().__init__()
        self.input_size = _positive_int(input_size, "input_size")
        self.hidden_size = _positive_int(hidden_size, "hidden_size")
        self.ndim = _positive_int(ndim, "ndim")
        self.num_layers = _positive_int(num_layers, "num_layers")
        self.directions = resolve_directions(directions, self.ndim)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"'dropout' must be a float, got {type(dropout).__name__}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"'dropout' must be in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        cells = []
        in_size = self.input_size
        for _ in range(self.num_layers):
            row = nn.ModuleList(make_cell(in_size) for _ in self.directions)
            cells.append(row)
            in_size = len(self.directions) * row[0].out_channels
        self.cells = nn.ModuleList(cells)

    def reset_parameters(self) -> None:
        for row in self.cells:
            for cell in row:
                cell.reset_parameters()

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    def _check_input(self, x) -> tuple[int, ...]:
        check_tensor(x, "input")
        if not x.is_floating_point():
            raise TypeError(f"'input' must be a floating point tensor, got dtype {x.dtype}")
        if x.dim() != self.ndim + 2:
            raise ValueError(
                f"'input' must have shape [batch, channels, *spatial] with ndim={self.ndim} "
                f"spatial dimension(s), i.e. {self.ndim + 2} dims, got {list(x.shape)}"
            )
        if x.size(1) != self.input_size:
            raise ValueError(
                f"'input' must have input_size={self.input_size} channels (dim 1), "
                f"got {x.size(1)} in shape {list(x.shape)}"
            )
        if x.numel() == 0:
            raise ValueError(f"'input' must not be empty, got shape {list(x.shape)}")
        return tuple(x.shape[2:])

    def _run(self, x: Tensor, sizes=None, h0: Tensor | None = None, c0: Tensor | None = None):
        """Output ``[B, G*R*H, *spatial]`` and final states ``[num_layers*G, B, R*H]``."""
        spatial = self._check_input(x)
        B, C = x.shape[:2]
        if sizes is not None:
            sizes = _check_sizes(sizes, B, spatial, x.device)
        first = self.cells[0][0]
        width, G = first.out_channels, self.num_directions
        N = math.prod(spatial)
        if sizes is None:
            plan = _cached_plan(spatial, self.directions, B, first.slots, x.device)
        else:
            plan = DensePlan(spatial, self.directions, B, sizes, first.slots, x.device)
        finals_h, finals_c = [], []
        # Between layers the activations stay [B*N, channels], the layout the
        # plan gathers inputs from.
        xr = x.reshape(B, C, N).transpose(1, 2).reshape(B * N, C)
        for layer, row in enumerate(self.cells):
            if layer > 0 and self.dropout > 0 and self.training:
                xr = F.dropout(xr, self.dropout, training=True)
            x1, W = augment(xr, row)
            xs = _RowGather.apply(x1, plan.x_idx, plan.x_inv, G, None).view(G, N * B, -1)
            hl = None if h0 is None else h0[layer * G : (layer + 1) * G]
            cl = None if c0 is None else c0[layer * G : (layer + 1) * G]
            h_buf, c_buf = scan(row[0].kernel, plan, xs, W, hl, cl)
            h_flat = h_buf.view(-1, width)
            finals_h.append(h_flat.index_select(0, plan.last).view(G, B, width))
            if row[0].kernel.has_memory:
                c_last = c_buf.view(-1, width).index_select(0, plan.last)
                finals_c.append(c_last.view(G, B, width))
            states = _RowGather.apply(h_flat, plan.out_idx, plan.out_inv, 1, plan.boundary)
            states = states.view(G, B, N, width)
            if layer + 1 < self.num_layers:
                xr = states.permute(1, 2, 0, 3).reshape(B * N, G * width)
        out = states.permute(1, 0, 3, 2).reshape(B, G * width, *spatial)
        if plan.mask is not None:
            out = out * plan.mask.view(B, 1, *spatial).to(out.dtype)
        h_n = torch.cat(finals_h)
        c_n = torch.cat(finals_c) if finals_c else None
        return out, h_n, c_n

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, ndim={self.ndim}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        s += f", directions={list(self.directions)}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"'{name}' must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"'{name}' must be positive, got {value}")
    return int(value)
