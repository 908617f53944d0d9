"""Benchmarks of the Graph LSTM layer on SLIC graphs of a scikit-image sample image.

Used by ``scripts/benchmark.py``; every figure is a median over repeats, and the
level-by-level layer and the per-node loop run side by side in the same process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from graphlstm import GraphLSTM, build_schedule
from graphlstm.reference import graph_lstm_loop
from segmentation.orders import score_from_image, smooth_random_field
from segmentation.rag import region_adjacency
from segmentation.superpixels import slic_superpixels

__all__ = ["SampleGraph", "sample_graph", "median_time", "saved_tensor_bytes", "bench_graph_lstm"]


@dataclass
class SampleGraph:
    labels: np.ndarray
    edge_index: Tensor
    score: Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.labels.max()) + 1


def sample_graph(n_segments: int, seed: int = 0, sigma: float = 0.1) -> SampleGraph:
    """SLIC region adjacency graph of ``skimage.data.astronaut()``, with a confidence
    score per superpixel: a smooth random field averaged over each superpixel."""
    from skimage import data

    image = data.astronaut()
    labels = slic_superpixels(image, n_segments=n_segments, compactness=10.0)
    edge_index, _ = region_adjacency(labels)
    score = score_from_image(smooth_random_field(labels.shape, sigma, seed), labels)
    return SampleGraph(labels, edge_index, score)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_median_times(
    fn_a: Callable[[], object], fn_b: Callable[[], object], repeats: int, repeats_b: int
) -> tuple[float, float]:
    """Median seconds of ``fn_a`` and ``fn_b``, measured interleaved.

    On a shared machine the speed drifts over seconds; alternating the two
    keeps their ratio honest.
    """
    fn_a()
    fn_b()
    times_a, times_b = [], []
    per_b = max(1, repeats // max(1, repeats_b))
    for i in range(max(repeats, repeats_b)):
        if i < repeats:
            start = time.perf_counter()
            fn_a()
            times_a.append(time.perf_counter() - start)
        if i < repeats_b * per_b and i % per_b == 0:
            start = time.perf_counter()
            fn_b()
            times_b.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def saved_tensor_bytes(fn: Callable[[], Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs:
    the memory a forward+backward holds beyond its inputs and outputs."""
    storages: dict[int, int] = {}

    def pack(t: Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def _synchronize(device: torch.device) -> None:
    # CUDA kernels run asynchronously: a timer must wait for them.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _no_grad_forward(layer, x, edge_index, schedule):
    with torch.no_grad():
        out = layer(x, edge_index, schedule=schedule)
    _synchronize(x.device)
    return out


def _forward_backward(layer, x, edge_index, schedule) -> None:
    out, (_, m) = layer(x.requires_grad_(), edge_index, schedule=schedule)
    (out.sum() + m.sum()).backward()
    _synchronize(x.device)


def _loop(layer, x, edge_index, order):
    out = graph_lstm_loop(layer, x, edge_index, order)
    _synchronize(x.device)
    return out


def _time_layer(layer, x, edge_index, schedule, batch_edge_index, batch_schedule, repeats,
                loop_repeats) -> tuple[float, ...]:
    """Forward (interleaved with the per-node loop), loop, forward+backward, and the
    batch's forward and forward+backward: median seconds."""
    t_fwd, t_loop = paired_median_times(
        lambda: _no_grad_forward(layer, x, edge_index, schedule),
        lambda: _loop(layer, x, edge_index, schedule.order),
        repeats, loop_repeats,
    )
    t_fb = median_time(lambda: _forward_backward(layer, x, edge_index, schedule), repeats)
    xb = torch.randn(batch_schedule.num_nodes, x.size(1), device=x.device)
    t_bfwd = median_time(
        lambda: _no_grad_forward(layer, xb, batch_edge_index, batch_schedule), repeats
    )
    t_bfb = median_time(
        lambda: _forward_backward(layer, xb, batch_edge_index, batch_schedule), repeats
    )
    return t_fwd, t_loop, t_fb, t_bfwd, t_bfb


def bench_graph_lstm(
    sizes=(1000, 4000), hiddens=(64, 256), repeats: int = 10, batch: int = 8,
    loop_repeats: int = 5, print_fn=print, device="cpu",
) -> list[dict]:
    """Forward and forward+backward of :class:`GraphLSTM` against the per-node loop."""
    device = torch.device(device)
    rows = []
    for n_segments in sizes:
        g = sample_graph(n_segments)
        n = g.num_nodes
        schedule = build_schedule(g.edge_index, n, score=g.score).to(device)
        edge_index = g.edge_index.to(device)
        graphs = [sample_graph(n_segments, seed=s) if s else g for s in range(batch)]
        big = Batch.from_data_list(
            [Data(edge_index=h.edge_index, num_nodes=h.num_nodes, score=h.score) for h in graphs]
        )
        batch_schedule = build_schedule(big.edge_index, big.num_nodes, score=big.score)
        batch_schedule = batch_schedule.to(device)
        print_fn(
            f"\nSLIC graph of astronaut, n_segments={n_segments}: {n} nodes, "
            f"{g.edge_index.size(1)} edges, {schedule.num_levels} levels; batch of {batch}: "
            f"{big.num_nodes} nodes, {batch_schedule.num_levels} levels"
        )
        for hidden in hiddens:
            torch.manual_seed(0)
            layer = GraphLSTM(hidden, hidden).to(device)
            x = torch.randn(n, hidden, device=device)
            t_fwd, t_loop, t_fb, t_bfwd, t_bfb = _time_layer(
                layer, x, edge_index, schedule, big.edge_index.to(device), batch_schedule,
                repeats, loop_repeats,
            )
            ei = edge_index
            saved = saved_tensor_bytes(
                lambda layer=layer, x=x, ei=ei, s=schedule: layer(x.requires_grad_(), ei,
                                                                  schedule=s)[0]
            )
            row = dict(
                n_segments=n_segments, nodes=n, edges=g.edge_index.size(1),
                levels=schedule.num_levels, hidden=hidden, forward_ms=t_fwd * 1e3,
                forward_backward_ms=t_fb * 1e3, loop_ms=t_loop * 1e3, speedup=t_loop / t_fwd,
                saved_bytes=saved, batch_forward_ms=t_bfwd * 1e3,
                batch_forward_backward_ms=t_bfb * 1e3,
            )
            rows.append(row)
            print_fn(
                f"  H={hidden:<4d} forward {row['forward_ms']:8.2f} ms   "
                f"fwd+bwd {row['forward_backward_ms']:8.2f} ms   "
                f"per-node loop {row['loop_ms']:8.1f} ms   speed-up x{row['speedup']:.1f}   "
                f"saved for backward {saved / 2**20:6.2f} MiB "
                f"({saved / (n * hidden):.0f} B per node per hidden unit)"
            )
            print_fn(
                f"         batch of {batch}: forward {row['batch_forward_ms']:8.2f} ms   "
                f"fwd+bwd {row['batch_forward_backward_ms']:8.2f} ms   "
                f"(x{batch * t_fwd / t_bfwd:.1f} vs {batch} separate forwards)"
            )
    return rows


def bench_inference(size: int = 321, n_segments_list=(150, 1000), repeats: int = 5,
                    print_fn=print) -> list[dict]:
    """Median time to segment one ``size``×``size`` image: SLIC + graph + network."""
    from skimage import data
    from skimage.transform import resize

    from segmentation.model import GraphLSTMSegmenter, ModelConfig
    from segmentation.pipeline import Segmenter

    image = (resize(data.astronaut(), (size, size), anti_aliasing=True) * 255).astype(np.uint8)
    rows = []
    for n_segments in n_segments_list:
        torch.manual_seed(0)
        model = GraphLSTMSegmenter(ModelConfig(num_classes=21, n_segments=n_segments))
        segmenter = Segmenter(model)
        total = median_time(lambda s=segmenter: s.predict(image), repeats, warmup=1)
        slic = median_time(lambda n=n_segments: slic_superpixels(image, n_segments=n),
                           repeats, warmup=1)
        rows.append(dict(size=size, n_segments=n_segments, total_ms=total * 1e3,
                         slic_ms=slic * 1e3))
        print_fn(f"\n{size}x{size} image, n_segments={n_segments} (default model, 21 classes): "
                 f"{total * 1e3:.0f} ms per image, of which SLIC {slic * 1e3:.0f} ms")
    return rows
