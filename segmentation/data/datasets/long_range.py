"""Procedural scenes whose context is far away: a gate's class is told by a distant beacon.

Every scene holds one *beacon* and one *gate* joined by a straight *path*
across the ground. The gate's class is the beacon's colour: a warm (red or
orange) beacon makes it a ``warm gate``, a cold (blue or cyan) one a
``cold gate``. Gates of both classes are drawn from one distribution of
size, colour and texture, and everything within many pixels of a gate is
too: the beacon is the only thing in a scene that depends on the class, and
it lies at least ``min_hops`` superpixels away (4 by default), many times
the 7×7 pixels that the ``small`` backbone sees. So a gate can be classified
only by carrying the beacon's colour along the superpixel graph, through the
confident path superpixels between them.

Classes (:data:`LONG_RANGE_CLASSES`):

======  ==========  ============================================================
index   name        what it is
======  ==========  ============================================================
0       background  ground: two low-saturation colours blended by smooth noise
1       path        a straight gray band from the beacon to the gate
2       beacon      a disc at one end of the path, warm or cold
3       warm gate   a pale panel at the other end, when the beacon is warm
4       cold gate   the same panel, when the beacon is cold
======  ==========  ============================================================

The look-alike property is exact, not statistical: a scene is drawn from its
seed with both beacon colours, and the class only picks which one is
painted, so the two versions of a seed (``beacon="warm"`` and
``beacon="cold"``) differ in the beacon's pixels alone (tested).

Distances: the beacon and the gate are drawn at least
``1.5 · min_hops · s`` pixels apart (47 px at 96×96 for 4 hops), ``s =
sqrt(H W / n_segments)`` being the SLIC grid step of the graphs the training
builds (``n_segments=150``, ``compactness=10`` by default), and every scene
is then checked on that SLIC graph (:func:`superpixel_hops`): a layout whose
gate is fewer than ``min_hops`` hops from the beacon, in either colour
version, is redrawn. Objects keep one grid step from the border, where SLIC
leaves long thin superpixels. A 96×96 scene holds up to 5 hops at 150
segments; larger sizes hold more.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from segmentation._checks import check_int
from segmentation.data.datasets.synthetic import (
    SceneSequence,
    _box,
    _check_seed,
    _check_size,
    _colour,
    _grid,
    _paint,
    _smooth_noise,
    _texture,
)

__all__ = [
    "LONG_RANGE_CLASSES",
    "LongRangeScenes",
    "generate_long_range_scene",
    "long_range_gap",
    "superpixel_hops",
]

#: Class names, indexed by label.
LONG_RANGE_CLASSES: tuple[str, ...] = ("background", "path", "beacon", "warm gate", "cold gate")
BACKGROUND, PATH, BEACON, WARM_GATE, COLD_GATE = range(5)

_BEACONS = ("warm", "cold")
_MARGIN = 2.0  # least pixels between an object and the image border
_ATTEMPTS = 50


def long_range_gap(size: tuple[int, int] = (96, 96), min_hops: int = 4,
                   n_segments: int = 150) -> float:
    """The least pixel distance drawn between beacon and gate: ``1.5 * min_hops * s``.

    ``s = sqrt(H * W / n_segments)`` is the SLIC grid step (7.8 px at 96×96
    with 150 segments). SLIC superpixels are about ``s`` across, so this
    distance nearly always takes more than ``min_hops`` hops;
    :func:`generate_long_range_scene` checks every scene on its SLIC graph
    and redraws the few that fall short.
    """
    height, width = _check_size(size)
    min_hops = check_int(min_hops, "min_hops")
    n_segments = check_int(n_segments, "n_segments")
    return 1.5 * min_hops * math.sqrt(height * width / n_segments)


def superpixel_hops(image: np.ndarray, mask: np.ndarray, n_segments: int = 150,
                    compactness: float = 10.0) -> int:
    """Hops between the nearest gate and beacon superpixels on a SLIC graph.

    The graph is the one the training builds
    (:class:`segmentation.SuperpixelGraph` with these SLIC parameters); a
    superpixel belongs to the gate (the beacon) if it holds any of its pixels.
    """
    from segmentation.data.adjacency import hops_from, region_adjacency
    from segmentation.data.superpixels import slic_superpixels

    labels = slic_superpixels(image, n_segments=n_segments, compactness=compactness)
    edge_index, _ = region_adjacency(labels)
    gates = np.unique(labels[mask >= WARM_GATE])
    beacons = np.unique(labels[mask == BEACON])
    if gates.size == 0 or beacons.size == 0:
        raise ValueError("the mask holds no gate or no beacon")
    distance = hops_from(edge_index, int(labels.max()) + 1, gates)[:, beacons]
    if (distance < 0).all():
        raise ValueError("no path joins a gate and a beacon superpixel")
    return int(distance[distance >= 0].min())


def generate_long_range_scene(
    seed: Any,
    size: tuple[int, int] = (96, 96),
    *,
    min_hops: int = 4,
    n_segments: int = 150,
    compactness: float = 10.0,
    beacon: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one long-range scene (see the module docstring).

    Parameters
    ----------
    seed : int, sequence of int, or numpy.random.SeedSequence
        The same seed and arguments give the same scene.
    size : (int, int), optional
        ``(height, width)``, each at least 32, and large enough for the gap.
    min_hops : int, optional
        Least number of hops between any superpixel holding a gate pixel and
        any holding a beacon pixel, on the SLIC graph of ``n_segments`` and
        ``compactness`` (those of the training).
    n_segments, compactness : optional
        The SLIC parameters the hops refer to.
    beacon : {"warm", "cold"}, optional
        Force the beacon's colour (so the gate's class) without changing
        anything else of the scene; default: drawn from the seed.

    Returns
    -------
    image : ndarray of uint8, shape (H, W, 3)
    mask : ndarray of uint8, shape (H, W)
        Labels ``0..4`` (:data:`LONG_RANGE_CLASSES`).

    Raises
    ------
    TypeError, ValueError
        If an argument is malformed, or the image is too small for the gap.
    """
    height, width = _check_size(size)
    gap = long_range_gap((height, width), min_hops, n_segments)
    if beacon is not None and beacon not in _BEACONS:
        raise ValueError(f"beacon must be 'warm', 'cold' or None, got {beacon!r}")
    if isinstance(compactness, bool) or not isinstance(compactness, int | float) or not (
            0 < compactness < math.inf):
        raise ValueError(f"compactness must be a positive number, got {compactness!r}")
    scale = min(height, width) / 96.0
    # Objects keep a grid step from the border: SLIC leaves thin strips there.
    margin = max(_MARGIN, math.sqrt(height * width / n_segments))
    radius_range = (4.5 * scale, 6.0 * scale)
    side_range = (10.0 * scale, 14.0 * scale)  # a gate spans 2-4 superpixels
    extent = max(radius_range[1], side_range[1] * math.sqrt(0.5)) + margin
    longest = gap + radius_range[1] + side_range[1] * math.sqrt(0.5) + 3.0 * scale
    if longest > math.hypot(width - 2 * extent, height - 2 * extent):
        raise ValueError(
            f"a {height}×{width} image is too small for min_hops={min_hops} at "
            f"n_segments={n_segments} (beacon and gate {gap:.0f} px apart); use a larger "
            "size, fewer hops or more segments"
        )
    rng = np.random.default_rng(_check_seed(seed))
    coin = rng.random()  # drawn even when forced, so that the rest of the scene is the same
    warm = bool(coin < 0.5) if beacon is None else beacon == "warm"
    for _attempt in range(_ATTEMPTS):
        scenes = _draw(rng, height, width, gap, margin, radius_range, side_range, scale)
        # Both colour versions must keep the gate min_hops away, so that forcing
        # the beacon's colour changes the beacon and nothing else.
        if all(superpixel_hops(image, mask, n_segments, compactness) >= min_hops
               for image, mask in scenes.values()):
            return scenes["warm" if warm else "cold"]
    raise ValueError(
        f"no layout of a {height}×{width} scene kept the gate {min_hops} hops from the "
        f"beacon in {_ATTEMPTS} draws; use a larger size or fewer hops"
    )


