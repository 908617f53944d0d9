#!/usr/bin/env python
"""Evaluate a checkpoint on a VOC-layout split.

See :mod:`segmentation.cli.evaluate` and ``--help``.
"""

import sys

from segmentation.cli.evaluate import console_main

if __name__ == "__main__":
    sys.exit(console_main())
