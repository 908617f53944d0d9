"""The evolving segmentation model: shapes, merge loss from the masks, gradients,
hierarchy back to every pixel, evaluation mode deterministic."""

import pytest
import torch
from torch_geometric.data import Batch

from segmentation.data.datasets import SyntheticScenes
from segmentation.engine.train import build_graphs
from segmentation.models.evolving import EvolvingSegmenter, evolving_loss, superpixel_labels
from segmentation.models.segmenter import ModelConfig, segmentation_loss


@pytest.fixture(scope="module")
def batch():
    graphs = build_graphs(SyntheticScenes(3, size=(40, 48), seed=5), n_segments=30)
    return Batch.from_data_list(graphs)


def small(**kw):
    return ModelConfig(num_classes=6, width=6, hidden=5, **kw)


def test_superpixel_labels_against_a_loop(batch):
    labels = superpixel_labels(batch.mask, batch.superpixels, batch.ptr.diff(), 6)
    offset = 0
    for b in range(batch.num_graphs):
        sp, mask = batch.superpixels[b], batch.mask[b]
        for k in range(int(batch.ptr.diff()[b])):
            pixels = mask[(sp == k) & (mask != 255)]
            if pixels.numel() == 0:
                assert int(labels[offset + k]) == 255
            else:
                counts = torch.bincount(pixels, minlength=6)
                assert int(labels[offset + k]) == int(counts.argmax())
        offset += int(batch.ptr.diff()[b])


@pytest.mark.parametrize("order", ["confidence", "random"])
def test_forward_loss_and_gradients(batch, order):
    torch.manual_seed(0)
    model = EvolvingSegmenter(small(order=order, graph_layers=3), acceptance="clique").train()
    with torch.no_grad():  # merges happen from the start
        for head in model.graph_lstm.merge_heads:
            head.bias.fill_(2.0)
    out = model.forward_batch(batch, torch.Generator().manual_seed(1))
    assert out.logits.shape == (3, 6, 40, 48)
    hierarchy = out.hierarchy
    assert hierarchy.num_nodes[0] == batch.num_nodes and hierarchy.num_nodes[-1] < batch.num_nodes
    # No region spans two images.
    for level_batch, assign in zip(hierarchy.batches, hierarchy.assignments, strict=True):
        assert torch.equal(level_batch[assign], batch.batch)
    loss = evolving_loss(out, batch.mask, merge_weight=0.5)
    plain = segmentation_loss(out, batch.mask)
    assert float(loss.detach()) > float(plain.detach())
    loss.backward()
    frozen = {"graph_lstm.layers.0.lin_h.weight", "graph_lstm.layers.0.lin_fn.weight"}
    for name, p in model.named_parameters():
        if name in frozen:
            assert not p.requires_grad
        else:
            assert p.grad is not None, name
    # Level 0 always has supervised edges; a later level may have merged into
    # one region per image (no edge): its head still gets a (zero) gradient.
    assert float(model.graph_lstm.merge_heads[0].weight.grad.abs().sum()) > 0


def test_sum_reduction_scales_the_merge_term(batch):
    torch.manual_seed(0)
    model = EvolvingSegmenter(small(graph_layers=2)).eval()
    out = model.forward_batch(batch)
    valid = (batch.mask != 255).sum()
    mean = evolving_loss(out, batch.mask) - segmentation_loss(out, batch.mask)
    summed = evolving_loss(out, batch.mask, reduction="sum") - segmentation_loss(
        out, batch.mask, reduction="sum")
    torch.testing.assert_close(summed, mean * valid, rtol=1e-4, atol=1e-4)


def test_evaluation_is_deterministic_and_reaches_every_pixel(batch):
    torch.manual_seed(0)
    model = EvolvingSegmenter(small(graph_layers=3), acceptance="clique").eval()
    with torch.no_grad():
        for head in model.graph_lstm.merge_heads:
            head.bias.fill_(2.0)
        first = model.forward_batch(batch)
        second = model.forward_batch(batch)
    assert torch.equal(first.logits, second.logits)
    offsets = batch.ptr[:-1].view(-1, 1, 1)
    for level, assign in enumerate(first.hierarchy.assignments):
        regions = assign[batch.superpixels + offsets]  # every pixel's region
        assert torch.equal(torch.unique(regions),
                           torch.arange(first.hierarchy.num_nodes[level]))


def test_needs_a_graph_layer():
    with pytest.raises(ValueError, match="graph_layers"):
        EvolvingSegmenter(small(graph_layers=0))


def test_hierarchy_reach_without_merging_equals_reachable():
    from graphlstm import EvolvingGraphLSTM, reachable
    from segmentation.models.evolving import hierarchy_reach

    gen = torch.Generator().manual_seed(3)
    edge_index = torch.randint(0, 14, (2, 30), generator=gen)
    score = torch.rand(14, generator=gen)
    model = EvolvingGraphLSTM(3, 4, num_layers=3, deterministic=True)
    with torch.no_grad():
        for head in model.merge_heads:
            head.bias.fill_(-50.0)  # nothing merges
    _, _, hierarchy = model(torch.randn(14, 3, generator=gen), edge_index, score=score)
    assert hierarchy.num_nodes == [14, 14, 14]
    expected = reachable(edge_index, 14, torch.arange(14), score=score, num_layers=3)
    assert torch.equal(hierarchy_reach(hierarchy), expected)


