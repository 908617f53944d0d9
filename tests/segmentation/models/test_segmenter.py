import pytest
import torch
from torch_geometric.data import Batch

from segmentation.data.datasets import SyntheticScenes
from segmentation.engine.train import build_graphs
from segmentation.models.pooling import pool
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig, segmentation_loss


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
    assert (model.graph_lstm is None) if layers == 0 else model.graph_lstm.num_layers == layers
    loss = segmentation_loss(out, batch.mask)
    loss.backward()
    # The first Graph LSTM layer starts from a zero state, so its state projections
    # (lin_h, lin_fn) get no gradient; every other parameter does.
    unused = {"graph_lstm.layers.0.0.lin_h.weight", "graph_lstm.layers.0.0.lin_fn.weight"}
    for name, p in model.named_parameters():
        assert (p.grad is None) == (name in unused), name


def test_graph_part_is_layers_with_state_carried_and_residuals(batch):
    # What the model ran before GraphLSTMStack: GraphLSTM layers sharing the
    # schedule, each starting from the previous one's state, each output added to
    # its input. Checked on the stack's own input, captured by a hook.
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(small()).eval()
    seen = {}
    model.graph_lstm.register_forward_hook(
        lambda module, args, kwargs, output: seen.update(args=args, kwargs=kwargs, out=output),
        with_kwargs=True,
    )
    out = model.forward_batch(batch)
    nodes, edge_index = seen["args"][:2]
    assert seen["kwargs"]["schedule"] is out.schedule
    state = None
    for layers in model.graph_lstm.layers:
        assert len(layers) == 1
        h, state = layers[0](nodes, edge_index, schedule=out.schedule, state=state)
        nodes = nodes + h
    assert torch.equal(seen["out"][0], nodes)


def run_seeing_features_and_nodes(model, batch):
    """The model's output on ``batch`` in float64, with the backbone's features and
    the final node states it computed on the way (captured by hooks)."""
    seen = {}
    model.backbone.register_forward_hook(lambda m, a, out: seen.update(feats=out))
    last = model.graph_lstm if model.graph_lstm is not None else model.node_in
    last.register_forward_hook(
        lambda m, a, out: seen.update(nodes=out[0] if isinstance(out, tuple) else out))
    out = model(batch.image.double(), batch.superpixels, batch.edge_index, batch.ptr.diff(),
                batch.pos)
    return out, seen["feats"], seen["nodes"]


