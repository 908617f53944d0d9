#!/usr/bin/env python
"""Train the Graph LSTM segmentation model.

See :mod:`segmentation.cli.train` and ``--help``.
"""

import sys

from segmentation.cli.train import console_main

if __name__ == "__main__":
    sys.exit(console_main())
