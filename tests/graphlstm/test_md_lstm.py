"""MD-LSTM / MD-RNN: torch.nn parity, naive references, graph vs dense, gradients, errors."""

import math

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from graphlstm.lattice import lattice_graph
from graphlstm.nn.md_lstm import MDLSTM, MDRNN, MDLSTMCell, MDRNNCell
from graphlstm.reference.lattice import graph_scan_reference, lattice_scan_reference
from graphlstm.schedule import build_schedule
from tests.helpers import flat_tensors

D64 = torch.float64
TOL = dict(atol=1e-10, rtol=0)




# ------------------------------------------------------------------ torch.nn parity


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_mdlstm_from_torch_lstm_two_layers_bidirectional(batch_first, with_hx):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(5, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    ref = ref.to(D64)
    x = torch.randn(3, 7, 5, dtype=D64)  # [B, T, C]
    hx = None
    if with_hx:
        hx = (torch.randn(4, 3, 4, dtype=D64), torch.randn(4, 3, 4, dtype=D64))
    out_ref, (h_ref, c_ref) = ref(x if batch_first else x.transpose(0, 1), hx)
    if not batch_first:
        out_ref = out_ref.transpose(0, 1)
    layer = MDLSTM.from_torch(ref)
    assert layer.cells[1][1].lin_x.weight.dtype == D64
    out, (h, c) = layer(x.transpose(1, 2), hx)
    assert out.shape == (3, 8, 7)
    torch.testing.assert_close(out.transpose(1, 2), out_ref, **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(c, c_ref, **TOL)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_mdrnn_from_torch_rnn_two_layers_bidirectional(nonlinearity):
    torch.manual_seed(1)
    ref = torch.nn.RNN(5, 4, num_layers=2, bidirectional=True, nonlinearity=nonlinearity)
    ref = ref.to(D64)
    x = torch.randn(6, 3, 5, dtype=D64)  # [T, B, C]
    h0 = torch.randn(4, 3, 4, dtype=D64)
    out_ref, h_ref = ref(x, h0)
    layer = MDRNN.from_torch(ref)
    out, h = layer(x.permute(1, 2, 0), h0)
    torch.testing.assert_close(out.permute(2, 0, 1), out_ref, **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)


def test_mdlstm_sizes_match_packed_sequences():
    torch.manual_seed(2)
    ref = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True).to(D64)
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, 3, dtype=D64)
    hx = (torch.randn(4, 3, 4, dtype=D64), torch.randn(4, 3, 4, dtype=D64))
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_ref, (h_ref, c_ref) = ref(packed, hx)
    out_ref, _ = pad_packed_sequence(out_ref, batch_first=True, total_length=6)
    out, (h, c) = MDLSTM.from_torch(ref)(x.transpose(1, 2), hx, sizes=lengths)
    torch.testing.assert_close(out.transpose(1, 2), out_ref, **TOL)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(c, c_ref, **TOL)


# ------------------------------------------------------------------ naive references


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2)])
@pytest.mark.parametrize("kind", ["lstm", "stable", "rnn", "relu"])
def test_dense_layer_equals_naive_loop_in_every_direction(shape, kind):
    torch.manual_seed(3)
    D = len(shape)
    if kind in ("rnn", "relu"):
        nl = "tanh" if kind == "rnn" else "relu"
        layer = MDRNN(3, 4, D, directions="all", nonlinearity=nl).to(D64)
    else:
        layer = MDLSTM(3, 4, D, directions="all", stable=kind == "stable").to(D64)
    x = torch.randn(2, 3, *shape, dtype=D64)
    out, states = layer(x)
    h_n = states if kind in ("rnn", "relu") else states[0]
    assert out.shape == (2, 4 * 2**D, *shape)
    for k in range(2**D):
        h, c = lattice_scan_reference(layer.cells[0][k], x, k)
        torch.testing.assert_close(out[:, 4 * k : 4 * k + 4], h, **TOL)
        # The final state is the one of the scan's last cell: the far corner.
        corner = tuple(0 if k >> d & 1 else n - 1 for d, n in enumerate(shape))
        torch.testing.assert_close(h_n[k], h[(slice(None), slice(None), *corner)], **TOL)
        if c is not None:
            torch.testing.assert_close(states[1][k], c[(slice(None), slice(None), *corner)])


