"""Training throughput: images per second of training steps, 1 and N processes (DDP).

Used by ``python -m benchmarks.run train``. Every process count runs the same
global batch of procedurally generated ``size``×``size`` scenes, the real
training step (:func:`segmentation.engine.train.training_step`: forward, loss with
its all-reduce, backward with DDP's gradient all-reduce, AdamW) on graphs built
beforehand, as they come from the disk cache. Where a step's time goes is
measured in the one-process run by replaying each stage's forward and
backward on the inputs it received in a real step (backbone; Graph LSTM layers
and their schedule), interleaved with the steps; SLIC and graph building is
timed per image.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import timedelta

import torch

__all__ = ["TrainBenchSetup", "bench_train"]


@dataclass
class TrainBenchSetup:
    size: int = 321
    n_segments: int = 1000
    batch_size: int = 8
    steps: int = 3
    backbone: str = "small"
    width: int = 32
    hidden: int = 64
    amp: bool = False
    device: str = "cpu"
    threads: int = 1
    find_unused_parameters: bool = False
    unpool: str = "hard"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved_medians(fns: dict, device: torch.device, repeats: int) -> dict:
    """Median seconds of every callable, timed in rounds (one call of each per round):
    on a shared machine the speed drifts, and interleaving keeps the shares honest."""
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _synchronize(device)
            start = time.perf_counter()
            fn()
            _synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _detached(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().requires_grad_()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    return value


def _backward_of_outputs(out) -> None:
    tensors = [t for t in (out if isinstance(out, tuple) else (out,))
               for t in (t if isinstance(t, tuple) else (t,))
               if isinstance(t, torch.Tensor) and t.requires_grad]
    torch.autograd.backward(tensors, [torch.ones_like(t) for t in tensors])


def _stage_replays(model, batch, setup: TrainBenchSetup, device: torch.device) -> dict:
    """Callables that replay the forward and backward of the backbone, of the Graph
    LSTM layers and the schedule on the inputs they received in a real forward pass."""
    from graphlstm import GraphLSTM, build_schedule
    from segmentation.engine.train import autocast_dtype
    from segmentation.models.segmenter import batch_inputs

    calls: dict[str, list] = {"backbone": [], "graph": []}

    def capture(name):
        def hook(module, args, kwargs, output):
            calls[name].append((module, args, kwargs))
        return hook

    handles = [model.backbone.register_forward_hook(capture("backbone"), with_kwargs=True)]
    handles += [m.register_forward_hook(capture("graph"), with_kwargs=True)
                for m in model.modules() if isinstance(m, GraphLSTM)]
    inputs = batch_inputs(batch)
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype(device),
                                         enabled=setup.amp):
        out = model(*inputs)
    for handle in handles:
        handle.remove()

    def replay(name, grad_inputs: bool):
        # The image needs no gradient (as in training); the Graph LSTM's inputs do.
        prepare = _detached if grad_inputs else (lambda v: v)

        def run():
            for module, args, kwargs in calls[name]:
                with torch.autocast(device.type, dtype=autocast_dtype(device),
                                    enabled=setup.amp and name == "backbone"):
                    result = module(*prepare(args), **{k: prepare(v) for k, v in kwargs.items()})
                _backward_of_outputs(result)
            model.zero_grad(set_to_none=True)
        return run

    total = int(batch.ptr[-1])
    replays = {"backbone": replay("backbone", False),
               "schedule": lambda: build_schedule(batch.edge_index, total, score=out.node_score)}
    if calls["graph"]:
        replays["graph_lstm"] = replay("graph", True)
    return replays


def _worker(rank: int, world: int, port: int, graphs, setup: TrainBenchSetup, queue) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch_geometric.data import Batch

    from segmentation.data.datasets import SYNTHETIC_CLASSES
    from segmentation.engine.distributed import cleanup
    from segmentation.engine.train import set_train_mode, training_step
    from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

    torch.set_num_threads(setup.threads)
    device = torch.device(setup.device)
    if device.type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        # A bounded wait: a process that died early fails the others instead of
        # leaving them blocked for the default 30 minutes.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank,
                                world_size=world, timeout=timedelta(minutes=5))
    try:
        torch.manual_seed(0)
        model = GraphLSTMSegmenter(ModelConfig(
            num_classes=len(SYNTHETIC_CLASSES), width=setup.width, hidden=setup.hidden,
            n_segments=setup.n_segments, backbone=setup.backbone, unpool=setup.unpool))
        if world > 1 and device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if setup.find_unused_parameters:  # the alternative to frozen unused parameters
            for p in model.parameters():
                p.requires_grad_(True)
        model = model.to(device)
        net = model
        if world > 1:
            net = DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=setup.find_unused_parameters)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda") if setup.amp and device.type == "cuda" else None
        batch = Batch.from_data_list(graphs[rank::world]).to(device)
        set_train_mode(net)
        timed = {"step": lambda: training_step(net, batch, optimizer, scaler, setup.amp)}
        if world == 1:
            timed.update(_stage_replays(model, batch, setup, device))
        times = _interleaved_medians(timed, device, setup.steps)
        if rank == 0:
            step = times.pop("step")
            result = {"processes": world, "step_s": step,
                      "images_per_s": setup.batch_size / step}
            if world == 1:
                result.update({"graph_lstm": float("nan"), **times})
            queue.put(result)
    finally:
        cleanup()


def _run_processes(n: int, args: tuple, queue, grace_s: float = 60.0) -> None:
    """``mp.spawn`` of the workers, joined; a worker's error is raised as by
    ``mp.spawn``. Once rank 0 has reported, a process that has not exited within
    ``grace_s`` is terminated instead of holding up the benchmark (a safety net:
    the workers leave the process group with
    :func:`segmentation.engine.distributed.cleanup`, which avoids the known hang
    at exit)."""
    import torch.multiprocessing as mp

    context = mp.spawn(_worker, args=args, nprocs=n, join=False)
    reported_at = None
    while not context.join(timeout=1):
        if reported_at is None and not queue.empty():
            reported_at = time.monotonic()
        if reported_at is not None and time.monotonic() - reported_at > grace_s:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            for process in context.processes:
                process.join(timeout=grace_s)
            return


def _build_graphs(setup: TrainBenchSetup) -> tuple[list, float]:
    """The benchmark's scenes as graphs, and the median seconds of SLIC + graph per image."""
    from segmentation.data.datasets import SyntheticScenes
    from segmentation.data.transforms import SuperpixelGraph

    scenes = SyntheticScenes(setup.batch_size, size=(setup.size, setup.size), seed=0)
    transform = SuperpixelGraph(n_segments=setup.n_segments, add_features=False)
    graphs, times = [], []
    for i in range(len(scenes)):
        start = time.perf_counter()
        graphs.append(transform(scenes[i]))
        times.append(time.perf_counter() - start)
    return graphs, statistics.median(times)


