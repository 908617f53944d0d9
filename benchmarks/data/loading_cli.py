"""Peak memory of training on lazily built superpixel graphs, and the disk cache.

Usage::

    python -m benchmarks.data.loading_cli [--images 2000] [--size 321] [--batch-size 8]
        [--workers 2] [--epochs 2] [--device cpu] [--max-steps N] [--data DIR] [--work DIR]

Writes ``--images`` procedural scenes of ``--size``² pixels in the VOC layout
(JPEG, in a temporary folder unless ``--work``), then trains the default
model on them with ``--workers`` DataLoader processes building the graphs
into an empty cache, and prints per epoch: batches, optimiser steps, time,
SLIC runs (counted in every process), cache hits, files written or rewritten
in the cache, and the peak RSS of the main process, and the peak RSS and PSS
of main + workers. Target: peak under 2 GiB, and the second
epoch runs no SLIC and rewrites no cache file. ``--max-steps`` trains on the
first N batches of each epoch only (for a slow CPU); the other batches still
go through the whole data pipeline. Last, two training steps alone in a
fresh process show how much of the peak is the model's own step. First of
all it prints the median time to generate one 96×96 procedural scene (the
target is under 5 ms).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from segmentation.cli._common import (
    ArgumentParser,
    device,
    non_negative_int,
    positive_int,
    run_main,
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=positive_int, default=2000)
    parser.add_argument("--size", type=positive_int, default=321, help="image side (321)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="DataLoader processes (2)")
    parser.add_argument("--epochs", type=positive_int, default=2)
    parser.add_argument("--n-segments", type=positive_int, default=150)
    parser.add_argument("--device", type=device, default="cpu")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--max-steps", type=non_negative_int, metavar="N",
                        help="optimiser steps per epoch (default: every batch; 0: the data "
                        "pipeline alone)")
    parser.add_argument("--augment-crop", type=positive_int, metavar="S",
                        help="augment (flip, scale, SxS crop) the training graphs")
    parser.add_argument("--data", metavar="DIR", help="use this VOC folder instead of writing one")
    parser.add_argument("--work", metavar="DIR",
                        help="write the scenes and the cache here (default: a temporary folder)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from benchmarks.data.loading import (
        bench_data,
        format_reports,
        model_step_memory,
        scene_generation_seconds,
        write_scenes_voc,
    )

    torch.set_num_threads(args.threads)
    print(f"scene generation: {scene_generation_seconds() * 1e3:.1f} ms per 96x96 scene "
          "(median of 40; target under 5 ms)", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        data = Path(args.data) if args.data else work / "scenes"
        if not args.data:
            start = time.perf_counter()
            write_scenes_voc(data, args.images, (args.size, args.size))
            print(f"wrote {args.images} scenes of {args.size}x{args.size} to {data} in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        cache = work / "cache"
        cache.mkdir(parents=True, exist_ok=False)
        print(f"device {args.device}, torch {torch.__version__}, {args.threads} thread(s), "
              f"{args.workers} workers, batch {args.batch_size}, {args.n_segments} segments, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        reports, peak_main = bench_data(
            data, cache, epochs=args.epochs, batch_size=args.batch_size, workers=args.workers,
            n_segments=args.n_segments, device=args.device, max_steps=args.max_steps,
            augment_crop=args.augment_crop, log=lambda line: print(line, flush=True))
        print(format_reports(reports, peak_main))
        before, after = model_step_memory(data, cache, args.batch_size, args.n_segments,
                                          args.device, args.threads)
        print(f"two training steps alone (batch {args.batch_size}, fresh process, no loader): "
              f"peak RSS {before / 2**20:.0f} MiB before, {after / 2**20:.0f} MiB after "
              f"(+{(after - before) / 2**20:.0f} MiB for the model step)")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


def console_main() -> int:
    """:func:`main`, with bad input reported in one line."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(console_main())
