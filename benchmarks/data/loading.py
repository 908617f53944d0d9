"""Memory and cache behaviour of the lazy training data.

Used by ``python -m benchmarks.data.loading_cli``: writes generated scenes in the VOC layout,
trains the default model on them through :class:`~segmentation.data.loading.SuperpixelDataset`,
``pad_collate`` and ``DataLoader`` workers (the loop of
:func:`segmentation.engine.train.train`, without validation and checkpoints), and
reports per epoch the peak resident memory of the main process and of the
whole process tree (main + workers), and how many graphs were built (SLIC
runs, counted in every process) or read from the disk cache. It also times
the procedural scene generator alone (:func:`scene_generation_seconds`).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from segmentation.data.datasets import (
    SYNTHETIC_CLASSES,
    SyntheticScenes,
    VOCSegmentation,
    generate_scene,
)
from segmentation.data.datasets.voc import CLASSES_FILE, IMAGE_DIR, MASK_DIR, SPLIT_DIR
from segmentation.data.images import atomic_write, write_image, write_mask_png
from segmentation.data.loading import RandomFlipScaleCrop, SuperpixelDataset, pad_collate
from segmentation.data.transforms import SuperpixelGraph
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig, segmentation_loss

__all__ = [
    "CountingGraph",
    "EpochReport",
    "PeakMemory",
    "bench_data",
    "format_reports",
    "model_step_memory",
    "scene_generation_seconds",
    "write_scenes_voc",
]


class CountingGraph(SuperpixelGraph):
    """A :class:`SuperpixelGraph` that counts its SLIC runs across processes.

    ``calls`` is shared memory, so ``DataLoader`` workers add to the same count.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = multiprocessing.get_context().Value("q", 0)

    def _compute(self, image):
        with self.calls.get_lock():
            self.calls.value += 1
        return super()._compute(image)


def _write_scene(args: tuple[Path, int, int, tuple[int, int]]) -> None:
    root, seed, index, size = args
    image, mask = SyntheticScenes(index + 1, size=size, seed=seed)[index]
    write_image(root / IMAGE_DIR / f"{index:06d}.jpg", image, quality=95)
    write_mask_png(root / MASK_DIR / f"{index:06d}.png", mask)


def scene_generation_seconds(count: int = 40, size: tuple[int, int] = (96, 96)) -> float:
    """Median seconds to generate one procedural scene (:func:`generate_scene`), in this process.

    The first scene is generated once beforehand and not counted (imports, caches).
    """
    generate_scene(0, size)
    times = []
    for seed in range(count):
        start = time.perf_counter()
        generate_scene(seed, size)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_scenes_voc(
    root: str | os.PathLike, count: int, size: tuple[int, int], seed: int = 0,
    processes: int | None = None,
) -> Path:
    """Write ``count`` procedural scenes as JPEG images and PNG masks, split ``train``.

    In ``processes`` worker processes (default: the CPUs), so that neither the
    time nor the memory of writing counts against the benchmark's process.
    """
    root = Path(root)
    for folder in (IMAGE_DIR, MASK_DIR, SPLIT_DIR):
        (root / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(root, seed, i, size) for i in range(count)]
    with multiprocessing.get_context().Pool(processes or os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_write_scene, jobs, chunksize=16):
            pass
    ids = "".join(f"{i:06d}\n" for i in range(count)).encode()
    atomic_write(root / SPLIT_DIR / "train.txt", lambda handle: handle.write(ids))
    names = "".join(f"{name}\n" for name in SYNTHETIC_CLASSES).encode()
    atomic_write(root / CLASSES_FILE, lambda handle: handle.write(names))
    return root