@pytest.mark.parametrize("layers", [0, 2])
def test_logits_are_the_classifier_on_features_and_unpooled_nodes(batch, layers):
    # The model applies the node half of the fusing 1x1 convolution before
    # unpooling; the definition is the classifier on [features ; unpooled nodes].
    from segmentation.models.pooling import unpool

    torch.manual_seed(0)
    model = GraphLSTMSegmenter(small(graph_layers=layers)).double().eval()
    out, feats, nodes = run_seeing_features_and_nodes(model, batch)
    node_pixels = unpool(nodes, batch.superpixels, batch.ptr.diff())
    expected = model.classifier(torch.cat([feats, node_pixels], dim=1))
    torch.testing.assert_close(out.logits, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("model_class, layers", [("stack", 0), ("stack", 2), ("evolving", 2)])
def test_soft_unpool_logits_are_the_classifier_on_features_and_mixed_nodes(batch, model_class,
                                                                           layers):
    # With unpool="soft" the node half reaches the pixels through soft_unpool:
    # queries from the pixel features, keys from the final node states.
    from segmentation.models.pooling import soft_unpool, unpool
    from segmentation.models.segmenter import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter(small(graph_layers=layers, graph_model=model_class,
                                  unpool="soft")).double().eval()
    out, feats, nodes = run_seeing_features_and_nodes(model, batch)
    num_nodes = batch.ptr.diff()
    fuse = model.classifier[0]
    width = feats.size(1)
    node_half = torch.nn.functional.linear(nodes, fuse.weight[:, width:, 0, 0])
    node_pixels = soft_unpool(node_half, model.unpool_key(nodes), model.unpool_query(feats),
                              batch.superpixels, num_nodes)
    hidden = torch.nn.functional.conv2d(feats, fuse.weight[:, :width], fuse.bias)
    expected = model.classifier[2](model.classifier[1](hidden + node_pixels))
    torch.testing.assert_close(out.logits, expected, atol=1e-12, rtol=0)
    # Not the hard unpooling: at superpixel edges the pixels mix their neighbours in.
    hard = model.classifier(torch.cat([feats, unpool(nodes, batch.superpixels, num_nodes)],
                                      dim=1))
    assert not torch.allclose(out.logits, hard)


def test_soft_unpool_trains_its_query_and_key_and_old_configs_load_hard(batch):
    torch.manual_seed(0)
    model = GraphLSTMSegmenter(small(unpool="soft"))
    segmentation_loss(model.forward_batch(batch), batch.mask).backward()
    for module in (model.unpool_query, model.unpool_key):
        for p in module.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0
    # A checkpoint written before the option existed has no "unpool" key.
    old = {k: v for k, v in small().to_dict().items() if k != "unpool"}
    loaded = GraphLSTMSegmenter(ModelConfig.from_dict(old))
    assert loaded.config.unpool == "hard" and loaded.unpool_query is None
    assert not any(name.startswith("unpool_") for name in loaded.state_dict())


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


def test_graph_context_reaches_pixels_the_backbone_cannot_see(batch):
    # Edit one corner of image 0. The backbone sees 7x7 pixels, so its features
    # change only within 3 pixels of the edit; call "unseen" the pixels farther
    # away whose superpixel holds no changed feature. Without a Graph LSTM their
    # scores stay exactly the same; with it they change, and no other image does.
    edit = (0, slice(None), slice(0, 8), slice(0, 8))
    image = batch.image.clone()
    image[edit] = 1.0 - image[edit]
    near = torch.zeros(40, 48, dtype=torch.bool)
    near[: 8 + 3, : 8 + 3] = True
    labels = batch.superpixels[0]
    touched = torch.unique(labels[near])
    unseen = ~torch.isin(labels, touched)
    assert unseen.sum() > 100

    def scores(model, img):
        return model(img, batch.superpixels, batch.edge_index, batch.ptr.diff(),
                     batch.pos).logits

    torch.manual_seed(1)
    baseline = GraphLSTMSegmenter(small(graph_layers=0)).eval()
    before, after = scores(baseline, batch.image), scores(baseline, image)
    assert torch.equal(before[0][:, unseen], after[0][:, unseen])

    torch.manual_seed(1)
    model = GraphLSTMSegmenter(small(graph_layers=2, order="raster")).eval()
    before, after = scores(model, batch.image), scores(model, image)
    # (the raster order does not depend on the image: no rounding noise here)
    assert (before[0][:, unseen] - after[0][:, unseen]).abs().max() > 1e-6
    # Other images: equal up to float32 rounding (their nodes may now share
    # levels, and so GEMMs, with other nodes).
    torch.testing.assert_close(before[1:], after[1:], atol=1e-5, rtol=1e-5)


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
        (dict(num_classes=3, unpool="bilinear"), "'unpool' must be one of hard, soft"),
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


def test_bad_image_shape(batch):
    model = GraphLSTMSegmenter(small())
    with pytest.raises(ValueError, match="image"):
        model(batch.image[:, :2], batch.superpixels, batch.edge_index, batch.ptr.diff())
    with pytest.raises(ValueError, match="superpixels"):
        model(batch.image, batch.superpixels[:, :10], batch.edge_index, batch.ptr.diff())


def test_non_finite_confidence_is_a_clear_error(batch):
    model = GraphLSTMSegmenter(small())
    with torch.no_grad():
        model.confidence_head.bias.fill_(float("inf"))
    with pytest.raises(RuntimeError, match="confidence scores are not finite"):
        model.forward_batch(batch)
