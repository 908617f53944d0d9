"""Lattice graphs: edges, types and raster orders against coordinate enumeration."""

import itertools
import math

import pytest
import torch

from graphlstm.lattice import lattice_graph, lattice_order, resolve_directions
from graphlstm.schedule import build_schedule

SHAPES = [(5,), (1,), (3, 4), (1, 3), (2, 3, 4)]



def _expected(shape, direction):
    """Edges and order by brute force over coordinate tuples."""
    D = len(shape)
    back = [bool(direction >> d & 1) for d in range(D)]
    cells = list(itertools.product(*map(range, shape)))
    index = {p: n for n, p in enumerate(cells)}
    edges = set()
    for p in cells:
        for d in range(D):
            q = list(p)
            q[d] += -1 if back[d] else 1
            if 0 <= q[d] < shape[d]:
                edges.add((index[p], index[tuple(q)], d))
    key = [tuple(-c if back[d] else c for d, c in enumerate(p)) for p in cells]
    order = sorted(range(len(cells)), key=lambda n: key[n])
    return edges, order


@pytest.mark.parametrize("shape", SHAPES)
def test_lattice_graph_matches_coordinate_enumeration(shape):
    for direction in range(2 ** len(shape)):
        edge_index, edge_type, order = lattice_graph(shape, direction)
        edges, expected_order = _expected(shape, direction)
        got = set(zip(*edge_index.tolist(), edge_type.tolist(), strict=True))
        assert got == edges
        assert edge_index.size(1) == len(edges)  # no duplicates
        assert order.tolist() == expected_order
        assert torch.equal(order, lattice_order(shape, direction))
        assert edge_index.dtype == edge_type.dtype == order.dtype == torch.long


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4)])
def test_lattice_edges_follow_the_order_and_levels_are_anti_diagonals(shape):
    for direction in range(2 ** len(shape)):
        edge_index, _, order = lattice_graph(shape, direction)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        assert bool((rank[edge_index[0]] < rank[edge_index[1]]).all())
        s = build_schedule(edge_index, math.prod(shape), order=order)
        assert s.num_levels == sum(n - 1 for n in shape) + 1
        # The level of a cell is its coordinate sum in the scan frame.
        coords = torch.stack(torch.unravel_index(torch.arange(math.prod(shape)), shape), 1)
        back = torch.tensor([bool(direction >> d & 1) for d in range(len(shape))])
        frame = torch.where(back, torch.tensor(shape) - 1 - coords, coords)
        assert torch.equal(s.level, frame.sum(1))


def test_lattice_graph_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="'shape' must have at least one dimension"):
        lattice_graph(())
    with pytest.raises(ValueError, match="'shape' must hold positive sizes"):
        lattice_graph((3, 0))
    with pytest.raises(TypeError, match="'shape' must hold ints"):
        lattice_graph((3, 2.0))
    with pytest.raises(TypeError, match="'shape' must be a sequence of ints"):
        lattice_graph("34")
    with pytest.raises(TypeError, match="'shape' must be a sequence of ints"):
        lattice_graph(5)
    with pytest.raises(ValueError, match=r"'direction' must be in 0\.\.3"):
        lattice_graph((3, 4), direction=4)
    with pytest.raises(ValueError, match="'direction'"):
        lattice_graph((3, 4), direction=-1)
    with pytest.raises(TypeError, match="'direction' must be an int"):
        lattice_graph((3, 4), direction=True)
    with pytest.raises(TypeError, match="'direction' must be an int"):
        lattice_graph((3, 4), direction=1.0)


def test_resolve_directions():
    assert resolve_directions(1, 2) == (0,)
    assert resolve_directions(2, 1) == (0, 1)
    assert resolve_directions("all", 3) == tuple(range(8))
    assert resolve_directions([3, 0], 2) == (3, 0)
    with pytest.raises(ValueError, match=r"'directions' as a count must be in 1\.\.4"):
        resolve_directions(5, 2)
    with pytest.raises(ValueError, match="'directions' as a count"):
        resolve_directions(0, 2)
    with pytest.raises(ValueError, match="'directions' must be an int, 'all'"):
        resolve_directions("both", 1)
    with pytest.raises(ValueError, match="'directions' must not repeat"):
        resolve_directions([1, 1], 2)
    with pytest.raises(ValueError, match="'directions' must not be empty"):
        resolve_directions([], 2)
    with pytest.raises(ValueError, match=r"'directions' must be in 0\.\.1"):
        resolve_directions([2], 1)
    with pytest.raises(TypeError, match="'directions'"):
        resolve_directions(1.5, 2)
