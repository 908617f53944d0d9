"""Training data at scale: lazy superpixel datasets, padded batches, augmentation.

:func:`load_training_data` puts them together for a VOC folder or procedural scenes.

The pieces a segmentation training loop needs around
:class:`~segmentation.data.transforms.SuperpixelGraph`, in the manner of the
torchvision segmentation references and mmsegmentation:

- :class:`SuperpixelDataset` builds the graph of item ``i`` when it is asked
  for (in a ``DataLoader`` worker), reads it from the disk cache after the
  first time, and optionally augments it; nothing holds the whole dataset.
- :class:`RandomFlipScaleCrop` flips, rescales and crops an image, its mask
  and its superpixel map together; the dataset then rebuilds the graph from
  the transformed map, without a second SLIC.
- :func:`pad_collate` batches images of different sizes: it pads them at the
  bottom and right, masks with ``255`` (ignored by the loss and the metrics)
  and superpixel maps with :data:`~segmentation.models.pooling.PAD_LABEL` (skipped
  by ``pool`` and ``unpool``).

Every random choice derives from ``(seed, epoch, index)`` only, so the
batches of an epoch do not depend on the number of workers or processes,
and a resumed run sees the same data as one that never stopped.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch_geometric.data import Batch

from segmentation._checks import check_int
from segmentation.data.datasets import SYNTHETIC_CLASSES, SyntheticScenes, VOCSegmentation
from segmentation.data.images import IGNORE_INDEX
from segmentation.data.superpixels import relabel_contiguous
from segmentation.data.transforms import SuperpixelData, SuperpixelGraph
from segmentation.models.pooling import PAD_LABEL

__all__ = [
    "SYNTHETIC_VAL_SEED_OFFSET",
    "RandomFlipScaleCrop",
    "SuperpixelDataset",
    "group_by_size",
    "load_training_data",
    "pad_collate",
    "resize_pair",
]

# Value that fills the padding of every per-pixel tensor of a SuperpixelData.
_PAD_VALUES = {"image": 0.0, "mask": IGNORE_INDEX, "superpixels": PAD_LABEL}


def _pixel_size(graph: Any, position: int) -> tuple[int, int]:
    """(H, W) of a graph's pixel maps, checking that they agree."""
    if not isinstance(graph, SuperpixelData):
        raise TypeError(
            f"data_list[{position}] must be a SuperpixelData (from SuperpixelGraph), "
            f"got {type(graph).__name__}"
        )
    superpixels = graph.get("superpixels")
    if not isinstance(superpixels, torch.Tensor) or superpixels.dim() != 3 or (
        superpixels.shape[0] != 1
    ):
        shape = None if superpixels is None else tuple(superpixels.shape)
        raise ValueError(
            f"data_list[{position}].superpixels must have shape [1, H, W], got {shape}"
        )
    size = tuple(superpixels.shape[-2:])
    for key in ("image", "mask"):
        value = graph.get(key)
        if value is not None and (value.shape[0] != 1 or tuple(value.shape[-2:]) != size):
            raise ValueError(
                f"data_list[{position}].{key} has shape {tuple(value.shape)} but its "
                f"superpixels are {size[0]}×{size[1]}; expected a leading 1 and the same H, W"
            )
    return size


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor


