"""Procedural street scenes where context, not appearance, decides some classes.

Every scene is drawn from a seed (deterministic, NumPy only, about a
millisecond for 96×96). Classes (:data:`SYNTHETIC_CLASSES`):

======  ==========  ============================================================
index   name        what it is
======  ==========  ============================================================
0       background  "ground": two low-saturation green/yellow colours blended
                    by smooth noise
1       house       a wall rectangle (red/orange, brick rows) under a dark
                    triangular roof; 1 or 2 per scene, never overlapping
2       window      a *panel* lying inside a house wall; 1-3 per house
3       sign        a *panel* lying on the ground, never touching a house;
                    1-3 per scene
4       disc        a *token* shaped as a disc
5       bar         a *token* shaped as a bar (aspect 3-5, any angle);
                    1-3 tokens per scene, each a disc or a bar with
                    probability 1/2
======  ==========  ============================================================

The rules that separate the look-alike classes:

- **window vs. sign** - both are panels: the same size distribution
  (6-9 px sides at 96 px), the same colour distribution (blue/cyan) and the
  same random texture (plain, stripes, checker or blotches). Only what
  surrounds a panel tells them apart: a window is always inside a house wall,
  a sign always on the ground, at least 3 px away from any house.
- **disc vs. bar** - both are tokens: the same area distribution
  (90-260 px² at 96 px), colour distribution (purple/magenta) and texture
  distribution. Only the shape of the whole object, i.e. how the token's
  superpixels are arranged, tells them apart; an interior superpixel of a disc
  looks like one of a bar.

Nuisances: per-scene colour gain and brightness (illumination), per-pixel
Gaussian colour noise, random textures, and occlusion (tokens are drawn last
and may cover houses, windows, signs and each other).

So a classifier that sees one superpixel at a time can at best guess between
window and sign and between disc and bar (about 50 %), while a model that sees
the superpixel graph (a Graph LSTM) can resolve them. Sizes scale with
``min(H, W) / 96``.
"""

from __future__ import annotations

import colorsys
import functools
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from segmentation.data.datasets.voc import write_voc

__all__ = [
    "SYNTHETIC_CLASSES",
    "SyntheticScenes",
    "generate_scene",
    "write_synthetic_voc",
]

#: Class names, indexed by label.
SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "house", "window", "sign", "disc", "bar")
BACKGROUND, HOUSE, WINDOW, SIGN, DISC, BAR = range(6)

_MIN_SIZE = 32


def _check_size(size: Any) -> tuple[int, int]:
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in size)
    ):
        raise TypeError(f"size must be a pair of ints (height, width), got {size!r}")
    height, width = int(size[0]), int(size[1])
    if min(height, width) < _MIN_SIZE:
        raise ValueError(f"size must be at least {_MIN_SIZE}×{_MIN_SIZE}, got {height}×{width}")
    return height, width


def _check_seed(seed: Any) -> Any:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    values = seed if isinstance(seed, tuple | list) else [seed]
    if not values or any(
        isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0 for v in values
    ):
        raise ValueError(f"seed must be a non-negative int or a sequence of them, got {seed!r}")
    return seed


@functools.lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@functools.lru_cache(maxsize=32)
def _interpolation(length: int, knots: int) -> np.ndarray:
    # Linear interpolation from `knots` equally spaced samples to `length` pixels,
    # as a matrix, so that smooth noise is two small matrix products.
    position = np.linspace(0, knots - 1, length)
    low = np.minimum(np.floor(position).astype(int), knots - 2)
    frac = position - low
    matrix = np.zeros((length, knots), dtype=np.float32)
    matrix[np.arange(length), low] = 1 - frac
    matrix[np.arange(length), low + 1] = frac
    matrix.setflags(write=False)
    return matrix


def _smooth_noise(rng: np.random.Generator, height: int, width: int, knots: int) -> np.ndarray:
    grid = rng.random((knots, knots), dtype=np.float32)
    return _interpolation(height, knots) @ grid @ _interpolation(width, knots).T


def _colour(rng: np.random.Generator, hue, saturation, value) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(
        rng.uniform(*hue) % 1.0, rng.uniform(*saturation), rng.uniform(*value)
    )
    return np.array(rgb, dtype=np.float32)


