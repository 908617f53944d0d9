#!/usr/bin/env python
"""Context experiment: Graph LSTM (confidence / random / raster order) vs no Graph LSTM.

Same training budget and seeds for every configuration; test mIoU on held-out
procedural scenes, per seed, mean and standard deviation, as a markdown table.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _cli import ArgumentParser, non_negative_int, positive_int, run_main  # noqa: E402


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+",
                        default=["graph-lstm-confidence", "graph-lstm-random", "no-graph-lstm"],
                        help="graph-lstm-confidence, graph-lstm-random, graph-lstm-raster, "
                             "no-graph-lstm")
    parser.add_argument("--seeds", nargs="+", type=non_negative_int, default=[0, 1, 2])
    parser.add_argument("--scenes", type=positive_int, default=200)
    parser.add_argument("--test-scenes", type=positive_int, default=64)
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args(argv)

    import torch

    from segmentation.experiments import context_experiment, format_table

    torch.set_num_threads(args.threads)
    results = context_experiment(args.configs, args.seeds, args.scenes, args.test_scenes,
                                 args.epochs)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