def pad_collate(data_list: Sequence[SuperpixelData], size_divisor: int = 1) -> Batch:
    """Batch superpixel graphs of images of any sizes into one ``Batch``.

    Every per-pixel tensor is padded at the bottom and right to the largest
    height and width of the batch (rounded up to a multiple of
    ``size_divisor``): ``image`` with zeros, ``mask`` with ``255`` (ignore),
    ``superpixels`` with :data:`~segmentation.models.pooling.PAD_LABEL`, which
    :func:`~segmentation.models.pooling.pool` and :func:`~segmentation.models.pooling.unpool`
    skip, so no node sees a padding pixel. Graphs of one size are not padded
    (with ``size_divisor=1``): the batch is then ``Batch.from_data_list`` of
    them plus ``image_size``.

    Use it as ``DataLoader(dataset, batch_size=..., collate_fn=pad_collate)``
    (a ``torch.utils.data.DataLoader``: PyG's own ``DataLoader`` replaces any
    ``collate_fn``); for a divisor, ``functools.partial(pad_collate,
    size_divisor=32)``, which pickles for worker processes.

    Parameters
    ----------
    data_list : sequence of SuperpixelData
        Graphs with ``superpixels`` ``[1, H, W]`` and optionally ``image``
        ``[1, C, H, W]`` and ``mask`` ``[1, H, W]`` (not modified).
    size_divisor : int, optional
        Pad height and width up to a multiple of this (as mmsegmentation's
        ``size_divisor``, for strided backbones).

    Returns
    -------
    Batch
        As ``Batch.from_data_list`` (``superpixels`` ``[B, H, W]``, ``image``
        ``[B, C, H, W]``, ``mask`` ``[B, H, W]`` at the padded size), with
        ``image_size`` (int64 ``[B, 2]``): the height and width of every
        image before padding, to crop predictions back.

    Raises
    ------
    TypeError, ValueError
        If ``data_list`` is empty, holds something other than
        ``SuperpixelData``, or a graph's pixel maps disagree in size, or
        ``size_divisor`` is not a positive int.
    """
    check_int(size_divisor, "size_divisor")
    if isinstance(data_list, SuperpixelData) or not isinstance(data_list, Sequence):
        raise TypeError(
            f"data_list must be a sequence of SuperpixelData, got {type(data_list).__name__}"
        )
    if len(data_list) == 0:
        raise ValueError("data_list is empty: nothing to batch")
    sizes = [_pixel_size(graph, i) for i, graph in enumerate(data_list)]
    height = _round_up(max(h for h, _ in sizes), int(size_divisor))
    width = _round_up(max(w for _, w in sizes), int(size_divisor))
    padded = []
    for graph, (h, w) in zip(data_list, sizes, strict=True):
        graph = copy.copy(graph)  # shallow: the caller's graph keeps its tensors
        if (h, w) != (height, width):
            for key, fill in _PAD_VALUES.items():
                if key in graph:
                    # F.pad's last-dimension-first order: (left, right, top, bottom).
                    graph[key] = F.pad(graph[key], (0, width - w, 0, height - h), value=fill)
        graph.image_size = torch.tensor([[h, w]])
        padded.append(graph)
    return Batch.from_data_list(padded)


def group_by_size(data_list: Sequence[SuperpixelData]) -> list[list[SuperpixelData]]:
    """Split graphs into groups of equal image size, in order of first appearance.

    For evaluation at every image's own size: each group batches without
    padding (``pad_collate(group)``), so the backbone never sees padding.
    """
    groups: dict[tuple[int, int], list[SuperpixelData]] = {}
    for i, graph in enumerate(data_list):
        groups.setdefault(_pixel_size(graph, i), []).append(graph)
    return list(groups.values())


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image (bilinear) and its mask (nearest) to a ``size``×``size`` square."""
    img = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    msk = Image.fromarray(mask).resize((size, size), Image.NEAREST)
    return np.asarray(img), np.asarray(msk)


def _nearest_index(source: int, target: int) -> np.ndarray:
    # Pixel-centre nearest neighbour (torch's "nearest-exact", PIL's NEAREST).
    index = np.floor((np.arange(target) + 0.5) * (source / target)).astype(np.int64)
    return np.minimum(index, source - 1)


def _resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (antialiased when shrinking) resize of a channels-last image, same dtype."""
    # np.array copies: arrays read from the cache are read-only.
    tensor = torch.from_numpy(np.array(image, dtype=np.float32))
    tensor = tensor.unsqueeze(-1) if tensor.dim() == 2 else tensor
    resized = F.interpolate(tensor.permute(2, 0, 1)[None], size=(height, width),
                            mode="bilinear", align_corners=False, antialias=True)
    resized = resized[0].permute(1, 2, 0)
    if image.ndim == 2:
        resized = resized[..., 0]
    if image.dtype == np.uint8:
        return resized.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return resized.clamp_(0, 1).numpy().astype(image.dtype, copy=False)


