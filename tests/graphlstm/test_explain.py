"""GraphLSTM under PyG's explainers: the edge mask multiplies the edge weights."""

import pytest
import torch
from torch_geometric.explain import Explainer, GNNExplainer
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.utils import add_self_loops, remove_self_loops

from graphlstm import GraphLSTM

DT = torch.float64
MODEL_CONFIG = dict(mode="multiclass_classification", task_level="node", return_type="raw")


class OneLayer(torch.nn.Module):
    def __init__(self, f=3, h=4, classes=3):
        super().__init__()
        self.lstm = GraphLSTM(f, h)
        self.head = torch.nn.Linear(h, classes)

    def forward(self, x, edge_index, order, edge_weight=None):
        out, _ = self.lstm(x, edge_index, edge_weight, order=order)
        return self.head(out)


class TwoLayers(torch.nn.Module):
    """The second layer starts from the first one's state: its unvisited
    neighbours go through propagate()."""

    def __init__(self, f=3, h=4, classes=3, add_loops=False):
        super().__init__()
        self.first, self.second = GraphLSTM(f, h), GraphLSTM(h, h)
        self.head = torch.nn.Linear(h, classes)
        self.add_loops = add_loops

    def forward(self, x, edge_index, order, edge_weight=None):
        if self.add_loops:  # as GCNConv does: drop the self-loops, append one per node
            edge_index, _ = remove_self_loops(edge_index)
            edge_index, _ = add_self_loops(edge_index, num_nodes=x.size(0))
        out, state = self.first(x, edge_index, edge_weight, order=order)
        out, _ = self.second(out, edge_index, edge_weight, order=order, state=state)
        return self.head(out)


def make_graph(seed=0, n=24, e=60):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, n, (2, e), generator=gen)  # directed, duplicates
    edge_index = torch.cat([edge_index, torch.tensor([[2, 7], [2, 7]])], dim=1)  # self-loops
    x = torch.randn(n, 3, generator=gen, dtype=DT)
    order = torch.randperm(n, generator=gen)
    return x, edge_index, order


def influencing_nodes(edge_index, order, node):
    """Nodes i whose new state reaches ``node`` in one layer from a zero state:
    i == node, or an edge i -> k with k later than i and k influencing (paths of
    strictly increasing rank). A plain loop, latest node first."""
    n = order.numel()
    rank = [0] * n
    for step, v in enumerate(order.tolist()):
        rank[v] = step
    out_edges = [[] for _ in range(n)]
    for j, i in edge_index.t().tolist():
        out_edges[j].append(i)
    influences = [False] * n
    for v in reversed(order.tolist()):
        influences[v] = v == node or any(
            influences[k] for k in out_edges[v] if rank[k] > rank[v]
        )
    return influences


def mask_gradient(model, x, edge_index, order, node, seed=0):
    mask = torch.nn.Parameter(
        torch.randn(edge_index.size(1), dtype=DT, generator=torch.Generator().manual_seed(seed))
    )
    set_masks(model, mask, edge_index, apply_sigmoid=True)
    try:
        model(x, edge_index, order)[node].sum().backward()
    finally:
        clear_masks(model)
    return mask.grad


@pytest.mark.parametrize("seed", range(6))
def test_edges_into_nodes_that_cannot_reach_the_explained_node_get_no_gradient(seed):
    x, edge_index, order = make_graph(seed)
    torch.manual_seed(seed)
    model = OneLayer().to(DT)
    node = int(order[-3])  # late in the order: many nodes can reach it
    grad = mask_gradient(model, x, edge_index, order, node, seed)
    influences = influencing_nodes(edge_index, order, node)
    src, dst = edge_index
    silent = torch.tensor([not influences[i] for i in dst.tolist()]) | (src == dst)
    assert bool(silent.any()) and not bool(silent.all())
    assert torch.equal(grad[silent], torch.zeros_like(grad[silent]))
    assert bool((grad[~silent] != 0).any())
    # Into the explained node itself: with two distinct sources, every weight matters.
    into_node = (dst == node) & (src != node)
    if len(set(src[into_node].tolist())) >= 2:
        assert bool((grad[into_node] != 0).all())


