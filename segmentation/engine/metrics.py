"""Segmentation metrics from a confusion matrix: IoU per class, mean IoU, pixel accuracy."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "scores_from_confusion"]


def confusion_matrix(
    prediction: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """``[K, K]`` int64 counts: row = true class, column = predicted class.

    Pixels whose target is ``ignore_index`` are skipped. Targets outside
    ``0..K-1`` (other than ``ignore_index``) raise ``ValueError``.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"'prediction' has shape {tuple(prediction.shape)} but 'target' has "
            f"shape {tuple(target.shape)}"
        )
    pred = prediction.reshape(-1).long()
    true = target.reshape(-1).long()
    keep = true != ignore_index
    pred, true = pred[keep], true[keep]
    if true.numel() and (int(true.min()) < 0 or int(true.max()) >= num_classes):
        raise ValueError(
            f"'target' holds labels outside 0..{num_classes - 1} (and not {ignore_index})"
        )
    counts = torch.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def scores_from_confusion(confusion: Tensor, class_names=None) -> dict:
    """Mean IoU, per-class IoU and pixel accuracy.

    The IoU of a class that appears neither in the targets nor in the
    predictions is undefined (``nan``) and left out of the mean, as in the
    PASCAL VOC evaluation.

    Returns
    -------
    dict
        ``miou`` (float), ``per_class_iou`` (``{name: float or None}``),
        ``pixel_accuracy`` (float).
    """
    cm = confusion.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    valid = ~torch.isnan(iou)
    miou = float(iou[valid].mean()) if bool(valid.any()) else math.nan
    total = float(cm.sum())
    accuracy = float(tp.sum()) / total if total > 0 else math.nan
    names = class_names if class_names is not None else [str(k) for k in range(len(tp))]
    per_class = {
        str(name): (None if math.isnan(v) else float(v))
        for name, v in zip(names, iou.tolist(), strict=True)
    }
    return {"miou": miou, "per_class_iou": per_class, "pixel_accuracy": accuracy}
