#!/usr/bin/env python
"""Segment images with a trained checkpoint: a label PNG (palette) and an overlay per image.

Examples::

    python scripts/segment.py --checkpoint runs/synthetic/best.pt photo.jpg --out seg/
    python scripts/segment.py --checkpoint best.pt images_folder/ --out seg/
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _cli import ArgumentParser, device, run_main  # noqa: E402


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--device", type=device, default="cpu")
    args = parser.parse_args(argv)

    from segmentation.workflows import segment_files

    for label_path, overlay_path in segment_files(args.checkpoint, args.images, args.out,
                                                  args.device):
        print(f"wrote {label_path} and {overlay_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
