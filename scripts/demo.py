#!/usr/bin/env python
"""The main job on an embedded default: train on procedural scenes, evaluate, segment, draw.

No user data and no downloads: the scenes are generated. Takes about 6 minutes on
two CPU cores. Outputs go to --out (default demo_out/).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _cli import ArgumentParser, non_negative_int, positive_int, run_main  # noqa: E402


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out", metavar="DIR")
    parser.add_argument("--scenes", type=positive_int, default=320, help="training scenes")
    parser.add_argument("--epochs", type=positive_int, default=12)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    args = parser.parse_args(argv)

    from segmentation.workflows import run_demo

    scores = run_demo(args.out, args.scenes, args.epochs, args.seed)
    print(f"done: held-out mean IoU {100 * scores['miou']:.2f}; outputs in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
