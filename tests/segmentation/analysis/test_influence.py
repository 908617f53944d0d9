"""Influence pictures: the shaded set is the reach, everything else is unshaded gray;
a model's Jacobian is non-zero exactly on its layers' reach; show_order.py --influence."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import shortest_path

from graphlstm import build_schedule, order_from_score, reachable
from segmentation import region_adjacency, slic_superpixels
from segmentation import visualize as vis
from segmentation.analysis.influence import node_influence
from segmentation.data.datasets import SyntheticScenes
from segmentation.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from segmentation.engine.train import build_graphs
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig
from tests.helpers import program, record_saved_figures, run_captured, saved_figure

HEIGHT, WIDTH, BLOCK = 48, 64, 8


@pytest.fixture(scope="module")
def scene():
    """Shuffled 8×8 blocks (labels unlike positions), a random image and a random order."""
    rng = np.random.default_rng(7)
    rows, cols = np.divmod(np.arange(HEIGHT * WIDTH), WIDTH)
    block = (rows // BLOCK) * (WIDTH // BLOCK) + cols // BLOCK
    labels = rng.permutation(block.max() + 1)[block].reshape(HEIGHT, WIDTH).astype(np.int64)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    edge_index, _ = region_adjacency(labels)
    num = int(labels.max()) + 1
    schedules = {name: build_schedule(edge_index, num, score=torch.from_numpy(
        np.random.default_rng(seed).standard_normal(num))) for seed, name in enumerate("abc")}
    return image, labels, edge_index, schedules


def gray_of(image):
    luminance = image.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
    return np.repeat(np.rint(luminance).astype(np.uint8)[:, :, None], 3, axis=2)


def shaded_superpixels(picture, image, labels):
    """The superpixels with any pixel that differs from the image's gray."""
    changed = (picture != gray_of(image)).any(axis=2)
    return np.array([changed[labels == v].any() for v in range(labels.max() + 1)])


def test_target_and_hop_distance(scene):
    image, labels, edge_index, _ = scene
    assert vis.target_superpixel(labels, 10, 20) == labels[20, 10]
    with pytest.raises(ValueError, match="outside"):
        vis.target_superpixel(labels, WIDTH, 0)
    with pytest.raises(TypeError, match="'x'"):
        vis.target_superpixel(labels, 1.5, 0)
    num = int(labels.max()) + 1
    src, dst = edge_index.numpy()
    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(num, num))
    for target in (0, 5, num - 1):
        want = shortest_path(graph, directed=False, unweighted=True, indices=target)
        assert np.array_equal(vis.hop_distance(edge_index, num, target), want.astype(int))


@pytest.mark.parametrize("alpha", [0.75, 1.0])
def test_influence_picture_shades_the_reach_and_nothing_else(scene, alpha):
    image, labels, edge_index, schedules = scene
    num = int(labels.max()) + 1
    # The target with the largest reach: a picture worth checking.
    sizes = reachable(edge_index, num, torch.arange(num), order=schedules["a"].order).sum(1)
    target = int(sizes.argmax())
    reach = reachable(edge_index, num, [target], order=schedules["a"].order)[0].numpy()
    assert 5 <= reach.sum() < num
    hops = vis.hop_distance(edge_index, num, target).astype(float)
    picture = vis.influence_picture(image, labels, reach, hops, target, cmap="viridis",
                                    vmin=0, vmax=6, alpha=alpha)
    gray = gray_of(image)
    outside = ~reach[labels]
    assert np.array_equal(picture[outside], gray[outside])  # unshaded
    assert np.array_equal(shaded_superpixels(picture, image, labels), reach)
    # Inside, away from the boundaries: gray blended with the colormap colour of the hops.
    table = np.rint(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255)
    from scipy import ndimage

    for v in np.flatnonzero(reach):
        core = ndimage.binary_erosion(labels == v, iterations=2)
        colour = table[int(np.clip(hops[v] / 6, 0, 1) * 255)]
        want = np.rint((1 - alpha) * gray[core] + alpha * colour)
        assert np.abs(picture[core].astype(float) - want).max() <= 1.0
    # The target is outlined in white.
    assert (picture[labels == target] == 255).all(axis=1).any()


