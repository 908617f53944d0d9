"""Faults on demand, for the tests of fault tolerance (inert unless asked for).

The environment variable ``GRAPHLSTM_INJECT_FAULT`` names one fault and the
global step (counted from 0 over the whole run) at whose start it happens::

    kill@3              SIGKILL this process (a worker dying without a trace)
    sigterm@3           SIGTERM to this process (preemption, mid-step)
    sigterm-twice@3     two SIGTERMs in a row (an impatient scheduler)
    nan@3               a batch whose images are NaN (a diverging loss)

optionally followed by ``:rank=R`` (only process ``R``) and ``:attempt=A``
(only when torchrun's ``TORCHELASTIC_RESTART_COUNT`` is ``A``, so that a
restarted group does not fail again). The tests need faults at exact steps,
which no outside signal can time.
"""

from __future__ import annotations

import os
import signal
import time

ENVIRONMENT_VARIABLE = "GRAPHLSTM_INJECT_FAULT"
KINDS = ("kill", "sigterm", "sigterm-twice", "nan")


def _parse(text: str) -> dict:
    head, *options = text.split(":")
    kind, _, step = head.partition("@")
    fault = {"kind": kind, "step": int(step)}
    for option in options:
        key, _, value = option.partition("=")
        fault[key] = int(value)
    if kind not in KINDS or not set(fault) <= {"kind", "step", "rank", "attempt"}:
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={text!r}: expected KIND@STEP[:rank=R]"
                         f"[:attempt=A] with KIND one of {', '.join(KINDS)}")
    return fault


def inject(step: int, rank: int, batch):
    """Apply the fault planned for global step ``step`` on process ``rank``; the batch."""
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    if not text:
        return batch
    fault = _parse(text)
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if (fault["step"] != step or fault.get("rank", rank) != rank
            or fault.get("attempt", attempt) != attempt):
        return batch
    kind = fault["kind"]
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind in ("sigterm", "sigterm-twice"):
        os.kill(os.getpid(), signal.SIGTERM)
        if kind == "sigterm-twice":
            # The second only once the first has been handled (signals do not queue).
            deadline = time.monotonic() + 10
            while (signal.getsignal(signal.SIGTERM) != signal.SIG_DFL
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)
    elif kind == "nan":
        batch.image = batch.image * float("nan")
    return batch