def test_stacked_layers_feed_the_direction_concatenation():
    torch.manual_seed(4)
    layer = MDLSTM(2, 3, 2, num_layers=2, directions=[0, 3]).to(D64)
    x = torch.randn(2, 2, 3, 3, dtype=D64)
    out, (h_n, _) = layer(x)
    first = torch.cat([lattice_scan_reference(layer.cells[0][k], x, d)[0]
                       for k, d in enumerate((0, 3))], dim=1)
    second = [lattice_scan_reference(layer.cells[1][k], first, d)[0] for k, d in enumerate((0, 3))]
    torch.testing.assert_close(out, torch.cat(second, dim=1), **TOL)
    torch.testing.assert_close(h_n[2], second[0][:, :, -1, -1], **TOL)
    torch.testing.assert_close(h_n[3], second[1][:, :, 0, 0], **TOL)


# ------------------------------------------------------------------ graph path


@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 3)])
@pytest.mark.parametrize("cls", [MDLSTM, MDRNN])
def test_dense_fast_path_equals_graph_path(shape, cls):
    torch.manual_seed(5)
    D, N = len(shape), math.prod(shape)
    layer = cls(3, 4, D, directions="all").to(D64)
    x = torch.randn(2, 3, *shape, dtype=D64)
    out = layer(x)[0]
    for k in range(2**D):
        ei, et, order = lattice_graph(shape, k)
        # Both samples at once, as one disjoint union (a PyG batch).
        ei2 = torch.cat([ei, ei + N], dim=1)
        et2, order2 = torch.cat([et, et]), torch.cat([order, order + N])
        xn = x.reshape(2, 3, N).transpose(1, 2).reshape(2 * N, 3)
        h = layer.cells[0][k](xn, ei2, et2, order2)[0]
        torch.testing.assert_close(
            h.view(2, N, 4).transpose(1, 2).reshape(2, 4, *shape), out[:, 4 * k : 4 * k + 4], **TOL
        )


def _typed_graph():
    # Several predecessors of one type, an unvisited edge, a self-loop, an isolated node.
    edge_index = torch.tensor([[0, 1, 0, 2, 3, 4, 2, 4, 1], [2, 2, 3, 3, 1, 1, 4, 4, 0]])
    edge_type = torch.tensor([0, 0, 1, 1, 0, 1, 1, 0, 1])
    order = torch.tensor([0, 3, 1, 2, 4, 5])
    return edge_index, edge_type, order


# Every kind of typed-graph cell that has a compiled loop: (class, options).
_CELL_KINDS = [
    (MDLSTMCell, {}),
    (MDLSTMCell, {"stable": True}),
    (MDRNNCell, {}),
    (MDRNNCell, {"nonlinearity": "relu"}),
]


@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize("kind", [*_CELL_KINDS, (MDLSTMCell, {"bias": False})])
def test_graph_path_equals_sequential_pass_on_a_general_typed_graph(kind):
    torch.manual_seed(6)
    cls, options = kind
    cell = cls(3, 4, 2, **options).to(D64)
    ei, et, order = _typed_graph()
    x = torch.randn(6, 3, dtype=D64)
    out, states = cell(x, ei, et, order)
    h_ref, c_ref = graph_scan_reference(cell, x, ei, et, order)
    torch.testing.assert_close(out, h_ref, **TOL)
    if c_ref is not None:
        torch.testing.assert_close(states[1], c_ref, **TOL)
    # A prebuilt schedule and a score give the same result as the order.
    s = build_schedule(ei, 6, order=order)
    torch.testing.assert_close(cell(x, ei, et, schedule=s)[0], out, **TOL)
    score = torch.empty(6, dtype=D64)
    score[order] = -torch.arange(6, dtype=D64)
    torch.testing.assert_close(cell(x, ei, et, score=score)[0], out, **TOL)


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("stable", [False, True])
def test_gradcheck_dense_2d(stable):
    torch.manual_seed(7)
    layer = MDLSTM(2, 2, 2, directions=[1, 2], stable=stable).to(D64)
    x = torch.randn(2, 2, 3, 3, dtype=D64, requires_grad=True)
    assert gradcheck(lambda x, *p: flat_tensors(layer(x)), (x, *layer.parameters()))


