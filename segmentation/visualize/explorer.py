"""An interactive update-order explorer: one self-contained HTML page per image.

:func:`order_explorer` writes everything a browser needs into one HTML file:
the image (PNG, base64), the superpixel label map (run-length encoded), the
region adjacency graph, and for every update order the rank, level and score
of each superpixel; with a trained model also the predicted class and
confidence per superpixel and the Jacobian norms of chosen targets. The
script is inline; the page loads nothing from the network and needs no
server. :func:`lattice_explorer` does the same for the MD-LSTM scans of a 2-D
lattice, one order per scan direction.

In the page a person hovers a superpixel (index, rank, level, score, class),
clicks one to see its **reach** (the superpixels whose input can change its
output: :func:`graphlstm.reachable`, computed in the page from the embedded
edges and ranks, for one layer or for ``L`` layers that pass their state on)
together with the superpixels updated before it, plays the levels in order,
and switches orders to see the same superpixel's reach change.

Scripting face
--------------
The page defines ``window.explorer`` (``ready`` is ``true`` once drawn):

- ``select(t, {order, layers})``: click superpixel ``t`` (optionally in that
  order, switching to it, with that many layers); returns ``highlighted()``;
- ``highlighted()``: the sorted indices of the highlighted reach (empty
  without a selection); ``before()``: those updated before the target;
- ``setLevel(k)``: fill the levels ``< k``; ``filled()``: the sorted indices
  shown as updated;
- ``orders``: the order names; ``setOrder(name)``; ``clear()``;
- ``ranks(order)``, ``levels(order)``: per-superpixel arrays as embedded;
  ``edges(order)``: the ``[2, E]`` edge list (``[sources, targets]``) as
  embedded (lattice scans have one graph per direction; without ``order``,
  the first order's);
- ``timing``: milliseconds of ``ready`` (navigation start to the first
  drawing), ``select`` (the last selection: reach computed and picture
  redrawn), ``click`` (the last click's input event to its picture redrawn)
  and ``frame`` (that event to the next animation frame).

Data layout
-----------
The data sit in ``<script type="application/json" id="explorer-data">``.
Arrays are ``{"dtype": D, "shape": [...], "b64": ...}``: little-endian
``D`` in ``u8, u16, u32, i32, f32`` (the smallest that holds the values),
base64-encoded. The label map is ``labels.values`` / ``labels.lengths``, the
runs of the row-major label map at the displayed size. A 1,000-superpixel
512×512 photograph gives a file of about 0.75 MB, nearly all of it the PNG.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
import numbers
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from segmentation.data.images import atomic_write
from segmentation.visualize._common import _as_numpy, _labels, _node_values, _rgb_uint8

__all__ = [
    "OrderExplorer",
    "lattice_explorer",
    "model_annotations",
    "order_explorer",
    "pack_array",
    "superpixel_majority",
    "superpixel_means",
    "unpack_array",
]

HTML_FORMATS = (".html", ".htm")
DEFAULT_MAX_SIDE = 1024
_LATTICE_CELL = 40  # pixels per lattice cell side in the page
_MAX_LAYERS = 16  # the page's layer control goes up to this


class OrderExplorer:
    """A self-contained HTML page; shows itself inline in Jupyter.

    Attributes
    ----------
    html : str
        The whole page.
    data : dict
        The embedded data (see the module docstring), as a JSON-ready dict.
    """

    def __init__(self, html: str, data: dict):
        self.html = html
        self.data = data

    @property
    def num_bytes(self) -> int:
        """Size of the page in bytes (UTF-8)."""
        return len(self.html.encode("utf-8"))

    def save(self, path) -> Path:
        """Write the page to ``path`` (``.html`` or ``.htm``) atomically.

        Raises
        ------
        TypeError, ValueError
            For a path that is not a string or path-like, another suffix, or
            a missing folder.
        """
        if not isinstance(path, str | Path) and not hasattr(path, "__fspath__"):
            raise TypeError(f"'path' must be a file path, got {type(path).__name__}")
        path = Path(path)
        if path.suffix.lower() not in HTML_FORMATS:
            raise ValueError(f"'path' {str(path)!r} must end in .html or .htm")
        if not path.parent.is_dir():
            raise ValueError(f"folder {str(path.parent)!r} of 'path' {str(path)!r} does not exist")
        payload = self.html.encode("utf-8")
        return atomic_write(path, lambda handle: handle.write(payload))

    def _repr_html_(self) -> str:
        # An iframe keeps the page's script and styles apart from the notebook's.
        height = int(self.data["height"]) + 260
        return (f'<iframe srcdoc="{html_lib.escape(self.html, quote=True)}" '
                f'style="width:100%;height:{height}px;border:0" '
                f'sandbox="allow-scripts"></iframe>')

    def __repr__(self) -> str:
        names = ", ".join(order["name"] for order in self.data["orders"])
        return (f"OrderExplorer({self.data['num_nodes']} nodes, orders: {names}, "
                f"{self.num_bytes / 1e6:.2f} MB)")


# -- encoding -----------------------------------------------------------------------------

def pack_array(values) -> dict:
    """A numeric array as ``{"dtype", "shape", "b64"}`` (little-endian, smallest dtype)."""
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.floating):
        dtype = "f32"
    elif array.size == 0 or array.min() >= 0:
        top = int(array.max()) if array.size else 0
        dtype = "u8" if top < 2**8 else "u16" if top < 2**16 else "u32"
    else:
        dtype = "i32"
    numpy_dtype = {"u8": "<u1", "u16": "<u2", "u32": "<u4", "i32": "<i4", "f32": "<f4"}[dtype]
    raw = np.ascontiguousarray(array, dtype=numpy_dtype).tobytes()
    return {"dtype": dtype, "shape": list(array.shape), "b64": base64.b64encode(raw).decode()}


def unpack_array(packed: Mapping) -> np.ndarray:
    """The inverse of :func:`pack_array`."""
    numpy_dtype = {"u8": "<u1", "u16": "<u2", "u32": "<u4", "i32": "<i4",
                   "f32": "<f4"}[packed["dtype"]]
    return np.frombuffer(base64.b64decode(packed["b64"]), dtype=numpy_dtype).reshape(
        packed["shape"])


def _run_lengths(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of the row-major label map: values and lengths (runs cut at 65535)."""
    flat = labels.reshape(-1)
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    lengths = np.diff(np.append(starts, flat.size))
    values = flat[starts]
    if lengths.size and lengths.max() >= 2**16:
        pieces = -(-lengths // (2**16 - 1))
        values = np.repeat(values, pieces)
        split = np.full(int(pieces.sum()), 2**16 - 1, dtype=np.int64)
        last = np.cumsum(pieces) - 1
        split[last] = lengths - (pieces - 1) * (2**16 - 1)
        lengths = split
    return values, lengths


def _png_data_url(rgb: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _downscale(rgb: np.ndarray, labels: np.ndarray, max_side: int):
    """Image (box filter) and label map (nearest) with the longer side <= ``max_side``."""
    from PIL import Image

    height, width = labels.shape
    scale = max_side / max(height, width)
    if scale >= 1:
        return rgb, labels
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    rows = np.minimum(((np.arange(size[1]) + 0.5) / scale).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[0]) + 0.5) / scale).astype(np.int64), width - 1)
    return small, labels[np.ix_(rows, cols)]


