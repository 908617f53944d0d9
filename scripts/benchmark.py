#!/usr/bin/env python
"""The benchmarks: see :mod:`benchmarks.run` (``--help``), or ``python -m benchmarks.run``.

``benchmarks/`` is not installed with the package: this wrapper runs it from the checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import console_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(console_main())
