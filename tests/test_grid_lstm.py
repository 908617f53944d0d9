"""Grid LSTM: naive references, graph vs dense, gradients, sizes, errors."""

import math

import pytest
import torch
from helpers import flat_tensors
from torch.autograd import gradcheck

from graphlstm.lattice import lattice_graph
from graphlstm.nn.grid_lstm import GridLSTM, GridLSTMCell
from graphlstm.reference.lattice import graph_scan_reference, lattice_scan_reference

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


@pytest.mark.parametrize("tied", [False, True])
def test_graph_path_equals_sequential_pass_on_a_general_typed_graph(tied):
    torch.manual_seed(3)
    cell = GridLSTMCell(3, 2, 2, tied=tied).to(D64)
    edge_index = torch.tensor([[0, 1, 0, 2, 3, 4, 2, 4, 1], [2, 2, 3, 3, 1, 1, 4, 4, 0]])
    edge_type = torch.tensor([0, 0, 1, 1, 0, 1, 1, 0, 1])
    order = torch.tensor([0, 3, 1, 2, 4, 5])
    x = torch.randn(6, 3, dtype=D64)
    out, (_, m) = cell(x, edge_index, edge_type, order)
    h_ref, m_ref = graph_scan_reference(cell, x, edge_index, edge_type, order)
    torch.testing.assert_close(out, h_ref, **TOL)
    torch.testing.assert_close(m.reshape(6, 4), m_ref, **TOL)


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
