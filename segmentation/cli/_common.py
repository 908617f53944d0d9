"""What every script shares: bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from segmentation.engine.train import TrainingDiverged


class CLIError(Exception):
    """An error to report to the user in one line."""


#: What a program reports in one line: bad input (a ``CLIError`` of the program, a
#: ``ValueError`` of the library's checks, a file that cannot be read or written) and a
#: diverged training run. Anything else is a bug and keeps its traceback.
USER_ERRORS = (CLIError, ValueError, OSError, TrainingDiverged)


def run_main(main: Callable[[], int]) -> int:
    """Run ``main``; turn the errors of :data:`USER_ERRORS` into one line on stderr and
    exit status 1, and Ctrl-C into ``interrupted`` and status 130.

    The user gets the message, not a traceback; ``GRAPHLSTM_DEBUG=1`` shows the
    traceback. Other errors (``KeyError``, ``RuntimeError``, ``TypeError``, ...)
    propagate with their traceback.
    """
    import os

    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if os.environ.get("GRAPHLSTM_DEBUG"):
            raise
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "graphlstm"
        message = _first_line(err)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        # An error in a DataLoader worker comes back wrapped around the worker's
        # traceback; its "ValueError: message" line is what the user needs.
        prefix = f"{type(err).__name__}: "
        lines = text.splitlines()
        return next((line[len(prefix):] for line in reversed(lines) if line.startswith(prefix)),
                    lines[-1])
    return text.splitlines()[0] if text else type(err).__name__


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is in ``--help``), and
    an option that takes one value takes one that starts with a minus too.

    Plain argparse reads ``--influence -1,5`` as two options and says "expected
    one argument"; here the value reaches the option's type check, which says
    what is wrong with it.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        joined, index = [], 0
        while index < len(args) and args[index] != "--":
            arg, action = args[index], self._option_string_actions.get(args[index])
            if (action is not None and action.nargs is None and index + 1 < len(args)
                    and _NEGATIVE_LOOKING.match(args[index + 1])):
                joined.append(f"{arg}={args[index + 1]}")
                index += 2
            else:
                joined.append(arg)
                index += 1
        return super().parse_known_args(joined + args[index:], namespace)


# A value such as -1,5 or -0.5 or -3x4 (a minus, then a digit or a point).
_NEGATIVE_LOOKING = re.compile(r"^-[\d.]")


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
non_negative_float = _number(float, 0.0, False, "a number >= 0")


def int_list(minimum: int):
    """An argparse ``type=``: comma-separated integers >= ``minimum`` (``0,1,2``)."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            values = ()
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(
                f"expected integers >= {minimum} separated by commas, got {text!r}")
        return values

    return parse


def image_size(text: str) -> tuple[int, int]:
    """``512`` -> (512, 512); ``1024x768`` (width x height) -> (768, 1024) as (H, W)."""
    parts = text.lower().split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a size S or WxH in pixels (e.g. 512 or 1024x768), got {text!r}")
    width, height = values if len(values) == 2 else values * 2
    return height, width


def unit_float(text: str) -> float:
    """A number in [0, 1] (an opacity, a fraction)."""
    value = _number(float, 0.0, False, "a number in [0, 1]")(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


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


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` of the commands that run under torchrun (train, evaluate, segment)."""
    parser.add_argument("--device", type=device, default="cpu",
                        help="cpu or cuda (under torchrun: every process its cuda:LOCAL_RANK)")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads``: torch CPU threads (default: torch's choice); see :func:`start_process`."""
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")


def start_process(threads: int | None, device_name: str):
    """Set the torch CPU threads (when given) and, under torchrun, join the process group.

    Returns this process's device (``cuda:LOCAL_RANK`` under torchrun with CUDA);
    the caller ends with :func:`segmentation.engine.distributed.cleanup`.
    """
    import torch

    from segmentation.engine.distributed import init_distributed_mode

    if threads:
        torch.set_num_threads(threads)
    return init_distributed_mode(device_name)


def check_writable_folder(path, flag: str, value=None) -> None:
    """Fail early, naming ``flag``, where files cannot be written into the folder
    ``path`` (read-only disk, no permission, a file in the way).

    A folder that does not exist yet is not created here (a command stopped by
    bad input leaves nothing behind): the check writes into the nearest folder
    above it that exists, where it would be created. ``value`` is what the
    user gave to ``flag`` (default: ``path``).
    """
    import tempfile
    from pathlib import Path

    value = str(path if value is None else value)
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise CLIError(f"{flag} {value!r}: {str(folder)!r} is a file, not a folder")
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        where = "" if str(folder) == value else f" (in {str(folder)!r})"
        raise CLIError(f"{flag} {value!r}: cannot write there{where}: {reason}") from None


def check_writable_file(path, flag: str) -> None:
    """:func:`check_writable_folder` for the folder of the output file ``path``."""
    from pathlib import Path

    if Path(path).is_dir():
        raise CLIError(f"{flag} {str(path)!r} is a folder; give a file name")
    check_writable_folder(Path(path).parent, flag, value=path)
