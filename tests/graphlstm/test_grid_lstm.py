"""Grid LSTM: naive references, graph vs dense, gradients, sizes, errors."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from graphlstm.lattice import lattice_graph
from graphlstm.nn.grid_lstm import GridLSTM, GridLSTMCell
from graphlstm.reference.lattice import graph_scan_reference, lattice_scan_reference
from tests.helpers import flat_tensors

D64 = torch.float64
TOL = dict(atol=1e-10, rtol=0)




@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2)])
@pytest.mark.parametrize("tied", [False, True])
def test_dense_grid_lstm_equals_naive_loop_in_every_direction(shape, tied):
    torch.manual_seed(0)
    D, H = len(shape), 3
    layer = GridLSTM(2, H, D, directions="all", tied=tied).to(D64)
    x = torch.randn(2, 2, *shape, dtype=D64)
    out, (h_n, m_n) = layer(x)
    w = D * H
    assert out.shape == (2, 2**D * w, *shape)
    assert h_n.shape == m_n.shape == (2**D, 2, w)
    for k in range(2**D):
        h, m = lattice_scan_reference(layer.cells[0][k], x, k)
        torch.testing.assert_close(out[:, w * k : w * (k + 1)], h, **TOL)
        corner = tuple(0 if k >> d & 1 else n - 1 for d, n in enumerate(shape))
        torch.testing.assert_close(h_n[k], h[(slice(None), slice(None), *corner)], **TOL)
        torch.testing.assert_close(m_n[k], m[(slice(None), slice(None), *corner)], **TOL)


def test_stacked_grid_layers_feed_the_direction_concatenation():
    torch.manual_seed(1)
    layer = GridLSTM(2, 2, 2, num_layers=2, directions=[1, 2]).to(D64)
    assert layer.cells[1][0].lin[0].in_features == 2 * 4 + 4
    x = torch.randn(1, 2, 3, 3, dtype=D64)
    out = layer(x)[0]
    first = torch.cat([lattice_scan_reference(layer.cells[0][k], x, d)[0]
                       for k, d in enumerate((1, 2))], dim=1)
    second = [lattice_scan_reference(layer.cells[1][k], first, d)[0] for k, d in enumerate((1, 2))]
    torch.testing.assert_close(out, torch.cat(second, dim=1), **TOL)


@pytest.mark.parametrize("tied", [False, True])
def test_dense_fast_path_equals_graph_path(tied):
    torch.manual_seed(2)
    shape = (3, 2, 3)
    D, N, H = 3, math.prod(shape), 2
    layer = GridLSTM(2, H, D, directions=[0, 6, 7], tied=tied).to(D64)
    x = torch.randn(1, 2, *shape, dtype=D64)
    out = layer(x)[0]
    xn = x.reshape(2, N).t()
    for k, direction in enumerate(layer.directions):
        ei, et, order = lattice_graph(shape, direction)
        h, (hs, ms) = layer.cells[0][k](xn, ei, et, order)
        assert hs.shape == ms.shape == (N, D, H)
        torch.testing.assert_close(hs.reshape(N, D * H), h)
        dense = out[0, D * H * k : D * H * (k + 1)].reshape(D * H, N).t()
        torch.testing.assert_close(h, dense, **TOL)


def _check_general_typed_graph(cell):
    """A 2-type graph with several predecessors of one type, unvisited edges and an
    isolated node: the cell's graph path against the sequential pass."""
    edge_index = torch.tensor([[0, 1, 0, 2, 3, 4, 2, 4, 1], [2, 2, 3, 3, 1, 1, 4, 4, 0]])
    edge_type = torch.tensor([0, 0, 1, 1, 0, 1, 1, 0, 1])
    order = torch.tensor([0, 3, 1, 2, 4, 5])
    x = torch.randn(6, 3, dtype=D64)
    out, (_, m) = cell(x, edge_index, edge_type, order)
    h_ref, m_ref = graph_scan_reference(cell, x, edge_index, edge_type, order)
    torch.testing.assert_close(out, h_ref, **TOL)
    torch.testing.assert_close(m.reshape(6, 4), m_ref, **TOL)


@pytest.mark.parametrize("tied", [False, True])
def test_graph_path_equals_sequential_pass_on_a_general_typed_graph(tied):
    torch.manual_seed(3)
    cell = GridLSTMCell(3, 2, 2, tied=tied).to(D64)
    _check_general_typed_graph(cell)