def _viridis_lut(num: int = 64) -> list[str]:
    import matplotlib

    colors = matplotlib.colormaps["viridis"](np.linspace(0, 1, num))[:, :3]
    return [_hex(np.rint(255 * rgb)) for rgb in colors]


def _class_palette(num: int) -> list[str]:
    from segmentation.data.images import VOC_PALETTE

    palette = np.asarray(VOC_PALETTE)
    return [_hex(palette[k % len(palette)]) for k in range(num)]


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def _page(data: dict, title: str) -> str:
    template = resources.files("segmentation.visualize").joinpath(
        "explorer_template.html").read_text(encoding="utf-8")
    # "</" inside a script element would end it early.
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (template.replace("__TITLE__", html_lib.escape(title))
            .replace("__DATA__", payload))


# -- checks -------------------------------------------------------------------------------

def _check_layers(layers) -> int:
    if isinstance(layers, bool) or not isinstance(layers, numbers.Integral):
        raise TypeError(f"'layers' must be a positive int, got {layers!r}")
    if not 1 <= layers <= _MAX_LAYERS:
        raise ValueError(f"'layers' must be in 1..{_MAX_LAYERS}, got {layers}")
    return int(layers)


def _check_edge_index(edge_index, num_nodes: int) -> np.ndarray:
    if not isinstance(edge_index, torch.Tensor | np.ndarray):
        raise TypeError(f"'edge_index' must be a [2, E] tensor, got {type(edge_index).__name__}")
    edges = _as_numpy(edge_index)
    if not np.issubdtype(edges.dtype, np.integer) or edges.ndim != 2 or edges.shape[0] != 2:
        raise ValueError(f"'edge_index' must be an integer [2, E] array, got "
                         f"{edges.dtype} of shape {list(edges.shape)}")
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        raise ValueError(f"'edge_index' holds nodes outside 0..{num_nodes - 1}")
    return edges.astype(np.int64)


