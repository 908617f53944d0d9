"""Evaluate a checkpoint on a VOC-layout split: mean IoU, per-class IoU, pixel accuracy.

Examples::

    python scripts/evaluate.py --data data/scenes --checkpoint runs/synthetic/best.pt
    python scripts/evaluate.py --data data/scenes --checkpoint best.pt --split val --json
    python scripts/evaluate.py --data VOC2012 --checkpoint best.pt --workers 4 --cache graphs/
    torchrun --nproc_per_node 4 scripts/evaluate.py --data VOC2012 --checkpoint best.pt \
        --device cuda --workers 4
"""

from __future__ import annotations

import sys

from segmentation.cli._common import (
    ArgumentParser,
    add_device_argument,
    add_threads_argument,
    check_writable_folder,
    non_negative_int,
    positive_int,
    run_main,
    start_process,
)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, metavar="DIR", help="VOC-layout folder")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT")
    parser.add_argument("--split", default="val")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (miou, per_class_iou, pixel_accuracy)")
    add_device_argument(parser)
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="images per batch (per process); images of one size share a "
                        "forward pass")
    parser.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                        help="DataLoader processes that read images and build superpixel "
                        "graphs while the model runs (0 = in the main process)")
    parser.add_argument("--cache", metavar="DIR",
                        help="cache superpixel graphs here (reused by later runs)")
    add_threads_argument(parser)
    parser.add_argument("--image-size", type=positive_int, metavar="S",
                        help="resize images to SxS first (default: original size)")
    args = parser.parse_args(argv)
    if args.cache is not None:
        check_writable_folder(args.cache, "--cache")

    from segmentation.engine.distributed import cleanup, is_main_process
    from segmentation.engine.evaluate import evaluate_checkpoint, format_scores

    process_device = start_process(args.threads, args.device)  # torchrun: cuda:LOCAL_RANK
    main_process = is_main_process()
    try:
        scores = evaluate_checkpoint(
            args.data, args.checkpoint, args.split, str(process_device), args.batch_size,
            args.image_size, cache_dir=args.cache, workers=args.workers)
    finally:
        cleanup()
    if main_process:
        if not args.json:
            print(f"{args.checkpoint} on {args.data} [{args.split}], {scores['images']} images")
        print(format_scores(scores, as_json=args.json))
    return 0


def console_main() -> int:
    """The ``graphlstm-evaluate`` command: :func:`main`, with bad input reported in one line."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(console_main())
