"""Semantic segmentation datasets in the PASCAL VOC folder layout.

::

    root/
        JPEGImages/<id>.jpg            (or .jpeg / .png)
        SegmentationClass/<id>.png     palette or grayscale PNG of class
                                       indices, 255 = ignore
        ImageSets/Segmentation/<split>.txt   one id per line
        classes.txt                    optional, one class name per line

The real PASCAL VOC 2012 ``VOCdevkit/VOC2012`` folder is such a root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segmentation.data.images import (
    IGNORE_INDEX,
    atomic_write,
    check_image,
    check_mask,
    read_image,
    read_mask,
    write_image,
    write_mask_png,
)

__all__ = ["VOC_CLASSES", "VOCSegmentation", "write_voc"]

#: The 21 classes of PASCAL VOC 2012 segmentation, background first.
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

IMAGE_DIR = "JPEGImages"
MASK_DIR = "SegmentationClass"
SPLIT_DIR = os.path.join("ImageSets", "Segmentation")
CLASSES_FILE = "classes.txt"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Ids and split names become file names: keep them to one safe path component.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_PATTERN.match(value) or value in (".", ".."):
        raise ValueError(
            f"{what} must be a non-empty name of letters, digits, '_', '-' or '.', got {value!r}"
        )
    return value


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise TypeError(f"num_classes must be an int, got {num_classes!r}")
    if not 1 <= num_classes <= IGNORE_INDEX:
        raise ValueError(
            f"num_classes must be in 1..{IGNORE_INDEX} ({IGNORE_INDEX} marks ignored pixels), "
            f"got {num_classes}"
        )
    return int(num_classes)


def _check_labels(mask: np.ndarray, num_classes: int, where: str) -> None:
    bad = (mask >= num_classes) & (mask != IGNORE_INDEX)
    if bad.any():
        values = np.unique(mask[bad])
        raise ValueError(
            f"{where} holds labels {values[:10].tolist()} >= num_classes={num_classes} "
            f"that are not the ignore value {IGNORE_INDEX}"
        )


class VOCSegmentation(torch.utils.data.Dataset):
    """Images and class masks of one split of a PASCAL VOC style folder.

    Parameters
    ----------
    root : str or path-like
        The dataset folder (see the module docstring for the layout).
    split : str, optional
        Name of the split file ``ImageSets/Segmentation/<split>.txt``
        (``"train"``, ``"val"``, ``"trainval"``, ...).
    num_classes : int, optional
        Number of classes (labels ``0..num_classes-1``, plus 255 = ignore).
        Default: the number of names in ``root/classes.txt`` if present, else
        21 (PASCAL VOC).
    transform : callable, optional
        Called with the pair ``(image, mask)``; its result is what
        ``__getitem__`` returns. E.g.
        :class:`segmentation.data.transforms.SuperpixelGraph`.

    Attributes
    ----------
    ids : list of str
        Sample ids in split-file order.
    class_names : list of str
        From ``classes.txt`` if present; else the PASCAL VOC names when
        ``num_classes`` is 21 (or not given), else ``class_0, class_1, ...``.
    num_classes : int
    image_paths, mask_paths : list of Path

    Raises
    ------
    ValueError
        If ``root`` or one of its folders or the split file is missing, the
        split lists no ids or an id twice, an image or mask file of an id is
        missing, or ``classes.txt`` disagrees with ``num_classes``. Size
        mismatches and out-of-range labels are reported by ``__getitem__``
        (they need the files decoded).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        num_classes: int | None = None,
        *,
        transform: Callable[[tuple[np.ndarray, np.ndarray]], Any] | None = None,
    ) -> None:
        root = Path(root)
        if not root.exists():
            raise ValueError(f"root {str(root)!r} does not exist")
        if not root.is_dir():
            raise ValueError(f"root {str(root)!r} is not a folder")
        for folder in (IMAGE_DIR, MASK_DIR):
            if not (root / folder).is_dir():
                raise ValueError(
                    f"root {str(root)!r} has no {folder}/ folder (expected the PASCAL VOC "
                    f"layout {IMAGE_DIR}/, {MASK_DIR}/, ImageSets/Segmentation/)"
                )
        split = _check_name(split, "split")
        split_file = root / SPLIT_DIR / f"{split}.txt"
        if not split_file.is_file():
            available = sorted(p.stem for p in (root / SPLIT_DIR).glob("*.txt"))
            raise ValueError(
                f"split {split!r} has no split file {str(split_file)!r} "
                f"(available splits: {available})"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {transform!r}")

        ids: list[str] = []
        seen: set[str] = set()
        for line_number, line in enumerate(split_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            sample_id = fields[0]
            if sample_id in seen:
                raise ValueError(
                    f"split file {str(split_file)!r} lists id {sample_id!r} twice "
                    f"(line {line_number})"
                )
            seen.add(sample_id)
            ids.append(sample_id)
        if not ids:
            raise ValueError(f"split file {str(split_file)!r} lists no ids")

        image_paths, mask_paths = [], []
        for sample_id in ids:
            candidates = [root / IMAGE_DIR / f"{sample_id}{suffix}" for suffix in _IMAGE_SUFFIXES]
            image_path = next((p for p in candidates if p.is_file()), None)
            if image_path is None:
                raise ValueError(
                    f"missing image for id {sample_id!r} of split {split!r}: "
                    f"{str(candidates[0])!r} does not exist (nor .jpeg / .png)"
                )
            mask_path = root / MASK_DIR / f"{sample_id}.png"
            if not mask_path.is_file():
                raise ValueError(
                    f"missing mask for id {sample_id!r} of split {split!r}: "
                    f"{str(mask_path)!r} does not exist"
                )
            image_paths.append(image_path)
            mask_paths.append(mask_path)

        classes_file = root / CLASSES_FILE
        if classes_file.is_file():
            names = [line.strip() for line in classes_file.read_text().splitlines()]
            names = [name for name in names if name]
            if num_classes is None:
                num_classes = _check_num_classes(len(names))
            elif _check_num_classes(num_classes) != len(names):
                raise ValueError(
                    f"num_classes={num_classes} but {str(classes_file)!r} lists "
                    f"{len(names)} classes"
                )
            class_names = names
        else:
            num_classes = len(VOC_CLASSES) if num_classes is None else num_classes
            num_classes = _check_num_classes(num_classes)
            if num_classes == len(VOC_CLASSES):
                class_names = list(VOC_CLASSES)
            else:
                class_names = [f"class_{k}" for k in range(num_classes)]

        self.root = root
        self.split = split
        self.ids = ids
        self.image_paths = image_paths
        self.mask_paths = mask_paths
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"num_classes={self.num_classes}, len={len(self)})"
        )

    def __getitem__(self, index: int) -> Any:
        """Return ``(image, mask)`` of sample ``index`` (or its transform).

        Returns
        -------
        image : ndarray of uint8, shape (H, W, 3)
        mask : ndarray of uint8, shape (H, W)
            Class indices ``< num_classes``, 255 = ignore.

        Raises
        ------
        IndexError
            If ``index`` is out of range.
        ValueError
            If a file is unreadable, the image and mask sizes differ, or the
            mask holds labels ``>= num_classes`` other than 255.
        """
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"index must be an int, got {index!r}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        index = int(index) % len(self)
        image_path, mask_path = self.image_paths[index], self.mask_paths[index]
        image = read_image(image_path)
        mask = read_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"mask {str(mask_path)!r} is {mask.shape[1]}×{mask.shape[0]} (W×H) but image "
                f"{str(image_path)!r} is {image.shape[1]}×{image.shape[0]}; they must match"
            )
        _check_labels(mask, self.num_classes, f"mask {str(mask_path)!r}")
        if self.transform is not None:
            return self.transform((image, mask))
        return image, mask


