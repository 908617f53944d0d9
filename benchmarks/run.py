"""Benchmarks: Graph LSTM on SLIC graphs, MD-LSTM and Grid LSTM on images.

Examples::

    python scripts/benchmark.py graph-lstm          # ~1,000 and ~4,000 superpixels; 1, 2 threads
    python scripts/benchmark.py graph-lstm --quick  # ~1,000 superpixels
    python scripts/benchmark.py graph-lstm --device cuda  # triton vs torch engine (docs/gpu.md)
    python scripts/benchmark.py typed-cells         # MDLSTMCell etc. on lattice graphs
    python scripts/benchmark.py md-lstm grid-lstm
    python scripts/benchmark.py inference             # one 321x321 image, SLIC + network
    python scripts/benchmark.py levels --out levels.png
    python scripts/benchmark.py train                 # training images/s, 1 and 2 processes
    python scripts/benchmark.py train --device cuda --backbone resnet50 --amp --processes 1
    python scripts/benchmark.py reach --reach-out reach.png   # reach of four orders
    python scripts/benchmark.py segment               # segment.py images/s, workers x batch
    python scripts/benchmark.py segment-memory --images 1000 --size 1024x768
"""

from __future__ import annotations

import argparse
import os
import sys

from segmentation.cli._common import (
    ArgumentParser,
    device,
    image_size,
    int_list,
    positive_int,
    run_main,
)
from segmentation.models.segmenter import BACKBONES, UNPOOLS


def process_counts(text: str) -> tuple[int, ...]:
    """``1,2`` -> (1, 2): positive process counts."""
    try:
        counts = tuple(positive_int(part) for part in text.split(","))
    except Exception:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, got {text!r}") from None
    return counts


