"""Time SLIC against building the region adjacency graph and node features.

Usage::

    python -m benchmarks.data.superpixels [--size 512] [--n-segments 1000] [--repeats 7]

Target: on a 512×512 image with 1,000 superpixels, RAG +
features take at most 20 % of the SLIC time. Single-threaded torch, so the
numbers do not depend on how many cores the machine has.
"""

from __future__ import annotations

import argparse
import sys

# Run from a checkout without installing the package.
import numpy as np
import torch
from skimage import data, transform

from benchmarks.layers.graph_lstm import median_time
from segmentation.cli._common import ArgumentParser, positive_int
from segmentation.data.adjacency import region_adjacency
from segmentation.data.features import superpixel_features_and_centroids
from segmentation.data.superpixels import slic_superpixels

ACCEPTANCE_RATIO = 0.20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=positive_int, default=512,
                        help="image side in pixels (512)")
    parser.add_argument("--n-segments", type=positive_int, default=1000,
                        help="SLIC segments (1000)")
    parser.add_argument("--repeats", type=positive_int, default=7, help="timed runs per step (7)")
    parser.add_argument(
        "--connectivity", type=int, default=4, choices=(4, 8), help="RAG connectivity (4)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit with status 1 if graph+features exceed {ACCEPTANCE_RATIO * 100:.0f}%% of SLIC",
    )
    args = parser.parse_args(argv)
    if args.size < 2:
        parser.error(f"--size must be >= 2, got {args.size}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not 1 <= args.n_segments <= args.size * args.size:
        parser.error(f"--n-segments must be in 1..{args.size * args.size}, got {args.n_segments}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    image = transform.resize(data.astronaut(), (args.size, args.size), anti_aliasing=True)
    image = np.rint(image * 255).astype(np.uint8)

    labels = slic_superpixels(image, n_segments=args.n_segments)
    slic_s = median_time(
        lambda: slic_superpixels(image, n_segments=args.n_segments), args.repeats, warmup=1
    )
    rag_s = median_time(
        lambda: region_adjacency(labels, args.connectivity), args.repeats, warmup=1
    )
    features_s = median_time(
        lambda: superpixel_features_and_centroids(image, labels), args.repeats, warmup=1
    )

    def graph_and_features() -> None:
        region_adjacency(labels, args.connectivity)
        superpixel_features_and_centroids(image, labels)

    graph_s = median_time(graph_and_features, args.repeats, warmup=1)
    edges = region_adjacency(labels, args.connectivity)[0].shape[1]
    ratio = graph_s / slic_s
    print(
        f"image {args.size}x{args.size}, n_segments={args.n_segments}: "
        f"{int(labels.max()) + 1} superpixels, {edges} directed edges "
        f"({args.connectivity}-connectivity), median of {args.repeats}"
    )
    print(f"SLIC                      {slic_s * 1e3:8.1f} ms")
    print(f"  region adjacency        {rag_s * 1e3:8.1f} ms")
    print(f"  features + centroids    {features_s * 1e3:8.1f} ms")
    print(f"graph + features          {graph_s * 1e3:8.1f} ms")
    verdict = "PASS" if ratio <= ACCEPTANCE_RATIO else "FAIL"
    print(f"ratio graph+features/SLIC {ratio:8.1%}  ({verdict}: <= {ACCEPTANCE_RATIO:.0%})")
    return 1 if args.check and ratio > ACCEPTANCE_RATIO else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, TypeError, OSError) as exc:
        print(f"bench_superpixels: error: {exc}", file=sys.stderr)
        sys.exit(2)
