"""Pictures of the update order: the content of every panel and frame is checked."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from graphlstm import build_schedule
from segmentation import region_adjacency, slic_superpixels
from segmentation import visualize as vis
from segmentation.models.orders import smooth_random_field
from tests.helpers import (
    levels_of_order,
    order_by_score,
    record_saved_figures,
    saved_figure,
    segment_means,
    touching_pairs,
)

HEIGHT, WIDTH, BLOCK = 48, 64, 8


def lut(name: str) -> np.ndarray:
    """The 256 colours of a matplotlib colormap as uint8, straight from matplotlib."""
    return np.rint(matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255)


def nearest_index(colors: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest colormap entry of each colour, and its distance."""
    dist = np.abs(colors[:, None, :].astype(float) - table[None, :, :]).max(axis=2)
    index = dist.argmin(axis=1)
    return index, dist[np.arange(len(colors)), index]


def interiors(labels: np.ndarray) -> list[np.ndarray]:
    """Pixels of each superpixel at least 2 pixels away from its boundary."""
    return [ndimage.binary_erosion(labels == v, iterations=2) for v in range(labels.max() + 1)]


@pytest.fixture(scope="module")
def scene():
    """A 48×64 RGB image cut into 6×8 blocks whose labels are shuffled (label != position)."""
    rng = np.random.default_rng(3)
    rows, cols = np.divmod(np.arange(HEIGHT * WIDTH), WIDTH)
    block = (rows // BLOCK) * (WIDTH // BLOCK) + cols // BLOCK
    shuffle = rng.permutation(block.max() + 1)
    labels = shuffle[block].reshape(HEIGHT, WIDTH).astype(np.int64)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    edge_index, _ = region_adjacency(labels)
    num = int(labels.max()) + 1
    score = torch.from_numpy(rng.standard_normal(num))
    schedule = build_schedule(edge_index, num, score=score)
    assert schedule.num_levels >= 4  # enough levels for the tests to mean something
    return image, labels, schedule, interiors(labels)


def recovered_colors(panel, image, masks, alpha):
    """Per superpixel, the colour that was blended over ``image`` with ``alpha``."""
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    out = []
    for mask in masks:
        colour = (panel[mask].astype(float) - (1 - alpha) * rgb[mask]) / alpha
        # One colour per superpixel: the blend is exact up to rounding.
        assert np.ptp(colour, axis=0).max() <= 2.0 / alpha + 1e-9
        out.append(colour.mean(axis=0))
    return np.array(out)


# --------------------------------------------------------------------------- value maps


def test_rank_and_level_images_paint_each_superpixel(scene):
    _, labels, schedule, _ = scene
    ranks = vis.rank_image(labels, schedule.rank)
    levels = vis.level_image(labels, schedule.level.numpy())
    for v in range(schedule.num_nodes):
        assert (ranks[labels == v] == int(schedule.rank[v])).all()
        assert (levels[labels == v] == int(schedule.level[v])).all()


@pytest.mark.parametrize("call, name", [
    (lambda L, s: vis.rank_image(L, s.rank[:-1]), "rank"),
    (lambda L, s: vis.rank_image(L, s.rank.double()), "rank"),
    (lambda L, s: vis.level_image(L, -s.level), "level"),
    (lambda L, s: vis.level_image(L.astype(float), s.level), "superpixels"),
    (lambda L, s: vis.rank_image(L[None], s.rank), "superpixels"),
])
def test_value_maps_reject_bad_input_naming_it(scene, call, name):
    _, labels, schedule, _ = scene
    with pytest.raises((TypeError, ValueError), match=name):
        call(labels, schedule)


def test_colorize_spans_the_colormap():
    values = np.array([[0.0, 0.5, 1.0]])
    colours = vis.colorize(values, "viridis")
    assert colours.dtype == np.uint8 and colours.shape == (1, 3, 3)
    table = lut("viridis")
    assert np.array_equal(colours[0, 0], table[0]) and np.array_equal(colours[0, 2], table[-1])
    # Explicit bounds clip; a constant input maps to the low end.
    clipped = vis.colorize(np.array([-5.0, 5.0]), "magma", vmin=0, vmax=1)
    assert np.array_equal(clipped[0], lut("magma")[0])
    assert np.array_equal(clipped[1], lut("magma")[-1])
    assert np.array_equal(vis.colorize(np.full(3, 7.0))[1], table[0])


@pytest.mark.parametrize("kwargs, name", [
    ({"values": np.array([0.0, np.nan])}, "values"),
    ({"values": np.array(["a"])}, "values"),
    ({"values": np.zeros(2), "cmap": "no-such-map"}, "cmap"),
    ({"values": np.zeros(2), "vmin": 2.0, "vmax": 1.0}, "vmin"),
])
def test_colorize_rejects_bad_input(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        vis.colorize(**kwargs)


# --------------------------------------------------------------------------- figure


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_rank_panel_colour_is_monotone_in_rank(scene, alpha):
    image, labels, schedule, masks = scene
    fig = vis.plot_update_order(image, labels, schedule, alpha=alpha)
    panel = np.asarray(fig.axes[0].images[0].get_array())
    assert panel.shape == (HEIGHT, WIDTH, 3)
    colours = recovered_colors(panel, image, masks, alpha)
    index, dist = nearest_index(colours, lut("viridis"))
    assert dist.max() <= 2.0 / alpha + 1e-9  # every superpixel shows a viridis colour
    by_rank = index[schedule.order.numpy()]
    assert by_rank[0] == 0 and by_rank[-1] == 255
    assert (np.diff(by_rank) > 0).all()  # 48 ranks over 256 entries: strictly increasing


def test_level_panel_groups_superpixels_of_one_level(scene):
    image, labels, schedule, masks = scene
    fig = vis.plot_update_order(image, labels, schedule, alpha=0.6)
    panel = np.asarray(fig.axes[1].images[0].get_array())
    index, dist = nearest_index(recovered_colors(panel, image, masks, 0.6), lut("plasma"))
    assert dist.max() <= 2.0 / 0.6 + 1e-9
    level = schedule.level.numpy()
    for k in range(schedule.num_levels):
        assert len(set(index[level == k])) == 1
    per_level = [index[level == k][0] for k in range(schedule.num_levels)]
    assert per_level[0] == 0 and per_level[-1] == 255 and (np.diff(per_level) > 0).all()


def test_boundaries_are_marked_between_superpixels(scene):
    image, labels, schedule, _ = scene
    panel = np.asarray(vis.plot_update_order(image, labels, schedule).axes[0].images[0]
                       .get_array())
    # A column where two blocks meet: the boundary is white (mark_boundaries).
    assert (panel[2:-2, BLOCK - 1:BLOCK + 1] == 255).all(axis=2).any(axis=1).all()


def test_figure_panels_colorbars_numbers_and_confidence(scene):
    image, labels, schedule, masks = scene
    num = schedule.num_nodes
    two = vis.plot_update_order(image, labels, schedule)
    assert len(two.axes) == 4  # two pictures and their colorbars
    node_conf = np.linspace(0.0, 1.0, num)[np.random.default_rng(0).permutation(num)]
    fig = vis.plot_update_order(image, labels, schedule, confidence=node_conf, numbers=True)
    assert len(fig.axes) == 6
    # Panel (c): the per-superpixel confidence, brighter (inferno) for higher values.
    panel = np.asarray(fig.axes[2].images[0].get_array())
    index, dist = nearest_index(recovered_colors(panel, panel, masks, 1.0), lut("inferno"))
    assert dist.max() <= 1
    assert (np.diff(index[np.argsort(node_conf)]) > 0).all()
    # Numbers: the rank of every superpixel at its centroid.
    texts = fig.axes[0].texts
    assert len(texts) == num
    rows, cols = np.indices(labels.shape)
    for v, text in enumerate(texts):
        assert text.get_text() == str(int(schedule.rank[v]))
        x, y = text.get_position()
        assert x == pytest.approx(cols[labels == v].mean(), abs=1e-3)
        assert y == pytest.approx(rows[labels == v].mean(), abs=1e-3)
    # A confidence *map* is shown pixel by pixel.
    ramp = np.tile(np.linspace(0, 1, WIDTH), (HEIGHT, 1))
    row = np.asarray(vis.plot_update_order(image, labels, schedule, confidence=ramp)
                     .axes[2].images[0].get_array())[HEIGHT // 2]
    index, _ = nearest_index(row, lut("inferno"))
    assert index[0] == 0 and index[-1] == 255 and (np.diff(index) >= 0).all()


@pytest.mark.parametrize("kind", ["gray-uint8", "gray-float", "rgb-float"])
def test_grayscale_and_float_images(scene, kind):
    image, labels, schedule, masks = scene
    if kind.startswith("gray"):
        image = image[:, :, 1]
    expected = image
    if kind.endswith("float"):
        image = image / 255.0
    fig = vis.plot_update_order(image, labels, schedule, alpha=0.5)
    panel = np.asarray(fig.axes[0].images[0].get_array())
    assert panel.shape == (HEIGHT, WIDTH, 3) and panel.dtype == np.uint8
    index, dist = nearest_index(recovered_colors(panel, expected, masks, 0.5), lut("viridis"))
    assert dist.max() <= 4.0 + 1e-9
    assert (np.diff(index[schedule.order.numpy()]) > 0).all()


def test_figure_is_saved_atomically(scene, tmp_path, monkeypatch):
    image, labels, schedule, _ = scene
    out = tmp_path / "order.png"
    saved = record_saved_figures(monkeypatch)
    fig = vis.plot_update_order(image, labels, schedule, path=out)
    saved_figure(out, saved, fig)  # the file holds the figure returned
    assert sorted(os.listdir(tmp_path)) == ["order.png"]
    with pytest.raises(ValueError, match="path"):
        vis.plot_update_order(image, labels, schedule, path=tmp_path / "order.txt")
    with pytest.raises(ValueError, match="does not exist"):
        vis.plot_update_order(image, labels, schedule, path=tmp_path / "no" / "x.png")
    assert sorted(os.listdir(tmp_path)) == ["order.png"]


@pytest.mark.parametrize("change, name", [
    (lambda i, L, s: (i, L, build_schedule(torch.empty(2, 0, dtype=torch.long), 3)), "schedule"),
    (lambda i, L, s: (i, L, s.rank), "schedule"),
    (lambda i, L, s: (i[:-1], L, s), "superpixels"),
    (lambda i, L, s: (i[:, :, :2], L, s), "image"),
    (lambda i, L, s: (i.astype(float), L, s), "image"),  # floats must be in [0, 1]
])
def test_plot_update_order_rejects_bad_input_naming_it(scene, change, name):
    image, labels, schedule, _ = scene
    args = change(image, labels, schedule)
    with pytest.raises((TypeError, ValueError), match=name):
        vis.plot_update_order(*args)


def test_plot_update_order_rejects_bad_confidence(scene):
    image, labels, schedule, _ = scene
    for bad in (np.zeros((HEIGHT, WIDTH - 1)), np.zeros(schedule.num_nodes + 1),
                np.full(schedule.num_nodes, np.nan)):
        with pytest.raises(ValueError, match="confidence"):
            vis.plot_update_order(image, labels, schedule, confidence=bad)


def test_order_comparison_has_one_row_per_order(scene, tmp_path, monkeypatch):
    image, labels, schedule, masks = scene
    edge_index, _ = region_adjacency(labels)
    other = build_schedule(edge_index, schedule.num_nodes)  # index order
    saved = record_saved_figures(monkeypatch)
    fig = vis.plot_order_comparison(image, labels, {"a": schedule, "index": other},
                                    path=tmp_path / "c.png")
    saved_figure(tmp_path / "c.png", saved, fig)  # the file holds the figure checked
    assert "index" in fig.axes[2].get_title() and f"{other.num_levels} levels" in (
        fig.axes[3].get_title())
    panel = np.asarray(fig.axes[2].images[0].get_array())
    index, _ = nearest_index(recovered_colors(panel, image, masks, 0.6), lut("viridis"))
    assert (np.diff(index) > 0).all()  # index order: rank v for superpixel v
    with pytest.raises(TypeError, match="schedules"):
        vis.plot_order_comparison(image, labels, {})


# --------------------------------------------------------------------------- animation


@pytest.mark.parametrize("gray", [True, False])
def test_frame_k_fills_exactly_the_levels_below_k(scene, gray):
    image, labels, schedule, masks = scene
    level = schedule.level.numpy()
    frames = vis.level_frames(image, labels, schedule, gray=gray)
    k_total = schedule.num_levels
    assert len(frames) == k_total + 1
    strip = frames[0].shape[0] - HEIGHT
    assert strip > 0 and all(f.shape == (strip + HEIGHT, WIDTH, 3) for f in frames)
    pictures = [f[strip:] for f in frames]
    background = pictures[0]
    if gray:
        assert (background[..., 0] == background[..., 2]).all()
    else:
        inside = np.any(masks, axis=0)
        assert np.array_equal(background[inside], image[inside])
    for k, picture in enumerate(pictures):
        filled = {v for v, m in enumerate(masks) if not np.array_equal(picture[m], background[m])}
        assert filled == set(np.flatnonzero(level < k).tolist()), f"frame {k}"
        for v in filled:  # in the colour of its level, as in the last frame
            assert np.array_equal(picture[masks[v]], pictures[-1][masks[v]])
    # The counter changes in the strip, and only there for the first and a repeated state.
    strips = {f[:strip].tobytes() for f in frames}
    assert len(strips) == len(frames)


def test_level_frames_fill_colours_follow_the_level(scene):
    image, labels, schedule, masks = scene
    frames = vis.level_frames(image, labels, schedule.level, alpha=1.0, counter=False)
    assert frames[0].shape == (HEIGHT, WIDTH, 3)
    colours = np.array([frames[-1][m].mean(axis=0) for m in masks])
    index, dist = nearest_index(colours, lut("plasma"))
    assert dist.max() <= 1
    level = schedule.level.numpy()
    per_level = [set(index[level == k]) for k in range(schedule.num_levels)]
    assert all(len(s) == 1 for s in per_level)
    assert (np.diff([min(s) for s in per_level]) > 0).all()


def test_level_frames_reject_bad_level(scene):
    image, labels, schedule, _ = scene
    with pytest.raises(ValueError, match="level"):
        vis.level_frames(image, labels, schedule.level[:-1])
    with pytest.raises(ValueError, match="alpha"):
        vis.level_frames(image, labels, schedule, alpha=2)


def test_gif_has_one_frame_per_level_plus_one(scene, tmp_path):
    image, labels, schedule, _ = scene
    frames = vis.level_frames(image, labels, schedule)
    out = vis.save_level_animation(tmp_path / "levels.gif", frames, fps=5, hold_last=2.0)
    with Image.open(out) as gif:
        assert gif.n_frames == schedule.num_levels + 1
        read = []
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
            read.append(np.asarray(gif.convert("RGB"), dtype=float))
    stack = np.stack(frames).astype(float)
    for i, picture in enumerate(read):
        # Each GIF frame is (palette-quantised) its own frame, not a neighbour's.
        errors = np.abs(stack - picture).mean(axis=(1, 2, 3))
        assert errors.argmin() == i and errors[i] < 3.0
    assert durations[0] == 200 and durations[-1] == 2000
    assert sorted(os.listdir(tmp_path)) == ["levels.gif"]


def test_animation_errors_leave_no_file(scene, tmp_path, monkeypatch):
    image, labels, schedule, _ = scene
    frames = vis.level_frames(image, labels, schedule, counter=False)
    with pytest.raises(ValueError, match="path"):
        vis.save_level_animation(tmp_path / "a.avi", frames)
    with pytest.raises(ValueError, match="fps"):
        vis.save_level_animation(tmp_path / "a.gif", frames, fps=0)
    with pytest.raises(ValueError, match="frames"):
        vis.save_level_animation(tmp_path / "a.gif", [frames[0], frames[1][:-1]])
    with pytest.raises(ValueError, match="frames"):
        vis.save_level_animation(tmp_path / "a.gif", [])
    monkeypatch.setattr(vis.animation, "mp4_writer_available", lambda: False)
    with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
        vis.save_level_animation(tmp_path / "a.mp4", frames)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- lattices


def anti_diagonal(shape, direction):
    """Level of cell (r, c) of a 2-D scan: its distance from the starting corner."""
    rows, cols = np.indices(shape)
    if direction & 1:
        rows = shape[0] - 1 - rows
    if direction & 2:
        cols = shape[1] - 1 - cols
    return rows + cols


@pytest.mark.parametrize("direction", range(4))
def test_lattice_levels_are_anti_diagonals(direction):
    assert np.array_equal(vis.lattice_levels((4, 6), direction), anti_diagonal((4, 6), direction))


def test_lattice_levels_in_three_dimensions():
    i, j, k = np.indices((2, 3, 4))
    assert np.array_equal(vis.lattice_levels((2, 3, 4), 0b101), (1 - i) + j + (3 - k))


@pytest.mark.parametrize("direction", [0, 3])
def test_wavefront_frame_k_fills_cells_of_levels_below_k(direction):
    shape, cell = (3, 5), 6
    frames = vis.lattice_wavefront_frames(shape, direction, cell=cell)
    k_total = shape[0] + shape[1] - 1
    assert len(frames) == k_total + 1
    strip = frames[0].shape[0] - shape[0] * cell
    assert frames[0].shape[1] == shape[1] * cell
    levels = anti_diagonal(shape, direction)
    table = lut("plasma")
    for k, frame in enumerate(frames):
        centres = frame[strip + cell // 2::cell, cell // 2::cell]
        assert centres.shape[:2] == shape
        filled = ~(centres == 235).all(axis=2)
        assert np.array_equal(filled, levels < k), f"frame {k}"
        if k == 0:
            continue
        index, dist = nearest_index(centres[filled], table)
        assert dist.max() <= 1
        # matplotlib's lookup: entry floor(t * 256) of 256 for t = level / (K - 1).
        expected = np.minimum(np.floor(levels[filled] / (k_total - 1) * 256), 255)
        assert np.array_equal(index, expected)


def test_wavefront_frames_tile_several_directions():
    frames = vis.lattice_wavefront_frames((2, 3), [0, 2], cell=4, gap=5, counter=False)
    assert len(frames) == 5 and frames[0].shape == (8, 2 * 12 + 5, 3)
    last = frames[-1]
    # Direction 2 runs right to left: the second panel mirrors the first.
    assert np.array_equal(last[2::4, 2:12:4], last[2::4, 17 + 2::4][:, ::-1])
    assert (last[:, 12:17] == 255).all()


@pytest.mark.parametrize("kwargs, name", [
    ({"shape": (2, 3, 4)}, "shape"),
    ({"shape": (0, 3)}, "shape"),
    ({"shape": (2, 3), "direction": 4}, "direction"),
    ({"shape": (2, 3), "cell": 0}, "cell"),
])
def test_wavefront_frames_reject_bad_input(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        vis.lattice_wavefront_frames(**kwargs)


def test_lattice_picture_shows_every_direction(tmp_path, monkeypatch):
    saved = record_saved_figures(monkeypatch)
    fig = vis.plot_lattice_wavefront((3, 4), path=tmp_path / "lattice.png")
    pictures = [ax for ax in fig.axes if ax.images]
    assert len(pictures) == 4
    for direction, ax in enumerate(pictures):
        assert np.array_equal(ax.images[0].get_array(), anti_diagonal((3, 4), direction))
        assert len(ax.texts) == 12 and f"direction {direction}" in ax.get_title()
    saved_figure(tmp_path / "lattice.png", saved, fig)  # the file holds the figure checked


# --------------------------------------------------------------------------- levels vs N


@pytest.fixture(scope="module")
def small_image():
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([xx * 4 % 256, yy * 5 % 256, (xx + yy) * 2 % 256], axis=2)
    return image.astype(np.uint8)


def test_levels_vs_superpixels_counts(small_image):
    result = vis.levels_vs_superpixels((12, 60), image=small_image, seed=1)
    assert result["n_segments"] == [12, 60]
    assert set(result["levels"]) == set(vis.LEVEL_ORDER_KINDS)
    # Each kind's order rebuilt from its definition, its levels by a plain loop over
    # the order on the pixels' 4-neighbour adjacency.
    height, width = small_image.shape[:2]
    field = smooth_random_field((height, width), 0.1, 1)
    rows, cols = np.mgrid[0:height, 0:width]
    for i, n_segments in enumerate((12, 60)):
        labels = slic_superpixels(small_image, n_segments=n_segments)
        num = int(labels.max()) + 1
        assert result["num_nodes"][i] == num
        # Random: the seeded permutation's values as scores, highest first.
        permutation = torch.randperm(num, generator=torch.Generator().manual_seed(1))
        # Raster: rows of rounded centroid y, top first, then centroid x.
        y, x = segment_means(labels, rows), segment_means(labels, cols)
        orders = {"smooth score": order_by_score(segment_means(labels, field)),
                  "random": order_by_score(permutation),
                  "raster": sorted(range(num), key=lambda v: (round(y[v]), x[v], v))}
        pairs = touching_pairs(labels)
        for kind, order in orders.items():
            levels = max(levels_of_order(order, pairs, num)) + 1
            assert result["levels"][kind][i] == levels, (kind, n_segments)
    # The orders differ, and so do some of their level counts (a kind mixed up with
    # another would show).
    assert len({tuple(result["levels"][kind]) for kind in orders}) > 1


@pytest.mark.parametrize("kwargs, name", [
    ({"order_kinds": ("confidence",)}, "order_kinds"),
    ({"order_kinds": "random"}, "order_kinds"),
    ({"n_segments_list": (0,)}, "n_segments_list"),
    ({"n_segments_list": (10**6,)}, "n_segments_list"),
])
def test_levels_vs_superpixels_rejects_bad_input(small_image, kwargs, name):
    with pytest.raises((TypeError, ValueError), match=name):
        vis.levels_vs_superpixels(image=small_image, **kwargs)


def test_plot_levels_with_defaults_only_a_path(tmp_path, monkeypatch):
    # The benchmark calls plot_levels_vs_superpixels(path): run those defaults on a
    # smaller image so the test stays fast.
    big = np.kron(np.eye(2, dtype=np.uint8) * 200 + 30, np.ones((48, 48), np.uint8))
    monkeypatch.setattr(vis.plots, "_default_image", lambda: big)
    saved = record_saved_figures(monkeypatch)
    out = vis.plot_levels_vs_superpixels(tmp_path / "levels.png")
    fig = saved_figure(out, saved)
    # Drawn: the N line, then each kind's level counts against N (sorted by N), as
    # levels_vs_superpixels gives them for the same defaults.
    results = vis.levels_vs_superpixels(image=big)
    nodes = np.asarray(results["num_nodes"], dtype=np.float64)
    by_nodes = np.argsort(nodes)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines[1:]] == list(results["levels"])
    assert np.array_equal(ax.lines[0].get_xdata(), [nodes.min(), nodes.max()])
    assert np.array_equal(ax.lines[0].get_ydata(), [nodes.min(), nodes.max()])
    for line, levels in zip(ax.lines[1:], results["levels"].values(), strict=True):
        assert np.array_equal(line.get_xdata(), nodes[by_nodes])
        assert np.array_equal(line.get_ydata(), np.asarray(levels, np.float64)[by_nodes])
    with pytest.raises(ValueError, match="path"):
        vis.plot_levels_vs_superpixels(tmp_path / "levels.bmp")
    assert os.listdir(tmp_path) == ["levels.png"]
