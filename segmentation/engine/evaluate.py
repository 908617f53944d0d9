"""Evaluation: mean IoU, per-class IoU and pixel accuracy of a model or a checkpoint."""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from segmentation.data.datasets import VOCSegmentation
from segmentation.data.loading import SuperpixelDataset, group_by_size, pad_collate
from segmentation.data.transforms import SuperpixelGraph
from segmentation.engine.checkpoint import load_checkpoint, model_from_checkpoint
from segmentation.engine.distributed import process_batches, reduce_across_processes
from segmentation.engine.metrics import confusion_matrix, scores_from_confusion
from segmentation.models.segmenter import GraphLSTMSegmenter

__all__ = ["evaluate", "evaluate_checkpoint", "format_scores"]


def _model_inputs(batch) -> tuple:
    return batch.image, batch.superpixels, batch.edge_index, batch.ptr.diff(), batch.pos


@torch.no_grad()
def evaluate(
    model: GraphLSTMSegmenter,
    graphs: Sequence,
    batch_size: int = 8,
    device="cpu",
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    num_workers: int = 0,
) -> dict:
    """Mean IoU, per-class IoU and pixel accuracy of ``model`` on labelled graphs.

    ``graphs`` is a sequence or a (lazy) dataset of graphs. Every image is
    evaluated at its own size: images of one size share a batch, unpadded.

    Under several processes every process evaluates every ``world_size``-th
    batch of one process's batches (:func:`segmentation.engine.distributed.process_batches`:
    no image twice, every batch as one process computes it) and the confusion
    matrices are summed over the processes: every process returns the scores
    of the whole set, those of one process.
    """
    model.eval()
    device = torch.device(device)
    k = model.config.num_classes
    loader = DataLoader(graphs, batch_sampler=process_batches(len(graphs), batch_size),
                        collate_fn=list, num_workers=num_workers)
    generator = torch.Generator().manual_seed(seed)  # for order="random": same every time
    confusion = torch.zeros(k, k, dtype=torch.long)
    for chunk in loader:
        for group in group_by_size(chunk):
            batch = pad_collate(group).to(device)
            out = model(*_model_inputs(batch), generator)
            confusion += confusion_matrix(out.logits.argmax(1), batch.mask, k)
    confusion = reduce_across_processes(confusion)
    return scores_from_confusion(confusion, class_names)


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
