"""Image arrays and image files: validation, reading and atomic writing.

The in-memory convention of the ``segmentation`` package is a NumPy array with
the channels last: ``H×W`` (grayscale) or ``H×W×3`` (RGB), ``uint8`` in
``0..255`` or floating point in ``[0, 1]``. Label masks are ``uint8`` ``H×W``
arrays of class indices where ``255`` marks pixels to ignore (the PASCAL VOC
convention).

Every file written here goes to a temporary file in the destination folder
first and is then renamed over the destination, so that a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IGNORE_INDEX",
    "VOC_PALETTE",
    "atomic_write",
    "check_image",
    "check_mask",
    "read_image",
    "read_mask",
    "write_image",
    "write_mask_png",
]

#: Mask value of pixels that carry no label (object borders, "difficult" areas).
IGNORE_INDEX = 255


def _voc_palette() -> np.ndarray:
    # The colormap of the PASCAL VOC development kit (VOClabelcolormap.m): the
    # bits of the class index are spread over the high bits of R, G and B.
    palette = np.zeros((256, 3), dtype=np.uint8)
    index = np.arange(256)
    code = index.copy()
    for shift in range(7, -1, -1):
        for channel in range(3):
            palette[:, channel] |= (((code >> channel) & 1) << shift).astype(np.uint8)
        code >>= 3
    return palette


#: The standard PASCAL VOC colormap, a read-only ``uint8`` array of shape ``(256, 3)``:
#: class 0 is black, class 1 ``(128, 0, 0)``, ..., and ``255`` (ignore) ``(224, 224, 192)``.
VOC_PALETTE: np.ndarray = _voc_palette()
VOC_PALETTE.setflags(write=False)


def check_image(
    image: np.ndarray, *, channel_axis: int | None = -1, name: str = "image"
) -> np.ndarray:
    """Validate an image array and return it channels-last.

    Parameters
    ----------
    image : ndarray
        ``H×W`` grayscale, or ``H×W×C`` with ``C`` in {1, 3, 4} along
        ``channel_axis`` (``1``: grayscale, ``4``: RGBA, alpha is dropped).
        ``uint8``, or floating point with finite values in ``[0, 1]``. A
        ``torch.Tensor`` is accepted and converted.
    channel_axis : int or None, optional
        Axis of the colour channels of a 3-D array, as in scikit-image; ignored
        for a 2-D array. ``None`` means the image has no channel axis (2-D).
    name : str, optional
        Name of the argument, used in error messages.

    Returns
    -------
    image : ndarray
        ``H×W`` or ``H×W×3`` with the dtype of the input (a view where
        possible; never modified).

    Raises
    ------
    TypeError
        If ``image`` is not an array, or its dtype is neither ``uint8`` nor
        floating point.
    ValueError
        If the shape, channel count or values are not as described above, or
        the image has fewer than 2 pixels.
    """
    if _is_torch_tensor(image):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"{name} must have dtype uint8 or a floating dtype with values in [0, 1], "
            f"got {image.dtype}"
        )
    if image.ndim == 3:
        if channel_axis is None:
            raise ValueError(
                f"{name} has 3 dimensions {image.shape} but channel_axis is None; "
                "expected a 2-D image (volumes are not supported)"
            )
        if not isinstance(channel_axis, int | np.integer) or isinstance(channel_axis, bool):
            raise TypeError(f"channel_axis must be an int or None, got {channel_axis!r}")
        if not -3 <= channel_axis < 3:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a 3-D {name}")
        image = np.moveaxis(image, int(channel_axis), -1)
        channels = image.shape[-1]
        if channels == 1:
            image = image[..., 0]
        elif channels == 4:
            image = image[..., :3]
        elif channels != 3:
            raise ValueError(
                f"{name} must have 1, 3 or 4 channels along channel_axis={channel_axis}, "
                f"got {channels} (shape {tuple(np.moveaxis(image, -1, int(channel_axis)).shape)})"
            )
    elif image.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (H×W) or 3-D (H×W×C), got {image.ndim} dimensions "
            f"with shape {image.shape}"
        )
    height, width = image.shape[:2]
    if height * width < 2:
        raise ValueError(f"{name} must have at least 2 pixels, got spatial size {height}×{width}")
    if image.dtype != np.uint8:
        if not np.isfinite(image).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name} is floating point, so its values must lie in [0, 1]; "
                f"got the range [{low:g}, {high:g}] (scale uint8 images by 1/255)"
            )
    return image


def _integer_map(array, name: str) -> np.ndarray:
    """What masks and superpixel label maps share: a non-empty 2-D integer numpy
    array (a tensor is converted)."""
    if _is_torch_tensor(array):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or tensor, got {type(array).__name__}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H×W), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    return array


def check_mask(mask: np.ndarray, *, name: str = "mask") -> np.ndarray:
    """Validate a label mask and return it as ``uint8``.

    Parameters
    ----------
    mask : ndarray
        ``H×W`` integer array with values in ``0..255`` (``255`` = ignore). A
        ``torch.Tensor`` is accepted and converted.
    name : str, optional
        Name of the argument, used in error messages.

    Returns
    -------
    mask : ndarray of uint8
        The mask, ``H×W`` (a copy unless it was ``uint8`` already).

    Raises
    ------
    TypeError
        If ``mask`` is not an integer array.
    ValueError
        If ``mask`` is not 2-D, is empty, or has values outside ``0..255``.
    """
    mask = _integer_map(mask, name)
    if mask.dtype != np.uint8:
        low, high = int(mask.min()), int(mask.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{name} values must lie in 0..255 (255 = ignore), got the range [{low}, {high}]"
            )
        mask = mask.astype(np.uint8)
    return mask


def _is_torch_tensor(value: object) -> bool:
    # Avoid importing torch for a pure NumPy/PIL module.
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _open_image(path: str | os.PathLike, what: str) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} path {str(path)!r} is not a file")
    try:
        img = Image.open(path)
        # Image.open is lazy: decode now so truncated files fail here.
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read {what} file {str(path)!r}: {exc}") from exc
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an RGB array.

    Parameters
    ----------
    path : str or path-like
        Any format Pillow reads (JPEG, PNG, ...). Grayscale and palette images
        are expanded to RGB, alpha is dropped. EXIF orientation is not applied
        (so the array matches masks stored pixel-for-pixel).

    Returns
    -------
    image : ndarray of uint8, shape (H, W, 3)

    Raises
    ------
    ValueError
        If the file is missing, not a file, unreadable, truncated or corrupt;
        the message names the path.
    """
    img = _open_image(path, "image")
    try:
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot convert image file {str(path)!r} to RGB: {exc}") from exc
    finally:
        img.close()
    if rgb.shape[0] * rgb.shape[1] == 0:
        raise ValueError(f"image file {str(path)!r} is empty (size {rgb.shape[1]}×{rgb.shape[0]})")
    return rgb


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a label mask PNG.

    Parameters
    ----------
    path : str or path-like
        A PNG in palette mode (the palette indices are the labels, as in PASCAL
        VOC's ``SegmentationClass``) or grayscale (the gray values are the
        labels). ``255`` marks pixels to ignore.

    Returns
    -------
    mask : ndarray of uint8, shape (H, W)

    Raises
    ------
    ValueError
        If the file is missing, unreadable or corrupt, is not a PNG, or holds
        colours (RGB) or 16-bit values above 255 instead of indices; the
        message names the path.
    """
    img = _open_image(path, "mask")
    try:
        if img.format != "PNG":
            raise ValueError(
                f"mask file {str(path)!r} must be a PNG (lossless), got format {img.format}"
            )
        if img.mode in ("P", "L"):
            mask = np.array(img, dtype=np.uint8)
        elif img.mode == "1":
            mask = np.array(img, dtype=np.uint8)
        elif img.mode in ("I", "I;16", "I;16B", "I;16L"):
            values = np.array(img)
            if values.min() < 0 or values.max() > 255:
                raise ValueError(
                    f"mask file {str(path)!r} holds values in [{values.min()}, {values.max()}]; "
                    "expected class indices in 0..255"
                )
            mask = values.astype(np.uint8)
        else:
            raise ValueError(
                f"mask file {str(path)!r} has mode {img.mode}; expected a palette (P) or "
                "grayscale (L) PNG of class indices, not colours"
            )
    finally:
        img.close()
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask file {str(path)!r} is empty or not 2-D (shape {mask.shape})")
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` only on success.

    For writers that want a file name (video encoders, ``np.save``) rather than
    a file object. On leaving the block the temporary file gets the mode an
    ordinary ``open()`` would give it and is renamed onto ``path`` atomically;
    on an exception it is removed, so no half-written output remains.

    Raises
    ------
    ValueError
        If the destination folder does not exist.
    OSError
        If no file can be created in it (the message names ``path``).
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"folder {str(folder)!r} of output file {str(path)!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=suffix)
    except OSError as err:
        # Name the file asked for, not the temporary one beside it.
        raise type(err)(f"cannot write {str(path)!r}: {err.strerror or err}") from err
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates the file 0600; give it the mode an ordinary open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through a temporary file and an atomic rename.

    Parameters
    ----------
    path : str or path-like
        Destination. Its folder must exist.
    write : callable
        Called with a binary file object open for writing.

    Returns
    -------
    path : Path
        The destination.

    Raises
    ------
    ValueError
        If the destination folder does not exist.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def write_mask_png(
    path: str | os.PathLike, mask: np.ndarray, palette: np.ndarray | None = VOC_PALETTE
) -> Path:
    """Write a label mask as an indexed PNG, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination file (its folder must exist).
    mask : ndarray
        ``H×W`` integer array with values in ``0..255`` (``255`` = ignore).
    palette : ndarray or None, optional
        ``(K, 3)`` ``uint8`` colours, ``K <= 256``, for a palette PNG (default:
        the PASCAL VOC colormap); ``None`` writes a grayscale PNG whose values
        are the labels. Either way :func:`read_mask` returns ``mask``.

    Returns
    -------
    path : Path

    Raises
    ------
    TypeError, ValueError
        If ``mask`` or ``palette`` is malformed.
    """
    mask = check_mask(mask, name="mask")
    if palette is None:
        img = Image.fromarray(np.ascontiguousarray(mask))
    else:
        palette = np.asarray(palette)
        if palette.ndim != 2 or palette.shape[1] != 3 or not 1 <= palette.shape[0] <= 256:
            raise ValueError(f"palette must have shape (K, 3) with K <= 256, got {palette.shape}")
        if palette.dtype != np.uint8:
            if not np.issubdtype(palette.dtype, np.integer):
                raise TypeError(f"palette must have an integer dtype, got {palette.dtype}")
            if palette.min() < 0 or palette.max() > 255:
                raise ValueError("palette must hold colours in 0..255")
            palette = palette.astype(np.uint8)
        height, width = mask.shape
        img = Image.frombytes("P", (width, height), np.ascontiguousarray(mask).tobytes())
        img.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95) -> Path:
    """Write an RGB or grayscale image, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination; the format follows the suffix (``.jpg``/``.jpeg``: JPEG,
        ``.png``: PNG).
    image : ndarray
        As accepted by :func:`check_image`; floats are scaled by 255 and rounded.
    quality : int, optional
        JPEG quality, 1..100.

    Returns
    -------
    path : Path

    Raises
    ------
    ValueError
        If the suffix is not a supported format, ``quality`` is out of range,
        or ``image`` is malformed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
    if suffix not in formats:
        raise ValueError(f"path {str(path)!r} must end in .jpg, .jpeg or .png")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
    image = check_image(image, name="image")
    if image.dtype != np.uint8:
        image = np.rint(image * 255.0).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(image))
    buffer = io.BytesIO()
    if formats[suffix] == "JPEG":
        # 4:4:4 chroma keeps small coloured regions (and thin masks) honest.
        img.save(buffer, format="JPEG", quality=quality, subsampling=0)
    else:
        img.save(buffer, format="PNG")
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
