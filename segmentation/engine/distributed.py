"""Several processes with PyTorch's own launcher (torchrun) and DDP.

In the manner of torchvision's ``references/segmentation/utils.py``: a script
calls :func:`init_distributed_mode` once; under ``torchrun`` (which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) it
joins the default process group (gloo on CPU, nccl on CUDA with the device
``cuda:LOCAL_RANK``), otherwise it does nothing and the run is a single process.
The helpers below then work in both cases (world size 1, rank 0 without a
process group), so library code needs no special case::

    device = init_distributed_mode("cuda")      # cuda:LOCAL_RANK under torchrun
    try:
        train(...)                              # DDP when get_world_size() > 1
    finally:
        cleanup()
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

__all__ = [
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed_mode",
    "is_dist_avail_and_initialized",
    "is_main_process",
    "launched_world_size",
    "process_batches",
    "reduce_across_processes",
]


def is_dist_avail_and_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Processes in the default group; 1 without one."""
    return dist.get_world_size() if is_dist_avail_and_initialized() else 1


def get_rank() -> int:
    """This process's rank; 0 without a process group."""
    return dist.get_rank() if is_dist_avail_and_initialized() else 0


def is_main_process() -> bool:
    """Rank 0: the process that prints, shows progress and writes checkpoints."""
    return get_rank() == 0


def launched_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``), before any set-up.

    For checks that must fail fast and alike on every process (e.g. a batch
    size that does not split), before the processes wait for each other.
    """
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(
            f"environment variable WORLD_SIZE must be an integer, got {value!r}"
        ) from None
    if size < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be positive, got {size}")
    return size


def init_distributed_mode(device: str | torch.device = "cpu") -> torch.device:
    """Join torchrun's process group if launched by torchrun; return this process's device.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"`` (gloo backend) or ``"cuda"`` (nccl backend; under torchrun
        every process takes ``cuda:LOCAL_RANK``, so no index may be given).

    Returns
    -------
    torch.device
        ``device`` unchanged when not launched by torchrun, else the device of
        this process.

    Raises
    ------
    ValueError
        If the environment is incomplete, the device type is neither CPU nor
        CUDA, a CUDA index is given, or ``LOCAL_RANK`` exceeds the number of GPUs.
    """
    device = torch.device(device)
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return device
    if is_dist_avail_and_initialized():
        raise RuntimeError("the default process group is already initialised")
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise ValueError(
            f"distributed environment incomplete: {', '.join(missing)} not set "
            "(launch with torchrun, which sets them)"
        )
    rank, world_size = int(os.environ["RANK"]), launched_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(
                f"--device {device}: under torchrun give --device cuda; every process "
                "takes cuda:LOCAL_RANK"
            )
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"process {rank} has LOCAL_RANK {local_rank} but this node has {count} CUDA "
                f"device(s); start at most {count} processes per node (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(
            f"several processes run on cpu (gloo) or cuda (nccl), not on {device.type!r}"
        )
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            store=_store_of_this_attempt(world_size))
    return device


def _store_of_this_attempt(world_size: int):
    """Under torchrun, a view of the launcher's store that is new at every restart.

    torchrun's agent keeps one store for all the restarts of a group
    (``TORCHELASTIC_USE_AGENT_STORE``). The keys a process group leaves there
    (the addresses of its processes) would be read by the processes of the
    next attempt, which would then try to connect to dead ones; a prefix per
    attempt (``TORCHELASTIC_RESTART_COUNT``) keeps the attempts apart. ``None``
    (the default rendezvous) otherwise.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed.constants import default_pg_timeout

    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          world_size, is_master=False, timeout=default_pg_timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"graphlstm/attempt-{attempt}/default_pg", store)


#: Seconds ``cleanup`` waits, without the GIL, before it destroys the process group.
COLLECTIVES_SETTLE_S = 0.1


def cleanup() -> None:
    """Leave the process group, if any.

    Waits :data:`COLLECTIVES_SETTLE_S` first. A gloo worker thread lets go of a
    collective only after its caller has the result, and when the collective
    captured Python state that needs the GIL; the process group's destructor
    joins those threads while holding the GIL. Destroyed at once after a last
    collective, the group can deadlock the process at exit (one process in
    four of a short two-process DDP run on this project's test machine); the
    sleep releases the GIL, so the threads finish first.
    """
    if is_dist_avail_and_initialized():
        time.sleep(COLLECTIVES_SETTLE_S)
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist_avail_and_initialized():
        dist.barrier()


def _communication_device() -> torch.device:
    # nccl reduces CUDA tensors only; gloo CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_across_processes(value) -> torch.Tensor:
    """The sum of ``value`` (a number or a tensor) over all processes.

    Returns a tensor on the device of ``value`` (CPU for a number); without a
    process group, ``value`` itself as a tensor.
    """
    tensor = torch.as_tensor(value)
    if not is_dist_avail_and_initialized():
        return tensor
    reduced = tensor.to(_communication_device(), copy=True)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(tensor.device)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every buffer of ``module`` (BatchNorm running statistics) from process ``src``.

    ``DistributedDataParallel`` broadcasts buffers at the start of each training
    forward, but every process then updates its own running statistics from
    its share of the batch; without this, each process would validate a
    slightly different model from the one rank 0 saves. No-op in one process.
    """
    if not is_dist_avail_and_initialized():
        return
    device = _communication_device()
    for buffer in module.buffers():
        if buffer.device == device:
            dist.broadcast(buffer.data, src)
        else:
            copy = buffer.data.to(device)
            dist.broadcast(copy, src)
            buffer.data.copy_(copy)


def process_batches(num_items: int, batch_size: int) -> list[list[int]]:
    """This process's share of the batches of ``batch_size`` consecutive items.

    Items ``0..num_items-1`` are cut into batches of ``batch_size``
    consecutive indices (the last may be shorter), and process ``r`` of ``N``
    takes batches ``r, r + N, r + 2N, ...``: the processes together see
    exactly the batches that one process sees, each once. Inference and
    evaluation then compute every batch as one process would, so their
    results do not depend on the number of processes. Use it as
    ``DataLoader(dataset, batch_sampler=process_batches(len(dataset), b))``.

    Raises
    ------
    ValueError
        If ``num_items`` is negative or ``batch_size`` is not positive.
    """
    for name, value, low in (("num_items", num_items, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    starts = range(batch_size * get_rank(), num_items, batch_size * get_world_size())
    return [list(range(start, min(start + batch_size, num_items))) for start in starts]
