"""The main job on an embedded default: train on procedural scenes, evaluate, segment, draw.

No user data and no downloads: the scenes are generated. Takes about 6 minutes on
two CPU cores. Outputs go to --out (default demo_out/).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from segmentation.cli._common import (
    ArgumentParser,
    check_writable_folder,
    non_negative_int,
    positive_int,
    run_main,
)


def run_demo(out_dir: str | os.PathLike = "demo_out", scenes: int = 320, epochs: int = 12,
             seed: int = 0, log=print) -> dict:
    """The main job on its embedded default: procedural scenes, no user data.

    Trains the Graph LSTM model briefly on ``scenes`` procedural scenes, writes
    held-out scenes in the VOC layout, evaluates the best checkpoint on them,
    segments a few, and draws the update order of one. Returns the scores.
    """
    from segmentation.data.datasets import write_synthetic_voc
    from segmentation.data.images import read_image
    from segmentation.data.loading import SYNTHETIC_VAL_SEED_OFFSET, load_training_data
    from segmentation.engine.evaluate import evaluate_checkpoint, format_scores
    from segmentation.engine.train import TrainConfig, train
    from segmentation.inference.files import segment_files
    from segmentation.inference.predictor import load_segmenter
    from segmentation.models.segmenter import ModelConfig
    from segmentation.visualize import plot_update_order

    out_dir = Path(out_dir)
    run_dir, data_dir, seg_dir = out_dir / "run", out_dir / "scenes", out_dir / "segmented"
    log(f"1/4 {scenes} procedural training scenes (graphs built in the first epoch, then "
        f"read from {out_dir / 'graph_cache'})")
    train_graphs, val_graphs, class_names = load_training_data(
        synthetic=scenes, seed=seed, cache_dir=str(out_dir / "graph_cache"))
    log(f"2/4 training the Graph LSTM model for {epochs} epochs -> {run_dir}")
    config = ModelConfig(num_classes=len(class_names))
    train(config, TrainConfig(epochs=epochs, seed=seed), train_graphs, val_graphs, run_dir,
          class_names, progress=False, log=lambda line: log("    " + line))
    checkpoint = run_dir / "best.pt"
    log(f"3/4 evaluating on held-out scenes written to {data_dir}")
    write_synthetic_voc(data_dir, 0, 32, seed=seed + 2 * SYNTHETIC_VAL_SEED_OFFSET)
    scores = evaluate_checkpoint(str(data_dir), str(checkpoint), split="val")
    log(format_scores(scores))
    images = sorted((data_dir / "JPEGImages").iterdir())[:4]
    summary = segment_files(str(checkpoint), images, seg_dir)
    log(f"4/4 segmented {summary['images']} scenes -> {seg_dir}")
    image = read_image(images[0])
    pred = load_segmenter(checkpoint).predict(image)
    order_path = out_dir / "update_order.png"
    plot_update_order(image, pred.superpixels, pred.schedule, confidence=pred.confidence,
                      path=order_path)
    log(f"    update order of {images[0].name}: {order_path}")
    return scores


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_out", metavar="DIR")
    parser.add_argument("--scenes", type=positive_int, default=320, help="training scenes")
    parser.add_argument("--epochs", type=positive_int, default=12)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    args = parser.parse_args(argv)
    check_writable_folder(args.out, "--out")

    scores = run_demo(args.out, args.scenes, args.epochs, args.seed)
    print(f"done: held-out mean IoU {100 * scores['miou']:.2f}; outputs in {args.out}/")
    return 0


def console_main() -> int:
    """The ``graphlstm-demo`` command: :func:`main`, with bad input reported in one line."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(console_main())
