"""``python -m nptm.study``: the same as ``python -m nptm.train``."""
import sys

from nptm.study.jobs import start_early

if __name__ == "__main__":
    start_early(sys.argv[1:])
    from nptm.study.cli import main
    from nptm.study.exits import end

    end(main())