def test_gradcheck_dense_3d_rnn_and_sizes():
    torch.manual_seed(8)
    layer = MDRNN(2, 2, 3, directions=[0, 5]).to(D64)
    x = torch.randn(2, 2, 2, 3, 2, dtype=D64, requires_grad=True)
    sizes = torch.tensor([[2, 2, 1], [1, 3, 2]])
    assert gradcheck(lambda x, *p: flat_tensors(layer(x, sizes=sizes)), (x, *layer.parameters()))


def test_gradcheck_1d_two_layers_with_initial_states_and_lengths():
    torch.manual_seed(9)
    layer = MDLSTM(2, 2, 1, num_layers=2, directions=2).to(D64)
    x = torch.randn(2, 2, 4, dtype=D64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=D64, requires_grad=True)
    c0 = torch.randn(4, 2, 2, dtype=D64, requires_grad=True)
    sizes = torch.tensor([4, 2])
    assert gradcheck(
        lambda x, h0, c0, *p: flat_tensors(layer(x, (h0, c0), sizes=sizes)),
        (x, h0, c0, *layer.parameters()),
    )


@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize("kind", _CELL_KINDS)
def test_gradcheck_graph_path(kind):
    torch.manual_seed(10)
    cls, options = kind
    cell = cls(2, 2, 2, **options).to(D64)
    ei, et, order = _typed_graph()
    x = torch.randn(6, 2, dtype=D64, requires_grad=True)
    assert gradcheck(lambda x, *p: flat_tensors(cell(x, ei, et, order)), (x, *cell.parameters()))


def _random_typed_graph(n: int, num_edges: int, num_types: int, seed: int):
    """Random edges with duplicates, self-loops and (the last three) isolated nodes."""
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n - 3, (2, num_edges), generator=g)
    ei = torch.cat([ei, ei[:, :5], torch.tensor([[1, 2], [1, 2]])], dim=1)
    et = torch.randint(0, num_types, (ei.size(1),), generator=g)
    return ei, et, torch.randperm(n, generator=g)


@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize("kind", _CELL_KINDS)
def test_graph_path_values_and_gradients_equal_the_sequential_pass(kind):
    # Many levels and nodes with several predecessors of one type: the compiled
    # loop and the level-by-level scan against the node-by-node reference,
    # values and the gradients of inputs and every parameter (autograd through it).
    torch.manual_seed(12)
    cls, options = kind
    cell = cls(3, 5, 3, **options).to(D64)
    ei, et, order = _random_typed_graph(60, 240, 3, seed=13)
    x = torch.randn(60, 3, dtype=D64, requires_grad=True)
    h, (_, c) = cell(x, ei, et, order) if isinstance(cell, MDLSTMCell) else (
        cell(x, ei, et, order)[0], (None, None))
    h_ref, c_ref = graph_scan_reference(cell, x, ei, et, order)
    torch.testing.assert_close(h, h_ref, **TOL)
    if c_ref is not None:
        torch.testing.assert_close(c, c_ref, **TOL)
    w = torch.randn_like(h)

    def loss(h, c):
        return (h * w).sum() + (0.0 if c is None else (c * w).sum())

    params = [x, *cell.parameters()]
    grads = torch.autograd.grad(loss(h, c), params)
    grads_ref = torch.autograd.grad(loss(h_ref, c_ref), params)
    for g, r in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, r, **TOL)


@pytest.mark.usefixtures("engine")
def test_graph_path_float32_close_to_float64_reference():
    torch.manual_seed(14)
    cell = MDLSTMCell(3, 5, 3, stable=True)
    ei, et, order = _random_typed_graph(60, 240, 3, seed=15)
    x = torch.randn(60, 3)
    h = cell(x, ei, et, order)[0]
    h_ref, _ = graph_scan_reference(cell.to(D64), x.to(D64), ei, et, order)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h.to(D64), h_ref, atol=1e-5, rtol=0)


def test_gradients_match_autograd_through_the_naive_loop():
    torch.manual_seed(11)
    layer = MDLSTM(3, 4, 2, directions="all").to(D64)
    x = torch.randn(2, 3, 4, 3, dtype=D64, requires_grad=True)
    w = torch.randn(2, 16, 4, 3, dtype=D64)
    (layer(x)[0] * w).sum().backward()
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    x.grad = None
    layer.zero_grad()
    ref = torch.cat([lattice_scan_reference(layer.cells[0][k], x, k)[0] for k in range(4)], 1)
    (ref * w).sum().backward()
    for g, r in zip(grads, [x.grad] + [p.grad for p in layer.parameters()], strict=True):
        torch.testing.assert_close(g, r, **TOL)


