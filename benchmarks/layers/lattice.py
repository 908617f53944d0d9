"""Benchmarks of the lattice layers: the anti-diagonal wavefront against a naive per-cell loop.

Run directly (``python -m benchmarks.layers.lattice --help``) or through
``python -m benchmarks.run md-lstm|grid-lstm``. Timings are medians of wall time
with ``torch.set_num_threads(threads)``; the load average is printed because
the numbers mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from benchmarks.layers.graph_lstm import median_time
from graphlstm.nn.grid_lstm import GridLSTM
from graphlstm.nn.md_lstm import MDLSTM
from graphlstm.reference.lattice import lattice_scan_reference

BATCH, CHANNELS, HIDDEN, SIZE = 8, 16, 32, 64


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _bench_layer(name: str, layer, repeats: int, threads: int, naive_repeats: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE)
    cells = [layer.cells[0][k] for k in range(layer.num_directions)]

    def fast_forward():
        with torch.no_grad():
            layer(x)

    def fast_backward():
        layer.zero_grad(set_to_none=True)
        layer(x)[0].square().mean().backward()

    def naive(direction_cells):
        return torch.cat(
            [lattice_scan_reference(c, x, k)[0] for k, c in enumerate(direction_cells)], dim=1
        )

    def naive_forward():
        with torch.no_grad():
            naive(cells)

    def naive_backward():
        layer.zero_grad(set_to_none=True)
        naive(cells).square().mean().backward()

    steps = 2 * SIZE - 1
    print(
        f"{name} 2-D, {layer.num_directions} directions, batch {BATCH}, {CHANNELS} input "
        f"channels, hidden {HIDDEN}, {SIZE}x{SIZE} (threads={threads}, load {_load()})"
    )
    print(f"  sequential steps (H+W-1): {steps}")
    res = {"steps": steps, "threads": threads}
    res["forward"] = median_time(fast_forward, repeats, warmup=1)
    print(f"  wavefront   forward  median {res['forward']:.3f} s ({repeats} runs)")
    res["forward_backward"] = median_time(fast_backward, repeats, warmup=1)
    print(f"  wavefront   fwd+bwd  median {res['forward_backward']:.3f} s ({repeats} runs)")
    res["naive_forward"] = median_time(naive_forward, naive_repeats, warmup=1)
    res["speedup_forward"] = res["naive_forward"] / res["forward"]
    print(
        f"  naive loop  forward  median {res['naive_forward']:.3f} s ({naive_repeats} runs, "
        f"no autograd)  -> wavefront {res['speedup_forward']:.1f}x faster"
    )
    res["naive_forward_backward"] = median_time(naive_backward, naive_repeats, warmup=1)
    res["speedup_forward_backward"] = res["naive_forward_backward"] / res["forward_backward"]
    print(
        f"  naive loop  fwd+bwd  median {res['naive_forward_backward']:.3f} s "
        f"({naive_repeats} runs, autograd)  -> wavefront "
        f"{res['speedup_forward_backward']:.1f}x faster"
    )
    print(f"  load after: {_load()}")
    return res


def bench_md_lstm(repeats: int = 5, threads: int = 1, naive_repeats: int | None = None) -> dict:
    """2-D MD-LSTM, all 4 directions: wavefront vs naive per-pixel loop, then stability."""
    layer = MDLSTM(CHANNELS, HIDDEN, 2, directions="all")
    naive_repeats = naive_repeats or max(1, repeats // 3)
    res = _bench_layer("MD-LSTM", layer, repeats, threads, naive_repeats)
    res["stability"] = stability_demo()
    return res


def bench_grid_lstm(repeats: int = 5, threads: int = 1, naive_repeats: int | None = None) -> dict:
    """2-D Grid LSTM, all 4 directions: wavefront vs naive per-pixel loop; then priority=0."""
    layer = GridLSTM(CHANNELS, HIDDEN, 2, directions="all")
    naive_repeats = naive_repeats or max(1, repeats // 3)
    res = _bench_layer("Grid LSTM", layer, repeats, threads, naive_repeats)
    prio = GridLSTM(CHANNELS, HIDDEN, 2, directions="all", priority=0)
    torch.manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE)

    def prio_forward():
        with torch.no_grad():
            prio(x)

    res["priority_forward"] = median_time(prio_forward, repeats, warmup=1)
    print(
        f"  priority=0  forward  median {res['priority_forward']:.3f} s ({repeats} runs; "
        f"a second GEMM per step)  -> {res['priority_forward'] / res['forward']:.2f}x plain"
    )
    return res


def stability_demo(sizes=(32, 64, 128, 256), forget_bias: float = 3.0) -> dict:
    """Plain vs stable MD-LSTM: |c| at the last cell of the scan as the grid grows.

    One random input channel, hidden 4, default initialisation plus a forget
    bias of ``forget_bias`` (as often used to help long-range memory). The
    plain cell adds both predecessors' memories, so |c| grows with the number
    of lattice paths to the corner; the stable cell takes a convex combination,
    so |c| <= 1 / (1 - max forget gate).
    """
    torch.manual_seed(0)
    print(f"Stability: plain vs stable MD-LSTM, hidden 4, forget bias {forget_bias}, float32")
    out = {}
    for stable in (False, True):
        layer = MDLSTM(1, 4, 2, stable=stable)
        cell = layer.cells[0][0]
        with torch.no_grad():
            cell.lin_x.bias[4 : 12 if not stable else 8] += forget_bias
        row = []
        for n in sizes:
            x = torch.randn(1, 1, n, n)
            with torch.no_grad():
                c_n = layer(x)[1][1]
            row.append(c_n.abs().max().item())
        out["stable" if stable else "plain"] = dict(zip(sizes, row, strict=True))
        shown = "  ".join(f"{n}x{n}: {v:.3g}" for n, v in zip(sizes, row, strict=True))
        print(f"  {'stable' if stable else 'plain '} max|c| at the last cell  {shown}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "which", nargs="?", default="all", choices=["md-lstm", "grid-lstm", "stability", "all"]
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the fast path")
    parser.add_argument("--naive-repeats", type=int, default=None,
                        help="timed runs of the naive loop (default: repeats // 3, at least 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or (args.naive_repeats or 1) < 1:
        print("error: --repeats, --naive-repeats and --threads must be positive", file=sys.stderr)
        return 2
    if args.which in ("md-lstm", "all"):
        bench_md_lstm(args.repeats, args.threads, args.naive_repeats)
    if args.which in ("grid-lstm", "all"):
        bench_grid_lstm(args.repeats, args.threads, args.naive_repeats)
    if args.which == "stability":
        stability_demo()
    return 0


if __name__ == "__main__":
    sys.exit(main())
