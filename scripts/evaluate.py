#!/usr/bin/env python
"""Evaluate a checkpoint on a VOC-layout split: mean IoU, per-class IoU, pixel accuracy.

Examples::

    python scripts/evaluate.py --data data/scenes --checkpoint runs/synthetic/best.pt
    python scripts/evaluate.py --data data/scenes --checkpoint best.pt --split val --json
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _cli import ArgumentParser, device, positive_int, run_main  # noqa: E402


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, metavar="DIR", help="VOC-layout folder")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT")
    parser.add_argument("--split", default="val")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (miou, per_class_iou, pixel_accuracy)")
    parser.add_argument("--device", type=device, default="cpu")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--image-size", type=positive_int, metavar="S",
                        help="resize images to SxS first (default: original size)")
    args = parser.parse_args(argv)

    from segmentation.workflows import evaluate_checkpoint, format_scores

    scores = evaluate_checkpoint(args.data, args.checkpoint, args.split, args.device,
                                 args.batch_size, args.image_size)
    if not args.json:
        print(f"{args.checkpoint} on {args.data} [{args.split}], {scores['images']} images")
    print(format_scores(scores, as_json=args.json))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
