"""Segmenting many images: checked first, then streamed, batched, parallel and resumable.

:func:`segment_files` is what ``scripts/segment.py`` runs. In the manner of
the inference tools of torchvision's references and mmsegmentation:

1. **Plan.** The images are listed (:func:`list_images`) and cut into
   batches of ``batch_size`` consecutive images; under ``torchrun`` process
   ``r`` of ``N`` takes batches ``r, r + N, r + 2N, ...`` (so every process
   sees exactly the batches one process would, and the results do not depend
   on the number of processes). With ``skip_existing``, images whose outputs
   are all present are dropped.
2. **Check.** Every image still to do is opened far enough to read its
   header and size (:func:`probe_image`, no pixels decoded); one that does
   not open fails the run with one message naming it, before anything is
   written (under ``torchrun`` every process stops).
3. **Stream.** ``DataLoader`` workers read, decode and build the superpixel
   graph of the next images while the main process runs the model on a batch
   (images of one size share a forward pass, unpadded) and writes its
   outputs, each atomically; then the batch is dropped. Memory is that of a
   few batches whatever the number of images.
4. **Summary.** ``summary.json`` and ``summary.csv`` (one row per image:
   file, size, superpixels, levels, seconds per stage), merged over the
   processes and written by rank 0.

Labels do not depend on the batch size, the workers or the number of
processes: see :meth:`segmentation.inference.predictor.Segmenter.predict_graphs`.
"""

from __future__ import annotations

