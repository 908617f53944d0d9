"""Checkpoints of :class:`segmentation.models.segmenter.GraphLSTMSegmenter`: the one
module both training and inference read and write them through.

A checkpoint is a ``dict`` saved with ``torch.save`` and loadable with
``torch.load(weights_only=True)``: ``format`` (:data:`CHECKPOINT_FORMAT`),
``model_config``, ``model_state`` and ``epoch``, plus what training needs to
resume (:func:`training_state`: optimiser, learning-rate scheduler, gradient
scaler, history; :func:`restore_training_state` puts them back). It is written
atomically.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from segmentation.data.images import atomic_write
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig, build_segmenter

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "model_from_checkpoint",
    "restore_training_state",
    "save_checkpoint",
    "training_state",
]

CHECKPOINT_FORMAT = "graphlstm-segmentation/1"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write a checkpoint atomically (temporary file, then rename).

    Raises
    ------
    OSError
        If the file cannot be written (a full disk, a read-only folder), with
        a message naming ``path``. A checkpoint already at ``path`` stays intact
        and no temporary file remains.
    """
    try:
        return atomic_write(path, lambda handle: torch.save(payload, handle))
    except (OSError, RuntimeError) as err:
        # torch.save reports a failed write of its file as a RuntimeError whose
        # context is the OSError.
        cause = err if isinstance(err, OSError) else err.__context__
        if not isinstance(cause, OSError):
            raise
        reason = cause.strerror or str(cause)
        raise OSError(f"cannot write checkpoint {str(path)!r}: {reason} (a checkpoint "
                      "already there is intact)") from err


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
    model = build_segmenter(config)
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as err:
        raise ValueError(f"checkpoint weights do not match its model config: {err}") from err
    return model.to(device).eval()


def training_state(model_config: ModelConfig, train_config, class_names, model, optimizer,
                   lr_scheduler, scaler=None, *, epoch: int, history: list,
                   best_miou: float, best_epoch: int, world_size: int = 1) -> dict:
    """The checkpoint of a training run after ``epoch`` (counted from 0).

    ``train_config`` is a :class:`segmentation.engine.train.TrainConfig`;
    ``model`` the bare model (not its ``DistributedDataParallel`` wrapper).
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "model_config": model_config.to_dict(),
        "train_config": asdict(train_config),
        "class_names": list(class_names) if class_names is not None else None,
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "lr_scheduler_state": lr_scheduler.state_dict(),
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "world_size": world_size,
        "epoch": epoch,
        "best_miou": best_miou,
        "best_epoch": best_epoch,
        "history": history,
    }


def restore_training_state(payload: dict, model_config: ModelConfig, model, optimizer,
                           lr_scheduler, scaler=None, *, path: str | os.PathLike = "") -> dict:
    """Load a :func:`training_state` checkpoint into the objects of a run.

    The scheduler's learning rate is set anew for its current step, from this
    run's schedule: a run resumed with more epochs stretches the schedule.
    ``path`` names the checkpoint in error messages.

    Returns
    -------
    dict
        ``epoch`` (the last finished one), ``history``, ``best_miou``, ``best_epoch``.

    Raises
    ------
    ValueError
        If the checkpoint was trained with another model config (the message
        names the fields that differ), or lacks the state of the optimiser or
        of the scheduler.
    """
    name = f"checkpoint {str(path)!r}" if path else "the checkpoint"
    saved_config = ModelConfig.from_dict(payload["model_config"]).to_dict()
    wanted_config = model_config.to_dict()
    if saved_config != wanted_config:
        differences = "; ".join(
            f"{field} {saved_config.get(field)!r} there, {wanted_config.get(field)!r} here"
            for field in sorted(set(saved_config) | set(wanted_config))
            if saved_config.get(field) != wanted_config.get(field)
        )
        raise ValueError(f"{name} was trained with another model config: {differences}")
    for key in ("optimizer_state", "lr_scheduler_state"):
        if key not in payload:
            raise ValueError(f"{name} lacks {key!r}: it cannot resume training")
    model.load_state_dict(payload["model_state"])
    optimizer.load_state_dict(payload["optimizer_state"])
    lr_scheduler.load_state_dict(payload["lr_scheduler_state"])
    for group, base_lr, factor in zip(optimizer.param_groups, lr_scheduler.base_lrs,
                                      lr_scheduler.lr_lambdas, strict=True):
        group["lr"] = base_lr * factor(lr_scheduler.last_epoch)
    if scaler is not None and payload.get("scaler_state"):
        scaler.load_state_dict(payload["scaler_state"])
    return {"epoch": int(payload["epoch"]), "history": list(payload.get("history", [])),
            "best_miou": float(payload.get("best_miou", -1.0)),
            "best_epoch": int(payload.get("best_epoch", -1))}