def _order_entry(name, spec, edge_index: torch.Tensor, num_nodes: int) -> dict:
    from graphlstm.schedule import Schedule, build_schedule

    if not isinstance(name, str) or not name:
        raise TypeError(f"'orders' must map non-empty names to scores, got the key {name!r}")
    score = None
    if isinstance(spec, Schedule):
        schedule = spec.to("cpu")
        if schedule.num_nodes != num_nodes:
            raise ValueError(f"'orders'[{name!r}] has {schedule.num_nodes} nodes but the "
                             f"superpixels are {num_nodes}")
        schedule.check_graph(num_nodes, edge_index, f"orders[{name!r}]")
    else:
        score = _node_values(spec, num_nodes, f"orders[{name!r}]")
        schedule = build_schedule(edge_index, num_nodes, score=torch.from_numpy(score))
    entry = {"name": name, "ranks": pack_array(schedule.rank.numpy()),
             "levels": pack_array(schedule.level.numpy()),
             "num_levels": int(schedule.num_levels), "scores": None}
    if score is not None:
        entry["scores"] = pack_array(score.astype(np.float32))
    return entry


def _influence_entries(influence, names: Sequence[str], num_nodes: int) -> dict:
    if influence is None:
        return {}
    if not isinstance(influence, Mapping):
        raise TypeError("'influence' must map order names to {target: norms}, got "
                        f"{type(influence).__name__}")
    out = {}
    for name, per_target in influence.items():
        if name not in names:
            raise ValueError(f"'influence' names the order {name!r}, not one of {list(names)}")
        if not isinstance(per_target, Mapping):
            raise TypeError(f"'influence'[{name!r}] must map targets to norms")
        entries = {}
        for target, norms in per_target.items():
            if isinstance(target, bool) or not isinstance(target, numbers.Integral) or not (
                    0 <= target < num_nodes):
                raise ValueError(f"'influence'[{name!r}] has the target {target!r}, not a "
                                 f"superpixel in 0..{num_nodes - 1}")
            values = _node_values(norms, num_nodes, f"influence[{name!r}][{target}]")
            if values.min() < 0:
                raise ValueError(f"'influence'[{name!r}][{target}] must be non-negative norms")
            entries[str(int(target))] = pack_array(values.astype(np.float32))
        out[name] = entries
    return out


