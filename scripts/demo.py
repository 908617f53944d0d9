#!/usr/bin/env python
"""The main job on an embedded default (procedural scenes).

See :mod:`segmentation.cli.demo` and ``--help``.
"""

import sys

from segmentation.cli.demo import console_main

if __name__ == "__main__":
    sys.exit(console_main())
