"""Benchmarks of segmenting folders of images, for ``python -m benchmarks.run``.

- :func:`bench_segment_memory`: peak resident memory of
  :func:`segmentation.inference.files.segment_files` over many generated images,
  sampled while it runs, with the peak after the first tenth of the images
  beside the peak of the whole run (flat memory: the two agree).
- :func:`bench_segment_throughput`: images per second for combinations of
  ``workers`` and ``batch_size`` on the same images, and the seconds per
  image of every stage (read, superpixels, model, write).

Both write procedural scenes (:class:`segmentation.data.datasets.SyntheticScenes`)
as JPEG files first, in worker processes, and use either a given checkpoint
or an untrained model of the default configuration (the time and memory of
inference do not depend on the weights).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from benchmarks.data.loading import PeakMemory
from segmentation.data.datasets import SyntheticScenes
from segmentation.data.images import write_image
from segmentation.engine.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from segmentation.inference.files import segment_files
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

__all__ = [
    "bench_segment_memory",
    "bench_segment_throughput",
    "untrained_checkpoint",
    "write_scene_images",
]

_MiB = 2**20


def _write_one(args: tuple[Path, int, int, tuple[int, int]]) -> None:
    folder, seed, index, size = args
    image, _ = SyntheticScenes(index + 1, size=size, seed=seed)[index]
    write_image(folder / f"{index:06d}.jpg", image, quality=90)


def write_scene_images(folder: str | os.PathLike, count: int, size: tuple[int, int],
                       seed: int = 0, processes: int | None = None) -> Path:
    """Write ``count`` distinct procedural scenes of ``size`` (H, W) as JPEG files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, seed, i, size) for i in range(count)]
    with multiprocessing.get_context().Pool(processes or os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_write_one, jobs, chunksize=8):
            pass
    return folder


def untrained_checkpoint(path: str | os.PathLike, num_classes: int = 21, width: int = 32,
                         hidden: int = 64, n_segments: int = 150, seed: int = 0) -> Path:
    """A checkpoint of a freshly initialised model (for timing and memory only)."""
    torch.manual_seed(seed)
    config = ModelConfig(num_classes=num_classes, width=width, hidden=hidden,
                         n_segments=n_segments)
    model = GraphLSTMSegmenter(config)
    payload = {"format": CHECKPOINT_FORMAT, "model_config": config.to_dict(),
               "model_state": model.state_dict(), "epoch": 0, "class_names": None}
    return save_checkpoint(path, payload)


class _ProgressMemory(PeakMemory):
    """:class:`PeakMemory` that also notes the peak main RSS at a given count of outputs."""

    def __init__(self, out_dir: Path, marks: Sequence[int], interval: float = 0.2) -> None:
        super().__init__(interval)
        self.out_dir = out_dir
        self.marks = sorted(marks)
        self.at_mark: dict[int, int] = {}

    def sample(self) -> None:
        super().sample()
        if self.marks and self.out_dir.is_dir():
            done = sum(1 for name in os.listdir(self.out_dir) if name.endswith("_labels.png"))
            while self.marks and done >= self.marks[0]:
                self.at_mark[self.marks.pop(0)] = self.peaks["main_rss"]


