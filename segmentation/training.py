"""Training and evaluation of :class:`segmentation.model.GraphLSTMSegmenter`.

Reproducible by construction: every epoch reseeds the data order and the
random number generator from ``(seed, epoch)``, and checkpoints hold the
model, the optimiser and the history, so a run resumed from its last
checkpoint gives the same result as one that never stopped. Checkpoints are
written atomically and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from segmentation.data import group_by_size, pad_collate
from segmentation.images import atomic_write
from segmentation.metrics import confusion_matrix, scores_from_confusion
from segmentation.model import GraphLSTMSegmenter, ModelConfig, segmentation_loss
from segmentation.transforms import SuperpixelGraph

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainConfig",
    "build_graphs",
    "evaluate",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]

CHECKPOINT_FORMAT = "graphlstm-segmentation/1"


LR_SCHEDULES = ("poly", "constant")


@dataclass
class TrainConfig:
    """Optimisation settings (saved in checkpoints).

    ``lr_schedule="poly"`` sets the learning rate of step ``t`` (of ``T`` in
    the whole run) to ``lr * (1 - t / T) ** 0.9``, the schedule of DeepLab and
    of mmsegmentation's defaults; ``"constant"`` keeps it at ``lr``. The rate
    is a function of the step alone, so a resumed run continues exactly where
    it stopped (and a run resumed with more epochs stretches the schedule).
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    lr_schedule: str = "poly"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"'{name}' must be a positive int, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"'lr' must be a positive number, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"'lr_schedule' must be one of {', '.join(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")

    def learning_rate(self, step: int, total_steps: int) -> float:
        """The learning rate of step ``step`` (counted from 0) of ``total_steps``."""
        if self.lr_schedule == "constant":
            return self.lr
        return self.lr * (1.0 - min(step, total_steps) / total_steps) ** 0.9


def _resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    img = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    msk = Image.fromarray(mask).resize((size, size), Image.NEAREST)
    return np.asarray(img), np.asarray(msk)


