"""EvolvingGraphLSTM: no evolution equals GraphLSTMStack, pooling and state passing
against a hand-built two-level run, batches, gradients of the merge loss, hierarchy."""

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.utils import grid, to_undirected

from graphlstm import EvolvingGraphLSTM, GraphLSTM, GraphLSTMStack
from graphlstm.coarsening import merge_targets, pool, pool_edges

pytestmark = pytest.mark.usefixtures("engine")

DT = torch.float64


def make_graph(seed, n=16, e=40, f=3):
    gen = torch.Generator().manual_seed(seed)
    edge_index = to_undirected(torch.randint(0, n, (2, e), generator=gen), num_nodes=n)
    x = torch.randn(n, f, generator=gen, dtype=DT)
    score = torch.rand(n, generator=gen, dtype=DT)
    return x, edge_index, score


def make_model(f, h, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = EvolvingGraphLSTM(f, h, **kwargs).to(DT)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
        for head in model.merge_heads:  # around 1/2, so that the tests see merges
            head.bias.zero_()
    return model


def copy_into_stack(model, **kwargs):
    stack = GraphLSTMStack(model.in_channels, model.hidden_channels,
                           num_layers=model.num_layers, **kwargs).to(DT)
    for layer, (target,) in zip(model.layers, stack.layers, strict=True):
        target.load_state_dict(layer.state_dict())
    return stack


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_no_evolution_equals_stack(residual, with_state):
    x, edge_index, score = make_graph(1, f=4)
    model = make_model(4, 4, num_layers=3, evolve=False, residual=residual)
    stack = copy_into_stack(model, residual=residual)
    state = None
    if with_state:
        gen = torch.Generator().manual_seed(5)
        state = tuple(torch.randn(16, 4, generator=gen, dtype=DT) for _ in "hm")
    out, (h_n, m_n), hierarchy = model(x, edge_index, score=score, state=state)
    ref, (ref_h, ref_m) = stack(x, edge_index, score=score,
                                state=None if state is None else tuple(s[None] for s in state))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_n, ref_h, rtol=0, atol=1e-12)
    torch.testing.assert_close(m_n, ref_m, rtol=0, atol=1e-12)
    assert hierarchy.clusters == [] and hierarchy.num_nodes == [16]


def test_one_layer_equals_graph_lstm():
    x, edge_index, score = make_graph(2)
    model = make_model(3, 5, num_layers=1)
    out, _, hierarchy = model(x, edge_index, score=score)
    ref, _ = model.layers[0](x, edge_index, score=score)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert hierarchy.merge_probs == []


def test_two_levels_against_hand_built_run():
    """Layer 1 runs on the pooled graph, from the pooled output and state, in the
    order of the pooled score."""
    x, edge_index, score = make_graph(3, n=20, e=50)
    model = make_model(3, 4, num_layers=2, deterministic=True, acceptance="clique",
                       threshold=0.75)
    with torch.no_grad():  # a spread of merge probabilities around 1/2
        model.merge_heads[0].weight.normal_(0, 4, generator=torch.Generator().manual_seed(0))
    out, (h_n, m_n), hierarchy = model(x, edge_index, score=score)
    cluster = hierarchy.clusters[0]
    c = int(cluster.max()) + 1
    assert 1 < c < 20, "the test needs some merging"

    out0, (h0, m0) = model.layers[0](x, edge_index, score=score)
    coarse, weight = pool_edges(edge_index, cluster, torch.ones(edge_index.size(1), dtype=DT))
    out1, (h1, m1) = model.layers[1](pool(out0, cluster), coarse, weight,
                                     score=pool(score, cluster),
                                     state=(pool(h0, cluster), pool(m0, cluster)))
    torch.testing.assert_close(out, out1[cluster], rtol=0, atol=1e-12)
    torch.testing.assert_close(h_n, torch.stack([h0, h1[cluster]]), rtol=0, atol=1e-12)
    torch.testing.assert_close(m_n, torch.stack([m0, m1[cluster]]), rtol=0, atol=1e-12)
    assert torch.equal(hierarchy.edge_indices[1], coarse)


