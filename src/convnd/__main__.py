"""``python -m convnd``: the same command line as ``convnd``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
