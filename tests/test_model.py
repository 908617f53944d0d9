import pytest
import torch
from torch_geometric.data import Batch

from segmentation.datasets import SyntheticScenes
from segmentation.model import GraphLSTMSegmenter, ModelConfig, segmentation_loss
from segmentation.pooling import pool
from segmentation.training import build_graphs


@pytest.fixture(scope="module")
def batch():
    graphs = build_graphs(SyntheticScenes(3, size=(40, 48), seed=5), n_segments=30)
    return Batch.from_data_list(graphs)


def small(**kw):
    return ModelConfig(num_classes=6, width=6, hidden=5, **kw)


@pytest.mark.parametrize("order", ["confidence", "random", "raster"])
@pytest.mark.parametrize("layers", [0, 2])
def test_forward_shapes_and_loss(batch, order, layers):
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(small(order=order, graph_layers=layers))
    out = model.forward_batch(batch)
    assert out.logits.shape == (3, 6, 40, 48)
    assert out.confidence_logits.shape == (3, 6, 40, 48)
    assert out.node_score.shape == (batch.num_nodes,)
    assert len(model.graph_layers) == layers
    loss = segmentation_loss(out, batch.mask)
    loss.backward()
    # The first Graph LSTM layer starts from a zero state, so its state projections
    # (lin_h, lin_fn) get no gradient; every other parameter does.
    unused = {"graph_layers.0.lin_h.weight", "graph_layers.0.lin_fn.weight"}
    for name, p in model.named_parameters():
        assert (p.grad is None) == (name in unused), name


def test_confidence_order_is_most_confident_superpixel_first(batch):
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(small())
    out = model.forward_batch(batch)
    probs = out.confidence_logits.softmax(1)
    # independent computation of the per-superpixel confidence: a plain loop
    scores = []
    offset = 0
    for b in range(3):
        labels = batch.superpixels[b]
        n = int(batch.ptr[b + 1] - batch.ptr[b])
        for k in range(n):
            scores.append(probs[b][:, labels == k].mean(1).max())
        offset += n
    torch.testing.assert_close(out.node_score, torch.stack(scores).detach())
    ranks = out.schedule.rank
    order = torch.sort(out.node_score, descending=True, stable=True).indices
    assert torch.equal(out.schedule.order, order)
    assert int(ranks[order[0]]) == 0


def test_raster_order_goes_top_to_bottom(batch):
    model = GraphLSTMSegmenter(small(order="raster"))
    out = model.forward_batch(batch)
    first = slice(0, int(batch.ptr[1]))
    ranks = out.schedule.rank[first]
    y = batch.pos[first, 1]
    assert y[ranks.argmin()] <= y.min() + 1.0
    assert y[ranks.argmax()] >= y.max() - 1.0


def test_graph_layers_change_the_output_only_through_context(batch):
    # With the Graph LSTM weights zeroed except the input, every node still sees only
    # itself; with random weights a change to one image region reaches other nodes.
    torch.manual_seed(1)
    model = GraphLSTMSegmenter(small(graph_layers=2)).eval()
    out = model.forward_batch(batch).logits
    image = batch.image.clone()
    image[0, :, :8, :8] = 1.0 - image[0, :, :8, :8]
    changed = model(image, batch.superpixels, batch.edge_index, batch.ptr.diff(),
                    batch.pos).logits
    far = (slice(None), slice(30, 40), slice(38, 48))  # far from the edited corner
    assert not torch.allclose(out[0][far], changed[0][far])
    assert torch.equal(out[1], changed[1])  # other images are untouched


def test_loss_ignores_255(batch):
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(small())
    out = model.forward_batch(batch)
    mask = batch.mask.clone()
    mask[:, :20] = 255
    ref = torch.nn.functional.cross_entropy(out.logits, mask, ignore_index=255) + \
        torch.nn.functional.cross_entropy(out.confidence_logits, mask, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(out, mask), ref)


def test_pool_used_by_model_matches_mean(batch):
    feats = torch.randn(3, 2, 40, 48)
    nodes = pool(feats, batch.superpixels, batch.ptr.diff())
    k = int(batch.superpixels[1].max())
    expected = feats[1][:, batch.superpixels[1] == k].mean(1)
    torch.testing.assert_close(nodes[int(batch.ptr[1]) + k], expected)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_classes=1), "num_classes"),
        (dict(num_classes=3, graph_layers=-1), "graph_layers"),
        (dict(num_classes=3, order="bfs"), "order"),
        (dict(num_classes=3, backbone="vgg"), "backbone"),
        (dict(num_classes=3, hidden=0), "hidden"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_config_round_trip_and_unknown_keys():
    config = small(order="random")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({**config.to_dict(), "depth": 3})


def test_torchvision_backbone_without_torchvision_is_a_clear_error():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="torchvision"):
            GraphLSTMSegmenter(ModelConfig(num_classes=3, backbone="resnet18"))
    else:  # with torchvision the backbone builds from a local (here: no) weights file
        model = GraphLSTMSegmenter(ModelConfig(num_classes=3, backbone="resnet18", width=8))
        assert model.backbone is not None


def test_bad_image_shape(batch):
    model = GraphLSTMSegmenter(small())
    with pytest.raises(ValueError, match="image"):
        model(batch.image[:, :2], batch.superpixels, batch.edge_index, batch.ptr.diff())
    with pytest.raises(ValueError, match="superpixels"):
        model(batch.image, batch.superpixels[:, :10], batch.edge_index, batch.ptr.diff())
