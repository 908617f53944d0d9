"""What the scripts do, as library functions: load data, evaluate, segment files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from segmentation.data import RandomFlipScaleCrop, SuperpixelDataset
from segmentation.datasets import SYNTHETIC_CLASSES, SyntheticScenes, VOCSegmentation
from segmentation.images import read_image
from segmentation.inference import IMAGE_SUFFIXES, list_images, segment_files
from segmentation.training import evaluate, load_checkpoint, model_from_checkpoint
from segmentation.transforms import SuperpixelGraph

__all__ = [
    "IMAGE_SUFFIXES",
    "evaluate_checkpoint",
    "format_scores",
    "list_images",
    "load_training_data",
    "segment_files",
]

# Validation scenes are drawn from a stream of seeds far from the training ones.
_SYNTHETIC_VAL_OFFSET = 1_000_003


def load_training_data(
    data: str | None = None,
    synthetic: int | None = None,
    synthetic_val: int | None = None,
    seed: int = 0,
    train_split: str = "train",
    val_split: str = "val",
    n_segments: int = 150,
    compactness: float = 10.0,
    image_size: int | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
    augment: bool = False,
    crop_size: int | None = None,
) -> tuple[SuperpixelDataset, SuperpixelDataset, list[str]]:
    """Lazy superpixel-graph datasets of the training and validation images, and the class names.

    Exactly one of ``data`` (a VOC-layout folder) and ``synthetic`` (a number
    of procedural scenes) must be given. Graphs are built when a
    ``DataLoader`` asks for them (see :class:`segmentation.data.SuperpixelDataset`),
    and read back from ``cache_dir`` after the first time. Images may differ
    in size; ``image_size`` resizes them all to one square. ``augment``
    flips, rescales (0.5-2.0) and, with ``crop_size``, crops the training
    images (never the validation ones), from the seed ``seed``.
    ``progress`` is accepted for compatibility; nothing is built up front.
    """
    del progress
    if (data is None) == (synthetic is None):
        raise ValueError("give exactly one of 'data' (a folder) and 'synthetic' (a count)")
    if crop_size is not None and not augment:
        raise ValueError("crop_size needs augment=True (the crop is part of the augmentation)")
    augmentation = RandomFlipScaleCrop(crop_size) if augment else None
    if synthetic is not None:
        n_val = synthetic_val or max(8, synthetic // 4)
        train_samples = SyntheticScenes(synthetic, seed=seed)
        val_samples = SyntheticScenes(n_val, seed=seed + _SYNTHETIC_VAL_OFFSET)
        class_names = list(SYNTHETIC_CLASSES)
    else:
        train_samples = VOCSegmentation(data, split=train_split)
        val_samples = VOCSegmentation(data, split=val_split,
                                      num_classes=train_samples.num_classes)
        class_names = list(train_samples.class_names)
    transform = SuperpixelGraph(n_segments=n_segments, compactness=compactness,
                                add_features=False, cache_dir=cache_dir)
    train_set = SuperpixelDataset(train_samples, transform, augmentation, seed,
                                  image_size=image_size)
    val_set = SuperpixelDataset(val_samples, transform, image_size=image_size)
    return train_set, val_set, class_names


def evaluate_checkpoint(
    data: str,
    checkpoint: str,
    split: str = "val",
    device: str = "cpu",
    batch_size: int = 8,
    image_size: int | None = None,
    cache_dir: str | None = None,
    workers: int = 0,
) -> dict:
    """Scores of a checkpoint on a VOC-layout split (see :func:`evaluate`).

    Streams: images are read and their graphs built (in ``workers``
    ``DataLoader`` processes) batch by batch, so memory does not grow with the
    split. Under ``torchrun`` every process evaluates its share of the batches
    and the confusion matrices are summed: the scores are those of one process.
    """
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload, device)
    config = model.config
    class_names = payload.get("class_names")
    dataset = VOCSegmentation(data, split=split, num_classes=config.num_classes)
    if class_names is None or len(class_names) != config.num_classes:
        class_names = dataset.class_names
    if len(dataset) == 0:
        raise ValueError(f"split {split!r} of {data!r} lists no images")
    transform = SuperpixelGraph(n_segments=config.n_segments, compactness=config.compactness,
                                add_features=False, cache_dir=cache_dir)
    graphs = SuperpixelDataset(dataset, transform, image_size=image_size)
    scores = evaluate(model, graphs, batch_size, device, class_names, num_workers=workers)
    scores["images"] = len(graphs)
    return scores


def format_scores(scores: dict, as_json: bool = False) -> str:
    """A table (or one JSON object) of ``miou``, ``per_class_iou``, ``pixel_accuracy``."""
    if as_json:
        return json.dumps({k: scores[k] for k in ("miou", "per_class_iou", "pixel_accuracy")})
    lines = [f"{'class':<20s} {'IoU':>7s}", "-" * 28]
    for name, iou in scores["per_class_iou"].items():
        lines.append(f"{name:<20s} {'n/a' if iou is None else f'{100 * iou:6.2f}':>7s}")
    lines += ["-" * 28, f"{'mean IoU':<20s} {100 * scores['miou']:7.2f}",
              f"{'pixel accuracy':<20s} {100 * scores['pixel_accuracy']:7.2f}"]
    return "\n".join(lines)


def run_demo(out_dir: str | os.PathLike = "demo_out", scenes: int = 320, epochs: int = 12,
             seed: int = 0, log=print) -> dict:
    """The main job on its embedded default: procedural scenes, no user data.

    Trains the Graph LSTM model briefly on ``scenes`` procedural scenes, writes
    held-out scenes in the VOC layout, evaluates the best checkpoint on them,
    segments a few, and draws the update order of one. Returns the scores.
    """
    from segmentation.datasets import write_synthetic_voc
    from segmentation.model import ModelConfig
    from segmentation.training import TrainConfig, train

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
    write_synthetic_voc(data_dir, 0, 32, seed=seed + 2 * _SYNTHETIC_VAL_OFFSET)
    scores = evaluate_checkpoint(str(data_dir), str(checkpoint), split="val")
    log(format_scores(scores))
    images = sorted((data_dir / "JPEGImages").iterdir())[:4]
    summary = segment_files(str(checkpoint), images, seg_dir)
    log(f"4/4 segmented {summary['images']} scenes -> {seg_dir}")
    try:
        from segmentation.visualize import plot_update_order
    except ImportError:  # pictures of the order need the visualisation module
        return scores
    from segmentation.pipeline import load_segmenter

    image = read_image(images[0])
    pred = load_segmenter(checkpoint).predict(image)
    order_path = out_dir / "update_order.png"
    plot_update_order(image, pred.superpixels, pred.schedule, confidence=pred.confidence,
                      path=order_path)
    log(f"    update order of {images[0].name}: {order_path}")
    return scores
