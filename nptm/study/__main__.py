"""``python -m nptm.study``: the same as ``python -m nptm.train``."""
import sys

from nptm.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
