"""Stopping a training run cleanly when the cluster asks it to.

Schedulers (SLURM, Kubernetes, spot instances) announce the end of a job with
SIGTERM and kill it a little later; a person at a terminal presses Ctrl-C
(SIGINT). :class:`PreemptionHandler` turns the first of these signals into a
request that the training loop honours at the end of the step in flight: the
processes agree (one all-reduce, so that no process is left waiting in a
collective the others have left), a checkpoint is written, and the run stops
with :class:`TrainingInterrupted`. A second signal ends the process at once,
with the signal's default action.

This follows PyTorch Lightning's and torchtitan's handling (finish the step,
save, exit) and TorchElastic's contract: a restarted job resumes from the last
checkpoint with the same command line.
"""

from __future__ import annotations

import signal
import threading

import torch

from segmentation.engine.distributed import is_dist_avail_and_initialized, reduce_across_processes

__all__ = ["PreemptionHandler", "TrainingInterrupted", "leave_signals_to_the_main_process"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def leave_signals_to_the_main_process(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: workers ignore SIGTERM and SIGINT.

    A scheduler (SLURM) or a terminal (Ctrl-C) signals every process of the job,
    the DataLoader workers too; a worker that died of it would fail the step
    the main process is finishing. The main process decides and then ends its
    workers itself (and they end on their own when it dies).
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing a checkpoint.

    Attributes
    ----------
    signum : int
        The signal (``signal.SIGTERM`` or ``signal.SIGINT``).
    checkpoint : str
        The checkpoint written at the stop, to resume from.
    epoch, step : int
        Where the run stopped: ``step`` steps of epoch ``epoch`` (counted
        from 0) are done.
    exit_code : int
        ``128 + signum``, the shell's status of a process ended by that signal.
    """

    def __init__(self, signum: int, checkpoint: str, epoch: int, step: int):
        self.signum, self.checkpoint = int(signum), str(checkpoint)
        self.epoch, self.step = epoch, step
        self.exit_code = 128 + self.signum
        super().__init__(
            f"stopped by {signal.Signals(self.signum).name} after step {step} of epoch "
            f"{epoch + 1}; checkpoint {self.checkpoint}"
        )


class PreemptionHandler:
    """Records SIGTERM and SIGINT; the training loop asks :meth:`agreed_stop` at step ends.

    Use as a context manager around training: the previous handlers come back
    on exit. Handlers can be installed only from the main thread; elsewhere
    the object installs nothing and never asks to stop.

    The first signal is recorded and nothing else happens: the step in flight
    finishes. The handlers of both signals then return to the operating
    system's default, so a second signal ends the process at once, even in
    the middle of a collective or a checkpoint write (checkpoints are written
    atomically: the previous one stays intact).

    Examples
    --------
    >>> with PreemptionHandler() as preemption:
    ...     preemption.agreed_stop()  # no signal yet, on every process
    0
    """

    def __init__(self, signals=STOP_SIGNALS):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionHandler:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
        # From now on the default action: a second signal ends the process at once.
        for other in self.signals:
            signal.signal(other, signal.SIG_DFL)

    def agreed_stop(self) -> int:
        """The signal any process received (0 if none), the same on every process.

        A collective under several processes: every process must call it at
        the same point of the loop (at the end of every step).
        """
        mine = self.received or 0
        if not is_dist_avail_and_initialized():
            return mine
        # The largest signal number any process received; SIGTERM (15) wins over SIGINT (2).
        flags = torch.zeros(max(STOP_SIGNALS) + 1, dtype=torch.int64)
        if mine:
            flags[mine] = 1
        flags = reduce_across_processes(flags)
        received = flags.nonzero().flatten()
        return int(received.max()) if len(received) else 0