# ------------------------------------------------------------------ batches of sizes


@pytest.mark.parametrize("cls", [MDLSTM, MDRNN])
def test_padded_batch_with_sizes_equals_each_sample_alone(cls):
    torch.manual_seed(12)
    layer = cls(2, 3, 2, num_layers=2, directions="all").to(D64)
    sizes = torch.tensor([[4, 5], [2, 3], [4, 1]])
    x = torch.randn(3, 2, 4, 5, dtype=D64)
    out, states = layer(x, sizes=sizes)
    h_n = states[0] if cls is MDLSTM else states
    for b, (n0, n1) in enumerate(sizes.tolist()):
        alone, st = layer(x[b : b + 1, :, :n0, :n1])
        torch.testing.assert_close(out[b : b + 1, :, :n0, :n1], alone, **TOL)
        torch.testing.assert_close(h_n[:, b], (st[0] if cls is MDLSTM else st)[:, 0], **TOL)
        pad = torch.ones(4, 5, dtype=torch.bool)
        pad[:n0, :n1] = False
        assert bool((out[b][:, pad] == 0).all())


# ------------------------------------------------------------------ stability


def test_stable_mdlstm_stays_bounded_where_the_plain_one_explodes():
    """Forget and input gates near 1, candidate near 1, on a 256x256 grid.

    Plain: c(p) = f*(c(p-e0) + c(p-e1)) + i*g grows like (2f)^(r+c).
    Stable: |c'| <= f * max_d |c_d| + i*|g| <= i*|g| / (1 - f), whatever the size.
    """
    bias_f, bias_in = 5.0, 5.0
    f, ig = torch.sigmoid(torch.tensor(bias_f, dtype=D64)), None
    x = torch.zeros(1, 1, 256, 256, dtype=D64)
    maxima = {}
    for stable in (False, True):
        layer = MDLSTM(1, 1, 2, stable=stable).to(D64)
        cell = layer.cells[0][0]
        with torch.no_grad():
            for p in cell.parameters():
                p.zero_()
            cell.lin_x.bias.fill_(bias_in)  # i, g, o (and lambda) saturate
            cell.lin_x.bias[1 : 2 if stable else 3].fill_(bias_f)  # forget gate(s)
            for size in (16, 256):
                _, (_, c_n) = layer(x[..., :size, :size])
                maxima[stable, size] = c_n.abs().max().item()
        ig = torch.sigmoid(torch.tensor(bias_in, dtype=D64)) * torch.tanh(
            torch.tensor(bias_in, dtype=D64)
        )
    bound = (ig / (1 - f)).item()
    assert maxima[True, 256] <= bound + 1e-9
    assert maxima[True, 256] <= 2 * 255 + 1  # and by 1 + the coordinate sum
    assert maxima[False, 16] > 1e6
    assert maxima[False, 256] > 1e100
    assert maxima[False, 256] > maxima[False, 16] * 1e90


# ------------------------------------------------------------------ misc behaviour


def test_float32_matches_float64_and_repr_and_reset():
    torch.manual_seed(13)
    layer = MDLSTM(3, 4, 2, directions=2, num_layers=2, stable=True)
    x = torch.randn(2, 3, 5, 4)
    out32 = layer(x)[0]
    out64 = layer.to(D64)(x.to(D64))[0]
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.to(D64), out64, atol=1e-5, rtol=0)
    assert "directions=[0, 1]" in repr(layer) and "num_layers=2" in repr(layer)
    assert "MDLSTMCell(3, 4, num_edge_types=2, stable=True)" in repr(layer)
    before = layer.cells[0][0].lin_x.weight.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.cells[0][0].lin_x.weight)
    bound = 1 / math.sqrt(4)
    assert all(p.abs().max() <= bound for p in layer.parameters())


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(14)
    layer = MDLSTM(3, 4, 2, num_layers=2, dropout=0.5).to(D64)
    plain = MDLSTM(3, 4, 2, num_layers=2).to(D64)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 4, 4, dtype=D64)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0], **TOL)
    layer.train()
    assert not torch.allclose(layer(x)[0], plain(x)[0])