def _texture(
    rng: np.random.Generator, box: tuple[slice, slice], scale: float, height: int, width: int
) -> np.ndarray | float:
    """Multiplicative texture around 1 over the box: plain, stripes, checker or blotches."""
    kind = rng.integers(4)
    amplitude = rng.uniform(0.1, 0.22)
    yy, xx = _grid(height, width)
    ys, xs = yy[box], xx[box]
    if kind == 0:
        return 1.0
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(3.0, 6.0) * scale
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period) + phase)
        return 1.0 + amplitude * wave
    if kind == 2:
        cell = max(2, int(round(rng.uniform(2.0, 4.0) * scale)))
        checker = ((xs // cell + ys // cell) % 2) * 2.0 - 1.0
        return 1.0 + amplitude * checker
    blotches = _smooth_noise(rng, height, width, 16)[box]
    return 1.0 + amplitude * (2.0 * blotches - 1.0)


def _paint(
    image: np.ndarray,
    mask: np.ndarray,
    box: tuple[slice, slice],
    region: np.ndarray,
    colour: np.ndarray,
    texture: np.ndarray | float,
    label: int,
) -> None:
    patch = image[box]
    shaded = colour * np.asarray(texture, dtype=np.float32)[..., None]
    patch[region] = np.broadcast_to(shaded, patch.shape)[region]
    mask[box][region] = label


def _box(y0: float, y1: float, x0: float, x1: float, height: int, width: int):
    """Integer bounding box (slices) of [y0, y1) × [x0, x1), clipped to the image."""
    top, bottom = max(0, int(np.floor(y0))), min(height, int(np.ceil(y1)) + 1)
    left, right = max(0, int(np.floor(x0))), min(width, int(np.ceil(x1)) + 1)
    return slice(top, max(top, bottom)), slice(left, max(left, right))


def _panel_colour(rng: np.random.Generator) -> np.ndarray:
    # Windows and signs share this: nothing in a panel's own pixels tells which it is.
    return _colour(rng, (0.50, 0.68), (0.35, 0.85), (0.6, 0.95))


def _token_colour(rng: np.random.Generator) -> np.ndarray:
    # Discs and bars share this too.
    return _colour(rng, (0.76, 0.98), (0.45, 0.85), (0.5, 0.9))


def _panel_size(rng: np.random.Generator, scale: float) -> tuple[float, float]:
    return rng.uniform(6.0, 9.0) * scale, rng.uniform(6.0, 9.0) * scale


def generate_scene(seed: Any, size: tuple[int, int] = (96, 96)) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic scene (see the module docstring for the classes).

    Parameters
    ----------
    seed : int, sequence of int, or numpy.random.SeedSequence
        Seed of the scene; the same seed and size give the same scene.
    size : (int, int), optional
        ``(height, width)``, each at least 32.

    Returns
    -------
    image : ndarray of uint8, shape (H, W, 3)
    mask : ndarray of uint8, shape (H, W)
        Labels ``0..len(SYNTHETIC_CLASSES)-1``.

    Raises
    ------
    TypeError, ValueError
        If ``seed`` or ``size`` is malformed.
    """
    height, width = _check_size(size)
    rng = np.random.default_rng(_check_seed(seed))
    scale = min(height, width) / 96.0
    yy, xx = _grid(height, width)

    # Ground: two related low-saturation colours blended by smooth noise.
    ground_a = _colour(rng, (0.12, 0.42), (0.1, 0.4), (0.35, 0.75))
    ground_b = np.clip(ground_a + rng.uniform(-0.15, 0.15, 3).astype(np.float32), 0, 1)
    blend = _smooth_noise(rng, height, width, int(rng.integers(3, 7)))[..., None]
    image = ground_a * (1 - blend) + ground_b * blend
    mask = np.zeros((height, width), dtype=np.uint8)

    # Houses: body and roof; a footprint (with margin) keeps signs off them.
    keep_out = np.zeros((height, width), dtype=bool)
    margin = 3.0 * scale
    for _ in range(int(rng.integers(1, 3))):
        for _attempt in range(10):
            body_w = rng.uniform(30, 46) * scale
            # At least 26 px high and 30 px wide, so that every 2×2 cell holds
            # the largest panel: windows must not be smaller than signs.
            body_h = rng.uniform(26, 36) * scale
            roof_h = rng.uniform(8, 14) * scale
            x0 = rng.uniform(0, width - body_w)
            y0 = rng.uniform(roof_h, height - body_h)
            box = _box(
                y0 - roof_h - margin,
                y0 + body_h + margin,
                x0 - margin,
                x0 + body_w + margin,
                height,
                width,
            )
            if not keep_out[box].any():
                break
        else:
            continue
        keep_out[box] = True
        house_box = _box(y0 - roof_h, y0 + body_h, x0, x0 + body_w, height, width)
        ys, xs = yy[house_box], xx[house_box]
        body = (ys >= y0) & (ys < y0 + body_h) & (xs >= x0) & (xs < x0 + body_w)
        rows = max(3.0, rng.uniform(4.0, 6.0) * scale)
        bricks = np.where(((ys - y0) % rows) < 1.0, np.float32(0.8), np.float32(1.0))
        wall = _colour(rng, (0.0, 0.09), (0.45, 0.8), (0.45, 0.8))
        _paint(image, mask, house_box, body, wall, bricks, HOUSE)
        half = body_w / 2 + rng.uniform(0, 3) * scale
        centre = x0 + body_w / 2
        roof = (
            (ys >= y0 - roof_h)
            & (ys < y0)
            & (np.abs(xs - centre) <= half * (ys - (y0 - roof_h)) / roof_h)
        )
        roof_colour = _colour(rng, (0.0, 0.09), (0.3, 0.7), (0.15, 0.35))
        _paint(image, mask, house_box, roof, roof_colour, 1.0, HOUSE)

        # Windows: one per chosen cell of a 2×2 grid over the wall.
        inner = 2.0 * scale
        cell_w, cell_h = (body_w - 2 * inner) / 2, (body_h - 2 * inner) / 2
        cells = rng.permutation(4)[: int(rng.integers(1, 4))]
        for cell in cells:
            win_w, win_h = _panel_size(rng, scale)
            # A no-op for the sizes drawn above (cells fit 9 px panels); only a
            # guard so that a window can never leave its wall.
            win_w, win_h = min(win_w, cell_w - inner), min(win_h, cell_h - inner)
            cx0 = x0 + inner + (cell % 2) * cell_w
            cy0 = y0 + inner + (cell // 2) * cell_h
            wx = cx0 + rng.uniform(0, cell_w - inner - win_w)
            wy = cy0 + rng.uniform(0, cell_h - inner - win_h)
            win_box = _box(wy, wy + win_h, wx, wx + win_w, height, width)
            ys, xs = yy[win_box], xx[win_box]
            region = (ys >= wy) & (ys < wy + win_h) & (xs >= wx) & (xs < wx + win_w)
            texture = _texture(rng, win_box, scale, height, width)
            _paint(image, mask, win_box, region, _panel_colour(rng), texture, WINDOW)

    # Signs: panels on the ground, off the houses' footprints and each other.
    for _ in range(int(rng.integers(1, 4))):
        sign_w, sign_h = _panel_size(rng, scale)
        for _attempt in range(30):
            sx = rng.uniform(0, width - sign_w)
            sy = rng.uniform(0, height - sign_h)
            sign_box = _box(sy, sy + sign_h, sx, sx + sign_w, height, width)
            if not keep_out[sign_box].any():
                break
        else:
            continue
        keep_out[
            _box(
                sy - margin, sy + sign_h + margin, sx - margin, sx + sign_w + margin, height, width
            )
        ] = True
        ys, xs = yy[sign_box], xx[sign_box]
        region = (ys >= sy) & (ys < sy + sign_h) & (xs >= sx) & (xs < sx + sign_w)
        texture = _texture(rng, sign_box, scale, height, width)
        _paint(image, mask, sign_box, region, _panel_colour(rng), texture, SIGN)

    # Tokens, drawn last so that they occlude.
    for _ in range(int(rng.integers(1, 4))):
        label = DISC if rng.random() < 0.5 else BAR
        area = rng.uniform(90, 260) * scale * scale
        cx = rng.uniform(0.1, 0.9) * width
        cy = rng.uniform(0.1, 0.9) * height
        if label == DISC:
            radius = np.sqrt(area / np.pi)
            box = _box(cy - radius, cy + radius, cx - radius, cx + radius, height, width)
            ys, xs = yy[box], xx[box]
            region = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius * radius
        else:
            aspect = rng.uniform(3, 5)
            length, thickness = np.sqrt(area * aspect), np.sqrt(area / aspect)
            angle = rng.uniform(0, np.pi)
            reach = length / 2 + thickness / 2
            box = _box(cy - reach, cy + reach, cx - reach, cx + reach, height, width)
            ys, xs = yy[box] - cy, xx[box] - cx
            along = xs * np.cos(angle) + ys * np.sin(angle)
            across = -xs * np.sin(angle) + ys * np.cos(angle)
            region = (np.abs(along) <= length / 2) & (np.abs(across) <= thickness / 2)
        texture = _texture(rng, box, scale, height, width)
        _paint(image, mask, box, region, _token_colour(rng), texture, label)

    # Illumination and sensor noise, shared by every class.
    gain = rng.uniform(0.85, 1.15, 3).astype(np.float32) * np.float32(rng.uniform(0.85, 1.1))
    noise = rng.normal(0.0, rng.uniform(0.02, 0.05), (height, width, 3)).astype(np.float32)
    image = image * gain + noise
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8), mask


class SceneSequence(Sequence):
    """A sequence of generated ``(image, mask)`` scenes: scene ``i`` is drawn from
    the key ``(seed, stream, i)`` by ``_generate``, so any item is reproducible
    on its own. Subclasses define ``_generate``."""

    def __init__(
        self, num_scenes: int, size: tuple[int, int] = (96, 96), seed: int = 0, *, stream: int = 0
    ) -> None:
        if isinstance(num_scenes, bool) or not isinstance(num_scenes, int | np.integer):
            raise TypeError(f"num_scenes must be an int, got {num_scenes!r}")
        if num_scenes < 0:
            raise ValueError(f"num_scenes must be >= 0, got {num_scenes}")
        self.num_scenes = int(num_scenes)
        self.size = _check_size(size)
        for name, value in (("seed", seed), ("stream", stream)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        self.seed = int(seed)
        self.stream = int(stream)

    def _generate(self, key: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_scenes={self.num_scenes}, size={self.size}, "
            f"seed={self.seed}, stream={self.stream}{self._extra_repr()})"
        )

    def _extra_repr(self) -> str:
        # The parameters a subclass adds, as ", name=value, ...".
        return ""

    def __len__(self) -> int:
        return self.num_scenes

    @overload
    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[np.ndarray, np.ndarray]]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"index must be an int or a slice, got {index!r}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} scenes")
        return self._generate((self.seed, self.stream, int(index) % len(self)))


class SyntheticScenes(SceneSequence):
    """A fixed, indexable collection of synthetic scenes.

    Scene ``i`` is ``generate_scene((seed, stream, i), size)``: computed on
    access (nothing is stored), identical on every access and in every
    process.

    Parameters
    ----------
    num_scenes : int
        Number of scenes (>= 0).
    size : (int, int), optional
        ``(height, width)`` of every scene.
    seed : int, optional
        Seed of the collection (>= 0).
    stream : int, optional
        Independent sub-collection for the same seed (e.g. 0 = train,
        1 = validation).

    Raises
    ------
    TypeError, ValueError
        If an argument is malformed.
    """

    def _generate(self, key: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        return generate_scene(key, self.size)


def write_synthetic_voc(
    root: str | os.PathLike,
    num_train: int,
    num_val: int,
    size: tuple[int, int] = (96, 96),
    seed: int = 0,
    *,
    image_format: str = "png",
) -> Path:
    """Write synthetic train and validation scenes as a PASCAL VOC style folder.

    Train scene ``i`` is ``SyntheticScenes(num_train, size, seed)[i]`` (id
    ``train_<i>``), validation scene ``i`` is the same with ``stream=1`` (id
    ``val_<i>``); ``classes.txt`` lists :data:`SYNTHETIC_CLASSES`. Read it back
    with ``VOCSegmentation(root, "train")`` / ``"val"``.

    Parameters
    ----------
    root : str or path-like
        Dataset folder (created if missing).
    num_train, num_val : int
        Number of scenes of each split (>= 0).
    size : (int, int), optional
        ``(height, width)`` of every scene.
    seed : int, optional
        Seed of the dataset.
    image_format : {"png", "jpg"}, optional
        PNG (lossless, default) or JPEG images.

    Returns
    -------
    root : Path

    Raises
    ------
    TypeError, ValueError
        If an argument is malformed.
    """
    train = SyntheticScenes(num_train, size, seed, stream=0)
    val = SyntheticScenes(num_val, size, seed, stream=1)
    samples = _Concat(train, val)
    ids = [f"train_{i:06d}" for i in range(len(train))] + [f"val_{i:06d}" for i in range(len(val))]
    splits = ["train"] * len(train) + ["val"] * len(val)
    write_voc(root, samples, splits, SYNTHETIC_CLASSES, ids=ids, image_format=image_format)
    return Path(root)


class _Concat(Sequence):
    """Lazy concatenation of two sequences (scenes are generated while written)."""

    def __init__(self, first: Sequence, second: Sequence) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __iter__(self):
        return itertools.chain(self.first, self.second)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} items")
        index %= len(self)
        if index < len(self.first):
            return self.first[index]
        return self.second[index - len(self.first)]
