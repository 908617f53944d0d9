"""Training of :class:`segmentation.models.segmenter.GraphLSTMSegmenter`.

Shaped like torchvision's segmentation references: :func:`training_step` (one
optimisation step), :func:`train_one_epoch` (the steps of one epoch, the
learning-rate scheduler stepped after each), and :func:`train`, which wires the
model, the optimiser, the scheduler (:func:`build_lr_scheduler`, a ``LambdaLR``),
the data of each epoch, :func:`segmentation.engine.evaluate.evaluate` and the
checkpoints of :mod:`segmentation.engine.checkpoint` together.

Reproducible by construction: every epoch reseeds the data order and the
random number generator from ``(seed, epoch)``, and checkpoints hold the
model, the optimiser, the scheduler and the history, so a run resumed from
its last checkpoint gives the same result as one that never stopped.

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

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, DistributedSampler

from segmentation._checks import check_int
from segmentation.data.images import IGNORE_INDEX
from segmentation.data.loading import pad_collate, resize_pair
from segmentation.data.transforms import SuperpixelGraph
from segmentation.engine import _faults
from segmentation.engine.checkpoint import (
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from segmentation.engine.distributed import (
    broadcast_buffers,
    get_rank,
    get_world_size,
    reduce_across_processes,
)
from segmentation.engine.evaluate import evaluate
from segmentation.engine.preemption import (
    PreemptionHandler,
    TrainingInterrupted,
    leave_signals_to_the_main_process,
)
from segmentation.engine.resume import (
    BufferSnapshot,
    ResumeSampler,
    all_agree,
    all_finite,
    gather_rng_states,
    position_of,
    set_rng_state,
)
from segmentation.models.evolving import model_loss
from segmentation.models.segmenter import (
    ModelConfig,
    NonFiniteScores,
    batch_inputs,
    build_segmenter,
)

__all__ = [
    "LR_SCHEDULES",
    "EpochSampler",
    "TrainConfig",
    "TrainingDiverged",
    "build_graphs",
    "build_lr_scheduler",
    "set_train_mode",
    "train",
    "train_one_epoch",
    "training_step",
]

# Seeds of the epochs of one run: (seed, epoch) -> seed * _SEED_STRIDE + epoch.
_SEED_STRIDE = 100_003
# Other processes than rank 0 draw from streams far from rank 0's (order="random").
_RANK_SEED_STRIDE = 1_000_000_007

#: The learning-rate schedules of :class:`TrainConfig` (and of ``train.py --lr-schedule``).
LR_SCHEDULES = ("poly", "constant")


class TrainingDiverged(RuntimeError):
    """The loss of a training step is not finite.

    Attributes
    ----------
    loss : float
        The loss of the global batch (NaN or infinite).
    epoch, step : int or None
        Where it happened, counted from 0 (``step`` counts the optimisation
        steps of the whole run); ``None`` where the raiser does not know. The
        message counts epochs from 1, as the training log does.
    lr : float or None
        The learning rate of that step.
    advice : str
        What the message adds: where the last finite weights are, what to try.
    """

    def __init__(self, loss: float, epoch: int | None = None, step: int | None = None,
                 lr: float | None = None, advice: str = "") -> None:
        self.loss, self.epoch, self.step, self.lr = loss, epoch, step, lr
        where = "".join(f", {name} {value}" for name, value in
                        (("epoch", None if epoch is None else epoch + 1), ("step", step))
                        if value is not None)
        rate = f", learning rate {lr:.3g}" if lr is not None else ""
        super().__init__(f"training diverged: loss is {loss}{where}{rate}{advice}")


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
            check_int(getattr(self, name), f"'{name}'")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"'lr' must be a positive number, got {self.lr!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"'lr_schedule' must be one of {', '.join(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")
        if self.amp and torch.device(self.device).type not in ("cpu", "cuda"):
            raise ValueError(f"'amp' runs on cpu (bfloat16) or cuda (float16), not on "
                             f"{self.device!r}")

    def lr_factor(self, step: int, total_steps: int) -> float:
        """The learning rate of step ``step`` (counted from 0) of ``total_steps``,
        as a multiple of ``lr`` (the factor of :func:`build_lr_scheduler`)."""
        if self.lr_schedule == "constant":
            return 1.0
        return (1.0 - min(step, total_steps) / total_steps) ** 0.9

    def learning_rate(self, step: int, total_steps: int) -> float:
        """The learning rate of step ``step`` (counted from 0) of ``total_steps``."""
        return self.lr * self.lr_factor(step, total_steps)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                       total_steps: int) -> LambdaLR:
    """The learning-rate schedule of ``config`` as a ``LambdaLR`` over ``total_steps``
    optimisation steps: step it once after every optimisation step."""
    return LambdaLR(optimizer, lambda step: config.lr_factor(step, total_steps))


class EpochSampler(DistributedSampler):
    """PyTorch's ``DistributedSampler`` (shuffled, not dropping) with this project's
    permutation of each epoch.

    The permutation of epoch ``e`` is drawn by a generator seeded with
    ``seed + e``, after one 64-bit draw, as ``DataLoader(shuffle=True,
    generator=g)`` draws it (the loader takes its workers' base seed first).
    Process ``r`` of ``N`` takes items ``r, r + N, ...`` of it (padded by
    repetition to a multiple of ``N``, as ``DistributedSampler``), so with a
    per-process batch of ``B / N`` the ``N`` processes together see at every
    step the same global batch of ``B`` as one process.
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
            image, mask = resize_pair(image, mask, image_size)
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
    TrainingDiverged
        If that loss is not finite (on every process alike), or the model's
        confidence scores are not (:class:`~segmentation.models.segmenter.NonFiniteScores`);
        the weights are then unchanged.
    """
    device = batch.image.device
    try:
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=amp):
            out = model(*batch_inputs(batch))
            loss_sum = model_loss(out, batch.mask, IGNORE_INDEX, reduction="sum")
    except NonFiniteScores:
        # Diverged weights or activations: a loss that is not finite, which the
        # all-reduce below makes every process see (none is left waiting in it).
        loss_sum = torch.tensor(float("nan"), device=device)
    valid = (batch.mask != IGNORE_INDEX).sum()
    totals = reduce_across_processes(
        torch.stack([loss_sum.detach().double(), valid.double()])
    )
    global_valid = totals[1].clamp(min=1)
    global_loss = float(totals[0] / global_valid)
    if not math.isfinite(global_loss):
        raise TrainingDiverged(global_loss, lr=optimizer.param_groups[0]["lr"])
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


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader,
    device: torch.device,
    epoch: int,
    *,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
    freeze_bn: bool = False,
    progress: str | None = None,
    losses: list[float] | None = None,
    step_end: Callable[[list[float]], None] | None = None,
) -> float:
    """Train on every batch of ``loader`` once; the mean of the steps' global losses.

    The learning-rate scheduler steps after every optimisation step, so its
    ``last_epoch`` counts the steps of the whole run. ``progress`` is the
    description of a progress bar (none if ``None``).

    Parameters
    ----------
    losses : list of float, optional
        The losses of the steps of this epoch done before ``loader``'s first
        batch (an epoch resumed in its middle); appended to in place.
    step_end : callable, optional
        Called with ``losses`` after every step (step checkpoints, signals).

    Raises
    ------
    TrainingDiverged
        With the epoch, the step and its learning rate. The model is then as
        before that step: weights, and BatchNorm statistics too.
    """
    set_train_mode(model, freeze_bn)
    batches = iter(loader)
    if progress is not None:
        from tqdm import tqdm

        batches = tqdm(batches, total=len(loader), desc=progress, leave=False)
    losses = [] if losses is None else losses
    # A forward updates the BatchNorm statistics before its loss is known.
    statistics = BufferSnapshot(model)
    try:
        for batch in batches:
            batch = _faults.inject(lr_scheduler.last_epoch, get_rank(),
                                   batch.to(device, non_blocking=True))
            statistics.take()
            try:
                losses.append(training_step(model, batch, optimizer, scaler, amp))
            except TrainingDiverged as err:
                statistics.restore()
                raise TrainingDiverged(err.loss, epoch, lr_scheduler.last_epoch,
                                       err.lr) from None
            lr_scheduler.step()
            if step_end is not None:
                step_end(losses)
    finally:
        _stop_workers(batches)
    return float(np.mean(losses))


def _stop_workers(batches) -> None:
    """End the loader's worker processes now, whatever ended the epoch.

    An exception's traceback keeps the loop's frame, and with it the loader's
    iterator, alive; its workers, which ignore SIGTERM (they leave stop signals
    to this process), would then outlive the run and hold up the interpreter's
    exit, which joins its child processes.
    """
    iterator = getattr(batches, "iterable", batches)  # under a tqdm progress bar
    if hasattr(batches, "close"):
        batches.close()
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _check_train_arguments(train_config: TrainConfig, train_graphs, val_graphs,
                           num_workers, world: int) -> None:
    if train_config.batch_size % world:
        raise ValueError(
            f"'batch_size' {train_config.batch_size} (the global batch) is not divisible by "
            f"the number of processes, {world}"
        )
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"'num_workers' must be a non-negative int, got {num_workers!r}")
    if len(train_graphs) == 0:
        raise ValueError("the training set is empty")
    if len(val_graphs) == 0:
        raise ValueError("the validation set is empty")


def _build_model(model_config: ModelConfig, train_config: TrainConfig, world: int,
                 pretrained: bool) -> torch.nn.Module:
    model = build_segmenter(model_config)
    if pretrained and train_config.backbone_weights is not None:
        if not hasattr(model.backbone, "load_pretrained"):
            raise ValueError(
                f"backbone {model_config.backbone!r} takes no pretrained weights "
                "(choose a ResNet backbone)"
            )
        model.backbone.load_pretrained(train_config.backbone_weights)
    device = torch.device(train_config.device)
    if world > 1 and device.type == "cuda" and not train_config.freeze_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device)


def _epoch_loader(train_graphs, sampler: EpochSampler, epoch: int, train_config: TrainConfig,
                  local_batch: int, num_workers: int, steps_done: int = 0) -> DataLoader:
    # Everything random in an epoch derives from (seed, epoch): resumable exactly.
    epoch_seed = train_config.seed * _SEED_STRIDE + epoch
    torch.manual_seed(epoch_seed + get_rank() * _RANK_SEED_STRIDE)
    sampler.set_epoch(epoch)
    if hasattr(train_graphs, "set_epoch"):
        train_graphs.set_epoch(epoch)  # before the iterator copies it into the workers
    if steps_done:  # the rest of an epoch resumed in its middle
        sampler = ResumeSampler(sampler, min(steps_done * local_batch, len(sampler)))
    # The loader's own generator (worker seeds) leaves the global RNG alone.
    return DataLoader(train_graphs, batch_size=local_batch, sampler=sampler,
                      num_workers=num_workers, collate_fn=pad_collate,
                      worker_init_fn=leave_signals_to_the_main_process,
                      pin_memory=torch.device(train_config.device).type == "cuda",
                      generator=torch.Generator().manual_seed(epoch_seed))


class _Start(NamedTuple):
    """Where a run starts: the training state of its checkpoint, the epoch and the
    step within it, and for a start mid-epoch the losses and random states so far."""

    state: dict
    epoch: int = 0
    step: int = 0
    losses: tuple[float, ...] = ()
    rng_states: list | None = None


def _resume(path, device, model_config, model, optimizer, lr_scheduler, scaler) -> _Start:
    """Load ``path`` into the model, optimiser, scheduler and scaler; where it left off."""
    payload = load_checkpoint(path, map_location=device)
    state = restore_training_state(payload, model_config, model, optimizer, lr_scheduler,
                                   scaler, path=path)
    epoch, step = position_of(payload)
    if not step:
        return _Start(state, epoch)
    return _Start(state, epoch, step, tuple(float(v) for v in payload["epoch_losses"]),
                  payload.get("rng_states"))


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
    checkpoint_every: int | None = None,
    preemption: PreemptionHandler | None = None,
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
        A checkpoint of an earlier run (``last.pt``) to continue from, written
        at the end of an epoch or in its middle. Its model config must equal
        ``model_config`` (the error names the fields that differ). Every
        process loads it. A checkpoint already at the end of epoch
        ``train_config.epochs`` (or past it) leaves nothing to train: that is
        logged, nothing is written, and its history and best score are returned.
    num_workers : int, optional
        ``DataLoader`` worker processes that build the graphs (started anew
        every epoch).
    checkpoint_every : int, optional
        Also write ``last.pt`` after every ``checkpoint_every`` steps of an
        epoch, with the position in the epoch, the losses of its steps so far
        and the state of every random generator of every process: a run
        resumed from it ends with the weights of one that never stopped.
    preemption : PreemptionHandler, optional
        Asked at the end of every step and every epoch whether a process
        received SIGTERM or SIGINT; if one did, ``last.pt`` is written and
        :class:`~segmentation.engine.preemption.TrainingInterrupted` raised.

    Returns
    -------
    dict
        ``history`` (per-epoch loss and validation scores), ``best_miou``,
        ``best_epoch``.

    Raises
    ------
    TrainingDiverged
        If the loss of a step is not finite; ``last.pt`` then holds the model
        from before that step (when it is finite).
    TrainingInterrupted
        On a signal recorded by ``preemption``, after writing ``last.pt``.
    OSError
        If a checkpoint cannot be written (on every process alike); the one
        written before stays intact.
    """
    rank, world = get_rank(), get_world_size()
    main = rank == 0
    if not main:
        progress = False

        def log(line: str) -> None:
            pass

    _check_train_arguments(train_config, train_graphs, val_graphs, num_workers, world)
    if checkpoint_every is not None:
        check_int(checkpoint_every, "checkpoint_every", minimum=1)
    local_batch = train_config.batch_size // world
    out_dir = Path(out_dir)
    device = torch.device(train_config.device)
    torch.manual_seed(train_config.seed)
    model = _build_model(model_config, train_config, world, pretrained=resume is None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr,
                                  weight_decay=train_config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if train_config.amp and device.type == "cuda" else None
    # One sampler logic for 1 and N processes: the permutation of epoch e comes from
    # (seed, e), and process r takes every N-th item of it, so the global batch of
    # every step is the same for any N that divides the batch size.
    sampler = EpochSampler(train_graphs, num_replicas=world, rank=rank, shuffle=True,
                           seed=train_config.seed * _SEED_STRIDE, drop_last=False)
    steps_per_epoch = math.ceil(len(sampler) / local_batch)
    lr_scheduler = build_lr_scheduler(optimizer, train_config,
                                      train_config.epochs * steps_per_epoch)
    start = _Start({"epoch": -1, "history": [], "best_miou": -1.0, "best_epoch": -1})
    if resume is not None:
        start = _resume(resume, device, model_config, model, optimizer, lr_scheduler, scaler)
        if start.epoch >= train_config.epochs:
            log(f"nothing to train: checkpoint {str(resume)!r} is already at epoch "
                f"{start.epoch} of {train_config.epochs}")
            return {key: start.state[key] for key in ("history", "best_miou", "best_epoch")}
        if start.step:
            log(f"resumed from {resume} in epoch {start.epoch + 1}, after step {start.step} "
                f"of {steps_per_epoch}")
        else:
            log(f"resumed from {resume} after epoch {start.epoch}; training epochs "
                f"{start.epoch + 1} to {train_config.epochs}")
    state, start_epoch, start_step = start.state, start.epoch, start.step
    history = state["history"]
    best_miou, best_epoch = state["best_miou"], state["best_epoch"]
    net = model
    if world > 1:
        # No find_unused_parameters: the model has no trainable parameter without
        # a gradient (see segmentation.models.segmenter), so DDP skips the per-step
        # graph search.
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                      else None)

    def payload(epoch: int) -> dict:
        return training_state(
            model_config, train_config, class_names, model, optimizer, lr_scheduler,
            scaler, epoch=epoch, history=history, best_miou=best_miou,
            best_epoch=best_epoch, world_size=world)

    def write(path: Path, make_payload: Callable[[], dict]) -> None:
        # Rank 0 writes; every process learns whether it could, and all fail alike.
        error = None
        if main:
            try:
                save_checkpoint(path, make_payload())
            except OSError as err:
                error = err
        if not all_agree(error is None):
            raise error or OSError(f"cannot write checkpoint {str(path)!r} (see process 0)")

    def write_in_epoch(epoch: int, losses: list[float]) -> None:
        # After len(losses) steps of `epoch`: what an exact resumption needs.
        rng_states = gather_rng_states(device)
        write(out_dir / "last.pt", lambda: {
            **payload(epoch - 1), "position": {"epoch": epoch, "step": len(losses)},
            "epoch_losses": list(losses), "rng_states": rng_states})

    def stop_signal() -> int:
        return preemption.agreed_stop() if preemption is not None else 0

    def step_end(epoch: int, losses: list[float]) -> None:
        signum, done = stop_signal(), len(losses)
        if signum or (checkpoint_every and done % checkpoint_every == 0
                      and done < steps_per_epoch):
            write_in_epoch(epoch, losses)
        if signum:
            raise TrainingInterrupted(signum, out_dir / "last.pt", epoch, done)

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    for epoch in range(start_epoch, train_config.epochs):
        steps_done = start_step if epoch == start_epoch else 0
        loader = _epoch_loader(train_graphs, sampler, epoch, train_config, local_batch,
                               num_workers, steps_done)
        losses = list(start.losses) if steps_done else []
        if steps_done and start.rng_states is not None and len(start.rng_states) == world:
            set_rng_state(start.rng_states[rank], device)  # as the run drew, mid-epoch
        try:
            loss = train_one_epoch(
                net, optimizer, lr_scheduler, loader, device, epoch, scaler=scaler,
                amp=train_config.amp, freeze_bn=train_config.freeze_bn,
                progress=f"epoch {epoch + 1}/{train_config.epochs}" if progress else None,
                losses=losses, step_end=functools.partial(step_end, epoch))
        except TrainingDiverged as err:
            # The model is still the one from before the step: keep it if finite.
            kept = all_finite(model)
            if kept:
                write_in_epoch(epoch, losses)
            raise TrainingDiverged(err.loss, err.epoch, err.step, err.lr, _divergence_advice(
                out_dir / "last.pt", kept, err.lr, train_config.amp)) from None
        broadcast_buffers(model)  # validate the model rank 0 saves
        scores = evaluate(model, val_graphs, local_batch, device, class_names,
                          seed=train_config.seed, num_workers=num_workers)
        history.append({"epoch": epoch, "loss": loss, "val_miou": scores["miou"],
                        "val_pixel_accuracy": scores["pixel_accuracy"]})
        improved = scores["miou"] > best_miou
        if improved:
            best_miou, best_epoch = scores["miou"], epoch
        write(out_dir / "last.pt", functools.partial(payload, epoch))
        if improved:
            write(out_dir / "best.pt", functools.partial(payload, epoch))
        log(f"epoch {epoch + 1}/{train_config.epochs}  loss {loss:.4f}  "
            f"val mIoU {100 * scores['miou']:.2f}  pixel acc "
            f"{100 * scores['pixel_accuracy']:.2f}{'  (best)' if improved else ''}")
        signum = stop_signal()
        if signum and epoch + 1 < train_config.epochs:
            raise TrainingInterrupted(signum, out_dir / "last.pt", epoch, steps_per_epoch)
    return {"history": history, "best_miou": best_miou, "best_epoch": best_epoch}


def _divergence_advice(checkpoint: Path, kept: bool, lr: float | None, amp: bool) -> str:
    kept_text = (f"; {checkpoint} holds the weights from before this step" if kept else
                 f"; the weights are no longer finite, {checkpoint} keeps the last checkpoint")
    lower = f" (e.g. {lr / 2:.3g})" if lr else ""
    if amp:
        return f"{kept_text}; try a lower --lr{lower} or training without --amp"
    return f"{kept_text}; try a lower --lr{lower} (--amp, which can overflow, is off)"
