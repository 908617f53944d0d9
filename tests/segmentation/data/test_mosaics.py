"""Texture mosaics: every region is a crop of its texture's photograph, the format, the folder."""

import numpy as np
import pytest
import skimage.data
from scipy import ndimage

from segmentation.data.datasets import VOCSegmentation
from segmentation.data.datasets.mosaics import (
    MOSAIC_CLASSES,
    generate_mosaic,
    write_mosaic_voc,
)


def is_crop_of(patch: np.ndarray, source: np.ndarray) -> bool:
    """Whether ``patch`` equals a window of ``source`` under one of the 8 flips/rotations."""
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(patch, -turns)
            view = view[:, ::-1] if flip else view
            windows = np.lib.stride_tricks.sliding_window_view(source, view.shape)
            if (windows == view).all(axis=(-2, -1)).any():
                return True
    return False


def test_deterministic_and_distinct():
    a, b = generate_mosaic(5), generate_mosaic(5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], generate_mosaic(6)[0])


@pytest.mark.parametrize("size", [64, (48, 80)])
def test_format(size):
    image, mask = generate_mosaic(1, size)
    shape = (size, size) if isinstance(size, int) else size
    assert image.shape == (*shape, 3) and image.dtype == np.uint8
    assert mask.shape == shape and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= set(range(len(MOSAIC_CLASSES)))
    assert np.array_equal(image[..., 0], image[..., 2])


def test_a_region_is_a_crop_of_its_texture():
    """Without brightness normalisation the pixels of a one-region mosaic are the
    photograph's own pixels, flipped or turned as a whole."""
    for seed in range(3):
        image, mask = generate_mosaic(seed, 40, num_regions=1, normalize=False)
        (label,) = np.unique(mask)
        source = getattr(skimage.data, MOSAIC_CLASSES[label])()
        assert is_crop_of(image[..., 0], source)
        assert not is_crop_of(image[..., 0], skimage.data.camera())


def test_regions_are_voronoi_cells_and_every_class_is_used():
    for seed in range(6):
        _, mask = generate_mosaic(seed, 96, num_regions=len(MOSAIC_CLASSES))
        assert set(np.unique(mask).tolist()) == set(range(len(MOSAIC_CLASSES)))
        for label in range(len(MOSAIC_CLASSES)):
            # One cell per class here, and a Voronoi cell is convex: connected.
            _, parts = ndimage.label(mask == label)
            assert parts == 1


def test_normalized_textures_share_their_brightness():
    means = {label: [] for label in range(len(MOSAIC_CLASSES))}
    for seed in range(8):
        image, mask = generate_mosaic(seed, 96, num_regions=len(MOSAIC_CLASSES))
        for label in means:
            means[label].append(image[..., 0][mask == label].mean())
    centres = [np.mean(values) for values in means.values()]
    assert max(centres) - min(centres) < 12  # of 255; the photographs differ by more
    raw = [getattr(skimage.data, name)().mean() for name in MOSAIC_CLASSES]
    assert max(raw) - min(raw) > 12


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="classes"):
        generate_mosaic(0, classes=("brick", "marble"))
    with pytest.raises(ValueError, match="classes"):
        generate_mosaic(0, classes=("brick", "brick"))
    with pytest.raises(ValueError, match="num_regions"):
        generate_mosaic(0, num_regions=0)
    with pytest.raises(ValueError, match="size"):
        generate_mosaic(0, 8)
    with pytest.raises(ValueError, match="seed"):
        generate_mosaic(-1)


def test_written_folder_reads_back(tmp_path):
    ids = write_mosaic_voc(tmp_path, 3, 2, 1, size=48, first_seed=10)
    assert len(ids) == 6
    splits = {name: (tmp_path / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()
              for name in ("train", "val", "test")}
    assert [len(splits[name]) for name in ("train", "val", "test")] == [3, 2, 1]
    assert not set(splits["train"]) & set(splits["test"])
    dataset = VOCSegmentation(tmp_path, split="test", num_classes=len(MOSAIC_CLASSES))
    image, mask = dataset[0]
    expected_image, expected_mask = generate_mosaic(15, 48)
    assert np.array_equal(np.asarray(mask), expected_mask)
    assert np.array_equal(np.asarray(image).reshape(expected_image.shape), expected_image)