@pytest.mark.parametrize("tied", [False, True])
def test_gradcheck_dense_and_graph(tied):
    torch.manual_seed(4)
    layer = GridLSTM(2, 2, 2, directions=[0, 3], tied=tied).to(D64)
    x = torch.randn(2, 2, 2, 3, dtype=D64, requires_grad=True)
    sizes = torch.tensor([[2, 3], [1, 2]])
    assert gradcheck(lambda x, *p: flat_tensors(layer(x, sizes=sizes)), (x, *layer.parameters()))
    cell = layer.cells[0][1]
    ei, et, order = lattice_graph((2, 2), 3)
    xn = torch.randn(4, 2, dtype=D64, requires_grad=True)
    assert gradcheck(lambda x, *p: flat_tensors(cell(x, ei, et, order)), (xn, *cell.parameters()))


def test_padded_batch_with_sizes_equals_each_sample_alone():
    torch.manual_seed(5)
    layer = GridLSTM(2, 2, 2, directions="all").to(D64)
    sizes = torch.tensor([[3, 4], [2, 2]])
    x = torch.randn(2, 2, 3, 4, dtype=D64)
    out, (h_n, m_n) = layer(x, sizes=sizes)
    for b, (n0, n1) in enumerate(sizes.tolist()):
        alone, (h1, m1) = layer(x[b : b + 1, :, :n0, :n1])
        torch.testing.assert_close(out[b : b + 1, :, :n0, :n1], alone, **TOL)
        torch.testing.assert_close(h_n[:, b], h1[:, 0], **TOL)
        torch.testing.assert_close(m_n[:, b], m1[:, 0], **TOL)


def test_parameters_repr_and_errors():
    cell = GridLSTMCell(3, 4, 2)
    assert [tuple(lin.weight.shape) for lin in cell.lin] == [(16, 11), (16, 11)]
    assert len(GridLSTMCell(3, 4, 2, tied=True).lin) == 1
    assert repr(cell) == "GridLSTMCell(3, 4, num_dims=2)"
    assert "tied=True" in repr(GridLSTMCell(3, 4, 2, tied=True))
    with pytest.raises(ValueError, match="'num_dims' must be positive"):
        GridLSTMCell(3, 4, 0)
    with pytest.raises(TypeError, match="'in_channels' must be an int"):
        GridLSTMCell("3", 4, 2)
    layer = GridLSTM(3, 4, 2)
    with pytest.raises(ValueError, match="with ndim=2 spatial dimension"):
        layer(torch.randn(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"'directions' must be in 0\.\.3"):
        GridLSTM(3, 4, 2, directions=[4])
    ei, et, order = lattice_graph((2, 2))
    with pytest.raises(ValueError, match=r"'edge_type' must hold dimensions in 0\.\.1"):
        cell(torch.randn(4, 3), ei, et + 2, order)


# --------------------------------------------------------------------------
# Priority dimensions and non-LSTM dimensions (paper §3.4-3.5).
# --------------------------------------------------------------------------

# (priority, non_lstm, non_lstm_activation); D-dependent picks use -1 for D - 1.
OPTIONS_2D = [
    (0, (), "tanh"),
    (1, (), "tanh"),
    (None, (1,), "tanh"),
    (0, (1,), "relu"),
    (1, (1,), "identity"),
    (0, (0, 1), "tanh"),
]
OPTIONS_3D = [
    (1, (), "tanh"),
    (2, (0,), "identity"),
    (1, (1,), "relu"),
    (None, (0, 2), "tanh"),
]


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize(
    "shape, options",
    [((3, 4), o) for o in OPTIONS_2D] + [((2, 3, 2), o) for o in OPTIONS_3D],
)
def test_priority_and_non_lstm_dense_equal_naive_loop(shape, options, tied):
    torch.manual_seed(6)
    priority, non_lstm, act = options
    D, H = len(shape), 2
    layer = GridLSTM(
        2, H, D, directions="all", tied=tied, priority=priority, non_lstm=non_lstm,
        non_lstm_activation=act,
    ).to(D64)
    x = torch.randn(2, 2, *shape, dtype=D64)
    out, (h_n, m_n) = layer(x)
    w = D * H
    for k in range(2**D):
        h, m = lattice_scan_reference(layer.cells[0][k], x, k)
        torch.testing.assert_close(out[:, w * k : w * (k + 1)], h, **TOL)
        corner = tuple(0 if k >> d & 1 else n - 1 for d, n in enumerate(shape))
        torch.testing.assert_close(m_n[k], m[(slice(None), slice(None), *corner)], **TOL)
        for d in non_lstm:
            assert m_n[k, :, d * H : (d + 1) * H].abs().max() == 0


def test_priority_dimension_reads_the_other_dimensions_new_outputs():
    torch.manual_seed(7)
    plain = GridLSTMCell(3, 4, 3).to(D64)
    prio = GridLSTMCell(3, 4, 3, priority=1).to(D64)
    prio.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, dtype=D64)
    ei = torch.tensor([[0], [1]])
    et = torch.tensor([2])
    _, (h0, m0) = plain(x, ei, et, torch.tensor([0, 1]))
    _, (h1, m1) = prio(x, ei, et, torch.tensor([0, 1]))
    # Node 0 reads zeros: the other dimensions are unchanged, and dimension 1
    # is the same map applied to [x ; h'_0 ; 0 ; h'_2].
    torch.testing.assert_close(h1[0, [0, 2]], h0[0, [0, 2]], **TOL)
    hp = torch.cat([x[0], h0[0, 0], torch.zeros(4, dtype=D64), h0[0, 2]])
    u, f, o, c = prio.lin[1](hp).chunk(4)
    m = torch.sigmoid(u) * torch.tanh(c)
    torch.testing.assert_close(m1[0, 1], m, **TOL)
    torch.testing.assert_close(h1[0, 1], torch.tanh(torch.sigmoid(o) * m), **TOL)
    assert (h1[0, 1] - h0[0, 1]).abs().max() > 1e-3


