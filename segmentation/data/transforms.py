"""A PyG transform from images to superpixel region adjacency graphs."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import skimage
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

from segmentation._checks import check_int, check_number
from segmentation.data.adjacency import _region_adjacency
from segmentation.data.features import _centroids, _edge_features, _features_and_centroids
from segmentation.data.images import atomic_write, check_image, check_mask
from segmentation.data.superpixels import _slic
from segmentation.models.pooling import pool

__all__ = ["SuperpixelData", "SuperpixelGraph"]

# Bump when the content or layout of cached graphs changes.
# 2: the edge_features option (edge_attr with the EDGE_FEATURE_NAMES columns).
_CACHE_FORMAT = 3
_CACHED_TENSORS = ("x", "pos", "edge_index", "edge_attr", "superpixels")


class SuperpixelData(Data):
    """A :class:`~torch_geometric.data.Data` graph of superpixels with pixel maps.

    Besides the usual graph attributes it holds per-pixel tensors with a
    leading dimension of 1: ``superpixels`` (``[1, H, W]`` int64 node index
    of every pixel), ``image`` (``[1, C, H, W]`` float) and ``mask``
    (``[1, H, W]`` int64 class labels, 255 = ignore). When batching, these are
    concatenated along dimension 0 (giving ``[B, H, W]`` and ``[B, C, H, W]``
    for images of one size) and, unlike ``edge_index``, **not** shifted by the
    node offsets: ``superpixels`` keeps per-image labels ``0..N_b-1``, as
    :func:`segmentation.models.pooling.pool` expects (pass ``batch.ptr.diff()`` as
    its ``num_nodes``).
    """

    PIXEL_KEYS = ("superpixels", "image", "mask")

    def __cat_dim__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key in self.PIXEL_KEYS:
            return 0
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key in self.PIXEL_KEYS:
            return 0
        return super().__inc__(key, value, *args, **kwargs)


class SuperpixelGraph(BaseTransform):
    r"""Turn an image into a graph of SLIC superpixels (region adjacency graph).

    Unlike :class:`torch_geometric.transforms.ToSLIC`, which makes nodes but
    no edges, the result connects every pair of touching superpixels.

    Parameters
    ----------
    n_segments : int, optional
        Approximate number of superpixels (see
        :func:`segmentation.data.superpixels.slic_superpixels`); must not exceed
        the number of pixels of an image.
    compactness : float, optional
        SLIC compactness (> 0).
    sigma : float, optional
        Width of SLIC's Gaussian pre-smoothing (>= 0).
    connectivity : {4, 8}, optional
        Pixel neighbourhood that makes two superpixels adjacent.
    add_features : bool, optional
        If true, ``x`` holds the features of
        :func:`segmentation.data.features.superpixel_features` (12 columns, see
        ``FEATURE_NAMES``); otherwise the mean colour of every superpixel
        (``C`` columns, as ``ToSLIC``).
    cache_dir : str or path-like, optional
        Folder to cache graphs in (created if missing). A graph is stored under
        a hash of the image bytes, shape and dtype and of every parameter that
        affects the graph (and the scikit-image version), written atomically,
        and loaded instead of recomputed next time. Safe with several
        ``DataLoader`` workers.
    max_num_iter : int, optional
        SLIC k-means iterations.
    enforce_connectivity : bool, optional
        Make every superpixel connected.
    keep_image : bool, optional
        Store the image as ``image`` (``[1, C, H, W]`` float in ``[0, 1]``).
    edge_features : bool, optional
        If true, ``edge_attr`` holds the columns of
        :func:`segmentation.data.features.edge_features` (see
        ``EDGE_FEATURE_NAMES``: shared boundary length in pixels, CIELAB
        colour difference of the mean colours, centroid distance in pixels);
        otherwise only the boundary length. Turn them into edge weights with
        :func:`segmentation.data.features.edge_weight_from_features`.

    Notes
    -----
    The transform accepts

    - a ``[C, H, W]`` or ``[H, W]`` tensor (``C`` in {1, 3, 4}; float in
      ``[0, 1]`` or uint8), as ``ToSLIC`` takes;
    - an ``H×W×C`` or ``H×W`` NumPy array (uint8 or float in ``[0, 1]``);
    - an ``(image, mask)`` pair, e.g. an item of
      :class:`segmentation.data.datasets.voc.VOCSegmentation`;
    - a :class:`~torch_geometric.data.Data` with the image in ``data.image``
      (tensor ``[C, H, W]`` or array ``H×W×C``) and optionally a label mask
      ``H×W`` in ``data.mask``, or in ``data.y`` when ``y`` has the image's
      size (it then moves to ``mask``). Other attributes are copied.

    It returns a :class:`SuperpixelData` with ``x`` (float32 ``[N, F]``),
    ``pos`` (centroids, pixels, x then y, float32 ``[N, 2]``), ``edge_index``
    (``[2, E]``, both directions, no self-loops, coalesced), ``edge_attr``
    (shared boundary length in pixels, float32 ``[E, 1]``; ``[E, 3]`` with
    ``edge_features=True``), ``superpixels``
    (int64 ``[1, H, W]``, labels ``0..N-1``), ``num_nodes``, and ``image`` /
    ``mask`` (int64 ``[1, H, W]``, 255 = ignore) when available.

    Images of different sizes batch with :func:`segmentation.data.loading.pad_collate`
    (``Batch.from_data_list`` alone cannot concatenate their pixel maps).
    """

    def __init__(
        self,
        n_segments: int = 1000,
        compactness: float = 10.0,
        sigma: float = 1.0,
        connectivity: int = 4,
        add_features: bool = True,
        cache_dir: str | os.PathLike | None = None,
        *,
        max_num_iter: int = 10,
        enforce_connectivity: bool = True,
        keep_image: bool = True,
        edge_features: bool = False,
    ) -> None:
        self.n_segments = check_int(n_segments, "n_segments")
        self.compactness = check_number(compactness, "compactness", minimum=0.0, strict=True)
        self.sigma = check_number(sigma, "sigma", minimum=0.0, strict=False)
        if isinstance(connectivity, bool) or connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
        self.connectivity = int(connectivity)
        for name, flag in (
            ("add_features", add_features),
            ("enforce_connectivity", enforce_connectivity),
            ("keep_image", keep_image),
            ("edge_features", edge_features),
        ):
            if not isinstance(flag, bool | np.bool_):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.add_features = bool(add_features)
        self.enforce_connectivity = bool(enforce_connectivity)
        self.keep_image = bool(keep_image)
        self.edge_features = bool(edge_features)
        self.max_num_iter = check_int(max_num_iter, "max_num_iter")
        if cache_dir is not None:
            cache_dir = Path(cache_dir)
            if cache_dir.exists() and not cache_dir.is_dir():
                raise ValueError(f"cache_dir {str(cache_dir)!r} exists and is not a folder")
            cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = cache_dir

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(n_segments={self.n_segments}, "
            f"compactness={self.compactness}, sigma={self.sigma}, "
            f"connectivity={self.connectivity}, add_features={self.add_features}, "
            f"edge_features={self.edge_features}, "
            f"cache_dir={None if self.cache_dir is None else str(self.cache_dir)!r})"
        )

    # ------------------------------------------------------------------ input

    def _unpack(self, data: Any) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """Return (channels-last image, mask or None, extra attributes)."""
        extras: dict[str, Any] = {}
        mask = None
        if isinstance(data, Data):
            if "image" not in data:
                raise ValueError("data must hold the image in data.image ([C, H, W] tensor)")
            image = _channels_last(data.image, "data.image")
            skip = {"image", "mask"}
            mask_name = "data.mask"
            if "mask" in data:
                mask = data.mask
            elif "y" in data and _looks_like_mask(data.y, image.shape[:2]):
                # A pixel map in y is the mask; batching it as y would be wrong.
                mask, mask_name = data.y, "data.y"
                skip.add("y")
            extras = {key: value for key, value in data.items() if key not in skip}
        elif isinstance(data, tuple | list):
            if len(data) != 2:
                raise ValueError(
                    f"a sequence input must be an (image, mask) pair, got {len(data)} items"
                )
            image = _channels_last(data[0], "image")
            mask = data[1]
            mask_name = "mask"
        else:
            image = _channels_last(data, "image")
            mask_name = "mask"
        if mask is not None:
            is_array = isinstance(mask, torch.Tensor | np.ndarray)
            if is_array and mask.ndim == 3 and mask.shape[0] == 1:
                mask = mask[0]
            mask = check_mask(mask, name=mask_name)
            if mask.shape != image.shape[:2]:
                raise ValueError(
                    f"{mask_name} has shape {mask.shape} but the image is "
                    f"{image.shape[0]}×{image.shape[1]}; they must match"
                )
        return image, mask, extras

    # ------------------------------------------------------------------ graph

    def _cache_key(self, image: np.ndarray) -> str:
        digest = hashlib.sha256()
        params = (
            _CACHE_FORMAT,
            skimage.__version__,
            self.n_segments,
            self.compactness,
            self.sigma,
            self.connectivity,
            self.add_features,
            self.max_num_iter,
            self.enforce_connectivity,
            self.edge_features,
            image.dtype.str,
            image.shape,
        )
        digest.update(repr(params).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()

    def _compute(self, image: np.ndarray) -> dict[str, Any]:
        height, width = image.shape[:2]
        if self.n_segments > height * width:
            raise ValueError(
                f"n_segments={self.n_segments} is larger than the number of pixels of the "
                f"{height}×{width} image"
            )
        # The image was checked once, by _unpack, and the parameters by __init__.
        labels = _slic(image, self.n_segments, self.compactness, self.sigma,
                       self.enforce_connectivity, self.max_num_iter)
        return self._graph_from_labels(image, labels)

    def _graph_from_labels(self, image: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        # Everything after SLIC: also rebuilds the graph of an augmented (flipped,
        # scaled, cropped) image from its transformed label map, without SLIC. Both
        # come from this package, checked (the image) or built (the contiguous labels)
        # here: the functions below take them as they are.
        num_segments = int(labels.max()) + 1
        touching = _region_adjacency(labels, num_segments, self.connectivity)
        edge_index, boundary = touching
        superpixels = torch.from_numpy(labels)
        if self.edge_features:
            edge_attr = _edge_features(image, labels, num_segments, edge_index,
                                       self.connectivity, touching)
        else:
            edge_attr = boundary.unsqueeze(1)
        if self.add_features:
            x, pos = _features_and_centroids(image, labels, num_segments)
        else:
            pos = _centroids(labels, num_segments)
            x = pool(_image_tensor(image), superpixels)
        return {
            "x": x,
            "pos": pos,
            "edge_index": edge_index,
            "edge_attr": edge_attr,
            "superpixels": superpixels.unsqueeze(0),
            "num_nodes": int(labels.max()) + 1,
        }

    def _load(self, path: Path, key: str) -> dict[str, Any] | None:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return None
        except Exception as exc:  # corrupt or foreign file: recompute and overwrite
            warnings.warn(f"ignoring unreadable cached graph {str(path)!r} "
                          f"({_unreadable_reason(path, exc)}); building it again",
                          stacklevel=3)
            return None
        if (
            not isinstance(stored, dict)
            or stored.get("key") != key
            or not all(isinstance(stored.get(name), torch.Tensor) for name in _CACHED_TENSORS)
        ):
            warnings.warn(f"ignoring malformed cached graph {str(path)!r} (not a graph of "
                          "this cache, or of another version); building it again", stacklevel=3)
            return None
        graph = {name: stored[name] for name in _CACHED_TENSORS}
        graph["superpixels"] = graph["superpixels"].long()
        graph["num_nodes"] = int(stored["num_nodes"])
        return graph

    def _graph(self, image: np.ndarray) -> dict[str, Any]:
        if self.cache_dir is None:
            return self._compute(image)
        key = self._cache_key(image)
        path = self.cache_dir / f"{key}.pt"
        graph = self._load(path, key)
        if graph is None:
            graph = self._compute(image)
            # The label map is most of a cached graph: stored in the narrowest integer
            # type that holds its labels (2 bytes a pixel below 32,768 superpixels).
            labels = graph["superpixels"]
            narrow = torch.int16 if graph["num_nodes"] <= torch.iinfo(torch.int16).max else (
                torch.int32)
            payload = {**graph, "superpixels": labels.to(narrow), "key": key}
            atomic_write(path, lambda handle: torch.save(payload, handle))
        return graph

    # ---------------------------------------------------------------- forward

    def forward(self, data: Any) -> SuperpixelData:
        """Build the superpixel graph of one image (see the class docstring).

        Parameters
        ----------
        data : Tensor, ndarray, (image, mask) pair or Data

        Returns
        -------
        SuperpixelData

        Raises
        ------
        TypeError, ValueError
            If the image or mask is malformed, their sizes differ, or the image
            has fewer pixels than ``n_segments``.
        """
        image, mask, extras = self._unpack(data)
        return self._data(self._graph(image), image, mask, extras)

    def _data(self, graph: dict[str, Any], image: np.ndarray, mask: np.ndarray | None,
              extras: dict[str, Any] | None = None) -> SuperpixelData:
        # The SuperpixelData of a graph (a dict of tensors), its image and mask.
        out = SuperpixelData(**(extras or {}))
        for key, value in graph.items():
            out[key] = value
        if self.keep_image:
            out.image = _image_tensor(image)
        if mask is not None:
            out.mask = torch.from_numpy(mask.astype(np.int64)).unsqueeze(0)
        return out


def _channels_last(image: Any, name: str) -> np.ndarray:
    # Tensors follow the torchvision / ToSLIC layout [C, H, W], arrays H×W×C.
    if isinstance(image, torch.Tensor):
        if image.dim() == 3 and image.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"{name} is a tensor of shape {tuple(image.shape)}; expected [C, H, W] with "
                "C in {1, 3, 4} (channels first) or [H, W]"
            )
        array = image.detach().cpu().numpy()
        return check_image(array, channel_axis=0, name=name)
    return check_image(image, channel_axis=-1, name=name)


def _looks_like_mask(value: Any, size: tuple[int, int]) -> bool:
    if isinstance(value, torch.Tensor | np.ndarray):
        shape = tuple(value.shape)
        return shape == size or shape == (1, *size)
    return False


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    """Channels-last uint8/float array -> float32 [1, C, H, W] in [0, 1]."""
    # torch cannot share read-only memory (e.g. np.asarray of a PIL image): copy it then.
    image = np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order="C")
    tensor = torch.from_numpy(image)
    tensor = tensor.float() / 255.0 if image.dtype == np.uint8 else tensor.float()
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(-1)
    return tensor.permute(2, 0, 1).unsqueeze(0).contiguous()


def _unreadable_reason(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` failed on a cache file, in words (some of its errors have
    no message: an empty file raises a bare ``EOFError``)."""
    try:
        if path.stat().st_size == 0:
            return "the file is empty, 0 bytes: an interrupted write?"
    except OSError:
        pass
    message = str(exc).strip().splitlines()
    detail = f": {message[0]}" if message else ""
    return f"not a file torch.save wrote, {type(exc).__name__}{detail}"