# -- pages --------------------------------------------------------------------------------

def order_explorer(image, superpixels, edge_index, orders: Mapping, *, layers: int = 1,
                   classes=None, class_names: Sequence[str] | None = None, confidence=None,
                   influence: Mapping | None = None, selected: int | None = None,
                   title: str | None = None, max_side: int = DEFAULT_MAX_SIDE) -> OrderExplorer:
    """The interactive update-order page of one image.

    Parameters
    ----------
    image : ndarray ``H×W×3`` (or ``H×W``), uint8 or float in [0, 1]
    superpixels : ndarray or Tensor ``H×W`` of int
        Label map ``0..N-1``.
    edge_index : LongTensor ``[2, E]``
        The superpixel graph (``edge_index[0] -> edge_index[1]``), e.g. from
        :func:`segmentation.region_adjacency`.
    orders : mapping of str to Tensor ``[N]`` or :class:`graphlstm.Schedule`
        The update orders to show, by name, in this order: a score per
        superpixel (higher first, ties by the smaller index, as in
        :func:`graphlstm.build_schedule`), or a schedule built on this graph.
    layers : int, optional
        The number of layers the page starts with (its reach passes the state
        on from layer to layer, as in :func:`graphlstm.reachable`). At most 16.
    classes : array ``[N]`` of int, optional
        Predicted class per superpixel (shown when hovering).
    class_names : sequence of str, optional
        Names of the classes (default ``class_0, class_1, ...``).
    confidence : array ``[N]`` of float, optional
        A model's confidence per superpixel.
    influence : mapping, optional
        ``{order name: {target: norms [N]}}``: Jacobian norms of the output at
        ``target`` with respect to every node input
        (:func:`segmentation.influence.node_influence`), shaded when that
        target is selected in that order.
    selected : int, optional
        A superpixel selected when the page opens.
    title : str, optional
    max_side : int, optional
        The image and the label map are shrunk (box filter, nearest label)
        so that their longer side is at most this many pixels.

    Returns
    -------
    OrderExplorer

    Raises
    ------
    TypeError, ValueError
        For malformed or mismatched arguments (the message names the argument).
    """
    labels, num = _labels(superpixels)
    if not hasattr(image, "shape") or tuple(image.shape[:2]) != labels.shape:
        shape = getattr(image, "shape", None)
        raise ValueError(f"'image' has shape {shape} but 'superpixels' is {labels.shape} "
                         "(they must cover the same pixels)")
    rgb = _rgb_uint8(image)
    if isinstance(max_side, bool) or not isinstance(max_side, numbers.Integral) or max_side < 16:
        raise ValueError(f"'max_side' must be an int >= 16, got {max_side!r}")
    edges = _check_edge_index(edge_index, num)
    if not isinstance(orders, Mapping) or len(orders) == 0:
        raise TypeError("'orders' must be a non-empty mapping of names to scores or schedules")
    layers = _check_layers(layers)
    if selected is not None and (isinstance(selected, bool) or not isinstance(
            selected, numbers.Integral) or not 0 <= selected < num):
        raise ValueError(f"'selected' must be a superpixel in 0..{num - 1}, got {selected!r}")
    edge_tensor = torch.from_numpy(edges)
    entries = [_order_entry(name, spec, edge_tensor, num) for name, spec in orders.items()]
    nodes = {}
    if classes is not None:
        classes = _node_values(classes, num, "classes", integer=True)
        count = int(classes.max()) + 1 if classes.size else 0
        if class_names is None:
            class_names = [f"class_{k}" for k in range(count)]
        class_names = [str(name) for name in class_names]
        if len(class_names) < count:
            raise ValueError(f"'class_names' has {len(class_names)} names but 'classes' "
                             f"goes up to {count - 1}")
        nodes["classes"] = pack_array(classes)
        nodes["class_names"] = class_names
        nodes["class_colors"] = _class_palette(len(class_names))
    elif class_names is not None:
        raise ValueError("'class_names' needs 'classes'")
    if confidence is not None:
        nodes["confidence"] = pack_array(
            _node_values(confidence, num, "confidence").astype(np.float32))
    small_rgb, small_labels = _downscale(rgb, labels, int(max_side))
    values, lengths = _run_lengths(small_labels)
    data = {
        "version": 1,
        "mode": "superpixels",
        "title": title or f"Update orders of {num} superpixels",
        "width": int(small_labels.shape[1]),
        "height": int(small_labels.shape[0]),
        "source_size": [int(labels.shape[0]), int(labels.shape[1])],
        "image": _png_data_url(small_rgb),
        "labels": {"values": pack_array(values), "lengths": pack_array(lengths)},
        "num_nodes": num,
        "edges": pack_array(edges),
        "orders": entries,
        "layers": layers,
        "max_layers": _MAX_LAYERS,
        "selected": None if selected is None else int(selected),
        "nodes": nodes,
        "influence": _influence_entries(influence, [e["name"] for e in entries], num),
        "viridis": _viridis_lut(),
        "lattice": None,
    }
    return OrderExplorer(_page(data, data["title"]), data)