CASES = ("graph-lstm", "typed-cells", "md-lstm", "grid-lstm", "inference", "levels", "train",
         "reach", "segment", "segment-memory")


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", default=["graph-lstm"], metavar="CASE",
                        help=f"what to measure: {', '.join(CASES)} or all (default: graph-lstm)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (default 1: shared machines stall OpenMP); the "
                             "graph-lstm case measures 1 and 2 threads side by side")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed repeats (median)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller graph-lstm run: ~1,000 superpixels only")
    parser.add_argument("--out", default="levels.png", help="PNG written by the levels case")
    parser.add_argument("--reach-out", default="reach.png",
                        help="PNG written by the reach case")
    parser.add_argument("--device", type=device, default="cpu",
                        help="device of the graph-lstm case (e.g. cuda)")
    parser.add_argument("--image", default="astronaut",
                        help="graph-lstm case: the scikit-image photograph whose SLIC graphs "
                             "are measured (default astronaut; e.g. coffee, chelsea)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="graph-lstm case: wall time (default) or the thread's CPU time, "
                             "which a busy machine does not inflate (1 thread only)")
    train = parser.add_argument_group("train case")
    train.add_argument("--processes", type=process_counts, metavar="N[,N...]",
                       help="process counts to compare (default: 1,2; on CUDA 1,2 with 2 GPUs)")
    train.add_argument("--steps", type=positive_int, default=3, help="timed steps (median)")
    train.add_argument("--backbone", choices=BACKBONES,
                       default="small")
    train.add_argument("--batch-size", type=positive_int, default=8, help="global batch")
    train.add_argument("--amp", action="store_true", help="mixed precision")
    train.add_argument("--unpool", choices=UNPOOLS, default="hard",
                       help="how node states return to the pixels (ModelConfig.unpool)")
    seg = parser.add_argument_group("segment and segment-memory cases")
    seg.add_argument("--images", type=positive_int, metavar="N",
                     help="generated images (default: 16 for segment, 1000 for segment-memory)")
    seg.add_argument("--size", type=image_size, metavar="WxH",
                     help="image size (default: 512 for segment, 1024x768 for segment-memory)")
    seg.add_argument("--workers", type=int_list(0), default=None, metavar="N[,N...]",
                     help="DataLoader workers to compare (default 0,1,2; segment-memory: 0)")
    seg.add_argument("--batch-sizes", type=int_list(1), default=None, metavar="B[,B...]",
                     help="batch sizes to compare (default 1,4; segment-memory: 1)")
    seg.add_argument("--rounds", type=positive_int, default=2,
                     help="segment: rounds over the configurations (median)")
    seg.add_argument("--checkpoint", metavar="CKPT",
                     help="model to use (default: an untrained model of the default config)")
    seg.add_argument("--width", type=positive_int, default=32,
                     help="segment-memory: pixel feature channels of the untrained model")
    seg.add_argument("--hidden", type=positive_int, default=64,
                     help="segment-memory: Graph LSTM hidden size of the untrained model")
    seg.add_argument("--n-segments", type=positive_int, default=150,
                     help="segment-memory: superpixels of the untrained model")
    args = parser.parse_args(argv)
    # "all" leaves out segment-memory: a thousand large images take hours on a CPU.
    cases = [c for c in CASES if c != "segment-memory"] if "all" in args.cases else args.cases
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r}; choose from {', '.join(CASES)} or all")
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be positive")
    if "segment" in cases and args.size is not None and args.size[0] != args.size[1]:
        parser.error("the segment case takes a square --size (e.g. --size 512)")

    if "graph-lstm" in cases:
        from benchmarks.layers.graph_lstm import sample_image

        try:
            sample_image(args.image)
        except ValueError as error:
            parser.error(f"--image: {error}")

    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"load average {load:.2f} (figures are only meaningful on an idle machine)")
    for case in cases:
        if case == "graph-lstm" and torch.device(args.device).type == "cuda":
            # On a GPU: the Triton engine against the torch engine and GatedGraphConv.
            from benchmarks.gpu.graph_lstm import bench

            bench(torch.device(args.device), sizes=(1000,) if args.quick else (1000, 4000),
                  repeats=args.repeats)
        elif case == "graph-lstm":
            from benchmarks.layers.graph_lstm import bench_graph_lstm, bench_grid_schedule

            bench_graph_lstm(sizes=(1000,) if args.quick else (1000, 4000),
                             repeats=args.repeats, device=args.device, clock=args.clock,
                             image=args.image)
            bench_grid_schedule(300 if args.quick else 1000)
        elif case == "typed-cells":
            from benchmarks.layers.graph_lstm import bench_typed_cells

            bench_typed_cells(sides=(32,) if args.quick else (32, 64), repeats=args.repeats)
        elif case == "md-lstm":
            from benchmarks.layers.lattice import bench_md_lstm

            bench_md_lstm(args.repeats, args.threads)
        elif case == "grid-lstm":
            from benchmarks.layers.lattice import bench_grid_lstm

            bench_grid_lstm(args.repeats, args.threads)
        elif case == "inference":
            from benchmarks.layers.graph_lstm import bench_inference

            bench_inference(repeats=max(3, args.repeats // 2))
        elif case == "train":
            from benchmarks.training.throughput import bench_train

            bench_train(processes=args.processes, steps=args.steps,
                        device=args.device, backbone=args.backbone,
                        batch_size=args.batch_size, amp=args.amp, threads=args.threads,
                        unpool=args.unpool)
        elif case == "segment":
            from benchmarks.segment.throughput import bench_segment_throughput

            size = args.size or (512, 512)
            bench_segment_throughput(
                images=args.images or 16, size=size[0], workers=args.workers or (0, 1, 2),
                batch_sizes=args.batch_sizes or (1, 4), rounds=args.rounds,
                checkpoint=args.checkpoint)
        elif case == "segment-memory":
            from benchmarks.segment.throughput import bench_segment_memory

            bench_segment_memory(
                images=args.images or 1000, size=args.size or (768, 1024),
                workers=(args.workers or (0,))[0], batch_size=(args.batch_sizes or (1,))[0],
                checkpoint=args.checkpoint, width=args.width, hidden=args.hidden,
                n_segments=args.n_segments)
        elif case == "levels":
            from segmentation.visualize import plot_levels_vs_superpixels

            path = plot_levels_vs_superpixels(args.out)
            print(f"wrote {path}")
        elif case == "reach":
            from benchmarks.reach.statistics import bench_reach

            bench_reach(repeats=max(1, args.repeats // 3), plot_path=args.reach_out)
    return 0


def console_main() -> int:
    """:func:`main`, with bad input reported in one line."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(console_main())
