"""Benchmarks of the Graph LSTM layer on SLIC graphs of a scikit-image sample image.

Used by ``python -m benchmarks.run``; every figure is a median over repeats, and the
level-by-level layer and the per-node loop (or PyG's ``GatedGraphConv``) run
interleaved in the same process, so that their ratio holds when the machine's
speed drifts.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from graphlstm import GraphLSTM, build_schedule
from graphlstm.reference import graph_lstm_loop, graph_lstm_reference
from segmentation.data.adjacency import region_adjacency
from segmentation.data.superpixels import slic_superpixels
from segmentation.models.orders import score_from_image, smooth_random_field

__all__ = [
    "SampleGraph",
    "bench_graph_lstm",
    "bench_typed_cells",
    "median_time",
    "sample_graph",
    "saved_tensor_bytes",
]


@dataclass
class SampleGraph:
    labels: np.ndarray
    edge_index: Tensor
    score: Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.labels.max()) + 1


def sample_image(name: str) -> np.ndarray:
    """The scikit-image sample photograph ``skimage.data.<name>()`` as RGB: one of those
    the package ships (``astronaut``, ``coffee``, ``chelsea``, ``rocket``, ...), so that
    nothing is downloaded.

    Raises ``ValueError`` naming ``image`` for any other name."""
    from skimage import data

    shipped = any(os.path.isfile(os.path.join(data.data_dir, f"{name}{ext}"))
                  for ext in (".png", ".jpg"))
    loader = getattr(data, name, None) if shipped and not name.startswith("_") else None
    image = np.asarray(loader()) if callable(loader) else None
    if image is None or image.ndim not in (2, 3):
        raise ValueError(f"'image' must name a photograph that scikit-image ships "
                         f"(e.g. astronaut, coffee, chelsea), got {name!r}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def sample_graph(n_segments: int, seed: int = 0, sigma: float = 0.1,
                 image: str = "astronaut") -> SampleGraph:
    """SLIC region adjacency graph of a scikit-image photograph (``astronaut`` by
    default; :func:`sample_image`), with a confidence score per superpixel: a smooth
    random field averaged over each superpixel."""
    labels = slic_superpixels(sample_image(image), n_segments=n_segments, compactness=10.0)
    edge_index, _ = region_adjacency(labels)
    score = score_from_image(smooth_random_field(labels.shape, sigma, seed), labels)
    return SampleGraph(labels, edge_index, score)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``fn()`` in seconds: wall time, or ``clock`` (e.g.
    ``time.thread_time``, which a busy machine does not inflate by descheduling)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def paired_median_times(
    fn_a: Callable[[], object], fn_b: Callable[[], object] | Sequence[Callable[[], object]],
    repeats: int, repeats_b: int, clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, ...]:
    """Median seconds of ``fn_a`` and ``fn_b`` (or of each function in a sequence
    ``fn_b``), measured interleaved: ``(median_a, median_b)`` or ``(median_a,
    *medians_b)``.

    On a shared machine the speed drifts over seconds; alternating the
    functions keeps their ratios honest.
    """
    others = [fn_b] if callable(fn_b) else list(fn_b)
    fn_a()
    for fn in others:
        fn()
    times_a, times_b = [], [[] for _ in others]
    per_b = max(1, repeats // max(1, repeats_b))
    for i in range(max(repeats, repeats_b)):
        if i < repeats:
            start = clock()
            fn_a()
            times_a.append(clock() - start)
        if i < repeats_b * per_b and i % per_b == 0:
            for fn, times in zip(others, times_b, strict=True):
                start = clock()
                fn()
                times.append(clock() - start)
    return statistics.median(times_a), *(statistics.median(times) for times in times_b)


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


def _call(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """``fn`` without autograd, waiting for the device (CUDA kernels run asynchronously)."""

    def run() -> None:
        with torch.no_grad():
            fn()
        _synchronize(device)

    return run


def _forward_backward(layer, x, edge_index, schedule, state) -> None:
    out, (_, m) = layer(x.requires_grad_(), edge_index, schedule=schedule, state=state)
    (out.sum() + m.sum()).backward()
    _synchronize(x.device)


def bench_graph_lstm(
    sizes=(1000, 4000), hidden: int = 64, threads=(1, 2), engines=("compiled", "torch"),
    repeats: int = 10, loop_repeats: int = 3, print_fn=print, device="cpu", clock: str = "wall",
    image: str = "astronaut",
) -> list[dict]:
    """:class:`GraphLSTM` against a per-node loop and PyG's ``GatedGraphConv``.

    For every graph (a SLIC graph of the scikit-image photograph ``image`` per entry
    of ``sizes``), thread
    count and engine (:mod:`graphlstm.backend`), median milliseconds of:

    - ``schedule``: :func:`build_schedule` from the per-superpixel score;
    - ``layer``: ``GraphLSTM(H, H)`` with a previous state, the schedule given;
    - ``layer_schedule``: the same with the schedule built in the call (``score=``);
    - ``forward_backward``: ``layer`` and its backward;
    - ``loop``: :func:`graphlstm.reference.graph_lstm_loop` with the same state (a
      lean per-node loop: one state buffer updated in place, all projections in one
      GEMM), timed interleaved with ``layer_schedule`` (``speedup = loop /
      layer_schedule``);
    - ``literal_loop``: :func:`graphlstm.reference.graph_lstm_reference` (the
      definition written out node by node, as the tests use it), timed in the same
      rounds (``literal_speedup = literal_loop / layer_schedule``);
    - ``no_state``: ``GraphLSTM(H, H)`` with the order given, no state, schedule built
      in the call, interleaved with ``gated``: ``GatedGraphConv(H, num_layers=1)`` on
      the same graph (``gated_ratio = no_state / gated``).

    Forward timings run without autograd. ``saved_bytes`` is the memory autograd
    holds for the backward of ``layer``. ``clock="cpu"`` times the calling thread's
    CPU time instead of wall time (robust on a busy machine; with more than one
    thread it leaves out the other threads' work, so only 1-thread rows are run).
    """
    from torch_geometric.nn import GatedGraphConv

    from graphlstm import use_backend

    device = torch.device(device)
    if clock not in ("wall", "cpu"):
        raise ValueError(f"'clock' must be 'wall' or 'cpu', got {clock!r}")
    if clock == "cpu":
        threads = (1,)
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    previous_threads = torch.get_num_threads()
    rows = []
    try:
        for n_segments in sizes:
            g = sample_graph(n_segments, image=image)
            n = g.num_nodes
            edge_index, score = g.edge_index.to(device), g.score.to(device)
            schedule = build_schedule(edge_index, n, score=score)
            order = schedule.order
            torch.manual_seed(0)
            layer = GraphLSTM(hidden, hidden).to(device)
            gated = GatedGraphConv(hidden, num_layers=1).to(device)
            x = torch.randn(n, hidden, device=device)
            state = (0.5 * torch.randn(n, hidden, device=device),
                     0.5 * torch.randn(n, hidden, device=device))
            print_fn(
                f"\nSLIC graph of {image}, n_segments={n_segments}: {n} nodes, "
                f"{g.edge_index.size(1)} edges, {schedule.num_levels} levels; H={hidden}; "
                f"median ms ({device.type}, {'thread CPU' if clock == 'cpu' else 'wall'} time)"
            )
            print_fn(f"{'threads':>7} {'engine':>8} {'schedule':>9} {'layer':>8} "
                     f"{'+schedule':>9} {'fwd+bwd':>8} {'per-node loop':>13} {'speed-up':>8} "
                     f"{'literal loop':>12} {'speed-up':>8}   "
                     f"{'no state':>8} {'GatedGraphConv':>14} {'ratio':>6}")
            for num_threads in threads:
                torch.set_num_threads(num_threads)
                for engine in engines:
                    with use_backend(engine):
                        row = _bench_one(layer, gated, x, edge_index, score, order, state,
                                         repeats, loop_repeats, device, timer)
                    row.update(n_segments=n_segments, nodes=n, edges=g.edge_index.size(1),
                               levels=schedule.num_levels, hidden=hidden,
                               threads=num_threads, engine=engine)
                    rows.append(row)
                    speedup, gated_ratio = f"x{row['speedup']:.1f}", f"x{row['gated_ratio']:.2f}"
                    literal_speedup = f"x{row['literal_speedup']:.1f}"
                    print_fn(
                        f"{num_threads:>7} {engine:>8} {row['schedule_ms']:>9.2f} "
                        f"{row['layer_ms']:>8.2f} {row['layer_schedule_ms']:>9.2f} "
                        f"{row['forward_backward_ms']:>8.2f} {row['loop_ms']:>13.1f} "
                        f"{speedup:>8} {row['literal_loop_ms']:>12.1f} {literal_speedup:>8}   "
                        f"{row['no_state_ms']:>8.2f} "
                        f"{row['gated_ms']:>14.2f} {gated_ratio:>6}"
                    )
    finally:
        torch.set_num_threads(previous_threads)
    return rows


def grid_graph(side: int) -> Tensor:
    """``edge_index`` of a ``side`` x ``side`` 4-neighbour grid, both directions."""
    idx = torch.arange(side * side).view(side, side)
    right = torch.stack([idx[:, :-1].reshape(-1), idx[:, 1:].reshape(-1)])
    down = torch.stack([idx[:-1].reshape(-1), idx[1:].reshape(-1)])
    edges = torch.cat([right, down], dim=1)
    return torch.cat([edges, edges.flip(0)], dim=1)


def bench_grid_schedule(side: int = 1000, repeats: int = 3, engines=("compiled", "torch"),
                        print_fn=print) -> dict:
    """Median seconds of :func:`build_schedule` on a ``side`` x ``side`` 4-neighbour grid
    in a random order, per engine."""
    from graphlstm import use_backend

    edge_index = grid_graph(side)
    n = side * side
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    seconds = {}
    for engine in engines:
        with use_backend(engine):
            seconds[engine] = median_time(lambda: build_schedule(edge_index, n, order=order),
                                          repeats, warmup=1)
    levels = build_schedule(edge_index, n, order=order).num_levels
    print_fn(f"\n{side}x{side} 4-neighbour grid ({n} nodes, {edge_index.size(1)} edges), random "
             f"order, {levels} levels: schedule " + ", ".join(
                 f"{engine} {t:.3f} s" for engine, t in seconds.items()))
    return seconds


def bench_typed_cells(sides=(32, 64), repeats: int = 10, in_channels: int = 16,
                      hidden: int = 32, print_fn=print) -> list[dict]:
    """The typed-graph cells on the lattice graph of a ``side`` x ``side`` grid
    (:func:`graphlstm.lattice_graph`, raster order, ``2 * side - 1`` levels), on
    both engines of :mod:`graphlstm.backend`, measured interleaved.

    For each cell, median milliseconds of the forward with the schedule built in
    the call (``forward``) and of forward and backward (``fwd+bwd``) per engine,
    and ``speedup = torch / compiled``. ``GridLSTMCell`` has no compiled loop: its
    row shows what the compiled schedule alone changes.
    """
    from graphlstm import GridLSTMCell, MDLSTMCell, MDRNNCell, lattice_graph, use_backend

    def timed(engine, fn):
        def run():
            with use_backend(engine):
                fn()
        return run

    rows = []
    for side in sides:
        edge_index, edge_type, order = lattice_graph((side, side))
        n = side * side
        levels = build_schedule(edge_index, n, order=order).num_levels
        print_fn(f"\n{side}x{side} lattice graph ({n} nodes, {edge_index.size(1)} edges, "
                 f"{levels} levels), {in_channels} -> {hidden}, milliseconds:")
        print_fn("| cell | forward compiled | forward torch | speed-up | fwd+bwd compiled "
                 "| fwd+bwd torch | speed-up |")
        print_fn("|---|---|---|---|---|---|---|")
        cells = {
            "MDLSTMCell": MDLSTMCell(in_channels, hidden, 2),
            "MDLSTMCell(stable)": MDLSTMCell(in_channels, hidden, 2, stable=True),
            "MDRNNCell": MDRNNCell(in_channels, hidden, 2),
            "GridLSTMCell": GridLSTMCell(in_channels, hidden, 2),
        }
        x = torch.randn(n, in_channels, generator=torch.Generator().manual_seed(0))
        graph = (x, edge_index, edge_type, order)
        for name, cell in cells.items():
            def forward(cell=cell, graph=graph):
                with torch.no_grad():
                    cell(*graph)

            def forward_backward(cell=cell, graph=graph):
                cell(*graph)[0].sum().backward()

            fwd = paired_median_times(timed("compiled", forward), timed("torch", forward),
                                      repeats, repeats)
            both = paired_median_times(timed("compiled", forward_backward),
                                       timed("torch", forward_backward), repeats, repeats)
            row = {"side": side, "cell": name, "forward": fwd, "forward_backward": both}
            rows.append(row)
            print_fn(f"| {name} | {fwd[0] * 1e3:.2f} | {fwd[1] * 1e3:.2f} | "
                     f"x{fwd[1] / fwd[0]:.1f} | {both[0] * 1e3:.2f} | {both[1] * 1e3:.2f} | "
                     f"x{both[1] / both[0]:.1f} |")
    return rows


def _bench_one(layer, gated, x, edge_index, score, order, state, repeats, loop_repeats,
               device, clock) -> dict:
    n = x.size(0)
    t_schedule = median_time(_call(lambda: build_schedule(edge_index, n, score=score), device),
                             repeats, clock=clock)
    schedule = build_schedule(edge_index, n, score=score)
    t_layer = median_time(
        _call(lambda: layer(x, edge_index, schedule=schedule, state=state), device), repeats,
        clock=clock,
    )
    t_layer_schedule, t_loop, t_literal = paired_median_times(
        _call(lambda: layer(x, edge_index, score=score, state=state), device),
        [_call(lambda: graph_lstm_loop(layer, x, edge_index, order, state), device),
         _call(lambda: graph_lstm_reference(layer, x, edge_index, order, state), device)],
        repeats, loop_repeats, clock=clock,
    )
    t_no_state, t_gated = paired_median_times(
        _call(lambda: layer(x, edge_index, order=order), device),
        _call(lambda: gated(x, edge_index), device),
        repeats, repeats, clock=clock,
    )
    t_fb = median_time(
        lambda: _forward_backward(layer, x.clone(), edge_index, schedule, state), repeats,
        clock=clock,
    )
    saved = saved_tensor_bytes(
        lambda: layer(x.clone().requires_grad_(), edge_index, schedule=schedule, state=state)[0]
    )
    return dict(
        schedule_ms=t_schedule * 1e3, layer_ms=t_layer * 1e3,
        layer_schedule_ms=t_layer_schedule * 1e3, forward_backward_ms=t_fb * 1e3,
        loop_ms=t_loop * 1e3, speedup=t_loop / t_layer_schedule,
        literal_loop_ms=t_literal * 1e3, literal_speedup=t_literal / t_layer_schedule,
        no_state_ms=t_no_state * 1e3,
        gated_ms=t_gated * 1e3, gated_ratio=t_no_state / t_gated, saved_bytes=saved,
    )


def bench_inference(size: int = 321, n_segments_list=(150, 1000), repeats: int = 5,
                    print_fn=print) -> list[dict]:
    """Median time to segment one ``size``×``size`` image: SLIC + graph + network."""
    from skimage import data
    from skimage.transform import resize

    from segmentation.inference.predictor import Segmenter
    from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

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
