"""Training of :class:`segmentation.models.segmenter.GraphLSTMSegmenter`.

Reproducible by construction: every epoch reseeds the data order and the
random number generator from ``(seed, epoch)``, and checkpoints hold the
model, the optimiser and the history, so a run resumed from its last
checkpoint gives the same result as one that never stopped. Checkpoints are
written atomically and load with ``torch.load(weights_only=True)``.

Several processes (``torchrun``, see :mod:`segmentation.engine.distributed`): the
model is wrapped in ``DistributedDataParallel``, the batch size is the global
batch, split evenly across processes, and one ``DistributedSampler`` logic
serves every number of processes, so 1 and N processes see the same global
batches. The loss of a step is the sum of the per-pixel losses divided by the
number of valid (non-ignored) pixels of the whole global batch, all-reduced,
so N processes compute the gradient of exactly the loss of 1 process, whatever
the ignored or padded pixels of each process's share. Validation is sharded
without duplicates and its confusion matrices are all-reduced. Rank 0 alone
prints, shows progress bars and writes checkpoints.
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from segmentation.data.loading import pad_collate
from segmentation.data.transforms import SuperpixelGraph
from segmentation.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from segmentation.engine.distributed import (
    broadcast_buffers,
    get_rank,
    get_world_size,
    reduce_across_processes,
)
from segmentation.engine.evaluate import _model_inputs, evaluate
from segmentation.models.segmenter import GraphLSTMSegmenter, ModelConfig, segmentation_loss

__all__ = [
    "LR_SCHEDULES",
    "TrainConfig",
    "build_graphs",
    "set_train_mode",
    "train",
    "training_step",
]

IGNORE_INDEX = 255
# Seeds of the epochs of one run: (seed, epoch) -> seed * _SEED_STRIDE + epoch.
_SEED_STRIDE = 100_003
# Other processes than rank 0 draw from streams far from rank 0's (order="random").
_RANK_SEED_STRIDE = 1_000_000_007


LR_SCHEDULES = ("poly", "constant")


@dataclass
class TrainConfig:
    """Optimisation settings (saved in checkpoints).

    Parameters
    ----------
    epochs, batch_size : int
        ``batch_size`` is the global batch: split evenly across processes.
    lr, weight_decay : float
        AdamW.
    lr_schedule : {"poly", "constant"}
        The learning rate of every step (see Notes).
    seed : int
    device : str
        ``cpu`` or ``cuda`` (under torchrun, every process its ``cuda:LOCAL_RANK``).
    amp : bool
        Mixed precision: bfloat16 autocast on CPU, float16 autocast with a
        gradient scaler on CUDA (the superpixel part stays float32).
    freeze_bn : bool
        Keep every BatchNorm layer in eval mode while training: running
        statistics are used and not updated (the affine weights still learn);
        the usual choice for a pretrained backbone at a small batch per device.
    backbone_weights : str, optional
        A torchvision ResNet state dict loaded into the backbone before the
        first epoch (not when resuming: the checkpoint has the weights).

    Notes
    -----
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
    amp: bool = False
    freeze_bn: bool = False
    backbone_weights: str | None = None

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
        if self.amp and torch.device(self.device).type not in ("cpu", "cuda"):
            raise ValueError(f"'amp' runs on cpu (bfloat16) or cuda (float16), not on "
                             f"{self.device!r}")

    def learning_rate(self, step: int, total_steps: int) -> float:
        """The learning rate of step ``step`` (counted from 0) of ``total_steps``."""
        if self.lr_schedule == "constant":
            return self.lr
        return self.lr * (1.0 - min(step, total_steps) / total_steps) ** 0.9


