"""Mosaics of real textures: every region is a patch of one photographed texture.

A mosaic is a Voronoi partition of the image into ``num_regions`` cells, each
filled with a randomly placed, randomly flipped and rotated (by a multiple of
90°) crop of one texture; its label is the texture. The textures are the
photographs that scikit-image ships (:data:`TEXTURE_SOURCES`), so nothing is
downloaded. Each texture's crop is brought to one mean and spread of
brightness (``normalize=True``, the default), so that no class can be told by
its mean gray level: only texture tells them apart, and a superpixel is small
next to a brick or a tuft of grass, so its own pixels are often ambiguous and
its neighbours are what decide it.

Classes (:data:`MOSAIC_CLASSES`): ``brick``, ``grass``, ``gravel``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

from segmentation._checks import check_int
from segmentation.data.datasets.synthetic import _check_seed, _check_size
from segmentation.data.datasets.voc import write_voc

__all__ = ["MOSAIC_CLASSES", "TEXTURE_SOURCES", "generate_mosaic", "write_mosaic_voc"]

#: Texture classes, in label order, and the :mod:`skimage.data` loader of each.
TEXTURE_SOURCES: dict[str, str] = {"brick": "brick", "grass": "grass", "gravel": "gravel"}
MOSAIC_CLASSES: tuple[str, ...] = tuple(TEXTURE_SOURCES)


@cache
def _texture_image(name: str) -> np.ndarray:
    import skimage.data

    loader: Callable[[], np.ndarray] = getattr(skimage.data, TEXTURE_SOURCES[name])
    return np.asarray(loader(), dtype=np.float32) / 255.0


def _texture_crop(
    rng: np.random.Generator, name: str, height: int, width: int, normalize: bool
) -> np.ndarray:
    source = _texture_image(name)
    quarter_turns = int(rng.integers(4))
    if quarter_turns % 2:
        height, width = width, height
    if source.shape[0] < height or source.shape[1] < width:
        reps = (-(-height // source.shape[0]), -(-width // source.shape[1]))
        source = np.tile(source, reps)
    top = int(rng.integers(source.shape[0] - height + 1))
    left = int(rng.integers(source.shape[1] - width + 1))
    crop = source[top : top + height, left : left + width]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.rot90(crop, quarter_turns)
    if normalize:
        crop = (crop - crop.mean()) / max(float(crop.std()), 1e-6) * 0.18 + 0.5
    return np.clip(crop, 0.0, 1.0)


def generate_mosaic(
    seed: int,
    size: int | tuple[int, int] = 128,
    *,
    num_regions: int | tuple[int, int] = (3, 7),
    classes: Sequence[str] = MOSAIC_CLASSES,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one texture mosaic.

    Parameters
    ----------
    seed : int
        Seed of the mosaic; the same seed gives the same mosaic.
    size : int or (int, int)
        Height and width in pixels (at least 16).
    num_regions : int or (int, int)
        Number of Voronoi cells, or the inclusive range it is drawn from.
    classes : sequence of str
        Texture names (keys of :data:`TEXTURE_SOURCES`); label ``k`` is
        ``classes[k]``.
    normalize : bool
        Bring every crop to one mean and standard deviation of brightness.

    Returns
    -------
    image : ndarray, uint8, shape (H, W, 3)
        Gray texture, repeated over three channels.
    mask : ndarray, uint8, shape (H, W)
        Label of every pixel (the index of its texture in ``classes``).
    """
    seed = _check_seed(seed)
    height, width = _check_size((size, size) if isinstance(size, int | np.integer) else size)
    if isinstance(num_regions, tuple):
        low = check_int(num_regions[0], "num_regions", minimum=1)
        high = check_int(num_regions[1], "num_regions", minimum=low)
    else:
        low = high = check_int(num_regions, "num_regions", minimum=1)
    classes = tuple(classes)
    unknown = [name for name in classes if name not in TEXTURE_SOURCES]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise ValueError(
            f"'classes' must name distinct textures among {sorted(TEXTURE_SOURCES)}, "
            f"got {list(classes)!r}"
        )
    rng = np.random.default_rng(seed)
    count = int(rng.integers(low, high + 1))
    centres = rng.uniform((0, 0), (height, width), size=(count, 2))
    rows, cols = np.mgrid[0:height, 0:width]
    distance = (rows[..., None] - centres[:, 0]) ** 2 + (cols[..., None] - centres[:, 1]) ** 2
    cell = distance.argmin(axis=-1)
    # Neighbouring cells of one texture would merge into one region: draw the
    # labels so that every class is used before one repeats.
    labels = rng.permutation(np.resize(rng.permutation(len(classes)), count))
    mask = labels[cell].astype(np.uint8)
    image = np.zeros((height, width), dtype=np.float32)
    for label in np.unique(labels):
        crop = _texture_crop(rng, classes[label], height, width, normalize)
        image[mask == label] = crop[mask == label]
    image = np.round(image * 255.0).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=-1), mask


def write_mosaic_voc(
    root: str | os.PathLike,
    num_train: int,
    num_val: int,
    num_test: int = 0,
    *,
    size: int | tuple[int, int] = 128,
    first_seed: int = 0,
    **options,
) -> list[str]:
    """Write ``num_train + num_val + num_test`` mosaics as a PASCAL VOC style folder.

    Seeds ``first_seed, first_seed + 1, ...``, listed in that order in
    ``train.txt``, ``val.txt`` and ``test.txt``. ``options`` go to
    :func:`generate_mosaic`. Returns the ids written.
    """
    num_train = check_int(num_train, "num_train", minimum=1)
    num_val = check_int(num_val, "num_val", minimum=0)
    num_test = check_int(num_test, "num_test", minimum=0)
    first_seed = _check_seed(first_seed)
    classes = tuple(options.get("classes", MOSAIC_CLASSES))
    total = num_train + num_val + num_test
    samples = (generate_mosaic(first_seed + i, size, **options) for i in range(total))
    splits = {"train": list(range(num_train)),
              "val": list(range(num_train, num_train + num_val)),
              "test": list(range(num_train + num_val, total))}
    ids = [f"mosaic_{first_seed + i:06d}" for i in range(total)]
    return write_voc(root, samples, splits, classes, ids=ids, image_format="png")
