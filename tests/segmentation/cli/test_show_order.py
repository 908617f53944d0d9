"""scripts/show_order.py: outputs, one-line errors, nothing left behind on failure.

A few runs go through a real subprocess (exit status, stderr, no traceback);
the many option checks call ``main`` in-process through the same ``run_main``
wrapper, which is what turns errors into one line, to keep the tests fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from graphlstm import build_schedule
from segmentation import region_adjacency, slic_superpixels
from tests.helpers import (
    SCRIPTS,
    levels_of_order,
    order_by_score,
    png_pixels,
    program,
    run_captured,
    segment_means,
    touching_pairs,
)

SCRIPT = SCRIPTS / "show_order.py"

HEIGHT, WIDTH = 48, 64


@pytest.fixture(scope="module")
def script():
    return program("show_order")


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([xx * 4 % 256, yy * 5 % 256, (xx * yy) % 256], axis=2)
    return image.astype(np.uint8)


@pytest.fixture
def files(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    np.save(tmp_path / "score.npy", np.linspace(0, 1, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH))
    np.save(tmp_path / "small.npy", np.zeros((HEIGHT - 8, WIDTH)))
    return tmp_path


def run(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def call(script, capsys, *args) -> tuple[int, str, str]:
    """The script's ``main`` as ``__main__`` runs it (one-line errors, argparse exits)."""
    return run_captured(capsys, "show_order", *args)


# --------------------------------------------------------------------------- subprocess


def test_picture_and_gif_with_one_frame_per_level(files, rgb):
    result = run(files / "rgb.png", "--order", "raster", "--n-segments", 20, "--numbers",
                 "--out", "order.png", "--animate", "levels.gif", cwd=files)
    assert result.returncode == 0, result.stderr
    from segmentation import visualize as vis

    labels = slic_superpixels(rgb, n_segments=20)
    num = int(labels.max()) + 1
    # The raster order from its definition (rows of rounded centroid y, top first,
    # then x), its levels by a plain loop.
    rows, cols = np.indices(labels.shape)
    y, x = segment_means(labels, rows), segment_means(labels, cols)
    order = sorted(range(num), key=lambda v: (round(y[v]), x[v], v))
    level = levels_of_order(order, touching_pairs(labels), num)
    levels = max(level) + 1
    edge_index, _ = region_adjacency(labels)
    schedule = build_schedule(edge_index, num, order=torch.tensor(order))
    assert schedule.level.tolist() == level
    # The picture: that order drawn with its numbers, as plot_update_order draws it.
    vis.plot_update_order(rgb, labels, schedule, numbers=True, path=files / "expected.png",
                          title=f"raster order: {num} superpixels, {levels} levels")
    np.testing.assert_array_equal(png_pixels(files / "order.png"),
                                  png_pixels(files / "expected.png"))
    # The animation: one frame per level and the empty start, each (up to the GIF
    # palette) the frame of that many levels of this order.
    frames = np.stack(vis.level_frames(rgb, labels, schedule)).astype(float)
    with Image.open(files / "levels.gif") as gif:
        assert gif.n_frames == levels + 1 == len(frames)
        for i in range(gif.n_frames):
            gif.seek(i)
            errors = np.abs(frames - np.asarray(gif.convert("RGB"), float)).mean(axis=(1, 2, 3))
            assert errors.argmin() == i and errors[i] < 3.0, i
    assert f"{num} superpixels" in result.stdout
    assert not [f for f in os.listdir(files) if f.endswith(".tmp")]


def test_corrupt_image_is_one_line_and_writes_nothing(files):
    result = run(files / "corrupt.png", "--out", "o.png", "--animate", "a.gif", cwd=files)
    assert result.returncode == 1
    assert "corrupt.png" in one_line_error(result.stderr)
    assert not {"o.png", "a.gif"} & set(os.listdir(files))


def test_confidence_without_checkpoint(files):
    result = run(files / "rgb.png", "--order", "confidence", cwd=files)
    assert result.returncode == 1
    assert "--checkpoint" in one_line_error(result.stderr)
    assert "order.png" not in os.listdir(files)


def test_help():
    result = run("--help", cwd=SCRIPT.parent)
    assert result.returncode == 0 and "--lattice" in result.stdout and "--animate" in result.stdout


# --------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("args, needle", [
    (["{d}/rgb.png", "--n-segments", "0"], "--n-segments"),
    (["{d}/rgb.png", "--n-segments", "many"], "--n-segments"),
    (["{d}/rgb.png", "--compactness", "-1"], "--compactness"),
    (["{d}/rgb.png", "--order", "bfs"], "bfs"),
    (["{d}/rgb.png", "--out", "{d}/o.txt"], "--out"),
    (["{d}/rgb.png", "--animate", "{d}/missing/a.gif"], "--animate"),
    (["{d}/rgb.png", "--animate", "{d}/a.gif", "--fps", "0"], "--fps"),
    (["{d}/rgb.png", "--direction", "1"], "--direction"),
    (["{d}/rgb.png", "--score-image", "{d}/score.npy", "--order", "random"], "--score-image"),
    (["{d}/nothing.png"], "nothing.png"),
    ([], "IMAGE"),
    (["--lattice", "3x"], "--lattice"),
    (["--lattice", "3x4", "--direction", "4"], "--direction"),
    (["--lattice", "3x4", "{d}/rgb.png"], "--lattice"),
    (["{d}/rgb.png", "--score-image", "{d}/rgb.png", "--n-segments", "10"], "grayscale"),
    (["{d}/rgb.png", "--score-image", "{d}/small.npy", "--n-segments", "10"], "40×64"),
])
def test_bad_options_are_one_line_errors(script, capsys, files, args, needle):
    code, out, err = call(script, capsys, *[a.format(d=files) for a in args])
    assert code in (1, 2)
    line = one_line_error(err)
    assert needle in line
    if "--score-image" in args:
        assert "--score-image" in line
    assert not {"o.txt", "a.gif", "order.png"} & set(os.listdir(files))