class PeakMemory:
    """Peak resident memory of this process and of its process tree, sampled.

    A background thread reads, every ``interval`` seconds, the RSS of this
    process and of every descendant (``DataLoader`` workers), and their PSS
    (proportional set size: a page shared by ``k`` processes counts ``1/k``
    in each, so the PSS sum is the tree's real footprint, while the RSS sum
    counts pages that forked workers share with the main process several
    times). Needs ``psutil`` (a dependency of torch-geometric).
    """

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peaks = {"main_rss": 0, "tree_rss": 0, "tree_pss": 0}

    def reset(self) -> dict[str, int]:
        """Return the peaks since the last reset (bytes) and start over."""
        with self._lock:
            peaks, self.peaks = self.peaks, {"main_rss": 0, "tree_rss": 0, "tree_pss": 0}
        return peaks

    def sample(self) -> None:
        psutil = self._psutil
        try:
            processes = [self._process, *self._process.children(recursive=True)]
        except psutil.Error:
            return
        main_rss = tree_rss = tree_pss = 0
        for process in processes:
            try:
                info = process.memory_full_info()
            except psutil.Error:  # a worker that just exited
                continue
            tree_rss += info.rss
            tree_pss += getattr(info, "pss", info.rss)
            if process.pid == self._process.pid:
                main_rss = info.rss
        with self._lock:
            for key, value in (("main_rss", main_rss), ("tree_rss", tree_rss),
                               ("tree_pss", tree_pss)):
                self.peaks[key] = max(self.peaks[key], value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


@dataclass
class EpochReport:
    epoch: int
    batches: int
    steps: int
    seconds: float
    slic_calls: int
    cache_hits: int
    cache_files: int
    cache_files_replaced: int
    peaks: dict[str, int] = field(default_factory=dict)


def _file_states(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def bench_data(
    data: str | os.PathLike,
    cache_dir: str | os.PathLike,
    epochs: int = 2,
    batch_size: int = 8,
    workers: int = 2,
    n_segments: int = 150,
    device: str = "cpu",
    max_steps: int | None = None,
    augment_crop: int | None = None,
    seed: int = 0,
    log=print,
) -> tuple[list[EpochReport], int]:
    """Train on the ``train`` split of ``data`` and measure memory and the cache.

    ``max_steps`` limits the optimiser steps per epoch (for slow CPUs); the
    remaining batches are still built, collated and moved to the device, so
    every item passes through the data pipeline and the cache either way.

    Returns the per-epoch reports and the whole-run peak RSS of this process
    (``getrusage``, exact, bytes).
    """
    cache_dir = Path(cache_dir)
    samples = VOCSegmentation(data, split="train")
    transform = CountingGraph(n_segments=n_segments, add_features=False, cache_dir=cache_dir)
    augment = None if augment_crop is None else RandomFlipScaleCrop(augment_crop)
    dataset = SuperpixelDataset(samples, transform, augment, seed)
    device = torch.device(device)
    torch.manual_seed(seed)
    model = GraphLSTMSegmenter(ModelConfig(num_classes=samples.num_classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    reports = []
    memory = PeakMemory()
    with memory:
        for epoch in range(epochs):
            memory.reset()
            calls_before = transform.calls.value
            files_before = _file_states(cache_dir)
            torch.manual_seed(seed * 100_003 + epoch)
            order = torch.Generator().manual_seed(seed * 100_003 + epoch)
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=order,
                                collate_fn=pad_collate, num_workers=workers)
            model.train()
            start, steps, batches = time.perf_counter(), 0, 0
            for batch in loader:
                batch = batch.to(device)
                batches += 1
                if batches == 1:
                    # Once while the workers surely live: the sampling thread can
                    # miss them in a short epoch. (Not every batch: reading every
                    # process's smaps would slow the epoch being timed.)
                    memory.sample()
                if max_steps is None or steps < max_steps:
                    loss = segmentation_loss(model.forward_batch(batch), batch.mask)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    steps += 1
                if batches % 25 == 0:
                    log(f"  epoch {epoch + 1}: {batches}/{len(loader)} batches, "
                        f"{time.perf_counter() - start:.0f} s")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            files_after = _file_states(cache_dir)
            calls = transform.calls.value - calls_before
            replaced = sum(1 for name, state in files_before.items()
                           if files_after.get(name, state) != state)
            memory.sample()
            reports.append(EpochReport(epoch + 1, batches, steps, seconds, calls,
                                       len(dataset) - calls, len(files_after), replaced,
                                       memory.reset()))
    peak_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return reports, peak_main


def _one_step_peak(data, cache_dir, batch_size, n_segments, device, threads) -> tuple[int, int]:
    torch.set_num_threads(threads)
    samples = VOCSegmentation(data, split="train")
    transform = SuperpixelGraph(n_segments=n_segments, add_features=False, cache_dir=cache_dir)
    dataset = SuperpixelDataset(samples, transform)
    batch = pad_collate([dataset[i] for i in range(batch_size)]).to(device)
    model = GraphLSTMSegmenter(ModelConfig(num_classes=samples.num_classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):  # the second step has the optimiser state too
        loss = segmentation_loss(model.forward_batch(batch), batch.mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def model_step_memory(
    data: str | os.PathLike, cache_dir: str | os.PathLike, batch_size: int = 8,
    n_segments: int = 150, device: str = "cpu", threads: int = 1,
) -> tuple[int, int]:
    """Peak RSS of two training steps alone, in a fresh process (no workers, no loader).

    Returns (peak RSS before the steps, peak RSS after them), bytes: what
    the model's forward and backward add, apart from the data pipeline.
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_one_step_peak, (str(data), str(cache_dir), batch_size, n_segments,
                                           device, threads))


def format_reports(reports: list[EpochReport], peak_main: int, limit: float = 2 * 2**30) -> str:
    """A markdown table of the per-epoch figures and the verdict against ``limit``."""
    mib = 2**20
    lines = [
        "| epoch | batches | steps | time | SLIC runs | cache hits | cache files | "
        "files rewritten | peak RSS main | peak RSS main+workers | peak PSS main+workers |",
        "|---" * 11 + "|",
    ]
    for r in reports:
        lines.append(
            f"| {r.epoch} | {r.batches} | {r.steps} | {r.seconds:.0f} s | {r.slic_calls} | "
            f"{r.cache_hits} | {r.cache_files} | {r.cache_files_replaced} | "
            f"{r.peaks['main_rss'] / mib:.0f} MiB | {r.peaks['tree_rss'] / mib:.0f} MiB | "
            f"{r.peaks['tree_pss'] / mib:.0f} MiB |")
    worst = max(r.peaks["tree_pss"] for r in reports)
    lines.append(f"peak RSS of the main process over the whole run (getrusage): "
                 f"{peak_main / mib:.0f} MiB; peak PSS of main + workers: {worst / mib:.0f} MiB "
                 f"({'under' if worst < limit else 'OVER'} {limit / 2**30:.0f} GiB)")
    return "\n".join(lines)