@pytest.mark.parametrize("with_values", [False, True])
def test_plot_influence_panels_are_the_reach_of_each_order(scene, tmp_path, with_values,
                                                          monkeypatch):
    image, labels, edge_index, schedules = scene
    saved = record_saved_figures(monkeypatch)
    num = int(labels.max()) + 1
    target = int(labels[20, 30])
    values = None
    if with_values:
        rng = np.random.default_rng(0)
        values = {name: rng.uniform(1e-6, 1.0, num) for name in schedules}
    fig = vis.plot_influence(image, labels, edge_index, target, schedules, values=values,
                             num_layers=2, path=tmp_path / "i.png")
    saved_figure(tmp_path / "i.png", saved, fig)  # the file holds the figure checked
    for i, (name, schedule) in enumerate(schedules.items()):
        picture = np.asarray(fig.axes[i].images[0].get_array())
        reach = reachable(edge_index, num, [target], order=schedule.order, num_layers=2)[0]
        assert np.array_equal(shaded_superpixels(picture, image, labels), reach.numpy())
        assert fig.axes[i].get_title().startswith(f"{name}: {int(reach.sum())} of {num}")


def test_plot_influence_bad_input(scene, tmp_path):
    image, labels, edge_index, schedules = scene
    with pytest.raises(ValueError, match="target"):
        vis.plot_influence(image, labels, edge_index, 10_000, schedules)
    with pytest.raises(ValueError, match="values"):
        vis.plot_influence(image, labels, edge_index, 0, schedules, values={"a": np.ones(48)})
    with pytest.raises(TypeError, match="schedules"):
        vis.plot_influence(image, labels, edge_index, 0, {})
    with pytest.raises(ValueError, match="path"):
        vis.plot_influence(image, labels, edge_index, 0, schedules, path=tmp_path / "i.bmp")
    assert not list(tmp_path.iterdir())


def tiny_model(layers, order, seed=0):
    torch.manual_seed(seed)
    model = GraphLSTMSegmenter(ModelConfig(num_classes=6, width=4, hidden=3,
                                           graph_layers=layers, order=order, n_segments=30))
    with torch.no_grad():  # generic weights: no accidental zero in the Jacobian
        for p in model.graph_lstm.parameters():
            p.normal_(0.0, 0.7)
        model.classifier[0].bias.fill_(5.0)  # and no dead ReLU at the target's pixels
    return model.eval()