def test_non_lstm_dimension_is_a_feed_forward_map_without_memory():
    torch.manual_seed(8)
    cell = GridLSTMCell(3, 4, 2, non_lstm=[1], non_lstm_activation="identity").to(D64)
    assert [tuple(lin.weight.shape) for lin in cell.lin] == [(16, 11), (4, 11)]
    x = torch.randn(2, 3, dtype=D64)
    _, (h, m) = cell(x, torch.tensor([[0], [1]]), torch.tensor([1]), torch.tensor([0, 1]))
    torch.testing.assert_close(h[0, 1], cell.lin[1](torch.cat([x[0], x.new_zeros(8)])), **TOL)
    # Node 1 reads only h along dimension 1.
    torch.testing.assert_close(
        h[1, 1], cell.lin[1](torch.cat([x[1], x.new_zeros(4), h[0, 1]])), **TOL
    )
    assert m[:, 1].abs().max() == 0 and m[:, 0].abs().min() > 0


def test_one_dimension_priority_changes_nothing_and_stacked_layers_match():
    torch.manual_seed(9)
    plain = GridLSTM(2, 3, 1, directions=2).to(D64)
    prio = GridLSTM(2, 3, 1, directions=2, priority=0).to(D64)
    prio.load_state_dict(plain.state_dict())
    x = torch.randn(2, 2, 5, dtype=D64)
    for a, b in zip(flat_tensors(plain(x)), flat_tensors(prio(x)), strict=True):
        assert torch.equal(a, b)
    layer = GridLSTM(2, 2, 2, num_layers=2, directions=[0, 3], priority=1, non_lstm=[0]).to(D64)
    assert layer.cells[1][0].lin[0].in_features == 2 * 4 + 4
    x = torch.randn(1, 2, 3, 3, dtype=D64)
    first = torch.cat([lattice_scan_reference(layer.cells[0][k], x, d)[0]
                       for k, d in enumerate((0, 3))], dim=1)
    second = [lattice_scan_reference(layer.cells[1][k], first, d)[0] for k, d in enumerate((0, 3))]
    torch.testing.assert_close(layer(x)[0], torch.cat(second, dim=1), **TOL)


@pytest.mark.parametrize("tied", [False, True])
def test_priority_and_non_lstm_dense_path_equals_graph_path(tied):
    torch.manual_seed(10)
    shape = (3, 2, 3)
    D, N, H = 3, math.prod(shape), 2
    layer = GridLSTM(
        2, H, D, directions=[0, 5, 7], tied=tied, priority=2, non_lstm=(0,),
        non_lstm_activation="relu",
    ).to(D64)
    x = torch.randn(1, 2, *shape, dtype=D64)
    out, (_, m_n) = layer(x)
    xn = x.reshape(2, N).t()
    for k, direction in enumerate(layer.directions):
        ei, et, order = lattice_graph(shape, direction)
        h, (_, ms) = layer.cells[0][k](xn, ei, et, order)
        dense = out[0, D * H * k : D * H * (k + 1)].reshape(D * H, N).t()
        torch.testing.assert_close(h, dense, **TOL)
        torch.testing.assert_close(ms[order[-1]].reshape(-1), m_n[k, 0], **TOL)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("options", [(0, (1,), "tanh"), (1, (1,), "relu"), (1, (), "tanh")])