def test_merge_probability_reads_the_layers_forget_gates():
    x, edge_index, _ = make_graph(4, n=10, e=20, f=3)
    model = make_model(3, 4, num_layers=2)
    h = torch.randn(10, 4, dtype=DT)
    layer = model.layers[0]
    w_f, b_f = layer.lin_x.weight[4:8], layer.lin_x.bias[4:8]
    expected = []
    for j, i in edge_index.t().tolist():  # edge j -> i
        g_ij = torch.sigmoid(w_f @ x[i] + layer.lin_fn.weight @ h[j] + b_f)
        g_ji = torch.sigmoid(w_f @ x[j] + layer.lin_fn.weight @ h[i] + b_f)
        feature = torch.cat([g_ij * g_ji, (g_ij - g_ji).abs()])
        expected.append(torch.sigmoid(model.merge_heads[0](feature)))
    prob = model.merge_probability(0, x, h, edge_index)
    torch.testing.assert_close(prob, torch.cat(expected), rtol=0, atol=1e-14)


def test_gradients_reach_the_merge_head_through_the_merge_loss():
    x, edge_index, score = make_graph(5, n=20, e=50)
    labels = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(1))
    model = make_model(3, 4, num_layers=2).train()
    _, _, hierarchy = model(x, edge_index, score=score,
                            generator=torch.Generator().manual_seed(0))
    loss = model.merge_loss(hierarchy, labels)
    target, valid = merge_targets(edge_index, labels)
    expected = F.binary_cross_entropy(hierarchy.merge_probs[0][valid], target[valid].to(DT))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    grad = model.merge_heads[0].weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    # The merge loss also trains the forget gates it reads (rows f of lin_x).
    assert float(model.layers[0].lin_x.weight.grad[4:8].abs().sum()) > 0
    assert float(model.layers[0].lin_x.weight.grad[:4].abs().sum()) == 0


def test_merge_loss_matches_loop_on_each_level():
    x, edge_index, score = make_graph(6, n=24, e=60)
    labels = torch.randint(0, 2, (24,), generator=torch.Generator().manual_seed(2))
    labels[0] = -100
    model = make_model(3, 4, num_layers=3, deterministic=True, acceptance="clique")
    with torch.no_grad():
        for head in model.merge_heads:
            head.weight.normal_(0, 4, generator=torch.Generator().manual_seed(3))
    _, _, hierarchy = model(x, edge_index, score=score)
    assert hierarchy.num_nodes[1] < 24, "the test needs some merging"
    total, count = 0.0, 0
    for level, prob in enumerate(hierarchy.merge_probs):
        assign = hierarchy.assignments[level]
        votes = {}
        for node, lab in enumerate(labels.tolist()):
            if lab != -100:
                votes.setdefault(int(assign[node]), []).append(lab)
        level_label = {k: min(set(v), key=lambda c, v=v: (-v.count(c), c))
                       for k, v in votes.items()}
        for e, (j, i) in enumerate(hierarchy.edge_indices[level].t().tolist()):
            if j in level_label and i in level_label:
                t = float(level_label[j] == level_label[i])
                p = float(prob[e].detach())
                total -= t * torch.log(torch.tensor(p)) + (1 - t) * torch.log(torch.tensor(1 - p))
                count += 1
    torch.testing.assert_close(model.merge_loss(hierarchy, labels).detach(),
                               torch.tensor(float(total) / count, dtype=DT))


