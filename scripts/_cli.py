"""What every script shares: bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

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