class EpochSampler(DistributedSampler):
    """PyTorch's ``DistributedSampler`` (shuffled, not dropping) with this project's
    permutation of each epoch.

    The permutation of epoch ``e`` is drawn by a generator seeded with
    ``seed + e``, after one 64-bit draw, exactly as ``DataLoader(shuffle=True,
    generator=g)`` drew it in earlier versions: one process sees the data in the
    same order as before. Process ``r`` of ``N`` takes items ``r, r + N, ...`` of
    it (padded by repetition to a multiple of ``N``, as ``DistributedSampler``),
    so with a per-process batch of ``B / N`` the ``N`` processes together see
    at every step the same global batch of ``B`` as one process.
    """

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        indices = torch.randperm(len(self.dataset), generator=generator).tolist()
        padding = self.total_size - len(indices)
        indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CPU (no scaler needed), float16 on CUDA (with a gradient scaler)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def set_train_mode(model: torch.nn.Module, freeze_bn: bool = False) -> None:
    """``model.train()``; with ``freeze_bn``, every BatchNorm layer stays in eval mode."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


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


def training_step(
    model: torch.nn.Module,
    batch,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
) -> float:
    """One optimisation step on this process's share of a global batch; the global loss.

    The loss is the sum of the per-pixel losses (final and confidence scores)
    over the valid pixels (not 255) of this share, divided by the number of
    valid pixels of the whole global batch (one all-reduce) and multiplied by
    the world size, so that DDP's averaging of the gradients over the processes
    gives exactly the gradient of the global-batch mean.

    Parameters
    ----------
    model : GraphLSTMSegmenter or DistributedDataParallel wrapping one
    batch : Batch
        On the model's device.
    scaler : torch.amp.GradScaler, optional
        For float16 autocast (CUDA).
    amp : bool
        Autocast the forward pass (bfloat16 on CPU, float16 on CUDA).

    Returns
    -------
    float
        The loss of the global batch (the same on every process).

    Raises
    ------
    RuntimeError
        If that loss is not finite (on every process alike).
    """
    device = batch.image.device
    with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=amp):
        out = model(*_model_inputs(batch))
        loss_sum = segmentation_loss(out, batch.mask, IGNORE_INDEX, reduction="sum")
    valid = (batch.mask != IGNORE_INDEX).sum()
    totals = reduce_across_processes(
        torch.stack([loss_sum.detach().double(), valid.double()])
    )
    global_valid = totals[1].clamp(min=1)
    global_loss = float(totals[0] / global_valid)
    if not math.isfinite(global_loss):
        raise RuntimeError(f"training diverged: loss is {global_loss}")
    # Divided by (valid pixels / world size): with one process exactly the mean
    # cross-entropy's gradient; with N, N times this share's part of it, which
    # DDP's average over the processes turns into the global-batch mean.
    loss = loss_sum.float() / (global_valid / get_world_size()).float()
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return global_loss


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

    Runs in one process, or in every process of a process group set up by
    :func:`segmentation.engine.distributed.init_distributed_mode` (torchrun): then the
    model is wrapped in ``DistributedDataParallel`` (with ``SyncBatchNorm`` on
    CUDA unless ``freeze_bn``), and only rank 0 logs and writes checkpoints.

    Parameters
    ----------
    train_graphs, val_graphs : sequence or dataset of SuperpixelData
        E.g. :class:`segmentation.data.loading.SuperpixelDataset` (built lazily,
        ``set_epoch`` called every epoch before that epoch's DataLoader
        starts); images may differ in size (batches are padded by
        :func:`segmentation.data.loading.pad_collate`).
    resume : path, optional
        A checkpoint of an earlier run (``last.pt``) to continue from. Its model
        config must equal ``model_config``. Every process loads it.
    num_workers : int, optional
        ``DataLoader`` worker processes that build the graphs (started anew
        every epoch).

    Returns
    -------
    dict
        ``history`` (per-epoch loss and validation scores), ``best_miou``,
        ``best_epoch``.
    """
    rank, world = get_rank(), get_world_size()
    main = rank == 0
    if not main:
        progress = False

        def log(line: str) -> None:
            pass

    if train_config.batch_size % world:
        raise ValueError(
            f"'batch_size' {train_config.batch_size} (the global batch) is not divisible by "
            f"the number of processes, {world}"
        )
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"'num_workers' must be a non-negative int, got {num_workers!r}")
    local_batch = train_config.batch_size // world
    out_dir = Path(out_dir)
    if len(train_graphs) == 0:
        raise ValueError("the training set is empty")
    if len(val_graphs) == 0:
        raise ValueError("the validation set is empty")
    device = torch.device(train_config.device)
    amp, freeze_bn = train_config.amp, train_config.freeze_bn
    torch.manual_seed(train_config.seed)
    model = GraphLSTMSegmenter(model_config)
    if train_config.backbone_weights is not None and resume is None:
        if not hasattr(model.backbone, "load_pretrained"):
            raise ValueError(
                f"backbone {model_config.backbone!r} takes no pretrained weights "
                "(choose a ResNet backbone)"
            )
        model.backbone.load_pretrained(train_config.backbone_weights)
    if world > 1 and device.type == "cuda" and not freeze_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr,
                                  weight_decay=train_config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
    history: list[dict] = []
    start_epoch, best_miou, best_epoch = 0, -1.0, -1
    if resume is not None:
        payload = load_checkpoint(resume, map_location=device)
        saved_config = ModelConfig.from_dict(payload["model_config"]).to_dict()
        if saved_config != model_config.to_dict():
            raise ValueError(
                f"checkpoint {str(resume)!r} was trained with another model config: "
                f"{payload['model_config']}"
            )
        model.load_state_dict(payload["model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        if scaler is not None and payload.get("scaler_state"):
            scaler.load_state_dict(payload["scaler_state"])
        history = list(payload.get("history", []))
        start_epoch = int(payload["epoch"]) + 1
        best_miou = float(payload.get("best_miou", -1.0))
        best_epoch = int(payload.get("best_epoch", -1))
        log(f"resumed from {resume} at epoch {start_epoch}")
    net = model
    if world > 1:
        # No find_unused_parameters: the model has no trainable parameter without
        # a gradient (see segmentation.models.segmenter), so DDP skips the per-step graph search.
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                      else None)

    def checkpoint(epoch: int) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": model_config.to_dict(),
            "train_config": asdict(train_config),
            "class_names": list(class_names) if class_names is not None else None,
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "scaler_state": scaler.state_dict() if scaler is not None else None,
            "world_size": world,
            "epoch": epoch,
            "best_miou": best_miou,
            "best_epoch": best_epoch,
            "history": history,
        }

    # One sampler logic for 1 and N processes: the permutation of epoch e comes from
    # (seed, e), and process r takes every N-th item of it, so the global batch of
    # every step is the same for any N that divides the batch size.
    sampler = EpochSampler(train_graphs, num_replicas=world, rank=rank, shuffle=True,
                           seed=train_config.seed * _SEED_STRIDE, drop_last=False)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(start_epoch, train_config.epochs):
        # Everything random in an epoch derives from (seed, epoch): resumable exactly.
        epoch_seed = train_config.seed * _SEED_STRIDE + epoch
        torch.manual_seed(epoch_seed + rank * _RANK_SEED_STRIDE)
        sampler.set_epoch(epoch)
        if hasattr(train_graphs, "set_epoch"):
            train_graphs.set_epoch(epoch)  # before the iterator copies it into the workers
        # The loader's own generator (worker seeds) leaves the global RNG alone.
        loader = DataLoader(train_graphs, batch_size=local_batch, sampler=sampler,
                            num_workers=num_workers, collate_fn=pad_collate,
                            pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(epoch_seed))
        set_train_mode(net, freeze_bn)
        losses = []
        batches = loader
        if progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"epoch {epoch + 1}/{train_config.epochs}", leave=False)
        for step, batch in enumerate(batches, start=epoch * len(loader)):
            for group in optimizer.param_groups:
                group["lr"] = train_config.learning_rate(step, train_config.epochs * len(loader))
            batch = batch.to(device, non_blocking=True)
            try:
                losses.append(training_step(net, batch, optimizer, scaler, amp))
            except RuntimeError as err:
                if str(err).startswith("training diverged"):
                    raise RuntimeError(f"{err} at epoch {epoch}") from None
                raise
        broadcast_buffers(model)  # validate the model rank 0 saves
        scores = evaluate(model, val_graphs, local_batch, device, class_names,
                          seed=train_config.seed, num_workers=num_workers)
        record = {"epoch": epoch, "loss": float(np.mean(losses)), "val_miou": scores["miou"],
                  "val_pixel_accuracy": scores["pixel_accuracy"]}
        history.append(record)
        improved = scores["miou"] > best_miou
        if improved:
            best_miou, best_epoch = scores["miou"], epoch
        if main:
            payload = checkpoint(epoch)
            save_checkpoint(out_dir / "last.pt", payload)
            if improved:
                save_checkpoint(out_dir / "best.pt", payload)
        log(f"epoch {epoch + 1}/{train_config.epochs}  loss {record['loss']:.4f}  "
            f"val mIoU {100 * scores['miou']:.2f}  pixel acc "
            f"{100 * scores['pixel_accuracy']:.2f}{'  (best)' if improved else ''}")
    return {"history": history, "best_miou": best_miou, "best_epoch": best_epoch}
