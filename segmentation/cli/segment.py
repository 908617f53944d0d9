"""Segment images with a trained checkpoint: a label PNG (palette) and an overlay per image.

Every input is checked (header) before anything is written; then images stream
through DataLoader workers (--workers) and the model (--batch-size), and their
outputs are written atomically, with summary.json and summary.csv at the end.

Examples::

    python scripts/segment.py --checkpoint runs/synthetic/best.pt photo.jpg --out seg/
    python scripts/segment.py --checkpoint best.pt photos/ --out seg/ --workers 4 \\
        --batch-size 4 --skip-existing --save-probabilities
    torchrun --nproc_per_node 4 scripts/segment.py --checkpoint best.pt photos/ \\
        --out seg/ --device cuda --workers 4 --batch-size 8
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
    unit_float,
)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT")
    parser.add_argument("--out", required=True, metavar="DIR")
    add_device_argument(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, metavar="B",
                        help="images per forward pass (images of one size share it; "
                        "labels do not depend on it)")
    parser.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                        help="DataLoader processes that decode images and build superpixel "
                        "graphs while the model runs (0 = in the main process)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip images whose outputs all exist (rerun a stopped command "
                        "with it to finish the job)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write NAME_probabilities.npz (float16 [K, H, W], "
                        "compressed)")
    parser.add_argument("--no-overlay", action="store_true",
                        help="do not write NAME_overlay.png")
    parser.add_argument("--alpha", type=unit_float, default=0.5,
                        help="opacity of the class colours in the overlay (0-1)")
    add_threads_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_writable_folder(args.out, "--out")

    from segmentation.engine.distributed import cleanup, is_main_process
    from segmentation.inference.files import segment_files

    device = start_process(args.threads, args.device)  # torchrun: join the group, cuda:LOCAL_RANK
    main_process = is_main_process()
    try:
        summary = segment_files(
            args.checkpoint, args.images, args.out, device, args.alpha,
            batch_size=args.batch_size, workers=args.workers,
            skip_existing=args.skip_existing, overlay=not args.no_overlay,
            save_probabilities=args.save_probabilities, progress=not args.no_progress,
            log=print,
        )
    finally:
        cleanup()
    if main_process:
        rate = summary["images_per_second"] or 0.0
        processes = f", {summary['processes']} processes" if summary["processes"] > 1 else ""
        print(f"segmented {summary['images']} images ({summary['skipped']} skipped) in "
              f"{summary['seconds']:.1f} s, {rate:.2f} images/s{processes} -> {args.out} "
              f"(summary.json, summary.csv)")
    return 0


def console_main() -> int:
    """The ``graphlstm-segment`` command: :func:`main`, with bad input reported in one line."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(console_main())