def build_graphs(
    samples: Sequence,
    n_segments: int,
    compactness: float = 10.0,
    image_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> list:
    """Superpixel graphs (:class:`segmentation.SuperpixelData`) of ``(image, mask)`` pairs.

    Parameters
    ----------
    samples : sequence of (image, mask)
        uint8 ``H×W×3`` images and ``H×W`` masks (255 = ignore).
    n_segments, compactness : SLIC parameters.
    image_size : int, optional
        Resize every image (bilinear) and mask (nearest) to a square of this
        size first; needed to batch images of different sizes.
    cache_dir : path, optional
        Cache the graphs on disk (see :class:`segmentation.SuperpixelGraph`).
    """
    transform = SuperpixelGraph(n_segments=n_segments, compactness=compactness,
                                add_features=False, cache_dir=cache_dir)
    graphs = []
    iterator = range(len(samples))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="superpixels", leave=False)
    for i in iterator:
        image, mask = samples[i]
        if image_size is not None:
            image, mask = _resize_pair(image, mask, image_size)
        graphs.append(transform((image, mask)))
    return graphs


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write a checkpoint atomically (temporary file, then rename)."""
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and check a checkpoint written by :func:`train`.

    Raises
    ------
    ValueError
        If the file is missing, unreadable, or not a checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many kinds for a corrupt file
        raise ValueError(f"checkpoint {str(path)!r} cannot be read: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a graphlstm segmentation checkpoint")
    for key in ("model_config", "model_state", "epoch"):
        if key not in payload:
            raise ValueError(f"checkpoint {str(path)!r} lacks {key!r}")
    return payload


def model_from_checkpoint(payload: dict, device="cpu") -> GraphLSTMSegmenter:
    config = ModelConfig.from_dict(payload["model_config"])
    model = GraphLSTMSegmenter(config)
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint weights do not match its model config: {err}") from err
    return model.to(device).eval()


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
    """
    model.eval()
    k = model.config.num_classes
    loader = DataLoader(graphs, batch_size=batch_size, collate_fn=list, num_workers=num_workers)
    generator = torch.Generator().manual_seed(seed)  # for order="random": same every time
    confusion = torch.zeros(k, k, dtype=torch.long)
    for chunk in loader:
        for group in group_by_size(chunk):
            batch = pad_collate(group).to(device)
            out = model.forward_batch(batch, generator)
            confusion += confusion_matrix(out.logits.argmax(1), batch.mask, k)
    return scores_from_confusion(confusion, class_names)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_graphs: Sequence,
    val_graphs: Sequence,
    out_dir: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    num_workers: int = 0,
) -> dict:
    """Train, validate every epoch, and keep ``last.pt`` and ``best.pt`` in ``out_dir``.

    Parameters
    ----------
    train_graphs, val_graphs : sequence or dataset of SuperpixelData
        E.g. :class:`segmentation.data.SuperpixelDataset` (built lazily,
        ``set_epoch`` called every epoch); images may differ in size
        (batches are padded by :func:`segmentation.data.pad_collate`).
    num_workers : int, optional
        ``DataLoader`` worker processes that build the graphs.
    resume : path, optional
        A checkpoint of an earlier run (``last.pt``) to continue from. Its model
        config must equal ``model_config``.

    Returns
    -------
    dict
        ``history`` (per-epoch loss and validation scores), ``best_miou``,
        ``best_epoch``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(train_graphs) == 0:
        raise ValueError("the training set is empty")
    if len(val_graphs) == 0:
        raise ValueError("the validation set is empty")
    device = torch.device(train_config.device)
    torch.manual_seed(train_config.seed)
    model = GraphLSTMSegmenter(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr,
                                  weight_decay=train_config.weight_decay)
    history: list[dict] = []
    start_epoch, best_miou, best_epoch = 0, -1.0, -1
    if resume is not None:
        payload = load_checkpoint(resume, map_location=device)
        if payload["model_config"] != model_config.to_dict():
            raise ValueError(
                f"checkpoint {str(resume)!r} was trained with another model config: "
                f"{payload['model_config']}"
            )
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        history = list(payload.get("history", []))
        start_epoch = int(payload["epoch"]) + 1
        best_miou = float(payload.get("best_miou", -1.0))
        best_epoch = int(payload.get("best_epoch", -1))
        log(f"resumed from {resume} at epoch {start_epoch}")

    def checkpoint(epoch: int) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": model_config.to_dict(),
            "train_config": asdict(train_config),
            "class_names": list(class_names) if class_names is not None else None,
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "epoch": epoch,
            "best_miou": best_miou,
            "best_epoch": best_epoch,
            "history": history,
        }

    for epoch in range(start_epoch, train_config.epochs):
        # Everything random in an epoch derives from (seed, epoch): resumable exactly.
        torch.manual_seed(train_config.seed * 100_003 + epoch)
        order = torch.Generator().manual_seed(train_config.seed * 100_003 + epoch)
        if hasattr(train_graphs, "set_epoch"):
            train_graphs.set_epoch(epoch)  # before the iterator copies it into the workers
        loader = DataLoader(train_graphs, batch_size=train_config.batch_size, shuffle=True,
                            generator=order, collate_fn=pad_collate, num_workers=num_workers)
        model.train()
        losses = []
        batches = loader
        if progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"epoch {epoch + 1}/{train_config.epochs}", leave=False)
        for step, batch in enumerate(batches, start=epoch * len(loader)):
            for group in optimizer.param_groups:
                group["lr"] = train_config.learning_rate(step, train_config.epochs * len(loader))
            batch = batch.to(device)
            out = model.forward_batch(batch)
            loss = segmentation_loss(out, batch.mask)
            if not bool(torch.isfinite(loss.detach())):
                raise RuntimeError(
                    f"training diverged: loss is {float(loss.detach())} at epoch {epoch}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scores = evaluate(model, val_graphs, train_config.batch_size, device, class_names,
                          seed=train_config.seed, num_workers=num_workers)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_miou": scores["miou"],
                  "val_pixel_accuracy": scores["pixel_accuracy"]}
        history.append(record)
        improved = scores["miou"] > best_miou
        if improved:
            best_miou, best_epoch = scores["miou"], epoch
        payload = checkpoint(epoch)
        save_checkpoint(out_dir / "last.pt", payload)
        if improved:
            save_checkpoint(out_dir / "best.pt", payload)
        log(f"epoch {epoch + 1}/{train_config.epochs}  loss {record['loss']:.4f}  "
            f"val mIoU {100 * scores['miou']:.2f}  pixel acc "
            f"{100 * scores['pixel_accuracy']:.2f}{'  (best)' if improved else ''}")
    return {"history": history, "best_miou": best_miou, "best_epoch": best_epoch}
