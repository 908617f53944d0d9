"""Train the Graph LSTM segmentation model on a VOC-layout folder or on procedural scenes.

Examples::

    python scripts/train.py --synthetic 200 --epochs 15 --out runs/synthetic
    python scripts/train.py --data VOCdevkit/VOC2012 --n-segments 1000 --cache graphs \\
        --workers 4 --augment --crop-size 321 --epochs 50 --out runs/voc
    python scripts/train.py --synthetic 200 --epochs 30 --out runs/synthetic --resume
    python scripts/train.py --data VOCdevkit/VOC2012 --backbone resnet50 \\
        --backbone-weights resnet50-0676ba61.pth --freeze-bn --amp --device cuda ...
    torchrun --nproc_per_node 4 scripts/train.py ...   # several processes: DDP, same flags
    torchrun --nproc_per_node 4 --max-restarts 3 scripts/train.py ... \\
        --checkpoint-every 500 --resume auto           # a cluster job (docs/fault-tolerance.md)

Under torchrun, ``--batch-size`` is the global batch (split across the
processes) and ``--device cuda`` gives every process its ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import os
import sys

from segmentation.cli._common import (
    ArgumentParser,
    CLIError,
    add_device_argument,
    add_threads_argument,
    check_writable_folder,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run_main,
    start_process,
)
from segmentation.engine.train import LR_SCHEDULES
from segmentation.models.orders import ORDER_KINDS
from segmentation.models.segmenter import BACKBONES, UNPOOLS

#: Superpixels per image of ``--data``. On 128×128 texture mosaics every Graph
#: LSTM model scores higher with 300 than with 150, and the baseline without one
#: lower (docs/experiment/evolving-mosaics.md); the paper used about 1,000 on
#: PASCAL-size images.
DATA_N_SEGMENTS = 300
#: Superpixels per procedural scene of ``--synthetic`` (what their hops and the demo assume).
SYNTHETIC_N_SEGMENTS = 150


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", metavar="DIR", help="PASCAL VOC layout folder (JPEGImages/, "
                      "SegmentationClass/, ImageSets/Segmentation/{train,val}.txt)")
    data.add_argument("--synthetic", type=positive_int, metavar="N",
                      help="train on N procedural scenes (held-out validation scenes too)")
    parser.add_argument("--synthetic-val", type=positive_int, metavar="M",
                        help="validation scenes with --synthetic (default: N // 4, at least 8)")
    parser.add_argument("--train-split", default="train", help="split file for training")
    parser.add_argument("--val-split", default="val", help="split file for validation")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="where checkpoints go (last.pt, best.pt)")
    parser.add_argument("--epochs", type=positive_int, default=20)
    parser.add_argument("--batch-size", type=positive_int, default=8,
                        help="global batch (under torchrun: split across the processes)")
    parser.add_argument("--lr", type=positive_float, default=3e-3)
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="poly",
                        help="learning rate per step: poly = lr * (1 - step/steps)^0.9 "
                        "(default), or constant")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    add_device_argument(parser)
    parser.add_argument("--graph-layers", type=non_negative_int, default=2,
                        help="Graph LSTM layers (0 = the baseline without graph context)")
    parser.add_argument("--graph-model", choices=("stack", "evolving"), default="stack",
                        help="stack: the Graph LSTM layers share the superpixel graph; "
                        "evolving: regions merge between layers (structure-evolving LSTM)")
    parser.add_argument("--merge-weight", type=non_negative_float, default=1.0,
                        help="weight of the merge loss (--graph-model evolving)")
    parser.add_argument("--acceptance", choices=("clique", "graph"), default="clique",
                        help="one Metropolis-Hastings test per merged region (default) or per "
                        "image (--graph-model evolving)")
    parser.add_argument("--unpool", choices=UNPOOLS, default="hard",
                        help="how node states return to the pixels: each pixel its "
                        "superpixel's (hard), or a learnt mix with the superpixels next to it "
                        "(soft: sharper at superpixels that straddle two regions)")
    parser.add_argument("--order", default="confidence",
                        choices=ORDER_KINDS,
                        help="update order of the superpixels")
    parser.add_argument("--n-segments", type=positive_int, metavar="N",
                        help=f"SLIC superpixels per image (default: {DATA_N_SEGMENTS} with "
                        f"--data, {SYNTHETIC_N_SEGMENTS} with --synthetic, whose 96x96 scenes "
                        "are drawn for that many)")
    parser.add_argument("--compactness", type=positive_float, default=10.0)
    parser.add_argument("--hidden", type=positive_int, default=64, help="Graph LSTM hidden size")
    parser.add_argument("--width", type=positive_int, default=32, help="pixel feature channels")
    parser.add_argument("--image-size", type=positive_int, metavar="S",
                        help="resize images to SxS (optional: batches of different sizes are "
                        "padded)")
    parser.add_argument("--backbone", choices=BACKBONES, default="small",
                        help="small (from scratch) or a ResNet dilated to output stride 8")
    parser.add_argument("--backbone-weights", metavar="FILE",
                        help="torchvision ImageNet state dict of the ResNet (e.g. "
                        "resnet50-0676ba61.pth; never downloaded)")
    parser.add_argument("--freeze-bn", action="store_true",
                        help="keep BatchNorm statistics fixed while training (small batches)")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: bfloat16 on CPU, float16 + gradient scaling on "
                        "CUDA (the Graph LSTM stays float32)")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache", metavar="DIR",
                       help="cache superpixel graphs here (default: OUT/graph_cache), so that "
                       "SLIC runs once per image, not once per epoch")
    cache.add_argument("--no-cache", action="store_true",
                       help="build every graph again in every epoch (no files written)")
    parser.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                        help="DataLoader processes that build the graphs (0 = in the main one)")
    parser.add_argument("--augment", action="store_true",
                        help="random flip and scale (0.5-2.0) of the training images")
    parser.add_argument("--crop-size", type=positive_int, metavar="S",
                        help="with --augment: random SxS crop (padded with ignore)")
    add_threads_argument(parser)
    parser.add_argument("--resume", nargs="?", const="", metavar="CKPT",
                        help="continue from CKPT (default: OUT/last.pt); 'auto': from "
                        "OUT/last.pt when it exists, else start fresh (the same command line "
                        "for a first start and for every restart)")
    parser.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                        help="also write OUT/last.pt every N optimisation steps, with all that "
                        "an exact resumption in the middle of an epoch needs (default: at the "
                        "end of every epoch only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.crop_size is not None and not args.augment:
        parser.error("--crop-size needs --augment (the crop is part of the augmentation)")
    if args.n_segments is None:
        args.n_segments = SYNTHETIC_N_SEGMENTS if args.synthetic else DATA_N_SEGMENTS
    from segmentation.engine.distributed import (
        cleanup,
        is_main_process,
        launched_world_size,
    )

    # Checks that fail alike on every process come before the processes meet.
    world = launched_world_size()
    if args.batch_size % world:
        raise CLIError(f"--batch-size {args.batch_size} (the global batch) is not divisible by "
                       f"the number of processes, {world}")
    if args.backbone_weights is not None:
        if args.backbone == "small":
            raise CLIError("--backbone-weights needs a ResNet --backbone (resnet18, resnet34 "
                           "or resnet50), not small")
        from segmentation.models.backbones import load_resnet_state_dict

        try:  # fails fast if unusable
            load_resnet_state_dict(args.backbone_weights, args.backbone)
        except ValueError as err:
            raise CLIError(f"--backbone-weights: {err}") from None
    check_writable_folder(args.out, "--out")
    if args.cache is not None:
        check_writable_folder(args.cache, "--cache")
    resume = None
    if args.resume == "auto":
        # Every process looks before any of them can write: they agree.
        last = os.path.join(args.out, "last.pt")
        resume = last if os.path.isfile(last) else None
    elif args.resume is not None:
        resume = args.resume or os.path.join(args.out, "last.pt")
        if not os.path.isfile(resume):
            raise CLIError(f"--resume: checkpoint {resume!r} does not exist")
    _check_writable(args.out)
    device = start_process(args.threads, args.device)
    try:
        return _train(args, str(device), resume, is_main_process())
    finally:
        cleanup()


def _check_writable(folder: str) -> None:
    """Fail now, not after the first epoch, if checkpoints cannot be written into ``folder``."""
    import contextlib
    import glob
    import tempfile

    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise CLIError(f"--out: cannot write checkpoints into {folder!r}: "
                       f"{err.strerror or err}") from None
    # What a process killed in the middle of a checkpoint write leaves behind.
    for leftover in glob.glob(os.path.join(glob.escape(folder), ".*.pt.*.tmp")):
        with contextlib.suppress(OSError):  # another process of the group was first
            os.unlink(leftover)


def _cache_dir(args) -> str | None:
    if args.no_cache:
        return None
    return args.cache if args.cache is not None else os.path.join(args.out, "graph_cache")


def _train(args, device: str, resume, main: bool) -> int:
    from segmentation.data.loading import load_training_data
    from segmentation.engine.train import TrainConfig, train
    from segmentation.models.segmenter import ModelConfig

    say = print if main else (lambda *a, **k: None)
    train_graphs, val_graphs, class_names = load_training_data(
        data=args.data, synthetic=args.synthetic, synthetic_val=args.synthetic_val,
        seed=args.seed, train_split=args.train_split, val_split=args.val_split,
        n_segments=args.n_segments, compactness=args.compactness, image_size=args.image_size,
        cache_dir=_cache_dir(args), augment=args.augment, crop_size=args.crop_size,
    )
    model_config = ModelConfig(
        num_classes=len(class_names), width=args.width, hidden=args.hidden,
        graph_layers=args.graph_layers, order=args.order, n_segments=args.n_segments,
        compactness=args.compactness, backbone=args.backbone, graph_model=args.graph_model,
        merge_weight=args.merge_weight, acceptance=args.acceptance, unpool=args.unpool,
    )
    train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               seed=args.seed, device=device, lr_schedule=args.lr_schedule,
                               amp=args.amp, freeze_bn=args.freeze_bn,
                               backbone_weights=args.backbone_weights)
    if args.backbone != "small" and args.backbone_weights is None and resume is None:
        frozen = ("; with --freeze-bn its BatchNorm layers keep their initial statistics "
                  "(mean 0, variance 1)" if args.freeze_bn else "")
        say(f"note: --backbone {args.backbone} starts from random weights (ImageNet weights: "
            f"--backbone-weights FILE, a torchvision state dict){frozen}", file=sys.stderr)
    from segmentation.engine.distributed import get_world_size

    world = get_world_size()
    say(f"{len(train_graphs)} training and {len(val_graphs)} validation images, "
        f"{len(class_names)} classes; checkpoints in {args.out}"
        + (f"; {world} processes, {args.batch_size // world} images each per step"
           if world > 1 else ""))
    if args.resume == "auto" and resume is None:
        say(f"--resume auto: no {os.path.join(args.out, 'last.pt')} yet, starting fresh")
    from segmentation.engine.preemption import PreemptionHandler, TrainingInterrupted

    try:
        # SIGTERM and SIGINT: finish the step, write last.pt, stop (a second one: at once).
        with PreemptionHandler() as preemption:
            result = train(model_config, train_config, train_graphs, val_graphs, args.out,
                           class_names, resume=resume, progress=not args.no_progress,
                           num_workers=args.workers, checkpoint_every=args.checkpoint_every,
                           preemption=preemption)
    except TrainingInterrupted as stop:
        say(f"{os.path.basename(sys.argv[0] or 'train')}: {stop}; to resume, run the same "
            f"command with --resume auto (or --resume {stop.checkpoint})", file=sys.stderr)
        return stop.exit_code
    say(f"best val mIoU {100 * result['best_miou']:.2f} at epoch {result['best_epoch'] + 1}: "
        f"{os.path.join(args.out, 'best.pt')}")
    return 0


def console_main() -> int:
    """The ``graphlstm-train`` command: :func:`main`, with bad input reported in one line."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(console_main())