def test_grayscale_image_with_score_file(script, capsys, files, monkeypatch):
    import segmentation.visualize as vis

    drawn = {}
    plot_update_order = vis.plot_update_order

    def spy(image, superpixels, schedule, **kwargs):
        drawn.update(image=image, superpixels=superpixels, order=schedule.order,
                     panel=kwargs["confidence"])
        return plot_update_order(image, superpixels, schedule, **kwargs)

    monkeypatch.setattr(vis, "plot_update_order", spy)
    code, out, err = call(script, capsys, files / "gray.png", "--score-image",
                          files / "score.npy", "--n-segments", 12, "--out", files / "g.png")
    assert code == 0, err
    score = np.load(files / "score.npy")
    # The panel shows the score file, and the order is the file's: superpixels by
    # their mean score, highest first, ties to the smaller label.
    np.testing.assert_array_equal(drawn["panel"], score)
    labels = np.asarray(drawn["superpixels"])
    assert labels.shape == score.shape
    num = int(labels.max()) + 1
    expected = order_by_score(segment_means(labels, score))
    assert drawn["order"].tolist() == expected
    levels = max(levels_of_order(expected, touching_pairs(labels), num)) + 1
    assert f"levels score: {levels})" in out
    # The grayscale image is drawn as it was read: three equal channels.
    image = np.asarray(drawn["image"])
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    with Image.open(files / "g.png") as png:
        assert png.format == "PNG"


def test_lattice_picture_and_animation(script, capsys, files):
    code, out, err = call(script, capsys, "--lattice", "3x4", "--direction", "0,3",
                          "--out", files / "lat.png", "--animate", files / "lat.gif")
    assert code == 0, err
    with Image.open(files / "lat.gif") as gif:
        assert gif.n_frames == 3 + 4 - 1 + 1


def test_mp4_without_writer_is_skipped_or_refused(script, capsys, files, monkeypatch):
    import segmentation.visualize as vis

    monkeypatch.setattr(vis, "mp4_writer_available", lambda: False)
    code, _, err = call(script, capsys, files / "rgb.png", "--animate", files / "a.mp4")
    assert code == 1 and "imageio-ffmpeg" in one_line_error(err)
    code, _, err = call(script, capsys, files / "rgb.png", "--n-segments", 10,
                        "--animate", files / "a.mp4", "--out", files / "o.png")
    assert code == 0 and "skipping" in one_line_error(err)
    assert (files / "o.png").exists() and not (files / "a.mp4").exists()


def test_confidence_order_uses_the_model_prediction(script, capsys, files, monkeypatch):
    # A stand-in model with the contract of segmentation.inference.predictor: its own superpixels
    # (4×4 blocks) and a per-superpixel confidence that decides the order.
    rows, cols = np.divmod(np.arange(HEIGHT * WIDTH), WIDTH)
    blocks = ((rows // 12) * 4 + cols // 16).reshape(HEIGHT, WIDTH).astype(np.int64)
    edge_index, _ = region_adjacency(blocks)
    node_score = torch.linspace(0, 1, 16)
    loaded = {}

    class Segmenter:
        def predict(self, image):
            loaded["image_shape"] = image.shape
            return types.SimpleNamespace(
                superpixels=blocks, edge_index=edge_index, node_score=node_score,
                confidence=np.full((HEIGHT, WIDTH), 0.5), labels=np.zeros_like(blocks))

    def load_segmenter(path, device="cpu"):
        loaded["path"] = str(path)
        return Segmenter()

    fake = types.ModuleType("segmentation.inference.predictor")
    fake.load_segmenter = load_segmenter
    monkeypatch.setitem(sys.modules, "segmentation.inference.predictor", fake)
    (files / "model.pt").write_bytes(b"weights")
    import segmentation.visualize as vis

    drawn = {}
    plot_update_order = vis.plot_update_order

    def spy(image, superpixels, schedule, **kwargs):
        drawn.update(superpixels=superpixels, order=schedule.order, panel=kwargs["confidence"])
        return plot_update_order(image, superpixels, schedule, **kwargs)

    monkeypatch.setattr(vis, "plot_update_order", spy)
    code, out, err = call(script, capsys, files / "rgb.png", "--order", "confidence",
                          "--checkpoint", files / "model.pt", "--out", files / "c.png",
                          "--animate", files / "c.gif")
    assert code == 0, err
    # Drawn: the model's superpixels in the order of its node scores, highest first,
    # beside its confidence map.
    assert np.array_equal(drawn["superpixels"], blocks)
    assert drawn["order"].tolist() == order_by_score(node_score)
    assert np.array_equal(drawn["panel"], np.full((HEIGHT, WIDTH), 0.5))
    assert loaded == {"path": str(files / "model.pt"), "image_shape": (HEIGHT, WIDTH, 3)}
    levels = build_schedule(edge_index, 16, score=node_score.double()).num_levels
    assert f"16 superpixels; levels confidence: {levels}" in out
    with Image.open(files / "c.gif") as gif:
        assert gif.n_frames == levels + 1
