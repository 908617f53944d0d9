"""What exact resumption in the middle of an epoch needs besides the weights.

A step checkpoint (``--checkpoint-every N``) records where in the epoch the
run is (:func:`position_of`), the state of every random number generator of
every process (:func:`gather_rng_states`, :func:`set_rng_state`), and the run
skips the samples it has already seen (:class:`ResumeSampler`). Together with
the optimiser, the scheduler and the gradient scaler, a run resumed from such
a checkpoint ends with the weights of a run that never stopped.

Everything here is stored in forms ``torch.load(weights_only=True)`` accepts
(tensors, numbers, strings, lists, dicts).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from segmentation.engine.distributed import (
    get_world_size,
    is_dist_avail_and_initialized,
    reduce_across_processes,
)

__all__ = [
    "BufferSnapshot",
    "ResumeSampler",
    "all_agree",
    "all_finite",
    "gather_rng_states",
    "position_of",
    "rng_state",
    "set_rng_state",
]


def rng_state(device: torch.device | str | None = None) -> dict:
    """The states of Python's, NumPy's and torch's global generators (and CUDA's).

    Parameters
    ----------
    device : torch.device, optional
        A CUDA device whose generator to include (this process's device).
    """
    version, internal, gauss = random.getstate()
    # NumPy's global generator (legacy, but code may draw from it) is the one to save.
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"bit_generator": numpy_state["bit_generator"],
                  "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | str | None = None) -> None:
    """Restore what :func:`rng_state` returned (its tensors may have been loaded
    onto any device)."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()),
                     python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state({  # noqa: NPY002
        "bit_generator": numpy["bit_generator"],
        "state": {"key": numpy["key"].cpu().numpy().astype(np.uint32), "pos": numpy["pos"]},
        "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"],
    })
    torch.set_rng_state(state["torch"].cpu())
    device = torch.device(device) if device is not None else None
    if state.get("cuda") is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def gather_rng_states(device: torch.device | str | None = None) -> list[dict]:
    """:func:`rng_state` of every process, in rank order (a collective).

    One process returns a list of one.
    """
    mine = rng_state(device)
    if not is_dist_avail_and_initialized():
        return [mine]
    states: list = [None] * get_world_size()
    dist.all_gather_object(states, mine)
    return states


def all_agree(ok: bool) -> bool:
    """True on every process when ``ok`` is true on every process (a collective).

    For outcomes one process decides (rank 0 writing a checkpoint): every
    process learns of a failure and can stop alike, none waiting for the others.
    """
    failures = reduce_across_processes(torch.tensor(0 if ok else 1, dtype=torch.int64))
    return int(failures) == 0


def all_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter and buffer of ``module`` is finite."""
    tensors = [*module.parameters(), *module.buffers()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


class BufferSnapshot:
    """A copy of the floating-point buffers of ``module`` (BatchNorm statistics).

    A training forward updates the running statistics before its loss is known:
    :meth:`take` before the step and :meth:`restore` when its loss is not
    finite give back the model as it was before the step.
    """

    def __init__(self, module: torch.nn.Module):
        self.buffers = [b for b in module.buffers() if b.is_floating_point()]
        self.copies = [torch.empty_like(b) for b in self.buffers]

    def take(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.copies, self.buffers)

    def restore(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.copies)


def position_of(payload: dict) -> tuple[int, int]:
    """Where a run resumed from checkpoint ``payload`` continues: ``(epoch, step)``.

    ``step`` steps of epoch ``epoch`` (both counted from 0) are done. A
    checkpoint written at the end of an epoch continues at step 0 of the next.
    """
    position = payload.get("position")
    if position is None:
        return int(payload["epoch"]) + 1, 0
    return int(position["epoch"]), int(position["step"])


class ResumeSampler(Sampler):
    """The items of ``sampler`` from number ``start`` on.

    With ``start = steps * batch_size`` a ``DataLoader`` over it yields the
    batches of the same epoch of the same sampler after the first ``steps``
    (the batches are consecutive runs of ``batch_size`` items).

    Parameters
    ----------
    sampler : Sampler
        The epoch's sampler (its ``set_epoch`` already called).
    start : int
        Items to skip, ``0 <= start <= len(sampler)``.
    """

    def __init__(self, sampler: Sampler, start: int):
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(sampler):
            raise ValueError(f"'start' must be an int in [0, {len(sampler)}], got {start!r}")
        self.sampler, self.start = sampler, start

    def __iter__(self) -> Iterator:
        iterator = iter(self.sampler)
        for _ in range(self.start):
            next(iterator)
        return iterator

    def __len__(self) -> int:
        return len(self.sampler) - self.start