def test_batch_equals_graphs_alone_in_deterministic_mode():
    graphs = []
    for seed, n in ((7, 15), (8, 9), (9, 22)):
        x, edge_index, score = make_graph(seed, n=n, e=2 * n)
        graphs.append(Data(x=x, edge_index=edge_index, score=score, num_nodes=n))
    batch = Batch.from_data_list(graphs)
    for acceptance in ("graph", "clique"):
        model = make_model(3, 4, num_layers=3, acceptance=acceptance).eval()
        with torch.no_grad():
            for head in model.merge_heads:
                head.weight.normal_(0, 4, generator=torch.Generator().manual_seed(4))
                head.bias.fill_(2.0)
        out, (h_n, _), hierarchy = model(batch.x, batch.edge_index, score=batch.score,
                                         batch=batch.batch)
        outs, hs, merged = [], [], 0
        for data in graphs:
            o, (h, _), hier = model(data.x, data.edge_index, score=data.score)
            outs.append(o)
            hs.append(h)
            merged += data.num_nodes - hier.num_nodes[-1]
        assert merged > 0, "the test needs some merging"
        torch.testing.assert_close(out, torch.cat(outs), rtol=0, atol=1e-12)
        torch.testing.assert_close(h_n, torch.cat(hs, 1), rtol=0, atol=1e-12)
        for level_batch, assign in zip(hierarchy.batches, hierarchy.assignments, strict=True):
            assert torch.equal(level_batch[assign], batch.batch)


def test_training_mode_is_reproducible_with_a_generator():
    x, edge_index, score = make_graph(10, n=30, e=80)
    model = make_model(3, 4, num_layers=3).train()
    with torch.no_grad():
        model.merge_heads[0].bias.fill_(3.0)
    runs = [model(x, edge_index, score=score, generator=torch.Generator().manual_seed(s))
            for s in (0, 0)]
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(runs[0][2].clusters, runs[1][2].clusters,
                                                 strict=True))


def test_hierarchy_unpools_to_every_pixel():
    # A 6x8 image of 2x2-pixel superpixels: a 3x4 grid graph.
    edge_index, _ = grid(3, 4)
    superpixels = torch.arange(12).view(3, 4).repeat_interleave(2, 0).repeat_interleave(2, 1)
    x = torch.randn(12, 3, dtype=DT)
    model = make_model(3, 4, num_layers=4, deterministic=True)
    with torch.no_grad():
        for head in model.merge_heads:
            head.bias.fill_(1.0)
    out, _, hierarchy = model(x, edge_index)
    assert hierarchy.num_nodes[-1] < 12
    for level, assign in enumerate(hierarchy.assignments):
        regions = assign[superpixels]
        assert regions.shape == superpixels.shape
        # Every node of the level owns pixels; every pixel has a node.
        assert torch.equal(torch.unique(regions), torch.arange(hierarchy.num_nodes[level]))
    pixels = out[superpixels]
    assert pixels.shape == (6, 8, 4) and bool(torch.isfinite(pixels).all())


def test_score_fn_orders_every_level():
    x, edge_index, _ = make_graph(11, n=18, e=40)
    model = make_model(3, 4, num_layers=3, deterministic=True)
    with torch.no_grad():
        for head in model.merge_heads:
            head.bias.fill_(0.5)
    seen = []

    def score_fn(level, inputs, assignment):
        seen.append((level, inputs.size(0)))
        assert int(assignment.max()) + 1 == inputs.size(0) and assignment.numel() == 18
        return inputs.sum(1)

    _, _, hierarchy = model(x, edge_index, score_fn=score_fn)
    assert seen == list(enumerate(hierarchy.num_nodes))