def bench_train(processes=None, print_fn=print, **options) -> list[dict]:
    """Images/s of training for each number of processes, and the stages' shares.

    Parameters
    ----------
    processes : sequence of int, optional
        Process counts to run (each must divide ``batch_size``; on CUDA at most
        the number of GPUs). Default: 1 and 2 (on CUDA, 2 only with 2 GPUs).
    **options
        Fields of :class:`TrainBenchSetup` (size, n_segments, batch_size,
        steps, backbone, width, hidden, amp, device, threads, unpool).
    """
    import torch.multiprocessing as mp

    setup = TrainBenchSetup(**options)
    device = torch.device(setup.device)
    if processes is None:
        gpus = torch.cuda.device_count() if device.type == "cuda" else 2
        processes = (1, 2) if gpus >= 2 else (1,)
    for n in processes:
        if n < 1 or setup.batch_size % n:
            raise ValueError(f"the global batch {setup.batch_size} does not split into "
                             f"{n} processes")
        if device.type == "cuda" and n > torch.cuda.device_count():
            raise ValueError(f"{n} processes need {n} GPUs; {torch.cuda.device_count()} here")
    torch.set_num_threads(setup.threads)
    graphs, slic_s = _build_graphs(setup)
    nodes = sum(g.num_nodes for g in graphs) / len(graphs)
    rows = []
    ctx = mp.get_context("spawn")
    for n in processes:
        queue = ctx.SimpleQueue()
        if n == 1:
            _worker(0, 1, 0, graphs, setup, queue)
        else:
            _run_processes(n, (n, _free_port(), graphs, setup, queue), queue)
        rows.append({**asdict(setup), **queue.get(), "slic_graph_s_per_image": slic_s,
                     "nodes_per_image": nodes})
    base = rows[0]
    precision = "autocast " + ("float16" if device.type == "cuda" else "bfloat16") \
        if setup.amp else "float32"
    print_fn(f"\nTraining throughput: {setup.size}x{setup.size} scenes, ~{nodes:.0f} superpixels "
             f"per image, {setup.backbone} backbone (width {setup.width}, hidden {setup.hidden}), "
             f"{setup.unpool} unpooling, global batch {setup.batch_size}, {device.type}, "
             f"{setup.threads} thread(s) per process, {precision}; median of {setup.steps} steps")
    print_fn(f"  {'processes':>9s} {'s/step':>8s} {'images/s':>9s} {'speed-up':>9s}")
    for row in rows:
        print_fn(f"  {row['processes']:9d} {row['step_s']:8.3f} {row['images_per_s']:9.2f} "
                 f"{'x%.2f' % (row['images_per_s'] / base['images_per_s']):>9s}")
    if base["processes"] == 1:
        step = base["step_s"]
        graph = base["graph_lstm"] + base["schedule"]
        rest = step - base["backbone"] - graph
        per_image = step / setup.batch_size
        print_fn(f"  one-process step {step:.3f} s: backbone fwd+bwd {base['backbone']:.3f} s "
                 f"({100 * base['backbone'] / step:.1f} %), Graph LSTM fwd+bwd "
                 f"{base['graph_lstm']:.3f} s + schedule {base['schedule']:.4f} s "
                 f"({100 * graph / step:.1f} %), the rest (heads, pool/unpool, loss, "
                 f"optimiser, timed as the difference) {rest:.3f} s ({100 * rest / step:.1f} %)")
        print_fn(f"  SLIC + graph building: {1e3 * slic_s:.0f} ms per image (one thread) = "
                 f"{100 * slic_s / (slic_s + per_image):.1f} % of the time per image when "
                 f"graphs are built on the fly; 0 when read from the cache")
    return rows
