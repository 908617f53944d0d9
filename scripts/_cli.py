"""What every script shares: bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class CLIError(Exception):
    """An error to report to the user in one line."""


def run_main(main: Callable[[], int]) -> int:
    """Run ``main``; turn expected errors into one line on stderr and exit status 1.

    ``ValueError``, ``TypeError``, ``FileNotFoundError`` and the like are what the
    library raises for bad input (SPEC §6): the user gets the message, not a
    traceback. ``GRAPHLSTM_DEBUG=1`` shows the traceback.
    """
    import os

    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, RuntimeError, KeyError) as err:
        if os.environ.get("GRAPHLSTM_DEBUG"):
            raise
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "graphlstm"
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind, minimum, strict: bool, what: str):
    """An argparse ``type=`` that parses ``kind`` and checks its lower bound."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        too_small = value <= minimum if strict else value < minimum
        if too_small or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _number(int, 0, True, "a positive integer")
non_negative_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a positive number")


def device(text: str) -> str:
    """A torch device that exists on this machine."""
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r} requested but CUDA is not available")
    return text