def _split_assignment(
    split_names: str | Sequence[str] | Mapping[str, Sequence[int]], count: int | None
) -> Callable[[int], list[str]]:
    """Return a function: sample index -> the splits it belongs to."""
    if isinstance(split_names, str):
        name = _check_name(split_names, "split_names")
        return lambda index: [name]
    if isinstance(split_names, Mapping):
        membership: dict[int, list[str]] = {}
        for name, indices in split_names.items():
            _check_name(name, "a split name in split_names")
            for index in indices:
                if isinstance(index, bool) or not isinstance(index, int | np.integer):
                    raise TypeError(f"split_names[{name!r}] must hold sample indices (int)")
                if index < 0 or (count is not None and index >= count):
                    raise ValueError(
                        f"split_names[{name!r}] holds index {index}, out of range for "
                        f"{count} samples"
                    )
                membership.setdefault(int(index), []).append(name)
        return lambda index: membership.get(index, [])
    if isinstance(split_names, Sequence):
        names = [_check_name(name, "each entry of split_names") for name in split_names]
        if count is not None and len(names) != count:
            raise ValueError(f"split_names has {len(names)} entries but there are {count} samples")

        def lookup(index: int) -> list[str]:
            if index >= len(names):
                raise ValueError(f"split_names has {len(names)} entries, fewer than the samples")
            return [names[index]]

        return lookup
    raise TypeError(
        "split_names must be a split name, a sequence of split names (one per sample) or a "
        f"mapping split name -> sample indices, got {type(split_names).__name__}"
    )


