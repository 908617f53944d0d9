"""The Graph LSTM on a GPU: the Triton engine against the PyTorch engine and PyG's
``GatedGraphConv(64, num_layers=1)``, on SLIC graphs.

Graphs: one of ~1,000 and one of ~4,000 superpixels (the scikit-image astronaut),
and a PyG batch of 8 graphs of ~1,000 superpixels (the same SLIC graph with 8
different confidence fields, so 8 different update orders). Per graph and engine,
median milliseconds (CUDA events through ``triton.testing.do_bench`` on a GPU; a
wall clock elsewhere) of ``GraphLSTM(64, 64)`` with a previous state and without
one, forward (no autograd) and forward + backward, the schedule given; of the
schedule itself (scores on the device to a schedule on the device); and of
``GatedGraphConv``. Before the tables, the Triton engine's output and gradients
are compared with the PyTorch engine's on every graph.

Usage::

    python -m benchmarks.gpu.graph_lstm                   # CUDA; prints Markdown tables
    python scripts/benchmark.py graph-lstm --device cuda  # the same, without the batch
    python -m benchmarks.gpu.graph_lstm --out tables.md   # also writes them to a file
    TRITON_INTERPRET=1 python -m benchmarks.gpu.graph_lstm --device cpu --sizes 60 \\
        --batch 2 --repeats 2                            # a smoke test of the script
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``fn()``: CUDA events (``do_bench``) on a GPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=max(50, 10 * repeats), return_mode="median"))
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def make_cases(sizes, batch: int, batch_size: int):
    """``(name, edge_index, score)`` of every graph to measure."""
    from torch_geometric.data import Batch, Data

    from benchmarks.layers.graph_lstm import sample_graph

    cases = []
    for n_segments in sizes:
        g = sample_graph(n_segments, seed=0)
        cases.append((f"1 x ~{n_segments}", g.edge_index, g.score))
    if batch > 1:
        graphs = [sample_graph(batch_size, seed=s) for s in range(batch)]
        data = Batch.from_data_list([Data(edge_index=g.edge_index, score=g.score,
                                          num_nodes=g.score.numel()) for g in graphs])
        cases.append((f"{batch} x ~{batch_size}", data.edge_index, data.score))
    return cases


def check_engines(layer, x, edge_index, schedule, state) -> float:
    """Largest difference between the Triton and the PyTorch engine, over the output
    and the gradients of the input, the state and the parameters."""
    from graphlstm import use_backend

    diffs = []
    results = {}
    for name in ("triton", "torch"):
        inputs = [t.detach().clone().requires_grad_() for t in (x, *state)]
        with use_backend(name):
            out, (h, m) = layer(inputs[0], edge_index, schedule=schedule,
                                state=(inputs[1], inputs[2]))
            grads = torch.autograd.grad((out * out).sum() + m.sum(),
                                        inputs + list(layer.parameters()))
        results[name] = (out.detach(), *grads)
    for a, b in zip(results["triton"], results["torch"], strict=True):
        diffs.append(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12)))
    return max(diffs)


def kernels_repeatable(schedule, hidden: int, device) -> bool:
    """Whether two runs of the Triton kernels (forward and backward, per-edge weights,
    one program per graph) agree bit for bit on random inputs: they add in a fixed
    order, so a difference means a race."""
    from graphlstm._triton import recurrence as tr

    gen = torch.Generator().manual_seed(0)
    n, e = schedule.num_nodes, schedule.visited_src_pos.numel()

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    index = (schedule.ptr, schedule.visited_ptr, schedule.visited_src_pos,
             schedule.visited_dst_local)
    forward = (rand(n, 3 * hidden), rand(n, hidden), rand(e, 2 * hidden).sigmoid(),
               0.3 * rand(3 * hidden, hidden), rand(e).sigmoid(), *index, False,
               tr.schedule_row_groups(schedule))
    grad_state = rand(n, 2 * hidden)
    runs = []
    for _ in range(2):
        state, gates, _, sums = tr.level_loop_forward(*forward)
        grads = tr.level_loop_backward(grad_state, state, gates, sums, *forward[2:5], *index,
                                       False, True, True, forward[-1])
        runs.append((state, *grads))
    return all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def bench(device: torch.device, sizes=(1000, 4000), batch: int = 8, batch_size: int = 1000,
          hidden: int = 64, repeats: int = 10, print_fn=print) -> list[str]:
    """Measure every case; returns the Markdown lines it printed."""
    lines: list[str] = []

    def emit(text=""):
        print_fn(text)
        lines.append(text)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    emit(f"# Graph LSTM on {name}: torch {torch.__version__}, H={hidden}, median ms")
    for case, edge_index, score in make_cases(sizes, batch, batch_size):
        bench_case(case, edge_index, score, device, hidden, repeats, emit)
    return lines


def bench_case(case: str, edge_index_cpu, score_cpu, device, hidden: int, repeats: int,
               emit) -> None:
    """One graph: the engines' agreement, then their times and GatedGraphConv's."""
    from torch_geometric.nn import GatedGraphConv

    from graphlstm import GraphLSTM, build_schedule, use_backend

    n = score_cpu.numel()
    edge_index, score = edge_index_cpu.to(device), score_cpu.to(device)
    schedule = build_schedule(edge_index_cpu, n, score=score_cpu).to(device)
    torch.manual_seed(0)
    layer = GraphLSTM(hidden, hidden).to(device)
    gated = GatedGraphConv(hidden, num_layers=1).to(device)
    x = torch.randn(n, hidden, device=device, requires_grad=True)
    state = tuple((0.5 * torch.randn(n, hidden, device=device)).requires_grad_() for _ in "hm")
    difference = check_engines(layer, x, edge_index, schedule, state)
    repeatable = kernels_repeatable(schedule, hidden, device)
    emit(f"\n## {case} superpixels: {n} nodes, {edge_index.size(1)} edges, "
         f"{schedule.num_levels} levels; triton vs torch engine: largest relative "
         f"difference {difference:.1e} (output and gradients); two runs of the kernels "
         f"{'identical' if repeatable else 'DIFFER (a race?)'}")

    def timed(forward, grad: bool) -> float:
        def run():
            out = forward()
            if grad:
                out.sum().backward()
        return median_ms(run if grad else torch.no_grad()(run), device, repeats)

    emit("\n| engine | state fwd | state fwd+bwd | no state fwd | no state fwd+bwd "
         "| schedule | state fwd+bwd, schedule built in the call |")
    emit("|---|---|---|---|---|---|---|")
    rows = {}
    for name in ("triton", "torch"):
        with use_backend(name):
            row = [
                timed(lambda: layer(x, edge_index, state=state, schedule=schedule)[0], False),
                timed(lambda: layer(x, edge_index, state=state, schedule=schedule)[0], True),
                timed(lambda: layer(x, edge_index, schedule=schedule)[0], False),
                timed(lambda: layer(x, edge_index, schedule=schedule)[0], True),
                median_ms(lambda: build_schedule(edge_index, n, score=score), device,
                          repeats),
                timed(lambda: layer(x, edge_index, state=state, score=score)[0], True),
            ]
        rows[name] = row
        emit(f"| {name} | " + " | ".join(f"{t:.3f}" for t in row) + " |")
    gated_fwd = timed(lambda: gated(x, edge_index), False)
    gated_both = timed(lambda: gated(x, edge_index), True)
    emit(f"| GatedGraphConv({hidden}, num_layers=1) | | | {gated_fwd:.3f} | "
         f"{gated_both:.3f} | | |")
    t, p = rows["triton"], rows["torch"]
    emit(f"\nWith a previous state, forward + backward: triton / GatedGraphConv "
         f"x{t[1] / gated_both:.2f}, torch engine / triton x{p[1] / t[1]:.1f}; "
         f"forward: torch / triton x{p[0] / t[0]:.1f}.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="default cuda")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 4000],
                        help="superpixels of the single graphs (default 1000 4000)")
    parser.add_argument("--batch", type=int, default=8, help="graphs in the batch (default 8)")
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="superpixels of each graph of the batch (default 1000)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("graph_lstm: error: --device cuda, but CUDA is not available", file=sys.stderr)
        return 1
    if args.repeats < 1 or args.hidden < 1 or args.batch < 0 or min(args.sizes, default=1) < 2:
        print("graph_lstm: error: --repeats, --hidden, --sizes must be positive",
              file=sys.stderr)
        return 1
    lines = bench(device, tuple(args.sizes), args.batch, args.batch_size, args.hidden,
                  args.repeats)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
