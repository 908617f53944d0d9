#!/usr/bin/env python
"""Segment image files with a checkpoint.

See :mod:`segmentation.cli.segment` and ``--help``.
"""

import sys

from segmentation.cli.segment import console_main

if __name__ == "__main__":
    sys.exit(console_main())