class RandomFlipScaleCrop:
    """Random horizontal flip, random rescale, then random crop with padding.

    The augmentation of the torchvision segmentation references and
    mmsegmentation, applied to an image, its mask and its superpixel map
    together: the image is resized bilinearly (antialiased when shrinking),
    mask and superpixel map by nearest neighbour with the same sampling
    grid, so they stay aligned pixel for pixel. Where the rescaled image is
    smaller than the crop, it is padded at the bottom and right: the image
    with 0, the mask with 255 (ignore), the superpixel map with
    :data:`~segmentation.models.pooling.PAD_LABEL`.

    Parameters
    ----------
    crop_size : int or (int, int), optional
        Height and width of the output; ``None``: no crop (the rescaled image).
    scale_range : (float, float), optional
        The scale factor is uniform in this range.
    flip_prob : float, optional
        Probability of a horizontal flip.

    Raises
    ------
    ValueError
        If a parameter is out of range.
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_prob: float = 0.5,
    ) -> None:
        if crop_size is not None:
            pair = crop_size if isinstance(crop_size, tuple | list) else (crop_size, crop_size)
            if len(pair) != 2:
                raise ValueError(f"crop_size must be an int or a pair (H, W), got {crop_size!r}")
            crop_size = tuple(check_int(v, "crop_size") for v in pair)
        self.crop_size = crop_size
        try:
            low, high = (float(v) for v in scale_range)
        except (TypeError, ValueError):
            message = f"scale_range must be a pair (min, max), got {scale_range!r}"
            raise ValueError(message) from None
        if not (0 < low <= high < float("inf")):
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range!r}")
        self.scale_range = (low, high)
        if isinstance(flip_prob, bool) or not isinstance(flip_prob, numbers.Real) or not (
            0.0 <= flip_prob <= 1.0
        ):
            raise ValueError(f"flip_prob must be a number in [0, 1], got {flip_prob!r}")
        self.flip_prob = float(flip_prob)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(crop_size={self.crop_size}, "
                f"scale_range={self.scale_range}, flip_prob={self.flip_prob})")

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        superpixels: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[int, int]]:
        """Augment one sample.

        Parameters
        ----------
        image : ndarray, shape (H, W) or (H, W, C)
            ``uint8`` or float in ``[0, 1]``.
        mask : ndarray, shape (H, W), or None
        superpixels : ndarray, shape (H, W)
            Superpixel labels.
        rng : numpy.random.Generator
            The source of every random choice (flip, scale, crop offset, in
            this order, always all three).

        Returns
        -------
        image, mask, superpixels : ndarray
            Transformed, of the crop size if one is set; same dtypes.
        valid_size : (int, int)
            Height and width of the part that is not padding (the top-left
            corner).
        """
        flip = rng.random() < self.flip_prob
        scale = rng.uniform(*self.scale_range)
        offset_draws = rng.random(2)
        if flip:
            image, superpixels = image[:, ::-1], superpixels[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        height, width = superpixels.shape
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        if (new_h, new_w) != (height, width):
            image = _resize_image(image, new_h, new_w)
            rows, cols = _nearest_index(height, new_h), _nearest_index(width, new_w)
            superpixels = superpixels[rows[:, None], cols]
            mask = None if mask is None else mask[rows[:, None], cols]
        if self.crop_size is None:
            return (np.ascontiguousarray(image), None if mask is None else
                    np.ascontiguousarray(mask), np.ascontiguousarray(superpixels), (new_h, new_w))
        crop_h, crop_w = self.crop_size
        # A uniform offset among the max(0, n - crop) + 1 possible ones.
        top = int(offset_draws[0] * (max(0, new_h - crop_h) + 1))
        left = int(offset_draws[1] * (max(0, new_w - crop_w) + 1))
        valid_h, valid_w = min(crop_h, new_h), min(crop_w, new_w)
        window = (slice(top, top + valid_h), slice(left, left + valid_w))

        def crop(array: np.ndarray, fill) -> np.ndarray:
            out = np.full((crop_h, crop_w, *array.shape[2:]), fill, dtype=array.dtype)
            out[:valid_h, :valid_w] = array[window]
            return out

        return (crop(image, 0), None if mask is None else crop(mask, IGNORE_INDEX),
                crop(superpixels, PAD_LABEL), (valid_h, valid_w))


class SuperpixelDataset(torch.utils.data.Dataset):
    """Superpixel graphs of a dataset of images, built lazily, cached, augmented.

    Item ``i`` reads sample ``i`` of ``samples``, optionally resizes it,
    builds its graph with ``transform`` (which reads it from the disk cache
    when ``transform.cache_dir`` is set and the graph was built before, by
    any process) and, with ``augment``, flips, rescales and crops image, mask
    and superpixel map and rebuilds the graph from the transformed map.
    Nothing is kept between items, so memory does not grow with the dataset,
    and items build in ``DataLoader`` worker processes.

    Rebuilding after augmentation: labels are renumbered ``0..N-1`` in
    their original order (superpixels that the crop cut away or that
    vanished when shrinking disappear); a superpixel that the crop or the
    rescale cut into several pieces stays **one node** (as it was one
    superpixel of the image; SLIC without ``enforce_connectivity`` gives such
    nodes too); the adjacency (both directions, no self-loops), ``x``,
    ``pos`` and ``edge_attr`` are computed by the same code as in
    :class:`~segmentation.data.transforms.SuperpixelGraph`, on the part of the
    crop that is not padding. Padding pixels get
    :data:`~segmentation.models.pooling.PAD_LABEL` and mask 255.

    Parameters
    ----------
    samples : indexable dataset of (image, mask)
        E.g. :class:`~segmentation.data.datasets.VOCSegmentation` or
        :class:`~segmentation.data.datasets.SyntheticScenes`: ``len(samples)`` and
        ``samples[i]`` giving a ``uint8`` (or float) image and its mask.
    transform : SuperpixelGraph, optional
        Builds (and caches) the graphs; default ``SuperpixelGraph()``.
    augment : RandomFlipScaleCrop, optional
        Augmentation, drawn anew every epoch (see :meth:`set_epoch`).
    seed : int, optional
        Seed of the augmentation: item ``i`` of epoch ``e`` uses the random
        stream ``(seed, e, i)``, whatever process or worker builds it.
    image_size : int, optional
        Resize every image (bilinear) and mask (nearest) to this square
        before building its graph.

    Raises
    ------
    TypeError, ValueError
        If an argument is malformed.
    """

    def __init__(
        self,
        samples: Sequence,
        transform: SuperpixelGraph | None = None,
        augment: RandomFlipScaleCrop | None = None,
        seed: int = 0,
        *,
        image_size: int | None = None,
    ) -> None:
        if not hasattr(samples, "__len__") or not hasattr(samples, "__getitem__"):
            raise TypeError(
                f"samples must be an indexable dataset of (image, mask), got "
                f"{type(samples).__name__}"
            )
        transform = SuperpixelGraph() if transform is None else transform
        if not isinstance(transform, SuperpixelGraph):
            raise TypeError(f"transform must be a SuperpixelGraph, got {type(transform).__name__}")
        if augment is not None and not isinstance(augment, RandomFlipScaleCrop):
            raise TypeError(
                f"augment must be a RandomFlipScaleCrop or None, got {type(augment).__name__}"
            )
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.samples = samples
        self.transform = transform
        self.augment = augment
        self.seed = int(seed)
        self.image_size = None if image_size is None else check_int(
            image_size, "image_size")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(len={len(self)}, transform={self.transform}, "
                f"augment={self.augment}, seed={self.seed}, epoch={self.epoch})")

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentation the items get.

        Call it before creating the epoch's ``DataLoader`` iterator (workers
        get a copy of the dataset when the iterator starts), like
        ``DistributedSampler.set_epoch``.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> SuperpixelData:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"index must be an int, got {index!r}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples")
        index = int(index) % len(self)
        sample = self.samples[index]
        if not isinstance(sample, tuple | list) or len(sample) != 2:
            raise ValueError(f"samples[{index}] must be an (image, mask) pair")
        image, mask = sample
        if self.image_size is not None:
            image, mask = resize_pair(np.asarray(image), np.asarray(mask), self.image_size)
        graph = self.transform((image, mask))
        if self.augment is None:
            return graph
        image, mask, _ = self.transform._unpack((image, mask))  # validated, channels-last
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, mask, labels, valid_size = self.augment(
            image, mask, graph.superpixels[0].numpy(), rng)
        return _rebuild_graph(self.transform, image, mask, labels, valid_size)


def _rebuild_graph(
    transform: SuperpixelGraph,
    image: np.ndarray,
    mask: np.ndarray | None,
    labels: np.ndarray,
    valid_size: tuple[int, int],
) -> SuperpixelData:
    """The graph of an image whose superpixel map is given (no SLIC).

    ``labels`` may hold any non-negative labels in its top-left
    ``valid_size`` part and :data:`PAD_LABEL` elsewhere; see
    :class:`SuperpixelDataset` for what the result holds.
    """
    valid_h, valid_w = valid_size
    height, width = labels.shape
    inside = relabel_contiguous(labels[:valid_h, :valid_w])
    graph = transform._graph_from_labels(image[:valid_h, :valid_w], inside)
    superpixels = torch.full((1, height, width), PAD_LABEL, dtype=torch.int64)
    superpixels[0, :valid_h, :valid_w] = graph["superpixels"][0]
    graph["superpixels"] = superpixels
    return transform._data(graph, image, mask)


#: How far the seeds of generated validation scenes lie from the training seed:
#: :func:`load_training_data` draws them from ``seed + SYNTHETIC_VAL_SEED_OFFSET``, far
#: from the training stream (``seed``); further held-out scenes can use multiples of it.
SYNTHETIC_VAL_SEED_OFFSET = 1_000_003


def load_training_data(
    data: str | None = None,
    synthetic: int | None = None,
    synthetic_val: int | None = None,
    seed: int = 0,
    train_split: str = "train",
    val_split: str = "val",
    n_segments: int = 150,
    compactness: float = 10.0,
    image_size: int | None = None,
    cache_dir: str | None = None,
    augment: bool = False,
    crop_size: int | None = None,
) -> tuple[SuperpixelDataset, SuperpixelDataset, list[str]]:
    """Lazy superpixel-graph datasets of the training and validation images, and the class names.

    Exactly one of ``data`` (a VOC-layout folder) and ``synthetic`` (a number
    of procedural scenes) must be given. Graphs are built when a
    ``DataLoader`` asks for them (see :class:`segmentation.data.loading.SuperpixelDataset`),
    and read back from ``cache_dir`` after the first time. Images may differ
    in size; ``image_size`` resizes them all to one square. ``augment``
    flips, rescales (0.5-2.0) and, with ``crop_size``, crops the training
    images (never the validation ones), from the seed ``seed``.
    """
    if (data is None) == (synthetic is None):
        raise ValueError("give exactly one of 'data' (a folder) and 'synthetic' (a count)")
    if crop_size is not None and not augment:
        raise ValueError("crop_size needs augment=True (the crop is part of the augmentation)")
    augmentation = RandomFlipScaleCrop(crop_size) if augment else None
    if synthetic is not None:
        n_val = synthetic_val or max(8, synthetic // 4)
        train_samples = SyntheticScenes(synthetic, seed=seed)
        val_samples = SyntheticScenes(n_val, seed=seed + SYNTHETIC_VAL_SEED_OFFSET)
        class_names = list(SYNTHETIC_CLASSES)
    else:
        train_samples = VOCSegmentation(data, split=train_split)
        val_samples = VOCSegmentation(data, split=val_split,
                                      num_classes=train_samples.num_classes)
        class_names = list(train_samples.class_names)
    transform = SuperpixelGraph(n_segments=n_segments, compactness=compactness,
                                add_features=False, cache_dir=cache_dir)
    train_set = SuperpixelDataset(train_samples, transform, augmentation, seed,
                                  image_size=image_size)
    val_set = SuperpixelDataset(val_samples, transform, image_size=image_size)
    return train_set, val_set, class_names