def _draw(rng, height, width, gap, margin, radius_range, side_range, scale):
    """One layout, painted with a warm and with a cold beacon: ``{"warm": .., "cold": ..}``."""
    yy, xx = _grid(height, width)
    # Ground, as in the street scenes.
    ground_a = _colour(rng, (0.12, 0.42), (0.1, 0.4), (0.35, 0.75))
    ground_b = np.clip(ground_a + rng.uniform(-0.15, 0.15, 3).astype(np.float32), 0, 1)
    blend = _smooth_noise(rng, height, width, int(rng.integers(3, 7)))[..., None]
    image = ground_a * (1 - blend) + ground_b * blend
    mask = np.zeros((height, width), dtype=np.uint8)

    radius = rng.uniform(*radius_range)
    side = rng.uniform(*side_range)
    half = side * math.sqrt(0.5)
    # Centre distance: the nearest points of the disc and the (turned) square
    # are at least `gap` apart.
    distance = gap + radius + half + rng.uniform(0.0, 3.0) * scale
    extent = max(radius, half) + margin
    for _attempt in range(1000):
        angle = rng.uniform(0.0, 2.0 * math.pi)
        dx, dy = distance * math.cos(angle), distance * math.sin(angle)
        lo_x, hi_x = extent - min(0.0, dx), width - extent - max(0.0, dx)
        lo_y, hi_y = extent - min(0.0, dy), height - extent - max(0.0, dy)
        if lo_x < hi_x and lo_y < hi_y:
            break
    else:  # the size check of the caller leaves room on the diagonals
        raise ValueError("could not place the beacon and the gate; use a larger size")
    bx, by = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)  # beacon centre
    gx, gy = bx + dx, by + dy  # gate centre

    # The path: a band from the beacon's centre to the gate's centre.
    path_width = rng.uniform(7.0, 10.0) * scale
    path_colour = _colour(rng, (0.0, 1.0), (0.0, 0.08), (0.45, 0.6))
    ux, uy = math.cos(angle), math.sin(angle)
    along = (xx - bx) * ux + (yy - by) * uy
    across = -(xx - bx) * uy + (yy - by) * ux
    band = (along >= 0) & (along <= distance) & (np.abs(across) <= path_width / 2)
    full = (slice(0, height), slice(0, width))
    _paint(image, mask, full, band, path_colour, _texture(rng, full, scale, height, width), PATH)

    # The gate: a pale square panel turned by a random angle, with a texture.
    turn = rng.uniform(0.0, math.pi / 2)
    gate_box = _box(gy - half, gy + half, gx - half, gx + half, height, width)
    ys, xs = yy[gate_box] - gy, xx[gate_box] - gx
    u = xs * math.cos(turn) + ys * math.sin(turn)
    v = -xs * math.sin(turn) + ys * math.cos(turn)
    panel = (np.abs(u) <= side / 2) & (np.abs(v) <= side / 2)
    gate_colour = _colour(rng, (0.0, 1.0), (0.0, 0.15), (0.8, 0.95))
    _paint(image, mask, gate_box, panel, gate_colour,
           _texture(rng, gate_box, scale, height, width), WARM_GATE)

    # The beacon: a disc; both colours are drawn whichever is painted.
    colours = {
        "warm": _colour(rng, (-0.03, 0.08), (0.7, 0.95), (0.75, 0.95)),
        "cold": _colour(rng, (0.52, 0.66), (0.7, 0.95), (0.75, 0.95)),
    }
    beacon_box = _box(by - radius, by + radius, bx - radius, bx + radius, height, width)
    disc = (xx[beacon_box] - bx) ** 2 + (yy[beacon_box] - by) ** 2 <= radius * radius

    # Illumination and sensor noise, shared by every class.
    gain = rng.uniform(0.85, 1.15, 3).astype(np.float32) * np.float32(rng.uniform(0.85, 1.1))
    noise = rng.normal(0.0, rng.uniform(0.02, 0.05), (height, width, 3)).astype(np.float32)
    scenes = {}
    for name, colour in colours.items():
        painted, labels = image.copy(), mask.copy()
        _paint(painted, labels, beacon_box, disc, colour, 1.0, BEACON)
        if name == "cold":
            labels[labels == WARM_GATE] = COLD_GATE
        painted = painted * gain + noise
        scenes[name] = (np.rint(np.clip(painted, 0.0, 1.0) * 255.0).astype(np.uint8), labels)
    return scenes


