"""SLIC wrapper, label relabelling and superpixel features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data, transform
from skimage.color import rgb2lab
from skimage.measure import label as connected_components

from segmentation.data.features import (
    FEATURE_NAMES,
    majority_labels,
    superpixel_centroids,
    superpixel_features,
    superpixel_features_and_centroids,
)
from segmentation.data.superpixels import relabel_contiguous, slic_superpixels


@pytest.fixture(scope="module")
def astronaut64() -> np.ndarray:
    image = transform.resize(data.astronaut(), (64, 64), anti_aliasing=True)
    return np.rint(image * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def camera48() -> np.ndarray:
    image = transform.resize(data.camera(), (48, 40), anti_aliasing=True)
    return np.rint(image * 255).astype(np.uint8)


def assert_contiguous(labels: np.ndarray) -> None:
    assert labels.dtype == np.int64
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


# --------------------------------------------------------------------------- SLIC


def test_slic_rgb_labels_are_contiguous_and_connected(astronaut64):
    labels = slic_superpixels(astronaut64, n_segments=60)
    assert labels.shape == astronaut64.shape[:2]
    assert_contiguous(labels)
    num = labels.max() + 1
    assert 20 <= num <= 120
    # Connectivity enforced: every superpixel is exactly one 4-connected region.
    components = connected_components(labels, connectivity=1, background=-1)
    assert components.max() == num


def test_slic_float_input_matches_uint8(astronaut64):
    a = slic_superpixels(astronaut64, n_segments=50)
    b = slic_superpixels(astronaut64 / 255.0, n_segments=50)
    np.testing.assert_array_equal(a, b)


def test_slic_rgba_drops_alpha(astronaut64):
    alpha = np.random.default_rng(0).integers(0, 256, astronaut64.shape[:2], dtype=np.uint8)
    rgba = np.dstack([astronaut64, alpha])
    np.testing.assert_array_equal(
        slic_superpixels(rgba, n_segments=40), slic_superpixels(astronaut64, n_segments=40)
    )


def test_slic_channel_axis(astronaut64):
    channels_first = np.moveaxis(astronaut64, -1, 0)
    np.testing.assert_array_equal(
        slic_superpixels(channels_first, n_segments=40, channel_axis=0),
        slic_superpixels(astronaut64, n_segments=40),
    )


def test_slic_grayscale(camera48):
    labels = slic_superpixels(camera48, n_segments=30)
    assert labels.shape == camera48.shape
    assert_contiguous(labels)
    np.testing.assert_array_equal(slic_superpixels(camera48[..., None], n_segments=30), labels)


def test_slic_n_segments_equal_to_pixel_count():
    image = np.random.default_rng(1).random((3, 4, 3))
    labels = slic_superpixels(image, n_segments=12)
    assert_contiguous(labels)


def test_slic_relabels_gaps(monkeypatch, astronaut64):
    # Simulate SLIC returning labels with gaps: the wrapper must close them.
    import segmentation.data.superpixels as module

    monkeypatch.setattr(module, "slic", lambda image, **kw: np.full(image.shape[:2], 7) * 3)
    labels = module.slic_superpixels(astronaut64, n_segments=10)
    assert_contiguous(labels)
    assert labels.max() == 0


@pytest.mark.parametrize(
    ("image", "kwargs", "error", "match"),
    [
        (np.zeros(5, np.uint8), {}, ValueError, "image must be 2-D"),
        (np.zeros((4, 4, 3, 2), np.uint8), {}, ValueError, "image must be 2-D"),
        (np.zeros((0, 5), np.uint8), {"n_segments": 1}, ValueError, "at least 2 pixels"),
        (np.zeros((1, 1, 3), np.uint8), {"n_segments": 1}, ValueError, "at least 2 pixels"),
        (np.zeros((4, 4, 2), np.uint8), {}, ValueError, "1, 3 or 4 channels"),
        (np.zeros((4, 4, 5), np.uint8), {}, ValueError, "1, 3 or 4 channels"),
        (np.zeros((4, 4), np.int32), {}, TypeError, "dtype uint8"),
        (np.zeros((4, 4), bool), {}, TypeError, "dtype uint8"),
        ([[0.0, 1.0]], {}, TypeError, "numpy array"),
        (np.full((4, 4), np.nan), {"n_segments": 2}, ValueError, "NaN or infinite"),
        (np.full((4, 4), np.inf), {"n_segments": 2}, ValueError, "NaN or infinite"),
        (np.full((4, 4), 2.0), {"n_segments": 2}, ValueError, r"\[0, 1\]"),
        (np.full((4, 4), -0.5), {"n_segments": 2}, ValueError, r"\[0, 1\]"),
        (np.zeros((4, 4), np.uint8), {"n_segments": 0}, ValueError, "n_segments"),
        (np.zeros((4, 4), np.uint8), {"n_segments": 17}, ValueError, "n_segments=17"),
        (np.zeros((4, 4), np.uint8), {"n_segments": 2.5}, TypeError, "n_segments"),
        (np.zeros((4, 4), np.uint8), {"n_segments": True}, TypeError, "n_segments"),
        (
            np.zeros((4, 4), np.uint8),
            {"n_segments": 2, "compactness": 0},
            ValueError,
            "compactness",
        ),
        (np.zeros((4, 4), np.uint8), {"n_segments": 2, "sigma": -1}, ValueError, "sigma"),
        (np.zeros((4, 4), np.uint8), {"n_segments": 2, "sigma": np.nan}, ValueError, "sigma"),
        (
            np.zeros((4, 4), np.uint8),
            {"n_segments": 2, "max_num_iter": 0},
            ValueError,
            "max_num_iter",
        ),
        (np.zeros((4, 4, 3), np.uint8), {"channel_axis": None}, ValueError, "channel_axis"),
        (np.zeros((4, 4, 3), np.uint8), {"channel_axis": 3}, ValueError, "channel_axis"),
    ],
)
def test_slic_rejects_bad_input(image, kwargs, error, match):
    with pytest.raises(error, match=match):
        slic_superpixels(image, **kwargs)


# ------------------------------------------------------------------ relabelling


def _relabel_reference(labels: np.ndarray) -> np.ndarray:
    mapping = {value: rank for rank, value in enumerate(sorted(set(labels.ravel().tolist())))}
    return np.vectorize(mapping.__getitem__, otypes=[np.int64])(labels)


@pytest.mark.parametrize(
    "labels",
    [
        np.random.default_rng(0).choice([3, 9, 4, 100], size=(6, 7)),
        np.random.default_rng(1).choice([-5, 0, 7], size=(5, 5)).astype(np.int16),
        # Far-apart labels take the sorting path instead of the lookup table.
        np.random.default_rng(2).choice([0, 10**12, 5 * 10**11], size=(4, 9)),
        np.array([[2]]),
    ],
)
def test_relabel_contiguous_matches_reference(labels):
    result = relabel_contiguous(labels)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, _relabel_reference(labels))


def test_relabel_contiguous_rejects_bad_input():
    with pytest.raises(TypeError, match="integer dtype"):
        relabel_contiguous(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        relabel_contiguous(np.zeros((0, 2), np.int64))


# --------------------------------------------------------------------- features


def _features_reference(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rgb = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image
    if rgb.ndim == 2:
        rgb = np.dstack([rgb] * 3)
    lab = rgb2lab(rgb)
    height, width = labels.shape
    rows = []
    for k in range(labels.max() + 1):
        inside = labels == k
        ys, xs = np.nonzero(inside)
        mean_lab = lab[inside].mean(axis=0)
        rows.append(
            [
                *rgb[inside].mean(axis=0),
                mean_lab[0] / 100.0,
                (mean_lab[1] + 128.0) / 255.0,
                (mean_lab[2] + 128.0) / 255.0,
                *rgb[inside].std(axis=0),
                xs.mean() / width,
                ys.mean() / height,
                inside.sum() / (height * width),
            ]
        )
    return np.array(rows)


def test_features_match_plain_loop_reference(astronaut64):
    labels = slic_superpixels(astronaut64, n_segments=40)
    features = superpixel_features(astronaut64, labels)
    assert features.dtype == torch.float32
    assert features.shape == (labels.max() + 1, len(FEATURE_NAMES))
    np.testing.assert_allclose(
        features.numpy(), _features_reference(astronaut64, labels), atol=2e-5
    )


def test_features_grayscale_replicates_to_rgb(camera48):
    labels = slic_superpixels(camera48, n_segments=20)
    gray = superpixel_features(camera48, labels)
    rgb = superpixel_features(np.dstack([camera48] * 3), labels)
    torch.testing.assert_close(gray, rgb)
    np.testing.assert_allclose(gray.numpy(), _features_reference(camera48, labels), atol=2e-5)


def test_features_float_image_and_tensor_labels(astronaut64):
    labels = slic_superpixels(astronaut64, n_segments=30)
    a = superpixel_features(astronaut64, labels)
    b = superpixel_features(astronaut64 / 255.0, torch.from_numpy(labels))
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_centroids_match_scipy_center_of_mass(astronaut64):
    labels = slic_superpixels(astronaut64, n_segments=50)
    num = labels.max() + 1
    rows_cols = np.array(
        ndimage.center_of_mass(np.ones(labels.shape), labels, index=np.arange(num))
    )
    pos = superpixel_centroids(labels)
    assert pos.shape == (num, 2) and pos.dtype == torch.float32
    np.testing.assert_allclose(pos.numpy(), rows_cols[:, ::-1], rtol=1e-6)
    features, pos_again = superpixel_features_and_centroids(astronaut64, labels)
    torch.testing.assert_close(pos_again, pos)
    torch.testing.assert_close(features, superpixel_features(astronaut64, labels))


def test_features_reject_bad_input(astronaut64):
    labels = np.zeros(astronaut64.shape[:2], np.int64)
    with pytest.raises(ValueError, match="same height and width"):
        superpixel_features(astronaut64, labels[:-1])
    with pytest.raises(ValueError, match="contiguous"):
        superpixel_features(astronaut64, labels + 1)
    with pytest.raises(ValueError, match=r"image .*\[0, 1\]"):
        superpixel_features(astronaut64 * 2.0, labels)
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        superpixel_centroids(labels.astype(float))


def test_majority_labels_match_loop_reference():
    rng = np.random.default_rng(3)
    labels = relabel_contiguous(rng.integers(0, 6, size=(9, 11)))
    mask = rng.choice([0, 1, 2, 255], size=labels.shape, p=[0.3, 0.3, 0.2, 0.2]).astype(np.uint8)
    mask[labels == 0] = 255  # a superpixel that only has ignored pixels
    expected = []
    for k in range(labels.max() + 1):
        votes = mask[(labels == k) & (mask != 255)]
        expected.append(np.bincount(votes, minlength=3).argmax() if votes.size else 255)
    result = majority_labels(mask, labels, num_classes=3)
    assert result.dtype == torch.int64
    assert result.tolist() == expected
    with pytest.raises(ValueError, match="num_classes=2"):
        majority_labels(mask, labels, num_classes=2)