def test_bad_input():
    x, edge_index, score = make_graph(12)
    model = make_model(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="'x'"):
        model(x[0], edge_index)
    with pytest.raises(ValueError, match="'edge_index'"):
        model(x, edge_index + 100)
    with pytest.raises(ValueError, match="'score'"):
        model(x, edge_index, score=score[:3])
    with pytest.raises(ValueError, match="'state\\[0\\] \\(h_0\\)'"):
        model(x, edge_index, state=(torch.zeros(3, 4, dtype=DT), torch.zeros(16, 4, dtype=DT)))
    with pytest.raises(ValueError, match="'edge_index' joins two graphs"):
        model(x, edge_index, batch=torch.arange(16))
    with pytest.raises(ValueError, match="score_fn"):
        model(x, edge_index, score_fn=lambda level, inputs, assignment: inputs[:2, 0])
    with pytest.raises(TypeError, match="'hierarchy'"):
        model.merge_loss((), torch.zeros(16))
    with pytest.raises(ValueError, match="'num_layers'"):
        EvolvingGraphLSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="'acceptance'"):
        EvolvingGraphLSTM(3, 4, acceptance="edge")
    with pytest.raises(ValueError, match="'threshold'"):
        EvolvingGraphLSTM(3, 4, threshold=2.0)
    assert "EvolvingGraphLSTM(3, 4, num_layers=2)" == repr(model)
    assert isinstance(model.layers[0], GraphLSTM)


def test_balanced_merge_loss_and_initial_bias():
    x, edge_index, score = make_graph(13, n=20, e=50)
    labels = torch.randint(0, 2, (20,), generator=torch.Generator().manual_seed(5))
    model = make_model(3, 4, num_layers=2).train()
    _, _, hierarchy = model(x, edge_index, score=score, generator=torch.Generator().manual_seed(0))
    target, _ = merge_targets(edge_index, labels)
    target = target.to(DT)
    prob = hierarchy.merge_probs[0]
    share = float(target.mean())
    assert 0 < share < 1
    weight = torch.where(target > 0.5, 0.5 / share, 0.5 / (1 - share))
    expected = -(weight * (target * prob.log() + (1 - target) * (1 - prob).log())).mean()
    torch.testing.assert_close(model.merge_loss(hierarchy, labels, balance=True), expected)
    # Untrained heads start at a low merge probability (few merges at first).
    fresh = EvolvingGraphLSTM(3, 4, num_layers=3)
    assert all(float(head.bias.detach()) == -2.0 for head in fresh.merge_heads)
    fresh.reset_parameters()
    assert all(float(head.bias.detach()) == -2.0 for head in fresh.merge_heads)


@pytest.mark.parametrize("in_channels", [4, 3])
def test_residual_path_stays_at_the_input_nodes(in_channels):
    """With merges, every input node's output is its own input (when the first
    layer keeps the size) plus each level's layer output at the node holding it."""
    x, edge_index, score = make_graph(5, f=in_channels)
    model = make_model(in_channels, 4, num_layers=3, residual=True, deterministic=True,
                       acceptance="clique")
    inputs, outputs = [], []
    hooks = [hook for layer in model.layers for hook in (
        layer.register_forward_pre_hook(lambda m, args: inputs.append(args[0])),
        layer.register_forward_hook(lambda m, args, out: outputs.append(out[0])))]
    out, _, hierarchy = model(x, edge_index, score=score)
    for hook in hooks:
        hook.remove()
    assert hierarchy.num_nodes[-2] < hierarchy.num_nodes[0], "the test needs merges"
    stream = x.clone() if in_channels == 4 else torch.zeros(x.size(0), 4, dtype=DT)
    for level, assignment in enumerate(hierarchy.assignments):
        if level > 0:  # a region's input: the mean of its members' streams
            mean = torch.stack([stream[assignment == node].mean(0)
                                for node in range(hierarchy.num_nodes[level])])
            torch.testing.assert_close(inputs[level], mean, rtol=0, atol=1e-12)
        stream = stream + outputs[level][assignment]
    torch.testing.assert_close(out, stream, rtol=0, atol=1e-12)
    # Two input nodes merged into one region keep different outputs.
    last = hierarchy.assignments[-1]
    merged = [v for v in range(x.size(0)) if (last == last[v]).sum() > 1]
    assert len({tuple(out[v].tolist()) for v in merged}) == len(merged)