def bench_segment_memory(
    images: int = 1000, size: tuple[int, int] = (768, 1024), workers: int = 0,
    batch_size: int = 1, checkpoint: str | None = None, width: int = 32, hidden: int = 64,
    n_segments: int = 150, work_dir: str | None = None, log: Callable[[str], None] = print,
) -> dict:
    """Peak memory of segmenting ``images`` generated images of ``size`` (H, W).

    Returns a dict with ``main_rss`` (peak RSS of the process, from
    ``getrusage`` when it is the larger), ``tree_pss`` (main process and
    DataLoader workers, PSS), ``main_rss_at`` (peak main RSS when 10%, 50% and
    100% of the images were written), ``seconds`` and ``images_per_second``.
    """
    import resource

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        folder = write_scene_images(tmp / "images", images, size)
        log(f"wrote {images} scenes of {size[1]}x{size[0]} in {time.perf_counter() - start:.0f} s")
        if checkpoint is None:
            checkpoint = str(untrained_checkpoint(tmp / "model.pt", width=width, hidden=hidden,
                                                  n_segments=n_segments))
        out = tmp / "out"
        marks = sorted({max(1, images // 10), max(1, images // 2), images})
        monitor = _ProgressMemory(out, marks)
        with monitor:
            summary = segment_files(checkpoint, [folder], out, batch_size=batch_size,
                                    workers=workers, progress=True)
        peaks = monitor.reset()
        rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    result = {
        "images": summary["images"], "size": size, "workers": workers,
        "batch_size": batch_size, "seconds": summary["seconds"],
        "images_per_second": summary["images_per_second"],
        "main_rss": max(peaks["main_rss"], rusage), "sampled_main_rss": peaks["main_rss"],
        "tree_pss": peaks["tree_pss"], "tree_rss": peaks["tree_rss"],
        "main_rss_at": dict(monitor.at_mark),
    }
    at = ", ".join(f"{n} images {rss / _MiB:.0f} MiB" for n, rss in sorted(result["main_rss_at"]
                                                                             .items()))
    log(f"{result['images']} images of {size[1]}x{size[0]}, workers {workers}, batch "
        f"{batch_size}: {result['seconds']:.0f} s ({result['images_per_second']:.2f} images/s)\n"
        f"  peak RSS of the process {result['main_rss'] / _MiB:.0f} MiB (getrusage); "
        f"sampled peak after {at}\n"
        f"  peak of the process tree (main + workers): PSS {result['tree_pss'] / _MiB:.0f} MiB, "
        f"RSS sum {result['tree_rss'] / _MiB:.0f} MiB")
    return result


def bench_segment_throughput(
    images: int = 16, size: int = 512, workers: Sequence[int] = (0, 1, 2),
    batch_sizes: Sequence[int] = (1, 4), rounds: int = 2, checkpoint: str | None = None,
    work_dir: str | None = None, log: Callable[[str], None] = print,
) -> list[dict]:
    """Images per second of ``segment_files`` for every (workers, batch size).

    Every configuration segments the same ``images`` scenes of ``size``×``size``
    in each of ``rounds`` rounds (the configurations interleaved, so a change
    of load on a shared machine affects them alike); the medians are
    reported, with the seconds per image of every stage. With workers, reading
    and superpixels run in other processes while the model runs: the stages
    then overlap and ``busy`` (the main process's model + write time over the
    wall time) shows how much of the time the model waits for data.
    """
    configs = [(w, b) for w in workers for b in batch_sizes]
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        folder = write_scene_images(tmp / "images", images, (size, size))
        if checkpoint is None:
            checkpoint = str(untrained_checkpoint(tmp / "model.pt"))
        segment_files(checkpoint, [sorted(folder.iterdir())[0]], tmp / "warmup")
        runs: dict[tuple[int, int], list[dict]] = {c: [] for c in configs}
        for round_ in range(rounds):
            order = configs if round_ % 2 == 0 else configs[::-1]
            for w, b in order:
                out = tmp / f"out_{round_}_{w}_{b}"
                runs[(w, b)].append(segment_files(checkpoint, [folder], out, batch_size=b,
                                                  workers=w))
    rows = []
    base = None
    for w, b in configs:
        summaries = runs[(w, b)]
        rate = statistics.median(s["images_per_second"] for s in summaries)
        stages = {k: statistics.median(s["stage_seconds"][k] / s["images"] for s in summaries)
                  for k in summaries[0]["stage_seconds"]}
        busy = statistics.median((s["stage_seconds"]["model"] + s["stage_seconds"]["write"])
                                 / s["seconds"] for s in summaries)
        base = rate if base is None else base
        row = {"workers": w, "batch_size": b, "images_per_second": rate, "speedup": rate / base,
               "stage_seconds_per_image": stages, "main_busy": busy,
               "recomputed_alone": statistics.median(s["recomputed_alone"] for s in summaries)}
        rows.append(row)
        total = sum(stages.values())
        shares = "  ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in stages.items())
        log(f"workers {w} batch {b}: {rate:.3f} images/s (x{row['speedup']:.2f})  per image: "
            f"{shares}  main busy {100 * busy:.0f}%  recomputed alone "
            f"{row['recomputed_alone']:g}/{images}")
    return rows