def lattice_explorer(shape, directions=(0, 1, 2, 3), *, layers: int = 1,
                     cell: int = _LATTICE_CELL, title: str | None = None) -> OrderExplorer:
    """The page of MD-LSTM scans of a 2-D lattice, one order per scan direction.

    Each direction is :func:`graphlstm.lattice.lattice_graph` in its raster
    order: the levels are the anti-diagonal wavefronts, and the reach of a
    cell is the rectangle between it and the corner the scan starts from.
    The page's ``edges(order)`` gives each direction's own directed graph.

    Parameters
    ----------
    shape : (int, int)
        Rows and columns, at most 10,000 cells.
    directions : sequence of int, optional
        Scan directions in ``0..3`` (bit 0: rows bottom-up, bit 1: columns
        right to left).
    layers : int, optional
        The number of stacked layers the page starts with.
    cell : int, optional
        Pixels per cell side (shrunk so that the picture is at most 1024 wide).
    title : str, optional

    Returns
    -------
    OrderExplorer
    """
    from graphlstm.lattice import check_direction, check_shape, lattice_graph
    from graphlstm.schedule import build_schedule

    shape = check_shape(shape, "shape")
    if len(shape) != 2:
        raise ValueError(f"'shape' must be 2-D (rows, columns), got {shape}")
    rows, cols = shape
    if rows * cols > 10_000:
        raise ValueError(f"'shape' {shape} has more than 10000 cells")
    if isinstance(directions, numbers.Integral) and not isinstance(directions, bool):
        directions = (directions,)
    if not isinstance(directions, Sequence) or isinstance(directions, str) or not directions:
        raise TypeError(f"'directions' must be a non-empty sequence of ints, got {directions!r}")
    directions = [check_direction(d, 2, "directions") for d in directions]
    if len(set(directions)) != len(directions):
        raise ValueError(f"'directions' must not repeat a direction, got {directions}")
    if isinstance(cell, bool) or not isinstance(cell, numbers.Integral) or cell < 4:
        raise ValueError(f"'cell' must be an int >= 4, got {cell!r}")
    layers = _check_layers(layers)
    cell = int(max(4, min(cell, DEFAULT_MAX_SIDE // max(rows, cols))))
    labels = np.arange(rows * cols).reshape(rows, cols)
    labels = np.repeat(np.repeat(labels, cell, axis=0), cell, axis=1)
    entries = []
    for direction in directions:
        edge_index, _, order = lattice_graph(shape, direction)
        schedule = build_schedule(edge_index, rows * cols, order=order)
        entries.append({
            "name": f"direction {direction}",
            "ranks": pack_array(schedule.rank.numpy()),
            "levels": pack_array(schedule.level.numpy()),
            "num_levels": int(schedule.num_levels), "scores": None,
            "edges": pack_array(edge_index.numpy()),
        })
    undirected, _, _ = lattice_graph(shape, 0)
    undirected = torch.cat([undirected, undirected.flip(0)], dim=1)
    values, lengths = _run_lengths(labels)
    picture = np.full(labels.shape + (3,), 250, dtype=np.uint8)
    data = {
        "version": 1,
        "mode": "lattice",
        "title": title or f"MD-LSTM scans of a {rows}×{cols} lattice",
        "width": int(labels.shape[1]),
        "height": int(labels.shape[0]),
        "source_size": [rows, cols],
        "image": _png_data_url(picture),
        "labels": {"values": pack_array(values), "lengths": pack_array(lengths)},
        "num_nodes": rows * cols,
        "edges": pack_array(undirected.numpy()),
        "orders": entries,
        "layers": layers,
        "max_layers": _MAX_LAYERS,
        "selected": None,
        "nodes": {},
        "influence": {},
        "viridis": _viridis_lut(),
        "lattice": {"rows": rows, "cols": cols},
    }
    return OrderExplorer(_page(data, data["title"]), data)


def superpixel_means(pixel_values, superpixels, num_nodes: int) -> np.ndarray:
    """The mean of a per-pixel ``H×W`` array over each superpixel."""
    labels = np.asarray(superpixels).reshape(-1)
    values = np.asarray(pixel_values, dtype=np.float64).reshape(-1)
    counts = np.bincount(labels, minlength=num_nodes)
    return np.bincount(labels, weights=values, minlength=num_nodes) / np.maximum(counts, 1)


def superpixel_majority(pixel_classes, superpixels, num_nodes: int) -> np.ndarray:
    """The most frequent class of a per-pixel ``H×W`` class map in each superpixel."""
    labels = np.asarray(superpixels).reshape(-1).astype(np.int64)
    classes = np.asarray(pixel_classes).reshape(-1).astype(np.int64)
    num_classes = int(classes.max()) + 1 if classes.size else 1
    counts = np.bincount(labels * num_classes + classes, minlength=num_nodes * num_classes)
    return counts.reshape(num_nodes, num_classes).argmax(axis=1)


def model_annotations(segmenter, image, prediction, scores: Mapping,
                      target: int | None = None) -> dict:
    """What a trained model adds to a page: keyword arguments of :func:`order_explorer`.

    Parameters
    ----------
    segmenter : segmentation.pipeline.Segmenter
    image : ndarray
        The image ``prediction`` was made from.
    prediction : segmentation.pipeline.Prediction
        ``segmenter.predict(image)``; its superpixels are the page's.
    scores : mapping of str to Tensor ``[N]``
        The page's orders as scores (higher first).
    target : int, optional
        A superpixel whose Jacobian norms (:func:`segmentation.influence.node_influence`,
        one backward pass per class) are computed in every order.

    Returns
    -------
    dict
        ``layers`` (the model's Graph LSTM layers, at least 1), ``classes`` (the
        majority predicted class of each superpixel's pixels), ``class_names``,
        ``confidence`` (the mean over its pixels) and, with ``target`` and a model
        with Graph LSTM layers, ``influence``.
    """
    superpixels = np.asarray(prediction.superpixels)
    num = int(superpixels.max()) + 1
    graph_layers = segmenter.model.config.graph_layers
    out = {
        "layers": max(1, graph_layers),
        "classes": superpixel_majority(prediction.labels, superpixels, num),
        "class_names": segmenter.class_names,
        "confidence": superpixel_means(prediction.confidence, superpixels, num),
    }
    if target is not None and graph_layers > 0:
        from segmentation.analysis.influence import node_influence

        graph = segmenter.transform(image)
        out["influence"] = {
            name: {target: node_influence(segmenter.model, graph, target, score)[0]}
            for name, score in scores.items()}
    return out