@pytest.mark.parametrize(("layers", "order"), [(1, "confidence"), (2, "random"), (2, "raster")])
def test_jacobian_of_a_model_is_non_zero_exactly_on_its_reach(layers, order):
    graph = build_graphs(SyntheticScenes(1, size=(40, 48), seed=3), n_segments=30)[0]
    model = tiny_model(layers, order)
    num = graph.num_nodes
    for target in (0, num // 2, num - 1):
        norms, schedule = node_influence(model, graph, target)
        reach = reachable(graph.edge_index, num, [target], order=schedule.order,
                          num_layers=layers)[0]
        assert np.array_equal(norms > 0, reach.numpy()), target
    # Another order: the schedule follows it, and so does the support.
    score = torch.randn(num, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    norms, schedule = node_influence(model, graph, 2, score=score)
    assert torch.equal(schedule.order, order_from_score(score))
    reach = reachable(graph.edge_index, num, [2], score=score, num_layers=layers)[0]
    assert np.array_equal(norms > 0, reach.numpy())
    with pytest.raises(ValueError, match="target"):
        node_influence(model, graph, num)


# --------------------------------------------------------------------------- the script


@pytest.fixture(scope="module")
def script():
    return program("show_order")


def call(script, capsys, *args) -> tuple[int, str, str]:
    """The script's ``main`` as ``__main__`` runs it (one-line errors, argparse exits)."""
    return run_captured(capsys, "show_order", *args)


@pytest.fixture
def photo(tmp_path):
    image = SyntheticScenes(1, size=(48, 64), seed=4)[0][0]
    Image.fromarray(image).save(tmp_path / "photo.png")
    return tmp_path / "photo.png", image


def test_script_draws_the_reach_of_each_order(script, capsys, photo, tmp_path, monkeypatch):
    path, image = photo
    saved = record_saved_figures(monkeypatch)
    code, out, err = call(script, capsys, path, "--influence", "30,20", "--order",
                          "score,reverse-score,random", "--n-segments", 30, "--layers", 2,
                          "--out", tmp_path / "influence.png")
    assert code == 0, err
    fig = saved_figure(tmp_path / "influence.png", saved)
    labels = slic_superpixels(image, n_segments=30)
    edge_index, _ = region_adjacency(labels)
    num, target = int(labels.max()) + 1, int(labels[20, 30])
    from segmentation.models.orders import random_score, score_from_image, smooth_random_field

    smooth = score_from_image(smooth_random_field(labels.shape, 0.1, 0), labels, num)
    sizes = {name: int(reachable(edge_index, num, [target], score=s, num_layers=2).sum())
             for name, s in (("smooth score", smooth), ("reverse smooth score", -smooth),
                             ("random", random_score(num, torch.Generator().manual_seed(0))))}
    assert f"target superpixel {target} at (30, 20)" in out
    assert "reach " + ", ".join(f"{k}: {v}" for k, v in sizes.items()) in out
    # The picture: one panel per order, shading exactly that order's reach.
    panels = [ax for ax in fig.axes if ax.images]
    for ax, (name, s) in zip(panels, (("smooth score", smooth),
                                      ("reverse smooth score", -smooth),
                                      ("random", random_score(num, torch.Generator()
                                                              .manual_seed(0)))),
                             strict=True):
        picture = np.asarray(ax.images[0].get_array())
        reach = reachable(edge_index, num, [target], score=s, num_layers=2)[0]
        assert np.array_equal(shaded_superpixels(picture, image, labels), reach.numpy()), name


def test_script_with_a_checkpoint_uses_the_models_layers(script, capsys, photo, tmp_path):
    path, image = photo
    model = tiny_model(2, "confidence")
    save_checkpoint(tmp_path / "m.pt", {
        "format": CHECKPOINT_FORMAT, "model_config": model.config.to_dict(),
        "model_state": model.state_dict(), "epoch": 0, "class_names": None})
    code, out, err = call(script, capsys, path, "--influence", "10,10", "--order",
                          "confidence,raster", "--checkpoint", tmp_path / "m.pt",
                          "--out", tmp_path / "jac.png")
    assert code == 0, err
    graph = build_graphs([(image, np.zeros(image.shape[:2], np.uint8))], n_segments=30)[0]
    target = int(graph.superpixels[0, 10, 10])
    norms, schedule = node_influence(model, graph, target)
    assert f"confidence: {int((norms > 0).sum())}," in out
    assert (tmp_path / "jac.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--influence", "10,10", "--animate", "a.gif"], "--animate"),
     (["--layers", "2"], "--influence only"),
     (["--influence", "10,10", "--layers", "0"], "--layers"),
     (["--influence", "640,10"], "outside"),
     (["--influence", "10;10"], "X,Y"),
     (["--influence", "1,1", "--numbers"], "--numbers")],
)
def test_script_errors(script, capsys, photo, tmp_path, args, message):
    path, _ = photo
    code, _, err = call(script, capsys, path, "--n-segments", 20, *args,
                        "--out", tmp_path / "x.png")
    assert code != 0
    assert message in err.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()