def test_priority_and_non_lstm_graph_path_equals_sequential_pass(options, tied):
    torch.manual_seed(11)
    priority, non_lstm, act = options
    cell = GridLSTMCell(
        3, 2, 2, tied=tied, priority=priority, non_lstm=non_lstm, non_lstm_activation=act
    ).to(D64)
    _check_general_typed_graph(cell)


@pytest.mark.parametrize(
    "shape, tied, options",
    [
        ((2, 3), False, (1, (0,), "tanh")),
        ((2, 3), True, (0, (), "tanh")),
        # Tied, the first stage's two LSTM dimensions 0 and 2 share one map.
        ((2, 2, 2), True, (1, (1,), "identity")),
        ((2, 2, 2), False, (None, (0, 2), "relu")),
    ],
)
def test_gradcheck_priority_and_non_lstm(shape, tied, options):
    torch.manual_seed(12)
    priority, non_lstm, act = options
    D = len(shape)
    layer = GridLSTM(
        2, 2, D, directions=[0, 2**D - 1], tied=tied, priority=priority, non_lstm=non_lstm,
        non_lstm_activation=act,
    ).to(D64)
    x = torch.randn(2, 2, *shape, dtype=D64, requires_grad=True)
    sizes = torch.tensor([list(shape), [1, *shape[1:]]])
    assert gradcheck(lambda x, *p: flat_tensors(layer(x, sizes=sizes)), (x, *layer.parameters()))
    cell = layer.cells[0][1]
    ei, et, order = lattice_graph(shape, 2**D - 1)
    xn = torch.randn(len(order), 2, dtype=D64, requires_grad=True)
    assert gradcheck(lambda x, *p: flat_tensors(cell(x, ei, et, order)), (xn, *cell.parameters()))


def test_priority_and_non_lstm_parameters_repr_and_errors():
    shapes = lambda cell: [tuple(lin.weight.shape) for lin in cell.lin]  # noqa: E731
    assert shapes(GridLSTMCell(3, 4, 2, priority=1)) == [(16, 11), (16, 11)]
    assert shapes(GridLSTMCell(3, 4, 2, tied=True, priority=1)) == [(16, 11)]
    assert shapes(GridLSTMCell(3, 4, 2, non_lstm=(0,))) == [(4, 11), (16, 11)]
    assert shapes(GridLSTMCell(3, 4, 2, tied=True, non_lstm=(0,))) == [(16, 11), (4, 11)]
    assert shapes(GridLSTMCell(3, 4, 2, tied=True, non_lstm=(0, 1))) == [(4, 11)]
    cell = GridLSTMCell(3, 4, 3, priority=2, non_lstm=[2, 0], non_lstm_activation="relu")
    assert cell.non_lstm == (0, 2)
    assert repr(cell) == (
        "GridLSTMCell(3, 4, num_dims=3, priority=2, non_lstm=(0, 2), non_lstm_activation='relu')"
    )
    assert "priority=0, non_lstm=(1,)" in repr(GridLSTM(3, 4, 2, priority=0, non_lstm=[1]))
    assert repr(GridLSTM(3, 4, 2)).startswith("GridLSTM(\n  3, 4, ndim=2, directions=[0]\n")
    for make in (GridLSTMCell, GridLSTM):
        with pytest.raises(ValueError, match=r"'priority' must be in 0\.\.1"):
            make(3, 4, 2, priority=2)
        with pytest.raises(ValueError, match=r"'priority' must be in 0\.\.1"):
            make(3, 4, 2, priority=-1)
        with pytest.raises(TypeError, match="'priority' must be None or an int"):
            make(3, 4, 2, priority=True)
        with pytest.raises(ValueError, match=r"'non_lstm' must hold dimensions in 0\.\.1"):
            make(3, 4, 2, non_lstm=(2,))
        with pytest.raises(ValueError, match="'non_lstm' must not repeat a dimension"):
            make(3, 4, 2, non_lstm=[1, 1])
        with pytest.raises(TypeError, match="'non_lstm' must be a collection"):
            make(3, 4, 2, non_lstm=1)
        with pytest.raises(TypeError, match="'non_lstm' must hold ints"):
            make(3, 4, 2, non_lstm=[0.0])
        with pytest.raises(ValueError, match="'non_lstm_activation' must be one of"):
            make(3, 4, 2, non_lstm=[0], non_lstm_activation="sigmoid")
        with pytest.raises(TypeError, match="'non_lstm_activation' must be a str"):
            make(3, 4, 2, non_lstm_activation=None)
