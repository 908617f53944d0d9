"""GraphLSTM on PyG's ``Adj`` formats: sparse adjacency matrices read like PyG's convs."""

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric import EdgeIndex
from torch_geometric.data import Data
from torch_geometric.nn import GraphConv

import graphlstm._adjacency as adjacency
import graphlstm.nn.graph_lstm as graph_lstm_module
import graphlstm.schedule as schedule_module
from graphlstm import GraphLSTM

DT = torch.float64
LAYOUTS = [torch.sparse_coo, torch.sparse_csr, torch.sparse_csc]


def make_case(seed=0, n=15, e=50):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=gen)  # directed, with duplicates
    weight = 0.1 + torch.rand(e, generator=gen, dtype=DT)
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    state = tuple(torch.randn(n, 4, generator=gen, dtype=DT) for _ in "hm")
    order = torch.randperm(n, generator=gen)
    torch.manual_seed(seed)
    layer = GraphLSTM(3, 4).to(DT)
    return layer, x, edge_index, weight, state, order


def adj_t(edge_index, weight, n, layout):
    """The transposed adjacency of PyG's own ToSparseTensor transform (which makes
    COO and CSR; CSC is converted from CSR)."""
    pyg_layout = torch.sparse_csr if layout == torch.sparse_csc else layout
    data = Data(edge_index=edge_index, edge_weight=weight, num_nodes=n)
    adj = T.ToSparseTensor(layout=pyg_layout)(data).adj_t
    return adj.to_sparse_csc() if layout == torch.sparse_csc else adj


def test_pyg_reads_a_sparse_adjacency_as_the_transposed_one():
    # The convention followed here, checked on a PyG conv: adj_t[i, j] is j -> i.
    _, x, edge_index, weight, _, _ = make_case()
    conv = GraphConv(3, 2).to(DT)
    dense = torch.zeros(15, 15, dtype=DT).index_put_((edge_index[1], edge_index[0]), weight,
                                                      accumulate=True)
    torch.testing.assert_close(conv(x, edge_index, weight), conv(x, dense.to_sparse()))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_state", [False, True])
def test_sparse_adjacency_equals_edge_index_and_weights(layout, with_state):
    layer, x, edge_index, weight, state, order = make_case(1)
    state = state if with_state else None
    adj = adj_t(edge_index, weight, 15, layout)
    assert adj.layout == layout
    out, (_, m) = layer(x, adj, order=order, state=state)
    out_ref, (_, m_ref) = layer(x, edge_index, weight, order=order, state=state)
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(m, m_ref, atol=1e-12, rtol=0)


def test_uncoalesced_coo_sums_duplicates_and_passes_gradients_to_values():
    layer, x, edge_index, weight, state, order = make_case(2)
    values = weight.clone().requires_grad_()
    adj = torch.sparse_coo_tensor(edge_index.flip(0), values, (15, 15))  # row = target
    assert not adj.is_coalesced()
    out, _ = layer(x, adj, order=order, state=state)
    out.square().sum().backward()
    w = weight.clone().requires_grad_()
    out_ref, _ = layer(x, edge_index, w, order=order, state=state)
    out_ref.square().sum().backward()
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(values.grad, w.grad, atol=1e-12, rtol=0)


def test_schedule_of_a_sparse_adjacency_is_reused(monkeypatch):
    layer, x, edge_index, weight, state, order = make_case(3)
    adj = adj_t(edge_index, weight, 15, torch.sparse_csr)
    schedule = layer.schedule(adj, 15, order=order)
    expected, _ = layer(x, adj, order=order, state=state)
    index_order, _ = layer(x, adj, state=state)
    assert not torch.allclose(expected, index_order)  # the order shows in the output

    def no_schedule(*args, **kwargs):
        raise AssertionError("a schedule was built although one was given")

    monkeypatch.setattr(graph_lstm_module, "build_schedule", no_schedule)
    monkeypatch.setattr(schedule_module, "build_schedule", no_schedule)
    out, _ = layer(x, adj, schedule=schedule, state=state)
    assert torch.equal(out, expected)


