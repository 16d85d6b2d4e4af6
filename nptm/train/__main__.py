"""``python -m nptm.train``: the study's command line, kept under the name users know (``nptm.study.cli``)."""
import sys

from nptm.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