def test_bad_inputs_raise_clear_errors():
    layer = MDLSTM(3, 4, 2)
    with pytest.raises(ValueError, match=r"'input' must have shape \[batch, channels"):
        layer(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="'input' must have input_size=3 channels"):
        layer(torch.randn(2, 5, 4, 4))
    with pytest.raises(TypeError, match="'input' must be a floating point tensor"):
        layer(torch.ones(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="'input' must be a torch.Tensor"):
        layer([[1.0]])
    with pytest.raises(ValueError, match="'input' must not be empty"):
        layer(torch.randn(0, 3, 4, 4))
    with pytest.raises(ValueError, match=r"'sizes' must have shape \[batch, ndim\] = \[2, 2\]"):
        layer(torch.randn(2, 3, 4, 4), sizes=torch.tensor([4, 4]))
    with pytest.raises(ValueError, match="'sizes' must lie in"):
        layer(torch.randn(2, 3, 4, 4), sizes=torch.tensor([[4, 5], [1, 1]]))
    with pytest.raises(TypeError, match="'sizes' must be an integer tensor"):
        layer(torch.randn(2, 3, 4, 4), sizes=torch.ones(2, 2))
    with pytest.raises(ValueError, match="'h_0' .* only defined for ndim=1"):
        layer(torch.randn(2, 3, 4, 4), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    seq = MDLSTM(3, 4, 1, directions=2)
    with pytest.raises(ValueError, match=r"'c_0' must have shape .* \[2, 2, 4\]"):
        seq(torch.randn(2, 3, 5), (torch.zeros(2, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match=r"'directions' as a count must be in 1\.\.4"):
        MDLSTM(3, 4, 2, directions=5)
    with pytest.raises(ValueError, match=r"'directions' must be in 0\.\.3"):
        MDLSTM(3, 4, 2, directions=[0, 7])
    with pytest.raises(ValueError, match="'ndim' must be positive"):
        MDLSTM(3, 4, 0)
    with pytest.raises(TypeError, match="'hidden_size' must be an int"):
        MDLSTM(3, 4.0, 2)
    with pytest.raises(ValueError, match="'dropout' must be in"):
        MDLSTM(3, 4, 2, dropout=1.5)
    with pytest.raises(ValueError, match="'nonlinearity' must be 'tanh' or 'relu'"):
        MDRNN(3, 4, 2, nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="'module' must be a torch.nn.LSTM"):
        MDLSTM.from_torch(torch.nn.GRU(3, 4))
    with pytest.raises(TypeError, match="'module' must be a torch.nn.RNN"):
        MDRNN.from_torch(torch.nn.LSTM(3, 4))
    with pytest.raises(ValueError, match="proj_size"):
        MDLSTM.from_torch(torch.nn.LSTM(3, 4, proj_size=2))


def test_cell_bad_graph_inputs_raise_clear_errors():
    cell = MDLSTMCell(3, 4, 2)
    ei, et, order = lattice_graph((2, 3))
    x = torch.randn(6, 3)
    with pytest.raises(ValueError, match=r"'edge_type' must hold dimensions in 0\.\.1"):
        cell(x, ei, et + 1, order)
    with pytest.raises(ValueError, match=r"'edge_type' must have shape \[num_edges\]"):
        cell(x, ei, et[:-1], order)
    with pytest.raises(TypeError, match="'edge_type' must have dtype torch.long"):
        cell(x, ei, et.float(), order)
    with pytest.raises(ValueError, match="'x' must have 3 channels"):
        cell(torch.randn(6, 2), ei, et, order)
    with pytest.raises(ValueError, match="'edge_index' holds node indices"):
        cell(x[:4], ei, et, order)
    with pytest.raises(ValueError, match="'order'"):
        cell(x, ei, et, order[:-1])
    with pytest.raises(ValueError, match="give 'schedule' or 'order'/'score', not both"):
        cell(x, ei, et, order, schedule=build_schedule(ei, 6, order=order))
    with pytest.raises(ValueError, match="'schedule' was built for"):
        cell(x[:5], ei[:, :2], et[:2], schedule=build_schedule(ei, 6, order=order))