def test_edge_index_object_takes_weights():
    layer, x, edge_index, weight, state, order = make_case(4)
    ei = EdgeIndex(edge_index, sparse_size=(15, 15))
    out_a, _ = layer(x, ei, weight, order=order, state=state)
    out_b, _ = layer(x, edge_index, weight, order=order, state=state)
    assert torch.equal(out_a, out_b)


class FakeSparseTensor:
    """The part of torch_sparse.SparseTensor's interface the layer reads."""

    def __init__(self, row, col, value, sizes):
        self._coo, self._sizes = (row, col, value), sizes

    def coo(self):
        return self._coo

    def sparse_sizes(self):
        return self._sizes


@pytest.mark.parametrize("weighted", [False, True])
def test_torch_sparse_tensor_is_read_as_adj_t(monkeypatch, weighted):
    # torch_sparse is not installed here; torch_geometric.typing then exposes a
    # placeholder class, which nothing is an instance of. Stand in for it.
    monkeypatch.setattr(adjacency, "SparseTensor", FakeSparseTensor)
    layer, x, edge_index, weight, state, order = make_case(5)
    value = weight if weighted else None
    adj = FakeSparseTensor(edge_index[1], edge_index[0], value, (15, 15))
    out, _ = layer(x, adj, order=order, state=state)
    out_ref, _ = layer(x, edge_index, value, order=order, state=state)
    torch.testing.assert_close(out, out_ref, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match=r"\[15, 15\]"):
        layer(x, FakeSparseTensor(edge_index[1], edge_index[0], value, (15, 16)))


def test_without_torch_sparse_the_placeholder_matches_nothing():
    from torch_geometric.typing import WITH_TORCH_SPARSE

    _, _, edge_index, weight, _, _ = make_case()
    assert not adjacency.is_sparse_adjacency(edge_index)
    assert adjacency.is_sparse_adjacency(adj_t(edge_index, weight, 15, torch.sparse_csr))
    if not WITH_TORCH_SPARSE:
        assert not isinstance(edge_index, adjacency.SparseTensor)


@pytest.mark.parametrize(
    "make, kwargs, exc, match",
    [
        (lambda ei, w: torch.sparse_coo_tensor(ei, w, (15, 14)), {}, ValueError,
         r"sparse adjacency matrix of shape \[15, 15\]"),
        (lambda ei, w: torch.sparse_coo_tensor(ei, w, (16, 16)), {}, ValueError,
         r"\[15, 15\] .*got \[16, 16\]"),
        (lambda ei, w: torch.sparse_coo_tensor(ei, w, (15, 15)),
         dict(edge_weight=torch.ones(50, dtype=DT)), ValueError, "do not give 'edge_weight'"),
        (lambda ei, w: torch.sparse_coo_tensor(ei, -w, (15, 15)), {}, ValueError,
         r"'edge_index.values\(\)' must be non-negative"),
        (lambda ei, w: torch.sparse_coo_tensor(ei, torch.ones(50, dtype=torch.long), (15, 15)),
         {}, TypeError, r"'edge_index.values\(\)' must be a floating"),
        (lambda ei, w: torch.sparse_coo_tensor(ei, w[:, None].expand(-1, 2), (15, 15, 2)),
         {}, ValueError, r"shape \[15, 15\] .*got \[15, 15, 2\]"),
    ],
)
def test_bad_sparse_adjacency(make, kwargs, exc, match):
    layer, x, edge_index, weight, _, _ = make_case(6)
    with pytest.raises(exc, match=match):
        layer(x, make(edge_index.flip(0), weight), **kwargs)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("layout", [torch.sparse_coo, torch.sparse_csr])
def test_every_available_device_reads_sparse_adjacency(device, layout):
    layer, x, edge_index, weight, state, order = make_case(7)
    expected, _ = layer(x, edge_index, weight, order=order, state=state)
    adj = adj_t(edge_index, weight, 15, layout).to(device)
    out, _ = layer.to(device)(x.to(device), adj, order=order.to(device),
                              state=tuple(t.to(device) for t in state))
    assert out.device.type == torch.device(device).type
    torch.testing.assert_close(out.cpu(), expected, atol=1e-12, rtol=0)
