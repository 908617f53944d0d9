"""Checkpoints of :class:`segmentation.models.segmenter.GraphLSTMSegmenter`: the one
module both training and inference read and write them through.

A checkpoint is a ``dict`` saved with ``torch.save`` and loadable with
``torch.load(weights_only=True)``: ``format`` (:data:`CHECKPOINT_FORMAT`),
``model_config``, ``model_state`` and ``epoch``, plus what training needs to
resume (optimiser, scaler, history). It is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from segmentation.data.images import atomic_write
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "model_from_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "graphlstm-segmentation/1"


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