def write_voc(
    root: str | os.PathLike,
    samples: Iterable[tuple[np.ndarray, np.ndarray]],
    split_names: str | Sequence[str] | Mapping[str, Sequence[int]],
    class_names: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    image_format: str = "jpg",
    jpeg_quality: int = 95,
) -> list[str]:
    """Write images and masks as a PASCAL VOC style dataset.

    Every file is written atomically. The split files and ``classes.txt`` are
    written last, so an error part-way leaves no split file that lists an id
    whose files were not written.

    Parameters
    ----------
    root : str or path-like
        Dataset folder, created if missing. Existing files of the same ids
        are replaced.
    samples : iterable of (image, mask)
        ``image`` as accepted by :func:`segmentation.data.images.check_image`
        (``uint8`` or float in ``[0, 1]``; grayscale is written as RGB by
        JPEG readers); ``mask`` an ``H×W`` integer array of labels
        ``< len(class_names)`` or 255 (ignore), same size as the image.
    split_names : str, sequence of str, or mapping
        Which split file(s) list each sample: one name for all samples; one
        name per sample; or ``{split: [sample indices]}`` (a sample may be in
        several splits, or none).
    class_names : sequence of str
        Written to ``classes.txt``; at most 255 names.
    ids : sequence of str, optional
        File stem of every sample; default ``000000``, ``000001``, ...
    image_format : {"jpg", "png"}, optional
        JPEG (as PASCAL VOC; lossy) or PNG (lossless) images.
    jpeg_quality : int, optional
        JPEG quality 1..100 (with 4:4:4 chroma).

    Returns
    -------
    ids : list of str
        The ids written, in sample order.

    Raises
    ------
    TypeError, ValueError
        If an argument is malformed, an image and its mask differ in size, or
        a mask label is out of range; the message names the sample.
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError("class_names must be a sequence of strings")
    class_names = list(class_names)
    if not 1 <= len(class_names) <= IGNORE_INDEX:
        raise ValueError(f"class_names must hold 1..{IGNORE_INDEX} names, got {len(class_names)}")
    for name in class_names:
        if not isinstance(name, str) or not name.strip() or "\n" in name or name != name.strip():
            raise ValueError(f"class names must be non-empty single-line strings, got {name!r}")
    if len(set(class_names)) != len(class_names):
        raise ValueError("class_names holds duplicate names")
    count = len(samples) if isinstance(samples, Sized) else None
    if ids is not None:
        ids = [_check_name(sample_id, "each id in ids") for sample_id in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("ids holds duplicates")
        if count is not None and len(ids) != count:
            raise ValueError(f"ids has {len(ids)} entries but there are {count} samples")
    splits_of = _split_assignment(split_names, count)

    root = Path(root)
    for folder in (IMAGE_DIR, MASK_DIR, SPLIT_DIR):
        (root / folder).mkdir(parents=True, exist_ok=True)
    num_classes = len(class_names)
    written: list[str] = []
    split_lists: dict[str, list[str]] = {}
    if isinstance(split_names, Mapping):
        split_lists = {name: [] for name in split_names}
    for index, sample in enumerate(samples):
        if not isinstance(sample, tuple | list) or len(sample) != 2:
            raise ValueError(f"sample {index} must be an (image, mask) pair")
        image = check_image(sample[0], name=f"image of sample {index}")
        mask = check_mask(sample[1], name=f"mask of sample {index}")
        if image.shape[:2] != mask.shape:
            raise ValueError(
                f"mask of sample {index} has shape {mask.shape} but its image is "
                f"{image.shape[0]}×{image.shape[1]}"
            )
        _check_labels(mask, num_classes, f"mask of sample {index}")
        if ids is None:
            sample_id = f"{index:06d}"
        elif index < len(ids):
            sample_id = ids[index]
        else:
            raise ValueError(f"ids has {len(ids)} entries, fewer than the samples")
        splits = splits_of(index)

        image_path = root / IMAGE_DIR / f"{sample_id}.{image_format}"
        for suffix in _IMAGE_SUFFIXES:
            # The reader takes .jpg first: drop another format's stale file of this id.
            other = root / IMAGE_DIR / f"{sample_id}{suffix}"
            if other != image_path and other.exists():
                other.unlink()
        write_image(image_path, image, quality=jpeg_quality)
        write_mask_png(root / MASK_DIR / f"{sample_id}.png", mask)
        written.append(sample_id)
        for split in splits:
            split_lists.setdefault(split, []).append(sample_id)

    if ids is not None and len(written) != len(ids):
        raise ValueError(f"ids has {len(ids)} entries but there were {len(written)} samples")
    if isinstance(split_names, Mapping):
        for name, indices in split_names.items():
            if any(index >= len(written) for index in indices):
                raise ValueError(
                    f"split_names[{name!r}] holds indices beyond the {len(written)} samples"
                )
    elif not isinstance(split_names, str) and len(split_names) != len(written):
        raise ValueError(
            f"split_names has {len(split_names)} entries but there were {len(written)} samples"
        )
    for split, split_ids in split_lists.items():
        text = "".join(f"{sample_id}\n" for sample_id in split_ids).encode()
        atomic_write(root / SPLIT_DIR / f"{split}.txt", lambda handle, t=text: handle.write(t))
    names_text = "".join(f"{name}\n" for name in class_names).encode()
    atomic_write(root / CLASSES_FILE, lambda handle: handle.write(names_text))
    return written