@pytest.mark.parametrize("apply_sigmoid", [True, False])
@pytest.mark.parametrize("with_weights", [False, True])
def test_explain_mode_equals_the_mask_as_edge_weights(apply_sigmoid, with_weights):
    # With the mask applied once to the weights of *all* edges (visited and, through
    # propagate, unvisited), explain mode equals passing the mask as edge_weight.
    x, edge_index, order = make_graph(7)
    torch.manual_seed(7)
    model = TwoLayers().to(DT)
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(edge_index.size(1), dtype=DT, generator=gen)
    weight = torch.rand(edge_index.size(1), dtype=DT, generator=gen) if with_weights else None
    set_masks(model, mask, edge_index, apply_sigmoid=apply_sigmoid)
    explained = model(x, edge_index, order, weight)
    clear_masks(model)
    effective = mask.sigmoid() if apply_sigmoid else mask
    if weight is not None:
        effective = effective * weight
    expected = model(x, edge_index, order, effective)
    torch.testing.assert_close(explained, expected, atol=1e-12, rtol=0)
    plain = model(x, edge_index, order, weight)
    assert not torch.allclose(plain, explained)


def test_mask_of_a_model_that_appends_self_loops():
    # PyG's convention (MessagePassing.explain_message): mask[loop_mask], then 1 per node.
    x, edge_index, order = make_graph(8)
    torch.manual_seed(8)
    model = TwoLayers(add_loops=True).to(DT)
    mask = torch.randn(edge_index.size(1), dtype=DT)
    set_masks(model, mask, edge_index, apply_sigmoid=True)
    explained = model(x, edge_index, order)
    clear_masks(model)
    model.add_loops = False
    expected = model(x, edge_index, order, mask.sigmoid())
    torch.testing.assert_close(explained, expected, atol=1e-12, rtol=0)


def test_mask_of_another_graph_is_a_clear_error():
    x, edge_index, order = make_graph(9)
    model = OneLayer().to(DT)
    set_masks(model, torch.randn(5, dtype=DT), edge_index[:, :5])
    with pytest.raises(ValueError, match="edge mask"):
        model(x, edge_index, order)
    set_masks(model, torch.full((edge_index.size(1),), -1.0, dtype=DT), edge_index,
              apply_sigmoid=False)
    with pytest.raises(ValueError, match=r"edge mask \(explain mode\)' must be non-negative"):
        model(x, edge_index, order)


@pytest.mark.parametrize("model_cls", [OneLayer, TwoLayers])
def test_gnn_explainer(model_cls):
    x, edge_index, order = make_graph(10)
    torch.manual_seed(10)
    model = model_cls().to(DT)
    explainer = Explainer(
        model,
        GNNExplainer(epochs=20),
        explanation_type="model",
        node_mask_type="attributes",
        edge_mask_type="object",
        model_config=MODEL_CONFIG,
    )
    node = int(order[-3])
    before = model(x, edge_index, order)
    explanation = explainer(x, edge_index, index=node, order=order)
    edge_mask, node_mask = explanation.edge_mask, explanation.node_mask
    assert edge_mask.shape == (edge_index.size(1),) and node_mask.shape == x.shape
    assert bool((edge_mask > 0).any())
    src, dst = edge_index
    assert torch.equal(edge_mask[src == dst], torch.zeros_like(edge_mask[src == dst]))
    if model_cls is OneLayer:
        # GNNExplainer keeps only edges whose first-step gradient is non-zero.
        influences = influencing_nodes(edge_index, order, node)
        silent = torch.tensor([not influences[i] for i in dst.tolist()])
        assert torch.equal(edge_mask[silent], torch.zeros_like(edge_mask[silent]))
    # The model is left as it was: no mask, same outputs as before.
    assert all(not m.explain for m in model.modules() if isinstance(m, GraphLSTM))
    assert torch.equal(model(x, edge_index, order), before)
