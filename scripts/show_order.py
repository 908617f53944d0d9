#!/usr/bin/env python
"""Draw the update order of a superpixel graph or a lattice.

See :mod:`segmentation.cli.show_order` and ``--help``.
"""

import sys

from segmentation.cli.show_order import console_main

if __name__ == "__main__":
    sys.exit(console_main())