import csv
import io
import json
import numbers
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from segmentation.data.images import VOC_PALETTE, atomic_write, read_image, write_mask_png
from segmentation.data.transforms import SuperpixelData, SuperpixelGraph
from segmentation.engine.distributed import (
    get_rank,
    get_world_size,
    is_dist_avail_and_initialized,
    process_batches,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "SUMMARY_COLUMNS",
    "ImageFiles",
    "LoadedImage",
    "list_images",
    "output_paths",
    "probe_image",
    "segment_files",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: The files written for an image ``NAME.ext``: ``NAME`` + suffix, in the output folder.
OUTPUT_SUFFIXES = {
    "labels": "_labels.png",
    "overlay": "_overlay.png",
    "probabilities": "_probabilities.npz",
}

#: Columns of ``summary.csv`` (and keys of the rows of ``summary.json``).
SUMMARY_COLUMNS = (
    "file", "height", "width", "superpixels", "levels", "seconds",
    "read_seconds", "superpixel_seconds", "model_seconds", "write_seconds",
)

_STAGES = ("read", "superpixel", "model", "write")


def list_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files named directly or found (non-recursively) in named folders.

    Folders contribute their files with a suffix of :data:`IMAGE_SUFFIXES`,
    sorted by name; named files are taken as they are (and checked later).

    Raises
    ------
    ValueError
        If a path does not exist, a folder holds no images, or two images
        share a name (their outputs would clash).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise ValueError(
                    f"folder {str(p)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})"
                )
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ValueError(f"image {str(p)!r} does not exist")
    if not files:
        raise ValueError("no images given")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise ValueError(
                f"two input images share the name {f.stem!r} ({str(seen[f.stem])!r} and "
                f"{str(f)!r}); their outputs would clash"
            )
        seen[f.stem] = f
    return files


def output_paths(
    out_dir: str | os.PathLike, image: str | os.PathLike, overlay: bool = True,
    probabilities: bool = False,
) -> dict[str, Path]:
    """The output files of ``image``: ``labels`` always, ``overlay``, ``probabilities``."""
    stem, out_dir = Path(image).stem, Path(out_dir)
    kinds = ["labels"] + ["overlay"] * overlay + ["probabilities"] * probabilities
    return {kind: out_dir / f"{stem}{OUTPUT_SUFFIXES[kind]}" for kind in kinds}


def probe_image(path: str | os.PathLike, min_pixels: int = 2) -> tuple[int, int]:
    """Check that a file opens as an image, from its header; return ``(height, width)``.

    No pixels are decoded (Pillow reads the header; for formats with
    checksums, such as PNG, :meth:`PIL.Image.Image.verify` checks the chunks).
    A file that is corrupt further in (a truncated JPEG) is reported when it
    is decoded.

    Raises
    ------
    ValueError
        If the file does not open as an image, or has fewer than
        ``min_pixels`` pixels; the message names the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image file {str(path)!r}: {exc}") from exc
    if height * width < min_pixels:
        raise ValueError(
            f"image file {str(path)!r} is {width}×{height} = {width * height} pixels; the "
            f"model's superpixel settings need at least {min_pixels} (n_segments)"
        )
    return height, width


class LoadedImage(NamedTuple):
    """An item of :class:`ImageFiles`."""

    index: int
    image: np.ndarray  # H×W×3 uint8
    graph: SuperpixelData
    read_seconds: float
    superpixel_seconds: float


class ImageFiles(Dataset):
    """Images read from files and their superpixel graphs, built when asked for.

    Item ``i`` decodes ``files[i]`` (:func:`segmentation.data.images.read_image`)
    and builds its graph with ``transform``; in ``DataLoader`` workers, this
    happens while the main process runs the model. Nothing is kept between
    items.

    Parameters
    ----------
    files : sequence of path
    transform : SuperpixelGraph
        With ``keep_image=True`` (the model needs ``graph.image``).
    """

    def __init__(self, files: Sequence[str | os.PathLike], transform: SuperpixelGraph) -> None:
        if not isinstance(transform, SuperpixelGraph) or not transform.keep_image:
            raise TypeError("transform must be a SuperpixelGraph with keep_image=True")
        self.files = [Path(f) for f in files]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> LoadedImage:
        start = time.perf_counter()
        image = read_image(self.files[index])
        read = time.perf_counter()
        graph = self.transform(image)
        seconds = time.perf_counter() - read
        _release_freed_memory()  # SLIC's buffers, in the worker that ran it
        return LoadedImage(index, image, graph, read - start, seconds)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _remove_stale_temporaries(out_dir: Path, names: set[str]) -> int:
    """Remove temporary files that a killed run left for the outputs ``names``.

    :func:`segmentation.data.images.atomic_path` writes ``.NAME.XXXXXXXX.tmp``
    beside ``NAME`` and renames it; a process killed by a signal it cannot
    catch (``SIGKILL``) leaves it behind. Only temporaries of the outputs of
    this process's own images are removed, so other processes' writes in
    progress are untouched.
    """
    removed = 0
    with os.scandir(out_dir) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            target = name[1:-len(".tmp")].rpartition(".")[0]
            if target in names:
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def _write_outputs(
    paths: dict[str, Path], image: np.ndarray, probabilities: torch.Tensor,
    labels: np.ndarray, superpixels: np.ndarray, alpha: float, class_names: Sequence[str],
) -> None:
    from segmentation.inference.predictor import overlay

    write_mask_png(paths["labels"], labels)
    if "overlay" in paths:
        blended = overlay(image, labels, VOC_PALETTE, alpha, superpixels)
        buffer = io.BytesIO()
        Image.fromarray(blended).save(buffer, format="PNG")
        atomic_write(paths["overlay"], lambda handle: handle.write(buffer.getvalue()))
    if "probabilities" in paths:
        half = probabilities.to(torch.float16).numpy()
        names = np.array(list(class_names), dtype=np.str_)
        atomic_write(paths["probabilities"],
                     lambda handle: np.savez_compressed(handle, probabilities=half,
                                                        class_names=names))


def _summary_row(path: Path, height: int, width: int, superpixels: int, levels: int,
                 stages: dict[str, float]) -> dict:
    row = {"file": str(path), "height": height, "width": width, "superpixels": superpixels,
           "levels": levels, "seconds": round(sum(stages.values()), 6)}
    row.update({f"{stage}_seconds": round(stages[stage], 6) for stage in _STAGES})
    return row


def _write_summary(out_dir: Path, summary: dict) -> None:
    text = json.dumps(summary, indent=1).encode()
    atomic_write(out_dir / "summary.json", lambda handle: handle.write(text))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary["files"])
    data = buffer.getvalue().encode()
    atomic_write(out_dir / "summary.csv", lambda handle: handle.write(data))


def segment_files(
    checkpoint: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    alpha: float = 0.5,
    *,
    batch_size: int = 1,
    workers: int = 0,
    skip_existing: bool = False,
    overlay: bool = True,
    save_probabilities: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Segment image files with a checkpoint; write their outputs and a summary.

    For every image ``NAME.ext``, in ``out_dir``: ``NAME_labels.png`` (palette
    PNG of the class indices), ``NAME_overlay.png`` (the image with the class
    colours and superpixel boundaries; not with ``overlay=False``) and, with
    ``save_probabilities``, ``NAME_probabilities.npz`` (``probabilities``:
    float16 ``[K, H, W]``, ``class_names``; ``np.savez_compressed``). Then
    ``summary.json`` and ``summary.csv``. See the module docstring for the
    order of the work.

    Parameters
    ----------
    checkpoint : path
        Written by :func:`segmentation.engine.train.train`.
    images : sequence of path
        Image files and folders of images (see :func:`list_images`).
    out_dir : path
        Created if missing.
    device : str or torch.device
        Where the model runs; under ``torchrun`` the device of this process.
    alpha : float
        Opacity of the class colours in the overlay, in ``[0, 1]``.
    batch_size : int
        Images per forward pass (images of one size share it).
    workers : int
        ``DataLoader`` processes that decode images and build their graphs
        (0: the main process does it between batches).
    skip_existing : bool
        Skip images whose outputs (those this call would write) all exist;
        rerunning a stopped command this way finishes it.
    overlay, save_probabilities : bool
        Which outputs besides the label PNG to write.
    progress : bool
        A progress bar with the rate and the time left (on rank 0, on a
        terminal).
    log : callable, optional
        Gets a line saying what is skipped and what is done (rank 0).

    Returns
    -------
    dict
        The summary written to ``summary.json`` (every process returns the
        merged one): ``images`` segmented, ``skipped``, ``seconds`` (wall
        time), ``images_per_second``, ``stage_seconds`` (summed over the
        images), ``recomputed_alone`` and ``files`` (one row per segmented
        image, columns :data:`SUMMARY_COLUMNS`, in input order).

    Raises
    ------
    ValueError
        If the checkpoint or an option is invalid, a path does not exist, or
        an image does not open (before anything is written) or does not
        decode (outputs of the images before it stay, complete).
    """
    from segmentation.inference.predictor import load_segmenter

    batch_size = _check_int(batch_size, "batch_size", 1)
    workers = _check_int(workers, "workers", 0)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (
        0.0 <= float(alpha) <= 1.0
    ):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    started = time.perf_counter()
    rank, world_size = get_rank(), get_world_size()
    files = list_images(images)
    segmenter = load_segmenter(checkpoint, device)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output folder {str(out_dir)!r} exists and is not a folder")

    # Batches of consecutive images; this process's share of them.
    batches = process_batches(len(files), batch_size)
    mine = [i for batch in batches for i in batch]

    def outputs(i: int) -> dict[str, Path]:
        return output_paths(out_dir, files[i], overlay, save_probabilities)

    done = {i for i in mine if skip_existing and all(p.is_file() for p in outputs(i).values())}
    batches = [[i for i in batch if i not in done] for batch in batches]
    batches = [batch for batch in batches if batch]
    todo = [i for batch in batches for i in batch]

    # The header of every image to do, before anything is written (by any process).
    min_pixels = max(2, segmenter.transform.n_segments)
    error = None
    try:
        for i in todo:
            probe_image(files[i], min_pixels)
    except ValueError as err:
        error = err
    messages = [m for m in _all_gather(None if error is None else str(error)) if m]
    if error is not None:
        raise error
    if messages:
        raise ValueError(messages[0])

    out_dir.mkdir(parents=True, exist_ok=True)
    # Temporaries of every kind of output, also those this call does not write.
    _remove_stale_temporaries(out_dir, {p.name for i in mine
                                        for p in output_paths(out_dir, files[i], True, True)
                                        .values()})
    if log is not None and rank == 0:
        share = "" if world_size == 1 else f" (rank 0 of {world_size} processes)"
        log(f"{len(files)} images; {len(todo)} to segment{share}"
            + (f", {len(done)} done already" if skip_existing else ""))

    dataset = ImageFiles([files[i] for i in todo], segmenter.transform)
    position = {index: k for k, index in enumerate(todo)}
    loader = DataLoader(dataset, batch_sampler=[[position[i] for i in b] for b in batches],
                        num_workers=workers, collate_fn=list,
                        pin_memory=segmenter.device.type == "cuda")
    bar = _progress_bar(len(todo), progress and rank == 0, rank, world_size)
    rows, recomputed = [], 0
    try:
        for items in loader if todo else ():  # no worker start-up when all are done
            start = time.perf_counter()
            predictions = segmenter.predict_graphs([item.graph for item in items])
            model_seconds = (time.perf_counter() - start) / len(items)
            for item, pred in zip(items, predictions, strict=True):
                recomputed += pred.recomputed_alone
                index = todo[item.index]
                write_start = time.perf_counter()
                superpixels = item.graph.superpixels[0].numpy()
                _write_outputs(outputs(index), item.image, pred.probabilities,
                               pred.labels, superpixels, alpha, segmenter.class_names)
                stages = {"read": item.read_seconds, "superpixel": item.superpixel_seconds,
                          "model": model_seconds, "write": time.perf_counter() - write_start}
                height, width = superpixels.shape
                rows.append((index, _summary_row(files[index], height, width,
                                                 item.graph.num_nodes, pred.levels, stages)))
                bar.update(1)
            del items, predictions, item, pred, superpixels  # the batch, before trimming
            _release_freed_memory()
    finally:
        bar.close()

    # Every process's rows; waiting for the last process, so the wall time is the job's.
    shares = _all_gather({"rows": rows, "skipped": len(done), "recomputed": recomputed})
    seconds = time.perf_counter() - started
    rows = sorted((pair for share in shares for pair in share["rows"]), key=lambda p: p[0])
    file_rows = [row for _, row in rows]
    stage_seconds = {stage: round(sum(r[f"{stage}_seconds"] for r in file_rows), 6)
                     for stage in _STAGES}
    summary = {
        "checkpoint": str(checkpoint),
        "out": str(out_dir),
        "device": str(segmenter.device),
        "processes": world_size,
        "batch_size": batch_size,
        "workers": workers,
        "images": len(file_rows),
        "skipped": sum(share["skipped"] for share in shares),
        "seconds": round(seconds, 6),
        "images_per_second": round(len(file_rows) / seconds, 6) if seconds > 0 else None,
        "stage_seconds": stage_seconds,
        "recomputed_alone": sum(share["recomputed"] for share in shares),
        "files": file_rows,
    }
    if rank == 0:
        _write_summary(out_dir, summary)
    return summary


def _all_gather(value: Any) -> list:
    """``value`` of every process, in rank order (``[value]`` without a process group)."""
    if not is_dist_avail_and_initialized():
        return [value]
    gathered: list = [None] * get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def _release_freed_memory() -> None:
    """Give the heap memory freed since the last call back to the operating system.

    glibc keeps the memory of the large tensors of a forward pass that it
    served from its heap, and its heap creeps from image to image (measured
    at 1024×768: resident memory between images 497 -> 524 MiB over 8 images
    without this, a flat 441 MiB with it). ``malloc_trim`` returns it; on
    other C libraries this does nothing.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, show: bool, rank: int, world_size: int):
    if not show:
        return _NoBar()
    from tqdm import tqdm

    desc = "segment" if world_size == 1 else f"segment (rank 0 of {world_size})"
    # disable=None: shown on a terminal only, so logs and pipes stay clean.
    return tqdm(total=total, desc=desc, unit="img", disable=None, dynamic_ncols=True)
