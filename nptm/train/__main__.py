"""``python -m nptm.train``: the study's command line, kept under the name users know (``nptm.study.cli``)."""
from nptm.study.cli import main
from nptm.study.exits import end

if __name__ == "__main__":
    end(main())
