"""Level-by-level animations (GIF, or MP4 where a writer exists)."""

from __future__ import annotations

import importlib.util
import io
import math
import numbers
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segmentation.data.images import atomic_path, atomic_write
from segmentation.visualize._common import (
    _as_numpy,
    _check_alpha,
    _check_output,
    _get_cmap,
    _labels,
    _node_values,
    _rgb_uint8,
)
from segmentation.visualize.colors import colorize, overlay

__all__ = ["level_frames", "mp4_writer_available", "save_level_animation"]

_ANIMATION_FORMATS = (".gif", ".mp4")
_STRIP = (32, 32, 32)  # counter strip
_TEXT = (255, 255, 255)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _strip_height(width: int) -> int:
    return int(np.clip(width // 16, 10, 18)) + 6


def _with_counter(picture: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    width = picture.shape[1]
    strip_h = _strip_height(width)
    strip = Image.new("RGB", (width, strip_h), _STRIP)
    ImageDraw.Draw(strip).text((3, 2), text, fill=_TEXT, font=_font(strip_h - 6))
    return np.concatenate([np.asarray(strip, dtype=np.uint8), picture], axis=0)


def _level_array(level) -> np.ndarray:
    from graphlstm.schedule import Schedule

    if isinstance(level, Schedule):
        level = level.level
    array = _as_numpy(level)
    if array.ndim != 1:
        raise ValueError(f"'level' must be 1-D (one level per node), got shape {array.shape}")
    return array


def level_frames(image, superpixels, level, *, cmap="plasma", alpha: float = 0.85,
                 gray: bool = True, boundaries: bool = True,
                 counter: bool = True) -> list[np.ndarray]:
    """Frames that fill the superpixels level by level.

    Frame ``k``, ``k = 0..K`` (``K = max(level) + 1``), shows exactly the
    superpixels of levels ``< k`` filled with the colour of their level
    (``cmap`` over ``0..K-1``, blended with ``alpha`` over the background)
    and the others as the background: the image, in gray with ``gray``. Frame
    0 has nothing filled, frame ``K`` everything. That is
    ``K + 1`` frames, no title frame. See the module docstring for the layout
    (a counter strip ``"level k / K"`` above the picture).

    Parameters
    ----------
    image : ndarray
        ``H×W`` or ``H×W×3``, ``uint8`` or float in ``[0, 1]``.
    superpixels : ndarray or Tensor, ``H×W`` int
        Contiguous labels ``0..N-1``.
    level : array_like ``[N]`` of int, or graphlstm.Schedule
        The level of every superpixel (:attr:`graphlstm.Schedule.level`).
    cmap : str or Colormap, optional
    alpha : float, optional
        Opacity of the fill (1 = solid).
    gray : bool, optional
        Show the image in gray (its luminance, rounded) so that the fills
        stand out, and a GIF palette spends its colours on them.
    boundaries : bool, optional
        Mark the superpixel boundaries in white in every frame (the pixels of
        :func:`skimage.segmentation.find_boundaries`, ``mode="outer"``).
    counter : bool, optional
        Put the strip with ``"level k / K"`` above every picture.

    Returns
    -------
    list of ndarray of uint8, each ``(S + H)×W×3``
        ``S`` rows of counter strip (0 without ``counter``), then the picture.

    Raises
    ------
    TypeError, ValueError
        For malformed or mismatched inputs.
    """
    rgb = _rgb_uint8(image)
    labels, num = _labels(superpixels, rgb.shape[:2])
    level = _node_values(_level_array(level), num, "level", integer=True)
    colormap = _get_cmap(cmap)
    alpha = _check_alpha(alpha)
    k_total = int(level.max()) + 1
    if not isinstance(gray, bool | np.bool_):
        raise TypeError(f"'gray' must be a bool, got {gray!r}")
    if gray:
        luminance = rgb.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
        rgb = np.repeat(np.rint(luminance).astype(np.uint8)[:, :, None], 3, axis=2)
    colors = colorize(level[labels], colormap, 0, max(k_total - 1, 0))
    filled = overlay(rgb, labels, colors, alpha=alpha, boundaries=False)
    pixel_level = level[labels]
    if boundaries:
        from skimage.segmentation import find_boundaries

        # The same boundary pixels in every frame: mark_boundaries's outer mode.
        edge = find_boundaries(labels, mode="outer")
    frames = []
    for k in range(k_total + 1):
        picture = np.where((pixel_level < k)[:, :, None], filled, rgb)
        if boundaries:
            picture = picture.copy()
            picture[edge] = 255
        frames.append(_with_counter(picture, f"level {k} / {k_total}") if counter else picture)
    return frames


def mp4_writer_available() -> bool:
    """Whether :func:`save_level_animation` can write MP4 here (imageio with ffmpeg)."""
    if importlib.util.find_spec("imageio") is None:
        return False
    return importlib.util.find_spec("imageio_ffmpeg") is not None or shutil.which(
        "ffmpeg") is not None


def _check_frames(frames) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if not isinstance(frames, Sequence) or len(frames) == 0:
        raise ValueError("'frames' must be a non-empty list of H×W×3 uint8 arrays")
    out = []
    for i, frame in enumerate(frames):
        frame = _as_numpy(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"'frames'[{i}] must be an H×W×3 uint8 array, got {frame.dtype} {frame.shape}"
            )
        if frame.shape != _as_numpy(frames[0]).shape:
            raise ValueError(
                f"'frames'[{i}] has shape {frame.shape}, unlike 'frames'[0] "
                f"{_as_numpy(frames[0]).shape}"
            )
        out.append(np.ascontiguousarray(frame))
    return out


def save_level_animation(path, frames, fps: float = 4.0, *, hold_last: float = 1.5,
                         loop: bool = True) -> Path:
    """Write frames as an animated GIF (or MP4), atomically.

    Parameters
    ----------
    path : str or path-like
        ``.gif`` (Pillow, always available) or ``.mp4`` (needs imageio with
        ``imageio-ffmpeg`` or an ``ffmpeg`` binary, see
        :func:`mp4_writer_available`). Its folder must exist.
    frames : sequence of ndarray
        ``H×W×3`` ``uint8`` frames of one shape (e.g. :func:`level_frames`).
        The GIF holds exactly one image per frame, in order.
    fps : float, optional
        Frames per second.
    hold_last : float, optional
        Seconds the last frame stays before the loop restarts (GIF: a longer
        duration of the last frame, not extra frames; MP4: ignored).
    loop : bool, optional
        Loop the GIF forever.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        For another suffix, a missing folder, malformed frames, or
        ``fps``/``hold_last`` out of range.
    RuntimeError
        For ``.mp4`` without a writer; nothing is written.
    """
    path = _check_output(path, _ANIMATION_FORMATS)
    frames = _check_frames(frames)
    for name, value, low in (("fps", fps, 0.0), ("hold_last", hold_last, -1.0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                math.isfinite(value) and value > low):
            raise ValueError(f"'{name}' must be a finite number > {max(low, 0):g}, got {value!r}")
    if path.suffix.lower() == ".mp4":
        return _save_mp4(path, frames, float(fps))

    from PIL import Image

    # One palette for all frames, from the first and the last (together they
    # hold every colour: the image, every level's fill, the counter), without
    # dithering: steady colours and a small, well-compressed file.
    sample = Image.fromarray(np.concatenate([frames[0], frames[-1]], axis=0))
    palette = sample.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE)
              for f in frames]
    step = max(20, int(round(1000.0 / fps / 10.0)) * 10)
    durations = [step] * len(images)
    durations[-1] = max(step, int(round(hold_last * 100.0)) * 10)
    buffer = io.BytesIO()
    options = {"loop": 0} if loop else {}
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, optimize=False, disposal=1, **options)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _save_mp4(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    if not mp4_writer_available():
        raise RuntimeError(
            f"cannot write {str(path)!r}: MP4 needs imageio with ffmpeg "
            "(pip install imageio-ffmpeg); write a .gif instead"
        )
    import imageio.v3 as iio

    # Video encoders want even sizes.
    height, width = frames[0].shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    stack = np.stack([np.pad(f, pad, mode="edge") for f in frames])
    with atomic_path(path, suffix=".mp4") as tmp:
        iio.imwrite(tmp, stack, extension=".mp4", fps=fps)
    return path
