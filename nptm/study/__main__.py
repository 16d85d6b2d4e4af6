"""``python -m nptm.study``: the same as ``python -m nptm.train``."""
from nptm.study.cli import main
from nptm.study.exits import end

if __name__ == "__main__":
    end(main())