def test_hierarchy_reach_matches_the_jacobian():
    from graphlstm import EvolvingGraphLSTM
    from segmentation.models.evolving import hierarchy_reach

    gen = torch.Generator().manual_seed(4)
    n = 16
    edge_index = torch.randint(0, n, (2, 26), generator=gen)
    edge_index = torch.cat([edge_index, edge_index.flip(0)], 1)
    score = torch.rand(n, generator=gen, dtype=torch.float64)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    model = EvolvingGraphLSTM(3, 4, num_layers=3, deterministic=True, acceptance="clique",
                              residual=True).double()
    with torch.no_grad():
        for head in model.merge_heads:
            head.weight.normal_(0, 3, generator=torch.Generator().manual_seed(1))
            head.bias.zero_()
    out, _, hierarchy = model(x, edge_index, score=score)
    assert hierarchy.num_nodes[-1] < n, "the test needs some merging"
    reach = hierarchy_reach(hierarchy)
    for v in range(n):
        (grad,) = torch.autograd.grad(out[v].sum(), x, retain_graph=True)
        assert torch.equal(grad.abs().sum(1) > 0, reach[v]), v


def test_hierarchy_picture(batch, tmp_path):
    from segmentation.visualize.hierarchy import hierarchy_regions, plot_hierarchy

    one = Batch.from_data_list([batch.get_example(0)])
    torch.manual_seed(0)
    model = EvolvingSegmenter(small(graph_layers=3), acceptance="clique").eval()
    with torch.no_grad():
        for head in model.graph_lstm.merge_heads:
            head.bias.fill_(1.0)
        hierarchy = model.forward_batch(one).hierarchy
    superpixels = one.superpixels[0]
    regions = hierarchy_regions(superpixels, hierarchy.assignments)
    assert len(regions) == 3
    for k, region in enumerate(regions):
        assert region.shape == (40, 48)
        assert sorted(set(region.ravel().tolist())) == list(range(hierarchy.num_nodes[k]))
    image = one.image[0].permute(1, 2, 0).numpy()
    fig = plot_hierarchy(image, superpixels, hierarchy, tmp_path / "hierarchy.png")
    assert (tmp_path / "hierarchy.png").stat().st_size > 0
    assert fig.axes[0].images[0].get_array().shape == (40, 48, 3)
    with pytest.raises(ValueError, match="assignments"):
        hierarchy_regions(superpixels, [torch.zeros(3, dtype=torch.long)])


def _hierarchy(assignment, num_regions):
    """A two-level hierarchy that only fixes the last level's assignment."""
    from graphlstm.nn.evolving_graph_lstm import Hierarchy

    assignment = torch.tensor(assignment)
    identity = torch.arange(assignment.numel())
    empty = torch.zeros(2, 0, dtype=torch.long)
    return Hierarchy([assignment], [identity, assignment], [empty, empty],
                     [assignment.numel(), num_regions], [], [], [None, None], [None, None])


def test_merge_counts_by_hand():
    from segmentation.models.evolving import merge_counts

    # Regions: {0, 1} (labels 0, 0), {2, 3, 4} (0, 1, 1: majority 1), {5} (unlabelled),
    # {6} (1) and {7, 8} (2, 0: a tie, majority 0).
    hierarchy = _hierarchy([0, 0, 1, 1, 1, 2, 3, 4, 4], 5)
    labels = torch.tensor([0, 0, 0, 1, 1, 255, 1, 2, 0])
    counts = merge_counts(hierarchy, labels, num_classes=3)
    assert (counts.superpixels, counts.regions) == (9, 5)
    assert counts.in_region_of_other_label == 2  # node 2 (0 among 1s) and node 7 (2 in a tie)
    assert counts.per_class.tolist() == [4, 3, 1]
    assert counts.merged_per_class.tolist() == [4, 2, 1]  # node 6 stays alone
    twice = counts.add(counts)
    assert (twice.superpixels, twice.in_region_of_other_label) == (18, 4)
    assert twice.merged_per_class.tolist() == [8, 4, 2]


def test_merge_counts_of_a_batch_add_up_over_its_images(batch):
    from segmentation.models.evolving import merge_counts

    torch.manual_seed(0)
    model = EvolvingSegmenter(small(graph_model="evolving")).eval()
    for head in model.graph_lstm.merge_heads:  # p = 1/2 = the threshold: every edge proposed
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    assert model.graph_lstm.threshold == 0.5
    graphs = batch.to_data_list()
    with torch.no_grad():
        out = model.forward_batch(batch)
        labels = superpixel_labels(batch.mask, out.superpixels, out.num_nodes, 6)
        whole = merge_counts(out.hierarchy, labels, 6)
        parts = None
        for graph in graphs:
            one = Batch.from_data_list([graph])
            single = model.forward_batch(one)
            counts = merge_counts(single.hierarchy, superpixel_labels(
                one.mask, single.superpixels, single.num_nodes, 6), 6)
            parts = counts if parts is None else parts.add(counts)
    assert whole.regions < whole.superpixels  # something merged
    assert (whole.superpixels, whole.regions, whole.in_region_of_other_label) == (
        parts.superpixels, parts.regions, parts.in_region_of_other_label)
    assert torch.equal(whole.per_class, parts.per_class)
    assert torch.equal(whole.merged_per_class, parts.merged_per_class)


@pytest.mark.parametrize("labels, hierarchy, error, needle", [
    (torch.tensor([0, 1]), None, ValueError, "one label per input node"),
    (torch.tensor([0, 1, 3]), None, ValueError, "0..2"),
    (torch.tensor([0, 1, -1]), None, ValueError, "0..2"),
    (torch.tensor([0, 1, 1]), "not a hierarchy", TypeError, "hierarchy"),
])
def test_merge_counts_bad_input(labels, hierarchy, error, needle):
    from segmentation.models.evolving import merge_counts

    hierarchy = _hierarchy([0, 0, 1], 2) if hierarchy is None else hierarchy
    with pytest.raises(error, match=needle):
        merge_counts(hierarchy, labels, num_classes=3)