class LongRangeScenes(SceneSequence):
    """A fixed, indexable collection of long-range scenes.

    Scene ``i`` is ``generate_long_range_scene((seed, stream, i), size,
    min_hops=min_hops, n_segments=n_segments, compactness=compactness)``:
    computed on access, the same on every access and in every process.

    Parameters
    ----------
    num_scenes : int
        Number of scenes (>= 0).
    size : (int, int), optional
        ``(height, width)`` of every scene.
    seed : int, optional
        Seed of the collection (>= 0).
    stream : int, optional
        Independent sub-collection for the same seed.
    min_hops, n_segments, compactness : optional
        As in :func:`generate_long_range_scene`.

    Raises
    ------
    TypeError, ValueError
        If an argument is malformed.
    """

    def __init__(
        self,
        num_scenes: int,
        size: tuple[int, int] = (96, 96),
        seed: int = 0,
        *,
        stream: int = 0,
        min_hops: int = 4,
        n_segments: int = 150,
        compactness: float = 10.0,
    ) -> None:
        super().__init__(num_scenes, size, seed, stream=stream)
        self.min_hops = check_int(min_hops, "min_hops")
        self.n_segments = check_int(n_segments, "n_segments")
        self.compactness = compactness
        if num_scenes:  # fail now, not at the first access, if the size cannot hold the gap
            self[0]

    def _generate(self, key: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        return generate_long_range_scene(
            key, self.size, min_hops=self.min_hops, n_segments=self.n_segments,
            compactness=self.compactness)

    def _extra_repr(self) -> str:
        return f", min_hops={self.min_hops}, n_segments={self.n_segments}"
